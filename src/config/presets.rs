//! Provider presets (docs/src/providers.md) as data: `presets.toml`, compiled
//! into the binary and built at first use by the same code that validates a
//! user's `[sources.x.verify]` table, so a field has one definition.
//!
//! A unit test builds the whole table, so a bad entry fails `cargo test`,
//! never a running gateway.

use std::fmt::Write as _;
use std::sync::LazyLock;

use super::errors::Errors;
use super::file::{PresetFile, VerifyFile};
use super::verify_table::apply_overrides;
use crate::verify::{Scheme, Spec};

const TABLE: &str = include_str!("presets.toml");

/// `[sources.x.verify]` keys in the order the guide's table lists them (the
/// file table's own list, which `check`'s suggestions use too).
const VERIFY_KEYS: &[&str] = <super::file::VerifyFile as super::file::Keys>::KEYS;

/// One provider.
#[derive(Debug)]
pub struct Preset {
    pub name: String,
    pub description: String,
    /// What goes in the source's `secrets`.
    pub secret: String,
    /// What the tests check this preset against.
    pub proof: String,
    pub spec: Spec,
    /// The `verify` table as written, for `hookgate presets NAME`.
    verify: toml::Table,
}

static PRESETS: LazyLock<Vec<Preset>> =
    LazyLock::new(|| parse(TABLE).unwrap_or_else(|errors| panic!("presets.toml is invalid:\n{}", errors.join("\n"))));

/// Every preset, sorted by name.
pub fn all() -> &'static [Preset] {
    &PRESETS
}

pub fn get(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

/// Builds a presets table; every error, with its key path.
pub fn parse(text: &str) -> Result<Vec<Preset>, Vec<String>> {
    let table: toml::Table = toml::from_str(text).map_err(|e| vec![format!("presets: {e}")])?;
    let mut errs = Errors(Vec::new());
    let mut files = std::collections::BTreeMap::new();
    for (name, value) in table {
        match value.try_into::<PresetFile>() {
            Ok(f) => {
                files.insert(name, f);
            }
            Err(e) => errs.push(&format!("presets.{name}"), e),
        }
    }
    // `like = "other"`: start from the other preset's fields (one level, no chains).
    let bases: std::collections::BTreeMap<String, (toml::Table, Option<String>)> = files
        .iter()
        .filter(|(_, f)| f.like.is_none())
        .map(|(n, f)| (n.clone(), (f.verify.clone(), f.tolerance.clone())))
        .collect();
    let mut out = Vec::new();
    for (name, mut file) in files {
        let path = format!("presets.{name}");
        if let Some(like) = file.like.take() {
            match bases.get(&like) {
                Some((verify, tolerance)) => {
                    let mut merged = verify.clone();
                    merged.extend(std::mem::take(&mut file.verify));
                    file.verify = merged;
                    file.tolerance = file.tolerance.or_else(|| tolerance.clone());
                }
                _ => {
                    errs.push(&format!("{path}.like"), format!("{like:?} is not a preset without a `like` of its own"))
                }
            }
        }
        let mut spec = Spec::default();
        match toml::Value::Table(file.verify.clone()).try_into::<VerifyFile>() {
            Ok(v) => apply_overrides(&mut errs, &format!("{path}.verify"), &mut spec, v),
            Err(e) => errs.push(&format!("{path}.verify"), e),
        }
        spec.tolerance = errs.duration(&format!("{path}.tolerance"), file.tolerance.as_deref(), spec.tolerance);
        if name != "generic" && name != "tyk" && spec.scheme != Scheme::ClientState && spec.signature.is_empty() {
            errs.push(&format!("{path}.verify.signature_header"), "missing");
        }
        out.push(Preset {
            name,
            description: file.description,
            secret: file.secret,
            proof: file.proof,
            spec,
            verify: file.verify,
        });
    }
    if errs.0.is_empty() { Ok(out) } else { Err(errs.0) }
}

impl Preset {
    /// The preset written out as a source with `provider = "generic"`, which
    /// configures exactly the same verification (a test holds it to that).
    pub fn to_toml(&self) -> String {
        let name = &self.name;
        let mut out = format!("# {name}: {}\n# secrets: {}\n", self.description, self.secret);
        if self.spec.scheme.is_asymmetric() {
            out.push_str("# (a public key: only the provider can sign; `hookgate sign` needs --private-key to test)\n");
        }
        if self.spec.payload.uses_url() {
            out.push_str("# needs public_url: the URL the provider was told\n");
        }
        if self.spec.challenge == crate::verify::Challenge::MetaSubscribe {
            out.push_str("# needs verify_token: the Verify Token entered in the provider's dashboard\n");
        }
        out.push_str(&unsigned_note(&crate::verify::signed::Plan::new(&self.spec)));
        let _ = writeln!(out, "# tested against: {}", self.proof);
        let _ = writeln!(out, "# The same as provider = {name:?}; add path and secrets.");
        let _ = writeln!(out, "[sources.{name}]\nprovider = \"generic\"");
        if !self.spec.timestamp.is_empty() {
            let _ = writeln!(out, "tolerance = \"{}\"", humantime::format_duration(self.spec.tolerance));
        }
        if !self.verify.is_empty() {
            let _ = writeln!(out, "\n[sources.{name}.verify]");
            // In the order of the guide's field table, not the map's.
            let known = VERIFY_KEYS.iter().filter_map(|k| self.verify.get_key_value(*k));
            let rest = self.verify.iter().filter(|(k, _)| !VERIFY_KEYS.contains(&k.as_str()));
            for (key, value) in known.chain(rest) {
                let _ = writeln!(out, "{key} = {value}");
            }
        }
        out
    }

    /// The scheme as the providers table in docs/src/providers.md shows it.
    pub fn scheme_label(&self) -> &'static str {
        match self.spec.scheme {
            Scheme::Hmac => "hmac",
            Scheme::Token => "token",
            Scheme::Ed25519 => "ed25519",
            Scheme::EcdsaP256 => "ecdsa-p256",
            Scheme::ClientState => "client-state",
        }
    }
}

/// `# unsigned: ...` comment lines for the fields the signature does not cover
/// (SPEC §10), empty when all are signed; shared by `presets NAME` and `check`.
pub fn unsigned_note(plan: &crate::verify::signed::Plan) -> String {
    use crate::verify::signed::Field;
    let mut out = String::new();
    for (field, from) in plan.unsigned() {
        let _ = writeln!(out, "# unsigned: {} (from {from}): the signature does not cover it", field.name());
    }
    for (field, fp) in
        [(Field::Id, &plan.id), (Field::EventType, &plan.event_type), (Field::Timestamp, &plan.timestamp)]
    {
        for loc in &fp.check {
            let _ = writeln!(
                out,
                "# checked: {} in {} must equal the signed value when present (else 401 unsigned_mismatch)",
                field.name(),
                crate::verify::signed::describe(loc)
            );
        }
    }
    if plan.id_unsigned() {
        out.push_str(
            "# the body's SHA-256 is claimed too, so a captured body under a fresh ID is a duplicate (dedupe_body)\n",
        );
    }
    out
}

/// The guide's provider list (a test keeps docs/src/providers.md equal to it).
pub fn markdown_table() -> String {
    let mut out = String::from("| provider | scheme | what it is | secret |\n|---|---|---|---|\n");
    for p in all() {
        let (description, secret) = (cell(&p.description), cell(&p.secret));
        let _ = writeln!(out, "| `{}` | {} | {description} | {secret} |", p.name, p.scheme_label());
    }
    out
}

/// Text for a Markdown table cell: `<` and `>` as entities, or a renderer
/// takes `<base64>` for an HTML tag and drops it.
fn cell(text: &str) -> String {
    text.replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;

    #[test]
    fn the_table_builds_and_has_thirty_providers() {
        let presets = parse(TABLE).unwrap_or_else(|e| panic!("{}", e.join("\n")));
        assert!(presets.len() >= 30, "{} presets", presets.len());
        assert!(get("nope").is_none());
        for p in all() {
            assert!(!p.description.is_empty() && !p.secret.is_empty() && !p.proof.is_empty(), "{}", p.name);
        }
    }

    #[test]
    fn a_bad_entry_is_reported_with_its_path() {
        let errs = parse("[x]\ndescription = \"d\"\nsecret = \"s\"\nproof = \"p\"\n[x.verify]\nsignature_header = \"X\"\nscheme = \"rsa\"\nnope = 1\n").unwrap_err();
        assert!(errs.iter().any(|e| e.starts_with("presets.x.verify.scheme: invalid value \"rsa\"")), "{errs:?}");
        assert!(errs.iter().any(|e| e.starts_with("presets.x.verify.nope: unknown key")), "{errs:?}");
        let errs = parse("[x]\ndescription = \"d\"\nsecret = \"s\"\n").unwrap_err();
        assert!(errs[0].contains("proof"), "{errs:?}");
        let entry = |name: &str, like: &str| {
            format!(
                "[{name}]\ndescription = \"d\"\nsecret = \"s\"\nproof = \"p\"\nlike = \"{like}\"\n[{name}.verify]\nid = \"header:x-id\"\n"
            )
        };
        let errs = parse(&[entry("a", "b"), entry("b", "c")].concat()).unwrap_err();
        assert!(errs.iter().any(|e| e.starts_with("presets.a.like: \"b\" is not a preset without")), "{errs:?}");
    }

    #[test]
    fn like_starts_from_the_other_preset_and_overrides_field_by_field() {
        let (svix, clerk) = (get("svix").unwrap(), get("clerk").unwrap());
        assert_eq!(clerk.spec, svix.spec);
        let text = "[a]\ndescription = \"d\"\nsecret = \"s\"\nproof = \"p\"\ntolerance = \"1m\"\n[a.verify]\nsignature_header = \"X-A\"\nid = \"header:x-id\"\n\
                    [b]\ndescription = \"d\"\nsecret = \"s\"\nproof = \"p\"\nlike = \"a\"\n[b.verify]\nid = \"json:/id\"\n";
        let presets = parse(text).unwrap();
        let b = presets.iter().find(|p| p.name == "b").unwrap();
        assert_eq!(b.spec.signature, vec![crate::verify::Locator::header("x-a")]);
        assert_eq!(b.spec.id, vec![crate::verify::Locator::json("/id")]);
        assert_eq!(b.spec.tolerance, std::time::Duration::from_secs(60));
    }

    /// `hookgate presets NAME` prints a block that, with provider = "generic",
    /// configures the very same spec.
    #[test]
    fn every_printed_block_round_trips_to_the_same_spec() {
        let ed = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";
        let ec = {
            use base64::Engine as _;
            use p256::pkcs8::EncodePublicKey as _;
            let sk = p256::ecdsa::SigningKey::from_slice(&[7; 32]).unwrap();
            base64::engine::general_purpose::STANDARD.encode(sk.verifying_key().to_public_key_der().unwrap().as_bytes())
        };
        for p in all() {
            let secret = match p.spec.scheme {
                Scheme::Ed25519 => ed,
                Scheme::EcdsaP256 => ec.as_str(),
                _ => "whsec_c2VjcmV0",
            };
            let mut text = p.to_toml().replace(
                &format!("[sources.{}]\n", p.name),
                &format!(
                    "[sources.{}]\npath = \"/x\"\nsecrets = [\"{secret}\"]\npublic_url = \"https://h.example/x\"\nverify_token = \"t\"\n",
                    p.name
                ),
            );
            if p.spec.signature.is_empty() {
                let table = format!("[sources.{}.verify]\n", p.name);
                if !text.contains(&table) {
                    text.push_str(&table);
                }
                text = text.replace(&table, &format!("{table}signature_header = \"X-Token\"\n"));
            }
            let cfg = load_str(&text, &|_| None).unwrap_or_else(|e| panic!("{}:\n{text}\n{e}", p.name));
            let mut want = p.spec.clone();
            if want.signature.is_empty() {
                want.signature = vec![crate::verify::Locator::header("x-token")];
            }
            assert_eq!(cfg.sources[0].verifier.spec, want, "{}:\n{text}", p.name);
        }
    }

    #[test]
    fn the_guide_lists_exactly_the_table() {
        let readme = include_str!("../../docs/src/providers.md");
        let (begin, end) = ("<!-- presets:begin -->\n", "<!-- presets:end -->");
        let start = readme.find(begin).expect("docs/src/providers.md has the presets markers") + begin.len();
        let stop = readme[start..].find(end).expect("docs/src/providers.md closes the presets markers") + start;
        assert_eq!(
            &readme[start..stop],
            markdown_table(),
            "docs/src/providers.md's table is stale: paste `hookgate presets --markdown`"
        );
    }
}
