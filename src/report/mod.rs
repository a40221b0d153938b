//! What a run tells the world: events as they happen (`EventSink`) and the `RunReport` at the end.

mod html;
mod live;
mod render;
mod shared_str;
mod table;

use std::collections::BTreeSet;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::{FaultKind, Located};
use crate::journal::{GuardStatus, RunStatus, UndoStatus};

pub use html::render_html;
pub use render::{render_text, write_text, ProgressPrinter};
pub use shared_str::{Interner, SharedStr};

/// How an action was handled by the executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    /// Performed for real through a transport.
    Performed,
    /// `--check`: a mutating action, recorded and not performed.
    Skipped,
    /// Performed against the simulated world.
    Simulated,
    /// Not performed: a resumed step asked for an action its earlier attempt had finished, and
    /// got the outcome recorded then (docs/recovery.md).
    Replayed,
}

/// One action as the report and the events show it. Texts are already redacted.
#[derive(Debug, Clone, Serialize)]
pub struct ActionRecord {
    /// Which attempt of the run performed it (1, then one more per resume or rollback).
    pub attempt: u32,
    pub seq: u64,
    /// Shared with every other record of the host (a rehearsal keeps hundreds of thousands).
    pub host: SharedStr,
    /// Shared with every other record of the step.
    pub step: Option<SharedStr>,
    /// Short operation name: `exec`, `write_file`, `copy`, ...
    pub op: SharedStr,
    pub read_only: bool,
    /// The action as a person reads it: `run: systemctl stop x`, `write /etc/x (120 bytes)`.
    pub description: SharedStr,
    pub disposition: Disposition,
    /// Milliseconds since the run started (simulated time in simulation).
    pub at_ms: u64,
    pub duration_ms: u64,
    pub ok: bool,
    /// `exit 0`, the error, or what `--check` would have done (the common answers are not
    /// allocated per record).
    pub result: SharedStr,
    /// A command's program and arguments, each as it reached the program (a shell command is
    /// `sh -c LINE`); `None` for other actions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<SharedStr>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Running,
    Ok,
    Failed,
    /// Not needed: `skip_step` recorded why (e.g. the host is at the target already).
    Skipped,
}

/// One `step(name, ..)` call.
#[derive(Debug, Clone, Serialize)]
pub struct StepRecord {
    pub name: String,
    pub status: StepStatus,
    pub at_ms: u64,
    pub duration_ms: u64,
    /// Hosts the step's actions touched, in first-touch order.
    pub hosts: Vec<String>,
    pub actions: usize,
    pub error: Option<String>,
    /// The attempt that ran it last (a step done before a resume keeps its first attempt).
    pub attempt: u32,
    /// Why a skipped step was not needed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A registered undo and what became of it.
#[derive(Debug, Clone, Serialize)]
pub struct UndoRecord {
    pub id: u64,
    pub step: Option<String>,
    pub host: Option<String>,
    pub description: String,
    /// The copy of the old content it restores from, when it keeps one (a backup on the host).
    pub saved: Option<String>,
    pub status: UndoStatus,
    pub error: Option<String>,
}

/// A guard and whether it is still in effect.
#[derive(Debug, Clone, Serialize)]
pub struct GuardRecord {
    pub name: String,
    pub step: Option<String>,
    pub status: GuardStatus,
    /// How many times a resume set it again before going on.
    pub rechecks: u32,
    pub error: Option<String>,
}

/// How the run ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    Failed { kind: FaultKind, error: Located },
    Interrupted { error: Located },
}

/// A log line from the script (`log`, `print`) or from capstan itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogLine {
    pub at_ms: u64,
    pub level: String,
    pub step: Option<String>,
    pub message: String,
}

/// Everything a finished run has to say, for people (`render_text`) and machines (JSON).
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The run's id in the journal (`capstan report ID`, `--resume ID`, `capstan rollback ID`).
    pub run_id: String,
    pub playbook: String,
    pub mode: crate::Mode,
    /// The run's state in the journal: also says whether a rollback ran.
    pub status: RunStatus,
    /// How the last attempt ended.
    pub outcome: Outcome,
    pub started_unix_ms: u64,
    /// Time spent over all attempts.
    pub duration_ms: u64,
    pub attempts: u32,
    pub hosts: Vec<String>,
    /// Params after defaults, secrets redacted.
    pub params: serde_json::Value,
    pub steps: Vec<StepRecord>,
    /// Shared with the in-memory journal that kept them (a simulation's), not copied.
    pub actions: std::sync::Arc<Vec<ActionRecord>>,
    /// Undos registered, oldest first, with what became of each.
    pub undos: Vec<UndoRecord>,
    pub guards: Vec<GuardRecord>,
    /// Backups taken (or reused on resume) by the run, with where they are and their checksums.
    #[serde(default)]
    pub backups: Vec<BackupRecord>,
    /// Simulations only: faults, availability, what the run left changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simulation: Option<SimReport>,
    /// Hosts by zone, region or machine (their inventory var), where the inventory says so: the
    /// HTML report groups its rows by them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_groups: Vec<HostGroup>,
    pub logs: Vec<LogLine>,
    /// The value the playbook's last statement evaluated to, as JSON.
    pub result: serde_json::Value,
}

/// Hosts that share a zone, a region or a machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostGroup {
    /// `zone zone1`, `region cn-east`.
    pub name: String,
    pub hosts: Vec<String>,
}

/// What a simulation adds to a report: the faults that fired, availability over time, and what
/// the run left changed (when it stopped, and after its rollback).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct SimReport {
    pub faults: Vec<FiredFault>,
    /// Faults of the scenario or `--fail` that never took an action: the rehearsal did not
    /// rehearse them (`capstan simulate` exits 1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unfired: Vec<String>,
    /// Every component the products' models know, in order.
    pub components: Vec<String>,
    /// A sample at the start and at every change of what is down or which rule is broken.
    pub availability: Vec<AvailabilitySample>,
    /// What differed from the starting state when the run stopped (before any rollback).
    pub changed_at_stop: Vec<HostChange>,
    /// What still differs after the rollback (empty: everything was put back). `None`: no
    /// rollback ran.
    pub changed_after_rollback: Option<Vec<HostChange>>,
}

/// A fault of the scenario (or `--fail`) that took an action.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FiredFault {
    pub at_ms: u64,
    pub host: String,
    pub step: Option<String>,
    pub action: String,
    pub fault: String,
}

/// A change of what is down, and the availability rules broken, from `at_ms` on. A sample holds
/// the change only (what went down, what came back up), so that a run that stops every node of a
/// large cluster keeps one name per change, not the whole list at every sample:
/// `SimReport::down_at` and `SimReport::down_states` give what was down.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AvailabilitySample {
    pub at_ms: u64,
    pub step: Option<String>,
    /// Components that went down at this sample (the first sample: those down at the start).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub went_down: Vec<String>,
    /// Components that came back up at this sample.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub came_up: Vec<String>,
    /// Every rule broken from this sample on (a handful: each model's sentences).
    pub violations: Vec<String>,
}

impl SimReport {
    /// Replays the samples' changes: `f` gets each sample and what was down from it on, as
    /// positions in `components` (so in the models' order; `name_of` gives the names).
    pub fn down_states(&self, mut f: impl FnMut(usize, &AvailabilitySample, &BTreeSet<usize>)) {
        let index = self.component_index();
        self.down_states_indexed(&index, |i, down| f(i, &self.availability[i], down));
    }

    /// Each component's position in `components`, by name.
    fn component_index(&self) -> crate::FastMap<&str, usize> {
        self.components
            .iter()
            .enumerate()
            .map(|(i, c)| (c.as_str(), i))
            .collect()
    }

    fn down_states_indexed(
        &self,
        index: &crate::FastMap<&str, usize>,
        mut f: impl FnMut(usize, &BTreeSet<usize>),
    ) {
        // The world names only components it lists; another name (a report edited by hand)
        // is left out.
        let mut down = BTreeSet::new();
        for (i, s) in self.availability.iter().enumerate() {
            for c in &s.came_up {
                if let Some(&at) = index.get(c.as_str()) {
                    down.remove(&at);
                }
            }
            for c in &s.went_down {
                if let Some(&at) = index.get(c.as_str()) {
                    down.insert(at);
                }
            }
            f(i, &down);
        }
    }

    /// The name of the component at position `i` of what `down_states` gives.
    pub fn name_of(&self, i: usize) -> &str {
        self.components.get(i).map_or("?", String::as_str)
    }

    /// For each window `(from, to)` (ms, both ends included): every component down at some
    /// time in it, in the order they were first seen down (those down as it opens first, in
    /// the models' order), and every rule broken in it. A sample holds from its time until the
    /// next one. One replay of the samples serves every window: a window's samples are
    /// contiguous, so each window costs its own samples (a replay per window made a report of
    /// many steps quadratic).
    pub fn during(&self, windows: &[(u64, u64)]) -> Vec<(Vec<String>, Vec<String>)> {
        let n = self.availability.len();
        let at = |i: usize| self.availability[i].at_ms;
        let end = |i: usize| self.availability.get(i + 1).map_or(u64::MAX, |s| s.at_ms);
        let ordered = self
            .availability
            .windows(2)
            .all(|w| w[0].at_ms <= w[1].at_ms);
        if !ordered || windows.iter().any(|&(from, to)| from > to) {
            // Samples out of order or a window that ends before it starts (a report edited by
            // hand; neither happens in a run): each window on its own.
            return windows
                .iter()
                .map(|&(from, to)| self.during_by_replay(from, to))
                .collect();
        }
        // Sample i overlaps [from, to] (from <= to) when at(i) <= to and (end(i) > from, or
        // at(i) >= from); both parts are monotonic in i, so the overlapping samples are one
        // range.
        let ranges: Vec<(usize, usize)> = windows
            .iter()
            .map(|&(from, to)| {
                let lo = first_index(n, |i| end(i) > from || at(i) >= from);
                let hi = first_index(n, |i| at(i) > to);
                (lo, hi.max(lo))
            })
            .collect();
        let index = self.component_index();
        // What was down as each window opens, by one replay in the order the windows open.
        let mut order: Vec<usize> = (0..windows.len())
            .filter(|&w| ranges[w].0 < ranges[w].1)
            .collect();
        order.sort_by_key(|&w| ranges[w].0);
        let mut opening: Vec<Vec<usize>> = vec![Vec::new(); windows.len()];
        let mut next = order.iter().peekable();
        self.down_states_indexed(&index, |i, down| {
            while let Some(&&w) = next.peek().filter(|&&&w| ranges[w].0 == i) {
                opening[w] = down.iter().copied().collect();
                next.next();
            }
        });
        ranges
            .iter()
            .zip(opening)
            .map(|(&(lo, hi), mut open)| {
                let mut seen = WindowSeen::default();
                for i in lo..hi {
                    let sample = &self.availability[i];
                    // Down from this sample on and not seen yet: at the window's first sample
                    // all that was down; later, only what went down there can be new.
                    let fresh: Vec<usize> = if i == lo {
                        std::mem::take(&mut open)
                    } else {
                        let mut went: Vec<usize> = sample
                            .went_down
                            .iter()
                            .filter_map(|c| index.get(c.as_str()).copied())
                            .collect();
                        went.sort_unstable();
                        went.dedup();
                        went
                    };
                    seen.add(fresh, &sample.violations);
                }
                seen.names(self)
            })
            .collect()
    }

    /// `during` for one window by replaying every sample (samples out of order).
    fn during_by_replay(&self, from: u64, to: u64) -> (Vec<String>, Vec<String>) {
        let mut seen = WindowSeen::default();
        self.down_states(|i, a, now_down| {
            let end = self.availability.get(i + 1).map_or(u64::MAX, |n| n.at_ms);
            let overlaps = a.at_ms <= to && end > from || (a.at_ms == from && end == from);
            if overlaps {
                seen.add(now_down.iter().copied(), &a.violations);
            }
        });
        seen.names(self)
    }

    /// What was down from sample `i` on, in the models' order.
    pub fn down_at(&self, i: usize) -> Vec<String> {
        let mut out = Vec::new();
        self.down_states(|j, _, d| {
            if j == i {
                out = d.iter().map(|&c| self.name_of(c).to_string()).collect();
            }
        });
        out
    }
}

/// What a window of `SimReport::during` has met so far: the components seen down, in the order
/// first seen, and the rules broken.
#[derive(Default)]
struct WindowSeen {
    seen: BTreeSet<usize>,
    down: Vec<usize>,
    broken: Vec<String>,
}

impl WindowSeen {
    fn add(&mut self, down: impl IntoIterator<Item = usize>, violations: &[String]) {
        for d in down {
            if self.seen.insert(d) {
                self.down.push(d);
            }
        }
        for v in violations {
            if !self.broken.contains(v) {
                self.broken.push(v.clone());
            }
        }
    }

    fn names(self, sim: &SimReport) -> (Vec<String>, Vec<String>) {
        let down = self
            .down
            .iter()
            .map(|&d| sim.name_of(d).to_string())
            .collect();
        (down, self.broken)
    }
}

/// The first `i` in `0..n` where `pred` holds (`n` when it never does); `pred` must be false,
/// then true.
fn first_index(n: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

/// One difference of a simulated host from its starting state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostChange {
    pub host: String,
    pub change: String,
}

/// A backup of a run: the step that took it, and the backup.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BackupRecord {
    pub step: Option<String>,
    pub at_ms: u64,
    #[serde(flatten)]
    pub backup: BackupInfo,
}

impl RunReport {
    pub fn succeeded(&self) -> bool {
        matches!(self.outcome, Outcome::Succeeded)
    }
    /// Actions `--check` did not perform: what a real run would change.
    pub fn would_change(&self) -> impl Iterator<Item = &ActionRecord> {
        self.actions
            .iter()
            .filter(|a| a.disposition == Disposition::Skipped)
    }

    /// Each host's actions, in order, from one pass (a pass per host is hosts × actions, which
    /// a 10,000-machine rehearsal cannot pay).
    pub(crate) fn actions_by_host(&self) -> crate::FastMap<&str, Vec<&ActionRecord>> {
        let mut by: crate::FastMap<&str, Vec<&ActionRecord>> = crate::FastMap::default();
        for a in self.actions.iter() {
            by.entry(&a.host).or_default().push(a);
        }
        by
    }

    /// Each undo's actions (their step is `undo #N: ...`), in order, from one pass.
    pub(crate) fn actions_by_undo(&self) -> crate::FastMap<u64, Vec<&ActionRecord>> {
        let mut by: crate::FastMap<u64, Vec<&ActionRecord>> = crate::FastMap::default();
        for a in self.actions.iter() {
            let id = a
                .step
                .as_deref()
                .and_then(|st| st.strip_prefix("undo #"))
                .and_then(|rest| rest.split_once(": "))
                .and_then(|(n, _)| n.parse::<u64>().ok());
            if let Some(id) = id {
                by.entry(id).or_default().push(a);
            }
        }
        by
    }
}

/// The version of the JSON events (`--json`), in every `run_started` and `check` line. It goes
/// up when a field is removed or changes meaning; new fields and new events leave it alone.
pub const EVENT_SCHEMA: u32 = 1;

/// Something that happened during a run, in the order it happened.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        /// `EVENT_SCHEMA`.
        schema: u32,
        run_id: String,
        attempt: u32,
        playbook: String,
        mode: crate::Mode,
        hosts: Vec<String>,
    },
    StepStarted {
        step: String,
        at_ms: u64,
    },
    /// A resumed run reached a step the journal records as done: its body does not run again.
    StepSkipped {
        step: String,
        done_in_attempt: u32,
    },
    /// `skip_step`: a step the playbook found not needed (its unit is at the target already).
    StepNotNeeded {
        step: String,
        reason: String,
    },
    /// A wait's try failed; the next comes after its interval, until the deadline.
    Waiting {
        step: Option<String>,
        what: String,
        attempt: u32,
        waited_ms: u64,
        timeout_ms: u64,
        /// The time to the next try.
        every_ms: u64,
        /// What the try saw (at most 200 characters, redacted).
        last: String,
    },
    /// Output of a command that has run for a while, as it arrives (redacted).
    Output {
        host: String,
        step: Option<String>,
        stream: String,
        text: String,
    },
    Undo {
        id: u64,
        phase: UndoPhase,
        step: Option<String>,
        host: Option<String>,
        description: String,
        error: Option<String>,
    },
    Guard {
        name: String,
        phase: GuardPhase,
        error: Option<String>,
    },
    Rollback {
        phase: RollbackPhase,
        undone: usize,
        failed: usize,
    },
    StepFinished {
        step: String,
        ok: bool,
        duration_ms: u64,
        hosts: Vec<String>,
        actions: usize,
        error: Option<String>,
    },
    Action(ActionRecord),
    Log(LogLine),
    RunFinished {
        outcome: Outcome,
        duration_ms: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UndoPhase {
    Registered,
    Done,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardPhase {
    Set,
    /// A resume found it set by an earlier attempt and set it again before going on.
    Rechecked,
    Restored,
    RestoreFailed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RollbackPhase {
    Started,
    Finished,
}

/// Receives events. Implementations must be cheap: they run on the script's thread.
pub trait EventSink: Send + Sync {
    fn emit(&self, event: &Event);
}

/// Discards events.
#[derive(Debug, Default)]
pub struct NoEvents;
impl EventSink for NoEvents {
    fn emit(&self, _: &Event) {}
}

/// Writes one JSON object per line to stdout (`--json`): each line at once (a reader follows a
/// run live), or, `batched`, in blocks written by a thread of its own (a simulation sends
/// hundreds of thousands of events in seconds: a write per line into a pipe cost it a third of
/// its time, and turning them into JSON on the script's thread a twentieth).
#[derive(Debug, Default)]
pub struct JsonLines {
    /// Line by line: the buffer each line is made in.
    pending: Mutex<Vec<u8>>,
    batched: Option<Batches>,
}

/// How many events a batched `JsonLines` gathers before it hands them to its writer.
const JSON_BATCH: usize = 512;

/// A batched `JsonLines`' events on their way to the writer thread.
#[derive(Debug)]
struct Batches {
    gathering: Mutex<Vec<Event>>,
    /// Bounded: a writer that falls behind holds the run back rather than let events pile up.
    to_writer: Mutex<Option<std::sync::mpsc::SyncSender<Batch>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// What the writer thread is handed: events to write, then (`done`) word that they are out.
#[derive(Debug)]
struct Batch {
    events: Vec<Event>,
    done: Option<std::sync::mpsc::SyncSender<()>>,
}

impl Batches {
    /// The writer thread, writing each batch's lines with `write`.
    fn start(mut write: impl FnMut(&[u8]) + Send + 'static) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(4);
        let writer = std::thread::Builder::new()
            .name("capstan-json".into())
            .spawn(move || {
                let mut line = Vec::with_capacity(1 << 16);
                for batch in rx {
                    json_lines(&batch.events, &mut line);
                    write(&line);
                    line.clear();
                    if let Some(done) = batch.done {
                        let _ = done.send(());
                    }
                }
            })
            .ok();
        Batches {
            gathering: Mutex::new(Vec::with_capacity(JSON_BATCH)),
            // No thread (the system refused one): no writer, and `hand_over` writes itself.
            to_writer: Mutex::new(writer.as_ref().map(|_| tx)),
            writer: Mutex::new(writer),
        }
    }

    /// Hands the gathered events over (called with `gathering` locked, so batches leave in the
    /// order their events came); with `wait`, what to wait on until they are written.
    fn hand_over(&self, events: Vec<Event>, wait: bool) -> Option<std::sync::mpsc::Receiver<()>> {
        let (done, written) = if wait {
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let sent = match crate::lock(&self.to_writer).as_ref() {
            Some(tx) => tx.send(Batch { events, done }).map_err(|e| e.0.events),
            None => Err(events),
        };
        match sent {
            Ok(()) => written,
            // The writer is gone: write them here rather than lose them.
            Err(events) => {
                let mut buf = Vec::new();
                json_lines(&events, &mut buf);
                JsonLines::write_stdout(&buf);
                None
            }
        }
    }
}

/// Appends each event to `out` as a line of JSON (one that cannot be written is left out whole).
fn json_lines(events: &[Event], out: &mut Vec<u8>) {
    for e in events {
        let start = out.len();
        if serde_json::to_writer(&mut *out, e).is_ok() {
            out.push(b'\n');
        } else {
            out.truncate(start);
        }
    }
}

impl JsonLines {
    /// Lines written in blocks by a thread of their own; all of them are out when the run's
    /// `run_finished` has been emitted (so what the caller prints next comes after them).
    pub fn batched() -> Self {
        JsonLines {
            pending: Mutex::default(),
            batched: Some(Batches::start(Self::write_stdout)),
        }
    }

    fn write_stdout(bytes: &[u8]) {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(bytes);
        let _ = out.flush();
    }
}

impl EventSink for JsonLines {
    fn emit(&self, event: &Event) {
        if let Some(b) = &self.batched {
            let last = matches!(event, Event::RunFinished { .. });
            let written = {
                let mut g = crate::lock(&b.gathering);
                g.push(event.clone());
                if last || g.len() >= JSON_BATCH {
                    let events = std::mem::replace(&mut *g, Vec::with_capacity(JSON_BATCH));
                    b.hand_over(events, last)
                } else {
                    None
                }
            };
            if let Some(rx) = written {
                let _ = rx.recv();
            }
            return;
        }
        let mut pending = crate::lock(&self.pending);
        json_lines(std::slice::from_ref(event), &mut pending);
        Self::write_stdout(&pending);
        pending.clear();
    }
}

impl Drop for JsonLines {
    fn drop(&mut self) {
        if let Some(b) = &self.batched {
            let mut g = crate::lock(&b.gathering);
            let rest = std::mem::take(&mut *g);
            if !rest.is_empty() {
                b.hand_over(rest, false);
            }
            drop(g);
            // The writer ends when its channel closes, once everything handed over is out.
            drop(crate::lock(&b.to_writer).take());
            if let Some(w) = crate::lock(&b.writer).take() {
                let _ = w.join();
            }
        }
    }
}

/// Keeps events in memory; tests and embedders read them afterwards.
#[derive(Debug, Default)]
pub struct Collect(pub Mutex<Vec<Event>>);
impl EventSink for Collect {
    fn emit(&self, event: &Event) {
        crate::lock(&self.0).push(event.clone());
    }
}

/// A backup as reports show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BackupInfo {
    pub kind: String,
    pub host: String,
    pub source: String,
    pub path: String,
    pub files: u64,
    pub bytes: u64,
    pub sha256: String,
    /// Taken by this action (false: an existing verified backup was reused or checked).
    #[serde(default)]
    pub taken: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    /// `during` answers every window from one replay; each window's answer must be what a
    /// replay of every sample for that window alone gives: windows that share samples (a
    /// rollback after the last step), samples of no length (several at one time), windows of
    /// no length, a window before the first sample and after the last, components down across
    /// a window's start, names no model lists, samples out of order.
    #[test]
    fn every_windows_availability_is_what_a_replay_of_that_window_gives() {
        let sample = |at_ms, down: &[&str], up: &[&str], broken: &[&str]| AvailabilitySample {
            at_ms,
            step: None,
            went_down: down.iter().map(|s| s.to_string()).collect(),
            came_up: up.iter().map(|s| s.to_string()).collect(),
            violations: broken.iter().map(|s| s.to_string()).collect(),
        };
        let mut sim = SimReport {
            components: ["a", "b", "c", "d", "e"].map(String::from).to_vec(),
            availability: vec![
                sample(0, &["e"], &[], &[]),
                sample(100, &["c", "a"], &[], &[]),
                sample(100, &["b"], &["a"], &["rule 1"]),
                sample(250, &[], &["c", "e"], &[]),
                sample(250, &["ghost", "d"], &[], &["rule 2", "rule 1"]),
                sample(400, &["a"], &["b", "d"], &[]),
                sample(700, &[], &["a"], &[]),
            ],
            ..SimReport::default()
        };
        let mut windows = vec![
            (0, 0),
            (0, 50),
            (50, 100),
            (100, 100),
            (100, 250),
            (120, 260),
        ];
        windows.extend([
            (250, 250),
            (260, 399),
            (399, 400),
            (400, 900),
            (300, 800),
            (800, 900),
        ]);
        windows.extend([(0, u64::MAX), (250, 100)]);
        let check = |sim: &SimReport| {
            let batch = sim.during(&windows);
            for (w, got) in windows.iter().zip(&batch) {
                assert_eq!(*got, sim.during_by_replay(w.0, w.1), "window {w:?}");
            }
            batch
        };
        let batch = check(&sim);
        // The cases above are not all empty: the replay is compared on real answers.
        assert_eq!(batch[4].0, ["a", "c", "e", "b", "d"]);
        assert_eq!(batch[4].1, ["rule 1", "rule 2"]);
        assert_eq!(batch[1].0, ["e"]);
        sim.availability.swap(2, 5);
        check(&sim);
    }

    /// A batched `JsonLines` hands its events to a writer thread; once `run_finished` has been
    /// emitted, every line is out, in order (the CLI prints the report right after). The writer
    /// here is slow on purpose: an end that did not wait for it would leave lines behind.
    #[test]
    fn batched_lines_are_all_out_once_run_finished_is_emitted() {
        let written = Arc::new(Mutex::new(Vec::<u8>::new()));
        let w = written.clone();
        let sink = JsonLines {
            pending: Mutex::default(),
            batched: Some(Batches::start(move |lines| {
                std::thread::sleep(Duration::from_millis(20));
                w.lock().unwrap().extend_from_slice(lines);
            })),
        };
        let n = 3 * JSON_BATCH as u64 + 7;
        for i in 0..n {
            sink.emit(&Event::StepStarted {
                step: format!("s{i}"),
                at_ms: i,
            });
        }
        sink.emit(&Event::RunFinished {
            outcome: Outcome::Succeeded,
            duration_ms: 1,
        });
        let text = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len() as u64, n + 1);
        for (i, l) in lines[..n as usize].iter().enumerate() {
            assert_eq!(l["at_ms"], i as u64);
        }
        assert_eq!(lines[n as usize]["event"], "run_finished");
        // What comes after the end (none in a run) is written when the sink goes.
        sink.emit(&Event::StepStarted {
            step: "late".into(),
            at_ms: 0,
        });
        drop(sink);
        assert!(String::from_utf8_lossy(&written.lock().unwrap()).ends_with("\"at_ms\":0}\n"));
    }
}
