//! Option maps (`#{timeout: 30, env: #{..}}`) read with types checked and unknown keys refused.

use std::collections::BTreeMap;
use std::time::Duration;

use rhai::{Array, Dynamic, EvalAltResult, Map};

use super::bad_input;

type R<T> = Result<T, Box<EvalAltResult>>;

/// A script's option map, checked against the keys a function accepts.
#[derive(Debug)]
pub(crate) struct Opts {
    func: &'static str,
    map: Map,
}

impl Opts {
    pub fn new(func: &'static str, map: Map, allowed: &[&str]) -> R<Self> {
        for k in map.keys() {
            if !allowed.contains(&k.as_str()) {
                return Err(bad_input(format!(
                    "{func}: unknown option `{k}` (expected one of: {})",
                    allowed.join(", ")
                )));
            }
        }
        Ok(Opts { func, map })
    }

    pub fn empty(func: &'static str) -> Self {
        Opts {
            func,
            map: Map::new(),
        }
    }

    fn get(&self, key: &str) -> Option<&Dynamic> {
        self.map.get(key).filter(|v| !v.is_unit())
    }

    fn wrong(&self, key: &str, want: &str, got: &Dynamic) -> Box<EvalAltResult> {
        bad_input(format!(
            "{}: option `{key}` must be {want}, got {}",
            self.func,
            got.type_name()
        ))
    }

    /// Seconds as a number, or a string such as `"5m"`.
    pub fn duration(&self, key: &str) -> R<Option<Duration>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        to_duration(v)
            .map(Some)
            .map_err(|m| bad_input(format!("{}: option `{key}`: {m}", self.func)))
    }

    /// The value as given (not `()`), for options that take more than one type.
    pub fn raw(&self, key: &str) -> Option<&Dynamic> {
        self.get(key)
    }

    pub fn string_list(&self, key: &str) -> R<Option<Vec<String>>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let a = v
            .read_lock::<Array>()
            .ok_or_else(|| self.wrong(key, "an array of strings", v))?;
        a.iter()
            .map(|x| scalar_string(x).ok_or_else(|| self.wrong(key, "an array of strings", x)))
            .collect::<R<Vec<_>>>()
            .map(Some)
    }

    pub fn bool(&self, key: &str) -> R<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .map_err(|_| self.wrong(key, "true or false", v)),
        }
    }

    pub fn int(&self, key: &str) -> R<Option<i64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_int()
                .map(Some)
                .map_err(|_| self.wrong(key, "an integer", v)),
        }
    }

    pub fn string(&self, key: &str) -> R<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) if v.is_string() => Ok(Some(v.to_string())),
            Some(v) => Err(self.wrong(key, "a string", v)),
        }
    }

    pub fn string_map(&self, key: &str) -> R<BTreeMap<String, String>> {
        let Some(v) = self.get(key) else {
            return Ok(BTreeMap::new());
        };
        let m = v
            .read_lock::<Map>()
            .ok_or_else(|| self.wrong(key, "a map of strings", v))?;
        let mut out = BTreeMap::new();
        for (k, v) in m.iter() {
            if !valid_env_name(k) {
                return Err(bad_input(format!(
                    "{}: `{k}` is not a valid environment variable name",
                    self.func
                )));
            }
            out.insert(
                k.to_string(),
                scalar_string(v).ok_or_else(|| self.wrong(key, "a map of strings", v))?,
            );
        }
        Ok(out)
    }

    pub fn int_list(&self, key: &str) -> R<Option<Vec<i64>>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let a = v
            .read_lock::<Array>()
            .ok_or_else(|| self.wrong(key, "an array of integers", v))?;
        a.iter()
            .map(|x| {
                x.as_int()
                    .map_err(|_| self.wrong(key, "an array of integers", x))
            })
            .collect::<R<Vec<_>>>()
            .map(Some)
    }
}

fn valid_env_name(k: &str) -> bool {
    let mut c = k.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

/// Strings, numbers and booleans as text; anything else is refused.
pub(crate) fn scalar_string(v: &Dynamic) -> Option<String> {
    if v.is_string() || v.is_int() || v.is_float() || v.is_bool() || v.is_char() {
        Some(v.to_string())
    } else {
        None
    }
}

/// A number of seconds, or a duration string.
pub(crate) fn to_duration(v: &Dynamic) -> Result<Duration, String> {
    if let Ok(i) = v.as_int() {
        return u64::try_from(i)
            .map(Duration::from_secs)
            .map_err(|_| "must not be negative".to_string());
    }
    if let Ok(f) = v.as_float() {
        return if f >= 0.0 && f.is_finite() {
            Ok(Duration::from_secs_f64(f))
        } else {
            Err("must be a positive number of seconds".into())
        };
    }
    if v.is_string() {
        return crate::inventory::parse_duration(&v.to_string());
    }
    Err(format!(
        "expected seconds or a duration string such as \"5m\", got {}",
        v.type_name()
    ))
}

/// An argv array: every element a string (numbers are accepted and turned into text).
pub(crate) fn argv(func: &str, a: &Array) -> R<Vec<String>> {
    if a.is_empty() {
        return Err(bad_input(format!("{func}: argv is empty")));
    }
    a.iter()
        .enumerate()
        .map(|(i, v)| {
            scalar_string(v).ok_or_else(|| {
                bad_input(format!(
                    "{func}: argv[{i}] must be a string, got {}",
                    v.type_name()
                ))
            })
        })
        .collect()
}
