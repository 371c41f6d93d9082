//! Which located fields the signature covers (SPEC §10).
//!
//! A value read from a header the signature does not cover can be changed by
//! anyone who captured one signed delivery. So each field (delivery ID, event
//! type, timestamp) is classified at config load from the signed-payload
//! template:
//! - a `json:` locator also when the payload covers the whole body (`{body}`,
//!   or `{form}` for form bodies) or that very pointer (`{json:/p}`);
//! - any locator is signed when the payload includes the field's value: `{id}`
//!   for the ID, `{timestamp}` for the timestamp (the located text is what the
//!   template is fed);
//! - a `digest:` ID is signed when it is the `{id}` or all its parts are signed
//!   `json:` locators; nothing is signed under `scheme = "token"`.
//!
//! Where a field has signed locators, only those are read ([`FieldPlan::read`]),
//! and the unsigned ones become cross-checks ([`FieldPlan::check`]): a value
//! present there that differs from the signed one is refused
//! (`unsigned_mismatch`). Tampa.dev sends its ID and event type both in headers
//! and in the signed body; the body wins and a forged header is refused.

use super::template::{Locator, Segment};
use super::{Scheme, Spec};

/// The three located fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Id,
    EventType,
    Timestamp,
}

impl Field {
    pub fn name(self) -> &'static str {
        match self {
            Field::Id => "id",
            Field::EventType => "event_type",
            Field::Timestamp => "timestamp",
        }
    }
}

/// How one field is read at request time.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldPlan {
    /// The locators tried in order: the signed ones when there are any.
    pub read: Vec<Locator>,
    /// Unsigned locators whose value, when present, must equal the one read.
    pub check: Vec<Locator>,
    /// Whether every locator in `read` is covered by the signature.
    pub signed: bool,
}

/// The compiled reading plan of a verifier's three fields.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub id: FieldPlan,
    pub event_type: FieldPlan,
    pub timestamp: FieldPlan,
    /// Whether the body's digest (the ID when none is located) is signed.
    pub body_signed: bool,
}

impl Plan {
    pub fn new(spec: &Spec) -> Self {
        Plan {
            id: FieldPlan::new(spec, Field::Id, &spec.id),
            event_type: FieldPlan::new(spec, Field::EventType, &spec.event_type),
            timestamp: FieldPlan::new(spec, Field::Timestamp, &spec.timestamp),
            body_signed: covers_body(spec),
        }
    }

    /// Whether the delivery ID can be chosen by whoever replays a captured
    /// body: it is located, and not by a signed locator (SPEC §10's default
    /// for `dedupe_body`).
    pub fn id_unsigned(&self) -> bool {
        !self.id.read.is_empty() && !self.id.signed
    }

    /// The fields read from unsigned locators, with those locators as written
    /// (`hookgate presets NAME` and `check` print them).
    pub fn unsigned(&self) -> Vec<(Field, String)> {
        [(Field::Id, &self.id), (Field::EventType, &self.event_type), (Field::Timestamp, &self.timestamp)]
            .into_iter()
            .filter(|(_, p)| !p.read.is_empty() && !p.signed)
            .map(|(f, p)| (f, p.read.iter().map(describe).collect::<Vec<_>>().join(", ")))
            .collect()
    }
}

impl FieldPlan {
    fn new(spec: &Spec, field: Field, locators: &[Locator]) -> Self {
        let (signed, unsigned): (Vec<Locator>, Vec<Locator>) =
            locators.iter().cloned().partition(|l| is_signed(spec, field, l));
        if signed.is_empty() {
            FieldPlan { read: unsigned, check: Vec::new(), signed: false }
        } else {
            FieldPlan { read: signed, check: unsigned, signed: true }
        }
    }
}

fn covers_body(spec: &Spec) -> bool {
    !matches!(spec.scheme, Scheme::Token | Scheme::ClientState)
        && spec.payload.segments.iter().any(|s| matches!(s, Segment::Body | Segment::Form))
}

/// Whether the signature covers `loc`'s value when it is read for `field`.
pub fn is_signed(spec: &Spec, field: Field, loc: &Locator) -> bool {
    if matches!(spec.scheme, Scheme::Token | Scheme::ClientState) {
        return false;
    }
    let segments = &spec.payload.segments;
    let fed = |field: Field| match field {
        Field::Id => segments.contains(&Segment::Id),
        Field::Timestamp => segments.contains(&Segment::Timestamp),
        Field::EventType => false,
    };
    match loc {
        Locator::Json(ptr) => {
            fed(field) || covers_body(spec) || segments.iter().any(|s| matches!(s, Segment::Json(p) if p == ptr))
        }
        Locator::Header(_) | Locator::SignatureParam(_) => fed(field),
        Locator::Digest(parts) => {
            fed(field) || parts.iter().all(|p| matches!(p, Locator::Json(_)) && is_signed(spec, field, p))
        }
    }
}

/// A locator as it is written in a config file.
pub fn describe(loc: &Locator) -> String {
    match loc {
        Locator::Header(name) => format!("header:{name}"),
        Locator::Json(ptr) => format!("json:{ptr}"),
        Locator::SignatureParam(name) => format!("signature:{name}"),
        Locator::Digest(parts) => format!("digest:{}", parts.iter().map(describe).collect::<Vec<_>>().join(",")),
    }
}
