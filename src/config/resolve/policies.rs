//! BackendSecurityPolicies: the credential of each AIServiceBackend a policy targets,
//! with every Secret it reads checked.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::super::load::{Document, Resources};
use super::super::problem::{did_you_mean, Problem};
use super::super::resources::{self, BackendSecurityPolicySpec};
use super::super::secrets::{self, SecretLookupError, SecretValue};
use super::{full_name, what};
use crate::auth::{self, Credential};

/// The credential of each AIServiceBackend (by full name) that a policy targets.
pub(super) fn resolve_policies(
    res: &Resources,
    secrets_dir: Option<&Path>,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, Arc<dyn Credential>> {
    let mut out: BTreeMap<String, Arc<dyn Credential>> = BTreeMap::new();
    // Which policy authenticates each backend, by the backend's full name.
    let mut targeted: BTreeMap<String, String> = BTreeMap::new();
    for doc in &res.policies {
        let w = what("BackendSecurityPolicy", doc);
        let Some(credential) = credential(res, secrets_dir, doc, &w, problems) else {
            // Still checked, so that every problem is reported at once.
            targets(res, doc, &w, &mut targeted, problems);
            continue;
        };
        for backend in targets(res, doc, &w, &mut targeted, problems) {
            out.insert(backend, credential.clone());
        }
    }
    out
}

/// The policy's credential, built by its type's builder; None once a problem is reported.
fn credential(
    res: &Resources,
    secrets_dir: Option<&Path>,
    doc: &Document<BackendSecurityPolicySpec>,
    w: &str,
    problems: &mut Vec<Problem>,
) -> Option<Arc<dyn Credential>> {
    let spec = &doc.spec;
    let problem = |field: &str, message: &str, fix: String| {
        Problem::new(&doc.file, w, field, message.into(), fix)
    };
    if spec.credential_override.is_some() {
        // Refused, never ignored: ignoring it would send the configured credential
        // where the operator asked for the caller's (or for a 401 without one).
        problems.push(problem(
            "spec.credentialOverride",
            "per-request credentials (credentialOverride) are not supported by llm-extproc",
            "remove credentialOverride; the policy's configured credential is then used for every request".into(),
        ));
        return None;
    }
    let Some((_, build)) = auth::REGISTRY
        .iter()
        .find(|(name, _)| *name == spec.policy_type)
    else {
        let types = auth::REGISTRY.iter().map(|(name, _)| *name);
        let fix = did_you_mean(&spec.policy_type, types.clone())
            .unwrap_or_else(|| format!("use one of {}", types.collect::<Vec<_>>().join(", ")));
        let message = format!("unknown type `{}`", spec.policy_type);
        problems.push(problem("spec.type", &message, fix));
        return None;
    };
    build(&mut Policy {
        res,
        secrets_dir,
        doc,
        what: w,
        problems,
    })
}

/// The full names of the AIServiceBackends the policy targets that exist and that no
/// earlier policy authenticates (each such case is a problem).
fn targets(
    res: &Resources,
    doc: &Document<BackendSecurityPolicySpec>,
    w: &str,
    targeted: &mut BTreeMap<String, String>,
    problems: &mut Vec<Problem>,
) -> Vec<String> {
    let problem =
        |field: &str, message: String, fix: String| Problem::new(&doc.file, w, field, message, fix);
    if doc.spec.target_refs.is_empty() {
        problems.push(problem(
            "spec.targetRefs",
            "is empty".into(),
            "name the AIServiceBackend(s) this policy authenticates, under targetRefs".into(),
        ));
    }
    let mut out = Vec::new();
    for (i, target) in doc.spec.target_refs.iter().enumerate() {
        let ns = target.namespace.as_deref().unwrap_or(doc.namespace());
        let exists = res
            .backends
            .iter()
            .any(|b| b.meta.name == target.name && b.namespace() == ns);
        if !exists {
            let names = res.backends.iter().map(|b| b.meta.name.as_str());
            let fix = did_you_mean(&target.name, names)
                .unwrap_or_else(|| "define that AIServiceBackend or fix the name".into());
            problems.push(problem(
                &format!("spec.targetRefs[{i}].name"),
                format!("AIServiceBackend `{ns}/{}` does not exist", target.name),
                fix,
            ));
            continue;
        }
        let backend = full_name(&target.name, ns);
        if let Some(other) = targeted.insert(backend.clone(), doc.meta.name.clone()) {
            problems.push(problem(
                &format!("spec.targetRefs[{i}]"),
                format!(
                    "AIServiceBackend `{ns}/{}` is already authenticated by policy `{other}`",
                    target.name
                ),
                "keep one BackendSecurityPolicy per AIServiceBackend".into(),
            ));
        }
        out.push(backend);
    }
    out
}

/// One policy being resolved: what its credential's builder reads and reports.
struct Policy<'a> {
    res: &'a Resources,
    secrets_dir: Option<&'a Path>,
    doc: &'a Document<BackendSecurityPolicySpec>,
    what: &'a str,
    problems: &'a mut Vec<Problem>,
}

impl auth::PolicySource for Policy<'_> {
    fn spec(&self) -> &BackendSecurityPolicySpec {
        &self.doc.spec
    }

    fn secret_name(&self, secret: &resources::ObjectRef) -> String {
        let ns = secret.namespace.as_deref().unwrap_or(self.doc.namespace());
        format!("{ns}/{}", secret.name)
    }

    fn policy_name(&self) -> String {
        format!("{}/{}", self.doc.namespace(), self.doc.meta.name)
    }

    fn problem(&mut self, field: &str, message: String, fix: String) {
        self.problems
            .push(Problem::new(&self.doc.file, self.what, field, message, fix));
    }

    /// [`Self::secret_text`], and single-line printable ASCII: the value becomes a header.
    fn header_secret(
        &mut self,
        field: &str,
        secret_ref: &resources::ObjectRef,
        key: &str,
    ) -> Option<SecretValue> {
        let value = self.secret_text(field, secret_ref, key)?;
        if !value
            .expose()
            .bytes()
            .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
        {
            // A line break in a header value could inject headers.
            let secret = self.secret_name(secret_ref);
            self.problem(
                field,
                format!("Secret `{secret}`: `{key}` contains a line break or a non-ASCII or control character"),
                format!("store the bare credential in `{key}`"),
            );
            return None;
        }
        Some(value)
    }

    /// A non-empty Secret value, or a problem naming the Secret, the key and the fix.
    fn secret_text(
        &mut self,
        field: &str,
        secret_ref: &resources::ObjectRef,
        key: &str,
    ) -> Option<SecretValue> {
        let (res, doc, w) = (self.res, self.doc, self.what);
        let ns = secret_ref.namespace.as_deref().unwrap_or(doc.namespace());
        let name = &secret_ref.name;
        match secrets::lookup(res, self.secrets_dir, ns, name, key) {
            Ok(v) if v.expose().is_empty() => {
                self.problems.push(Problem::new(
                    &doc.file,
                    w,
                    field,
                    format!("Secret `{ns}/{name}` has an empty `{key}`"),
                    format!("put the credential in the Secret's `{key}`"),
                ));
                None
            }
            Ok(v) => Some(v),
            Err(SecretLookupError::NoSecret) => {
                let names = res.secrets.iter().map(|s| s.meta.name.as_str());
                let fix = did_you_mean(name, names).unwrap_or_else(|| {
                format!("define Secret `{name}` with a `{key}` entry (a Secret manifest, or a file {key} in a mounted secrets directory)")
            });
                self.problems.push(Problem::new(
                    &doc.file,
                    w,
                    field,
                    format!("Secret `{ns}/{name}` does not exist"),
                    fix,
                ));
                None
            }
            Err(SecretLookupError::NoKey { present }) => {
                let has = if present.is_empty() {
                    "no keys".to_string()
                } else {
                    format!(
                        "only {}",
                        present
                            .iter()
                            .map(|k| format!("`{k}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                let fix = if present.is_empty() {
                    format!("add `{key}` to the Secret's data or stringData")
                } else {
                    format!(
                    "rename the Secret's data key to `{key}` (BackendSecurityPolicy `{}` of type {} reads `{key}`)",
                    doc.meta.name, doc.spec.policy_type
                )
                };
                self.problems.push(Problem::new(
                    &doc.file,
                    w,
                    field,
                    format!(
                    "Secret `{ns}/{name}` has no `{key}` key ({has}); policy `{}` needs `{key}`",
                    doc.meta.name
                ),
                    fix,
                ));
                None
            }
            Err(SecretLookupError::BadValue(why)) => {
                self.problems.push(Problem::new(
                    &doc.file,
                    w,
                    field,
                    format!("Secret `{ns}/{name}`: {why}"),
                    "store the key as base64 in data, or as text in stringData".into(),
                ));
                None
            }
        }
    }
}
