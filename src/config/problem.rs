//! A configuration problem, worded for the person who has to fix it.

use std::fmt;
use std::path::Path;

/// One thing wrong with the configuration: where, what, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    /// `Kind namespace/name`, or empty when the problem is with the file itself.
    pub resource: String,
    /// The field path, e.g. `spec.rules[0].backendRefs[1].name`.
    pub field: String,
    pub message: String,
    pub fix: String,
}

impl Problem {
    pub fn new(file: &Path, resource: &str, field: &str, message: String, fix: String) -> Self {
        Problem {
            file: file.display().to_string(),
            resource: resource.to_string(),
            field: field.to_string(),
            message,
            fix,
        }
    }

    pub fn file(file: &Path, message: String) -> Self {
        Problem::new(file, "", "", message, String::new())
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if !self.resource.is_empty() {
            write!(f, ": {}", self.resource)?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)?;
        if !self.fix.is_empty() {
            write!(f, "\n    fix: {}", self.fix)?;
        }
        Ok(())
    }
}

/// Formats a list of problems, one paragraph each.
pub fn report(problems: &[Problem]) -> String {
    let mut out = format!(
        "configuration has {} problem{}:\n",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems {
        out.push_str("  - ");
        out.push_str(&p.to_string());
        out.push('\n');
    }
    out
}

/// The closest candidate to `word`, phrased as a suggestion, if any is close enough.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let lower = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| {
            (
                strsim::damerau_levenshtein(&lower, &c.to_ascii_lowercase()),
                c,
            )
        })
        .filter(|(distance, c)| *distance <= (c.len() / 3).max(2))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| format!("did you mean `{c}`?"))
}

/// Turns a serde error (with its field path) into a problem, with a suggestion for
/// a misspelt field or an unknown variant.
pub fn from_serde(file: &Path, resource: &str, prefix: &str, path: &str, error: &str) -> Problem {
    let path = if path == "." {
        String::new()
    } else {
        path.to_string()
    };
    // serde's wording: "unknown field `x`, expected one of `a`, `b`" (or "expected `a`").
    if let Some(rest) = error.strip_prefix("unknown field `") {
        let (field, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        let at = join_path(prefix, &path, field);
        let fix = did_you_mean(field, candidates.iter().copied())
            .unwrap_or_else(|| format!("remove it; known fields here: {}", candidates.join(", ")));
        return Problem::new(file, resource, &at, format!("unknown field `{field}`"), fix);
    }
    let fix = if let Some(rest) = error.strip_prefix("unknown variant `") {
        let (variant, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        did_you_mean(variant, candidates.iter().copied())
            .unwrap_or_else(|| format!("use one of {}", candidates.join(", ")))
    } else if error.starts_with("missing field") {
        "add the field".to_string()
    } else {
        "check the value's type against the resource's schema".to_string()
    };
    let at = join_path(prefix, &path, "");
    Problem::new(
        file,
        resource,
        at.trim_end_matches('.'),
        error.to_string(),
        fix,
    )
}

fn join_path(prefix: &str, path: &str, field: &str) -> String {
    let mut at = String::from(prefix);
    at.push_str(path);
    // serde_path_to_error's path already ends with an unknown field's name.
    let ends_with_field = path.rsplit('.').next() == Some(field);
    if !field.is_empty() && !ends_with_field {
        if !path.is_empty() {
            at.push('.');
        }
        at.push_str(field);
    }
    at.trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_the_closest_field() {
        assert_eq!(
            did_you_mean("backendRef", ["backendRefs", "matches", "name"]).as_deref(),
            Some("did you mean `backendRefs`?")
        );
        assert_eq!(did_you_mean("zzzzzz", ["backendRefs", "matches"]), None);
    }

    #[test]
    fn unknown_field_names_path_and_suggestion() {
        let p = from_serde(
            Path::new("a.yaml"),
            "AIGatewayRoute default/r",
            "spec.",
            "rules[0].backendRef",
            "unknown field `backendRef`, expected one of `name`, `matches`, `backendRefs`",
        );
        assert_eq!(p.field, "spec.rules[0].backendRef");
        assert_eq!(p.fix, "did you mean `backendRefs`?");
    }
}
