//! Commands served by a held script on its own channel: no SSH session, login shell or watcher each.
//!
//! A run that holds a host's lock keeps the script that took it on a channel of the run's SSH
//! session (`Transport::exec_held`). Every SSH session costs the host a fork of sshd and a login
//! shell, and the wrapper forks a watcher beside each command: about 3 ms of the host's CPU per
//! command, more than the command itself when it is brief. So that script, once it holds the
//! lock, also runs the run's plain commands sent on its stdin, one at a time:
//!
//! - capstan writes `run NONCE MARKER TEXT`, one line: TEXT is the command as the wrapper would
//!   run it (`cd`, exports, then `exec` of the argv, or the login shell with the text), MARKER
//!   the action's marker or `-`;
//! - the script forks a subshell that forks the command (which writes its marker, the pid and
//!   start time read once from `/proc/self/stat`, then becomes the program), waits for it, marks
//!   the marker done and prints `NONCE STATUS` on stdout and `NONCE` on stderr: everything
//!   before those is the command's output;
//! - meanwhile the script waits on its stdin for the next line; at its end without a release
//!   (capstan killed, the connection cut, a command's timeout, which cuts the connection) it
//!   marks a running command orphaned and kills it with every process it started that is still
//!   its descendant, as the wrapper's watcher kills the command's group.
//!
//! The differences, named in docs/recovery.md: the shell reports a command killed by signal N
//! as status 128+N, so a served command's status above 128 reads as that signal; a process the
//! command left running that still holds its stdout does not make the command wait (over a
//! session of its own the command would not end until it let go); and on a lost connection a
//! process the running command started is killed only while it is still its descendant.
//!
//! Served only what goes without the wrapper's other duties: no input, no secret, no `become`,
//! one line; on a host whose `/proc` lists a process's children (Linux). The rest, and every
//! command of a run without the lock, gets a session of its own.

use std::fmt::Write as _;
use std::io::Read as _;
use std::sync::atomic::{AtomicU64, Ordering};

use super::wrap::{needs_spec, quote};
use super::{Command, ExecRequest};

/// The line a held script prints before it says it holds, when it can serve (see [`SERVER`]).
pub const HELLO: &str = "capstan-serves";

/// Shell functions a held script includes to serve (POSIX sh; dash, bash, ksh, mksh, zsh in its
/// `sh` emulation). `capstan_serve_hello` prints [`HELLO`] when this host can serve;
/// `capstan_serve` serves `run` lines until another line (left in `__svl`, return 0) or the end
/// of its stdin (the running command killed, return 1). Its variables start with `__sv`.
pub const SERVER: &str = r#"__svs= __svm= __svl=
__svd=${CAPSTAN_MARKERS:-${HOME:-/tmp}/.capstan/markers}
capstan_serve_hello() {
    [ -r /proc/self/stat ] && [ -r "/proc/$$/task/$$/children" ] || return 0
    echo capstan-serves
}
capstan_serve() {
    while IFS= read -r __svl; do
        case $__svl in
        "run "*) __svrun "${__svl#run }" ;;
        *) [ -z "$__svs" ] || wait "$__svs" 2>/dev/null; return 0 ;;
        esac
    done
    __svorphan
    __svl=
    return 1
}
# One command: S, a subshell, forks C, which writes the marker and becomes the command; S waits,
# marks it done and prints the ends. The script itself returns to its stdin at once.
__svrun() {
    # The one before has ended (capstan read its ends): reaped here, its pid not kept.
    [ -z "$__svs" ] || wait "$__svs" 2>/dev/null
    __svn=${1%% *} __svl=${1#* }
    __svm=${__svl%% *} __svt=${__svl#* }
    [ "$__svm" != - ] || __svm=
    (
        exec </dev/null
        (
            if [ -n "$__svm" ]; then
                { [ -d "$__svd" ] || (umask 077; mkdir -p "$__svd"); } 2>/dev/null &&
                    read -r __svl < /proc/self/stat &&
                    __svp=${__svl%% *} && __svl=${__svl##*") "} && set -- $__svl &&
                    printf 'pid=%s\nstart=%s\nstate=running\n' "$__svp" "${20}" > "$__svd/$__svm" 2>/dev/null
            fi
            set --
            eval "$__svt"
        ) &
        wait $!
        __svr=$?
        if [ -n "$__svm" ] && [ -f "$__svd/$__svm" ]; then printf 'state=done\n' >> "$__svd/$__svm"; fi
        printf '%s %s\n' "$__svn" "$__svr"
        printf '%s\n' "$__svn" >&2
    ) &
    __svs=$!
}
# The stdin's end with a command running: it is orphaned, and goes with what it started.
__svorphan() {
    [ -n "$__svs" ] || return 0
    read -r __svl < "/proc/$__svs/stat" 2>/dev/null || return 0
    __svl=${__svl##*") "}; set -- $__svl
    [ "$1" != Z ] && [ "$2" = "$$" ] || return 0
    if [ -n "$__svm" ] && [ -f "$__svd/$__svm" ]; then printf 'state=orphaned\n' >> "$__svd/$__svm"; fi
    # Stopped first, so that none forks past the kill; then every descendant killed.
    __sva=; __svtree "$__svs"; kill -STOP $__sva 2>/dev/null
    __sva=; __svtree "$__svs"; kill -KILL $__sva 2>/dev/null
}
__svtree() {
    __sva="$__sva $1"
    for __svk in /proc/"$1"/task/*/children; do
        __svc=
        read -r __svc < "$__svk" 2>/dev/null
        for __svc in $__svc; do __svtree "$__svc"; done
    done
}
"#;

/// The line that asks a serving script to run `req`, or `None` when it must have a session of
/// its own: input to send, a secret, a command that is not one line, an empty argv.
pub fn request(req: &ExecRequest<'_>, nonce: &str) -> Option<String> {
    if needs_spec(req) || req.stdin.is_some() {
        return None;
    }
    let marker = req.marker.unwrap_or("-");
    if marker.is_empty() || marker.contains(|c: char| c.is_whitespace() || c == '/') {
        return None;
    }
    let mut line = format!("run {nonce} {marker} ");
    if let Some(dir) = req.cwd {
        let _ = write!(line, "cd {} || exit 127; ", quote(dir).ok()?);
    }
    for (k, v) in req.env {
        let _ = write!(line, "export {k}={}; ", quote(v).ok()?);
    }
    match req.command {
        Command::Argv(a) if a.is_empty() => return None,
        Command::Argv(a) => {
            line.push_str("exec");
            for w in a {
                let _ = write!(line, " {}", quote(w).ok()?);
            }
        }
        // capstan's own brief text is the shell's, as over a session of its own (`bare_line`);
        // a playbook's goes to the login shell, as the wrapper runs it.
        Command::Shell(t) if req.bare => line.push_str(t),
        Command::Shell(t) => {
            let _ = write!(line, "exec \"${{SHELL:-sh}}\" -c {}", quote(t).ok()?);
        }
    }
    if line.contains(['\n', '\r']) {
        return None;
    }
    line.push('\n');
    Some(line)
}

/// A word no command prints by chance: 128 random bits in hex (the clock and a count where the
/// system has no `/dev/urandom`).
pub fn nonce() -> String {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let mut b = [0u8; 16];
    let random = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    if random.is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        b[..8].copy_from_slice(&t.to_le_bytes());
        b[8..].copy_from_slice(&COUNT.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    }
    b.iter().fold(String::with_capacity(32), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

/// Finds where a served command's output ends on each stream: stdout up to `NONCE STATUS\n`,
/// stderr up to `NONCE\n`. What comes before is handed on as it arrives, but for a tail as long
/// as the nonce less one (it may be the nonce's beginning); what comes after is dropped.
pub struct Ends {
    nonce: Vec<u8>,
    pending: [Vec<u8>; 2],
    done: [bool; 2],
    status: Option<i32>,
}

impl Ends {
    pub fn new(nonce: &str) -> Self {
        Ends {
            nonce: nonce.as_bytes().to_vec(),
            pending: [Vec::new(), Vec::new()],
            done: [false; 2],
            status: None,
        }
    }

    /// Takes `data` read from `stream` (0 stdout, 1 stderr); `deliver` gets the command's own.
    pub fn feed(&mut self, stream: usize, data: &[u8], deliver: &mut dyn FnMut(&[u8])) {
        if self.done[stream] {
            return;
        }
        let p = &mut self.pending[stream];
        p.extend_from_slice(data);
        match find(p, &self.nonce) {
            Some(i) => {
                if stream == 0 {
                    let rest = &p[i + self.nonce.len()..];
                    let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                        // The status is still on its way: keep the nonce, hand on what is before.
                        deliver(&p[..i]);
                        p.drain(..i);
                        return;
                    };
                    let status = String::from_utf8_lossy(&rest[..nl]);
                    self.status = Some(status.trim().parse().unwrap_or(-1));
                }
                deliver(&p[..i]);
                p.clear();
                self.done[stream] = true;
            }
            None => {
                let keep = self.nonce.len() - 1;
                if p.len() > keep {
                    let cut = p.len() - keep;
                    deliver(&p[..cut]);
                    p.drain(..cut);
                }
            }
        }
    }

    /// Both streams have ended.
    pub fn complete(&self) -> bool {
        self.done == [true, true]
    }

    /// The command's exit code and signal, as an SSH exit request gives them: a status above
    /// 128 that names a signal is that signal (the shell's convention; see the module's doc).
    pub fn outcome(&self) -> (Option<i32>, Option<String>) {
        match self.status {
            Some(s) if (129..=128 + 64).contains(&s) => (None, Some(super::signal_name(s - 128))),
            s => (s, None),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let mut from = 0;
    while from + needle.len() <= hay.len() {
        let i = from
            + hay[from..=hay.len() - needle.len()]
                .iter()
                .position(|&b| b == first)?;
        if hay[i..].starts_with(needle) {
            return Some(i);
        }
        from = i + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(ends: &mut Ends, pieces: &[(usize, &[u8])]) -> [Vec<u8>; 2] {
        let mut got = [Vec::new(), Vec::new()];
        for (s, d) in pieces {
            let mut out = Vec::new();
            ends.feed(*s, d, &mut |b| out.extend_from_slice(b));
            got[*s].extend_from_slice(&out);
        }
        got
    }

    #[test]
    fn the_ends_are_found_across_pieces_and_only_the_commands_output_is_handed_on() {
        let n = "0123456789abcdef0123456789abcdef";
        let out = format!("no newline at the end{n} 7\n");
        let err = format!("warn: 0123 is not it\n{n}\n");
        // Every split of both streams into two pieces, interleaved.
        for cut in 0..out.len() {
            let ecut = cut.min(err.len());
            let mut e = Ends::new(n);
            let got = run(
                &mut e,
                &[
                    (0, &out.as_bytes()[..cut]),
                    (1, &err.as_bytes()[..ecut]),
                    (0, &out.as_bytes()[cut..]),
                    (1, &err.as_bytes()[ecut..]),
                ],
            );
            assert!(e.complete(), "cut at {cut}");
            assert_eq!(got[0], b"no newline at the end", "cut at {cut}");
            assert_eq!(got[1], b"warn: 0123 is not it\n", "cut at {cut}");
            assert_eq!(e.outcome(), (Some(7), None));
        }
        // A byte at a time, and what comes after the end is not the command's.
        let mut e = Ends::new(n);
        let mut got = Vec::new();
        for b in format!("{out}late output\n").as_bytes() {
            e.feed(0, std::slice::from_ref(b), &mut |x| {
                got.extend_from_slice(x)
            });
        }
        assert_eq!(got, b"no newline at the end");
        assert!(!e.complete(), "stderr has not ended");
    }

    #[test]
    fn a_status_above_128_reads_as_the_signal_it_names() {
        let n = "ffffffffffffffffffffffffffffffff";
        for (status, want) in [
            ("0", (Some(0), None)),
            ("128", (Some(128), None)),
            ("143", (None, Some("TERM".to_string()))),
            ("137", (None, Some("KILL".to_string()))),
            ("255", (Some(255), None)),
        ] {
            let mut e = Ends::new(n);
            run(&mut e, &[(0, format!("{n} {status}\n").as_bytes())]);
            assert_eq!(e.outcome(), want, "{status}");
        }
    }

    #[test]
    fn a_request_is_one_line_or_none() {
        let never = std::sync::atomic::AtomicBool::new(false);
        let argv = Command::Argv(vec!["echo".into(), "it's".into()]);
        let r = ExecRequest::plain(&argv, std::time::Duration::from_secs(1), 10, &never);
        assert_eq!(
            request(&r, "N").as_deref(),
            Some("run N - exec echo \"it's\"\n")
        );
        let two = Command::Argv(vec!["printf".into(), "a\nb".into()]);
        let r = ExecRequest::plain(&two, std::time::Duration::from_secs(1), 10, &never);
        assert_eq!(request(&r, "N"), None, "a word with a newline");
        let base = ExecRequest::plain(&argv, std::time::Duration::from_secs(1), 10, &never);
        assert_eq!(request(&base.with_stdin(b"x"), "N"), None, "input to send");
        let text = Command::Shell("echo $HOME | wc -c".into());
        let mut r = ExecRequest::plain(&text, std::time::Duration::from_secs(1), 10, &never);
        r.marker = Some("run1.1.3");
        assert_eq!(
            request(&r, "N").as_deref(),
            Some("run N run1.1.3 exec \"${SHELL:-sh}\" -c 'echo $HOME | wc -c'\n")
        );
        assert_eq!(
            request(&r.without_wrapper(), "N").as_deref(),
            Some("run N run1.1.3 echo $HOME | wc -c\n")
        );
    }

    /// Processes whose command line contains `needle`.
    fn processes_with(needle: &str) -> Vec<String> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| {
                let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                cmd.contains(needle).then_some(cmd)
            })
            .collect()
    }

    fn serving(shell: &str, home: &std::path::Path) -> std::process::Child {
        use std::process::Stdio;
        let text = format!(
            "{}{SERVER}capstan_serve_hello\necho holding\ncapstan_serve\necho \"returned $? $__svl\"\n",
            super::super::wrap::POSIX_PRELUDE
        );
        std::process::Command::new(shell)
            .arg("-c")
            .arg(text)
            .env("HOME", home)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn wait_for(path: &std::path::Path, what: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let m = std::fs::read_to_string(path).unwrap_or_default();
            if m.lines().last() == Some(what) {
                return m;
            }
            assert!(std::time::Instant::now() < deadline, "{what}: {m}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// The serving functions in every login shell they meet over SSH (dash, bash, zsh, ksh93,
    /// mksh): a command's marker while it runs and once it ended, its output and status before
    /// its ends, the next line handed back; and at the end of its stdin mid-command, the command
    /// and the process it started killed, the marker orphaned.
    #[test]
    fn the_server_runs_commands_and_kills_the_running_one_at_its_stdins_end() {
        use std::io::{BufRead, BufReader, Read, Write};
        for (i, shell) in ["sh", "bash", "zsh", "ksh93", "mksh"].iter().enumerate() {
            let home = tempfile::tempdir().unwrap();
            let markers = home.path().join(".capstan/markers");
            let mut child = serving(shell, home.path());
            let mut stdin = child.stdin.take().unwrap();
            let mut out = BufReader::new(child.stdout.take().unwrap());
            let mut line = || {
                let mut l = String::new();
                out.read_line(&mut l).unwrap();
                l
            };
            assert_eq!(line(), "capstan-serves\n", "{shell}");
            assert_eq!(line(), "holding\n", "{shell}");
            stdin
                .write_all(b"run N1 run-1.1.1 exec sleep 0.4\n")
                .unwrap();
            let m = wait_for(&markers.join("run-1.1.1"), "state=running");
            let start = m.lines().find_map(|l| l.strip_prefix("start="));
            assert!(
                start.is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())),
                "{shell}: {m}"
            );
            assert_eq!(line(), "N1 0\n", "{shell}");
            wait_for(&markers.join("run-1.1.1"), "state=done");
            stdin
                .write_all(b"run N2 - cd /tmp || exit 127; export K='a b'; echo \"$K $(pwd)\"; echo err >&2; exit 3\n")
                .unwrap();
            assert_eq!(line(), "a b /tmp\n", "{shell}");
            assert_eq!(line(), "N2 3\n", "{shell}");
            stdin.write_all(b"release markers\n").unwrap();
            assert_eq!(line(), "returned 0 release markers\n", "{shell}");
            assert!(child.wait().unwrap().success());
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            assert_eq!(err, "N1\nerr\nN2\n", "{shell}");

            // Its stdin's end mid-command.
            let mut child = serving(shell, home.path());
            let mut stdin = child.stdin.take().unwrap();
            let (a, b) = (format!("sleep 3{i}.25"), format!("sleep 3{i}.5"));
            stdin
                .write_all(format!("run N3 run-1.1.2 exec sh -c '{a} & {b}'\n").as_bytes())
                .unwrap();
            let m = wait_for(&markers.join("run-1.1.2"), "state=running");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while processes_with(&a).is_empty() || processes_with(&b).is_empty() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{shell}: never started"
                );
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            drop(stdin);
            let mut rest = String::new();
            child
                .stdout
                .take()
                .unwrap()
                .read_to_string(&mut rest)
                .unwrap();
            assert_eq!(rest, "capstan-serves\nholding\nreturned 1 \n", "{shell}");
            child.wait().unwrap();
            let m2 = std::fs::read_to_string(markers.join("run-1.1.2")).unwrap();
            assert_eq!(m2, format!("{m}state=orphaned\n"), "{shell}");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            loop {
                let left = [processes_with(&a), processes_with(&b)].concat();
                if left.is_empty() {
                    break;
                }
                assert!(std::time::Instant::now() < deadline, "{shell}: {left:?}");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }

    #[test]
    fn nonces_differ() {
        let (a, b) = (nonce(), nonce());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
