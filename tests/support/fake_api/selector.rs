//! Kubernetes label and field selectors, as the fake API server filters
//! lists and watches with them.

use serde_json::Value;

/// A parsed label or field selector: every requirement must hold.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Selector(Vec<Requirement>);

#[derive(Clone, Debug, PartialEq)]
enum Requirement {
    Exists(String),
    NotExists(String),
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

impl Selector {
    /// Parses the Kubernetes selector grammar; set-based forms only when
    /// `set_based` (label selectors), as field selectors have none.
    pub fn parse(s: &str, set_based: bool) -> Result<Self, String> {
        let mut terms = Vec::new();
        let (mut depth, mut start) = (0i32, 0usize);
        for (i, c) in s.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    terms.push(&s[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        terms.push(&s[start..]);
        let mut reqs = Vec::new();
        for t in terms.into_iter().map(str::trim).filter(|t| !t.is_empty()) {
            reqs.push(Self::term(t, set_based)?);
        }
        Ok(Self(reqs))
    }

    fn term(t: &str, set_based: bool) -> Result<Requirement, String> {
        let key = |k: &str| -> Result<String, String> {
            let k = k.trim();
            let ok = !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
            if ok {
                Ok(k.to_string())
            } else {
                Err(format!("invalid selector key {k:?} in {t:?}"))
            }
        };
        if let Some(open) = t.find('(') {
            if !set_based || !t.ends_with(')') {
                return Err(format!("invalid selector term {t:?}"));
            }
            let head: Vec<&str> = t[..open].split_whitespace().collect();
            let values: Vec<String> = t[open + 1..t.len() - 1]
                .split(',')
                .map(|v| v.trim().to_string())
                .collect();
            return match head.as_slice() {
                [k, "in"] => Ok(Requirement::In(key(k)?, values)),
                [k, "notin"] => Ok(Requirement::NotIn(key(k)?, values)),
                _ => Err(format!("invalid set-based term {t:?}")),
            };
        }
        if let Some((k, v)) = t.split_once("!=") {
            return Ok(Requirement::NotEq(key(k)?, v.trim().to_string()));
        }
        if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
            return Ok(Requirement::Eq(key(k)?, v.trim().to_string()));
        }
        if !set_based {
            return Err(format!("field selector {t:?} needs an operator"));
        }
        match t.strip_prefix('!') {
            Some(k) => Ok(Requirement::NotExists(key(k)?)),
            None => Ok(Requirement::Exists(key(t)?)),
        }
    }

    /// True when every requirement holds for `get` (key -> value).
    fn matches_with<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
            Requirement::Eq(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEq(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
        })
    }

    /// Label selector match against `metadata.labels`.
    pub fn matches_labels(&self, obj: &Value) -> bool {
        let labels = &obj["metadata"]["labels"];
        self.matches_with(|k| labels.get(k).and_then(Value::as_str))
    }

    /// Field selector match: dotted paths into the object; a missing field
    /// compares as the empty string, as the apiserver's field sets do.
    pub fn matches_fields(&self, obj: &Value) -> bool {
        self.matches_with(|k| {
            Some(
                k.split('.')
                    .try_fold(obj, |o, p| o.get(p))
                    .and_then(Value::as_str)
                    .unwrap_or(""),
            )
        })
    }
}
