//! What the queue stores per delivery, and its byte layout on disk.
//!
//! An entry is immutable once stored: `[u32 meta][meta][u32 head][headers][body]`,
//! headers as `name: value\r\n` lines (header values cannot hold CR or LF).
//! The meta part is binary, after a version byte ([`Meta::encode`]); entries
//! stored by versions before it hold JSON there (always starting with `{`)
//! and are read as well.
//! What changes per attempt lives in a small [`State`] kept under the entry's
//! schedule key, so a retry never rewrites the body.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

/// Which route a delivery belongs to (SPEC §12): the source's name and the
/// route's identity (its `name`, or `~` and a fingerprint of what it matches),
/// as `[len][source][0xFE][len][identity]`, the prefix of every schedule key of
/// that route.
///
/// Stores written before identities keyed routes by position:
/// `[len][source][u16 BE index]` ([`RouteKey::legacy`]). Such keys are still
/// read (and migrated when a store opens): the index's high byte is never
/// `0xFE` (a source has far fewer routes), which tells the two apart.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteKey(Box<[u8]>);

/// Marks the identity form of [`RouteKey`].
const IDENTITY: u8 = 0xFE;

impl RouteKey {
    pub fn new(source: &str, identity: &str) -> Self {
        let name = &source.as_bytes()[..source.len().min(255)];
        let id = &identity.as_bytes()[..identity.len().min(255)];
        let mut k = Vec::with_capacity(3 + name.len() + id.len());
        k.push(name.len() as u8);
        k.extend_from_slice(name);
        k.push(IDENTITY);
        k.push(id.len() as u8);
        k.extend_from_slice(id);
        RouteKey(k.into_boxed_slice())
    }

    /// A key as stores before identities wrote it: by the route's position.
    pub fn legacy(source: &str, index: usize) -> Self {
        let name = &source.as_bytes()[..source.len().min(255)];
        let mut k = Vec::with_capacity(3 + name.len());
        k.push(name.len() as u8);
        k.extend_from_slice(name);
        k.extend_from_slice(&(index as u16).to_be_bytes());
        RouteKey(k.into_boxed_slice())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Splits a schedule key into its route and the rest.
    pub fn split(key: &[u8]) -> Option<(RouteKey, &[u8])> {
        let len = usize::from(*key.first()?);
        let end = match key.get(1 + len) {
            Some(&IDENTITY) => 1 + len + 2 + usize::from(*key.get(2 + len)?),
            Some(_) => 1 + len + 2,
            None => return None,
        };
        (key.len() >= end).then(|| (RouteKey(key[..end].into()), &key[end..]))
    }

    pub fn source(&self) -> &str {
        let len = usize::from(self.0[0]);
        std::str::from_utf8(&self.0[1..1 + len]).unwrap_or("")
    }

    /// Back from [`RouteKey::as_bytes`]; `None` unless well formed.
    pub fn from_bytes(b: &[u8]) -> Option<RouteKey> {
        let (k, rest) = RouteKey::split(b)?;
        (rest.is_empty() && std::str::from_utf8(&b[1..1 + usize::from(b[0])]).is_ok()).then_some(k)
    }

    /// The route's identity; for a legacy key, `@` and its position (what an
    /// orphaned legacy route is listed as).
    pub fn identity(&self) -> std::borrow::Cow<'_, str> {
        let at = 1 + usize::from(self.0[0]);
        match self.legacy_index() {
            Some(i) => format!("@{i}").into(),
            None => String::from_utf8_lossy(&self.0[at + 2..]),
        }
    }

    /// The position a legacy key names; `None` for an identity key.
    pub fn legacy_index(&self) -> Option<usize> {
        let at = 1 + usize::from(self.0[0]);
        match self.0.get(at) {
            Some(&IDENTITY) => None,
            _ => Some(usize::from(u16::from_be_bytes([self.0[at], self.0[at + 1]]))),
        }
    }
}

/// The delivery's facts, fixed at enqueue.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Meta {
    pub source: String,
    pub route: usize,
    pub id: String,
    pub event_type: String,
    /// The sender's query string, appended to the route's upstream path per attempt.
    pub query: Option<String>,
    /// Unix milliseconds.
    pub received_ms: u64,
    /// The delivery-log record of this process that follows the entry: `(epoch, seq)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<(u64, u64)>,
    /// Stored by `POST /deliveries/{entry}/replay`, not by the sender: not
    /// the sender's retry of an earlier enqueue (SPEC §17).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replay: bool,
    /// The route's `order_by` key ([`crate::route::policy::OrderBy::key`]):
    /// deliveries with the same one are attempted one at a time, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_key: Option<String>,
}

/// A delivery ready to store: the headers are the ones a sync route would
/// forward (SPEC §3), before `X-Hookgate-Attempt` and re-signing.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub meta: Meta,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Where an entry stands between attempts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    /// Unix milliseconds; set once dead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_ms: Option<u64>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a stored queue entry is damaged: {0}")]
pub struct Damaged(&'static str);

impl NewEntry {
    pub fn encode(&self) -> Vec<u8> {
        let head_len: usize = self.headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum();
        let mut out = Vec::with_capacity(8 + META_FIXED + 64 + head_len + self.body.len());
        out.extend_from_slice(&[0; 4]);
        self.meta.encode(&mut out);
        let meta_len = (out.len() - 4) as u32;
        out[..4].copy_from_slice(&meta_len.to_be_bytes());
        out.extend_from_slice(&(head_len as u32).to_be_bytes());
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(&self.body);
        out
    }

    /// Back from [`NewEntry::encode`]. The header values and the body are
    /// slices of `bytes`, not copies.
    pub fn decode(bytes: Bytes) -> Result<NewEntry, Damaged> {
        let (meta, rest) = chunk(&bytes)?;
        let meta = Meta::decode(meta)?;
        let (head, body) = chunk(rest)?;
        // Room for what an attempt adds (X-Hookgate-Attempt, re-signing).
        let mut headers = HeaderMap::with_capacity(memchr::memchr_iter(b'\n', head).count() + 4);
        let mut lines = head;
        while !lines.is_empty() {
            let (line, after) = match memchr::memchr(b'\n', lines) {
                Some(n) => (&lines[..n], &lines[n + 1..]),
                None => (lines, &lines[lines.len()..]),
            };
            lines = after;
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                continue;
            }
            // A header name cannot hold ':', so the first one ends it.
            let colon = memchr::memchr(b':', line).ok_or(Damaged("header line"))?;
            let value = line[colon + 1..].strip_prefix(b" ").ok_or(Damaged("header line"))?;
            let name = HeaderName::from_bytes(&line[..colon]).map_err(|_| Damaged("header name"))?;
            let value = HeaderValue::from_maybe_shared(bytes.slice_ref(value)).map_err(|_| Damaged("header value"))?;
            headers.append(name, value);
        }
        let body = bytes.slice_ref(body);
        Ok(NewEntry { meta, headers, body })
    }

    /// Only the meta part, for listings (the body is not copied).
    pub fn decode_meta(bytes: &[u8]) -> Result<Meta, Damaged> {
        let (meta, _) = chunk(bytes)?;
        Meta::decode(meta)
    }
}

/// The version byte of the binary meta layout.
const META_V1: u8 = 1;
/// Its fixed-size part: version, received_ms, route, flags, log.
const META_FIXED: usize = 1 + 8 + 4 + 1 + 16;

impl Meta {
    /// `[1][u64 received_ms][u32 route][u8 flags: 1 query, 2 log, 4 replay, 8 order key][u64 epoch][u64 seq]`
    /// then source, id, event type and query, each `[u32 len][UTF-8]`, then
    /// the order key in the same form when flag 8 is set
    /// (all integers big-endian). Reading it costs a tenth of the JSON it replaced.
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(META_V1);
        out.extend_from_slice(&self.received_ms.to_be_bytes());
        out.extend_from_slice(&(self.route as u32).to_be_bytes());
        out.push(
            u8::from(self.query.is_some())
                | (u8::from(self.log.is_some()) << 1)
                | (u8::from(self.replay) << 2)
                | (u8::from(self.order_key.is_some()) << 3),
        );
        let (epoch, seq) = self.log.unwrap_or((0, 0));
        out.extend_from_slice(&epoch.to_be_bytes());
        out.extend_from_slice(&seq.to_be_bytes());
        for text in [&self.source, &self.id, &self.event_type, self.query.as_deref().unwrap_or("")] {
            out.extend_from_slice(&(text.len() as u32).to_be_bytes());
            out.extend_from_slice(text.as_bytes());
        }
        if let Some(key) = &self.order_key {
            out.extend_from_slice(&(key.len() as u32).to_be_bytes());
            out.extend_from_slice(key.as_bytes());
        }
    }

    fn decode(bytes: &[u8]) -> Result<Meta, Damaged> {
        match bytes.first() {
            Some(&META_V1) => {}
            // Stored by an earlier version.
            Some(b'{') => return serde_json::from_slice(bytes).map_err(|_| Damaged("meta")),
            _ => return Err(Damaged("meta version")),
        }
        let fixed = bytes.get(..META_FIXED).ok_or(Damaged("meta"))?;
        let u64_at = |i: usize| u64::from_be_bytes(fixed[i..i + 8].try_into().unwrap_or_default());
        let received_ms = u64_at(1);
        let route = u32::from_be_bytes(fixed[9..13].try_into().unwrap_or_default()) as usize;
        let flags = fixed[13];
        let log = (flags & 2 != 0).then(|| (u64_at(14), u64_at(22)));
        let mut rest = &bytes[META_FIXED..];
        let mut text = || -> Result<String, Damaged> {
            let (t, after) = chunk(rest)?;
            rest = after;
            std::str::from_utf8(t).map(str::to_owned).map_err(|_| Damaged("meta text"))
        };
        let (source, id, event_type, query) = (text()?, text()?, text()?, text()?);
        let query = (flags & 1 != 0).then_some(query);
        let order_key = if flags & 8 != 0 { Some(text()?) } else { None };
        Ok(Meta { source, route, id, event_type, query, received_ms, log, replay: flags & 4 != 0, order_key })
    }
}

fn chunk(bytes: &[u8]) -> Result<(&[u8], &[u8]), Damaged> {
    let len: [u8; 4] = bytes.get(..4).and_then(|b| b.try_into().ok()).ok_or(Damaged("length"))?;
    let len = u32::from_be_bytes(len) as usize;
    let rest = &bytes[4..];
    if rest.len() < len {
        return Err(Damaged("truncated"));
    }
    Ok(rest.split_at(len))
}

/// A shared store's record: `[u32 id][id][u32 state][state JSON][entry]`.
pub fn pack(id: &str, state: &State, entry: &[u8]) -> Vec<u8> {
    let state = state.encode();
    let mut out = Vec::with_capacity(8 + id.len() + state.len() + entry.len());
    out.extend_from_slice(&(id.len() as u32).to_be_bytes());
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(&(state.len() as u32).to_be_bytes());
    out.extend_from_slice(&state);
    out.extend_from_slice(entry);
    out
}

/// Back from [`pack`]: the ID, the state and the entry's bytes.
pub fn unpack(bytes: &[u8]) -> Result<(String, State, &[u8]), Damaged> {
    let (id, rest) = chunk(bytes)?;
    let id = std::str::from_utf8(id).map_err(|_| Damaged("id"))?.to_owned();
    let (state, entry) = chunk(rest)?;
    Ok((id, State::decode(state), entry))
}

impl State {
    /// A delivery never attempted is empty (the common case, read on every take).
    pub fn encode(&self) -> Vec<u8> {
        if *self == State::default() {
            return Vec::new();
        }
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> State {
        // An empty value is a delivery never attempted.
        if bytes.is_empty() {
            return State::default();
        }
        serde_json::from_slice(bytes).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_round_trip() {
        let mut headers = HeaderMap::new();
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("two: with colon"));
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("x-bytes", HeaderValue::from_bytes(b"caf\xc3\xa9\ttab").unwrap());
        let e = NewEntry {
            meta: Meta {
                source: "tampa".into(),
                route: 3,
                id: "del-1".into(),
                event_type: "a.b".into(),
                query: Some("x=1".into()),
                received_ms: 1_700_000_000_123,
                log: Some((7, 9)),
                replay: true,
                order_key: Some("0123abcd".into()),
            },
            headers,
            body: Bytes::from_static(b"\x00\xffbody\r\n"),
        };
        let bytes = e.encode();
        let back = NewEntry::decode(Bytes::from(bytes.clone())).unwrap();
        assert_eq!(back.meta, e.meta);
        assert_eq!(back.headers, e.headers);
        assert_eq!(back.body, e.body);
        assert_eq!(NewEntry::decode_meta(&bytes).unwrap(), e.meta);
        for cut in [0, 3, 10, 30, 60] {
            assert!(NewEntry::decode(Bytes::copy_from_slice(&bytes[..cut])).is_err(), "cut at {cut}");
        }
        let plain = Meta { query: None, log: None, replay: false, order_key: None, ..e.meta.clone() };
        let bytes = NewEntry { meta: plain.clone(), ..e.clone() }.encode();
        assert_eq!(NewEntry::decode_meta(&bytes).unwrap(), plain);
        let empty = NewEntry { headers: HeaderMap::new(), body: Bytes::new(), ..e };
        let back = NewEntry::decode(Bytes::from(empty.encode())).unwrap();
        assert!(back.headers.is_empty() && back.body.is_empty());
        assert_eq!(back.meta, empty.meta);
    }

    /// Entries stored before the binary meta layout (JSON meta) are read as they were.
    #[test]
    fn entries_with_json_meta_still_read() {
        let meta =
            br#"{"source":"tampa","route":1,"id":"d-1","event_type":"e","query":null,"received_ms":5,"log":[1,2]}"#;
        let head = b"content-type: application/json\r\nx-a: b: c\r\n";
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&(meta.len() as u32).to_be_bytes());
        bytes.extend_from_slice(meta);
        bytes.extend_from_slice(&(head.len() as u32).to_be_bytes());
        bytes.extend_from_slice(head);
        bytes.extend_from_slice(b"{}");
        let e = NewEntry::decode(Bytes::from(bytes)).unwrap();
        assert_eq!(
            (e.meta.source.as_str(), e.meta.route, e.meta.id.as_str(), e.meta.log),
            ("tampa", 1, "d-1", Some((1, 2)))
        );
        assert_eq!(e.meta.query, None);
        assert_eq!(e.headers["x-a"], "b: c");
        assert_eq!(e.headers["content-type"], "application/json");
        assert_eq!(&e.body[..], b"{}");
        // And an old record's attempt state, JSON too.
        assert_eq!(State::decode(br#"{"attempts":2,"last_status":503,"last_error":null}"#).attempts, 2);
    }

    #[test]
    fn route_key_parts() {
        let k = RouteKey::new("tyk", "orders");
        assert_eq!((k.source(), &*k.identity(), k.legacy_index()), ("tyk", "orders", None));
        let mut key = k.as_bytes().to_vec();
        key.extend_from_slice(&[1, 2, 3]);
        let (back, rest) = RouteKey::split(&key).unwrap();
        assert_eq!((back, rest), (k, &[1u8, 2, 3][..]));
        assert!(RouteKey::split(&[9, 1]).is_none());
        assert!(RouteKey::split(&[1, b'a', 0xFE, 9, b'x']).is_none(), "identity shorter than its length");

        // Keys written before identities: by position, still read.
        let old = RouteKey::legacy("tyk", 258);
        assert_eq!((old.source(), &*old.identity(), old.legacy_index()), ("tyk", "@258", Some(258)));
        let mut key = old.as_bytes().to_vec();
        key.extend_from_slice(&[7; 16]);
        assert_eq!(RouteKey::split(&key).unwrap(), (old.clone(), &[7u8; 16][..]));
        assert_ne!(old, RouteKey::new("tyk", "@258"));
        // An identity key never splits as a legacy one, whatever follows.
        let fp = RouteKey::new("s", "~0123456789abcdef");
        let mut key = fp.as_bytes().to_vec();
        key.extend_from_slice(&[0; 16]);
        assert_eq!(RouteKey::split(&key).unwrap().0, fp);
    }

    #[test]
    fn pack_round_trip() {
        let s = State { attempts: 2, last_status: None, last_error: Some("refused".into()), dead_ms: None };
        let packed = pack("id-1", &s, b"entry bytes");
        let (id, state, entry) = unpack(&packed).unwrap();
        assert_eq!((id.as_str(), &state, entry), ("id-1", &s, &b"entry bytes"[..]));
        assert!(unpack(&packed[..6]).is_err());
        let k = RouteKey::new("src", "seven");
        assert_eq!(RouteKey::from_bytes(k.as_bytes()), Some(k));
        let k = RouteKey::legacy("src", 7);
        assert_eq!(RouteKey::from_bytes(k.as_bytes()), Some(k));
        assert_eq!(RouteKey::from_bytes(&[3, b'a']), None);
    }

    #[test]
    fn state_round_trip() {
        let s = State { attempts: 3, last_status: Some(503), last_error: None, dead_ms: Some(5) };
        assert_eq!(State::decode(&s.encode()), s);
        assert_eq!(State::decode(b""), State::default());
        assert!(State::default().encode().is_empty(), "never attempted: nothing to store");
    }
}
