//! Every effect as data (`Action`), and the `Executor`: the one place that knows the mode.

use std::collections::{BTreeMap, HashMap};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::backup::{BackupInfo, HostShell};
use crate::ddb::{DdbKind, DdbTarget, DdbValue};
use crate::docker::DockerOp;
use crate::error::FaultKind;
pub use crate::error::{last_lines, Fault};
use crate::inventory::{HostEntry, Inventory};
use crate::journal::{ReplayRow, ReplayState, RunJournal};
use crate::replay::{self, Recorded, ReplayBook};
use crate::report::{ActionRecord, Disposition, Event, EventSink, SharedStr};
use crate::sql::{SqlKind, SqlParams, SqlResult, SqlTarget};
use crate::transport::{self, Command, ExecOutput, ExecRequest, Transport, TransportError};
use crate::Mode;

mod backend;
mod cancel;
mod effect;
mod fence;
mod host_lock;
mod live;
mod real;
mod record;
mod simulated;

use backend::{Backend, Kind, Target};
pub use cancel::Cancel;
pub use effect::{Action, Outcome};
use live::LiveOutput;
pub use simulated::Simulated;

use crate::lock;

/// How many hosts a check or clean-up before or after the steps reaches at once: each is a
/// thread with a session, and a fleet of thousands would otherwise open them all together.
const AT_ONCE: usize = 32;

/// `f` for every item, `AT_ONCE` at a time on scoped threads; the results in the items' order.
/// Each thread takes the next item as soon as it is done with one: a slow host holds up only
/// its own thread, not a batch.
fn per_host<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let mut done: Vec<(usize, R)> = Vec::with_capacity(items.len());
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..AT_ONCE.min(items.len()))
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(x) = items.get(i) else { break mine };
                        mine.push((i, f(x)));
                    }
                })
            })
            .collect();
        for w in workers {
            // A panic in `f` is the caller's bug: let it show, as a scope would.
            done.extend(w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        }
    });
    done.sort_unstable_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

/// Largest file `read_file` returns; beyond it the script should use a command that filters.
const MAX_READ: usize = 64 * 1024 * 1024;
/// Output kept per stream for ordinary commands.
const MAX_OUTPUT: usize = 16 * 1024 * 1024;

thread_local! {
    /// The step the current thread is inside, for attributing actions. `parallel` copies it
    /// into the threads it starts.
    /// Shared: every record of the step's actions holds the same name.
    static CURRENT_STEP: std::cell::RefCell<Option<Arc<str>>> = const { std::cell::RefCell::new(None) };
}

/// The step this thread is in.
pub fn current_step() -> Option<String> {
    CURRENT_STEP.with(|s| s.borrow().as_deref().map(str::to_string))
}

/// The step this thread is in, shared with every record made in it.
pub fn current_step_shared() -> Option<Arc<str>> {
    CURRENT_STEP.with(|s| s.borrow().clone())
}

/// Sets this thread's step and returns the previous one (restore it afterwards).
pub fn set_current_step(step: Option<Arc<str>>) -> Option<Arc<str>> {
    CURRENT_STEP.with(|s| std::mem::replace(&mut *s.borrow_mut(), step))
}

/// Performs, skips or simulates actions according to the mode, and records every one.
/// Work the simulation runs after each action of the run (a probe's writes).
pub(crate) type Ticker = Arc<dyn Fn() + Send + Sync>;

thread_local! {
    /// Set while a ticker runs, so its own actions do not tick again.
    static TICKING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The hosts a step's actions touched, in first-touch order, and how many actions it made.
#[derive(Default)]
struct StepTouch {
    hosts: Vec<SharedStr>,
    /// The same hosts, for the membership test: a step over thousands of hosts would otherwise
    /// scan them at every action.
    seen: crate::FastSet<SharedStr>,
    actions: usize,
}

pub struct Executor {
    mode: Mode,
    inventory: Arc<Inventory>,
    /// Where actions take effect; the executor never asks which beyond `Backend::kind`.
    backend: Box<dyn Backend>,
    cancel: Arc<Cancel>,
    events: Arc<dyn EventSink>,
    started: Instant,
    /// The wall clock when the executor was made: a simulation's clock starts there.
    started_wall: std::time::SystemTime,
    seq: AtomicU64,
    /// Per step: the hosts its actions touched (first-touch order) and how many actions ran.
    /// Kept as actions are recorded, so a step's summary costs nothing however long the run.
    per_step: Mutex<crate::FastMap<SharedStr, StepTouch>>,
    /// The inventory's host names, each allocated once and shared by every record of the host.
    names: crate::FastMap<String, SharedStr>,
    /// The texts records repeat (descriptions, results), each kept once.
    texts: crate::report::Interner,
    journal: std::sync::OnceLock<RunJournal>,
    /// Set while a rollback replays a playbook's prologue: mutating actions are skipped.
    hold_writes: AtomicBool,
    /// The first journal write that failed: no action runs after it (the journal is the way back).
    journal_error: Mutex<Option<String>>,
    /// Simulation only: run after each action (see `Ticker`).
    tickers: Mutex<Vec<Ticker>>,
    /// What earlier attempts of this run finished, for a resumed step (see `replay`).
    replay: Mutex<ReplayBook>,
    /// Hosts where this attempt left command markers (cleared when the run ends).
    marked: Mutex<std::collections::BTreeSet<String>>,
    /// Whether every SSH host is reached before the first change (`reach_check`), and the
    /// result once it ran: `Some(None)` all reached, `Some(Some(msg))` some were not.
    reach: Mutex<(bool, Option<Option<String>>)>,
    /// The maintenance locks on the hosts (see `host_lock`).
    host_locks: Mutex<host_lock::HostLocks>,
}

/// What a resume or rollback does with a command of the run's earlier attempt that is still
/// running on a host (its controller was killed and the host kept it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnRunning {
    /// Wait for it to end (up to a bound), then go on; refuse if it is still running.
    #[default]
    Wait,
    /// Kill its process group, then go on.
    Kill,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Executor({:?})", self.mode)
    }
}

impl Executor {
    pub(crate) fn new(
        mode: Mode,
        inventory: Arc<Inventory>,
        world: Option<Arc<Mutex<dyn Simulated>>>,
        cancel: Arc<Cancel>,
        events: Arc<dyn EventSink>,
    ) -> Self {
        let backend: Box<dyn Backend> = match (mode, world) {
            (Mode::Simulate, Some(w)) => Box::new(backend::World(w)),
            (Mode::Simulate, None) => Box::new(backend::Nowhere),
            _ => Box::<backend::Hosts>::default(),
        };
        let names = inventory
            .hosts
            .iter()
            .map(|h| (h.name.clone(), SharedStr::from(h.name.as_str())))
            .collect();
        Executor {
            mode,
            names,
            texts: Default::default(),
            inventory,
            backend,
            cancel,
            events,
            started: Instant::now(),
            started_wall: std::time::SystemTime::now(),
            seq: AtomicU64::new(0),
            per_step: Mutex::default(),
            journal: std::sync::OnceLock::new(),
            hold_writes: AtomicBool::new(false),
            journal_error: Mutex::new(None),
            tickers: Mutex::new(Vec::new()),
            replay: Mutex::new(ReplayBook::default()),
            marked: Mutex::new(Default::default()),
            reach: Mutex::new((true, None)),
            host_locks: Mutex::default(),
        }
    }

    /// Turns off the check that every SSH host answers before the first change (for playbooks
    /// that add hosts as they go, or run with hosts known to be down).
    pub(crate) fn set_reach_check(&self, on: bool) {
        lock(&self.reach).0 = on;
    }

    /// `--take-over-lock`: a host lock whose lease has expired may be taken over.
    pub(crate) fn set_take_over_host_locks(&self, on: bool) {
        lock(&self.host_locks).take_over = on;
    }

    /// Before the first change of a run (or what `--check` would change): connects and
    /// authenticates to every SSH host of the inventory, in parallel, and refuses the change
    /// when some cannot be reached, naming each and why. Runs once; not during cleanup.
    fn reach_all(&self) -> Result<(), Fault> {
        let mut r = lock(&self.reach);
        if !r.0 || self.cancel.is_cleaning() {
            return Ok(());
        }
        if let Some(done) = &r.1 {
            return done
                .clone()
                .map_or(Ok(()), |m| Err(Fault::new(FaultKind::Unreachable, None, m)));
        }
        let hosts: Vec<&HostEntry> = self
            .inventory
            .hosts
            .iter()
            .filter(|h| h.transport == crate::inventory::TransportKind::Ssh)
            .collect();
        let mut failed = self.backend.unreachable(self, &hosts);
        failed.sort();
        let outcome = (!failed.is_empty()).then(|| {
            format!(
                "{} of {} host(s) cannot be reached, so nothing was changed:\n  {}\n(every host is reached before the first change; --no-reach-check turns this off)",
                failed.len(),
                hosts.len(),
                failed.iter().map(|(_, m)| m.as_str()).collect::<Vec<_>>().join("\n  ")
            )
        });
        r.1 = Some(outcome.clone());
        outcome.map_or(Ok(()), |m| Err(Fault::new(FaultKind::Unreachable, None, m)))
    }

    /// The run's journal entry (none for `describe`, `check PLAYBOOK` and the reference engine).
    pub fn journal(&self) -> Option<&RunJournal> {
        self.journal.get()
    }

    /// Binds the executor to its run in the journal (once, before the playbook starts). A later
    /// attempt loads what the earlier ones finished, for replay.
    pub(crate) fn attach_journal(&self, j: RunJournal) -> crate::error::Result<()> {
        if j.attempt > 1 && self.mode == Mode::Run {
            let rows = j.journal.replay_log(&j.run_id)?;
            // Replayed: a step the stop interrupted (still `running` in the journal) and an undo
            // still pending. Not a step or undo that failed: its reads replayed would lead the
            // script to the same failure (a wait that timed out would time out at once).
            let pending_undos: std::collections::HashSet<u64> = j
                .journal
                .undos(&j.run_id)?
                .into_iter()
                .filter(|u| u.status == crate::journal::UndoStatus::Pending)
                .map(|u| u.id)
                .collect();
            let mut live = HashMap::new();
            for r in &rows {
                if !live.contains_key(&r.step) {
                    let runs_again = if let Some(rest) = r.step.strip_prefix("undo #") {
                        rest.split(':')
                            .next()
                            .and_then(|n| n.parse::<u64>().ok())
                            .is_some_and(|id| pending_undos.contains(&id))
                    } else if r.step.starts_with("guard restore: ")
                        || r.step.starts_with("before the rollback: ")
                    {
                        false
                    } else {
                        j.journal
                            .step(&j.run_id, &r.step)?
                            .is_some_and(|s| s.status == crate::report::StepStatus::Running)
                    };
                    live.insert(r.step.clone(), runs_again);
                }
            }
            *lock(&self.replay) = ReplayBook::load(rows, j.attempt, |s| live[s]);
        }
        let _ = self.journal.set(j);
        Ok(())
    }

    /// Adds a line to the run's log (journal and events).
    pub(crate) fn log(&self, level: &str, message: &str) {
        let line = crate::report::LogLine {
            at_ms: self.now().as_millis() as u64,
            level: level.to_string(),
            step: current_step(),
            message: self.inventory.redactor.redact(message),
        };
        tracing::warn!(target: "playbook", "{}", line.message);
        if let Some(j) = self.journal.get() {
            if let Err(e) = j.journal.record_log(&j.run_id, j.attempt, &line) {
                self.journal_failed(&e);
            }
        }
        self.events.emit(&Event::Log(line));
    }

    /// Skips mutating actions (recorded as skipped) while set: a rollback replays the playbook's
    /// top-level code only to rebuild its script context, and must change nothing doing so.
    pub(crate) fn hold_writes(&self, on: bool) {
        self.hold_writes.store(on, Ordering::SeqCst);
    }

    /// Remembers a failed journal write; every later action is refused with it.
    pub(crate) fn journal_failed(&self, e: &crate::error::Error) {
        tracing::error!("journal write failed: {e}");
        crate::lock(&self.journal_error).get_or_insert_with(|| e.to_string());
    }

    /// An executor that refuses every action: for `describe`, `check` and the reference engine.
    pub(crate) fn inert(inventory: Arc<Inventory>) -> Self {
        // Simulate mode without a world is the inert backend.
        Executor::new(
            Mode::Simulate,
            inventory,
            None,
            Arc::new(Cancel::default()),
            Arc::new(crate::report::NoEvents),
        )
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn inventory(&self) -> &Arc<Inventory> {
        &self.inventory
    }

    pub fn cancel(&self) -> &Arc<Cancel> {
        &self.cancel
    }

    /// Time since the run started: simulated time in simulation, wall time otherwise.
    pub fn now(&self) -> Duration {
        self.backend.now(self.started)
    }

    /// Seconds since the Unix epoch: the wall clock, or in simulation the moment the run started
    /// plus the simulated time (so a duration measured with it is the simulated one).
    pub fn clock(&self) -> f64 {
        let at = match self.backend.kind() {
            Kind::World => self.started_wall + self.now(),
            _ => std::time::SystemTime::now(),
        };
        at.duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    }

    /// Waits; in simulation the clock moves instead. Wakes early to honour a stop request.
    pub fn sleep(&self, d: Duration) -> Result<(), Fault> {
        self.backend.sleep(d, &self.cancel)
    }

    /// True when this executor acts on a simulated world.
    pub fn is_simulated(&self) -> bool {
        self.backend.kind() == Kind::World
    }

    pub(crate) fn add_ticker(&self, t: Ticker) {
        crate::lock(&self.tickers).push(t);
    }

    pub(crate) fn clear_tickers(&self) {
        crate::lock(&self.tickers).clear();
    }

    /// The hosts (in first-touch order) and the number of actions recorded for `step`.
    pub fn step_summary(&self, step: &str) -> (Vec<String>, usize) {
        crate::lock(&self.per_step)
            .get(step)
            .map(|t| (t.hosts.iter().map(|h| h.to_string()).collect(), t.actions))
            .unwrap_or_default()
    }

    fn host_entry(&self, host: &str) -> Result<&HostEntry, Fault> {
        self.inventory.host(host).ok_or_else(|| {
            Fault::new(
                FaultKind::BadInput,
                Some(host),
                format!("unknown host `{host}`"),
            )
        })
    }

    fn transport(&self, host: &HostEntry) -> Arc<dyn Transport> {
        self.real().transport(&host.name, host)
    }

    /// The real backend, which only run and check modes have.
    fn real(&self) -> &backend::Hosts {
        self.backend
            .hosts()
            .expect("transports exist only in run and check modes")
    }

    /// The host's transport, or for `h.become(USER)` one that runs everything through
    /// `sudo -u USER` (the inventory's `become_password` when sudo asks), cached per user.
    fn transport_as(
        &self,
        host: &HostEntry,
        user: Option<&str>,
    ) -> Result<Arc<dyn Transport>, Fault> {
        let Some(user) = user else {
            return Ok(self.transport(host));
        };
        if host.become_.as_ref().is_some_and(|b| b.user == user) {
            return Ok(self.transport(host));
        }
        if host.transport != crate::inventory::TransportKind::Ssh {
            return Err(Fault::new(
                FaultKind::BadInput,
                Some(&host.name),
                format!(
                    "{}: become is for SSH hosts; run capstan itself with the privilege a local host needs",
                    host.name
                ),
            ));
        }
        let mut as_user = host.clone();
        as_user.become_ = Some(crate::inventory::Become {
            user: user.to_string(),
            password: host.become_password.clone(),
        });
        Ok(self
            .real()
            .transport(&format!("{}\u{1}{user}", host.name), &as_user))
    }

    /// Reaches every host and takes their locks, as the first change does: a rollback asks
    /// before its first undo, so that a refusal leaves every undo pending.
    pub(crate) fn ready_to_change(&self) -> Result<(), Fault> {
        if self.backend.kind() == Kind::Nowhere {
            return Ok(());
        }
        self.journal_refusal(None)?;
        self.reach_all()?;
        self.lock_hosts()
    }

    /// Refuses every action once a journal write failed (see `journal_failed`).
    fn journal_refusal(&self, host: Option<&str>) -> Result<(), Fault> {
        match crate::lock(&self.journal_error).as_ref() {
            Some(e) => Err(Fault::new(
                FaultKind::Journal,
                host,
                format!("no action runs while the journal cannot be written ({e})"),
            )),
            None => Ok(()),
        }
    }

    /// The one choke point: performs `action` on `host` as the mode says, and records it.
    pub fn perform(&self, host: &str, action: Action) -> Result<Outcome, Fault> {
        if self.cancel.should_stop() {
            return Err(Fault::new(
                FaultKind::Interrupted,
                Some(host),
                "interrupted before this action started",
            ));
        }
        self.journal_refusal(Some(host))?;
        let held = self.hold_writes.load(Ordering::SeqCst) && !action.is_read_only();
        if !held && !action.is_read_only() && self.backend.kind() != Kind::Nowhere {
            self.reach_all().map_err(|mut f| {
                f.host = Some(host.to_string());
                f
            })?;
            // Also in cleanup: `capstan rollback` changes the hosts too (a run that took its
            // locks before its first change has them already).
            self.lock_hosts()?;
        }
        if let Some(why) = self.host_lock_lost() {
            return Err(Fault::new(FaultKind::Locked, Some(host), why));
        }
        // A SQL server may be named by address only; every other action needs an inventory host.
        let entry = match action.server_host() {
            Some(h) => h.map(|h| self.host_entry(h)).transpose()?,
            None => Some(self.host_entry(host)?),
        };
        let name: &str = entry.map_or(host, |e| e.name.as_str());
        let seq = self.seq.fetch_add(1, Ordering::SeqCst);
        let at = self.now();
        let wall = Instant::now();
        // Every action of a step in a real run is journaled with what it returned (a mutating
        // one durably, before it runs too), and a resumed step gets back what its earlier
        // attempt finished (see `replay`).
        let replay = match (
            self.backend.kind(),
            self.journal.get(),
            current_step_shared(),
        ) {
            (Kind::Hosts, Some(j), Some(step))
                if self.mode == Mode::Run && !held && replay::takes_part(&action) =>
            {
                Some((j, step))
            }
            _ => None,
        };
        let mutating = !action.is_read_only();
        let mut slot = None;
        if let Some((j, step)) = replay {
            let fp = replay::fingerprint(&action, &j.run_id);
            let (pos, decision) = lock(&self.replay).next(&step, name, &fp);
            if let replay::Decision::Replay { outcome, attempt } = decision {
                let result = Ok(outcome);
                self.record(
                    seq,
                    name,
                    &action,
                    Disposition::Replayed,
                    at,
                    Duration::ZERO,
                    &result,
                );
                self.replay_row(j, &step, name, pos, seq, &fp, &action, &result);
                tracing::debug!(host = %name, "replayed from attempt {attempt}");
                return result;
            }
            // An action in flight at the stop (`Decision::InFlight`) was reported when this
            // attempt began (`fence`); like any other, it runs now.
            if mutating {
                if let Err(e) = j.journal.replay_started(
                    &j.run_id,
                    &ReplayRow {
                        attempt: j.attempt,
                        step: step.to_string(),
                        host: name.to_string(),
                        pos,
                        seq,
                        fingerprint: fp.clone(),
                        description: self.inventory.redactor.redact(&action.describe()),
                        state: ReplayState::Started,
                        outcome: None,
                    },
                ) {
                    self.journal_failed(&e);
                    return Err(Fault::new(
                        FaultKind::Journal,
                        Some(host),
                        format!("not run: the journal cannot record it ({e})"),
                    ));
                }
            }
            slot = Some((j, step, pos, fp));
        }
        let marker = slot
            .as_ref()
            .filter(|_| {
                mutating && matches!(action.inner(), Action::Exec { .. } | Action::Docker { .. })
            })
            .map(|(j, _, _, _)| {
                lock(&self.marked).insert(name.to_string());
                format!("{}.{}.{seq}", j.run_id, j.attempt)
            });
        let kind = self.backend.kind();
        let (disposition, result) = if kind != Kind::Nowhere
            && (held || (kind == Kind::Hosts && self.mode == Mode::Check && mutating))
        {
            (Disposition::Skipped, Ok(Outcome::Skipped))
        } else {
            let step = current_step_shared();
            let to = Target {
                name,
                entry,
                step: step.as_deref(),
                marker: marker.as_deref(),
            };
            let disposition = match kind {
                Kind::Hosts => Disposition::Performed,
                Kind::World | Kind::Nowhere => Disposition::Simulated,
            };
            (disposition, self.backend.perform(self, to, &action))
        };
        let duration = match kind {
            Kind::World => self.now().saturating_sub(at),
            _ => wall.elapsed(),
        };
        if let Some((j, step, pos, fp)) = slot {
            if mutating {
                let (state, outcome) = match &result {
                    Ok(o) => (
                        ReplayState::Done,
                        Recorded::of(o, &self.inventory.redactor)
                            .and_then(|r| serde_json::to_string(&r).ok()),
                    ),
                    Err(_) => (ReplayState::Failed, None),
                };
                if let Err(e) = j.journal.replay_ended(
                    &j.run_id,
                    j.attempt,
                    &step,
                    name,
                    pos,
                    state,
                    outcome.as_deref(),
                ) {
                    self.journal_failed(&e);
                }
            } else {
                self.replay_row(j, &step, name, pos, seq, &fp, &action, &result);
            }
        }
        self.record(seq, name, &action, disposition, at, duration, &result);
        if kind == Kind::World && !TICKING.with(|t| t.get()) {
            let tickers = crate::lock(&self.tickers).clone();
            if !tickers.is_empty() {
                TICKING.with(|t| t.set(true));
                for t in &tickers {
                    t();
                }
                TICKING.with(|t| t.set(false));
            }
        }
        result
    }

    pub(super) fn redacted(&self, mut f: Fault) -> Fault {
        f.message = self.inventory.redactor.redact(&f.message);
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Condvar, Mutex};
    use std::time::Duration;

    #[test]
    fn per_host_keeps_order_bounds_its_threads_and_lets_no_host_hold_up_the_rest() {
        let n = AT_ONCE * 3 + 5;
        let items: Vec<usize> = (0..n).collect();
        let (running, peak) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let finished = (Mutex::new(0usize), Condvar::new());
        let out = per_host(&items, |&i| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            let (count, cv) = &finished;
            let mut c = count.lock().unwrap();
            if i == 0 {
                // The first host is slow: it ends only once every other host has ended, which a
                // batch that waits for its slowest member would never let happen.
                let (c2, timeout) = cv
                    .wait_timeout_while(c, Duration::from_secs(20), |c| *c < n - 1)
                    .unwrap();
                assert!(
                    !timeout.timed_out(),
                    "the other hosts waited for the slow one"
                );
                c = c2;
            }
            *c += 1;
            cv.notify_all();
            drop(c);
            running.fetch_sub(1, Ordering::SeqCst);
            i * 10
        });
        assert_eq!(out, items.iter().map(|i| i * 10).collect::<Vec<_>>());
        assert!(peak.load(Ordering::SeqCst) <= AT_ONCE);
        assert!(per_host(&Vec::<usize>::new(), |&i| i).is_empty());
    }

    #[test]
    fn texts_are_interned_only_where_the_journal_keeps_the_records() {
        let dir = tempfile::tempdir().unwrap();
        let file = crate::journal::Journal::open(dir.path().join("j.db")).unwrap();
        for (journal, keeps) in [(crate::journal::Journal::in_memory(), true), (file, false)] {
            let inv = "[hosts.h]\ntransport = \"local\"\n";
            let inv = Inventory::from_str_at(inv, "inventory.toml", dir.path()).unwrap();
            let x = Executor::inert(Arc::new(inv));
            let j = RunJournal {
                journal: Arc::new(journal),
                run_id: "r".into(),
                attempt: 1,
            };
            x.attach_journal(j).unwrap();
            let a = Action::Exists {
                path: "/srv/app".into(),
            };
            for seq in 1..=2 {
                x.record(
                    seq,
                    "h",
                    &a,
                    Disposition::Simulated,
                    Duration::ZERO,
                    Duration::ZERO,
                    &Ok(Outcome::Bool(true)),
                );
            }
            assert_eq!(x.texts.len(), usize::from(keeps), "keeps records: {keeps}");
        }
    }
}
