//! `headers = { NAME = "value" }` and `remove_headers = ["NAME"]` on a route
//! (SPEC §14): what its upstream gets besides the sender's headers, e.g. the
//! app's own `Authorization`. Checked at load; applied after the header rules
//! of SPEC §3 and before re-signing, so `sign_upstream` always has the last word.

use std::collections::BTreeMap;

use http::{HeaderMap, HeaderName, HeaderValue};

#[derive(Debug, Clone, Default)]
pub struct RouteHeaders {
    set: Box<[(HeaderName, HeaderValue)]>,
    remove: Box<[HeaderName]>,
}

/// Headers a route cannot set: hop-by-hop ones (RFC 9110 §7.6.1), the ones
/// the request's framing decides, and hookgate's own.
fn reserved(name: &HeaderName) -> Option<&'static str> {
    let n = name.as_str();
    if matches!(
        n,
        "connection" | "keep-alive" | "te" | "trailer" | "transfer-encoding" | "upgrade" | "proxy-connection"
    ) || n.starts_with("proxy-")
    {
        return Some("a hop-by-hop header, which applies to one connection only");
    }
    if matches!(n, "host" | "content-length") {
        return Some("set by hookgate from the upstream URL and the body");
    }
    if n.starts_with("x-hookgate-") {
        return Some("hookgate's own header; the app relies on its value");
    }
    None
}

impl RouteHeaders {
    /// Checks both keys; each error is `(key path below the route, message)`.
    /// Values are never repeated in a message (they may be tokens).
    pub fn compile(set: &BTreeMap<String, String>, remove: &[String]) -> Result<RouteHeaders, Vec<(String, String)>> {
        let mut errs = Vec::new();
        let mut out = RouteHeaders::default();
        let mut list = Vec::with_capacity(set.len());
        for (name, value) in set {
            let at = format!("headers.{name:?}");
            let Ok(n) = HeaderName::from_bytes(name.as_bytes()) else {
                errs.push((at, "not a valid header name".to_owned()));
                continue;
            };
            if let Some(why) = reserved(&n) {
                errs.push((at, format!("cannot be set: {why}")));
                continue;
            }
            match HeaderValue::from_str(value) {
                Ok(mut v) => {
                    // Kept out of Debug output and HPACK tables: these are credentials as a rule.
                    v.set_sensitive(true);
                    list.push((n, v));
                }
                Err(_) => errs.push((at, "the value holds a character a header cannot carry (a line break?)".into())),
            }
        }
        out.set = list.into_boxed_slice();
        let mut gone = Vec::with_capacity(remove.len());
        for (i, name) in remove.iter().enumerate() {
            match HeaderName::from_bytes(name.as_bytes()) {
                Ok(n) if matches!(n.as_str(), "host" | "content-length") => {
                    errs.push((format!("remove_headers[{i}]"), "set by hookgate for every request".into()))
                }
                Ok(n) => gone.push(n),
                Err(_) => errs.push((format!("remove_headers[{i}]"), format!("{name:?} is not a valid header name"))),
            }
        }
        out.remove = gone.into_boxed_slice();
        if errs.is_empty() { Ok(out) } else { Err(errs) }
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }

    /// Removes, then sets (replacing every value the name had).
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn removes_then_sets() {
        let h = RouteHeaders::compile(
            &set(&[("Authorization", "Bearer t0k"), ("X-App", "1")]),
            &["Stripe-Signature".into(), "x-app".into(), "authorization".into()],
        )
        .unwrap();
        let mut map = HeaderMap::new();
        map.insert("stripe-signature", "t=1,v1=ab".parse().unwrap());
        map.append("x-app", "old".parse().unwrap());
        map.append("x-app", "older".parse().unwrap());
        map.insert("authorization", "Basic sender".parse().unwrap());
        map.insert("content-type", "application/json".parse().unwrap());
        h.apply(&mut map);
        assert!(map.get("stripe-signature").is_none());
        assert_eq!(map.get_all("x-app").iter().collect::<Vec<_>>(), ["1"]);
        assert_eq!(map["authorization"], "Bearer t0k");
        assert_eq!(map["content-type"], "application/json");
        assert!(!format!("{h:?}").contains("t0k"), "values are sensitive: {h:?}");
    }

    #[test]
    fn reserved_and_malformed_headers_are_refused() {
        for name in [
            "Connection",
            "Keep-Alive",
            "Transfer-Encoding",
            "TE",
            "Upgrade",
            "Proxy-Authorization",
            "Host",
            "Content-Length",
            "X-Hookgate-Verified",
            "x-hookgate-anything",
        ] {
            let e = RouteHeaders::compile(&set(&[(name, "x")]), &[]).unwrap_err();
            assert!(e.len() == 1 && e[0].1.starts_with("cannot be set"), "{name}: {e:?}");
        }
        let e = RouteHeaders::compile(&set(&[("bad name", "x"), ("X-Ok", "line\nbreak")]), &["".into(), "Host".into()])
            .unwrap_err();
        let keys: Vec<&str> = e.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["headers.\"X-Ok\"", "headers.\"bad name\"", "remove_headers[0]", "remove_headers[1]"]);
        assert!(e.iter().all(|(_, m)| !m.contains("line\nbreak")), "no value echoed: {e:?}");
    }
}
