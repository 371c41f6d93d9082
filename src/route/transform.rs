//! `transform = '<jq program>'` on a route (SPEC §14), run by jaq.
//!
//! The program is parsed and compiled once, at config load. Per delivery, the
//! verified body is read into jaq's values, the program runs, and its single
//! output, written as JSON, is what the route forwards.
//!
//! A program runs inline (like signature verification, it is CPU work), within
//! a time budget and a stack budget that jaq itself cannot enforce: the
//! interpreter looks up its program table ([`HasLut::lut`]) at every step it
//! evaluates, so that lookup counts steps, looks at the clock every
//! [`CHECK_EVERY`] of them and at how deep the stack has grown, and unwinds the
//! run ([`Overrun`], caught here) when either budget is spent. `range`, the one
//! generator that yields without evaluating a step, is replaced by one that
//! checks the same way. What a program cannot do: read the environment
//! (`env`, where secrets live), log (`debug`, `stderr`), read files or
//! modules, or end the process (`halt`).

use std::cell::Cell;
use std::time::{Duration, Instant};

use jaq_core::data::HasLut;
use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Ctx, DataT, Lut, Native, Vars};
use jaq_json::Val;

/// The default time budget of one run.
pub const DEFAULT_BUDGET: Duration = Duration::from_millis(100);
/// Longest program accepted: a transform is config, not a script library.
pub const MAX_PROGRAM: usize = 64 * 1024;
/// Deepest nesting of arrays and objects read from a body (serde_json's limit).
const MAX_DEPTH: usize = 128;
/// Steps between two looks at the clock.
const CHECK_EVERY: u32 = 256;
/// How much deeper than where a run started the stack may grow. Tokio's
/// worker threads have 2 MiB; a run starts well inside it.
const MAX_STACK: usize = 768 * 1024;

/// Why a transform produced no body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransformError {
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("the program failed: {0}")]
    Failed(String),
    #[error("the program yielded no value")]
    Nothing,
    #[error("the program yielded more than one value")]
    Several,
    #[error("the program ran over its time budget ({0:?})")]
    OverBudget(Duration),
    #[error("the program recursed too deeply")]
    TooDeep,
}

/// A compiled program and its budget.
pub struct Transform {
    filter: jaq_core::compile::Filter<Native<Budgeted>>,
    /// The same program on the fast path, when it is a projection ([`super::fast`]).
    fast: Option<super::fast::Fast>,
    budget: Duration,
    /// The program as written, for `hookgate check` and errors.
    pub source: Box<str>,
}

impl std::fmt::Debug for Transform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transform").field("source", &self.source).field("budget", &self.budget).finish()
    }
}

/// Filters a program may not call (see the module docs).
const DENIED: [&str; 3] = ["env", "input", "inputs"];
/// Natives replaced by ours: `range` (budgeted), the logging ones (silent:
/// `debug` passes its input on and logs nothing, since bodies may hold personal
/// data), `halt` (an error: a program does not end the process).
const REPLACED: [(&str, usize); 4] = [("range", 3), ("debug_empty", 0), ("stderr_empty", 0), ("halt", 1)];

impl Transform {
    /// Compiles `code`; the error lists what is wrong, with byte offsets.
    pub fn compile(code: &str, budget: Duration) -> Result<Transform, String> {
        if code.len() > MAX_PROGRAM {
            return Err(format!("longer than {MAX_PROGRAM} bytes"));
        }
        quiet_overruns();
        let defs = jaq_core::defs().chain(jaq_std::defs()).chain(jaq_json::defs());
        let funs = jaq_core::funs()
            .chain(jaq_std::funs())
            .chain(jaq_json::funs())
            .filter(|(name, args, _)| !DENIED.contains(name) && !REPLACED.contains(&(*name, args.len())))
            .chain(
                [
                    ("range", 3, budgeted_range as jaq_core::RunPtr<Budgeted>),
                    ("debug_empty", 0, silent),
                    ("stderr_empty", 0, silent),
                    ("halt", 1, no_halt),
                ]
                .map(|(name, arity, f)| jaq_core::native::run::<Budgeted>((name, jaq_core::native::v(arity), f))),
            );
        let arena = Arena::default();
        let offset = |s: &str| (s.as_ptr() as usize).saturating_sub(code.as_ptr() as usize).min(code.len());
        let modules = Loader::new(defs).load(&arena, File { code, path: () }).map_err(|errs| {
            let mut out = Vec::new();
            for (_, e) in errs {
                match e {
                    jaq_core::load::Error::Io(v) => out.extend(v.into_iter().map(|(_, m)| m)),
                    jaq_core::load::Error::Lex(v) => out.extend(
                        v.iter().map(|(want, at)| format!("at byte {}: expected {}", offset(at), want.as_str())),
                    ),
                    jaq_core::load::Error::Parse(v) => out.extend(
                        v.iter().map(|(want, at)| format!("at byte {}: expected {}", offset(at), want.as_str())),
                    ),
                }
            }
            format!("syntax error {}", out.join("; "))
        })?;
        let filter = jaq_core::Compiler::default().with_funs(funs).compile(modules).map_err(|errs| {
            let out: Vec<String> = errs
                .iter()
                .flat_map(|(_, v)| v.iter())
                .map(|(name, what)| {
                    let hint = if DENIED.contains(name) { " (not available in transforms)" } else { "" };
                    format!("undefined {} `{name}` at byte {}{hint}", what.as_str(), offset(name))
                })
                .collect();
            out.join("; ")
        })?;
        let fast = super::fast::Fast::compile(code);
        Ok(Transform { filter, fast, budget, source: code.into() })
    }

    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// Runs the program on `body`: the JSON text of its single output.
    pub fn apply(&self, body: &[u8]) -> Result<Vec<u8>, TransformError> {
        // jaq's reader recurses into nested values: a hostile body is refused
        // before jaq reads it.
        if nesting(body) > MAX_DEPTH {
            return Err(TransformError::NotJson(format!("nested deeper than {MAX_DEPTH} levels")));
        }
        if let Some(fast) = &self.fast {
            match fast.run(body) {
                super::fast::Outcome::Done(out) => return Ok(out),
                super::fast::Outcome::Unsupported => {}
            }
        }
        self.apply_jaq(body)
    }

    /// Whether the program runs on the fast path (for `hookgate check` and tests).
    pub fn is_fast(&self) -> bool {
        self.fast.is_some()
    }

    /// Runs the program with jaq, whatever it is.
    pub fn apply_jaq(&self, body: &[u8]) -> Result<Vec<u8>, TransformError> {
        let input = jaq_json::read::parse_single(body).map_err(|e| TransformError::NotJson(e.to_string()))?;
        let marker = 0u8;
        let budget = Budget {
            deadline: Instant::now() + self.budget,
            steps: Cell::new(0),
            stack_base: std::ptr::addr_of!(marker) as usize,
        };
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let ctx = Ctx::<Budgeted>::new(Data { lut: &self.filter.lut, budget: &budget }, Vars::new([]));
            let mut outputs = self.filter.id.run((ctx, input));
            let first = match outputs.next() {
                None => return Err(TransformError::Nothing),
                Some(v) => v.map_err(failure)?,
            };
            if outputs.next().is_some() {
                return Err(TransformError::Several);
            }
            Ok(first.to_string().into_bytes())
        }));
        match run {
            Ok(result) => result,
            Err(payload) => match payload.downcast_ref::<Overrun>() {
                Some(Overrun::Time) => Err(TransformError::OverBudget(self.budget)),
                Some(Overrun::Stack) => Err(TransformError::TooDeep),
                // Not ours: a bug in the interpreter; fail this delivery, keep the process.
                None => Err(TransformError::Failed("internal error in the jq interpreter".into())),
            },
        }
    }
}

/// The deepest nesting of `[` and `{` outside strings.
fn nesting(body: &[u8]) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in body {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

fn failure(e: jaq_core::Exn<'_, Val>) -> TransformError {
    match e.get_err() {
        Ok(err) => {
            let mut text = err.to_string();
            if text.len() > 512 {
                let mut end = 512;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.truncate(end);
                text.push('…');
            }
            TransformError::Failed(text)
        }
        Err(_) => TransformError::Failed("halt is not available in transforms".into()),
    }
}

/// Values are jaq's JSON values; the run's data is the program table and its budget.
pub struct Budgeted;

impl DataT for Budgeted {
    type V<'a> = Val;
    type Data<'a> = Data<'a>;
}

#[derive(Clone)]
pub struct Data<'a> {
    lut: &'a Lut<Budgeted>,
    budget: &'a Budget,
}

pub struct Budget {
    deadline: Instant,
    steps: Cell<u32>,
    /// An address on the stack where the run started.
    stack_base: usize,
}

/// The payload a run unwinds with when a budget is spent.
#[derive(Debug)]
enum Overrun {
    Time,
    Stack,
}

impl Budget {
    fn step(&self) {
        let n = self.steps.get().wrapping_add(1);
        self.steps.set(n);
        let marker = 0u8;
        if self.stack_base.saturating_sub(std::ptr::addr_of!(marker) as usize) > MAX_STACK {
            std::panic::panic_any(Overrun::Stack);
        }
        if n.is_multiple_of(CHECK_EVERY) && Instant::now() > self.deadline {
            std::panic::panic_any(Overrun::Time);
        }
    }
}

impl<'a> HasLut<'a, Budgeted> for Data<'a> {
    fn lut(&self) -> &'a Lut<Budgeted> {
        self.budget.step();
        self.lut
    }
}

/// `range($from; $upto; $by)` as jaq's, but counting a step per value.
fn budgeted_range<'a>(mut cv: jaq_core::Cv<'a, Budgeted>) -> jaq_core::ValXs<'a, <Budgeted as DataT>::V<'a>> {
    let by = cv.0.pop_var();
    let to = cv.0.pop_var();
    let from = cv.0.pop_var();
    let budget = cv.0.data().budget;
    let up = by > Val::from(0usize);
    let down = by < Val::from(0usize);
    let mut next = Some(from);
    Box::new(std::iter::from_fn(move || {
        budget.step();
        let x = next.take()?;
        let more = if up {
            x < to
        } else if down {
            x > to
        } else {
            x != to
        };
        if !more {
            return None;
        }
        match x.clone() + by.clone() {
            Ok(n) => next = Some(n),
            Err(e) => return Some(Err(e.into())),
        }
        Some(Ok(x))
    }))
}

fn silent<'a>(_: jaq_core::Cv<'a, Budgeted>) -> jaq_core::ValXs<'a, <Budgeted as DataT>::V<'a>> {
    Box::new(std::iter::empty())
}

fn no_halt<'a>(_: jaq_core::Cv<'a, Budgeted>) -> jaq_core::ValXs<'a, <Budgeted as DataT>::V<'a>> {
    Box::new(std::iter::once(Err(jaq_core::Error::str("halt is not available in transforms").into())))
}

/// A spent budget unwinds a run on purpose: keep the default panic message
/// for every other panic only.
fn quiet_overruns() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<Overrun>().is_none() {
                previous(info);
            }
        }));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(code: &str, body: &str) -> Result<String, TransformError> {
        let t = Transform::compile(code, Duration::from_millis(100)).unwrap();
        t.apply(body.as_bytes()).map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn a_program_shapes_the_body() {
        let slack = r#"{text: "Payment failed: \(.data.object.customer_email) \(.data.object.amount_due / 100) USD"}"#;
        let body = r#"{"data":{"object":{"customer_email":"a@example.com","amount_due":1250}}}"#;
        assert_eq!(run(slack, body).unwrap(), r#"{"text":"Payment failed: a@example.com 12.5 USD"}"#);
        assert_eq!(run(".", r#"{"b":1, "a":[true,null]}"#).unwrap(), r#"{"b":1,"a":[true,null]}"#);
        assert_eq!(run("[range(3)]", "null").unwrap(), "[0,1,2]");
        assert_eq!(run("[range(5; 0; -2)]", "null").unwrap(), "[5,3,1]");
        assert_eq!(run("[.[] | select(. > 1)] | map(. * 10)", "[1,2,3]").unwrap(), "[20,30]");
        assert_eq!(run(".a |= ascii_upcase", r#"{"a":"x"}"#).unwrap(), r#"{"a":"X"}"#);
    }

    #[test]
    fn failures_say_why() {
        assert!(matches!(run("error(\"boom\")", "1"), Err(TransformError::Failed(m)) if m.contains("boom")));
        assert!(matches!(run(".a + 1", r#"{"a":"x"}"#), Err(TransformError::Failed(_))));
        assert_eq!(run("empty", "1"), Err(TransformError::Nothing));
        assert_eq!(run(".[]", "[1,2]"), Err(TransformError::Several));
        assert!(matches!(run(".", "not json"), Err(TransformError::NotJson(_))));
        assert!(matches!(run(".", "{} {}"), Err(TransformError::NotJson(_))));
        assert!(matches!(run("halt", "1"), Err(TransformError::Failed(m)) if m.contains("halt")));
        assert!(matches!(run("halt_error", "1"), Err(TransformError::Failed(m)) if m.contains("halt")));
        assert_eq!(run(".a | debug | stderr", r#"{"a":2}"#).unwrap(), "2");
    }

    #[test]
    fn runaway_programs_are_stopped_within_their_budget() {
        for code in [
            "def f: f; f",
            "last(range(1e12))",
            "[range(1e12)] | length",
            "[limit(1e12; repeat(1))] | length",
            "def f: 1 + f; f",
            "def f: [f]; f",
            "until(false; .)",
        ] {
            let started = Instant::now();
            let r = run(code, "{}");
            assert!(matches!(r, Err(TransformError::OverBudget(_) | TransformError::TooDeep)), "{code}: {r:?}");
            assert!(started.elapsed() < Duration::from_secs(2), "{code}: {:?}", started.elapsed());
        }
        // The interpreter is usable again after an unwound run.
        assert_eq!(run(".a", r#"{"a":1}"#).unwrap(), "1");
    }

    #[test]
    fn hostile_input_is_refused_not_recursed_into() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(run(".", &deep), Err(TransformError::NotJson(_))));
        assert!(matches!(run(".", "\u{0}"), Err(TransformError::NotJson(_))));
        assert_eq!(nesting(br#"{"a":"[[[{","b":[{"c":"\"]"}]}"#), 3);
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert_eq!(run("[..] | length", &ok).unwrap(), MAX_DEPTH.to_string());
    }

    /// Numbers as f64, so `42.0` (jaq's division) and `42` compare equal.
    fn norm(v: serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match v {
            Value::Number(n) => n.as_f64().map_or(Value::Null, |f| serde_json::json!(f)),
            Value::Array(a) => Value::Array(a.into_iter().map(norm).collect()),
            Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, norm(v))).collect()),
            other => other,
        }
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-2000i64..2000).prop_map(|n| serde_json::json!(n)),
            (-1e6f64..1e6).prop_map(|f| serde_json::json!(f)),
            "[a-z é\\\"\n]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(
                    (prop_oneof![Just("a"), Just("b"), Just("id"), Just("n"), Just("items"), Just("sku")], inner),
                    0..5
                )
                .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
            ]
        })
    }

    proptest::proptest! {
        /// The fast path gives jaq's results, value for value, and fails where jaq fails.
        #[test]
        fn the_fast_path_agrees_with_jaq(body in json_value()) {
            let body = serde_json::to_vec(&body).unwrap();
            for code in [
                ".",
                ".a",
                ".a.b",
                ".items[0].sku",
                ".items[-1]",
                "[.items[] | .sku]",
                "[.a[] | .b[]]",
                "{id, total: (.n / 100), skus: [.items[] | .sku]}",
                "{text: \"x \\(.a) \\(.n) y\"}",
                ".n + 1",
                ".n - .n * 2",
                ".a + .b",
                ".id + \"!\"",
                "{a: 1, a: .b}",
                "[.[]]",
                "(.a | .b)",
                "\"\\(.n / 7) é \\(.n * 3) \\(.items)\"",
                "{n: (.n / 3), m: (1.5 * .n), s: (.id + .id)}",
            ] {
                let t = Transform::compile(code, DEFAULT_BUDGET).unwrap();
                proptest::prop_assert!(t.is_fast(), "{} should be on the fast path", code);
                let super::super::fast::Outcome::Done(a) = t.fast.as_ref().unwrap().run(&body) else { continue };
                let b = t.apply_jaq(&body);
                proptest::prop_assert!(b.is_ok(), "{} on {}: fast {}, jaq {:?}", code, String::from_utf8_lossy(&body), String::from_utf8_lossy(&a), b);
                let (a, b): (serde_json::Value, serde_json::Value) =
                    (serde_json::from_slice(&a).unwrap(), serde_json::from_slice(&b.unwrap()).unwrap());
                proptest::prop_assert_eq!(norm(a), norm(b), "{} on {}", code, String::from_utf8_lossy(&body));
            }
        }
    }

    #[test]
    fn programs_are_checked_at_load() {
        let e = Transform::compile("{a: .b", DEFAULT_BUDGET).unwrap_err();
        assert!(e.starts_with("syntax error") && e.contains("at byte"), "{e}");
        let e = Transform::compile(".a | nosuch(1)", DEFAULT_BUDGET).unwrap_err();
        assert!(e.contains("undefined filter `nosuch`"), "{e}");
        let e = Transform::compile("env.SECRET", DEFAULT_BUDGET).unwrap_err();
        assert!(e.contains("`env`") && e.contains("not available"), "{e}");
        for denied in ["input", "$ENV", "import \"x\" as x; .", "include \"x\"; ."] {
            assert!(Transform::compile(denied, DEFAULT_BUDGET).is_err(), "{denied}");
        }
        assert!(Transform::compile(&" ".repeat(MAX_PROGRAM + 1), DEFAULT_BUDGET).unwrap_err().contains("longer"));
    }
}
