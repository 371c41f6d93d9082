//! A fast path for the jq programs most routes use: projections that build
//! an object or a string from fields of the body (`{text: "Paid: \(.data.amount / 100)"}`,
//! `{id, total: .amount / 100, skus: [.items[] | .sku]}`).
//!
//! jaq runs any program, but it reads the body into reference-counted values
//! and interprets each step through boxed iterators: ~70k instructions for
//! such a program on a 250-byte body, as much as the rest of the delivery
//! (`bench/routing.sh`). Programs made only of what this module knows are
//! compiled here instead and run over a tree borrowed from the body (strings
//! without escapes are not copied), with jaq kept for everything else, and
//! for any value this module meets but does not handle, errors included (it
//! then answers [`Outcome::Unsupported`] and the delivery goes through jaq,
//! which gives the result or the error).
//!
//! Known: `.`, `.name`, `."name"`, `.[N]`, `.[]` (inside `[...]` only),
//! `|`, `(...)`, `[...]`, `{key: value, "key": value, key}`, literals
//! (`null`, `true`, `false`, numbers, strings with `\(...)`), and `+ - * /`.
//! A program whose result could be several values (a `.[]` outside `[...]`)
//! is left to jaq.
//!
//! The same results as jaq, value for value (a differential test runs both);
//! numbers that are not integers are written in their shortest form (jaq
//! keeps an input number's own text: `1.50` stays `1.50` there, `1.5` here).

use std::borrow::Cow;

/// A compiled fast-path program.
#[derive(Debug)]
pub struct Fast {
    root: Node,
}

#[derive(Debug)]
enum Node {
    Identity,
    Field(Box<Node>, Box<str>),
    Index(Box<Node>, i64),
    /// `.[]`: every element (or value).
    Iter(Box<Node>),
    Pipe(Box<Node>, Box<Node>),
    Lit(Lit),
    Interp(Vec<Part>),
    Obj(Vec<(Box<str>, Node)>),
    Arr(Box<Node>),
    Arith(Op, Box<Node>, Box<Node>),
}

#[derive(Debug, Clone)]
enum Lit {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Box<str>),
}

#[derive(Debug)]
enum Part {
    Text(Box<str>),
    Expr(Node),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Sub,
    Mul,
    Div,
}

/// What a run gave.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// The output, written as compact JSON.
    Done(Vec<u8>),
    /// A value this module does not handle: run jaq instead.
    Unsupported,
}

// === values ===

/// A JSON value borrowed from the body where it can be.
#[derive(Debug, Clone)]
enum V<'a> {
    Null,
    Bool(bool),
    Int(i64),
    /// Integers above `i64::MAX`.
    U64(u64),
    Float(f64),
    /// A non-integer number read from the body: jaq keeps its text (`1.50`,
    /// `1e3`), so writing it inside a string is left to jaq.
    InFloat(f64),
    Str(Cow<'a, str>),
    Arr(Vec<V<'a>>),
    Obj(Vec<(Cow<'a, str>, V<'a>)>),
}

impl<'de> serde::Deserialize<'de> for V<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Visit)
    }
}

struct Visit;

impl<'de> serde::de::Visitor<'de> for Visit {
    type Value = V<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_unit<E>(self) -> Result<V<'de>, E> {
        Ok(V::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<V<'de>, E> {
        Ok(V::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<V<'de>, E> {
        Ok(V::Int(n))
    }
    fn visit_u64<E>(self, n: u64) -> Result<V<'de>, E> {
        Ok(i64::try_from(n).map_or(V::U64(n), V::Int))
    }
    fn visit_f64<E>(self, n: f64) -> Result<V<'de>, E> {
        Ok(V::InFloat(n))
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<V<'de>, E> {
        Ok(V::Str(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<V<'de>, E> {
        Ok(V::Str(Cow::Owned(s.to_owned())))
    }
    fn visit_string<E>(self, s: String) -> Result<V<'de>, E> {
        Ok(V::Str(Cow::Owned(s)))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<V<'de>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(4));
        while let Some(v) = seq.next_element()? {
            out.push(v);
        }
        Ok(V::Arr(out))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<V<'de>, A::Error> {
        let mut out = Vec::with_capacity(map.size_hint().unwrap_or(4));
        while let Some((k, v)) = map.next_entry::<Key<'de>, V<'de>>()? {
            out.push((k.0, v));
        }
        Ok(V::Obj(out))
    }
}

/// An object key, borrowed when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct K;
        impl<'de> serde::de::Visitor<'de> for K {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(K)
    }
}

fn write(v: &V<'_>, out: &mut Vec<u8>) {
    match v {
        V::Null => out.extend_from_slice(b"null"),
        V::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        V::Int(n) => out.extend_from_slice(n.to_string().as_bytes()),
        V::U64(n) => out.extend_from_slice(n.to_string().as_bytes()),
        V::Float(f) | V::InFloat(f) => write_float(*f, out),
        V::Str(s) => write_str(s, out),
        V::Arr(items) => {
            out.push(b'[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(x, out);
            }
            out.push(b']');
        }
        V::Obj(entries) => {
            out.push(b'{');
            for (i, (k, x)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(k, out);
                out.push(b':');
                write(x, out);
            }
            out.push(b'}');
        }
    }
}

/// As jaq writes a float: shortest round-trip form, `.0` on integral
/// values; NaN as `null`; infinities as the largest finite values.
fn write_float(f: f64, out: &mut Vec<u8>) {
    let f = if f.is_nan() {
        return out.extend_from_slice(b"null");
    } else if f.is_infinite() {
        f64::MAX.copysign(f)
    } else {
        f
    };
    // serde_json writes floats with ryu: 42.0 -> "42.0", 1e300 -> "1e300".
    out.extend_from_slice(serde_json::to_string(&f).unwrap_or_default().as_bytes());
}

fn write_str(s: &str, out: &mut Vec<u8>) {
    // serde_json's escaping: quotes, backslashes and control characters.
    let _ = serde_json::to_writer(&mut *out, s);
}

// === parsing the program ===

struct Parser<'p> {
    s: &'p [u8],
    i: usize,
    /// Nesting so far: deeper programs are jaq's (its parser, its stack).
    depth: usize,
}

/// Deepest nesting of `(`, `[`, `{` and `\(` the fast path parses.
const MAX_NESTING: usize = 32;

impl Fast {
    /// The program compiled, if it is made only of what this module knows.
    pub fn compile(code: &str) -> Option<Fast> {
        let mut p = Parser { s: code.as_bytes(), i: 0, depth: 0 };
        let root = p.pipe()?;
        p.ws();
        (p.i == p.s.len() && !root.many()).then_some(Fast { root })
    }

    /// Runs the program on `body` (JSON text).
    pub fn run(&self, body: &[u8]) -> Outcome {
        let input: V<'_> = match serde_json::from_slice(body) {
            Ok(v) => v,
            // jaq decides what to say about a body that is not JSON.
            Err(_) => return Outcome::Unsupported,
        };
        match one(&self.root, Cow::Borrowed(&input)) {
            Ok(v) => {
                let mut out = Vec::with_capacity(body.len() / 2 + 16);
                write(&v, &mut out);
                Outcome::Done(out)
            }
            Err(Stop::Unsupported) => Outcome::Unsupported,
        }
    }
}

impl Node {
    /// Whether it may yield more than one value.
    fn many(&self) -> bool {
        match self {
            Node::Iter(_) => true,
            Node::Field(e, _) | Node::Index(e, _) => e.many(),
            Node::Pipe(a, b) | Node::Arith(_, a, b) => a.many() || b.many(),
            Node::Interp(parts) => parts.iter().any(|p| matches!(p, Part::Expr(e) if e.many())),
            Node::Obj(entries) => entries.iter().any(|(_, e)| e.many()),
            Node::Identity | Node::Lit(_) | Node::Arr(_) => false,
        }
    }
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn ident(&mut self) -> Option<&str> {
        let start = self.i;
        while self.i < self.s.len() && (self.s[self.i].is_ascii_alphanumeric() || self.s[self.i] == b'_') {
            self.i += 1;
        }
        let id = std::str::from_utf8(&self.s[start..self.i]).ok()?;
        (!id.is_empty() && !id.as_bytes()[0].is_ascii_digit()).then_some(id)
    }

    fn pipe(&mut self) -> Option<Node> {
        let mut left = self.add()?;
        while self.peek() == Some(b'|') {
            self.i += 1;
            let right = self.add()?;
            left = Node::Pipe(Box::new(left), Box::new(right));
        }
        // A comma (several outputs), `//`, `?`, `as`, and the rest: not ours.
        matches!(self.peek(), None | Some(b')' | b']' | b'}')).then_some(left)
    }

    fn add(&mut self) -> Option<Node> {
        let mut left = self.mul()?;
        loop {
            let op = match self.peek() {
                Some(b'+') => Op::Add,
                Some(b'-') => Op::Sub,
                _ => return Some(left),
            };
            self.i += 1;
            let right = self.mul()?;
            left = Node::Arith(op, Box::new(left), Box::new(right));
        }
    }

    fn mul(&mut self) -> Option<Node> {
        let mut left = self.post()?;
        loop {
            let op = match self.peek() {
                Some(b'*') => Op::Mul,
                // `//` is jq's alternative operator: not ours.
                Some(b'/') if self.s.get(self.i + 1) != Some(&b'/') => Op::Div,
                _ => return Some(left),
            };
            self.i += 1;
            let right = self.post()?;
            left = Node::Arith(op, Box::new(left), Box::new(right));
        }
    }

    fn post(&mut self) -> Option<Node> {
        let mut node = self.prim()?;
        loop {
            // No whitespace before a suffix (`. foo` is not `.foo`).
            match self.s.get(self.i) {
                Some(b'.') if matches!(self.s.get(self.i + 1), Some(c) if c.is_ascii_alphabetic() || *c == b'_' || *c == b'"' || *c == b'[') =>
                {
                    self.i += 1;
                    node = self.suffix_after_dot(node)?;
                }
                Some(b'[') => node = self.bracket(node)?,
                _ => return Some(node),
            }
        }
    }

    /// After a `.`: a name, a quoted name, or `[...]`.
    fn suffix_after_dot(&mut self, node: Node) -> Option<Node> {
        match self.s.get(self.i) {
            Some(b'"') => {
                let Lit::Str(name) = self.string_lit()? else { return None };
                Some(Node::Field(Box::new(node), name))
            }
            Some(b'[') => self.bracket(node),
            _ => {
                let name = self.ident()?;
                if is_keyword(name) {
                    return None;
                }
                Some(Node::Field(Box::new(node), name.into()))
            }
        }
    }

    /// `[]` or `[N]`.
    fn bracket(&mut self, node: Node) -> Option<Node> {
        self.i += 1; // '['
        if self.eat(b']') {
            return Some(Node::Iter(Box::new(node)));
        }
        self.ws();
        let start = self.i;
        if self.s.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        while self.i < self.s.len() && self.s[self.i].is_ascii_digit() {
            self.i += 1;
        }
        let n: i64 = std::str::from_utf8(&self.s[start..self.i]).ok()?.parse().ok()?;
        self.eat(b']').then(|| Node::Index(Box::new(node), n))
    }

    fn prim(&mut self) -> Option<Node> {
        self.depth += 1;
        let node = if self.depth > MAX_NESTING { None } else { self.prim_inner() };
        self.depth -= 1;
        node
    }

    fn prim_inner(&mut self) -> Option<Node> {
        match self.peek()? {
            b'.' => {
                self.i += 1;
                match self.s.get(self.i) {
                    Some(c) if c.is_ascii_alphabetic() || *c == b'_' || *c == b'"' || *c == b'[' => {
                        self.suffix_after_dot(Node::Identity)
                    }
                    // `..` (recurse) and `.5`: not ours.
                    Some(b'.' | b'0'..=b'9') => None,
                    _ => Some(Node::Identity),
                }
            }
            b'"' => self.string(),
            b'(' => {
                self.i += 1;
                let inner = self.pipe()?;
                self.eat(b')').then_some(inner)
            }
            b'[' => {
                self.i += 1;
                let inner = self.pipe()?;
                self.eat(b']').then(|| Node::Arr(Box::new(inner)))
            }
            b'{' => self.object(),
            b'0'..=b'9' => self.number(),
            _ => {
                let id = self.ident()?;
                match id {
                    "null" => Some(Node::Lit(Lit::Null)),
                    "true" => Some(Node::Lit(Lit::Bool(true))),
                    "false" => Some(Node::Lit(Lit::Bool(false))),
                    // Any filter, variable or keyword: jaq's.
                    _ => None,
                }
            }
        }
    }

    fn number(&mut self) -> Option<Node> {
        let start = self.i;
        while self.i < self.s.len() && matches!(self.s[self.i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-') {
            // `1-2` is a subtraction, `1e-2` a number.
            if matches!(self.s[self.i], b'+' | b'-') && !matches!(self.s[self.i - 1], b'e' | b'E') {
                break;
            }
            self.i += 1;
        }
        let text = std::str::from_utf8(&self.s[start..self.i]).ok()?;
        if let Ok(n) = text.parse::<i64>() {
            return Some(Node::Lit(Lit::Int(n)));
        }
        text.parse::<f64>().ok().filter(|f| f.is_finite()).map(|f| Node::Lit(Lit::Float(f)))
    }

    fn object(&mut self) -> Option<Node> {
        self.i += 1; // '{'
        let mut entries = Vec::new();
        if self.eat(b'}') {
            return Some(Node::Obj(entries));
        }
        loop {
            let key: Box<str> = match self.peek()? {
                b'"' => match self.string_lit()? {
                    Lit::Str(s) => s,
                    _ => return None,
                },
                _ => {
                    let id = self.ident()?;
                    if is_keyword(id) {
                        return None;
                    }
                    id.into()
                }
            };
            let value = if self.eat(b':') {
                // jq's object values are single terms or arithmetic, not pipes.
                self.add()?
            } else {
                Node::Field(Box::new(Node::Identity), key.clone())
            };
            entries.push((key, value));
            if self.eat(b',') {
                continue;
            }
            return self.eat(b'}').then_some(Node::Obj(entries));
        }
    }

    /// A string without interpolation, as a literal.
    fn string_lit(&mut self) -> Option<Lit> {
        match self.string()? {
            Node::Lit(l) => Some(l),
            _ => None,
        }
    }

    /// A string literal, with `\(...)` parts.
    fn string(&mut self) -> Option<Node> {
        self.i += 1; // '"'
        let mut parts = Vec::new();
        let mut text = String::new();
        loop {
            let c = *self.s.get(self.i)?;
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    let e = *self.s.get(self.i)?;
                    self.i += 1;
                    match e {
                        b'(' => {
                            if !text.is_empty() {
                                parts.push(Part::Text(std::mem::take(&mut text).into()));
                            }
                            let inner = self.pipe()?;
                            if !self.eat(b')') {
                                return None;
                            }
                            parts.push(Part::Expr(inner));
                        }
                        b'"' => text.push('"'),
                        b'\\' => text.push('\\'),
                        b'/' => text.push('/'),
                        b'n' => text.push('\n'),
                        b't' => text.push('\t'),
                        b'r' => text.push('\r'),
                        // \uXXXX, \b, \f and the rest: jaq's.
                        _ => return None,
                    }
                }
                _ => {
                    // Copy the whole UTF-8 sequence.
                    let start = self.i - 1;
                    let len = utf8_len(c);
                    let bytes = self.s.get(start..start + len)?;
                    text.push_str(std::str::from_utf8(bytes).ok()?);
                    self.i = start + len;
                }
            }
        }
        if parts.is_empty() {
            return Some(Node::Lit(Lit::Str(text.into())));
        }
        if !text.is_empty() {
            parts.push(Part::Text(text.into()));
        }
        Some(Node::Interp(parts))
    }
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0..=0xF7 => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

/// Names that are jq keywords, not fields (`.foo` is fine, `{if: 1}` is not ours).
fn is_keyword(s: &str) -> bool {
    matches!(
        s,
        "def"
            | "if"
            | "then"
            | "elif"
            | "else"
            | "end"
            | "as"
            | "reduce"
            | "foreach"
            | "try"
            | "catch"
            | "label"
            | "import"
            | "include"
            | "and"
            | "or"
            | "not"
            | "__loc__"
    )
}

// === running ===

/// Why a run left the fast path: a value it does not handle (a type error
/// included: jaq's answer to those is jaq's to give).
enum Stop {
    Unsupported,
}

type Val<'v, 'a> = Cow<'v, V<'a>>;

/// A node that yields exactly one value.
fn one<'v, 'a>(node: &Node, input: Val<'v, 'a>) -> Result<Val<'v, 'a>, Stop> {
    match node {
        Node::Identity => Ok(input),
        Node::Field(e, name) => {
            let base = one(e, input)?;
            field(base, name)
        }
        Node::Index(e, n) => {
            let base = one(e, input)?;
            index(base, *n)
        }
        Node::Pipe(a, b) => {
            let mid = one(a, input)?;
            one(b, mid)
        }
        Node::Lit(l) => Ok(Cow::Owned(match l {
            Lit::Null => V::Null,
            Lit::Bool(b) => V::Bool(*b),
            Lit::Int(n) => V::Int(*n),
            Lit::Float(f) => V::Float(*f),
            Lit::Str(s) => V::Str(Cow::Owned(s.to_string())),
        })),
        Node::Interp(parts) => {
            let mut s = String::new();
            for p in parts {
                match p {
                    Part::Text(t) => s.push_str(t),
                    Part::Expr(e) => match &*one(e, input.clone())? {
                        V::Str(t) => s.push_str(t),
                        v if !plain_in_strings(v) => return Err(Stop::Unsupported),
                        other => {
                            let mut out = Vec::new();
                            write(other, &mut out);
                            s.push_str(&String::from_utf8_lossy(&out));
                        }
                    },
                }
            }
            Ok(Cow::Owned(V::Str(Cow::Owned(s))))
        }
        Node::Obj(entries) => {
            let mut out = Vec::with_capacity(entries.len());
            for (k, e) in entries {
                let v = one(e, input.clone())?.into_owned();
                // A repeated key keeps its first place and its last value (jq).
                match out.iter_mut().find(|(ok, _): &&mut (Cow<'a, str>, V<'a>)| **ok == **k) {
                    Some(slot) => slot.1 = v,
                    None => out.push((Cow::Owned(k.to_string()), v)),
                }
            }
            Ok(Cow::Owned(V::Obj(out)))
        }
        Node::Arr(inner) => {
            let mut out = Vec::new();
            each(inner, input, &mut out)?;
            Ok(Cow::Owned(V::Arr(out.into_iter().map(Cow::into_owned).collect())))
        }
        Node::Arith(op, a, b) => {
            // jq evaluates the right operand first; with single values the order does not show.
            let x = one(a, input.clone())?;
            let y = one(b, input)?;
            arith(*op, &x, &y).map(Cow::Owned)
        }
        Node::Iter(_) => Err(Stop::Unsupported),
    }
}

/// Every value a node yields, in order, into `out`.
fn each<'v, 'a>(node: &Node, input: Val<'v, 'a>, out: &mut Vec<Val<'v, 'a>>) -> Result<(), Stop> {
    if !node.many() {
        out.push(one(node, input)?);
        return Ok(());
    }
    match node {
        Node::Iter(e) => {
            let mut bases = Vec::new();
            each(e, input, &mut bases)?;
            for base in bases {
                match base {
                    Cow::Borrowed(V::Arr(items)) => out.extend(items.iter().map(Cow::Borrowed)),
                    Cow::Borrowed(V::Obj(entries)) => out.extend(entries.iter().map(|(_, v)| Cow::Borrowed(v))),
                    Cow::Owned(V::Arr(items)) => out.extend(items.into_iter().map(Cow::Owned)),
                    Cow::Owned(V::Obj(entries)) => out.extend(entries.into_iter().map(|(_, v)| Cow::Owned(v))),
                    _ => return Err(Stop::Unsupported),
                }
            }
            Ok(())
        }
        Node::Field(e, name) => {
            let mut bases = Vec::new();
            each(e, input, &mut bases)?;
            for b in bases {
                out.push(field(b, name)?);
            }
            Ok(())
        }
        Node::Index(e, n) => {
            let mut bases = Vec::new();
            each(e, input, &mut bases)?;
            for b in bases {
                out.push(index(b, *n)?);
            }
            Ok(())
        }
        Node::Pipe(a, b) => {
            let mut mids = Vec::new();
            each(a, input, &mut mids)?;
            for m in mids {
                each(b, m, out)?;
            }
            Ok(())
        }
        // Generators inside these are refused at compile time (`many`).
        _ => Err(Stop::Unsupported),
    }
}

fn field<'v, 'a>(base: Val<'v, 'a>, name: &str) -> Result<Val<'v, 'a>, Stop> {
    let find = |entries: &[(Cow<'a, str>, V<'a>)]| entries.iter().rposition(|(k, _)| k == name);
    match base {
        Cow::Borrowed(V::Obj(entries)) => {
            Ok(find(entries).map_or(Cow::Owned(V::Null), |i| Cow::Borrowed(&entries[i].1)))
        }
        Cow::Owned(V::Obj(mut entries)) => Ok(Cow::Owned(find(&entries).map_or(V::Null, |i| entries.swap_remove(i).1))),
        b if matches!(&*b, V::Null) => Ok(Cow::Owned(V::Null)),
        _ => Err(Stop::Unsupported),
    }
}

fn index<'v, 'a>(base: Val<'v, 'a>, n: i64) -> Result<Val<'v, 'a>, Stop> {
    let at = |len: usize| {
        let i = if n < 0 { len as i64 + n } else { n };
        (0..len as i64).contains(&i).then_some(i as usize)
    };
    match base {
        Cow::Borrowed(V::Arr(items)) => Ok(at(items.len()).map_or(Cow::Owned(V::Null), |i| Cow::Borrowed(&items[i]))),
        Cow::Owned(V::Arr(mut items)) => Ok(Cow::Owned(at(items.len()).map_or(V::Null, |i| items.swap_remove(i)))),
        b if matches!(&*b, V::Null) => Ok(Cow::Owned(V::Null)),
        _ => Err(Stop::Unsupported),
    }
}

fn num(v: &V<'_>) -> Option<f64> {
    match v {
        V::Int(n) => Some(*n as f64),
        V::U64(n) => Some(*n as f64),
        V::Float(f) | V::InFloat(f) => Some(*f),
        _ => None,
    }
}

/// Whether `v` is written inside a string as jaq writes it: jaq keeps an
/// input float's own text, and writes other floats in its own way outside
/// plain decimal magnitudes (`1e21`, `0.00001`); those are left to jaq.
fn plain_in_strings(v: &V<'_>) -> bool {
    match v {
        V::InFloat(_) => false,
        V::Float(f) => *f == 0.0 || (1e-4..1e15).contains(&f.abs()),
        V::Arr(items) => items.iter().all(plain_in_strings),
        V::Obj(entries) => entries.iter().all(|(_, v)| plain_in_strings(v)),
        _ => true,
    }
}

fn arith<'a>(op: Op, x: &V<'a>, y: &V<'a>) -> Result<V<'a>, Stop> {
    // jaq reads floats with its own parser: arithmetic on them is its to do.
    if matches!(x, V::InFloat(_)) || matches!(y, V::InFloat(_)) {
        return Err(Stop::Unsupported);
    }
    Ok(match (op, x, y) {
        (Op::Add, V::Null, v) | (Op::Add, v, V::Null) => v.clone(),
        (Op::Add | Op::Sub | Op::Mul, V::Int(a), V::Int(b)) => {
            let r = match op {
                Op::Add => a.checked_add(*b),
                Op::Sub => a.checked_sub(*b),
                _ => a.checked_mul(*b),
            };
            // On overflow, what jaq does is its own business.
            r.map(V::Int).ok_or(Stop::Unsupported)?
        }
        (Op::Div, a, b) if num(a).is_some() && num(b).is_some() => {
            let (a, b) = (num(a).unwrap_or_default(), num(b).unwrap_or_default());
            if b == 0.0 {
                return Err(Stop::Unsupported);
            }
            V::Float(a / b)
        }
        (_, a, b) if num(a).is_some() && num(b).is_some() && !matches!(a, V::U64(_)) && !matches!(b, V::U64(_)) => {
            let (a, b) = (num(a).unwrap_or_default(), num(b).unwrap_or_default());
            V::Float(match op {
                Op::Add => a + b,
                Op::Sub => a - b,
                Op::Mul => a * b,
                Op::Div => a / b,
            })
        }
        (Op::Add, V::Str(a), V::Str(b)) => V::Str(Cow::Owned(format!("{a}{b}"))),
        (Op::Add, V::Arr(a), V::Arr(b)) => V::Arr(a.iter().chain(b).cloned().collect()),
        // Object merges, array subtraction, string repetition and the rest: jaq's.
        _ => return Err(Stop::Unsupported),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(code: &str, body: &str) -> Outcome {
        Fast::compile(code).unwrap_or_else(|| panic!("{code} is not on the fast path")).run(body.as_bytes())
    }

    fn done(code: &str, body: &str) -> String {
        match run(code, body) {
            Outcome::Done(b) => String::from_utf8(b).unwrap(),
            other => panic!("{code}: {other:?}"),
        }
    }

    #[test]
    fn which_programs_take_the_fast_path() {
        for yes in [
            ".",
            ".a",
            ".a.b[0].c",
            ".\"a b\"",
            ".a[-1]",
            "{text: \"x \\(.a) \\(.b / 100) y\"}",
            "{order: .data.order.id, total: (.data.order.amount / 100), skus: [.data.order.items[] | .sku]}",
            "{id, \"k\": .v, n: 1, f: 1.5e2, s: \"q\", t: true, z: null}",
            "[.a[] | .b] | .[0]",
            ".a + .b - 3 * .c",
            "(.a)",
            "[.a[][]]",
        ] {
            assert!(Fast::compile(yes).is_some(), "{yes}");
        }
        for no in [
            ".[]",
            ".a, .b",
            "{a: .b[]}",
            "map(.x)",
            "..",
            ".a // 1",
            ".a?",
            "if . then 1 else 2 end",
            "$ENV",
            "\"\\u00e9\"",
            "{a: .b | .c}",
            "[.a] as $x | $x",
            "length",
            ". as [$a] | $a",
            "{(.k): 1}",
            "",
        ] {
            assert!(Fast::compile(no).is_none(), "{no}");
        }
        let deep = format!("{}.{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(Fast::compile(&deep).is_none(), "deep programs are jaq's, and do not overflow the stack here");
        let deep = format!("{}1{}", "{a:".repeat(10_000), "}".repeat(10_000));
        assert!(Fast::compile(&deep).is_none());
    }

    #[test]
    fn results_and_failures() {
        let body = r#"{"a":{"b":[{"c":1},{"c":"x"}]},"n":1250,"s":"caf\u00e9","z":null,"o":{"k":1,"k":2}}"#;
        assert_eq!(done(".a.b[0].c", body), "1");
        assert_eq!(done(".a.b[-1].c", body), "\"x\"");
        assert_eq!(done(".a.b[5]", body), "null");
        assert_eq!(done(".missing.deeper", body), "null");
        assert_eq!(done("[.a.b[] | .c]", body), "[1,\"x\"]");
        assert_eq!(done("{t: \"\\(.s) \\(.n / 100) \\(.a.b[0])\"}", body), r#"{"t":"café 12.5 {\"c\":1}"}"#);
        assert_eq!(done(".n / 10", body), "125.0", "a division is a float, written as jaq writes it");
        assert_eq!(done(".n + 1", body), "1251");
        assert_eq!(done(".z + 1", body), "1");
        assert_eq!(done(".o.k", body), "2", "the last of a repeated key");
        assert_eq!(done("{a: 1, a: 2, b: 3}", body), r#"{"a":2,"b":3}"#);
        assert_eq!(done("{s}", body), r#"{"s":"café"}"#);
        assert_eq!(done(".", r#"{"b":1,"a":[true,null]}"#), r#"{"b":1,"a":[true,null]}"#, "key order kept");
        for jaqs in [".s.x", "[.n[]]", ".n / 0", ".o[0]"] {
            assert_eq!(run(jaqs, body), Outcome::Unsupported, "{jaqs}: errors are jaq's to give");
        }
        assert_eq!(run(".s * 2", body), Outcome::Unsupported, "jaq's to do");
        assert_eq!(run(".", "not json"), Outcome::Unsupported, "jaq's to say");
    }
}
