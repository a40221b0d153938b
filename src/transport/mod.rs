//! How an action reaches a host: the `Transport` trait, its errors, and remote command lines.

mod local;
mod ssh;

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

pub use local::LocalTransport;
pub use ssh::SshTransport;

use crate::inventory::{HostEntry, TransportKind};

/// A command as the script gave it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Program and arguments; each reaches the program unchanged (quoted for remote shells).
    Argv(Vec<String>),
    /// A raw `sh -c` command line, pipes and all.
    Shell(String),
}

impl Command {
    /// The command as a person would type it; argv is shell-quoted.
    pub fn display(&self) -> String {
        match self {
            Command::Argv(a) => {
                shlex::try_join(a.iter().map(String::as_str)).unwrap_or_else(|_| format!("{a:?}"))
            }
            Command::Shell(s) => s.clone(),
        }
    }
}

/// Everything a transport needs to run one command.
pub struct ExecRequest<'a> {
    pub command: &'a Command,
    pub env: &'a BTreeMap<String, String>,
    pub cwd: Option<&'a str>,
    pub stdin: Option<&'a [u8]>,
    pub timeout: Duration,
    /// Bytes kept per stream; beyond that the oldest output is dropped and `truncated` is set.
    pub max_output: usize,
    /// Set on a second Ctrl-C: stop the running command now.
    pub abort: &'a AtomicBool,
    /// Receives output as it arrives (`stdout` or `stderr`, the bytes), for live events.
    pub on_output: Option<OutputSink>,
}

impl std::fmt::Debug for ExecRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecRequest")
            .field("command", &self.command)
            .field("cwd", &self.cwd)
            .field("timeout", &self.timeout)
            .field("max_output", &self.max_output)
            .field("streams_output", &self.on_output.is_some())
            .finish_non_exhaustive()
    }
}

/// Where a transport hands output as it arrives. Called from reader threads.
pub type OutputSink = std::sync::Arc<dyn Fn(&'static str, &[u8]) + Send + Sync>;

/// What a finished command left.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ExecOutput {
    /// Exit code; `None` when a signal ended the command.
    pub code: Option<i32>,
    /// Signal name without `SIG` (`TERM`, `KILL`) when one ended the command.
    pub signal: Option<String>,
    #[serde(skip)]
    pub stdout: Vec<u8>,
    #[serde(skip)]
    pub stderr: Vec<u8>,
    pub truncated: bool,
}

/// Why a transport could not do what it was asked. The executor adds the host's name.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    #[error("cannot resolve address {address}: {reason}")]
    Resolve { address: String, reason: String },
    #[error("connection refused by {addr}")]
    Refused { addr: String },
    #[error("no answer from {addr} within {secs}s (connect timeout)")]
    ConnectTimeout { addr: String, secs: u64 },
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("SSH handshake with {addr} failed: {reason}")]
    Handshake { addr: String, reason: String },
    #[error(
        "host key of {addr} is not in {known_hosts} (server offered {fingerprint}); add it with ssh-keyscan, or set host_key_policy = \"accept-new\""
    )]
    HostKeyUnknown {
        addr: String,
        known_hosts: String,
        fingerprint: String,
    },
    #[error(
        "HOST KEY MISMATCH for {addr}: {known_hosts} holds a different key than the one offered ({fingerprint}); the host was reinstalled or someone is intercepting the connection; refusing to connect"
    )]
    HostKeyMismatch {
        addr: String,
        known_hosts: String,
        fingerprint: String,
    },
    #[error("authentication as {user} failed ({method}): {reason}")]
    Auth {
        user: String,
        method: String,
        reason: String,
    },
    #[error("command timed out after {secs}s")]
    CommandTimeout { secs: f64, partial: Box<ExecOutput> },
    #[error("host stopped answering: nothing received for {secs}s")]
    Unresponsive { secs: u64 },
    #[error("connection dropped: {reason}")]
    Dropped { reason: String },
    #[error("stopped by a second interrupt")]
    Aborted,
    #[error("cannot start {program}: {reason}")]
    Spawn { program: String, reason: String },
    #[error("{0}")]
    Other(String),
}

impl TransportError {
    /// Whether the host itself is out of reach (as opposed to one command failing).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            TransportError::Resolve { .. }
                | TransportError::Refused { .. }
                | TransportError::ConnectTimeout { .. }
                | TransportError::Connect { .. }
                | TransportError::Handshake { .. }
                | TransportError::HostKeyUnknown { .. }
                | TransportError::HostKeyMismatch { .. }
                | TransportError::Auth { .. }
                | TransportError::Unresponsive { .. }
                | TransportError::Dropped { .. }
        )
    }
}

/// A way to run commands and place files on one host. Everything else (copy, checksum, free
/// space, ...) is built on these by the executor, so a transport stays small.
pub trait Transport: Send + Sync {
    /// Runs one command to completion (or timeout), draining stdout and stderr.
    fn exec(&self, req: &ExecRequest<'_>) -> Result<ExecOutput, TransportError>;

    /// Writes `size` bytes from `data` to `path` atomically (temporary file, then rename), with `mode`.
    fn put(
        &self,
        path: &str,
        data: &mut dyn Read,
        size: u64,
        mode: i32,
    ) -> Result<(), TransportError>;
}

/// Opens the transport a host's inventory entry asks for. SSH connects lazily on first use.
pub fn open(host: &HostEntry) -> Arc<dyn Transport> {
    match host.transport {
        TransportKind::Local => Arc::new(LocalTransport::new()),
        TransportKind::Ssh => Arc::new(SshTransport::new(host.clone())),
    }
}

/// The single line a remote `sh` runs for `req`: optional `cd`, environment, then the command.
pub fn remote_command_line(req: &ExecRequest<'_>) -> Result<String, TransportError> {
    let q = |s: &str| {
        shlex::try_quote(s)
            .map(|c| c.into_owned())
            .map_err(|e| TransportError::Other(format!("cannot quote {s:?}: {e}")))
    };
    let mut line = String::new();
    if let Some(dir) = req.cwd {
        line.push_str(&format!("cd {} || exit 127\n", q(dir)?));
    }
    for (k, v) in req.env {
        line.push_str(&format!("export {k}={}\n", q(v)?));
    }
    match req.command {
        Command::Argv(argv) => {
            let parts: Result<Vec<String>, _> = argv.iter().map(|a| q(a)).collect();
            line.push_str(&parts?.join(" "));
        }
        Command::Shell(text) => line.push_str(text),
    }
    Ok(line)
}

/// Keeps the last `max` bytes of a stream.
#[derive(Debug, Default)]
pub(crate) struct Tail {
    pub buf: Vec<u8>,
    pub max: usize,
    pub truncated: bool,
}

impl Tail {
    pub fn new(max: usize) -> Self {
        Tail {
            buf: Vec::new(),
            max,
            truncated: false,
        }
    }
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        if self.buf.len() > self.max {
            let cut = self.buf.len() - self.max;
            self.buf.drain(..cut);
            self.truncated = true;
        }
    }
}

/// Signal number to the name SSH uses (`TERM`, not `SIGTERM`).
pub(crate) fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGHUP => "HUP",
        libc::SIGINT => "INT",
        libc::SIGQUIT => "QUIT",
        libc::SIGILL => "ILL",
        libc::SIGABRT => "ABRT",
        libc::SIGFPE => "FPE",
        libc::SIGKILL => "KILL",
        libc::SIGSEGV => "SEGV",
        libc::SIGPIPE => "PIPE",
        libc::SIGALRM => "ALRM",
        libc::SIGTERM => "TERM",
        libc::SIGUSR1 => "USR1",
        libc::SIGUSR2 => "USR2",
        libc::SIGBUS => "BUS",
        _ => return format!("SIG{sig}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_line_survives_a_real_shell() {
        let args = [
            "a b",
            "$(touch /tmp/capstan-pwned)",
            "it's",
            "x;y",
            "`id`",
            "\"q\"",
            "*",
        ];
        let mut argv = vec!["printf".to_string(), "%s\\n".to_string()];
        argv.extend(args.iter().map(|s| s.to_string()));
        let cmd = Command::Argv(argv);
        let mut env = BTreeMap::new();
        env.insert("K".to_string(), "v w $HOME".to_string());
        let abort = AtomicBool::new(false);
        let req = ExecRequest {
            command: &cmd,
            env: &env,
            cwd: Some("/"),
            stdin: None,
            timeout: Duration::from_secs(5),
            max_output: 1 << 20,
            abort: &abort,
            on_output: None,
        };
        let line = remote_command_line(&req).unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{line}; printf '%s\\n' \"$K\""))
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let mut want: Vec<&str> = args.to_vec();
        want.push("v w $HOME");
        assert_eq!(text.lines().collect::<Vec<_>>(), want);
        assert!(!std::path::Path::new("/tmp/capstan-pwned").exists());
    }

    #[test]
    fn tail_keeps_the_end() {
        let mut t = Tail::new(4);
        t.push(b"abc");
        t.push(b"def");
        assert_eq!(t.buf, b"cdef");
        assert!(t.truncated);
    }
}
