//! `CONDENSER__SECTION__KEY` environment overrides. Sections other than `routes` are merged by
//! the `config` crate; routes are a list, which that crate can only address by position (and a
//! `ROUTES__0__…` variable turns the list into a table the file then fails to load as), so route
//! variables are applied here, by route name: `CONDENSER__ROUTES__<NAME>__COMPRESSION__ENABLED`.
//! `<NAME>` is the route's name upper-cased with every character other than a letter or digit
//! written `_` (`long-docs` → `LONG_DOCS`). A variable naming no route is an error naming it.

use serde_json::{Map, Value};

use super::ConfigError;

const PREFIX: &str = "CONDENSER__";
const ROUTES: &str = "CONDENSER__ROUTES__";

/// The environment split in two: variables the `config` crate merges (prefix stripped as it
/// expects them, whole names kept), and route variables, applied by [`apply_route_overrides`].
pub fn split(
    vars: impl Iterator<Item = (String, String)>,
) -> (config::Map<String, String>, Vec<(String, String)>) {
    let mut merged = config::Map::new();
    let mut routes = Vec::new();
    for (name, value) in vars {
        if name.to_ascii_uppercase().starts_with(ROUTES) {
            routes.push((name, value));
        } else if name.to_ascii_uppercase().starts_with(PREFIX) {
            merged.insert(name, value);
        }
    }
    (merged, routes)
}

/// How a route name is written in a variable name.
fn env_name(route: &str) -> String {
    route
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// A variable's value as the file would have written it: a boolean, a number, or a string.
fn parse_value(raw: &str) -> Value {
    match raw {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => raw
            .parse::<i64>()
            .map(Value::from)
            .or_else(|_| raw.parse::<f64>().map(Value::from))
            .unwrap_or_else(|_| Value::String(raw.to_string())),
    }
}

/// Sets each route variable's key in the merged tree's `routes` list.
pub fn apply_route_overrides(
    tree: &mut Value,
    vars: &[(String, String)],
) -> Result<(), ConfigError> {
    for (variable, raw) in vars {
        let rest = &variable[ROUTES.len()..];
        let mut parts = rest.split("__");
        let selector = parts.next().unwrap_or_default();
        let path: Vec<String> = parts.map(str::to_ascii_lowercase).collect();
        let routes = tree
            .get_mut("routes")
            .and_then(Value::as_array_mut)
            .map(|r| r.as_mut_slice())
            .unwrap_or_default();
        let names: Vec<String> = routes
            .iter()
            .filter_map(|r| r.get("name").and_then(Value::as_str))
            .map(env_name)
            .collect();
        let Some(index) = names.iter().position(|n| n.eq_ignore_ascii_case(selector)) else {
            return Err(ConfigError::invalid(
                variable.clone(),
                format!(
                    "no route is called `{selector}` (routes are addressed by name: {})",
                    names.join(", ")
                ),
            ));
        };
        if path.is_empty() || path.iter().any(String::is_empty) {
            return Err(ConfigError::invalid(
                variable.clone(),
                "name a key of the route, e.g. CONDENSER__ROUTES__<NAME>__COMPRESSION__ENABLED",
            ));
        }
        let mut node = &mut routes[index];
        for key in &path[..path.len() - 1] {
            let Value::Object(map) = node else {
                return Err(ConfigError::invalid(
                    variable.clone(),
                    format!("`{key}` is not a table"),
                ));
            };
            node = map
                .entry(key.clone())
                .or_insert_with(|| Value::Object(Map::new()));
        }
        let Value::Object(map) = node else {
            return Err(ConfigError::invalid(
                variable.clone(),
                "the key's parent is not a table",
            ));
        };
        let last = path[path.len() - 1].clone();
        map.insert(last, parse_value(raw));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn route_variables_address_routes_by_name() {
        let mut tree = json!({"routes": [
            {"name": "chat", "compression": {"enabled": true}},
            {"name": "long-docs"}
        ]});
        let vars = vec![
            (
                "CONDENSER__ROUTES__LONG_DOCS__COMPRESSION__TARGET_RATIO".to_string(),
                "0.3".to_string(),
            ),
            (
                "CONDENSER__ROUTES__CHAT__COMPRESSION__ENABLED".to_string(),
                "false".to_string(),
            ),
        ];
        apply_route_overrides(&mut tree, &vars).expect("applied");
        assert_eq!(tree["routes"][0]["compression"]["enabled"], false);
        assert_eq!(tree["routes"][1]["compression"]["target_ratio"], 0.3);
        let bad = vec![(
            "CONDENSER__ROUTES__0__COMPRESSION__ENABLED".to_string(),
            "false".to_string(),
        )];
        let err = apply_route_overrides(&mut tree, &bad).expect_err("no route 0");
        assert!(
            err.to_string()
                .contains("CONDENSER__ROUTES__0__COMPRESSION__ENABLED"),
            "{err}"
        );
    }
}
