//! `params(#{..})` with `param::required` and `param::optional`: typed, documented playbook inputs.

use std::sync::Arc;

use rhai::{Dynamic, Engine, EvalAltResult, Map, Module, Position};

use super::errors::DESCRIBE_TOKEN;
use super::{bad_input, def, def_in, RunCtx};

type R<T> = Result<T, Box<EvalAltResult>>;

/// A param declaration made by `param::required` or `param::optional`.
#[derive(Debug, Clone)]
pub struct ParamSpec {
    pub doc: String,
    /// `None`: the param is required.
    pub default: Option<Dynamic>,
}

/// A param as `capstan describe` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ParamInfo {
    pub name: String,
    pub doc: String,
    pub required: bool,
    pub default: Option<serde_json::Value>,
}

fn to_json(d: &Dynamic) -> serde_json::Value {
    rhai::serde::from_dynamic::<serde_json::Value>(d)
        .unwrap_or_else(|_| serde_json::Value::String(d.to_string()))
}

/// Converts a given value (a string from `-p k=v`, or JSON from a scenario or the API) to the
/// type of the param's default.
fn coerce(
    name: &str,
    given: &serde_json::Value,
    default: Option<&Dynamic>,
) -> Result<Dynamic, String> {
    use serde_json::Value as J;
    let text = match given {
        J::String(s) => Some(s.as_str()),
        _ => None,
    };
    let as_json = || rhai::serde::to_dynamic(given).map_err(|e| e.to_string());
    let Some(d) = default else {
        return match text {
            Some(t) => Ok(t.into()),
            None => as_json(),
        };
    };
    let bad = |want: &str| format!("param `{name}` must be {want}, got {given}");
    if d.is_bool() {
        return match (given, text) {
            (J::Bool(b), _) => Ok((*b).into()),
            (_, Some("true")) => Ok(true.into()),
            (_, Some("false")) => Ok(false.into()),
            _ => Err(bad("true or false")),
        };
    }
    if d.is_int() {
        return match (given, text) {
            (J::Number(n), _) if n.is_i64() => {
                Ok(Dynamic::from_int(n.as_i64().unwrap_or_default()))
            }
            (_, Some(t)) => t
                .trim()
                .parse::<i64>()
                .map(Dynamic::from_int)
                .map_err(|_| bad("an integer")),
            _ => Err(bad("an integer")),
        };
    }
    if d.is_float() {
        return match (given, text) {
            (J::Number(n), _) => Ok(Dynamic::from_float(n.as_f64().unwrap_or_default())),
            (_, Some(t)) => t
                .trim()
                .parse::<f64>()
                .map(Dynamic::from_float)
                .map_err(|_| bad("a number")),
            _ => Err(bad("a number")),
        };
    }
    if d.is_string() {
        return match given {
            J::String(s) => Ok(s.clone().into()),
            J::Number(_) | J::Bool(_) => Ok(given.to_string().into()),
            _ => Err(bad("a string")),
        };
    }
    if d.is_array() {
        return match (given, text) {
            (J::Array(_), _) => as_json(),
            (_, Some(t)) if t.trim_start().starts_with('[') => serde_json::from_str::<J>(t)
                .map_err(|e| format!("param `{name}`: invalid JSON array: {e}"))
                .and_then(|j| rhai::serde::to_dynamic(j).map_err(|e| e.to_string())),
            (_, Some(t)) => Ok(t
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Dynamic::from(s.to_string()))
                .collect::<rhai::Array>()
                .into()),
            _ => Err(bad("an array (JSON, or comma-separated)")),
        };
    }
    if d.is_map() {
        return match (given, text) {
            (J::Object(_), _) => as_json(),
            (_, Some(t)) => serde_json::from_str::<J>(t)
                .map_err(|e| format!("param `{name}`: invalid JSON object: {e}"))
                .and_then(|j| rhai::serde::to_dynamic(j).map_err(|e| e.to_string())),
            _ => Err(bad("a map (JSON object)")),
        };
    }
    as_json()
}

pub(super) fn register(engine: &mut Engine, run: &Arc<RunCtx>) {
    engine.register_type_with_name::<ParamSpec>("Param");

    let mut m = Module::new();
    def_in(
        &mut m,
        "required",
        &["doc: String", "Param"],
        r#"
Declares a required param. Its value is a string unless given as JSON by a scenario or the API.

```rhai
let p = params(#{ release: param::required("directory of the unpacked new release") });
```"#,
        |doc: &str| ParamSpec {
            doc: doc.to_string(),
            default: None,
        },
    );
    def_in(
        &mut m,
        "optional",
        &["value: ?", "doc: String", "Param"],
        r#"
Declares a param with a default. A given value is converted to the default's type
(bool, int, float, string, array or map).

```rhai
let p = params(#{ batch: param::optional(1, "hosts upgraded at a time") });
```"#,
        |value: Dynamic, doc: &str| ParamSpec {
            doc: doc.to_string(),
            default: Some(value),
        },
    );
    engine.register_static_module("param", m.into());

    let r = run.clone();
    def(
        engine,
        "params",
        &["spec: Map", "Map"],
        r#"
Declares the playbook's params and returns their values. Each entry is `param::required(doc)`,
`param::optional(value, doc)`, or a plain default value (no doc: `capstan check` warns).
Unknown given params and missing required ones are errors that list what the playbook takes.
Call it once, before acting on any host.

```rhai
let p = params(#{
    target: param::optional("1.1.0", "version to install"),
    dry: false,
});
log(`target ${p.target}`);
```"#,
        move |spec: Map| -> R<Map> {
            let mut infos = Vec::new();
            for (name, v) in &spec {
                let (doc, default) = match v.clone().try_cast::<ParamSpec>() {
                    Some(p) => (p.doc, p.default),
                    None => (String::new(), Some(v.clone())),
                };
                infos.push((name.to_string(), doc, default));
            }
            {
                let mut slot = crate::lock(&r.params_spec);
                if slot.is_some() {
                    return Err(bad_input("params() may be called only once"));
                }
                *slot = Some(
                    infos
                        .iter()
                        .map(|(n, doc, d)| ParamInfo {
                            name: n.clone(),
                            doc: doc.clone(),
                            required: d.is_none(),
                            default: d.as_ref().map(to_json),
                        })
                        .collect(),
                );
            }
            if r.describe_only {
                return Err(Box::new(EvalAltResult::ErrorTerminated(
                    DESCRIBE_TOKEN.into(),
                    Position::NONE,
                )));
            }
            let takes = || {
                infos
                    .iter()
                    .map(|(n, ..)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            for k in r.params_in.keys() {
                if !spec.contains_key(k.as_str()) {
                    return Err(bad_input(format!(
                        "unknown param `{k}`; this playbook takes: {}",
                        takes()
                    )));
                }
            }
            let mut out = Map::new();
            let mut missing = Vec::new();
            for (name, doc, default) in &infos {
                let value = match r.params_in.get(name) {
                    Some(given)
                        if default.is_none()
                            && given.as_str().is_some_and(|v| v.trim().is_empty()) =>
                    {
                        return Err(bad_input(format!(
                            "param `{name}` is required and was given empty{}",
                            if doc.is_empty() {
                                String::new()
                            } else {
                                format!(" ({doc})")
                            }
                        )));
                    }
                    Some(given) => coerce(name, given, default.as_ref()).map_err(bad_input)?,
                    None => match default {
                        Some(d) => d.clone(),
                        None => {
                            missing.push(if doc.is_empty() {
                                name.clone()
                            } else {
                                format!("{name} ({doc})")
                            });
                            continue;
                        }
                    },
                };
                out.insert(name.into(), value);
            }
            if !missing.is_empty() {
                return Err(bad_input(format!(
                    "missing required param(s): {}; give them with -p NAME=VALUE",
                    missing.join(", ")
                )));
            }
            let json = to_json(&Dynamic::from_map(out.clone()));
            *crate::lock(&r.params_out) = Some(json);
            Ok(out)
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn coercion_follows_the_default() {
        let d = |v: Dynamic| Some(v);
        assert!(coerce("a", &json!("true"), d(false.into()).as_ref())
            .unwrap()
            .as_bool()
            .unwrap());
        assert_eq!(
            coerce("a", &json!("42"), d(Dynamic::from_int(1)).as_ref())
                .unwrap()
                .as_int()
                .unwrap(),
            42
        );
        assert_eq!(
            coerce("a", &json!("yes"), d(false.into()).as_ref()).unwrap_err(),
            "param `a` must be true or false, got \"yes\""
        );
        let arr = coerce("a", &json!("x, y"), d(rhai::Array::new().into()).as_ref()).unwrap();
        assert_eq!(arr.into_array().unwrap().len(), 2);
        assert_eq!(coerce("a", &json!(7), None).unwrap().as_int().unwrap(), 7);
    }
}
