//! Live per-route control: the changes an operator makes through the admin API
//! (`PATCH /admin/routes/{name}`) on top of `proxy.toml` — a route's `compression.enabled`,
//! `compression.compressor`, `compression.target_ratio` and `shadow.sample_rate` — validated like
//! the file, kept in `server.overrides_file` (or, shared by replicas, `server.overrides_store`:
//! `server::shared_overrides`) so they survive restarts, and applied whenever the routes are
//! built (start-up, reload, patch). A `null` in a patch clears that override.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::compress::CompressorKind;
use crate::config::{ConfigError, Rollout, Route};

/// The overridable fields of one route; `None` keeps the file's value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compressor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ratio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_rate: Option<f64>,
}

impl RouteOverride {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Every route's overrides, by route name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    #[serde(default)]
    pub routes: BTreeMap<String, RouteOverride>,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    Invalid(#[from] ConfigError),
    #[error("no route named `{0}`")]
    NoRoute(String),
    #[error("cannot read or write the overrides file {path}: {reason}")]
    Io { path: String, reason: String },
}

impl Overrides {
    /// Reads `path`; a missing file is no overrides.
    pub fn load(path: &Path) -> Result<Self, ControlError> {
        let io = |reason: String| ControlError::Io {
            path: path.display().to_string(),
            reason,
        };
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| io(e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(io(e.to_string())),
        }
    }

    /// The overrides as one JSON document (what a shared store keeps).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    /// Parses a document written by [`Overrides::to_json`].
    pub fn from_json(document: &str) -> Result<Self, ControlError> {
        serde_json::from_str(document).map_err(|e| ControlError::Io {
            path: "server.overrides_store".into(),
            reason: e.to_string(),
        })
    }

    /// Writes `path` atomically (a temporary file renamed over it): a crash never leaves half
    /// a file.
    pub fn save(&self, path: &Path) -> Result<(), ControlError> {
        let io = |reason: String| ControlError::Io {
            path: path.display().to_string(),
            reason,
        };
        let text = serde_json::to_vec_pretty(self).map_err(|e| io(e.to_string()))?;
        let tmp = path.with_extension("json.tmp");
        // Synced before the rename, so a power loss leaves the old file or the new one, never
        // an empty one.
        let mut file = std::fs::File::create(&tmp).map_err(|e| io(e.to_string()))?;
        std::io::Write::write_all(&mut file, &text).map_err(|e| io(e.to_string()))?;
        file.sync_all().map_err(|e| io(e.to_string()))?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(|e| io(e.to_string()))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // The rename itself is durable once the folder is synced.
            let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    }

    /// Applies a patch shaped like the route's table in the file, e.g.
    /// `{"compression": {"enabled": false}}`, to the override of `route`, checking it against
    /// the route as the file defines it. `available` says whether a compressor can run here.
    pub fn patch(
        &mut self,
        file_routes: &[Route],
        route: &str,
        patch: &Value,
        available: &dyn Fn(CompressorKind) -> bool,
    ) -> Result<(), ControlError> {
        let Some(base) = file_routes.iter().find(|r| r.name == route) else {
            return Err(ControlError::NoRoute(route.to_string()));
        };
        let invalid = |key: &str, reason: String| {
            ControlError::Invalid(ConfigError::invalid(key.to_string(), reason))
        };
        let Value::Object(sections) = patch else {
            return Err(invalid(
                "<body>",
                "a JSON object like {\"compression\": {\"enabled\": false}}".into(),
            ));
        };
        let mut next = self.routes.get(route).cloned().unwrap_or_default();
        for (section, fields) in sections {
            let Value::Object(fields) = fields else {
                return Err(invalid(section, "must be an object".into()));
            };
            for (field, value) in fields {
                let key = format!("{section}.{field}");
                let clear = value.is_null();
                match (section.as_str(), field.as_str()) {
                    ("compression", "enabled") => {
                        next.enabled = if clear {
                            None
                        } else {
                            Some(
                                value
                                    .as_bool()
                                    .ok_or_else(|| invalid(&key, "must be true or false".into()))?,
                            )
                        };
                    }
                    ("compression", "compressor") => {
                        next.compressor = if clear {
                            None
                        } else {
                            let name = value
                                .as_str()
                                .ok_or_else(|| invalid(&key, "must be a compressor name".into()))?;
                            let kind = CompressorKind::named(name).ok_or_else(|| {
                                invalid(
                                    &key,
                                    format!(
                                        "unknown compressor `{name}`; registered: {}",
                                        crate::compress::registry::names().join(", ")
                                    ),
                                )
                            })?;
                            if !available(kind) {
                                return Err(invalid(&key, format!("`{name}` needs a [compressors.{name}] section (and a restart)")));
                            }
                            Some(kind.name().to_string())
                        };
                    }
                    ("compression", "target_ratio") => {
                        next.target_ratio = if clear {
                            None
                        } else {
                            let ratio = value.as_f64().filter(|r| *r > 0.0 && *r <= 1.0);
                            Some(ratio.ok_or_else(|| {
                                invalid(&key, format!("must be in (0, 1], got {value}"))
                            })?)
                        };
                    }
                    ("shadow", "sample_rate") => {
                        next.sample_rate = if clear {
                            None
                        } else {
                            if base.shadow.is_none() {
                                return Err(invalid(
                                    &key,
                                    "this route has no [routes.shadow] section".into(),
                                ));
                            }
                            let rate = value.as_f64().filter(|r| (0.0..=1.0).contains(r));
                            Some(rate.ok_or_else(|| {
                                invalid(&key, format!("must be in [0, 1], got {value}"))
                            })?)
                        };
                    }
                    _ => {
                        return Err(invalid(
                            &key,
                            "not changeable at runtime; changeable: compression.enabled, \
                             compression.compressor, compression.target_ratio, shadow.sample_rate"
                                .into(),
                        ))
                    }
                }
            }
        }
        if next.is_empty() {
            self.routes.remove(route);
        } else {
            self.routes.insert(route.to_string(), next);
        }
        Ok(())
    }

    /// The routes with these overrides applied. Overrides of routes no longer in the file are
    /// ignored (and reported by [`Overrides::orphans`]).
    pub fn apply(&self, file_routes: &[Route]) -> Vec<Route> {
        let mut routes = file_routes.to_vec();
        for route in &mut routes {
            let Some(o) = self.routes.get(&route.name) else {
                continue;
            };
            if let Some(enabled) = o.enabled {
                route.compression.enabled = enabled;
            }
            if let Some(kind) = o.compressor.as_deref().and_then(CompressorKind::named) {
                route.compression.compressor = kind;
            }
            if let Some(ratio) = o.target_ratio {
                route.compression.target_ratio = ratio;
            }
            if let (Some(rate), Some(shadow)) = (o.sample_rate, route.shadow.as_mut()) {
                shadow.sample_rate = rate;
            }
        }
        routes
    }

    /// Routes overridden here that the file no longer defines.
    pub fn orphans(&self, file_routes: &[Route]) -> Vec<String> {
        self.routes
            .keys()
            .filter(|name| !file_routes.iter().any(|r| &r.name == *name))
            .cloned()
            .collect()
    }

    /// A route's effective settings and where each came from (`file`, `override`, or
    /// `auto-rollout` for `enabled` on an auto-rollout route, with what it serves now).
    pub fn describe(&self, route: &Route, serving_compressed: Option<bool>) -> Value {
        let o = self.routes.get(&route.name).cloned().unwrap_or_default();
        let source = |set: bool| if set { "override" } else { "file" };
        let c = &route.compression;
        let (enabled, enabled_source) = match (c.rollout, serving_compressed) {
            (Rollout::Auto { .. }, Some(serving)) => (serving, "auto-rollout"),
            (Rollout::Auto { .. }, None) => (false, "auto-rollout"),
            (Rollout::Manual, _) => (c.enabled, source(o.enabled.is_some())),
        };
        json!({
            "name": route.name,
            "models": route.model_patterns,
            "compression": {
                "enabled": enabled,
                "compressor": c.compressor.name(),
                "target_ratio": c.target_ratio,
                "rollout": match c.rollout { Rollout::Manual => "manual", Rollout::Auto { .. } => "auto" },
            },
            "shadow": route.shadow.as_ref().map(|s| json!({"sample_rate": s.sample_rate})),
            "source": {
                "compression.enabled": enabled_source,
                "compression.compressor": source(o.compressor.is_some()),
                "compression.target_ratio": source(o.target_ratio.is_some()),
                "shadow.sample_rate": source(o.sample_rate.is_some()),
            },
        })
    }
}
