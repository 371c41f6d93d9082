//! `filter = { LOCATOR = CONDITION, ... }` on a route (SPEC §14): every
//! condition must hold for the route to take a delivery.
//!
//! Operators are data (Hookdeck's habit): a condition is a literal (equality)
//! or a table of operators, compiled once at config load. Evaluating one reads
//! each located field once, straight from the body's text
//! ([`crate::verify::json::pointer_raw`]) or the request's headers, and
//! allocates nothing unless a string holds escapes.
//!
//! Types are kept apart: the JSON string `"5"` is not the number `5`, and
//! `gt`/`lt` hold for numbers only. Header values are text; a number operator
//! (or a number literal) compares them as numbers when they parse as one. A
//! missing field fails every condition but `exists = false`; JSON `null` is
//! present (it equals nothing but satisfies `exists = true` and `ne`).

use std::borrow::Cow;

use http::{HeaderMap, HeaderName};

use crate::verify::json::pointer_raw;

/// A compiled filter; the empty one takes everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    fields: Box<[(Field, Box<[Condition]>)]>,
}

/// Where a filtered value is read from.
#[derive(Debug, Clone, PartialEq)]
enum Field {
    Header(HeaderName),
    /// An RFC 6901 pointer into the JSON body.
    Json(Box<str>),
}

/// A literal to compare with.
#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Str(Box<str>),
    Num(f64),
    Bool(bool),
}

#[derive(Debug, Clone, PartialEq)]
enum Condition {
    Eq(Literal),
    Ne(Literal),
    In(Box<[Literal]>),
    NotIn(Box<[Literal]>),
    Gt(f64),
    Gte(f64),
    Lt(f64),
    Lte(f64),
    Prefix(Box<str>),
    Suffix(Box<str>),
    Contains(Box<str>),
    Exists(bool),
}

/// A located value, borrowed from the request where it can be.
#[derive(Debug)]
enum Found<'a> {
    Missing,
    Null,
    Bool(bool),
    Num(f64),
    /// A JSON string (unescaped).
    Str(Cow<'a, str>),
    /// A header's text: compared as a number by number operators when it is one.
    Text(&'a str),
    /// An object or an array: present, equal to no literal.
    Other,
}

/// Operators a condition table may hold, for error messages.
const OPERATORS: &str = "eq, ne, in, not_in, gt, gte, lt, lte, prefix, suffix, contains, exists";

/// Longest literal string or list a filter takes: a filter is config, not data.
const MAX_LITERAL: usize = 4096;
const MAX_LIST: usize = 1024;

impl Filter {
    /// Compiles `table`; each error is `(key path below the filter, message)`.
    pub fn compile(table: &toml::Table) -> Result<Filter, Vec<(String, String)>> {
        let mut errs = Vec::new();
        let mut fields = Vec::with_capacity(table.len());
        for (locator, condition) in table {
            let at = format!("{locator:?}");
            let field = match field(locator) {
                Ok(f) => f,
                Err(e) => {
                    errs.push((at.clone(), e));
                    continue;
                }
            };
            let conditions = match condition {
                toml::Value::Table(ops) if ops.is_empty() => {
                    errs.push((at, format!("an empty table; use one or more of {OPERATORS}")));
                    continue;
                }
                toml::Value::Table(ops) => ops
                    .iter()
                    .filter_map(|(op, v)| operator(op, v).map_err(|e| errs.push((format!("{at}.{op}"), e))).ok())
                    .collect::<Vec<_>>(),
                v => match literal(v) {
                    Ok(l) => vec![Condition::Eq(l)],
                    Err(e) => {
                        errs.push((at, e));
                        continue;
                    }
                },
            };
            fields.push((field, conditions.into_boxed_slice()));
        }
        if errs.is_empty() { Ok(Filter { fields: fields.into_boxed_slice() }) } else { Err(errs) }
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Whether a delivery with these headers and body passes.
    pub fn matches(&self, headers: &HeaderMap, body: &[u8]) -> bool {
        self.fields.iter().all(|(field, conditions)| {
            let found = match field {
                Field::Header(name) => match headers.get(name) {
                    None => Found::Missing,
                    Some(v) => v.to_str().map_or(Found::Other, Found::Text),
                },
                Field::Json(ptr) => json(body, ptr),
            };
            conditions.iter().all(|c| c.holds(&found))
        })
    }
}

fn field(locator: &str) -> Result<Field, String> {
    let usage = "use \"json:/pointer\" (into the body) or \"header:NAME\"";
    if let Some(ptr) = locator.strip_prefix("json:") {
        if ptr.is_empty() || ptr.starts_with('/') {
            return Ok(Field::Json(ptr.into()));
        }
        return Err(format!("a JSON pointer starts with '/'; {usage}"));
    }
    if let Some(name) = locator.strip_prefix("header:") {
        return HeaderName::from_bytes(name.trim().as_bytes())
            .map(Field::Header)
            .map_err(|_| format!("{name:?} is not a header name; {usage}"));
    }
    Err(format!("unknown locator; {usage}"))
}

fn literal(v: &toml::Value) -> Result<Literal, String> {
    match v {
        toml::Value::String(s) if s.len() > MAX_LITERAL => Err(format!("longer than {MAX_LITERAL} bytes")),
        toml::Value::String(s) => Ok(Literal::Str(s.as_str().into())),
        toml::Value::Integer(i) => Ok(Literal::Num(*i as f64)),
        toml::Value::Float(f) if f.is_finite() => Ok(Literal::Num(*f)),
        toml::Value::Boolean(b) => Ok(Literal::Bool(*b)),
        other => Err(format!(
            "expected a string, number or boolean (or a table of operators: {OPERATORS}), got {}",
            other.type_str()
        )),
    }
}

fn number(v: &toml::Value) -> Result<f64, String> {
    match v {
        toml::Value::Integer(i) => Ok(*i as f64),
        toml::Value::Float(f) if f.is_finite() => Ok(*f),
        other => Err(format!("expects a number, got {}", other.type_str())),
    }
}

fn text(v: &toml::Value) -> Result<Box<str>, String> {
    match v {
        toml::Value::String(s) if s.len() > MAX_LITERAL => Err(format!("longer than {MAX_LITERAL} bytes")),
        toml::Value::String(s) => Ok(s.as_str().into()),
        other => Err(format!("expects a string, got {}", other.type_str())),
    }
}

fn list(v: &toml::Value) -> Result<Box<[Literal]>, String> {
    match v {
        toml::Value::Array(items) if items.len() > MAX_LIST => Err(format!("more than {MAX_LIST} values")),
        toml::Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| literal(v).map_err(|e| format!("[{i}]: {e}")))
            .collect::<Result<Vec<_>, _>>()
            .map(Vec::into_boxed_slice),
        other => Err(format!("expects a list of strings, numbers or booleans, got {}", other.type_str())),
    }
}

fn operator(op: &str, v: &toml::Value) -> Result<Condition, String> {
    Ok(match op {
        "eq" => Condition::Eq(literal(v)?),
        "ne" => Condition::Ne(literal(v)?),
        "in" => Condition::In(list(v)?),
        "not_in" => Condition::NotIn(list(v)?),
        "gt" => Condition::Gt(number(v)?),
        "gte" => Condition::Gte(number(v)?),
        "lt" => Condition::Lt(number(v)?),
        "lte" => Condition::Lte(number(v)?),
        "prefix" => Condition::Prefix(text(v)?),
        "suffix" => Condition::Suffix(text(v)?),
        "contains" => Condition::Contains(text(v)?),
        "exists" => match v {
            toml::Value::Boolean(b) => Condition::Exists(*b),
            other => return Err(format!("expects true or false, got {}", other.type_str())),
        },
        _ => return Err(format!("unknown operator; use one of {OPERATORS}")),
    })
}

/// The value at `ptr` in `body`, typed by its first character.
fn json<'a>(body: &'a [u8], ptr: &str) -> Found<'a> {
    let Some(raw) = pointer_raw(body, ptr) else { return Found::Missing };
    match raw.as_bytes().first() {
        Some(b'"') => crate::verify::json::pointer_text(raw.as_bytes(), "").map_or(Found::Other, Found::Str),
        Some(b'-' | b'0'..=b'9') => raw.parse::<f64>().ok().filter(|n| n.is_finite()).map_or(Found::Other, Found::Num),
        Some(b't') if raw == "true" => Found::Bool(true),
        Some(b'f') if raw == "false" => Found::Bool(false),
        Some(b'n') if raw == "null" => Found::Null,
        Some(b'{' | b'[') => Found::Other,
        _ => Found::Missing,
    }
}

impl Found<'_> {
    fn present(&self) -> bool {
        !matches!(self, Found::Missing)
    }

    fn number(&self) -> Option<f64> {
        match self {
            Found::Num(n) => Some(*n),
            Found::Text(t) => t.trim().parse::<f64>().ok().filter(|n| n.is_finite()),
            _ => None,
        }
    }

    fn text(&self) -> Option<&str> {
        match self {
            Found::Str(s) => Some(s),
            Found::Text(t) => Some(t),
            _ => None,
        }
    }

    fn equals(&self, l: &Literal) -> bool {
        match (self, l) {
            (Found::Str(s), Literal::Str(l)) => **s == **l,
            (Found::Text(t), Literal::Str(l)) => *t == &**l,
            (Found::Num(n), Literal::Num(l)) => n == l,
            (Found::Text(_), Literal::Num(l)) => self.number() == Some(*l),
            (Found::Bool(b), Literal::Bool(l)) => b == l,
            (Found::Text(t), Literal::Bool(l)) => *t == if *l { "true" } else { "false" },
            _ => false,
        }
    }
}

impl Condition {
    fn holds(&self, v: &Found<'_>) -> bool {
        match self {
            Condition::Exists(want) => v.present() == *want,
            Condition::Eq(l) => v.equals(l),
            Condition::Ne(l) => v.present() && !v.equals(l),
            Condition::In(ls) => ls.iter().any(|l| v.equals(l)),
            Condition::NotIn(ls) => v.present() && !ls.iter().any(|l| v.equals(l)),
            Condition::Gt(x) => v.number().is_some_and(|n| n > *x),
            Condition::Gte(x) => v.number().is_some_and(|n| n >= *x),
            Condition::Lt(x) => v.number().is_some_and(|n| n < *x),
            Condition::Lte(x) => v.number().is_some_and(|n| n <= *x),
            Condition::Prefix(p) => v.text().is_some_and(|t| t.starts_with(&**p)),
            Condition::Suffix(p) => v.text().is_some_and(|t| t.ends_with(&**p)),
            Condition::Contains(p) => v.text().is_some_and(|t| t.contains(&**p)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(toml: &str) -> Filter {
        let table: toml::Table = toml::from_str(&format!("f = {toml}")).unwrap();
        Filter::compile(table["f"].as_table().unwrap()).unwrap()
    }

    fn errors(toml: &str) -> Vec<(String, String)> {
        let table: toml::Table = toml::from_str(&format!("f = {toml}")).unwrap();
        Filter::compile(table["f"].as_table().unwrap()).unwrap_err()
    }

    const BODY: &[u8] = br#"{"s":"usd","e":"a\"b","n":250,"z":0,"f":1.5,"neg":-3,"t":true,"no":false,
        "nul":null,"o":{"k":"v"},"a":[1,2],"num_text":"5","deep":{"x":{"y":"in/voice"}},"sl/ash":"s"}"#;

    fn headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-count", "42".parse().unwrap());
        h.insert("x-kind", "invoice.paid".parse().unwrap());
        h
    }

    /// Every operator against every kind of value: (filter, expected).
    #[test]
    fn operator_matrix() {
        let cases: &[(&str, bool)] = &[
            // literals: equality, typed
            (r#"{ "json:/s" = "usd" }"#, true),
            (r#"{ "json:/s" = "eur" }"#, false),
            (r#"{ "json:/e" = 'a"b' }"#, true),
            (r#"{ "json:/n" = 250 }"#, true),
            (r#"{ "json:/n" = 250.0 }"#, true),
            (r#"{ "json:/n" = "250" }"#, false),
            (r#"{ "json:/num_text" = 5 }"#, false),
            (r#"{ "json:/num_text" = "5" }"#, true),
            (r#"{ "json:/t" = true }"#, true),
            (r#"{ "json:/no" = true }"#, false),
            (r#"{ "json:/t" = "true" }"#, false),
            (r#"{ "json:/o" = "v" }"#, false),
            (r#"{ "json:/missing" = "x" }"#, false),
            (r#"{ "json:/nul" = "null" }"#, false),
            (r#"{ "json:/deep/x/y" = "in/voice" }"#, true),
            (r#"{ "json:/sl~1ash" = "s" }"#, true),
            (r#"{ "json:/a/1" = 2 }"#, true),
            // eq / ne
            (r#"{ "json:/s" = { eq = "usd" } }"#, true),
            (r#"{ "json:/s" = { ne = "usd" } }"#, false),
            (r#"{ "json:/s" = { ne = "eur" } }"#, true),
            (r#"{ "json:/missing" = { ne = "eur" } }"#, false),
            (r#"{ "json:/nul" = { ne = "eur" } }"#, true),
            (r#"{ "json:/n" = { ne = "250" } }"#, true),
            // in / not_in
            (r#"{ "json:/s" = { in = ["eur", "usd"] } }"#, true),
            (r#"{ "json:/s" = { in = ["eur", "gbp"] } }"#, false),
            (r#"{ "json:/n" = { in = [1, 250] } }"#, true),
            (r#"{ "json:/n" = { in = ["250"] } }"#, false),
            (r#"{ "json:/s" = { not_in = ["eur"] } }"#, true),
            (r#"{ "json:/s" = { not_in = ["usd"] } }"#, false),
            (r#"{ "json:/missing" = { not_in = ["usd"] } }"#, false),
            (r#"{ "json:/missing" = { in = ["usd"] } }"#, false),
            // numbers
            (r#"{ "json:/n" = { gt = 0 } }"#, true),
            (r#"{ "json:/z" = { gt = 0 } }"#, false),
            (r#"{ "json:/z" = { gte = 0 } }"#, true),
            (r#"{ "json:/neg" = { lt = 0 } }"#, true),
            (r#"{ "json:/f" = { lte = 1.5 } }"#, true),
            (r#"{ "json:/f" = { lt = 1.5 } }"#, false),
            (r#"{ "json:/n" = { gt = 100, lt = 300 } }"#, true),
            (r#"{ "json:/n" = { gt = 100, lt = 200 } }"#, false),
            (r#"{ "json:/num_text" = { gt = 1 } }"#, false),
            (r#"{ "json:/s" = { gt = 1 } }"#, false),
            (r#"{ "json:/missing" = { lt = 1 } }"#, false),
            (r#"{ "json:/t" = { gt = 0 } }"#, false),
            // strings
            (r#"{ "json:/s" = { prefix = "us" } }"#, true),
            (r#"{ "json:/s" = { prefix = "sd" } }"#, false),
            (r#"{ "json:/s" = { suffix = "sd" } }"#, true),
            (r#"{ "json:/s" = { contains = "s" } }"#, true),
            (r#"{ "json:/s" = { contains = "x" } }"#, false),
            (r#"{ "json:/n" = { prefix = "2" } }"#, false),
            (r#"{ "json:/missing" = { contains = "" } }"#, false),
            // exists
            (r#"{ "json:/s" = { exists = true } }"#, true),
            (r#"{ "json:/nul" = { exists = true } }"#, true),
            (r#"{ "json:/o" = { exists = true } }"#, true),
            (r#"{ "json:/missing" = { exists = true } }"#, false),
            (r#"{ "json:/missing" = { exists = false } }"#, true),
            (r#"{ "json:/s" = { exists = false } }"#, false),
            // headers: text, numbers when they parse
            (r#"{ "header:X-Kind" = "invoice.paid" }"#, true),
            (r#"{ "header:x-kind" = { prefix = "invoice." } }"#, true),
            (r#"{ "header:x-count" = 42 }"#, true),
            (r#"{ "header:x-count" = "42" }"#, true),
            (r#"{ "header:x-count" = { gt = 40, lte = 42 } }"#, true),
            (r#"{ "header:x-kind" = { gt = 0 } }"#, false),
            (r#"{ "header:x-missing" = { exists = false } }"#, true),
            (r#"{ "header:x-missing" = "" }"#, false),
            // all must hold
            (r#"{ "json:/s" = "usd", "json:/n" = { gt = 0 } }"#, true),
            (r#"{ "json:/s" = "usd", "json:/z" = { gt = 0 } }"#, false),
            ("{}", true),
        ];
        let h = headers();
        for (f, want) in cases {
            assert_eq!(filter(f).matches(&h, BODY), *want, "{f}");
        }
    }

    #[test]
    fn a_body_that_is_not_json_has_no_fields() {
        let f = filter(r#"{ "json:/s" = { exists = false } }"#);
        assert!(f.matches(&HeaderMap::new(), b"s=usd"));
        assert!(!filter(r#"{ "json:/s" = "usd" }"#).matches(&HeaderMap::new(), b"{\"s\":"));
        assert!(!filter(r#"{ "json:/s" = "usd" }"#).matches(&HeaderMap::new(), b""));
    }

    #[test]
    fn hostile_bodies_are_answered_without_panicking() {
        let f = filter(r#"{ "json:/a/b/c" = "x", "json:/s" = { gt = 1 } }"#);
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let bodies: [&[u8]; 6] =
            [deep.as_bytes(), b"\xff\xfe", b"{\"a\":{\"b\":{\"c\":\"x\"}}}}", b"{\"s\":1e999}", b"nul", b"\"\\ud800\""];
        for body in bodies {
            assert!(!f.matches(&HeaderMap::new(), body));
        }
    }

    #[test]
    fn bad_filters_name_the_key_and_the_fix() {
        let e = errors(r#"{ "json:/a" = { gte = "1" }, "json:/b" = { between = 1 }, "body:/x" = 1 }"#);
        let keys: Vec<&str> = e.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["\"body:/x\"", "\"json:/a\".gte", "\"json:/b\".between"]);
        assert!(e[0].1.contains("json:/pointer"), "{e:?}");
        assert!(e[1].1.contains("number") && e[1].1.contains("string"), "{e:?}");
        assert!(e[2].1.contains("unknown operator") && e[2].1.contains("not_in"), "{e:?}");
        for (bad, words) in [
            (r#"{ "json:a" = 1 }"#, "starts with '/'"),
            (r#"{ "header:bad name" = 1 }"#, "not a header name"),
            (r#"{ "json:/a" = [1] }"#, "array"),
            (r#"{ "json:/a" = {} }"#, "empty table"),
            (r#"{ "json:/a" = { in = "x" } }"#, "list"),
            (r#"{ "json:/a" = { in = [[1]] } }"#, "[0]"),
            (r#"{ "json:/a" = { exists = 1 } }"#, "true or false"),
            (r#"{ "json:/a" = { prefix = 1 } }"#, "string"),
            (r#"{ "json:/a" = { gt = nan } }"#, "number"),
            (r#"{ "json:/a" = 1979-05-27 }"#, "datetime"),
        ] {
            let e = errors(bad);
            assert!(e.len() == 1 && e[0].1.contains(words), "{bad}: {e:?}");
        }
        let huge = format!(r#"{{ "json:/a" = "{}" }}"#, "x".repeat(MAX_LITERAL + 1));
        assert!(errors(&huge)[0].1.contains("longer than"));
        let many = format!(r#"{{ "json:/a" = {{ in = [{}] }} }}"#, vec!["1"; MAX_LIST + 1].join(","));
        assert!(errors(&many)[0].1.contains("more than"));
    }
}
