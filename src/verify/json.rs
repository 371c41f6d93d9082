//! JSON pointer lookups (`json:/data/id`) without building a `serde_json::Value`.
//!
//! Each level is scanned with serde's borrowed `RawValue`: keys that do not
//! match are skipped without allocating, and the text found is returned as it
//! appears in the body (strings unescaped, numbers verbatim), which is what
//! the `{timestamp}` and `{id}` template placeholders need.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize as _;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// The text at `pointer` (RFC 6901) in `body`: a string's contents or a number's digits.
/// `None` if the body is not JSON, the path is absent, or the value is another type.
pub fn pointer_text<'a>(body: &'a [u8], pointer: &str) -> Option<Cow<'a, str>> {
    let raw = pointer_raw(body, pointer)?;
    match raw.as_bytes().first()? {
        b'"' => {
            let mut de = serde_json::Deserializer::from_str(raw);
            let text = Text.deserialize(&mut de).ok()?;
            de.end().ok()?;
            Some(text)
        }
        b'-' | b'0'..=b'9' => {
            let mut de = serde_json::Deserializer::from_str(raw);
            IgnoredAny::deserialize(&mut de).ok()?;
            de.end().ok()?;
            Some(Cow::Borrowed(raw))
        }
        _ => None,
    }
}

/// The JSON text at `pointer` exactly as it stands in `body` (any type, not
/// validated beyond the levels walked); `None` if the path is absent.
pub fn pointer_raw<'a>(body: &'a [u8], pointer: &str) -> Option<&'a str> {
    let mut raw = std::str::from_utf8(body).ok()?.trim();
    if !pointer.is_empty() {
        // Each level is one pass over that level's text; the top level is not
        // validated separately first.
        for token in pointer.strip_prefix('/')?.split('/') {
            let token: Cow<'_, str> = if token.contains('~') {
                Cow::Owned(token.replace("~1", "/").replace("~0", "~"))
            } else {
                Cow::Borrowed(token)
            };
            raw = child(raw, &token)?.get();
        }
    }
    Some(raw)
}

fn child<'a>(raw: &'a str, token: &str) -> Option<&'a RawValue> {
    let mut de = serde_json::Deserializer::from_str(raw);
    let found = match raw.as_bytes().first()? {
        b'{' => de.deserialize_map(FindKey(token)).ok()?,
        b'[' => de.deserialize_seq(FindIndex(array_index(token)?)).ok()?,
        _ => None,
    };
    de.end().ok()?;
    found
}

/// An RFC 6901 array index: `0` or digits without a leading zero (no sign,
/// no `00`), as serde_json's own pointer reads it (found by the json_pointer
/// fuzz target: `"00"` and `"+0"` were read as index 0).
fn array_index(token: &str) -> Option<usize> {
    let digits = token.bytes().all(|b| b.is_ascii_digit());
    if token.is_empty() || !digits || (token.len() > 1 && token.starts_with('0')) {
        return None;
    }
    token.parse().ok()
}

/// A string, borrowed from the input when it has no escapes.
struct Text;

impl<'de> DeserializeSeed<'de> for Text {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Text {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

struct FindKey<'k>(&'k str);

impl<'de> Visitor<'de> for FindKey<'_> {
    type Value = Option<&'de RawValue>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }
    /// The *last* occurrence of a duplicated key wins, as in serde_json and
    /// JavaScript's `JSON.parse`, so the gateway reads the same ID, event type
    /// and timestamp from a body as the app behind it will.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key_seed(Text)? {
            if key == self.0 {
                found = Some(map.next_value::<&RawValue>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

struct FindIndex(usize);

impl<'de> Visitor<'de> for FindIndex {
    type Value = Option<&'de RawValue>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        let mut i = 0;
        loop {
            if i == self.0 {
                match seq.next_element::<&RawValue>()? {
                    Some(v) => found = Some(v),
                    None => break,
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            i += 1;
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn finds_strings_numbers_and_nested_values() {
        let body = br#"{"id":"evt_1","n":1654503849680,"f":-1.5e3,"data":{"name":"a.b","list":[{"x":"0"},{"x":"1"}]},"esc":"a\"b","a/b":"slash","t~":"tilde","obj":{}}"#;
        assert_eq!(pointer_text(body, "/id").as_deref(), Some("evt_1"));
        assert_eq!(pointer_text(body, "/n").as_deref(), Some("1654503849680"));
        assert_eq!(pointer_text(body, "/f").as_deref(), Some("-1.5e3"));
        assert_eq!(pointer_text(body, "/data/name").as_deref(), Some("a.b"));
        assert_eq!(pointer_text(body, "/data/list/1/x").as_deref(), Some("1"));
        assert_eq!(pointer_text(body, "/esc").as_deref(), Some("a\"b"));
        assert_eq!(pointer_text(body, "/a~1b").as_deref(), Some("slash"));
        assert_eq!(pointer_text(body, "/t~0").as_deref(), Some("tilde"));
        assert_eq!(pointer_text(body, "/obj"), None);
        assert_eq!(pointer_text(body, "/missing"), None);
        assert_eq!(pointer_text(body, "/data/list/9/x"), None);
        assert_eq!(pointer_text(b"a=1&b=2", "/a"), None);
        assert_eq!(pointer_text(b"{\"a\":1", "/a"), None);
        assert_eq!(pointer_raw(body, "/data/list/0"), Some(r#"{"x":"0"}"#));
        assert_eq!(pointer_raw(body, "/esc"), Some(r#""a\"b""#));
        assert_eq!(pointer_raw(body, "/obj"), Some("{}"));
        assert_eq!(pointer_raw(body, "/missing"), None);
        // Array indices as RFC 6901 (and serde_json) read them.
        assert_eq!(pointer_text(body, "/data/list/01/x"), None);
        assert_eq!(pointer_text(body, "/data/list/+1/x"), None);
        assert_eq!(pointer_text(body, "/data/list/-/x"), None);
        assert_eq!(pointer_text(body, "/data/list/0/x").as_deref(), Some("0"));
    }

    #[test]
    fn a_duplicated_key_reads_its_last_value_as_the_app_does() {
        for (body, pointer) in [
            (&br#"{"id":"first","type":"x","id":"second"}"#[..], "/id"),
            (br#"{"data":{"id":"a"},"data":{"id":"b"}}"#, "/data/id"),
            (br#"{"event":{"type":"t1","type":"t2"}}"#, "/event/type"),
            (br#"{"timestamp":1,"timestamp":2}"#, "/timestamp"),
        ] {
            let app: serde_json::Value = serde_json::from_slice(body).unwrap();
            let expected = match app.pointer(pointer).unwrap() {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            assert_eq!(
                pointer_text(body, pointer).as_deref(),
                Some(expected.as_str()),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(pointer_text(br#"{"id":"first","id":"second"}"#, "/id").as_deref(), Some("second"));
    }

    proptest! {
        /// Agrees with serde_json's own pointer on arbitrary small documents.
        #[test]
        fn agrees_with_value_pointer(v in arb_json(), path in prop::collection::vec("[a-c0-2]", 0..3)) {
            let text = serde_json::to_string(&v).unwrap();
            let ptr: String = path.iter().map(|p| format!("/{p}")).collect();
            let expected = match v.pointer(&ptr) {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                _ => None,
            };
            prop_assert_eq!(pointer_text(text.as_bytes(), &ptr).map(Cow::into_owned), expected);
        }
    }

    fn arb_json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(serde_json::Value::from),
            "[a-z\"\\\\]{0,4}".prop_map(serde_json::Value::from),
            Just(serde_json::Value::Null),
        ];
        leaf.prop_recursive(3, 16, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(serde_json::Value::from),
                prop::collection::btree_map("[a-c0-2]", inner, 0..3)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
