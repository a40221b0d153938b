//! Typed errors for the whole library, with source positions and a renderer that shows the line.

use std::fmt;
use std::path::PathBuf;

/// A place in a source file (playbook, module, inventory or scenario). Lines and columns count from 1.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SourcePos {
    pub file: String,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for SourcePos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

impl SourcePos {
    /// The position of byte `offset` in `text`.
    pub fn from_offset(file: &str, text: &str, offset: usize) -> Self {
        let offset = offset.min(text.len());
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = text[line_start..offset].chars().count() + 1;
        SourcePos {
            file: file.to_string(),
            line,
            column,
        }
    }
}

/// An error that belongs to a position in a file: a config field, a script statement.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Located {
    pub message: String,
    pub pos: Option<SourcePos>,
    /// The source line at `pos`, kept so the error renders without rereading the file.
    #[serde(skip, default)]
    pub line_text: Option<String>,
    /// Outermost call first: where the failing code was called from (closures, imported modules).
    pub called_from: Vec<SourcePos>,
}

impl Located {
    pub fn new(message: impl Into<String>, pos: Option<SourcePos>) -> Self {
        Located {
            message: message.into(),
            pos,
            line_text: None,
            called_from: Vec::new(),
        }
    }

    /// Attaches the text of the line at `pos`, taken from `source`.
    pub fn with_source_text(mut self, source: &str) -> Self {
        if let Some(p) = &self.pos {
            self.line_text = source
                .lines()
                .nth(p.line.saturating_sub(1))
                .map(str::to_string);
        }
        self
    }

    /// Renders like a compiler: message, `--> file:line:col`, the line and a caret, then the call chain.
    pub fn render(&self) -> String {
        let mut out = self.message.clone();
        if let Some(p) = &self.pos {
            out.push_str(&format!("\n  --> {p}"));
            if let Some(text) = &self.line_text {
                let num = p.line.to_string();
                let pad = " ".repeat(num.len());
                let caret_pad: String = text
                    .chars()
                    .take(p.column.saturating_sub(1))
                    .map(|c| if c == '\t' { '\t' } else { ' ' })
                    .collect();
                out.push_str(&format!(
                    "\n {pad} |\n {num} | {text}\n {pad} | {caret_pad}^"
                ));
            }
        }
        for c in self.called_from.iter().rev() {
            out.push_str(&format!("\n  = called from {c}"));
        }
        out
    }
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pos {
            Some(p) => write!(f, "{p}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// What a failure is about; decides the CLI exit code (see `Error::exit_code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// A command or action on a host did not succeed.
    Action,
    /// A host could not be reached or the connection broke.
    Unreachable,
    /// A bounded wait ran out of time.
    Timeout,
    /// The script called `fail(...)` or threw.
    Script,
    /// Params, argument types or options given to a script function were wrong.
    BadInput,
    /// The operator said no, or no one could be asked.
    Declined,
    /// Ctrl-C or a cancel token.
    Interrupted,
    /// Another run holds the maintenance lock of a host (exit 5, like a held journal lock).
    Locked,
    /// The run journal could not be written (a full disk, a journal server gone): the run
    /// stopped at the next action, which did not run (exit 6).
    Journal,
}

/// The library's error type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A configuration file (inventory, scenario) is malformed or invalid.
    #[error("{0}")]
    Config(Located),
    /// The playbook does not compile.
    #[error("{0}")]
    Compile(Located),
    /// A value given on the command line or through the API is wrong.
    #[error("{0}")]
    Usage(String),
    /// The playbook ran and failed.
    #[error("{located}")]
    Script { kind: FaultKind, located: Located },
    /// The run journal cannot be opened, read or written.
    #[error("journal: {0}")]
    Journal(String),
    /// Another run holds some of the hosts (see `journal::LockConflict`).
    #[error("{0}")]
    Locked(String),
    /// A resume or rollback found commands of the run's earlier attempt still running on a
    /// host after the wait allowed (`--running-timeout`); nothing was done.
    #[error("refused: {0}")]
    Fence(String),
    /// `--resume` of a run whose playbook or inventory changed, without `--force`.
    #[error("{0}")]
    Changed(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The documented exit code for this error (docs/cli.md).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Script { kind, .. } => match kind {
                FaultKind::BadInput => 2,
                FaultKind::Interrupted => 3,
                FaultKind::Declined => 4,
                FaultKind::Locked => 5,
                FaultKind::Journal => 6,
                _ => 1,
            },
            Error::Io { .. }
            | Error::Config(_)
            | Error::Compile(_)
            | Error::Usage(_)
            | Error::Changed(_) => 2,
            Error::Locked(_) | Error::Fence(_) => 5,
            Error::Journal(_) => 6,
            Error::Internal(_) => 70,
        }
    }

    /// The error for people: with the source line and caret where a position is known.
    pub fn render(&self) -> String {
        match self {
            Error::Config(l) | Error::Compile(l) | Error::Script { located: l, .. } => l.render(),
            other => other.to_string(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_to_line_and_column() {
        let t = "ab\ncdé\nf";
        assert_eq!(SourcePos::from_offset("x", t, 0).line, 1);
        let p = SourcePos::from_offset("x", t, t.find('f').unwrap());
        assert_eq!((p.line, p.column), (3, 1));
        let p = SourcePos::from_offset("x", t, 5);
        assert_eq!((p.line, p.column), (2, 3));
    }

    #[test]
    fn render_points_at_the_column() {
        let l = Located::new(
            "boom",
            Some(SourcePos {
                file: "p.rhai".into(),
                line: 2,
                column: 5,
            }),
        )
        .with_source_text("let a = 1;\nlet b = oops;\n");
        assert_eq!(
            l.render(),
            "boom\n  --> p.rhai:2:5\n   |\n 2 | let b = oops;\n   |     ^"
        );
    }
}

/// A failure as scripts see it: what kind, on which host, and the message.
#[derive(Debug, Clone)]
pub struct Fault {
    pub kind: FaultKind,
    pub host: Option<String>,
    pub message: String,
    /// A finer cause scripts can branch on (`e.reason`): for SQL `connect`, `auth`, `timeout`,
    /// `lost`, `server`; for docker `no_such_container`, `name_in_use`, `daemon`, ...
    pub reason: Option<String>,
    /// The server's or tool's own error code, when it gave one (`e.code`).
    pub code: Option<i64>,
}

impl Fault {
    pub fn new(kind: FaultKind, host: Option<&str>, message: impl Into<String>) -> Self {
        Fault {
            kind,
            host: host.map(str::to_string),
            message: message.into(),
            reason: None,
            code: None,
        }
    }

    pub fn with_reason(mut self, reason: &str) -> Self {
        self.reason = Some(reason.to_string());
        self
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The last `n` non-empty lines, for error messages.
pub fn last_lines(bytes: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// What a script error says at its innermost cause (past the function calls and modules it came
/// through): its kind and the message a report shows, without Rhai's position (reported apart).
pub(crate) fn script_failure(err: &rhai::EvalAltResult) -> (FaultKind, String) {
    use rhai::EvalAltResult as E;
    let mut e = err;
    while let E::ErrorInFunctionCall(_, _, inner, _) | E::ErrorInModule(_, inner, _) = e {
        e = inner;
    }
    match e {
        E::ErrorRuntime(v, _) if v.is::<Fault>() => {
            let f = v.clone_cast::<Fault>();
            (f.kind, f.message)
        }
        E::ErrorRuntime(v, _) => (FaultKind::Script, v.to_string()),
        E::ErrorTerminated(..) => (FaultKind::Interrupted, "interrupted".to_string()),
        E::ErrorParsing(p, _) => (FaultKind::BadInput, p.to_string()),
        other => (FaultKind::Script, without_position(&other.to_string())),
    }
}

/// Rhai's `Display` appends " (line L, position C)"; the position is reported separately.
fn without_position(text: &str) -> String {
    match text.rfind(" (line ") {
        Some(i) if text.ends_with(')') => text[..i].to_string(),
        _ => text.to_string(),
    }
}
