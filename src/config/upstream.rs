//! `[[upstreams]]`: an API condenser forwards to, as one or several deployments (base URL and
//! key variable each), with its timeouts, retry and circuit-breaker settings.

use std::collections::HashSet;

use super::raw::{RawUpstream, UpstreamKind};
use super::tls::read_certificates;
use super::ConfigError;

#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub name: String,
    pub kind: UpstreamKind,
    /// Never empty: `base_url`/`api_key_env`, or each of `deployments`.
    pub deployments: Vec<DeploymentSettings>,
    pub connect_timeout_ms: u64,
    pub timeout_ms: u64,
    /// `ca_file`: the CA certificates (DER) trusted for this upstream instead of the platform's.
    pub ca_certs: Option<Vec<Vec<u8>>>,
    pub max_retries: u32,
    pub retry_backoff_ms: u64,
    pub eject_after: u32,
    pub eject_for_ms: u64,
}

/// One place the upstream's API is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentSettings {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path prefix that replaces the client's `/v1` (e.g. `/v1`, `/api/v1`).
    pub base_path: String,
    pub api_key_env: Option<String>,
}

pub(super) fn validate_upstreams(
    raw: &[RawUpstream],
) -> Result<Vec<UpstreamSettings>, ConfigError> {
    let mut upstreams = Vec::with_capacity(raw.len());
    let mut names = HashSet::new();
    for (i, up) in raw.iter().enumerate() {
        let key = |field: &str| format!("upstreams[{i}].{field}");
        if !names.insert(up.name.as_str()) {
            return Err(ConfigError::invalid(
                key("name"),
                format!("duplicate upstream `{}`", up.name),
            ));
        }
        let listed: Vec<(String, &str, &Option<String>)> = match (&up.base_url, &up.deployments[..])
        {
            (Some(url), []) => vec![(String::new(), url.as_str(), &up.api_key_env)],
            (None, []) => {
                return Err(ConfigError::invalid(
                    key("base_url"),
                    "missing: set `base_url` (or list `deployments`)",
                ))
            }
            (None, list) if up.api_key_env.is_none() => list
                .iter()
                .enumerate()
                .map(|(j, d)| {
                    (
                        format!("deployments[{j}]."),
                        d.base_url.as_str(),
                        &d.api_key_env,
                    )
                })
                .collect(),
            (_, _) => {
                return Err(ConfigError::invalid(
                    key("deployments"),
                    "give either `base_url` and `api_key_env` or `deployments`, not both",
                ))
            }
        };
        let mut deployments = Vec::with_capacity(listed.len());
        for (prefix, url, api_key_env) in listed {
            let (tls, host, port, base_path) = parse_base_url(url).map_err(|reason| {
                ConfigError::invalid(key(&format!("{prefix}base_url")), reason)
            })?;
            if let Some(var) = api_key_env {
                if var.is_empty() || var.contains(char::is_whitespace) {
                    return Err(ConfigError::invalid(
                        key(&format!("{prefix}api_key_env")),
                        "must be the name of an environment variable, not a key",
                    ));
                }
            }
            let deployment = DeploymentSettings {
                tls,
                host,
                port,
                base_path,
                api_key_env: api_key_env.clone(),
            };
            if deployments.contains(&deployment) {
                return Err(ConfigError::invalid(
                    key(&format!("{prefix}base_url")),
                    format!("`{url}` with the same key is listed twice"),
                ));
            }
            deployments.push(deployment);
        }
        if up.timeout_ms == 0 || up.connect_timeout_ms == 0 {
            return Err(ConfigError::invalid(
                key("timeout_ms"),
                "timeouts must be > 0",
            ));
        }
        let ca_certs = match &up.ca_file {
            None => None,
            Some(path) => Some(
                read_certificates(path)
                    .map_err(|reason| ConfigError::invalid(key("ca_file"), reason))?,
            ),
        };
        upstreams.push(UpstreamSettings {
            name: up.name.clone(),
            kind: up.kind,
            deployments,
            connect_timeout_ms: up.connect_timeout_ms,
            timeout_ms: up.timeout_ms,
            ca_certs,
            max_retries: up.max_retries,
            retry_backoff_ms: up.retry_backoff_ms,
            eject_after: up.eject_after,
            eject_for_ms: up.eject_for_ms,
        });
    }
    Ok(upstreams)
}

/// `https://host[:port]/path` → (tls, host, port, path without trailing slash).
fn parse_base_url(url: &str) -> Result<(bool, String, u16, String), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(format!("`{url}` must start with http:// or https://")),
    };
    let host = uri
        .host()
        .ok_or_else(|| format!("`{url}` has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let base_path = uri.path().trim_end_matches('/').to_string();
    if uri.query().is_some() {
        return Err(format!("`{url}` must not carry a query string"));
    }
    Ok((tls, host, port, base_path))
}

#[cfg(test)]
mod tests {
    use super::{parse_base_url, validate_upstreams};
    use crate::config::RawUpstream;

    fn validate(toml_text: &str) -> Result<Vec<super::UpstreamSettings>, String> {
        let raw: RawUpstream = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        validate_upstreams(&[raw]).map_err(|e| e.to_string())
    }

    #[test]
    fn deployments_are_listed_or_given_as_one_base_url() {
        let one = validate("name = \"a\"\nkind = \"openai\"\nbase_url = \"http://h:1/v1\"\n")
            .expect("one base_url");
        assert_eq!(one[0].deployments.len(), 1);
        let two = validate(
            "name = \"a\"\nkind = \"openai\"\ndeployments = [\
             { base_url = \"http://h:1/v1\", api_key_env = \"K1\" },\
             { base_url = \"https://g/openai/v1\", api_key_env = \"K2\" }]\n",
        )
        .expect("two deployments");
        assert_eq!(two[0].deployments.len(), 2);
        assert_eq!(two[0].deployments[1].base_path, "/openai/v1");
        assert!(two[0].deployments[1].tls);
        let both = validate(
            "name = \"a\"\nkind = \"openai\"\nbase_url = \"http://h:1/v1\"\n\
             deployments = [{ base_url = \"http://h:2/v1\" }]\n",
        )
        .expect_err("both");
        assert!(both.contains("upstreams[0].deployments"), "{both}");
        let neither = validate("name = \"a\"\nkind = \"openai\"\n").expect_err("neither");
        assert!(neither.contains("upstreams[0].base_url"), "{neither}");
        let bad = validate(
            "name = \"a\"\nkind = \"openai\"\ndeployments = [\
             { base_url = \"http://h:1/v1\" }, { base_url = \"ftp://h\" }]\n",
        )
        .expect_err("bad url");
        assert!(
            bad.contains("upstreams[0].deployments[1].base_url"),
            "{bad}"
        );
        let twice = validate(
            "name = \"a\"\nkind = \"openai\"\ndeployments = [\
             { base_url = \"http://h:1/v1\" }, { base_url = \"http://h:1/v1\" }]\n",
        )
        .expect_err("duplicate");
        assert!(twice.contains("listed twice"), "{twice}");
    }

    #[test]
    fn base_urls_split_into_parts() {
        assert_eq!(
            parse_base_url("https://api.openai.com/v1").ok(),
            Some((true, "api.openai.com".into(), 443, "/v1".into()))
        );
        assert_eq!(
            parse_base_url("http://127.0.0.1:8080/api/v1/").ok(),
            Some((false, "127.0.0.1".into(), 8080, "/api/v1".into()))
        );
        assert!(parse_base_url("ftp://x/v1").is_err());
    }
}
