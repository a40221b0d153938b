//! How an action reaches a host: the `Transport` trait, its errors, and remote command lines.

mod jump;
mod local;
pub mod serve;
mod ssh;
pub mod wrap;

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

pub use jump::JumpPool;
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
    /// The marker the wrapper keeps on the host while the command runs (`RUN.ATTEMPT.SEQ`).
    pub marker: Option<&'a str>,
    /// The command's directory, environment or arguments carry a secret: they reach the wrapper
    /// through a 0600 spec file, never a command line.
    pub sensitive: bool,
    /// Variables the command receives as the path of a 0600 file holding the value; the
    /// wrapper removes the files when the command ends.
    pub secret_files: &'a BTreeMap<String, String>,
    /// capstan's own brief command (a host-lock operation, clearing markers): it runs as it is,
    /// without the wrapper. It ends by itself within seconds and leaves nothing a resume must
    /// fence, so a watcher forked beside it would only cost the host a process. Ignored for a
    /// command with secrets, and under `become` (sudo runs the wrapper there).
    pub bare: bool,
}

impl<'a> ExecRequest<'a> {
    /// A request with no environment, directory, input, marker or live output.
    pub fn plain(
        command: &'a Command,
        timeout: Duration,
        max_output: usize,
        abort: &'a AtomicBool,
    ) -> Self {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        ExecRequest {
            command,
            env: &EMPTY,
            cwd: None,
            stdin: None,
            timeout,
            max_output,
            abort,
            on_output: None,
            marker: None,
            sensitive: false,
            secret_files: &EMPTY,
            bare: false,
        }
    }

    /// The same request run without the wrapper (see `bare`).
    pub fn without_wrapper(self) -> Self {
        ExecRequest { bare: true, ..self }
    }
}

impl ExecRequest<'_> {
    /// The same request with other bytes on stdin.
    pub fn with_stdin<'b>(&'b self, stdin: &'b [u8]) -> ExecRequest<'b> {
        ExecRequest {
            command: self.command,
            env: self.env,
            cwd: self.cwd,
            stdin: Some(stdin),
            timeout: self.timeout,
            max_output: self.max_output,
            abort: self.abort,
            on_output: self.on_output.clone(),
            marker: self.marker,
            sensitive: self.sensitive,
            secret_files: self.secret_files,
            bare: self.bare,
        }
    }
}

impl std::fmt::Debug for ExecRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecRequest")
            .field("command", &self.command)
            .field("cwd", &self.cwd)
            .field("timeout", &self.timeout)
            .field("max_output", &self.max_output)
            .field("streams_output", &self.on_output.is_some())
            .field("bare", &self.bare)
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
    #[error("sudo as {user} (login {login}) refused `{command}`: {reason}")]
    Become {
        login: String,
        user: String,
        command: String,
        reason: String,
    },
    #[error("through bastion {bastion}: {reason}")]
    Jump { bastion: String, reason: String },
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
                | TransportError::Jump { .. }
                | TransportError::Become { .. }
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

    /// Runs a command that may be kept running once its stdout has a line starting with
    /// `ready`: the output so far, and whether it was kept (then [`Transport::finish_held`]
    /// ends it, with what it waits for on its stdin). A transport that keeps none runs it to
    /// its end with nothing on its stdin (the default). A kept command that printed
    /// [`serve::HELLO`] before `ready` serves the plain commands run after it on this transport
    /// (see `serve`): the SSH transport sends them there instead of opening a session for each.
    fn exec_held(
        &self,
        req: &ExecRequest<'_>,
        ready: &str,
    ) -> Result<(ExecOutput, bool), TransportError> {
        let _ = ready;
        self.exec(req).map(|o| (o, false))
    }

    /// Writes `input` to the command [`Transport::exec_held`] kept, closes its stdin and waits
    /// (at most `timeout`) for a line of its stdout starting with `answer`, or its end. `None`:
    /// none is kept (none was, or the session it ran on has been lost since). Not waiting for
    /// the end: a process a served command left behind may hold the channel's stdout open.
    fn finish_held(
        &self,
        input: &[u8],
        answer: &str,
        timeout: Duration,
    ) -> Option<Result<ExecOutput, TransportError>> {
        let _ = (input, answer, timeout);
        None
    }

    /// Makes sure the host can be reached: connects and authenticates if it has not, without
    /// running anything when that proves it (SSH). The default runs `true`.
    fn reach(&self) -> Result<(), TransportError> {
        let never = std::sync::atomic::AtomicBool::new(false);
        self.exec(&ExecRequest::plain(
            &Command::Argv(vec!["true".into()]),
            std::time::Duration::from_secs(30),
            4096,
            &never,
        ))
        .map(|_| ())
    }
}

/// Opens the transport a host's inventory entry asks for. SSH connects lazily on first use;
/// hosts behind the same bastions share one session to each (`jumps`).
pub fn open(host: &HostEntry, jumps: &Arc<JumpPool>) -> Arc<dyn Transport> {
    match host.transport {
        TransportKind::Local => Arc::new(LocalTransport::new()),
        TransportKind::Ssh => Arc::new(SshTransport::new(host.clone(), jumps.clone())),
    }
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

    /// Runs `req` as an SSH exec request would: the line through `sh -c`, with `HOME` set.
    fn run_line(req: &ExecRequest<'_>, spec: Option<&str>, home: &std::path::Path) -> String {
        let line = wrap::remote_line(req, spec).unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(line)
            .env("HOME", home)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn remote_line_survives_a_real_shell_with_and_without_a_spec_file() {
        let args = [
            "a b",
            "$(touch /tmp/capstan-pwned)",
            "it's",
            "x;y",
            "`id`",
            "\"q\"",
            "*",
            "",
        ];
        let mut argv = vec!["sh".to_string(), "-c".to_string()];
        argv.push(
            "printf '%s\\n' \"$@\"; printf '%s\\n' \"$K\" \"$(cat \"$F\")\" \"$(pwd)\"".into(),
        );
        argv.push("sh".into());
        argv.extend(args.iter().map(|s| s.to_string()));
        let cmd = Command::Argv(argv);
        let mut env = BTreeMap::new();
        env.insert("K".to_string(), "v w $HOME".to_string());
        let mut files = BTreeMap::new();
        files.insert("F".to_string(), "file 'content'\n".to_string());
        let abort = AtomicBool::new(false);
        let home = tempfile::tempdir().unwrap();
        let mut req = ExecRequest::plain(&cmd, Duration::from_secs(5), 1 << 20, &abort);
        req.env = &env;
        req.cwd = Some("/");
        req.secret_files = &files;
        let mut want: Vec<&str> = args.to_vec();
        want.extend(["v w $HOME", "file 'content'", "/"]);
        // Secret files need the spec file; without them, the line carries everything.
        let spec = wrap::spec_text(&req, wrap::TextShell::Login).unwrap();
        let spec_path = home.path().join(".capstan-spec-test");
        std::fs::write(&spec_path, spec).unwrap();
        let text = run_line(&req, Some(".capstan-spec-test"), home.path());
        assert_eq!(text.lines().collect::<Vec<_>>(), want);
        assert!(!spec_path.exists(), "the wrapper removes its spec file");
        let none = BTreeMap::new();
        std::fs::write(home.path().join("f"), "file 'content'\n").unwrap();
        let mut env2 = env.clone();
        env2.insert("F".into(), home.path().join("f").display().to_string());
        let mut req = ExecRequest::plain(&cmd, Duration::from_secs(5), 1 << 20, &abort);
        req.env = &env2;
        req.cwd = Some("/");
        req.secret_files = &none;
        let text = run_line(&req, None, home.path());
        assert_eq!(text.lines().collect::<Vec<_>>(), want);
        assert!(!std::path::Path::new("/tmp/capstan-pwned").exists());
    }

    /// The login shells the wrapper is run in over SSH, all POSIX enough once zsh is put in its
    /// `sh` emulation (scripts/test.sh installs them).
    const LOGIN_SHELLS: &[&str] = &["sh", "bash", "zsh", "ksh93", "mksh"];

    /// The wrapper in the login shells it meets: dash, bash, zsh, ksh93 and mksh. While the command runs,
    /// its marker holds its start time and says it runs; once it has ended, done. (As zsh, not
    /// put in its `sh` emulation, the marker had no start time and said done at once.)
    #[test]
    fn the_wrapper_keeps_its_marker_in_every_login_shell() {
        for shell in LOGIN_SHELLS {
            let home = tempfile::tempdir().unwrap();
            let abort = AtomicBool::new(false);
            let cmd = Command::Argv(vec!["sleep".into(), "1".into()]);
            let mut req = ExecRequest::plain(&cmd, Duration::from_secs(5), 1 << 20, &abort);
            req.marker = Some("run-1.1.1");
            let line = wrap::remote_line(&req, None).unwrap();
            let mut child = std::process::Command::new(shell)
                .arg("-c")
                .arg(&line)
                .env("HOME", home.path())
                .stdin(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let path = home.path().join(".capstan/markers/run-1.1.1");
            std::thread::sleep(Duration::from_millis(500));
            let m = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(m.contains("state=running"), "{shell}: {m}");
            let start = m.lines().find_map(|l| l.strip_prefix("start="));
            assert!(
                start.is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())),
                "{shell}: {m}"
            );
            assert!(child.wait().unwrap().success(), "{shell}");
            assert!(
                marker_after(&path, Duration::from_secs(3)).contains("state=done"),
                "{shell}"
            );
        }
    }

    /// A bare line keeps argv, environment and directory as the wrapper does, and the command is
    /// the login shell itself (`exec`): no process of capstan's beside it, its exit status its own.
    #[test]
    fn a_bare_line_execs_the_command_in_the_login_shell() {
        let args = ["a b", "$(touch /tmp/capstan-pwned-bare)", "it's", "*", ""];
        let mut argv = vec!["sh".to_string(), "-c".to_string()];
        // The command's pid is the login shell's: the outer shell `exec`ed into it, where the
        // wrapper would have forked its watcher first.
        argv.push(
            "printf '%s\\n' \"$@\"; printf '%s\\n' \"$K\" \"$(pwd)\"; \
             [ \"$$\" = \"$OUTER\" ] && echo same-process; exit 7"
                .into(),
        );
        argv.push("sh".into());
        argv.extend(args.iter().map(|s| s.to_string()));
        let cmd = Command::Argv(argv);
        let mut env = BTreeMap::new();
        env.insert("K".to_string(), "v w $HOME".to_string());
        let abort = AtomicBool::new(false);
        let mut req =
            ExecRequest::plain(&cmd, Duration::from_secs(5), 1 << 20, &abort).without_wrapper();
        req.env = &env;
        req.cwd = Some("/");
        let line = wrap::bare_line(&req).unwrap();
        assert!(!line.contains("__cwatch"), "no wrapper: {line}");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("OUTER=$$; export OUTER\n{line}"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(7), "{out:?}");
        let mut want: Vec<&str> = args.to_vec();
        want.extend(["v w $HOME", "/", "same-process"]);
        let text = String::from_utf8(out.stdout).unwrap();
        assert_eq!(text.lines().collect::<Vec<_>>(), want);
        assert!(!std::path::Path::new("/tmp/capstan-pwned-bare").exists());
        // A text is the login shell's own, as through the wrapper.
        let cmd = Command::Shell("test -e / && echo there".into());
        let req =
            ExecRequest::plain(&cmd, Duration::from_secs(5), 1 << 20, &abort).without_wrapper();
        assert_eq!(wrap::bare_line(&req).unwrap(), "test -e / && echo there\n");
        let empty = Command::Argv(vec![]);
        let req =
            ExecRequest::plain(&empty, Duration::from_secs(5), 1 << 20, &abort).without_wrapper();
        assert!(
            wrap::bare_line(&req).is_err(),
            "an empty argv is refused, not `exec` alone"
        );
    }

    #[test]
    fn the_wrapper_keeps_a_marker_and_reports_a_signal_as_a_signal() {
        let home = tempfile::tempdir().unwrap();
        let abort = AtomicBool::new(false);
        let cmd = Command::Shell("exit 3".into());
        let mut req = ExecRequest::plain(&cmd, Duration::from_secs(5), 1 << 20, &abort);
        req.marker = Some("run-1.1.7");
        let line = wrap::remote_line(&req, None).unwrap();
        // A stdin that is not a pipe: the watcher polls, as it does for local commands.
        let st = std::process::Command::new("sh")
            .arg("-c")
            .arg(&line)
            .env("HOME", home.path())
            .stdin(std::process::Stdio::null())
            .status()
            .unwrap();
        assert_eq!(st.code(), Some(3));
        // The watcher records the end within a quarter second.
        let path = home.path().join(".capstan/markers/run-1.1.7");
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        let marker = loop {
            let m = std::fs::read_to_string(&path).unwrap();
            if m.contains("state=done") || std::time::Instant::now() > deadline {
                break m;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(marker.contains("state=done"), "{marker}");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(wrap::SCAN)
            .arg("sh")
            .args(["run-1", "wait", "1"])
            .env("HOME", home.path())
            .output()
            .unwrap();
        let scan = wrap::parse_scan(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(
            scan,
            vec![wrap::MarkerState {
                name: "run-1.1.7".into(),
                status: wrap::MarkerStatus::Done
            }]
        );
        let cmd = Command::Shell("kill -TERM $$".into());
        let req = ExecRequest::plain(&cmd, Duration::from_secs(5), 1 << 20, &abort);
        let st = std::process::Command::new("sh")
            .arg("-c")
            .arg(wrap::remote_line(&req, None).unwrap())
            .stdin(std::process::Stdio::null())
            .status()
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(st.signal(), Some(libc::SIGTERM));
    }

    /// Reads a marker until it says `state=done` or `within` has passed.
    fn marker_after(path: &std::path::Path, within: Duration) -> String {
        let deadline = std::time::Instant::now() + within;
        loop {
            let m = std::fs::read_to_string(path).unwrap_or_default();
            if m.contains("state=done") || std::time::Instant::now() > deadline {
                return m;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_held_stdin_is_the_watchers_and_its_close_ends_the_watch() {
        for shell in LOGIN_SHELLS {
            held_stdin_in(shell);
        }
        let abort = AtomicBool::new(false);
        let cmd = Command::Shell("cat; echo read-all".into());
        let req = ExecRequest::plain(&cmd, Duration::from_secs(5), 1 << 20, &abort);
        // Fed on stdin, or with sudo's password first on it: no `w`, the stdin is the command's.
        let req2 = req.with_stdin(b"data");
        assert!(!wrap::holds_stdin(&req2, false));
        assert!(!wrap::remote_line(&req2, None).unwrap().contains(" lw "));
        assert!(!wrap::holds_stdin(&req, true));
    }

    /// As sshd runs it in login shell `shell`: stdin a pipe nothing is written to, closed once
    /// the command has ended.
    fn held_stdin_in(shell: &str) {
        let home = tempfile::tempdir().unwrap();
        let abort = AtomicBool::new(false);
        // `cat` would wait forever on the held pipe: the command must read /dev/null instead.
        let cmd = Command::Shell("cat; echo read-all".into());
        let mut req = ExecRequest::plain(&cmd, Duration::from_secs(5), 1 << 20, &abort);
        req.marker = Some("run-2.1.1");
        assert!(wrap::holds_stdin(&req, false));
        let line = wrap::remote_line(&req, None).unwrap();
        assert!(line.contains(" lw "), "{line}");
        let mut child = std::process::Command::new(shell)
            .arg("-c")
            .arg(&line)
            .env("HOME", home.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let held = child.stdin.take().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{shell}: the command reads the held stdin"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(status.success(), "{shell}");
        let mut out = String::new();
        std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
        assert_eq!(out, "read-all\n", "{shell}");
        // While the pipe is held the watcher waits on it, past its quarter-second nap: the
        // end is not recorded before the pipe closes...
        let path = home.path().join(".capstan/markers/run-2.1.1");
        let m = marker_after(&path, Duration::from_millis(600));
        assert!(m.contains("state=running"), "{shell}: {m}");
        // ...and is at once when it does.
        drop(held);
        let m = marker_after(&path, Duration::from_secs(3));
        assert!(m.contains("state=done"), "{shell}: {m}");
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
