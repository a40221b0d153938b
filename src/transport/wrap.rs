//! The wrapper every command runs under: it dies with its controller, leaves a marker, hides secrets.
//!
//! A command capstan starts must not outlive capstan silently: after a `kill -9` of capstan (or
//! a dropped SSH session) the command would keep running, and a resume would start the same
//! operation beside it. So each command runs under a small POSIX `sh` wrapper that
//! - forks a watcher, then becomes the command (`exec`: same pid, the leader of its process group,
//!   as sshd and the local transport start it; its exit status is the command's own);
//! - the watcher checks every quarter second whose child the command is: when its parent changes
//!   (capstan's process or the SSH session that started it is gone and the command was
//!   re-parented), it kills the whole group; when the command has ended, it records that and
//!   leaves;
//! - when asked, keeps a marker file for the action (`$HOME/.capstan/markers/NAME`): the pid and
//!   process start time while it runs, `state=done` once it ended by itself, so a later resume
//!   can tell a command still running from one that finished or died;
//! - when the command carries a secret, reads directory, environment and arguments from a 0600
//!   spec file it removes at once, and applies them after the watcher is forked, in the process
//!   that becomes the command: no secret is in the argv or environment of any other process
//!   (the watcher's, the login shell's). Secret files live in a 0700 directory the watcher
//!   removes when the command ends.
//!
//! It costs one fork per command (the watcher) over a bare `sh -c`.

use std::fmt::Write as _;

use super::{Command, ExecRequest, TransportError};

/// Where markers live on a host, relative to the login user's home (documented in
/// docs/recovery.md).
pub const MARKER_DIR: &str = ".capstan/markers";

/// How the wrapper runs the command: `a` argv as given, `s` the text with `sh -c`, `l` the text
/// with the login shell (`$SHELL -c`, as an SSH exec request would).
#[derive(Debug, Clone, Copy)]
pub enum TextShell {
    Sh,
    Login,
}

/// The wrapper. Arguments: marker name (or empty), spec file (or empty; relative to `$HOME`),
/// mode (`a`, `s`, `l`), then argv or the shell text. Its own variables start with `__c` so the
/// spec's `eval` cannot clash with them.
pub const WRAPPER: &str = r#"__cm=$1 __cf=$2 __cx=$3; shift 3
__cs= __cdir=
if [ -n "$__cf" ]; then
  case $__cf in /*) ;; *) __cf=$HOME/$__cf ;; esac
  __cs=$(cat "$__cf"); __ce=$?; rm -f "$__cf"
  if [ "$__ce" != 0 ]; then echo "capstan: cannot read the command's spec file $__cf" >&2; exit 127; fi
  __cdir=$(umask 077; mktemp -d "${TMPDIR:-/tmp}/capstan-secret.XXXXXX") || exit 126
fi
__csf() { (umask 077; printf '%s' "$2" > "$__cdir/$1") || exit 126; export "$1=$__cdir/$1"; }
__cst() { [ -r "/proc/$1/stat" ] || return 1; read -r __cl < "/proc/$1/stat" || return 1
  __cl=${__cl##*") "}; set -- $__cl; __cpp=$2; __ct0=${20}; }
__cw=$$ __cpp=$PPID __ct0=
__cst "$__cw"
__cmd=${HOME:-/tmp}/.capstan/markers
__cmk() { [ -n "$__cm" ] || return 0
  { printf 'pid=%s\nstart=%s\n' "$__cw" "$__ct0"; printf '%s\n' "$@"; } > "$__cmd/$__cm" 2>/dev/null; }
if [ -n "$__cm" ]; then
  [ -d "$__cmd" ] || (umask 077; mkdir -p "$__cmd") 2>/dev/null || __cm=
  __cmk state=running
fi
__cwatch() { __corig=$__cpp
  while sleep 0.25 2>/dev/null || sleep 1; do
    if [ -r /proc/self/stat ]; then
      read -r __cl < /proc/self/stat || break
      __cl=${__cl##*") "}; set -- $__cl; [ "$2" = "$__cw" ] || break
      __cst "$__cw" || break
    else
      kill -0 "$__cw" 2>/dev/null || break
      __cpp=$(ps -o ppid= -p "$__cw" 2>/dev/null) || break; __cpp=$((__cpp))
    fi
    if [ "$__cpp" != "$__corig" ]; then
      __cmk state=orphaned; [ -z "$__cdir" ] || rm -rf "$__cdir"; kill -KILL 0; exit 0
    fi
  done
  [ -z "$__cdir" ] || rm -rf "$__cdir"
  [ -z "$__cm" ] || [ ! -f "$__cmd/$__cm" ] || __cmk state=done
  exit 0; }
# `exec` redirections: dash keeps a saved copy of a redirected fd around a function call, which
# would hold the command's output pipe open for the watcher's whole life.
(exec </dev/null >/dev/null 2>&1; __cwatch) &
if [ -n "$__cs" ]; then eval "$__cs"; fi
unset __cs __cf __ce __cl
case $__cx in
  a) exec "$@" ;;
  s) exec sh -c "$1" ;;
  *) exec "${SHELL:-sh}" -c "$1" ;;
esac
"#;

fn quote(s: &str) -> Result<String, TransportError> {
    shlex::try_quote(s)
        .map(|c| c.into_owned())
        .map_err(|e| TransportError::Other(format!("cannot quote {s:?}: {e}")))
}

/// The mode letter and the arguments after it.
fn mode_and_args(cmd: &Command, shell: TextShell) -> (&'static str, Vec<&str>) {
    match cmd {
        Command::Argv(a) => ("a", a.iter().map(String::as_str).collect()),
        Command::Shell(t) => (
            match shell {
                TextShell::Sh => "s",
                TextShell::Login => "l",
            },
            vec![t.as_str()],
        ),
    }
}

/// Whether the command's directory, environment and arguments go through a spec file: when any
/// of them carries a secret, or when it has secret files to hand over.
pub fn needs_spec(req: &ExecRequest<'_>) -> bool {
    req.sensitive || !req.secret_files.is_empty()
}

/// The spec file's text: `cd`, exports, secret files and `set --` with the arguments. Read by
/// the wrapper with `eval`, so everything is quoted.
pub fn spec_text(req: &ExecRequest<'_>, shell: TextShell) -> Result<String, TransportError> {
    let mut s = String::new();
    if let Some(dir) = req.cwd {
        let _ = writeln!(s, "cd {} || exit 127", quote(dir)?);
    }
    for (k, v) in req.env {
        let _ = writeln!(s, "export {k}={}", quote(v)?);
    }
    for (k, v) in req.secret_files {
        let _ = writeln!(s, "__csf {k} {}", quote(v)?);
    }
    let (mode, args) = mode_and_args(req.command, shell);
    let _ = write!(s, "__cx={mode}; set --");
    for a in args {
        let _ = write!(s, " {}", quote(a)?);
    }
    s.push('\n');
    Ok(s)
}

/// The arguments the wrapper takes after its own text: marker, spec file, mode, argv or text.
/// With a spec file, the mode and argv are in the file (nothing of the command is on the
/// command line).
pub fn wrapper_args(req: &ExecRequest<'_>, spec: Option<&str>, shell: TextShell) -> Vec<String> {
    let mut v = vec![
        req.marker.unwrap_or("").to_string(),
        spec.unwrap_or("").to_string(),
    ];
    if spec.is_some() {
        v.push("a".into());
    } else {
        let (mode, args) = mode_and_args(req.command, shell);
        v.push(mode.into());
        v.extend(args.into_iter().map(str::to_string));
    }
    v
}

/// The single line a remote login shell runs: `cd` and environment (when they carry no
/// secret), the wrapper's arguments, then the wrapper.
pub fn remote_line(req: &ExecRequest<'_>, spec: Option<&str>) -> Result<String, TransportError> {
    let mut line = String::new();
    if spec.is_none() {
        if let Some(dir) = req.cwd {
            let _ = writeln!(line, "cd {} || exit 127", quote(dir)?);
        }
        for (k, v) in req.env {
            let _ = writeln!(line, "export {k}={}", quote(v)?);
        }
    }
    line.push_str("set --");
    for a in wrapper_args(req, spec, TextShell::Login) {
        let _ = write!(line, " {}", quote(&a)?);
    }
    line.push('\n');
    line.push_str(WRAPPER);
    Ok(line)
}

/// A marker as the host reported it during the scan a resume or rollback runs first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkerState {
    /// The marker's name: `RUN.ATTEMPT.SEQ`.
    pub name: String,
    pub status: MarkerStatus,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkerStatus {
    /// The command ended by itself.
    Done,
    /// Its process is gone without an end recorded (killed with its controller, or the host
    /// restarted).
    Gone,
    /// Still running after the wait allowed; left alone.
    Running { pid: u32 },
    /// Was running; capstan killed its process group.
    Killed,
    /// Was running when the scan began and ended during the wait.
    EndedWhileWaiting,
}

/// The scan script: `$1` the run id, `$2` `wait` or `kill`, `$3` seconds to wait. One line per
/// marker of the run: `done NAME`, `gone NAME`, `running NAME PID`, `killed NAME`, `ended NAME`.
/// Finished markers are removed; a running one stays.
pub const SCAN: &str = r#"__cmd=${HOME:-/tmp}/.capstan/markers
[ -d "$__cmd" ] || exit 0
__val() { sed -n "s/^$1=//p" "$2" | tail -n 1; }
__alive() { [ -n "$1" ] || return 1; kill -0 "$1" 2>/dev/null || return 1
  [ -r "/proc/$1/stat" ] || return 0; read -r __l < "/proc/$1/stat" || return 1
  __l=${__l##*") "}; set -- $__l; [ -z "$__want" ] || [ "${20}" = "$__want" ]; }
for __m in "$__cmd/$1".*; do
  [ -f "$__m" ] || continue
  __n=${__m##*/}
  __st=$(__val state "$__m"); __pid=$(__val pid "$__m"); __want=$(__val start "$__m")
  if [ "$__st" = done ]; then echo "done $__n"; rm -f "$__m"; continue; fi
  if ! __alive "$__pid"; then echo "gone $__n"; rm -f "$__m"; continue; fi
  if [ "$2" = kill ]; then
    kill -KILL -- "-$__pid" 2>/dev/null || kill -KILL "$__pid"
    echo "killed $__n"; rm -f "$__m"; continue
  fi
  __i=0
  while __alive "$__pid" && [ "$__i" -lt "$3" ]; do sleep 1; __i=$((__i + 1)); done
  if __alive "$__pid"; then echo "running $__n $__pid"; continue; fi
  echo "ended $__n"; rm -f "$__m"
done
"#;

/// Reads the scan's output.
pub fn parse_scan(out: &str) -> Vec<MarkerState> {
    out.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (kind, name) = (w.next()?, w.next()?.to_string());
            let third = w.next();
            let status = match kind {
                "done" => MarkerStatus::Done,
                "gone" => MarkerStatus::Gone,
                "running" => MarkerStatus::Running {
                    pid: third.and_then(|p| p.parse().ok()).unwrap_or(0),
                },
                "killed" => MarkerStatus::Killed,
                "ended" => MarkerStatus::EndedWhileWaiting,
                _ => return None,
            };
            Some(MarkerState { name, status })
        })
        .collect()
}

/// Removes every marker of a run (the run ended; nothing will ask for them).
pub const CLEAR: &str = r#"rm -f "${HOME:-/tmp}/.capstan/markers/$1".* 2>/dev/null; exit 0"#;
