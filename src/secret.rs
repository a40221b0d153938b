//! Secrets by reference (`{ env = ".." }`, `{ file = ".." }`), their resolution, and redaction.

use std::borrow::Cow;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, RwLock};

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// Where a secret comes from. Inline values are refused on purpose: inventories get committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    Env(String),
    File(String),
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SecretRef;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(r#"a secret reference: { env = "NAME" } or { file = "PATH" }"#)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<SecretRef, E> {
                Err(E::custom(
                    r#"inline secrets are not allowed; use { env = "NAME" } or { file = "PATH" }"#,
                ))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<SecretRef, A::Error> {
                let mut found: Option<SecretRef> = None;
                while let Some(k) = m.next_key::<String>()? {
                    let v: String = m.next_value()?;
                    let r = match k.as_str() {
                        "env" => SecretRef::Env(v),
                        "file" => SecretRef::File(v),
                        other => {
                            return Err(de::Error::unknown_field(other, &["env", "file"]));
                        }
                    };
                    if found.is_some() {
                        return Err(de::Error::custom(
                            "a secret reference takes exactly one of `env` or `file`",
                        ));
                    }
                    found = Some(r);
                }
                found.ok_or_else(|| de::Error::custom("a secret reference needs `env` or `file`"))
            }
        }
        d.deserialize_any(V)
    }
}

impl SecretRef {
    /// Reads the secret. Files are read relative to `base` and lose one trailing newline.
    pub fn resolve(&self, base: &Path) -> Result<Secret, String> {
        match self {
            SecretRef::Env(name) => std::env::var(name)
                .map(Secret::new)
                .map_err(|_| format!("environment variable {name} is not set")),
            SecretRef::File(p) => {
                let path = crate::inventory::expand_path(p, base);
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?;
                let text = text.strip_suffix('\n').unwrap_or(&text);
                Ok(Secret::new(
                    text.strip_suffix('\r').unwrap_or(text).to_string(),
                ))
            }
        }
    }
}

/// A resolved secret value. It never prints: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn new(v: impl Into<String>) -> Self {
        Secret(Arc::from(v.into()))
    }
    /// The value, for the one place that must hand it to a server.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}
impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Replaces every known secret value with `***` in text bound for logs, events and reports.
#[derive(Clone, Default)]
pub struct Redactor {
    values: Arc<RwLock<Vec<String>>>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Redactor(..)")
    }
}

impl Redactor {
    /// Remembers a secret value. Very short values are ignored: redacting "1" would shred every line.
    pub fn add(&self, s: &Secret) {
        let v = s.expose();
        if v.len() < 3 {
            return;
        }
        let mut vals = self.values.write().unwrap_or_else(|e| e.into_inner());
        if !vals.iter().any(|x| x == v) {
            vals.push(v.to_string());
            // Longest first, so a secret that contains another is replaced whole.
            vals.sort_by_key(|b| std::cmp::Reverse(b.len()));
        }
    }

    /// Whether `text` holds a known secret value.
    pub fn contains_secret(&self, text: &str) -> bool {
        let vals = self.values.read().unwrap_or_else(|e| e.into_inner());
        vals.iter().any(|v| text.contains(v.as_str()))
    }

    pub fn redact(&self, text: &str) -> String {
        self.redact_cow(Cow::Borrowed(text)).into_owned()
    }

    /// As `redact`, with no copy of a text that holds no secret.
    pub fn redact_cow<'a>(&self, text: Cow<'a, str>) -> Cow<'a, str> {
        let vals = self.values.read().unwrap_or_else(|e| e.into_inner());
        let mut out = text;
        for v in vals.iter() {
            if out.contains(v.as_str()) {
                out = Cow::Owned(out.replace(v.as_str(), "***"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct W {
        s: SecretRef,
    }

    #[test]
    fn inline_secret_is_refused_with_a_hint() {
        let e = toml::from_str::<W>("s = \"hunter2\"").err().unwrap();
        assert!(e.message().contains("inline secrets are not allowed"));
    }

    #[test]
    fn env_and_file_parse() {
        let w: W = toml::from_str("s = { env = \"X\" }").unwrap();
        assert_eq!(w.s, SecretRef::Env("X".into()));
        let e = toml::from_str::<W>("s = { vault = \"X\" }").err().unwrap();
        assert!(
            e.message().contains("unknown field `vault`"),
            "{}",
            e.message()
        );
    }

    #[test]
    fn redaction_replaces_longest_first() {
        let r = Redactor::default();
        r.add(&Secret::new("abc"));
        r.add(&Secret::new("abcdef"));
        assert_eq!(r.redact("x abcdef y abc"), "x *** y ***");
        assert_eq!(format!("{:?}", Secret::new("zzz")), "***");
    }
}
