//! `AIGatewayRoute.spec.hostnames`: the Host names a route serves (Gateway API
//! semantics: an exact name, or `*.` and a domain, which matches any name below that
//! domain but not the domain itself). Envoy matches them on `:authority` (port ignored)
//! and `/v1/models` lists a route's models only on its hosts.

/// Why a `hostnames` entry is not a Gateway API hostname.
pub fn invalid(name: &str) -> Option<String> {
    let domain = name.strip_prefix("*.").unwrap_or(name);
    if domain.is_empty() || name.len() > 253 {
        return Some(format!("`{name}` is not a host name"));
    }
    if domain
        .split('.')
        .all(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Some(format!("`{name}` is an IP address; hostnames are names"));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if !domain.split('.').all(label_ok) {
        return Some(format!(
            "`{name}` is not a lowercase RFC 1123 host name (a `*.` prefix is the only wildcard)"
        ));
    }
    None
}

/// Whether the request's `authority` (`host` or `host:port`) is one `pattern` names.
pub fn matches(pattern: &str, authority: &str) -> bool {
    let host = strip_port(authority).to_ascii_lowercase();
    match pattern.strip_prefix('*') {
        Some(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
        None => host == pattern,
    }
}

/// The RE2 expression Envoy matches `:authority` against for `patterns`.
pub fn authority_regex(patterns: &[String]) -> String {
    let names: Vec<String> = patterns
        .iter()
        .map(|p| match p.strip_prefix("*.") {
            Some(domain) => format!("[^:]+\\.{}", domain.replace('.', "\\.")),
            None => p.replace('.', "\\."),
        })
        .collect();
    format!("^(?i)({})(:[0-9]+)?$", names.join("|"))
}

fn strip_port(authority: &str) -> &str {
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_wildcard_names_as_the_gateway_api_has_them() {
        assert!(matches("api.example.com", "api.example.com:1975"));
        assert!(matches("api.example.com", "API.example.com"));
        assert!(!matches("api.example.com", "other.example.com"));
        assert!(matches("*.example.com", "a.b.example.com"));
        assert!(!matches("*.example.com", "example.com"));
        assert_eq!(invalid("*.example.com"), None);
        assert!(invalid("10.0.0.1").is_some());
        assert!(invalid("Bad_Host").is_some());
        assert!(invalid("a.*.com").is_some());
    }

    #[test]
    fn the_envoy_expression_takes_a_port() {
        let re = authority_regex(&["api.example.com".into(), "*.internal".into()]);
        assert_eq!(re, r"^(?i)(api\.example\.com|[^:]+\.internal)(:[0-9]+)?$");
    }
}
