//! The in-memory delivery log (SPEC §6): the last `[log] deliveries` requests
//! that reached a source, newest first through `GET /deliveries`.
//!
//! A ring of records numbered by a sequence: a record is found by its number
//! in O(1) (queue attempts update theirs), paging uses the number as cursor.
//! Records hold names, numbers and addresses only: never a body, a header
//! value or a secret.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::SystemTime;

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
    /// Queue routes: `pending`, `scheduled`, `delivered` or `dead`.
    pub queue_state: Option<&'static str>,
    /// Queue routes: the upstream's status on the last attempt.
    pub last_status: Option<u16>,
    /// Queue routes: why the last attempt failed (no body, no secret: the
    /// status line or the connection error).
    pub last_error: Option<Box<str>>,
    /// Queue routes waiting for a retry: when it is due.
    pub next_attempt_at: Option<SystemTime>,
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
}

/// Shared by every connection; one short lock per request.
pub struct DeliveryLog {
    ring: Mutex<Ring>,
    /// The ring's capacity, readable without the lock (is the log on at all?).
    capacity: std::sync::atomic::AtomicUsize,
    /// Tells this process's records apart from another's (queue entries outlive processes).
    pub epoch: u64,
}

impl DeliveryLog {
    pub fn new(capacity: usize) -> Self {
        let mut b = [0u8; 8];
        let _ = getrandom::fill(&mut b);
        DeliveryLog {
            ring: Mutex::new(Ring { capacity, items: VecDeque::with_capacity(capacity.min(4096)), first: 1 }),
            capacity: capacity.into(),
            epoch: u64::from_le_bytes(b),
        }
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn enabled(&self) -> bool {
        self.capacity.load(std::sync::atomic::Ordering::Relaxed) > 0
    }

    /// Changes the bound (config reload); the oldest records go first.
    pub fn set_capacity(&self, capacity: usize) {
        let mut r = self.ring();
        r.capacity = capacity;
        self.capacity.store(capacity, std::sync::atomic::Ordering::Relaxed);
        while r.items.len() > capacity {
            r.items.pop_front();
            r.first += 1;
        }
    }

    /// Records `item`; its sequence number, or `None` when the log is off.
    pub fn push(&self, item: Item) -> Option<u64> {
        let mut r = self.ring();
        if r.capacity == 0 {
            return None;
        }
        if r.items.len() == r.capacity {
            r.items.pop_front();
            r.first += 1;
        }
        r.items.push_back(item);
        Some(r.first + r.items.len() as u64 - 1)
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
            out.push(to_json(item));
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

fn to_json(i: &Item) -> Value {
    json!({
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
        }
    }

    #[test]
    fn keeps_the_last_n_newest_first() {
        let log = DeliveryLog::new(3);
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
        let log = DeliveryLog::new(100);
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
        let log = DeliveryLog::new(2);
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
        let log = DeliveryLog::new(0);
        assert_eq!(log.push(item("a", "d", "forwarded")), None);
        assert!(log.page(&Filter::default(), 10, None).0.is_empty());
    }
}
