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
//! Over SSH, when capstan has nothing to send on the command's stdin, it sends no end-of-file
//! either (mode letter + `w`): the command reads `/dev/null`, and the watcher blocks reading the
//! session's stdin pipe, which sshd closes the moment the command ends or the connection drops.
//! It then looks at once, and polls only when the command still runs. A command that ends at
//! once costs one fork (the watcher) over a bare `sh -c`, with no `sleep` to start.
//!
//! Elsewhere (local commands, a stdin that is not a pipe, a command fed on stdin) the watcher
//! polls from the start.

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
/// mode (`a`, `s`, `l`, each with an optional `w`: stdin is the session's and nothing comes on
/// it), then argv or the shell text. Its own variables start with `__c` so the spec's `eval`
/// cannot clash with them.
pub const WRAPPER: &str = r#"__cm=$1 __cf=$2 __cx=$3; shift 3
__cs= __cdir= __cin=
case $__cx in *w) __cx=${__cx%w}; __cin=0; [ ! -p "/proc/$$/fd/0" ] || __cin=1 ;; esac
if [ -n "$__cf" ]; then
  case $__cf in /*) ;; *) __cf=$HOME/$__cf ;; esac
  __cs=$(cat "$__cf"); __ce=$?; rm -f "$__cf"
  if [ "$__ce" != 0 ]; then echo "capstan: cannot read the command's spec file $__cf" >&2; exit 127; fi
  __cdir=$(umask 077; mktemp -d "${TMPDIR:-/tmp}/capstan-secret.XXXXXX") || exit 126
fi
__csf() { (umask 077; printf '%s' "$2" > "$__cdir/$1") || exit 126; export "$1=$__cdir/$1"; }
__cst() { [ -r "/proc/$1/stat" ] || return 1; read -r __cl < "/proc/$1/stat" || return 1
  __cl=${__cl##*") "}; set -- $__cl; __cpp=$2; __cpg=$3; __ct0=${20}; }
__cpar() { [ -r "/proc/$1/stat" ] || return 1; read -r __cl < "/proc/$1/stat" || return 1
  __cl=${__cl##*") "}; set -- $__cl; __cpp=$2; }
__cw=$$ __cpp=$PPID __cpg=$$ __ct0= __cup=
# The start time only a marker needs (reading /proc/PID/stat is a read(2) per byte in dash).
[ -z "$__cm" ] || __cst "$__cw"
# Under sudo (`become`) the command's parent is sudo, which outlives a lost session: watch the
# process that started sudo instead.
if [ -n "${__cb:-}" ] && read -r __cc < "/proc/$__cpp/comm" 2>/dev/null && [ "$__cc" = sudo ]; then
  __cup=1; __cpar "$__cpp"
fi
__cmd=${__cmd:-${HOME:-/tmp}/.capstan/markers}
__cmk() { [ -n "$__cm" ] || return 0
  { printf 'pid=%s\nstart=%s\npgid=%s\n' "$__cw" "$__ct0" "$__cpg"; printf '%s\n' "$@"; } > "$__cmd/$__cm" 2>/dev/null; }
if [ -n "$__cm" ]; then
  [ -d "$__cmd" ] || (umask 077; mkdir -p "$__cmd") 2>/dev/null || __cm=
  __cmk state=running
fi
__cnap() { sleep 0.25 2>/dev/null || sleep 1; }
__cwatch() { __corig=$__cpp __cfirst=__cnap
  # sshd closes the session's stdin when the command has ended or the connection is gone:
  # look then rather than after a first nap (the command may still run: then poll).
  if [ "$__cin" = 1 ]; then
    while read -r __cl; do :; done
    # sshd has reaped the command before it closes that stdin: a pid gone is a command ended.
    if kill -0 "$__cw" 2>/dev/null; then __cfirst=:; else __cfirst=false; fi
  fi
  while $__cfirst; do __cfirst=__cnap
    if [ -r /proc/self/stat ]; then
      read -r __cl < /proc/self/stat || break
      __cl=${__cl##*") "}; set -- $__cl; [ "$2" = "$__cw" ] || break
      __cst "$__cw" || break
      if [ -n "$__cup" ]; then __cpar "$__cpp" || break; fi
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
if [ "$__cin" = 1 ]; then
  exec 9<&0 </dev/null
  (exec <&9 9<&- >/dev/null 2>&1; __cwatch) &
  exec 9<&-
else
  [ -z "$__cin" ] || exec </dev/null
  (exec </dev/null >/dev/null 2>&1; __cwatch) &
fi
if [ -n "$__cs" ]; then eval "$__cs"; fi
unset __cs __cf __ce __cl __cin
case $__cx in
  a) exec "$@" ;;
  s) exec sh -c "$1" ;;
  *) exec "${SHELL:-sh}" -c "$1" ;;
esac
"#;

pub(crate) fn quote(s: &str) -> Result<String, TransportError> {
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

/// Whether an SSH command's stdin stays open and empty until the command ends (no end-of-file
/// sent, mode + `w`): nothing is to be sent on it, not even sudo's password.
pub fn holds_stdin(req: &ExecRequest<'_>, password: bool) -> bool {
    req.stdin.is_none() && !password
}

/// The wrapper's arguments for a remote shell: as `wrapper_args`, the mode marked `w` when the
/// session's stdin is held for the watcher.
fn remote_args(req: &ExecRequest<'_>, spec: Option<&str>, password: bool) -> Vec<String> {
    let mut args = wrapper_args(req, spec, TextShell::Login);
    if holds_stdin(req, password) {
        args[2].push('w');
    }
    args
}

/// What a text the login shell runs starts with: zsh is put in its `sh` emulation. As zsh, it
/// splits no unquoted expansion into words and fails a command whose pattern matches nothing,
/// so the wrapper's reading of `/proc/PID/stat` came out empty: a marker without the command's
/// start time, and a watcher that stopped at its first look and marked the command done while it
/// still ran. dash, bash, ksh93 and mksh skip the line.
pub const POSIX_PRELUDE: &str = "[ -z \"${ZSH_VERSION:-}\" ] || emulate sh\n";

/// The single line a remote login shell runs: `cd` and environment (when they carry no
/// secret), the wrapper's arguments, then the wrapper.
pub fn remote_line(req: &ExecRequest<'_>, spec: Option<&str>) -> Result<String, TransportError> {
    let mut line = String::from(POSIX_PRELUDE);
    if spec.is_none() {
        if let Some(dir) = req.cwd {
            let _ = writeln!(line, "cd {} || exit 127", quote(dir)?);
        }
        for (k, v) in req.env {
            let _ = writeln!(line, "export {k}={}", quote(v)?);
        }
    }
    line.push_str("set --");
    for a in remote_args(req, spec, false) {
        let _ = write!(line, " {}", quote(&a)?);
    }
    line.push('\n');
    line.push_str(WRAPPER);
    Ok(line)
}

/// The line a remote login shell runs for a bare command (`ExecRequest::bare`): `cd` and
/// environment, then the command itself: an argv is `exec`ed (the login shell becomes it, no
/// fork), a text is the login shell's, as through the wrapper.
pub fn bare_line(req: &ExecRequest<'_>) -> Result<String, TransportError> {
    let mut line = String::new();
    if let Some(dir) = req.cwd {
        let _ = writeln!(line, "cd {} || exit 127", quote(dir)?);
    }
    for (k, v) in req.env {
        let _ = writeln!(line, "export {k}={}", quote(v)?);
    }
    match req.command {
        Command::Argv(a) if a.is_empty() => return Err(TransportError::Other("empty argv".into())),
        Command::Argv(a) => {
            line.push_str("exec");
            for w in a {
                let _ = write!(line, " {}", quote(w)?);
            }
        }
        Command::Shell(t) => line.push_str(t),
    }
    line.push('\n');
    Ok(line)
}

/// The line a remote login shell runs for a command with `become`: `sudo -u USER` runs `sh` with
/// the wrapper (and the command's directory and environment, which sudo would drop); the markers
/// stay in the login's home, whose path the login shell gives. With `password`, sudo reads it
/// from the first line of stdin (`-S`, no prompt, `-k`: asked every time, so the line is never
/// left for the command to read).
pub fn become_line(
    req: &ExecRequest<'_>,
    spec: Option<&str>,
    user: &str,
    password: bool,
) -> Result<String, TransportError> {
    // CAPSTAN_MARKERS: for the resume's marker scan, itself a command run this way.
    let mut inner = String::from("__cmd=$1; shift\n__cb=1\nexport CAPSTAN_MARKERS=\"$__cmd\"\n");
    if spec.is_none() {
        if let Some(dir) = req.cwd {
            let _ = writeln!(inner, "cd {} || exit 127", quote(dir)?);
        }
        for (k, v) in req.env {
            let _ = writeln!(inner, "export {k}={}", quote(v)?);
        }
    }
    inner.push_str(WRAPPER);
    let mut line = String::new();
    if req.marker.is_some() {
        // Made by the login, so that its own later scans can clear the markers in it.
        line.push_str(
            "[ -d \"$HOME/.capstan/markers\" ] || (umask 077; mkdir -p \"$HOME/.capstan/markers\")\n",
        );
    }
    let sudo = if password {
        "sudo -k -S -p ''"
    } else {
        "sudo -n"
    };
    let _ = write!(
        line,
        "exec {sudo} -u {} -- sh -c {} capstan-wrap \"$HOME/.capstan/markers\"",
        quote(user)?,
        quote(&inner)?
    );
    let mut args = remote_args(req, spec, password);
    if let Some(s) = spec {
        // The spec file is in the login's home; under sudo, $HOME is the other user's.
        args[1] = format!("\u{0}{s}");
    }
    for a in args {
        if let Some(rel) = a.strip_prefix('\u{0}') {
            let _ = write!(line, " \"$HOME\"/{}", quote(rel)?);
        } else {
            let _ = write!(line, " {}", quote(&a)?);
        }
    }
    line.push('\n');
    Ok(line)
}

/// Whether a command's stderr is sudo refusing to run it (exit 1 and nothing on stdout besides):
/// no password it could use, the login not allowed, a wrong password.
pub fn sudo_refused(stderr: &str) -> bool {
    let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    first.starts_with("sudo: ")
        || first.contains("is not in the sudoers file")
        || first.contains("is not allowed to execute")
        || first.starts_with("Sorry, try again")
        || first.starts_with("Sorry, user ")
}

/// Puts a staged upload in place as the become user: `$1` the staged file (in the login's
/// home), `$2` the target, `$3` the mode (octal). A copy beside the target takes the mode asked
/// and the owner of the file it replaces, then is renamed over it; the staged file is removed.
pub const PLACE: &str = r#"src=$1 dst=$2 mode=$3
tmp=$(dirname -- "$dst")/.$(basename -- "$dst").capstan-$$
cp -- "$src" "$tmp" || { rm -f -- "$src"; exit 1; }
rm -f -- "$src"
chmod "$mode" "$tmp" || { rm -f -- "$tmp"; exit 1; }
if [ -e "$dst" ]; then chown "$(stat -c %u:%g -- "$dst")" "$tmp" 2>/dev/null || true; fi
mv -f -- "$tmp" "$dst" || { rm -f -- "$tmp"; exit 1; }
"#;

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
pub const SCAN: &str = r#"__cmd=${CAPSTAN_MARKERS:-${HOME:-/tmp}/.capstan/markers}
[ -d "$__cmd" ] || exit 0
__val() { sed -n "s/^$1=//p" "$2" | tail -n 1; }
__alive() { [ -n "$1" ] || return 1; kill -0 "$1" 2>/dev/null || return 1
  [ -r "/proc/$1/stat" ] || return 0; read -r __l < "/proc/$1/stat" || return 1
  __l=${__l##*") "}; set -- $__l; [ -z "$__want" ] || [ "${20}" = "$__want" ]; }
for __m in "$__cmd/$1".*; do
  [ -f "$__m" ] || continue
  __n=${__m##*/}
  __st=$(__val state "$__m"); __pid=$(__val pid "$__m"); __want=$(__val start "$__m")
  __pg=$(__val pgid "$__m")
  if [ "$__st" = done ]; then echo "done $__n"; rm -f "$__m"; continue; fi
  if ! __alive "$__pid"; then echo "gone $__n"; rm -f "$__m"; continue; fi
  if [ "$2" = kill ]; then
    kill -KILL -- "-${__pg:-$__pid}" 2>/dev/null || kill -KILL "$__pid"
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
pub const CLEAR: &str =
    r#"rm -f "${CAPSTAN_MARKERS:-${HOME:-/tmp}/.capstan/markers}/$1".* 2>/dev/null; exit 0"#;
