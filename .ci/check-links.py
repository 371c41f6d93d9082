#!/usr/bin/env python3
"""Checks the links of the README and the user guide (docs/src) without the
network: every relative link names a file that exists, every #anchor a
heading of that file (ids as mdBook makes them), every page is in SUMMARY.md.
Prints each broken link and exits 1 when there is one."""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
LINK = re.compile(r"(?<!\\)!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~)")


def slug(heading: str) -> str:
    """mdBook's id for a heading: lowercase, spaces to '-', keep letters, digits, '_' and '-'."""
    text = re.sub(r"<[^>]+>", "", heading).strip().lower()
    return "".join(c if (c.isalnum() or c in "_-") else "-" if c == " " else "" for c in text)


def lines_outside_code(path: pathlib.Path):
    fenced = False
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            yield n, re.sub(r"`[^`]*`", "", line) if not line.startswith("#") else line


def anchors(path: pathlib.Path) -> set:
    seen = {}
    out = set()
    for _, line in lines_outside_code(path):
        m = re.match(r"^#{1,6}\s+(.*)$", line)
        if m:
            base = slug(m.group(1).replace("`", ""))
            k = seen.get(base, 0)
            out.add(base if k == 0 else f"{base}-{k}")
            seen[base] = k + 1
    return out


def main() -> int:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs" / "src").glob("*.md"))]
    broken = []
    for page in pages:
        for n, line in lines_outside_code(page):
            for target in LINK.findall(line):
                if re.match(r"^[a-z]+:", target) or target.startswith("<"):
                    continue
                file, _, anchor = target.partition("#")
                dest = page if not file else (page.parent / file).resolve()
                if not dest.exists():
                    broken.append(f"{page.relative_to(ROOT)}:{n}: {target}: no such file")
                elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                    broken.append(f"{page.relative_to(ROOT)}:{n}: {target}: no heading #{anchor}")
    summary = (ROOT / "docs" / "src" / "SUMMARY.md").read_text(encoding="utf-8")
    for page in sorted((ROOT / "docs" / "src").glob("*.md")):
        if page.name != "SUMMARY.md" and f"({page.name})" not in summary:
            broken.append(f"docs/src/{page.name}: not in SUMMARY.md")
    for b in broken:
        print(b)
    print(f"links: {len(broken)} broken in {len(pages)} pages")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
