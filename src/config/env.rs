//! `${VAR}` and `${VAR:-default}` expansion in every string of the config file.
//!
//! Expansion runs on the parsed TOML tree, before the schema is applied, so a
//! variable can never inject TOML syntax. The environment is passed in as a
//! lookup function: tests hand in a map, and nothing ever calls `set_var`.

/// Expands `${VAR}` / `${VAR:-default}` in `input`. `$$` is a literal `$`.
///
/// Returns the names of unset variables that had no default as the error.
pub fn expand(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, Vec<String>> {
    if !input.contains('$') {
        return Ok(input.to_owned());
    }
    let mut out = String::with_capacity(input.len());
    let mut missing = Vec::new();
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                // No closing brace: keep the text as written.
                out.push_str(&rest[pos..]);
                rest = "";
                break;
            };
            let inner = &body[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            match (lookup(name), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => missing.push(name.to_owned()),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    if missing.is_empty() { Ok(out) } else { Err(missing) }
}

/// Expands every string in `value` in place; errors carry the key path.
pub fn expand_tree(
    value: &mut toml::Value,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<String>,
) {
    match value {
        toml::Value::String(s) => match expand(s, lookup) {
            Ok(v) => *s = v,
            Err(names) => {
                for name in names {
                    errors.push(format!(
                        "{path}: environment variable {name} is not set (use ${{{name}:-default}} for an optional one)"
                    ));
                }
            }
        },
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_tree(item, &format!("{path}[{i}]"), lookup, errors);
            }
        }
        toml::Value::Table(table) => {
            for (k, v) in table.iter_mut() {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                expand_tree(v, &p, lookup, errors);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "A" => Some("alpha".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_set_default_and_literal() {
        assert_eq!(expand("x${A}y", &env).unwrap(), "xalphay");
        assert_eq!(expand("${B:-beta}", &env).unwrap(), "beta");
        assert_eq!(expand("${B:-}", &env).unwrap(), "");
        assert_eq!(expand("${EMPTY:-d}", &env).unwrap(), "");
        assert_eq!(expand("$$A $5", &env).unwrap(), "$A $5");
        assert_eq!(expand("no vars", &env).unwrap(), "no vars");
        assert_eq!(expand("${unterminated", &env).unwrap(), "${unterminated");
    }

    #[test]
    fn unset_without_default_names_every_variable() {
        assert_eq!(expand("${X}-${A}-${Y}", &env).unwrap_err(), vec!["X", "Y"]);
    }

    #[test]
    fn tree_errors_carry_paths() {
        let mut v: toml::Value = toml::from_str("[s.t]\nsecrets = [\"ok\", \"${NOPE}\"]\n").unwrap();
        let mut errors = Vec::new();
        expand_tree(&mut v, "", &env, &mut errors);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with("s.t.secrets[1]: environment variable NOPE"), "{}", errors[0]);
    }
}
