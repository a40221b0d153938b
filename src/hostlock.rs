//! The maintenance lock on the hosts themselves: a directory made atomically, naming its holder.
//!
//! Every operation is one POSIX shell script run on the host over its transport (`mkdir` is
//! atomic on every POSIX file system, and the holder file is replaced by `mv`). The lease is
//! judged by the host's own clock, so the controllers' clocks do not matter.

/// Where the lock lives on a host unless the inventory's `host_lock` or the host's environment
/// (`CAPSTAN_HOST_LOCK`, e.g. from sshd's `SetEnv`) says otherwise. /var/tmp is writable by every
/// login, sticky (nobody removes another login's lock) and survives a reboot.
pub const DEFAULT_DIR: &str = "/var/tmp/capstan-host-lock";

/// What a host's lock says about who holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holder {
    pub run: String,
    pub operator: String,
    pub controller: String,
    pub pid: String,
    /// Unix seconds, by the host's clock.
    pub taken: u64,
    pub lease_until: u64,
}

impl Holder {
    /// `run R (alice on laptop-a, pid 4242)`.
    pub fn who(&self) -> String {
        if self.run.is_empty() {
            return "an unknown holder (the lock directory has no holder file)".to_string();
        }
        format!(
            "run {} ({} on {}, pid {})",
            self.run, self.operator, self.controller, self.pid
        )
    }
}

/// What a lock operation found or did on one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// The lock is ours now (made, or it was ours already).
    Taken,
    /// Ours now; it was another run's, whose lease had expired.
    TakenOver {
        was: Holder,
    },
    /// Another run's (or ownerless); `now` is the host's clock.
    Held {
        holder: Holder,
        now: u64,
    },
    /// No lock (`read`).
    Free,
    Renewed,
    /// Our lease was renewed too late: another run has it now.
    Lost {
        holder: Holder,
    },
    Released,
    /// The lock could not be made or written (permissions, a full disk).
    Error(String),
}

/// An operation on a host's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Make it, or refresh it when it is this run's.
    Take,
    /// As `Take`, and also take it from a holder whose lease has expired (or an ownerless one).
    TakeOver,
    /// Extend this run's lease.
    Renew,
    /// Remove it when it is this run's.
    Release,
    /// Say who holds it; change nothing.
    Read,
}

impl Op {
    fn word(self) -> &'static str {
        match self {
            Op::Take => "take",
            Op::TakeOver => "takeover",
            Op::Renew => "renew",
            Op::Release => "release",
            Op::Read => "read",
        }
    }
}

/// Who asks: written into the holder file.
#[derive(Debug, Clone)]
pub struct Me {
    pub run: String,
    pub operator: String,
    pub controller: String,
    pub pid: u32,
    pub lease_secs: u64,
}

/// The script; its arguments are `argv` below (never spliced into the text).
const SCRIPT: &str = r#"mode=$1 run=$3 op=$4 ctl=$5 pid=$6 lease=$7 extra=${8:-}
d=${2:-${CAPSTAN_HOST_LOCK:-/var/tmp/capstan-host-lock}}
# A release judges no lease: it needs no clock (each program started costs the host a fork and
# an exec; the script starts as few as it can). bash 5, zsh and mksh read the clock themselves;
# other shells start `date`.
now=
if [ "$mode" != release ]; then
    if [ -n "${BASH_VERSION:-}" ]; then
        now=${EPOCHSECONDS:-}
    elif [ -n "${ZSH_VERSION:-}" ]; then
        ! zmodload zsh/datetime 2>/dev/null || now=${EPOCHSECONDS:-}
    else
        case ${KSH_VERSION:-} in *MIRBSD*) now=${EPOCHREALTIME:-}; now=${now%%[!0-9]*} ;; esac
    fi
    case $now in '' | *[!0-9]*) now=$(date +%s) || exit 3 ;; esac
fi
# `got`: the file's text as `$(cat FILE)` gives it, read with the shell's builtins.
slurp() {
    got= n=
    [ -r "$1" ] || return 0
    while IFS= read -r l || [ -n "$l" ]; do
        if [ -z "$n" ]; then got=$l n=1; else got="$got
$l"; fi
    done < "$1"
    while :; do
        case $got in
        *"
") got=${got%"
"} ;;
        *) break ;;
        esac
    done
}
# One reading of the holder file for every decision (another host of this machine may be
# rewriting it at the same moment); a directory just made by someone else gets a moment for its
# holder file to appear.
load() {
    i=0
    while :; do
        slurp "$d/holder"
        cur=$got
        if [ -n "$cur" ] || [ ! -d "$d" ] || [ $i -ge 20 ]; then break; fi
        sleep 0.1
        i=$((i + 1))
    done
    fields
}
# The holder's fields, the first line of each, read with the shell's builtins: a pipeline of
# sed per field made every lock operation a dozen processes on the host.
fields() {
    h_run= h_controller= h_taken= h_until= seen=
    while IFS= read -r l; do
        k=${l%%=*}
        case " $seen " in *" $k "*) continue ;; esac
        seen="$seen $k"
        case $k in
        run) h_run=${l#*=} ;;
        controller) h_controller=${l#*=} ;;
        taken) h_taken=${l#*=} ;;
        lease_until) h_until=${l#*=} ;;
        esac
    done <<EOF
$cur
EOF
}
mine() { [ "$h_run" = "$run" ] && [ "$h_controller" = "$ctl" ]; }
put() {
    printf 'run=%s\noperator=%s\ncontroller=%s\npid=%s\ntaken=%s\nlease_until=%s\n' \
        "$run" "$op" "$ctl" "$pid" "$1" "$((now + lease))" > "$d/.holder.$$" &&
        mv -f "$d/.holder.$$" "$d/holder"
}
# The holder file made only if there is none (a hard link fails on an existing name).
put_new() {
    printf 'run=%s\noperator=%s\ncontroller=%s\npid=%s\ntaken=%s\nlease_until=%s\n' \
        "$run" "$op" "$ctl" "$pid" "$now" "$((now + lease))" > "$d/.holder.$$" || return 2
    ln "$d/.holder.$$" "$d/holder" 2>/dev/null
    r=$?
    rm -f "$d/.holder.$$"
    return $r
}
say() {
    echo "capstan-host-lock: $1 now=$now dir=$d"; printf '%s\n' "$cur"
    [ "$1" != taken ] || hold
    exit 0
}
fail() { echo "capstan-host-lock: error now=$now dir=$d"; echo "reason=$1"; exit 0; }
release() {
    # `release ... markers`: this run's command markers go too (as `wrap::CLEAR`), in the same
    # session and the same `rm`: one command per host at the end of a run, not two.
    load
    m=
    [ "$extra" != markers ] || m=${CAPSTAN_MARKERS:-${HOME:-/tmp}/.capstan/markers}/$run
    if mine; then
        # With the holder go the temporary files of a write cut short (a controller killed while
        # it renewed the lease leaves `.holder.PID`): left there, they would keep `rmdir` from
        # removing the lock, and the next run would find a lock directory with no holder.
        # The directory goes in the same `rm` (`-d`: only once it is empty, never what else a
        # misconfigured lock directory holds). An `rm` without `-d` (BusyBox), or a directory
        # that is not empty, falls back to `rm` and `rmdir`; that `rmdir` fails, harmlessly,
        # where the holder file could not go.
        if [ -n "$m" ]; then
            set -- "$d/holder" "$d"/.holder.* "$d"/.expired.* "$m".*
        else
            set -- "$d/holder" "$d"/.holder.* "$d"/.expired.*
        fi
        rm -fd "$@" "$d" 2>/dev/null || { rm -f "$@" 2>/dev/null; rmdir "$d" 2>/dev/null; }
    elif [ -n "$m" ]; then
        rm -f "$m".* 2>/dev/null
    fi
    cur=; say released
}
# `take ... hold`: a lock taken stays so while this script waits on its stdin (over SSH, the
# session's): a line `release` (or `release markers`) releases it in the same session, with no
# new one; the stdin's end without it (capstan gone, the connection dropped) leaves the lock, as a
# killed run leaves it. The line after the take's answer says it waits. Where capstan gave it the
# functions that serve the run's commands (`capstan_serve`, in the transport's code), it serves
# them meanwhile, and says so first.
hold() {
    [ "$extra" = hold ] || return 0
    if command -v capstan_serve >/dev/null 2>&1; then
        capstan_serve_hello
        echo "capstan-host-lock: holding"
        capstan_serve || exit 0
        req=$__svl
    else
        echo "capstan-host-lock: holding"
        IFS= read -r req || exit 0
    fi
    case $req in
    release) extra= ;;
    "release markers") extra=markers ;;
    *) exit 0 ;;
    esac
    release
}
case $mode in
read) load; [ -d "$d" ] && say held; say free ;;
release) release ;;
renew)
    load
    mine || say lost
    put "$h_taken" || fail "cannot write $d/holder"
    cur=; say renewed ;;
esac
if err=$(mkdir "$d" 2>&1); then
    # The directory is new and ours, so the holder file is written in place (no `mv`): one
    # `write` of a few hundred bytes, and a reader that finds it still empty waits for it.
    printf 'run=%s\noperator=%s\ncontroller=%s\npid=%s\ntaken=%s\nlease_until=%s\n' \
        "$run" "$op" "$ctl" "$pid" "$now" "$((now + lease))" > "$d/holder" ||
        fail "cannot write $d/holder"
    cur=; say taken
fi
[ -d "$d" ] || fail "cannot make $d: $err"
load
if mine; then
    put "$h_taken" || fail "cannot write $d/holder"
    cur=; say taken
fi
until=$h_until
if [ "$mode" = takeover ] && { [ -z "$until" ] || [ "$now" -gt "$until" ]; }; then
    # One taker wins: the expired holder file is moved aside (atomic), and only if what was moved
    # is what was judged expired is the lock taken; else it goes back (another taker was first).
    if [ -n "$cur" ]; then
        if ! mv "$d/holder" "$d/.expired.$$" 2>/dev/null; then
            # Still there, unchanged: not ours to move (another login's lock directory).
            slurp "$d/holder"
            [ "$got" = "$cur" ] &&
                fail "cannot move $d/holder (the expired lock belongs to another login?)"
            load
            say held
        fi
        slurp "$d/.expired.$$"
        if [ "$got" != "$cur" ]; then
            mv -f "$d/.expired.$$" "$d/holder"
            load
            say held
        fi
        rm -f "$d/.expired.$$"
    fi
    # The holder file is gone now (moved aside, or there was none): the first to make it wins.
    put_new
    case $? in
    0) ;;
    2) fail "cannot write in $d (the expired lock belongs to another login?)" ;;
    *) load; say held ;;
    esac
    echo "capstan-host-lock: taken-over now=$now dir=$d"
    printf '%s\n' "$cur" | sed 's/^/was./'
    hold
    exit 0
fi
say held
"#;

/// The script's arguments for `op`: `MODE DIR RUN OPERATOR CONTROLLER PID LEASE`. `dir` empty:
/// the host's `CAPSTAN_HOST_LOCK`, else [`DEFAULT_DIR`].
pub fn args(op: Op, dir: &str, me: &Me) -> Vec<String> {
    [
        op.word(),
        dir,
        &me.run,
        &me.operator,
        &me.controller,
        &me.pid.to_string(),
        &me.lease_secs.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The beginning of the line a holding script answers a release with.
pub const RELEASED: &str = "capstan-host-lock: released";

/// The line the script prints after a take's answer when it holds the lock and waits (`hold`).
pub const HOLDING: &str = "capstan-host-lock: holding";

/// The arguments of a take (or takeover) after which the script stays, waiting on its stdin for
/// [`release_input`]; its stdin's end without it leaves the lock taken. Only the answers of
/// `taken` and `taken-over` are followed by [`HOLDING`]; on any other the script ends.
pub fn holding_args(op: Op, dir: &str, me: &Me) -> Vec<String> {
    let mut a = args(op, dir, me);
    a.push("hold".into());
    a
}

/// What a holding script is sent to release the lock (and the run's markers with it).
pub fn release_input(markers: bool) -> &'static [u8] {
    if markers {
        b"release markers\n"
    } else {
        b"release\n"
    }
}

/// The arguments of a release that also removes run `me.run`'s command markers on the host
/// (what `wrap::CLEAR` does), in the same command.
pub fn release_clearing_markers_args(dir: &str, me: &Me) -> Vec<String> {
    let mut a = args(Op::Release, dir, me);
    a.push("markers".into());
    a
}

/// The command that runs the script with `args` through `sh`: `sh -c SCRIPT sh ARGS...`.
pub fn with_sh(args: Vec<String>) -> Vec<String> {
    let mut v: Vec<String> = ["sh", "-c", SCRIPT, "sh"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.extend(args);
    v
}

/// The script with `args` as one text for a POSIX shell to run itself (`set --`, then the
/// script): over SSH the login shell runs it, as it runs capstan's wrapper (after the same
/// `wrap::POSIX_PRELUDE`), and no `sh` is started on the host. Fails on an argument no shell
/// can take (a NUL).
pub fn as_text(args: &[String]) -> Result<String, String> {
    let set = shlex::try_join(args.iter().map(String::as_str))
        .map_err(|e| format!("cannot quote the lock's arguments: {e}"))?;
    Ok(format!("set -- {set}\n{SCRIPT}"))
}

/// Reads what the script printed.
pub fn parse(out: &str) -> Result<State, String> {
    let mut lines = out.lines();
    let head = lines
        .find(|l| l.starts_with("capstan-host-lock: "))
        .ok_or_else(|| format!("the lock script said nothing readable: {}", out.trim()))?;
    let mut words = head["capstan-host-lock: ".len()..].split(' ');
    let state = words.next().unwrap_or("");
    let now = words
        .find_map(|w| w.strip_prefix("now="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let (mut holder, mut was, mut reason) = (Holder::default(), Holder::default(), String::new());
    for l in lines {
        let (target, l) = match l.strip_prefix("was.") {
            Some(rest) => (&mut was, rest),
            None => (&mut holder, l),
        };
        let Some((k, v)) = l.split_once('=') else {
            continue;
        };
        match k {
            "run" => target.run = v.to_string(),
            "operator" => target.operator = v.to_string(),
            "controller" => target.controller = v.to_string(),
            "pid" => target.pid = v.to_string(),
            "taken" => target.taken = v.parse().unwrap_or(0),
            "lease_until" => target.lease_until = v.parse().unwrap_or(0),
            "reason" => reason = v.to_string(),
            _ => {}
        }
    }
    Ok(match state {
        "taken" => State::Taken,
        "taken-over" => State::TakenOver { was },
        "held" => State::Held { holder, now },
        "free" => State::Free,
        "renewed" => State::Renewed,
        "lost" => State::Lost { holder },
        "released" => State::Released,
        "error" => State::Error(reason),
        other => return Err(format!("the lock script said {other:?}")),
    })
}

/// `4m 10s left` or `expired 2m ago`, by the host's clock.
pub fn lease_text(h: &Holder, now: u64) -> String {
    let fmt = |s: u64| humantime::format_duration(std::time::Duration::from_secs(s)).to_string();
    if h.lease_until >= now {
        format!("lease {} left", fmt(h.lease_until - now))
    } else {
        format!("lease expired {} ago", fmt(now - h.lease_until))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn me(run: &str) -> Me {
        Me {
            run: run.into(),
            operator: "alice".into(),
            controller: "laptop-a".into(),
            pid: 4242,
            lease_secs: 60,
        }
    }

    /// Sets a holder file's lease end in the past, as a killed run's becomes.
    fn expire(file: &str) {
        let text = std::fs::read_to_string(file).unwrap();
        let expired: Vec<String> = text
            .lines()
            .map(|l| {
                if l.starts_with("lease_until=") {
                    "lease_until=1".to_string()
                } else {
                    l.to_string()
                }
            })
            .collect();
        std::fs::write(file, expired.join("\n") + "\n").unwrap();
    }

    fn sh(op: Op, dir: &str, who: &Me) -> State {
        let a = with_sh(args(op, dir, who));
        let out = Command::new(&a[0]).args(&a[1..]).output().unwrap();
        assert!(out.status.success(), "{:?}", out);
        parse(&String::from_utf8_lossy(&out.stdout)).unwrap()
    }

    /// The script with `args` as the login shell runs it over SSH (the prelude, then `as_text`).
    fn login_text(args: &[String]) -> String {
        format!(
            "{}{}",
            crate::transport::wrap::POSIX_PRELUDE,
            as_text(args).unwrap()
        )
    }

    /// run-a's lock in `d` and its marker are gone.
    fn assert_released(shell: &str, d: &str, markers: &std::path::Path) {
        assert!(
            !std::path::Path::new(d).exists(),
            "{shell}: the lock is gone"
        );
        assert!(
            !markers.join("run-a.1.1").exists(),
            "{shell}: its markers too"
        );
    }

    /// The script as the login shell's own text (`as_text`), run by `shell -c`.
    fn text_in(shell: &'static str) -> impl Fn(Op, &str, &Me) -> State + Sync {
        move |op, dir, who| {
            let text = login_text(&args(op, dir, who));
            let out = Command::new(shell).args(["-c", &text]).output().unwrap();
            assert!(out.status.success(), "{shell}: {out:?}");
            parse(&String::from_utf8_lossy(&out.stdout)).unwrap()
        }
    }

    #[test]
    fn one_run_at_a_time_and_a_takeover_only_after_the_lease() {
        lock_rules(&sh);
    }

    /// Over SSH without `become` the login shell runs the script itself: the same rules hold
    /// in dash, bash, ksh93, mksh and zsh (put in its `sh` emulation: as zsh, the release's
    /// `rm` of leftovers that are not there would fail and keep the lock).
    #[test]
    fn the_same_rules_when_the_login_shell_runs_the_script_itself() {
        lock_rules(&text_in("sh"));
        lock_rules(&text_in("bash"));
        lock_rules(&text_in("zsh"));
        lock_rules(&text_in("ksh93"));
        lock_rules(&text_in("mksh"));
        let nul = as_text(&args(Op::Take, "/tmp/a\0b", &me("run-a")));
        assert!(nul.is_err(), "{nul:?}");
    }

    /// Every program the script starts costs the host a fork and an exec: a take starts
    /// `mkdir` (and `date` where the shell has no clock of its own), a release one `rm`. Each
    /// program on a PATH of its own logs its name; the clock read agrees with `date`'s.
    #[test]
    fn a_take_and_a_release_start_one_program_each_where_the_shell_has_a_clock() {
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let log = tmp.path().join("programs");
        for p in [
            "date", "mkdir", "mv", "rm", "rmdir", "ln", "sed", "sleep", "printf",
        ] {
            let real = ["/bin", "/usr/bin"]
                .iter()
                .map(|d| format!("{d}/{p}"))
                .find(|f| std::path::Path::new(f).exists())
                .unwrap();
            let f = bin.join(p);
            std::fs::write(
                &f,
                format!(
                    "#!/bin/sh\necho {p} >> '{}'\nexec {real} \"$@\"\n",
                    log.display()
                ),
            )
            .unwrap();
            let mut perm = std::fs::metadata(&f).unwrap().permissions();
            std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
            std::fs::set_permissions(&f, perm).unwrap();
        }
        let markers = tmp.path().join("markers");
        std::fs::create_dir(&markers).unwrap();
        // mksh has a clock but no `printf` of its own: it starts one for each.
        for (shell, take, release) in [
            ("sh", "date\nmkdir\n", "rm\n"),
            ("bash", "mkdir\n", "rm\n"),
            ("zsh", "mkdir\n", "rm\n"),
            ("mksh", "mkdir\nprintf\nprintf\n", "rm\nprintf\n"),
            ("ksh93", "date\nmkdir\n", "rm\n"),
        ] {
            let shell_path = ["/bin", "/usr/bin"]
                .iter()
                .map(|d| format!("{d}/{shell}"))
                .find(|f| std::path::Path::new(f).exists())
                .unwrap();
            let d = tmp.path().join(format!("lock-{shell}"));
            let d = d.to_str().unwrap();
            let a = me("run-a");
            std::fs::write(markers.join("run-a.1.1"), "state=done\n").unwrap();
            let run = |args: Vec<String>| {
                let _ = std::fs::remove_file(&log);
                let text = login_text(&args);
                let before = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                // Found on the test's PATH; the script sees only `bin`.
                let out = Command::new(&shell_path)
                    .args(["-c", &text])
                    .env("PATH", &bin)
                    .env("CAPSTAN_MARKERS", &markers)
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{shell}: {out:?}");
                let text = String::from_utf8_lossy(&out.stdout).to_string();
                let now: u64 = text
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("now="))
                    .unwrap()
                    .parse()
                    .unwrap_or(0);
                let started = std::fs::read_to_string(&log).unwrap_or_default();
                (parse(&text).unwrap(), now, before, started)
            };
            let (state, now, before, started) = run(args(Op::Take, d, &a));
            assert_eq!(state, State::Taken, "{shell}");
            assert!(now >= before && now <= before + 2, "{shell}: now={now}");
            assert_eq!(started, take, "{shell}: a take");
            let holder = std::fs::read_to_string(format!("{d}/holder")).unwrap();
            assert!(
                holder.starts_with("run=run-a\noperator=alice\ncontroller=laptop-a\npid=4242\n")
                    && holder.contains(&format!("\ntaken={now}\nlease_until={}\n", now + 60)),
                "{shell}: {holder}"
            );
            let (state, _, _, started) = run(release_clearing_markers_args(d, &a));
            assert_eq!(state, State::Released, "{shell}");
            assert_eq!(started, release, "{shell}: a release");
            assert_released(shell, d, &markers);
        }
    }

    /// A take with `hold` answers, says it holds, and waits on its stdin: `release markers`
    /// there releases the lock and the run's markers; the stdin's end without it (capstan
    /// killed, the connection dropped) leaves the lock taken. A takeover holds the same way; a
    /// take refused ends at once. In every login shell the script runs in.
    #[test]
    fn a_held_take_releases_on_its_stdin_and_keeps_the_lock_when_the_stdin_ends() {
        use std::io::{BufRead, BufReader, Write};
        for shell in ["sh", "bash", "zsh", "ksh93", "mksh"] {
            let tmp = tempfile::tempdir().unwrap();
            let d = tmp.path().join("lock");
            let d = d.to_str().unwrap();
            let markers = tmp.path().join("markers");
            std::fs::create_dir(&markers).unwrap();
            let spawn = |args: Vec<String>| {
                let text = login_text(&args);
                Command::new(shell)
                    .args(["-c", &text])
                    .env("CAPSTAN_MARKERS", &markers)
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            };
            // Reads the answer up to the `holding` line, or to the end.
            let answer = |child: &mut std::process::Child| {
                let mut text = String::new();
                let out = BufReader::new(child.stdout.as_mut().unwrap());
                for l in out.lines() {
                    let l = l.unwrap();
                    let done = l == HOLDING;
                    text.push_str(&l);
                    text.push('\n');
                    if done {
                        break;
                    }
                }
                text
            };
            let (a, b) = (me("run-a"), me("run-b"));
            std::fs::write(markers.join("run-a.1.1"), "state=done\n").unwrap();
            let mut held = spawn(holding_args(Op::Take, d, &a));
            let said = answer(&mut held);
            assert_eq!(parse(&said).unwrap(), State::Taken, "{shell}: {said}");
            assert!(said.ends_with(&format!("{HOLDING}\n")), "{shell}: {said}");
            // It holds: another run is refused, and its script does not wait.
            let mut other = spawn(holding_args(Op::Take, d, &b));
            let said_b = answer(&mut other);
            assert!(
                matches!(parse(&said_b).unwrap(), State::Held { .. }) && !said_b.contains(HOLDING),
                "{shell}: {said_b}"
            );
            assert!(other.wait().unwrap().success());
            let mut stdin = held.stdin.take().unwrap();
            stdin.write_all(release_input(true)).unwrap();
            drop(stdin);
            let out = held.wait_with_output().unwrap();
            assert!(out.status.success(), "{shell}");
            assert_eq!(
                parse(&String::from_utf8_lossy(&out.stdout)).unwrap(),
                State::Released,
                "{shell}"
            );
            assert_released(shell, d, &markers);

            // The stdin's end without a release: the lock stays (a killed run's).
            let mut held = spawn(holding_args(Op::Take, d, &a));
            assert_eq!(parse(&answer(&mut held)).unwrap(), State::Taken, "{shell}");
            drop(held.stdin.take());
            assert!(held.wait().unwrap().success());
            assert!(
                matches!(sh(Op::Read, d, &b), State::Held { holder, .. } if holder.run == "run-a"),
                "{shell}: the lock went with the session"
            );
            // Expired, it is taken over, and the takeover holds too.
            expire(&format!("{d}/holder"));
            let mut took = spawn(holding_args(Op::TakeOver, d, &b));
            let said = answer(&mut took);
            assert!(
                matches!(parse(&said).unwrap(), State::TakenOver { was } if was.run == "run-a"),
                "{shell}: {said}"
            );
            assert!(said.ends_with(&format!("{HOLDING}\n")), "{shell}: {said}");
            let mut stdin = took.stdin.take().unwrap();
            stdin.write_all(release_input(false)).unwrap();
            drop(stdin);
            let out = took.wait_with_output().unwrap();
            assert_eq!(
                parse(&String::from_utf8_lossy(&out.stdout)).unwrap(),
                State::Released,
                "{shell}"
            );
            assert_eq!(sh(Op::Read, d, &a), State::Free, "{shell}");
        }
    }

    fn lock_rules(sh: &(dyn Fn(Op, &str, &Me) -> State + Sync)) {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("lock");
        let d = d.to_str().unwrap();
        let (a, mut b) = (me("run-a"), me("run-b"));
        b.operator = "bob".into();
        assert!(SCRIPT.contains(&format!(":-{DEFAULT_DIR}}}")));
        assert_eq!(sh(Op::Read, d, &a), State::Free);
        assert_eq!(sh(Op::Take, d, &a), State::Taken);
        // Taking it again is a refresh (a resume on the same controller).
        assert_eq!(sh(Op::Take, d, &a), State::Taken);
        let State::Held { holder, now } = sh(Op::Take, d, &b) else {
            panic!("b took a's lock")
        };
        assert_eq!(
            (
                holder.run.as_str(),
                holder.operator.as_str(),
                holder.pid.as_str()
            ),
            ("run-a", "alice", "4242")
        );
        assert!(lease_text(&holder, now).ends_with("left"));
        // The lease runs: no takeover yet.
        assert!(matches!(sh(Op::TakeOver, d, &b), State::Held { .. }));
        assert_eq!(
            sh(Op::Renew, d, &b),
            State::Lost {
                holder: holder.clone()
            }
        );
        // Expire a's lease (as a killed run's would), then b may take it over, naming a.
        let file = format!("{d}/holder");
        expire(&file);
        assert!(
            matches!(sh(Op::Take, d, &b), State::Held { .. }),
            "a plain take never takes over"
        );
        let State::TakenOver { was } = sh(Op::TakeOver, d, &b) else {
            panic!("no takeover")
        };
        assert_eq!(was.run, "run-a");
        assert_eq!(sh(Op::Renew, d, &b), State::Renewed);
        // Takers of one expired lock at once: exactly one gets it.
        expire(&file);
        let takers: Vec<Me> = (0..8)
            .map(|i| Me {
                controller: format!("machine-{i}"),
                ..me(&format!("run-t{i}"))
            })
            .collect();
        let states: Vec<State> = std::thread::scope(|s| {
            let handles: Vec<_> = takers
                .iter()
                .map(|t| s.spawn(move || sh(Op::TakeOver, d, t)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let won: Vec<&Me> = takers
            .iter()
            .zip(&states)
            .filter(|(_, s)| matches!(s, State::TakenOver { .. }))
            .map(|(t, _)| t)
            .collect();
        assert_eq!(won.len(), 1, "{states:?}");
        let State::Held { holder, .. } = sh(Op::Read, d, &a) else {
            panic!("no holder")
        };
        assert_eq!(holder.run, won[0].run);
        assert_eq!(sh(Op::Release, d, won[0]), State::Released);
        assert_eq!(sh(Op::Take, d, &b), State::Taken);
        // a's release does not remove b's lock; b's does.
        assert_eq!(sh(Op::Release, d, &a), State::Released);
        assert!(matches!(sh(Op::Read, d, &a), State::Held { .. }));
        assert_eq!(sh(Op::Release, d, &b), State::Released);
        assert_eq!(sh(Op::Read, d, &a), State::Free);
        // A directory that cannot be made is an error, not a lock held by someone.
        let State::Error(why) = sh(Op::Take, "/proc/capstan-no/lock", &a) else {
            panic!("no error")
        };
        assert!(why.contains("cannot make /proc/capstan-no/lock"), "{why}");
    }

    #[test]
    fn the_scripts_reading_of_a_file_is_what_cat_gives() {
        // The holder file is compared as read (an expired lock is taken only if unchanged):
        // the builtin reading must agree with `$(cat FILE)` to the byte.
        let start = SCRIPT.find("slurp() {").unwrap();
        let len = SCRIPT[start..].find("\n}\n").unwrap() + 3;
        let slurp = &SCRIPT[start..start + len];
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("f");
        for text in [
            "run=a\ncontroller=c\n",
            "no newline at the end",
            "\n\nleading empty lines\n",
            "trailing empty lines\n\n\n",
            "  spaces kept  \n\tand tabs\\ and a backslash \\n\n\nin the middle\n",
            "",
            "\n",
        ] {
            std::fs::write(&f, text).unwrap();
            let script = format!(
                "{slurp}slurp \"$1\"; printf '%s|' \"$got\"; printf '%s|' \"$(cat \"$1\")\""
            );
            let out = Command::new("sh")
                .args(["-c", &script, "sh"])
                .arg(&f)
                .output()
                .unwrap();
            let out = String::from_utf8(out.stdout).unwrap();
            let (got, cat) = out[..out.len() - 1].split_once('|').unwrap();
            assert_eq!(got, cat, "{text:?}");
        }
    }

    #[test]
    fn a_release_may_take_the_runs_markers_with_it() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("lock");
        let d = d.to_str().unwrap();
        let markers = tmp.path().join("markers");
        std::fs::create_dir(&markers).unwrap();
        for m in ["run-a.1.4", "run-a.2.1", "run-b.1.4"] {
            std::fs::write(markers.join(m), "state=done\n").unwrap();
        }
        // The same files as the wrapper's own clearing removes.
        let clear = crate::transport::wrap::CLEAR.replace("$1", "$run");
        let place = clear
            .strip_prefix("rm -f \"")
            .and_then(|c| c.split_once("\".*"))
            .map(|(p, _)| p)
            .unwrap();
        assert!(
            SCRIPT.contains(&format!("m={place}\n")) && SCRIPT.contains("\"$m\".*"),
            "{clear}"
        );
        let a = me("run-a");
        assert_eq!(sh(Op::Take, d, &a), State::Taken);
        let both = with_sh(release_clearing_markers_args(d, &a));
        let out = Command::new(&both[0])
            .args(&both[1..])
            .env("CAPSTAN_MARKERS", &markers)
            .output()
            .unwrap();
        assert_eq!(
            parse(&String::from_utf8_lossy(&out.stdout)).unwrap(),
            State::Released
        );
        let left: Vec<String> = std::fs::read_dir(&markers)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left, vec!["run-b.1.4"], "only run-a's markers go");
        assert_eq!(sh(Op::Read, d, &a), State::Free);
        // A plain release leaves markers alone.
        std::fs::write(markers.join("run-a.3.1"), "state=done\n").unwrap();
        assert_eq!(sh(Op::Take, d, &a), State::Taken);
        let out = Command::new("sh")
            .args(&with_sh(args(Op::Release, d, &a))[1..])
            .env("CAPSTAN_MARKERS", &markers)
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(markers.join("run-a.3.1").exists());
    }

    #[test]
    fn a_release_removes_what_an_interrupted_write_left_in_the_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("lock dir");
        let a = me("run-a");
        let ds = d.to_str().unwrap();
        assert_eq!(sh(Op::Take, ds, &a), State::Taken);
        // A renewal killed between writing its temporary file and moving it into place, and a
        // takeover killed after moving an expired holder aside.
        std::fs::write(d.join(".holder.4242"), "run=run-a\n").unwrap();
        std::fs::write(d.join(".expired.4343"), "run=run-0\n").unwrap();
        assert_eq!(sh(Op::Release, ds, &a), State::Released);
        assert!(!d.exists(), "the lock directory is gone");
        assert_eq!(sh(Op::Read, ds, &me("run-b")), State::Free);
        // Another run's leftovers stay while the lock is not ours to release.
        assert_eq!(sh(Op::Take, ds, &a), State::Taken);
        std::fs::write(d.join(".holder.4242"), "x").unwrap();
        assert_eq!(sh(Op::Release, ds, &me("run-b")), State::Released);
        assert!(d.join(".holder.4242").exists() && d.join("holder").exists());
        // A directory with no holder file at all (a take cut short after `mkdir`): held, by
        // nobody known; a takeover takes it at once.
        std::fs::remove_file(d.join("holder")).unwrap();
        let b = me("run-b");
        assert!(
            matches!(sh(Op::Take, ds, &b), State::Held { holder, .. } if holder.run.is_empty())
        );
        assert_eq!(
            sh(Op::TakeOver, ds, &b),
            State::TakenOver {
                was: Holder::default()
            }
        );
    }
}
