//! Playbooks: from a file, from text, or shipped inside the binary; and their header.

use std::path::{Path, PathBuf};

use crate::api::ParamInfo;
use crate::error::{Error, Result};

/// The shipped playbooks that are no product's (each product's is in the registry,
/// `sim::products`).
const GENERIC: &[(&str, &str)] = &[("preflight", include_str!("../../playbooks/preflight.rhai"))];

/// Names and sources of the shipped playbooks, by name: every product's, and the generic ones.
pub fn shipped_playbooks() -> &'static [(&'static str, &'static str)] {
    static ALL: std::sync::OnceLock<Vec<(&str, &str)>> = std::sync::OnceLock::new();
    ALL.get_or_init(|| {
        let mut all: Vec<(&str, &str)> = crate::sim::products::PRODUCTS
            .iter()
            .map(|p| (p.name, p.playbook))
            .chain(GENERIC.iter().copied())
            .collect();
        all.sort_by_key(|(n, _)| *n);
        all
    })
}

/// A playbook's source and where it came from.
#[derive(Debug, Clone)]
pub struct Playbook {
    /// How errors name the file: the path as given, or `playbooks/<name>.rhai` when shipped.
    pub name: String,
    pub source: String,
    /// Where `import "x"` looks for `x.rhai` after the stdlib.
    pub dir: Option<PathBuf>,
    /// Where to read it again (resume): a file's absolute path, or `shipped:NAME`.
    pub path: Option<PathBuf>,
}

/// What `capstan describe` shows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PlaybookInfo {
    pub name: String,
    pub header: String,
    pub params: Vec<ParamInfo>,
}

impl Playbook {
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let source = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Ok(Playbook {
            name: path.display().to_string(),
            source,
            dir: Some(
                path.parent()
                    .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
            ),
            path: Some(std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())),
        })
    }

    /// The playbook a journaled run ran, as it ran (imports resolve beside its file, if any).
    pub fn from_journal(row: &crate::journal::RunRow) -> Self {
        let path = row
            .playbook_path
            .as_deref()
            .filter(|p| !p.starts_with("shipped:"))
            .map(PathBuf::from);
        Playbook {
            name: row.playbook.clone(),
            source: row.playbook_source.clone(),
            dir: path
                .as_ref()
                .and_then(|p| p.parent().map(Path::to_path_buf)),
            path: row.playbook_path.as_deref().map(PathBuf::from),
        }
    }

    /// The playbook a journaled run names, read again now: its file, or the shipped one.
    pub fn reload(row: &crate::journal::RunRow) -> Result<Self> {
        match row.playbook_path.as_deref() {
            Some(p) if p.starts_with("shipped:") => Self::shipped(&p["shipped:".len()..])
                .ok_or_else(|| Error::Usage(format!("this capstan ships no playbook `{p}`"))),
            Some(p) => Self::from_file(p),
            None => Err(Error::Usage(format!(
                "run {} ran a playbook given as text; give it again (PLAYBOOK)",
                row.id
            ))),
        }
    }

    pub fn from_source(name: &str, source: &str) -> Self {
        Playbook {
            name: name.to_string(),
            source: source.to_string(),
            dir: None,
            path: None,
        }
    }

    /// A shipped playbook by name.
    pub fn shipped(name: &str) -> Option<Self> {
        shipped_playbooks()
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(n, s)| Playbook {
                name: format!("playbooks/{n}.rhai"),
                source: s.to_string(),
                dir: None,
                path: Some(PathBuf::from(format!("shipped:{n}"))),
            })
    }

    /// A path if it exists, else a shipped playbook by name; the error lists the shipped ones.
    pub fn load(name_or_path: &str) -> Result<Self> {
        let p = Path::new(name_or_path);
        if p.exists() {
            return Self::from_file(p);
        }
        Self::shipped(name_or_path).ok_or_else(|| {
            Error::Usage(format!(
                "no playbook file `{name_or_path}` and no shipped playbook of that name (shipped: {})",
                shipped_playbooks().iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            ))
        })
    }

    /// The comment block at the top of the file: purpose, params, the vendor doc it follows.
    pub fn header(&self) -> String {
        self.source
            .lines()
            .take_while(|l| l.trim_start().starts_with("//"))
            .map(|l| {
                let t = l
                    .trim_start()
                    .trim_start_matches("//!")
                    .trim_start_matches("//");
                t.strip_prefix(' ').unwrap_or(t).to_string()
            })
            .collect::<Vec<_>>()
            .join("\n")
            .trim()
            .to_string()
    }
}
