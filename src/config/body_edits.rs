//! `bodyMutation` (on an AIServiceBackend and on a route's backendRef): top-level JSON
//! fields of the provider request body set or removed. Applied once to the final body of
//! each attempt, after translation, so every schema gets it the same way.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::value::RawValue;

use super::problem::Problem;
use super::resources::BodyMutation;

/// The CRD's `maxItems` for `set` and for `remove`.
const MAX_ITEMS: usize = 16;

/// Fields the gateway itself relies on: the response translation follows the client's
/// `stream`, so a mutation must not change it.
const RESERVED_FIELDS: &[&str] = &["stream"];

#[derive(Debug, Clone, Default)]
pub struct BodyEdits {
    /// Field name and its JSON value.
    set: Vec<(String, Box<RawValue>)>,
    remove: BTreeSet<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("the provider request body is not a JSON object: {0}")]
pub struct NotAnObject(serde_json::Error);

impl BodyEdits {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }

    /// These edits (a backend's) with `own` (a backendRef's) over them: where both name a
    /// field, the reference's set or remove wins.
    pub fn overridden_by(&self, own: BodyEdits) -> BodyEdits {
        let mut merged = self.clone();
        for (path, value) in own.set {
            merged.remove.remove(&path);
            merged.set.retain(|(p, _)| *p != path);
            merged.set.push((path, value));
        }
        for path in own.remove {
            merged.set.retain(|(p, _)| *p != path);
            merged.remove.insert(path);
        }
        merged
    }

    /// A `multipart/form-data` body (with `boundary`) with the edits applied to its text
    /// fields: a JSON string is set as its text, any other value as its JSON text.
    pub fn apply_form(&self, body: &[u8], boundary: &str) -> Result<Vec<u8>, crate::api::ApiError> {
        let values: Vec<(&str, String)> = self
            .set
            .iter()
            .map(|(name, raw)| {
                let text = serde_json::from_str::<String>(raw.get())
                    .unwrap_or_else(|_| raw.get().to_string());
                (name.as_str(), text)
            })
            .collect();
        let set: Vec<(&str, &str)> = values.iter().map(|(n, v)| (*n, v.as_str())).collect();
        crate::api::multipart::edited(body, boundary, &|name| self.remove.contains(name), &set)
    }

    /// The body with the edits applied. Values are moved as raw JSON, not re-parsed.
    pub fn apply(&self, body: &[u8]) -> Result<Vec<u8>, NotAnObject> {
        let mut fields: BTreeMap<String, Box<RawValue>> =
            serde_json::from_slice(body).map_err(NotAnObject)?;
        for path in &self.remove {
            fields.remove(path);
        }
        for (path, value) in &self.set {
            fields.insert(path.clone(), value.clone());
        }
        serde_json::to_vec(&fields).map_err(NotAnObject)
    }
}

/// Validates a resource's `bodyMutation`; each problem names the field.
pub fn from_resource(
    m: Option<&BodyMutation>,
    file: &Path,
    what: &str,
    field: &str,
    problems: &mut Vec<Problem>,
) -> BodyEdits {
    let Some(m) = m else {
        return BodyEdits::default();
    };
    let mut edits = BodyEdits::default();
    let mut problem = |at: String, message: String, fix: &str| {
        problems.push(Problem::new(file, what, &at, message, fix.into()));
    };
    for (list, len) in [("set", m.set.len()), ("remove", m.remove.len())] {
        if len > MAX_ITEMS {
            problem(
                format!("{field}.{list}"),
                format!("has {len} entries, more than {MAX_ITEMS}"),
                "keep at most 16 entries",
            );
        }
    }
    let reserved = |path: &str| RESERVED_FIELDS.contains(&path);
    for (i, f) in m.set.iter().enumerate() {
        let at = format!("{field}.set[{i}]");
        if f.path.is_empty() || reserved(&f.path) {
            problem(
                format!("{at}.path"),
                format!("`{}` cannot be set", f.path.escape_default()),
                "name a top-level field other than `stream` (the client decides whether to stream)",
            );
            continue;
        }
        if edits.set.iter().any(|(p, _)| *p == f.path) {
            problem(
                format!("{at}.path"),
                format!("`{}` is set twice", f.path),
                "set each field once",
            );
            continue;
        }
        match serde_json::from_str::<Box<RawValue>>(&f.value) {
            Ok(value) => edits.set.push((f.path.clone(), value)),
            Err(e) => problem(
                format!("{at}.value"),
                format!("is not JSON: {e}"),
                "write the value as JSON text: \"\\\"scale\\\"\" for a string, 0.2, true, {\"k\": 1}",
            ),
        }
    }
    for (i, path) in m.remove.iter().enumerate() {
        if path.is_empty() || reserved(path) || path == "model" {
            problem(
                format!("{field}.remove[{i}]"),
                format!("`{}` cannot be removed", path.escape_default()),
                "name a top-level field other than `model` and `stream`",
            );
            continue;
        }
        edits.remove.insert(path.clone());
    }
    edits
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::resources::BodyField;

    fn edits(set: &[(&str, &str)], remove: &[&str]) -> (BodyEdits, Vec<Problem>) {
        let m = BodyMutation {
            set: set
                .iter()
                .map(|(p, v)| BodyField {
                    path: p.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            remove: remove.iter().map(|s| s.to_string()).collect(),
        };
        let mut problems = Vec::new();
        let e = from_resource(
            Some(&m),
            Path::new("t.yaml"),
            "r",
            "spec.bodyMutation",
            &mut problems,
        );
        (e, problems)
    }

    #[test]
    fn sets_and_removes_top_level_fields() {
        let (e, problems) = edits(
            &[("temperature", "0.2"), ("service_tier", "\"scale\"")],
            &["user"],
        );
        assert!(problems.is_empty(), "{problems:?}");
        let out = e
            .apply(br#"{"model":"m","temperature":1.5,"user":"u","messages":[{"a":1}]}"#)
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"model":"m","temperature":0.2,"service_tier":"scale","messages":[{"a":1}]})
        );
        assert!(e.apply(b"[1]").is_err());
    }

    #[test]
    fn the_reference_wins_over_the_backend() {
        let (backend, _) = edits(&[("temperature", "0.2"), ("top_p", "0.5")], &["user"]);
        let (own, _) = edits(&[("user", "\"svc\"")], &["temperature"]);
        let merged = backend.overridden_by(own);
        let out = merged
            .apply(br#"{"model":"m","temperature":1,"user":"u"}"#)
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v, serde_json::json!({"model":"m","top_p":0.5,"user":"svc"}));
    }

    #[test]
    fn bad_entries_are_named() {
        let (_, problems) = edits(
            &[
                ("temperature", "warm"),
                ("stream", "true"),
                ("x", "1"),
                ("x", "2"),
            ],
            &["model"],
        );
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.bodyMutation.set[0].value",
                "spec.bodyMutation.set[1].path",
                "spec.bodyMutation.set[3].path",
                "spec.bodyMutation.remove[0]"
            ]
        );
    }
}
