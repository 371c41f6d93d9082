//! Config errors: every problem found in one pass, each with its key path.

use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::de::DeserializeOwned;

use super::file::Unknown;

/// Every problem found in a config file, one line each, each starting with its key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<String>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            f.write_str(e)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The name in `known` closest to `given` by edit distance, if it is close
/// enough to be a misspelling (at most a third of its length, at least 1).
pub(super) fn closest<'k>(given: &str, known: impl Iterator<Item = &'k str>) -> Option<&'k str> {
    let g: Vec<char> = given.to_ascii_lowercase().chars().collect();
    let limit = (g.len() / 3).max(1);
    known
        .map(|k| (distance(&g, &k.chars().collect::<Vec<_>>()), k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Edit distance where swapping two neighbours counts as one edit (optimal
/// string alignment): `stroe` is one edit from `store`.
fn distance(a: &[char], b: &[char]) -> usize {
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

/// Collects errors while validating, so one pass reports all of them.
pub(super) struct Errors(pub(super) Vec<String>);

impl Errors {
    pub(super) fn push(&mut self, path: &str, msg: impl std::fmt::Display) {
        self.0.push(format!("{path}: {msg}"));
    }

    /// Every key of `unknown` is an error; the closest of `known` is suggested.
    pub(super) fn unknown(&mut self, path: &str, unknown: &Unknown, known: &[&str]) {
        for key in unknown.keys() {
            let p = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
            match closest(key, known.iter().copied()) {
                Some(k) => self.push(&p, format!("unknown key; did you mean {k:?}?")),
                None => self.push(&p, "unknown key"),
            }
        }
    }

    /// Deserializes one table; a type error is recorded and `T::default()` returned.
    pub(super) fn table<T: DeserializeOwned + Default>(&mut self, path: &str, value: Option<toml::Value>) -> T {
        let Some(value) = value else {
            return T::default();
        };
        match value.try_into() {
            Ok(v) => v,
            Err(e) => {
                self.push(path, e.to_string().trim());
                T::default()
            }
        }
    }

    pub(super) fn duration(&mut self, path: &str, text: Option<&str>, default: Duration) -> Duration {
        match text {
            None => default,
            Some(t) => match humantime::parse_duration(t) {
                Ok(d) => d,
                Err(e) => {
                    self.push(
                        path,
                        format!("invalid duration {t:?} ({e}); use e.g. \"500ms\", \"30s\", \"5m\", \"24h\""),
                    );
                    default
                }
            },
        }
    }

    pub(super) fn socket(&mut self, path: &str, text: &str) -> Option<SocketAddr> {
        match text.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.push(path, format!("invalid address {text:?}; use \"IP:PORT\", e.g. \"0.0.0.0:8080\""));
                None
            }
        }
    }

    pub(super) fn cidrs(&mut self, path: &str, list: &[String]) -> Vec<IpNet> {
        let mut out = Vec::new();
        for (i, text) in list.iter().enumerate() {
            match text.parse::<IpNet>().or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from)) {
                Ok(net) => out.push(net),
                Err(_) => self.push(&format!("{path}[{i}]"), format!("invalid CIDR {text:?}")),
            }
        }
        out
    }

    pub(super) fn choice<T: Copy>(&mut self, path: &str, text: Option<&str>, default: T, options: &[(&str, T)]) -> T {
        let Some(text) = text else { return default };
        match options.iter().find(|(name, _)| *name == text) {
            Some((_, v)) => *v,
            None => {
                let names: Vec<_> = options.iter().map(|(n, _)| format!("{n:?}")).collect();
                self.push(path, format!("invalid value {text:?}; expected one of {}", names.join(", ")));
                default
            }
        }
    }
}
