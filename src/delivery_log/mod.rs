//! The in-memory delivery log (SPEC §6): the last `[log] deliveries` requests
//! that reached a source, newest first through `GET /deliveries`.
//!
//! A ring of records numbered by a sequence: a record is found by its number
//! in O(1) (queue attempts update theirs), paging uses the number as cursor.
//! Records hold names, numbers and addresses only; with `[log] bodies` set,
//! a record also holds its request's [`capture::Capture`] (redacted headers
//! and the body), kept within that many bytes, oldest dropped first.

pub mod capture;

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

pub use capture::Capture;

use serde_json::{Value, json};

/// A short string kept inline, without an allocation, up to
/// [`Text::INLINE`] bytes (a UUID is 36), on the heap beyond. The log's
/// source names, delivery IDs and event types are almost always that short:
/// keeping them inline spares each delivery two allocations, and dropping
/// the record it evicts two frees and an `Arc` count shared by all threads
/// (the log on cost ~6% of the sync path's throughput, `bench/ab.sh`).
#[derive(Clone)]
pub enum Text {
    Inline { len: u8, buf: [u8; Text::INLINE] },
    Heap(Box<str>),
}

impl Text {
    /// The longest text kept inline (the whole enum is 48 bytes).
    pub const INLINE: usize = 46;

    pub fn new(s: &str) -> Self {
        match u8::try_from(s.len()) {
            Ok(len) if s.len() <= Self::INLINE => {
                let mut buf = [0; Self::INLINE];
                buf[..s.len()].copy_from_slice(s.as_bytes());
                Text::Inline { len, buf }
            }
            _ => Text::Heap(s.into()),
        }
    }
}

impl Default for Text {
    fn default() -> Self {
        Text::Inline { len: 0, buf: [0; Self::INLINE] }
    }
}

impl std::ops::Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            // Always whole UTF-8: `new` copies a `&str` and cuts nothing.
            Text::Inline { len, buf } => std::str::from_utf8(&buf[..usize::from(*len)]).unwrap_or_default(),
            Text::Heap(s) => s,
        }
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Text::new(s)
    }
}

impl std::fmt::Display for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

/// One request, as the log keeps it.
#[derive(Debug, Clone)]
pub struct Item {
    pub at: SystemTime,
    pub source: Text,
    pub id: Text,
    pub event_type: Text,
    /// As in `hookgate_requests_total`.
    pub outcome: &'static str,
    /// What the sender was answered.
    pub status: u16,
    /// The route's label: its name, else its position ("0", "1", ...).
    pub route: Option<Text>,
    pub upstream_ms: Option<u64>,
    pub client: Option<IpAddr>,
    /// Queue routes: attempts made so far.
    pub attempts: Option<u32>,
    /// Queue routes: `pending`, `scheduled`, `delivered`, `dead` or `deleted`.
    pub queue_state: Option<&'static str>,
    /// Queue routes: the upstream's status on the last attempt.
    pub last_status: Option<u16>,
    /// Queue routes: why the last attempt failed (no body, no secret: the
    /// status line or the connection error).
    pub last_error: Option<Box<str>>,
    /// Queue routes waiting for a retry: when it is due.
    pub next_attempt_at: Option<SystemTime>,
    /// The request's headers and body (`[log] bodies`), shared by the records
    /// of a fan-out and of a replay.
    pub capture: Option<Arc<Capture>>,
    /// Sent by `POST /deliveries/{entry}/replay`, not by the sender.
    pub replay: bool,
}

/// What `GET /deliveries` filters on.
#[derive(Debug, Default)]
pub struct Filter<'a> {
    pub source: Option<&'a str>,
    pub outcome: Option<&'a str>,
    pub id: Option<&'a str>,
}

impl Filter<'_> {
    fn matches(&self, i: &Item) -> bool {
        self.source.is_none_or(|s| *i.source == *s)
            && self.outcome.is_none_or(|o| i.outcome == o)
            && self.id.is_none_or(|id| *i.id == *id)
    }
}

struct Ring {
    capacity: usize,
    items: VecDeque<Item>,
    /// The sequence number of `items[0]`.
    first: u64,
    /// `[log] bodies`: the bytes captures may hold together.
    body_budget: usize,
    /// What the kept captures hold.
    body_bytes: usize,
    /// No record below this sequence number holds a capture (where dropping
    /// the oldest capture starts looking).
    captured_from: u64,
}

impl Ring {
    /// Drops the oldest captures until `room` more bytes fit the budget.
    fn make_room(&mut self, room: usize) {
        self.captured_from = self.captured_from.max(self.first);
        while self.body_bytes + room > self.body_budget {
            let Some(item) = self.items.get_mut((self.captured_from - self.first) as usize) else { break };
            if let Some(c) = item.capture.take() {
                self.body_bytes -= c.size();
            }
            self.captured_from += 1;
        }
    }

    fn pop_front(&mut self) {
        if let Some(c) = self.items.pop_front().and_then(|i| i.capture) {
            self.body_bytes -= c.size();
        }
        self.first += 1;
    }
}

/// Shared by every connection; one short lock per request.
pub struct DeliveryLog {
    ring: Mutex<Ring>,
    /// The ring's capacity, readable without the lock (is the log on at all?).
    capacity: std::sync::atomic::AtomicUsize,
    /// Whether requests are captured (`[log] bodies` > 0 and the log on).
    capturing: std::sync::atomic::AtomicBool,
    /// Tells this process's records apart from another's (queue entries outlive processes).
    pub epoch: u64,
}

impl DeliveryLog {
    /// A log of `capacity` records whose captures hold at most `body_budget` bytes.
    pub fn new(capacity: usize, body_budget: usize) -> Self {
        let mut b = [0u8; 8];
        let _ = getrandom::fill(&mut b);
        let ring = Ring {
            capacity,
            items: VecDeque::with_capacity(capacity.min(4096)),
            first: 1,
            body_budget,
            body_bytes: 0,
            captured_from: 1,
        };
        DeliveryLog {
            ring: Mutex::new(ring),
            capacity: capacity.into(),
            capturing: (capacity > 0 && body_budget > 0).into(),
            epoch: u64::from_le_bytes(b),
        }
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn enabled(&self) -> bool {
        self.capacity.load(std::sync::atomic::Ordering::Relaxed) > 0
    }

    /// Whether requests should be captured for the log (`[log] bodies`).
    pub fn capturing(&self) -> bool {
        self.capturing.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Changes the bounds (config reload); the oldest records and captures go first.
    pub fn set_capacity(&self, capacity: usize, body_budget: usize) {
        let mut r = self.ring();
        r.capacity = capacity;
        r.body_budget = body_budget;
        self.capacity.store(capacity, std::sync::atomic::Ordering::Relaxed);
        self.capturing.store(capacity > 0 && body_budget > 0, std::sync::atomic::Ordering::Relaxed);
        while r.items.len() > capacity {
            r.pop_front();
        }
        r.make_room(0);
    }

    /// Records `item`; its sequence number, or `None` when the log is off.
    pub fn push(&self, mut item: Item) -> Option<u64> {
        let mut r = self.ring();
        if r.capacity == 0 {
            return None;
        }
        if r.items.len() == r.capacity {
            r.pop_front();
        }
        if let Some(c) = &item.capture {
            let size = c.size();
            // Records of one request share its capture; each counts it (a
            // fan-out's bodies are held as long as any of its records is).
            if size > r.body_budget {
                item.capture = None;
            } else {
                r.make_room(size);
                r.body_bytes += size;
            }
        }
        r.items.push_back(item);
        Some(r.first + r.items.len() as u64 - 1)
    }

    /// Record `seq` as `GET /deliveries/{entry}` shows it (with its
    /// capture's headers and body), and the capture itself.
    pub fn get(&self, seq: u64) -> Option<(Item, Value)> {
        let r = self.ring();
        let item = r.items.get(seq.checked_sub(r.first)? as usize)?;
        let mut shown = to_json(item, seq);
        if let (Some(c), Value::Object(map)) = (&item.capture, &mut shown) {
            c.fields(map);
        }
        Some((item.clone(), shown))
    }

    /// Changes record `seq` if it is still kept.
    pub fn update(&self, seq: u64, f: impl FnOnce(&mut Item)) {
        let mut r = self.ring();
        let Some(i) = seq.checked_sub(r.first) else { return };
        if let Some(item) = r.items.get_mut(i as usize) {
            f(item);
        }
    }

    /// Newest first, below `cursor` when given; with the cursor of the next page.
    pub fn page(&self, filter: &Filter<'_>, limit: usize, cursor: Option<u64>) -> (Vec<Value>, Option<u64>) {
        let r = self.ring();
        let end = match cursor {
            Some(c) => c.saturating_sub(r.first).min(r.items.len() as u64) as usize,
            None => r.items.len(),
        };
        let mut out = Vec::new();
        let mut next = None;
        for i in (0..end).rev() {
            let item = &r.items[i];
            if !filter.matches(item) {
                continue;
            }
            if out.len() == limit {
                // The cursor is exclusive: the next page starts below the last one shown.
                next = Some(r.first + i as u64 + 1);
                break;
            }
            out.push(to_json(item, r.first + i as u64));
        }
        (out, next)
    }
}

/// RFC 3339 in UTC with milliseconds, e.g. `2026-11-24T17:49:39.120Z`.
pub fn rfc3339_ms(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .map(|s| millis(&s))
        .unwrap_or_default()
}

fn to_json(i: &Item, seq: u64) -> Value {
    json!({
        "entry": seq,
        "at": rfc3339_ms(i.at),
        "source": &*i.source,
        "id": &*i.id,
        "event_type": &*i.event_type,
        "outcome": i.outcome,
        "status": i.status,
        // An unnamed route's label is its position, shown as the number it
        // was before routes had names (names are never all digits).
        "route": i.route.as_deref().map(|r| r.parse::<u16>().map_or_else(|_| Value::from(r), Value::from)),
        "upstream_ms": i.upstream_ms,
        "client": i.client.map(|c| c.to_string()),
        "attempts": i.attempts,
        "queue_state": i.queue_state,
        "last_status": i.last_status,
        "last_error": i.last_error.as_deref(),
        "next_attempt_at": i.next_attempt_at.map(rfc3339_ms),
        "has_body": i.capture.is_some(),
        "replay": i.replay,
    })
}

/// RFC 3339 with exactly three fractional digits (`...:05.123Z`).
fn millis(rfc3339: &str) -> String {
    let (main, zone) = match rfc3339.rfind(['Z', '+']) {
        Some(i) if i > 10 => rfc3339.split_at(i),
        _ => (rfc3339, ""),
    };
    let (secs, frac) = main.split_once('.').unwrap_or((main, ""));
    let mut ms: String = frac.chars().take(3).collect();
    while ms.len() < 3 {
        ms.push('0');
    }
    format!("{secs}.{ms}{zone}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(source: &str, id: &str, outcome: &'static str) -> Item {
        Item {
            at: SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_120),
            source: source.into(),
            id: id.into(),
            event_type: "e".into(),
            outcome,
            status: 200,
            route: Some(Text::new("0")),
            upstream_ms: Some(3),
            client: Some("127.0.0.1".parse().unwrap()),
            attempts: None,
            queue_state: None,
            last_status: None,
            last_error: None,
            next_attempt_at: None,
            capture: None,
            replay: false,
        }
    }

    #[test]
    fn keeps_the_last_n_newest_first() {
        let log = DeliveryLog::new(3, 0);
        for i in 0..5 {
            log.push(item("a", &format!("d{i}"), "forwarded"));
        }
        let (items, next) = log.page(&Filter::default(), 10, None);
        let ids: Vec<_> = items.iter().map(|v| v["id"].as_str().unwrap().to_owned()).collect();
        assert_eq!(ids, ["d4", "d3", "d2"]);
        assert_eq!(next, None);
        assert_eq!(items[0]["at"], "2023-11-14T22:13:20.120Z");
    }

    #[test]
    fn pages_with_a_cursor_and_filters() {
        let log = DeliveryLog::new(100, 0);
        for i in 0..10 {
            log.push(item(if i % 2 == 0 { "a" } else { "b" }, &format!("d{i}"), "forwarded"));
        }
        let f = Filter { source: Some("a"), ..Filter::default() };
        let (p1, next) = log.page(&f, 2, None);
        assert_eq!(p1.iter().map(|v| v["id"].as_str().unwrap()).collect::<Vec<_>>(), ["d8", "d6"]);
        let (p2, next) = log.page(&f, 2, next);
        assert_eq!(p2.iter().map(|v| v["id"].as_str().unwrap()).collect::<Vec<_>>(), ["d4", "d2"]);
        let (p3, next) = log.page(&f, 2, next);
        assert_eq!(p3.iter().map(|v| v["id"].as_str().unwrap()).collect::<Vec<_>>(), ["d0"]);
        assert_eq!(next, None);
    }

    #[test]
    fn updates_a_kept_record_and_ignores_a_dropped_one() {
        let log = DeliveryLog::new(2, 0);
        let first = log.push(item("a", "d0", "queued")).unwrap();
        let second = log.push(item("a", "d1", "queued")).unwrap();
        log.update(second, |i| i.attempts = Some(2));
        log.push(item("a", "d2", "queued"));
        log.update(first, |i| i.attempts = Some(9)); // gone: no effect, no panic
        let (items, _) = log.page(&Filter::default(), 10, None);
        assert_eq!(items[1]["attempts"], 2);
        assert_eq!(items.len(), 2);
    }

    #[test]
    fn text_keeps_short_strings_inline_and_long_ones_whole() {
        let uuid = "0f8fad5b-d9cb-469f-a165-70867728950e";
        let t = Text::new(uuid);
        assert!(matches!(t, Text::Inline { .. }));
        assert_eq!(&*t, uuid);
        let edge = "x".repeat(Text::INLINE);
        assert!(matches!(Text::new(&edge), Text::Inline { .. }));
        assert_eq!(&*Text::new(&edge), edge);
        let long = format!("{}é", "x".repeat(Text::INLINE));
        let t = Text::new(&long);
        assert!(matches!(t, Text::Heap(_)));
        assert_eq!(&*t, long);
        assert_eq!(&*Text::new("évé"), "évé");
        assert_eq!(&*Text::default(), "");
        assert_eq!(std::mem::size_of::<Text>(), 48);
    }

    #[test]
    fn zero_turns_it_off() {
        let log = DeliveryLog::new(0, 1000);
        assert_eq!(log.push(item("a", "d", "forwarded")), None);
        assert!(log.page(&Filter::default(), 10, None).0.is_empty());
        assert!(!log.capturing());
    }

    fn captured(source: &str, id: &str, body_len: usize) -> Item {
        let body = bytes::Bytes::from(vec![b'x'; body_len]);
        let capture = Capture::of(&http::HeaderMap::new(), None, &body, std::iter::empty());
        Item { capture: Some(Arc::new(capture)), ..item(source, id, "forwarded") }
    }

    #[test]
    fn captures_stay_within_their_bytes_oldest_dropped_first() {
        let one = captured("a", "x", 1000).capture.unwrap().size();
        let log = DeliveryLog::new(100, one * 3);
        assert!(log.capturing());
        let seqs: Vec<u64> = (0..5).map(|i| log.push(captured("a", &format!("d{i}"), 1000)).unwrap()).collect();
        let has: Vec<bool> = seqs.iter().map(|s| log.get(*s).unwrap().0.capture.is_some()).collect();
        assert_eq!(has, [false, false, true, true, true]);
        let (_, shown) = log.get(seqs[4]).unwrap();
        assert_eq!(shown["entry"], seqs[4]);
        assert_eq!(shown["has_body"], true);
        assert_eq!(shown["body"].as_str().unwrap().len(), 1000);
        assert_eq!(log.get(seqs[0]).unwrap().1["has_body"], false);
        // Larger than the whole budget: the record is kept, its body is not.
        let big = log.push(captured("a", "big", one * 4)).unwrap();
        assert!(log.get(big).unwrap().0.capture.is_none());
        assert!(log.get(seqs[4]).unwrap().0.capture.is_some());
        // Records that leave the ring free their bytes.
        log.set_capacity(2, one * 3);
        assert!(log.get(seqs[3]).is_none());
        let kept = (0..3).map(|i| log.push(captured("a", &format!("e{i}"), 1000)).unwrap()).collect::<Vec<_>>();
        assert!(kept.iter().skip(1).all(|s| log.get(*s).unwrap().0.capture.is_some()));
        // Turned off by a reload: no new captures, the kept ones dropped.
        log.set_capacity(2, 0);
        assert!(!log.capturing());
        assert!(log.get(kept[2]).unwrap().0.capture.is_none());
        assert!(log.get(999).is_none());
    }
}
