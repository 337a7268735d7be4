//! A syntax check of Kubernetes label selectors (`app=web,tier in (db,cache),!canary`),
//! so a mistyped `--selector` fails at start with its reason instead of every
//! list being refused with 400 and retried forever.
//!
//! The grammar is apimachinery's `labels.Parse`: requirements joined by `,`,
//! each `key`, `!key`, `key=v`, `key==v`, `key!=v`, `key in (v,..)`,
//! `key notin (v,..)`, `key>n` or `key<n`; keys are `[prefix/]name`.

/// Why `selector` does not parse, or `None` when it does.
pub fn problem(selector: &str) -> Option<String> {
    requirements(selector)
        .into_iter()
        .find_map(|r| requirement(r.trim()).err().map(|e| format!("{r:?}: {e}")))
}

/// Splits at the commas outside parentheses.
fn requirements(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn requirement(r: &str) -> Result<(), String> {
    if let Some(key) = r.strip_prefix('!') {
        return check_key(key.trim());
    }
    for op in ["==", "!=", "=", ">", "<"] {
        if let Some((key, value)) = r.split_once(op) {
            check_key(key.trim())?;
            let value = value.trim();
            if matches!(op, ">" | "<") && value.parse::<i64>().is_err() {
                return Err(format!("{value:?} is not an integer"));
            }
            return check_value(value);
        }
    }
    for op in [" notin ", " in "] {
        if let Some((key, set)) = r.split_once(op) {
            check_key(key.trim())?;
            let set = set.trim();
            let inner = set
                .strip_prefix('(')
                .and_then(|s| s.strip_suffix(')'))
                .ok_or_else(|| format!("{set:?} is not a parenthesised list of values"))?;
            return inner.split(',').try_for_each(|v| check_value(v.trim()));
        }
    }
    check_key(r)
}

/// `[prefix/]name`: a DNS subdomain prefix and a name of at most 63 characters.
fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if p.is_empty() || p.len() > 253 || !p.split('.').all(label_ok) {
            return Err(format!("{p:?} is not a DNS subdomain (the key's prefix)"));
        }
    }
    if name.is_empty() {
        return Err("a key is empty".into());
    }
    check_value(name).map_err(|_| format!("{key:?} is not a label key"))
}

/// Empty, or at most 63 of `[A-Za-z0-9._-]`, alphanumeric at both ends.
fn check_value(v: &str) -> Result<(), String> {
    let ok = v.is_empty()
        || (v.len() <= 63
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && v.starts_with(|c: char| c.is_ascii_alphanumeric())
            && v.ends_with(|c: char| c.is_ascii_alphanumeric()));
    if ok {
        Ok(())
    } else {
        Err(format!("{v:?} is not a label value"))
    }
}

#[cfg(test)]
mod tests {
    use super::problem;

    #[test]
    fn kubernetes_selectors_parse() {
        for s in [
            "app=web",
            "app==web,tier!=db",
            "app.kubernetes.io/name=web, !canary",
            "env in (prod, staging),tier notin (db)",
            "kubernetes.io/service-name",
            "replicas>2",
            "app=",
        ] {
            assert_eq!(problem(s), None, "{s}");
        }
    }

    #[test]
    fn mistakes_are_named() {
        for (s, why) in [
            ("app=web,", "a key is empty"),
            ("app=we b", "not a label value"),
            ("-app=web", "not a label key"),
            ("env in prod", "not a parenthesised list"),
            ("Example.com/app=web", "not a DNS subdomain"),
            ("replicas>two", "not an integer"),
            ("$(SELECTOR)", "not a label key"),
        ] {
            let p = problem(s).unwrap_or_else(|| panic!("{s:?} parsed"));
            assert!(p.contains(why), "{s:?}: {p}");
        }
    }
}
