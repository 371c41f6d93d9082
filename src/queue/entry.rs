//! What the queue stores per delivery, and its byte layout on disk.
//!
//! An entry is immutable once stored: `[u32 meta][meta JSON][u32 head][headers][body]`,
//! headers as `name: value\r\n` lines (header values cannot hold CR or LF).
//! What changes per attempt lives in a small [`State`] kept under the entry's
//! schedule key, so a retry never rewrites the body.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

/// Which route a delivery belongs to: `[len][source][route index, u16 BE]`,
/// the prefix of every schedule key of that route.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteKey(Box<[u8]>);

impl RouteKey {
    pub fn new(source: &str, route: usize) -> Self {
        let name = &source.as_bytes()[..source.len().min(255)];
        let mut k = Vec::with_capacity(3 + name.len());
        k.push(name.len() as u8);
        k.extend_from_slice(name);
        k.extend_from_slice(&(route as u16).to_be_bytes());
        RouteKey(k.into_boxed_slice())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Splits a schedule key into its route and the rest.
    pub fn split(key: &[u8]) -> Option<(RouteKey, &[u8])> {
        let len = usize::from(*key.first()?);
        let end = 1 + len + 2;
        (key.len() >= end).then(|| (RouteKey(key[..end].into()), &key[end..]))
    }

    pub fn source(&self) -> &str {
        let len = usize::from(self.0[0]);
        std::str::from_utf8(&self.0[1..1 + len]).unwrap_or("")
    }

    /// Back from [`RouteKey::as_bytes`]; `None` unless well formed.
    pub fn from_bytes(b: &[u8]) -> Option<RouteKey> {
        let (k, rest) = RouteKey::split(b)?;
        (rest.is_empty() && std::str::from_utf8(&b[1..b.len() - 2]).is_ok()).then_some(k)
    }

    pub fn route(&self) -> usize {
        let n = self.0.len();
        usize::from(u16::from_be_bytes([self.0[n - 2], self.0[n - 1]]))
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
        // Serializing plain strings and numbers cannot fail.
        let meta = serde_json::to_vec(&self.meta).unwrap_or_default();
        let mut head = Vec::with_capacity(self.headers.len() * 32);
        for (name, value) in &self.headers {
            head.extend_from_slice(name.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        let mut out = Vec::with_capacity(8 + meta.len() + head.len() + self.body.len());
        out.extend_from_slice(&(meta.len() as u32).to_be_bytes());
        out.extend_from_slice(&meta);
        out.extend_from_slice(&(head.len() as u32).to_be_bytes());
        out.extend_from_slice(&head);
        out.extend_from_slice(&self.body);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<NewEntry, Damaged> {
        let (meta, rest) = chunk(bytes)?;
        let meta: Meta = serde_json::from_slice(meta).map_err(|_| Damaged("meta"))?;
        let (head, body) = chunk(rest)?;
        let mut headers = HeaderMap::new();
        for line in head.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let at = line.windows(2).position(|w| w == b": ").ok_or(Damaged("header line"))?;
            let name = HeaderName::from_bytes(&line[..at]).map_err(|_| Damaged("header name"))?;
            let value = HeaderValue::from_bytes(&line[at + 2..]).map_err(|_| Damaged("header value"))?;
            headers.append(name, value);
        }
        Ok(NewEntry { meta, headers, body: Bytes::copy_from_slice(body) })
    }

    /// Only the meta part, for listings (the body is not copied).
    pub fn decode_meta(bytes: &[u8]) -> Result<Meta, Damaged> {
        let (meta, _) = chunk(bytes)?;
        serde_json::from_slice(meta).map_err(|_| Damaged("meta"))
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
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> State {
        // An empty value is a delivery never attempted.
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
            },
            headers,
            body: Bytes::from_static(b"\x00\xffbody\r\n"),
        };
        let bytes = e.encode();
        let back = NewEntry::decode(&bytes).unwrap();
        assert_eq!(back.meta, e.meta);
        assert_eq!(back.headers, e.headers);
        assert_eq!(back.body, e.body);
        assert_eq!(NewEntry::decode_meta(&bytes).unwrap(), e.meta);
        assert!(NewEntry::decode(&bytes[..bytes.len().min(10)]).is_err());
    }

    #[test]
    fn route_key_parts() {
        let k = RouteKey::new("tyk", 258);
        assert_eq!((k.source(), k.route()), ("tyk", 258));
        let mut key = k.as_bytes().to_vec();
        key.extend_from_slice(&[1, 2, 3]);
        let (back, rest) = RouteKey::split(&key).unwrap();
        assert_eq!((back, rest), (k, &[1u8, 2, 3][..]));
        assert!(RouteKey::split(&[9, 1]).is_none());
    }

    #[test]
    fn pack_round_trip() {
        let s = State { attempts: 2, last_status: None, last_error: Some("refused".into()), dead_ms: None };
        let packed = pack("id-1", &s, b"entry bytes");
        let (id, state, entry) = unpack(&packed).unwrap();
        assert_eq!((id.as_str(), &state, entry), ("id-1", &s, &b"entry bytes"[..]));
        assert!(unpack(&packed[..6]).is_err());
        let k = RouteKey::new("src", 7);
        assert_eq!(RouteKey::from_bytes(k.as_bytes()), Some(k));
        assert_eq!(RouteKey::from_bytes(&[3, b'a']), None);
    }

    #[test]
    fn state_round_trip() {
        let s = State { attempts: 3, last_status: Some(503), last_error: None, dead_ms: Some(5) };
        assert_eq!(State::decode(&s.encode()), s);
        assert_eq!(State::decode(b""), State::default());
    }
}
