//! Taking, renewing and releasing the maintenance lock on every SSH host of a run.

use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use super::{lock, Executor, Fault, FaultKind};
use crate::hostlock::{self, Holder, Me, Op, State};
use crate::inventory::{HostEntry, TransportKind};
use crate::transport::serve;
use crate::transport::wrap::POSIX_PRELUDE;
use crate::transport::{Command, ExecRequest, Transport};
use crate::Mode;

/// The run's host locks: whether they were taken (once, before the first change), which hosts
/// hold one, and the renewal thread.
#[derive(Default)]
pub(crate) struct HostLocks {
    /// `--take-over-lock`: a lock whose lease has expired may be taken.
    pub take_over: bool,
    /// `Some(None)`: taken (or read, under --check); `Some(Some(msg))`: refused.
    done: Option<Option<String>>,
    held: Vec<(HostEntry, Arc<dyn Transport>)>,
    /// Dropped to stop the renewal thread.
    stop: Option<mpsc::Sender<()>>,
    /// The renewal thread, joined before the locks are released: a renewal in flight could
    /// otherwise write the holder file back after the release removed it.
    renewer: Option<std::thread::JoinHandle<()>>,
    /// Set by the renewal thread when another run has taken a lock of ours: no action runs.
    lost: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for HostLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HostLocks({} held)", self.held.len())
    }
}

/// This process as the holder of run `run`'s lock on host `h` (its lease is the host's).
fn me(run: &str, h: &HostEntry) -> Me {
    Me {
        run: run.to_string(),
        operator: crate::journal::operator(),
        controller: crate::journal::controller(),
        pid: std::process::id(),
        lease_secs: h.host_lock_lease.as_secs().max(1),
    }
}

/// Runs one lock operation on host `h` over a transport, in the host's lock directory. A lock
/// taken stays held by the script that took it, on its own channel of the run's session, and is
/// released there at the run's end ([`release`]): no session more per host for the release.
pub(super) fn run_op(t: &dyn Transport, op: Op, h: &HostEntry, run: &str) -> Result<State, String> {
    let dir = h.host_lock.as_deref().unwrap_or("");
    if matches!(op, Op::Take | Op::TakeOver) && h.become_.is_none() {
        return run_script_held(t, hostlock::holding_args(op, dir, &me(run, h)));
    }
    run_script(t, h, hostlock::args(op, dir, &me(run, h)))
}

/// Releases run `run`'s lock on `h` (with the run's command markers when `markers`): through the
/// script that took it when the transport still holds it, else with a release of its own (the
/// session was lost and replaced, a resume releases its killed attempt's lock, or the transport
/// keeps no command). A release is harmless twice: the second finds the lock gone or not ours.
pub(super) fn release(
    t: &dyn Transport,
    h: &HostEntry,
    run: &str,
    markers: bool,
) -> Result<State, String> {
    if let Some(r) = t.finish_held(
        hostlock::release_input(markers),
        hostlock::RELEASED,
        Duration::from_secs(30),
    ) {
        let said = r
            .map_err(|e| e.to_string())
            .and_then(|o| hostlock::parse(&String::from_utf8_lossy(&o.stdout)));
        match said {
            Ok(State::Released) => return Ok(State::Released),
            other => {
                tracing::debug!(host = %h.name, "the holding session did not release: {other:?}")
            }
        }
    }
    let dir = h.host_lock.as_deref().unwrap_or("");
    let me = me(run, h);
    if markers {
        run_script(t, h, hostlock::release_clearing_markers_args(dir, &me))
    } else {
        run_script(t, h, hostlock::args(Op::Release, dir, &me))
    }
}

/// A take that holds the lock (`hostlock::holding_args`): the login shell runs the script, which
/// stays on its channel once it says [`hostlock::HOLDING`], and serves the run's plain commands
/// there meanwhile (`serve::SERVER`): no session, login shell or watcher process for each.
fn run_script_held(t: &dyn Transport, args: Vec<String>) -> Result<State, String> {
    let text = hostlock::as_text(&args)?;
    // Its arguments first (`set -- take ...`), then the functions it serves with, then itself.
    let (set, script) = text.split_once('\n').unwrap_or((&text, ""));
    let cmd = Command::Shell(format!("{POSIX_PRELUDE}{set}\n{}{script}", serve::SERVER));
    let abort = AtomicBool::new(false);
    let (out, kept) = t
        .exec_held(
            &ExecRequest::plain(&cmd, Duration::from_secs(30), 16 * 1024, &abort).without_wrapper(),
            hostlock::HOLDING,
        )
        .map_err(|e| e.to_string())?;
    if !kept && out.code != Some(0) {
        return Err(format!(
            "the lock script exited {:?}: {}",
            out.code,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    hostlock::parse(&String::from_utf8_lossy(&out.stdout))
}

/// Runs the lock script with `args` on host `h`. Brief and capstan's own, it goes bare: no
/// wrapper, so no watcher process beside it. Without `become` the login shell runs the script
/// itself (as it runs the wrapper), so no `sh` is started either; under `become` it is `sh -c`
/// through sudo, as the become user's own shell may be `nologin`.
fn run_script(t: &dyn Transport, h: &HostEntry, args: Vec<String>) -> Result<State, String> {
    let cmd = if h.become_.is_none() {
        Command::Shell(format!("{POSIX_PRELUDE}{}", hostlock::as_text(&args)?))
    } else {
        Command::Argv(hostlock::with_sh(args))
    };
    let abort = AtomicBool::new(false);
    let out = t
        .exec(
            &ExecRequest::plain(&cmd, Duration::from_secs(30), 16 * 1024, &abort).without_wrapper(),
        )
        .map_err(|e| e.to_string())?;
    if out.code != Some(0) {
        return Err(format!(
            "the lock script exited {:?}: {}",
            out.code,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    hostlock::parse(&String::from_utf8_lossy(&out.stdout))
}

fn held_line(host: &str, holder: &Holder, now: u64) -> String {
    if holder.run.is_empty() {
        // No holder file: no time it was taken nor lease to tell (not "taken 1970, expired
        // 56 years ago"); the script lets --take-over-lock take it.
        return format!(
            "{host}: held by {}: a take cut short, or not capstan's; --take-over-lock takes it",
            holder.who()
        );
    }
    format!(
        "{host}: held by {}, taken {}, {}",
        holder.who(),
        crate::journal::format_unix_ms(holder.taken * 1000),
        hostlock::lease_text(holder, now)
    )
}

impl Executor {
    /// Whether a renewal found a lock of ours taken by another run (then nothing more runs).
    pub(crate) fn host_lock_lost(&self) -> Option<String> {
        let l = lock(&self.host_locks).lost.clone();
        let lost = lock(&l).clone();
        lost
    }

    /// Before the first change: takes the lock on every SSH host of the inventory that has one,
    /// all or nothing, and starts renewing the leases; under `--check` reads them and warns about
    /// those another run holds. Runs once.
    pub(crate) fn lock_hosts(&self) -> Result<(), Fault> {
        let mut locks = lock(&self.host_locks);
        if let Some(done) = &locks.done {
            return done
                .clone()
                .map_or(Ok(()), |m| Err(Fault::new(FaultKind::Locked, None, m)));
        }
        let Some(j) = self.journal.get() else {
            locks.done = Some(None);
            return Ok(());
        };
        let hosts: Vec<&HostEntry> = self
            .inventory
            .hosts
            .iter()
            .filter(|h| h.transport == TransportKind::Ssh && h.host_lock.is_some())
            .collect();
        let op = match (self.mode, locks.take_over) {
            (Mode::Check, _) => Op::Read,
            (_, false) => Op::Take,
            (_, true) => Op::TakeOver,
        };
        // Per host: what its lock said, or why it could not be asked.
        let mut results = self.backend.lock_states(self, &hosts, op, &j.run_id);
        results.sort_by(|a, b| a.0.cmp(&b.0));
        // `--no-reach-check`: hosts may be down that the run will not touch; one that cannot
        // be asked is left unlocked, with a warning, rather than stopping the run.
        let reach_check = lock(&self.reach).0;
        let mut unasked = Vec::new();
        let (mut refused, mut broken) = (Vec::new(), Vec::new());
        let mut taken = Vec::new();
        let mut taken_over = Vec::new();
        for (host, r) in results {
            match r {
                Ok(State::Taken) => taken.push(host),
                Ok(State::TakenOver { was }) => {
                    taken_over.push(format!("{host} (from {})", was.who()));
                    taken.push(host);
                }
                // Ours after all: another host of the same machine wrote it meanwhile.
                Ok(State::Held { holder, .. })
                    if holder.run == j.run_id
                        && holder.controller == crate::journal::controller() =>
                {
                    taken.push(host)
                }
                Ok(State::Held { holder, now }) => refused.push(held_line(&host, &holder, now)),
                Ok(State::Free) => {}
                Ok(State::Error(why)) => broken.push(format!("{host}: {why}")),
                Ok(other) => broken.push(format!("{host}: unexpected lock state {other:?}")),
                Err(why) if !reach_check => unasked.push(format!("{host} ({why})")),
                Err(why) => broken.push(format!("{host}: cannot check the host lock: {why}")),
            }
        }
        if !unasked.is_empty() {
            self.log(
                "warn",
                &format!("--no-reach-check: no host lock on {}", unasked.join(", ")),
            );
        }
        if op == Op::Read {
            for r in refused.iter().chain(&broken) {
                self.log(
                    "warn",
                    &format!("host lock: {r}; a real run would be refused (exit 5)"),
                );
            }
            locks.done = Some(None);
            return Ok(());
        }
        let by_name = |n: &str| hosts.iter().copied().find(|h| h.name == n);
        if !refused.is_empty() || !broken.is_empty() {
            // All or nothing: give back what this attempt took.
            if self.backend.hosts().is_some() {
                for h in taken.iter().filter_map(|n| by_name(n)) {
                    let t = self.transport(h);
                    let _ = release(t.as_ref(), h, &j.run_id, false);
                }
            }
            let what = match (refused.is_empty(), broken.is_empty()) {
                (false, true) => "are locked by another run",
                (true, false) => "cannot be locked",
                _ => "are locked by another run or cannot be locked",
            };
            let mut msg = format!(
                "{} of {} host(s) {what}, so nothing was changed:\n  {}",
                refused.len() + broken.len(),
                hosts.len(),
                refused
                    .iter()
                    .chain(&broken)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n  ")
            );
            if !refused.is_empty() {
                msg.push_str("\n(a host lock goes when its run ends; one whose lease has expired, its run killed, can be taken with --take-over-lock)");
            }
            if !broken.is_empty() {
                msg.push_str("\n(the lock directory is `host_lock` in the inventory, else the host's CAPSTAN_HOST_LOCK, else /var/tmp/capstan-host-lock; every login must be able to make it)");
            }
            locks.done = Some(Some(msg.clone()));
            return Err(Fault::new(FaultKind::Locked, None, msg));
        }
        if !taken_over.is_empty() {
            self.log(
                "warn",
                &format!(
                    "--take-over-lock: took the expired host lock on {}",
                    taken_over.join(", ")
                ),
            );
        }
        locks.done = Some(None);
        if let Some(real) = self.backend.hosts() {
            // The locks get transports of their own: a host's session runs one command at a
            // time, and a renewal must not wait behind a command that runs longer than the
            // lease. They connect at the first renewal.
            locks.held = taken
                .iter()
                .filter_map(|n| by_name(n))
                .map(|h| (h.clone(), real.separate(h)))
                .collect();
            if !locks.held.is_empty() {
                let (tx, rx) = mpsc::channel::<()>();
                locks.stop = Some(tx);
                let held = locks.held.clone();
                let lost = locks.lost.clone();
                let run = j.run_id.clone();
                // A third of the shortest lease: two renewals can fail before it runs out.
                let every = held
                    .iter()
                    .map(|(h, _)| h.host_lock_lease)
                    .min()
                    .unwrap_or(Duration::from_secs(300))
                    / 3;
                locks.renewer = Some(std::thread::spawn(move || {
                    renew(held, run, every, rx, lost)
                }));
            }
        }
        Ok(())
    }

    /// Stops the renewals and removes this run's locks (at the end of every attempt), over the
    /// run's own sessions (the renewal's may never have connected).
    pub(crate) fn release_host_locks(&self) {
        let (held, journal, renewer) = {
            let mut locks = lock(&self.host_locks);
            locks.stop = None;
            (
                std::mem::take(&mut locks.held),
                self.journal.get(),
                locks.renewer.take(),
            )
        };
        // The renewal loop sees the stop at its next wait; one in flight finishes first.
        if let Some(r) = renewer {
            let _ = r.join();
        }
        let Some(j) = journal else { return };
        let run = j.run_id.clone();
        let hosts: Vec<HostEntry> = if held.is_empty() && j.attempt > 1 && self.mode == Mode::Run {
            // A resume that changed nothing took no lock, but the attempt it resumes, killed
            // before its end, left its own: released here where they are this run's (the script
            // removes only a lock whose holder is this run from this machine).
            self.inventory
                .hosts
                .iter()
                .filter(|h| h.transport == TransportKind::Ssh && h.host_lock.is_some())
                .cloned()
                .collect()
        } else {
            held.into_iter().map(|(h, _)| h).collect()
        };
        let held: Vec<(HostEntry, Arc<dyn Transport>)> = hosts
            .into_iter()
            .map(|h| {
                let t = self.transport(&h);
                (h, t)
            })
            .collect();
        // Where this attempt left command markers, the release removes them too (one command
        // per host at the end of the run, not two); `clear_markers` does the other hosts.
        let mut marked = lock(&self.marked);
        let clearing: Vec<bool> = held.iter().map(|(h, _)| marked.remove(&h.name)).collect();
        drop(marked);
        let held: Vec<_> = held.into_iter().zip(clearing).collect();
        super::per_host(&held, |((h, t), markers)| {
            let r = release(t.as_ref(), h, &run, *markers);
            if let Err(e) = r {
                tracing::debug!(host = %h.name, "host lock not released: {e}");
            }
        });
    }
}

/// The renewal loop: every `every`, each host's lease is extended by its own length.
fn renew(
    held: Vec<(HostEntry, Arc<dyn Transport>)>,
    run: String,
    every: Duration,
    stop: mpsc::Receiver<()>,
    lost: Arc<Mutex<Option<String>>>,
) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(every) {
        for (h, t) in &held {
            // A failed renewal (the host did not answer) is tried again next time; the lease
            // is three renewals long.
            if let Ok(State::Lost { holder }) = run_op(t.as_ref(), Op::Renew, h, &run) {
                *lock(&lost) = Some(format!(
                    "{}: the host lock was taken by {} while this run held it (its lease ran out before a renewal); nothing more runs",
                    h.name,
                    holder.who()
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_with_no_holder_file_is_named_without_a_time_or_lease() {
        let line = held_line("h1", &Holder::default(), 1_796_500_000);
        assert_eq!(
            line,
            "h1: held by an unknown holder (the lock directory has no holder file): a take cut short, or not capstan's; --take-over-lock takes it"
        );
        let holder = Holder {
            run: "r1".into(),
            operator: "alice".into(),
            controller: "laptop-a".into(),
            pid: "42".into(),
            taken: 1_796_499_940,
            lease_until: 1_796_500_240,
        };
        let line = held_line("h1", &holder, 1_796_500_000);
        assert!(
            line.starts_with("h1: held by run r1 (alice on laptop-a, pid 42), taken 20")
                && line.ends_with("lease 4m left"),
            "{line}"
        );
    }
}
