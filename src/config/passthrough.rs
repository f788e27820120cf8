//! Passthrough allowlists: which other `/v1/*` endpoints (files, batches, embeddings, ...) a route
//! forwards with its upstream's key, and which of them a client key may use. A rule is
//! `"METHOD /v1/path"`, the method `*` for any, the path a glob whose `*` stands for one path
//! segment and `**` for any number (`"GET /v1/files/*"`, `"* /v1/batches/**"`).

use globset::{GlobBuilder, GlobMatcher};

use super::ConfigError;

/// One `METHOD /path` rule.
#[derive(Debug, Clone)]
struct PathRule {
    /// `None`: any method.
    method: Option<String>,
    path: GlobMatcher,
}

/// A parsed allowlist, kept with its source text for `condenser routes` and error messages.
#[derive(Debug, Clone)]
pub struct PathRules {
    rules: Vec<PathRule>,
    pub source: Vec<String>,
}

impl PartialEq for PathRules {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl PathRules {
    /// Parses `rules`; an error names `key[i]`.
    pub fn parse(rules: &[String], key: &str) -> Result<Self, ConfigError> {
        let mut parsed = Vec::with_capacity(rules.len());
        for (i, rule) in rules.iter().enumerate() {
            let invalid = |reason: String| ConfigError::invalid(format!("{key}[{i}]"), reason);
            let (method, path) = rule.trim().split_once(' ').ok_or_else(|| {
                invalid(format!(
                    "`{rule}` is not `METHOD /v1/path` (e.g. \"POST /v1/embeddings\")"
                ))
            })?;
            let path = path.trim();
            if !path.starts_with("/v1/") {
                return Err(invalid(format!("`{path}` must start with /v1/")));
            }
            if let Err(reason) = crate::url_path::check_path(path) {
                return Err(invalid(reason.to_string()));
            }
            let method = match method.to_ascii_uppercase().as_str() {
                "*" => None,
                m @ ("GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS") => {
                    Some(m.to_string())
                }
                other => return Err(invalid(format!("unknown method `{other}`"))),
            };
            let glob = GlobBuilder::new(path)
                .literal_separator(true)
                .build()
                .map_err(|e| invalid(e.to_string()))?;
            parsed.push(PathRule {
                method,
                path: glob.compile_matcher(),
            });
        }
        Ok(Self {
            rules: parsed,
            source: rules.to_vec(),
        })
    }

    /// Whether some rule allows `method` on `path` (the path without its query).
    pub fn allows(&self, method: &str, path: &str) -> bool {
        self.rules.iter().any(|r| {
            r.method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
                && r.path.is_match(path)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(list: &[&str]) -> PathRules {
        let list: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        PathRules::parse(&list, "routes[0].passthrough").expect("rules")
    }

    #[test]
    fn a_star_is_one_segment_and_methods_must_match() {
        let r = rules(&["POST /v1/embeddings", "GET /v1/files/*", "* /v1/batches/**"]);
        assert!(r.allows("POST", "/v1/embeddings"));
        assert!(!r.allows("GET", "/v1/embeddings"));
        assert!(r.allows("GET", "/v1/files/file-1"));
        assert!(!r.allows("GET", "/v1/files"));
        assert!(!r.allows("GET", "/v1/files/file-1/content"));
        assert!(!r.allows("DELETE", "/v1/files/file-1"));
        assert!(r.allows("DELETE", "/v1/batches/b/cancel"));
        assert!(!r.allows("POST", "/v1/fine_tuning/jobs"));
    }

    #[test]
    fn malformed_rules_name_their_index() {
        for bad in [
            "/v1/files",
            "FETCH /v1/files",
            "GET /files",
            "GET /v1/../admin",
        ] {
            let err = PathRules::parse(&[bad.to_string()], "routes[2].passthrough")
                .expect_err(bad)
                .to_string();
            assert!(err.starts_with("routes[2].passthrough[0]"), "{err}");
        }
    }
}
