//! Route selection, in order: the `x-condenser-route` header names a route; else the first route
//! whose `models` globs match the request's `model`; else `server.default_route`. Requests with no
//! model at all (`GET /v1/files`, ...) fall back to the default route, then to the first route.
//! A route named in the header must serve the request's model (its globs match it, or selection
//! by model would pick it anyway): the header chooses among the routes of a model, it never
//! reaches a model those routes do not serve. Whether a client may send the header is `access`'s
//! decision.

use crate::config::Route;
use crate::error::ProxyError;

pub struct Router {
    routes: Vec<Route>,
    default: Option<usize>,
}

impl Router {
    pub fn new(routes: Vec<Route>, default: Option<usize>) -> Self {
        Self { routes, default }
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    pub fn route(&self, index: usize) -> &Route {
        &self.routes[index]
    }

    pub fn select(&self, header: Option<&str>, model: Option<&str>) -> Result<usize, ProxyError> {
        if let Some(name) = header {
            let index = self
                .routes
                .iter()
                .position(|r| r.name == name)
                .ok_or_else(|| ProxyError::UnknownRoute(crate::error::clip(name).to_string()))?;
            return match model {
                Some(model)
                    if !self.routes[index].models.is_match(model)
                        && self.by_model(model) != Some(index) =>
                {
                    Err(ProxyError::RouteModelMismatch {
                        route: name.to_string(),
                        model: model.to_string(),
                    })
                }
                _ => Ok(index),
            };
        }
        match model {
            Some(model) => self
                .by_model(model)
                .ok_or_else(|| ProxyError::NoRoute(crate::error::clip(model).to_string())),
            None => self
                .default
                .or(if self.routes.is_empty() {
                    None
                } else {
                    Some(0)
                })
                .ok_or_else(|| ProxyError::NoRoute("(none)".into())),
        }
    }

    /// The first route whose globs match `model`, else the default route.
    fn by_model(&self, model: &str) -> Option<usize> {
        self.routes
            .iter()
            .position(|r| r.models.is_match(model))
            .or(self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_toml_str;

    fn router(default: bool) -> Router {
        let default_line = if default {
            "default_route = \"fallback\""
        } else {
            ""
        };
        let cfg = from_toml_str(&format!(
            r#"
            [server]
            {default_line}
            [[upstreams]]
            name = "u"
            kind = "openai"
            base_url = "http://127.0.0.1:1/v1"
            [[routes]]
            name = "gpt"
            models = ["gpt-4o*", "openai/*"]
            upstream = "u"
            [[routes]]
            name = "any-gpt"
            models = ["gpt-*"]
            upstream = "u"
            [[routes]]
            name = "fallback"
            upstream = "u"
            "#
        ))
        .expect("config");
        Router::new(cfg.routes, cfg.server.default_route)
    }

    #[test]
    fn first_matching_glob_wins_then_header_then_default() {
        let r = router(true);
        assert_eq!(r.select(None, Some("gpt-4o-mini")).ok(), Some(0));
        assert_eq!(r.select(None, Some("openai/o3")).ok(), Some(0));
        assert_eq!(r.select(None, Some("gpt-3.5-turbo")).ok(), Some(1));
        assert_eq!(r.select(None, Some("claude-3")).ok(), Some(2));
        assert_eq!(r.select(Some("any-gpt"), Some("gpt-4o")).ok(), Some(1));
        assert!(matches!(
            r.select(Some("nope"), None),
            Err(ProxyError::UnknownRoute(_))
        ));
    }

    #[test]
    fn a_header_named_route_must_serve_the_model() {
        let r = router(true);
        // `gpt` serves gpt-4o*, not o1-pro: naming it does not reach o1-pro.
        assert!(matches!(
            r.select(Some("gpt"), Some("o1-pro")),
            Err(ProxyError::RouteModelMismatch { .. })
        ));
        // The default route serves what no glob matches, and only that.
        assert_eq!(r.select(Some("fallback"), Some("o1-pro")).ok(), Some(2));
        assert!(r.select(Some("fallback"), Some("gpt-4o")).is_err());
        // No model (a passthrough without a JSON body): any named route.
        assert_eq!(r.select(Some("gpt"), None).ok(), Some(0));
    }

    #[test]
    fn a_huge_model_name_is_clipped_in_the_error() {
        let r = router(false);
        let model = "m".repeat(1 << 20);
        let err = r.select(None, Some(&model)).expect_err("no route");
        assert!(err.to_string().len() < 300, "{}", err.to_string().len());
    }

    #[test]
    fn no_match_without_default_names_the_model() {
        let r = router(false);
        let err = r.select(None, Some("claude-3")).expect_err("no route");
        assert_eq!(err.status(), 404);
        assert!(err.to_string().contains("claude-3"));
        assert_eq!(r.select(None, None).ok(), Some(0));
    }
}
