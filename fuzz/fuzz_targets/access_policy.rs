//! Routing and authorisation (`condenser::access`): a request's key, method, path,
//! `x-condenser-route` and model, drawn from the input, decided by the proxy's policy and checked
//! against a reference written from SECURITY.md's statement of what a client key can reach:
//! - a path with a `..`, `.` or empty segment (after one percent-decoding) is never accepted;
//! - a key never gets a route outside its `routes`, never names a route without `route_header`,
//!   and a named route serves the model (its globs match, or it is the default route of an
//!   unmatched model);
//! - a passthrough call is allowed only where the route's and the key's lists both allow it.
#![no_main]

use condenser::access;
use condenser::config::Config;
use condenser::routing::Router;
use libfuzzer_sys::fuzz_target;

const CONFIG: &str = r#"
[server]
default_route = "fallback"
[[upstreams]]
name = "u"
kind = "openai"
base_url = "http://127.0.0.1:1/v1"
[[routes]]
name = "cheap"
models = ["gpt-4o-mini", "gpt-3*"]
upstream = "u"
passthrough = ["POST /v1/embeddings", "GET /v1/files/*"]
[[routes]]
name = "premium"
models = ["o1-*", "gpt-4o*"]
upstream = "u"
[[routes]]
name = "fallback"
upstream = "u"
passthrough = ["* /v1/**"]
[auth]
[[auth.keys]]
name = "limited"
sha256 = "0000000000000000000000000000000000000000000000000000000000000001"
routes = ["cheap"]
passthrough = ["POST /v1/embeddings", "* /v1/files/**"]
[[auth.keys]]
name = "router"
sha256 = "0000000000000000000000000000000000000000000000000000000000000002"
route_header = true
"#;

fn config() -> &'static Config {
    static CONFIG_ONCE: std::sync::OnceLock<Config> = std::sync::OnceLock::new();
    CONFIG_ONCE.get_or_init(|| condenser::config::from_toml_str(CONFIG).expect("config"))
}

/// The reference: whether the decoded path holds a segment that leaves its folder.
fn leaves_folder(path: &str) -> bool {
    let Some(decoded) = access::percent_decode(path) else {
        return true;
    };
    let segments: Vec<&str> = decoded.split('/').skip(1).collect();
    segments.iter().enumerate().any(|(i, s)| {
        *s == ".." || *s == "." || (s.is_empty() && i + 1 < segments.len())
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut fields = text.split('\n');
    let key_choice = fields.next().unwrap_or("").len() % 3;
    let method = fields.next().unwrap_or("GET");
    let path = fields.next().unwrap_or("/v1/files");
    let header = fields.next().filter(|h| !h.is_empty());
    let model = fields.next().filter(|m| !m.is_empty());

    let cfg = config();
    let keys = cfg.auth.as_ref().expect("auth");
    let client = match key_choice {
        0 => None,
        n => Some(&keys[n - 1]),
    };
    let router = Router::new(cfg.routes.clone(), cfg.server.default_route);

    if access::check_path(path).is_ok() {
        assert!(!leaves_folder(path), "accepted {path:?}");
    }
    let Ok(index) = access::route_for(&router, client, header, model) else {
        return;
    };
    let route = router.route(index);
    if let Some(allowed) = client.and_then(|c| c.routes.as_ref()) {
        assert!(allowed.contains(&route.name), "{} outside {allowed:?}", route.name);
    }
    if header.is_some() {
        assert!(client.is_none_or(|c| c.route_header), "header without permission");
        if let Some(model) = model {
            let matched_elsewhere = router.routes().iter().any(|r| r.models.is_match(model));
            assert!(
                route.models.is_match(model)
                    || (Some(index) == cfg.server.default_route && !matched_elsewhere),
                "{} does not serve {model}",
                route.name
            );
        }
    }
    if access::may_pass_through(route, true, client, method, path).is_ok() {
        let key = client.expect("with [auth], no key passes nothing");
        let by_route = route.passthrough.as_ref().expect("no list: none");
        let by_key = key.passthrough.as_ref().expect("no list: none");
        assert!(by_route.allows(method, path) && by_key.allows(method, path));
    }
});
