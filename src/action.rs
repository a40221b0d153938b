//! Every effect as data (`Action`), and the `Executor`: the one place that knows the mode.

use std::collections::{BTreeMap, HashMap};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::backup::{BackupInfo, HostShell};
use crate::ddb::{DdbClient, DdbKind, DdbTarget, DdbValue};
use crate::docker::DockerOp;
use crate::error::FaultKind;
pub use crate::error::{last_lines, Fault};
use crate::inventory::{HostEntry, Inventory};
use crate::journal::{ReplayRow, ReplayState, RunJournal};
use crate::replay::{self, Recorded, ReplayBook};
use crate::report::{ActionRecord, Disposition, Event, EventSink};
use crate::sql::{SqlClient, SqlKind, SqlParams, SqlResult, SqlTarget};
use crate::transport::{self, Command, ExecOutput, ExecRequest, Transport, TransportError};
use crate::Mode;

mod host_lock;
mod simulated;

pub use simulated::Simulated;

/// One effect on one host, described before it happens. Serializable: undos are kept as actions
/// in the journal and performed by a later process.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Action {
    Exec {
        command: Command,
        read_only: bool,
        env: BTreeMap<String, String>,
        cwd: Option<String>,
        stdin: Option<Vec<u8>>,
        timeout: Option<Duration>,
        /// Variables the command receives as the path of a 0600 file holding the value
        /// (`secret_files`): the value is in no argv or environment on the host.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        secret_files: BTreeMap<String, String>,
    },
    ReadFile {
        path: String,
    },
    Exists {
        path: String,
    },
    Checksum {
        path: String,
    },
    FreeSpace {
        path: String,
    },
    /// Bytes a file or directory tree takes on disk (`du -sk`).
    DiskUsage {
        path: String,
    },
    WriteFile {
        path: String,
        content: Vec<u8>,
        mode: i32,
    },
    Mkdir {
        path: String,
    },
    Copy {
        from: String,
        to: String,
    },
    Move {
        from: String,
        to: String,
    },
    Remove {
        path: String,
    },
    /// Replace directory `target` with a copy of `source`, swapping in one rename. The old
    /// directory is kept at `keep` (for an undo) when given, removed otherwise.
    ReplaceDir {
        target: String,
        source: String,
        #[serde(default)]
        keep: Option<String>,
    },
    /// Put `saved` back at `target` (undo of `ReplaceDir` and of file writes): what is at
    /// `target` now is removed, then `saved` is renamed to `target`.
    Restore {
        target: String,
        saved: String,
    },
    /// Copy a file from the machine capstan runs on to the host.
    Upload {
        local: String,
        remote: String,
        mode: i32,
    },
    /// Wait until a TCP port on the host accepts connections.
    WaitPort {
        port: u16,
        timeout: Duration,
    },
    /// One statement (or session operation) on a SQL server, from the machine capstan runs on.
    Sql {
        target: SqlTarget,
        kind: SqlKind,
        #[serde(default)]
        statement: String,
        #[serde(default)]
        params: SqlParams,
    },
    /// A snapshot of directory `source` at `to`, with its manifest (refused up front when the
    /// copy would not fit).
    Snapshot {
        source: String,
        to: String,
    },
    /// Checks a backup (snapshot or dump) against its manifest.
    VerifyBackup {
        path: String,
    },
    /// `mysqldump` of `db` on the host into `path`, complete or not at all, with its manifest.
    MysqlDump {
        target: SqlTarget,
        db: String,
        path: String,
        flags: Vec<String>,
        /// The dump program on the host when it is not `mysqldump` on the PATH.
        #[serde(default)]
        tool: Option<String>,
    },
    /// Loads a verified dump into `db` with the `mysql` client on the host.
    MysqlLoad {
        target: SqlTarget,
        db: String,
        path: String,
    },
    /// Puts a verified directory snapshot back at `target` (the snapshot stays).
    RestoreSnapshot {
        snapshot: String,
        target: String,
    },
    /// One script on a DolphinDB node (or opening the session), from the machine capstan runs on.
    Ddb {
        target: DdbTarget,
        kind: DdbKind,
        #[serde(default)]
        script: String,
    },
    /// A docker operation through the host's `docker` CLI.
    Docker {
        call: DockerOp,
        /// Longer or shorter than the host's command timeout (`docker load`, an init script).
        #[serde(default)]
        timeout: Option<Duration>,
    },
    /// `action` through `sudo -u USER` (`h.become(USER)`): kept as one action so its undo, a
    /// replay and a later process run it with the same privilege.
    Become {
        user: String,
        action: Box<Action>,
    },
}

impl Action {
    /// Read-only actions run for real under `--check`; the others are recorded only.
    pub fn is_read_only(&self) -> bool {
        match self {
            Action::Become { action, .. } => action.is_read_only(),
            Action::Exec { read_only, .. } => *read_only,
            Action::ReadFile { .. }
            | Action::Exists { .. }
            | Action::Checksum { .. }
            | Action::FreeSpace { .. }
            | Action::DiskUsage { .. }
            | Action::VerifyBackup { .. }
            | Action::WaitPort { .. } => true,
            Action::Sql { kind, .. } => matches!(kind, SqlKind::Query | SqlKind::Connect),
            Action::Ddb { kind, .. } => matches!(kind, DdbKind::Query | DdbKind::Connect),
            Action::Docker { call, .. } => call.is_read_only(),
            _ => false,
        }
    }

    pub fn op(&self) -> &'static str {
        match self {
            Action::Become { action, .. } => action.op(),
            Action::Exec {
                read_only: true, ..
            } => "read",
            Action::Exec { .. } => "exec",
            Action::ReadFile { .. } => "read_file",
            Action::Exists { .. } => "exists",
            Action::Checksum { .. } => "checksum",
            Action::FreeSpace { .. } => "free_space",
            Action::DiskUsage { .. } => "disk_usage",
            Action::WriteFile { .. } => "write_file",
            Action::Mkdir { .. } => "mkdir",
            Action::Copy { .. } => "copy",
            Action::Move { .. } => "move",
            Action::Remove { .. } => "remove",
            Action::ReplaceDir { .. } => "replace_dir",
            Action::Restore { .. } => "restore",
            Action::Upload { .. } => "upload",
            Action::WaitPort { .. } => "wait_port",
            Action::Sql { kind, .. } => match kind {
                SqlKind::Connect => "sql_connect",
                SqlKind::Query => "sql_query",
                _ => "sql_exec",
            },
            Action::Ddb { kind, .. } => match kind {
                DdbKind::Connect => "ddb_connect",
                DdbKind::Query => "ddb_query",
                DdbKind::Exec => "ddb_exec",
            },
            Action::Snapshot { .. } => "snapshot",
            Action::VerifyBackup { .. } => "verify_backup",
            Action::MysqlDump { .. } => "mysqldump",
            Action::MysqlLoad { .. } => "mysql_load",
            Action::RestoreSnapshot { .. } => "restore_snapshot",
            Action::Docker { call, .. } => call.op(),
        }
    }

    /// For an action that talks to a server from the machine capstan runs on (SQL,
    /// DolphinDB): the inventory host it was named by, if any.
    pub fn server_host(&self) -> Option<Option<&str>> {
        match self {
            Action::Sql { target, .. } => Some(target.host.as_deref()),
            Action::Ddb { target, .. } => Some(target.host.as_deref()),
            _ => None,
        }
    }

    /// The SQL server an action talks to, when it is a SQL action.
    pub fn sql_target(&self) -> Option<&SqlTarget> {
        match self {
            Action::Sql { target, .. } => Some(target),
            _ => None,
        }
    }

    /// What is done, privilege aside (`Become` unwrapped).
    pub fn inner(&self) -> &Action {
        match self {
            Action::Become { action, .. } => action.inner(),
            a => a,
        }
    }

    /// The user a `Become` action runs as.
    pub fn become_user(&self) -> Option<&str> {
        match self {
            Action::Become { user, .. } => Some(user),
            _ => None,
        }
    }

    /// A command's program and arguments as they reach the program (not yet redacted).
    pub fn argv(&self) -> Option<Vec<String>> {
        match self.inner() {
            Action::Exec { command, .. } => Some(match command {
                Command::Argv(a) => a.clone(),
                Command::Shell(s) => vec!["sh".into(), "-c".into(), s.clone()],
            }),
            _ => None,
        }
    }

    /// The action as one line for plans, reports and events (not yet redacted).
    pub fn describe(&self) -> String {
        match self {
            Action::Become { user, action } => format!("as {user}: {}", action.describe()),
            Action::Exec { command, cwd, .. } => {
                let c = command.display();
                match cwd {
                    Some(d) => format!("run in {d}: {c}"),
                    None => format!("run: {c}"),
                }
            }
            Action::ReadFile { path } => format!("read {path}"),
            Action::Exists { path } => format!("test exists {path}"),
            Action::Checksum { path } => format!("sha256 {path}"),
            Action::FreeSpace { path } => format!("free space at {path}"),
            Action::DiskUsage { path } => format!("disk usage of {path}"),
            Action::WriteFile {
                path,
                content,
                mode,
            } => {
                format!("write {path} ({} bytes, mode {mode:o})", content.len())
            }
            Action::Mkdir { path } => format!("mkdir -p {path}"),
            Action::Copy { from, to } => format!("copy {from} -> {to}"),
            Action::Move { from, to } => format!("move {from} -> {to}"),
            Action::Remove { path } => format!("remove {path}"),
            Action::ReplaceDir {
                target,
                source,
                keep,
            } => match keep {
                Some(k) => {
                    format!("replace dir {target} with a copy of {source} (old kept at {k})")
                }
                None => format!("replace dir {target} with a copy of {source}"),
            },
            Action::Restore { target, saved } => format!("restore {target} from {saved}"),
            Action::Upload { local, remote, .. } => format!("upload {local} -> {remote}"),
            Action::WaitPort { port, timeout } => {
                format!("wait for port {port} (up to {}s)", timeout.as_secs())
            }
            Action::Sql {
                target,
                kind,
                statement,
                params,
            } => {
                let server = target.server();
                match kind {
                    SqlKind::Connect => format!("sql connect {server}"),
                    SqlKind::Begin => format!("sql {server}: START TRANSACTION"),
                    SqlKind::Commit => format!("sql {server}: COMMIT"),
                    SqlKind::Rollback => format!("sql {server}: ROLLBACK"),
                    SqlKind::Query | SqlKind::Exec => {
                        let p = params.display();
                        let p = if p.is_empty() { p } else { format!(" [{p}]") };
                        format!("sql {server}: {}{p}", crate::sql::one_line(statement))
                    }
                }
            }
            Action::Ddb {
                target,
                kind,
                script,
            } => match kind {
                DdbKind::Connect => format!("dolphindb connect {}", target.server()),
                _ => format!(
                    "dolphindb {}: {}",
                    target.server(),
                    crate::sql::one_line(script)
                ),
            },
            Action::Snapshot { source, to } => format!("snapshot {source} -> {to}"),
            Action::VerifyBackup { path } => format!("verify backup {path}"),
            Action::MysqlDump {
                target,
                db,
                path,
                flags,
                tool,
            } => {
                let tool = tool.as_deref().unwrap_or("mysqldump");
                let f = if flags.is_empty() {
                    String::new()
                } else {
                    format!(" {}", flags.join(" "))
                };
                format!("{tool}{f} {db} from {} -> {path}", target.server())
            }
            Action::MysqlLoad { target, db, path } => {
                format!("mysql {db} on {} < {path}", target.server())
            }
            Action::RestoreSnapshot { snapshot, target } => {
                format!("restore {target} from snapshot {snapshot}")
            }
            Action::Docker { call, .. } => call.describe(),
        }
    }
}

/// What an action returned.
#[derive(Debug, Clone)]
pub enum Outcome {
    Exec(ExecOutput),
    Bytes(Vec<u8>),
    Bool(bool),
    Int(i64),
    Text(String),
    Unit,
    Sql(SqlResult),
    Ddb(DdbValue),
    /// A backup taken, verified or restored.
    Backup(BackupInfo),
    /// `--check` did not perform this mutating action.
    Skipped,
}

/// Stop requests. The first asks for a stop at the next step boundary; the second aborts
/// running commands. While capstan cleans up (rollback, guard restores) only the second counts.
#[derive(Debug, Default)]
pub struct Cancel {
    stop: AtomicBool,
    abort: AtomicBool,
    cleanup: AtomicBool,
}

impl Cancel {
    /// Escalates: first call requests a stop, the second an abort of running commands.
    pub fn cancel(&self) {
        if self.stop.swap(true, Ordering::SeqCst) {
            self.abort.store(true, Ordering::SeqCst);
        }
    }
    pub fn is_stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
    /// A second Ctrl-C (or an embedder's second `cancel`): running commands are being killed.
    pub fn is_aborting(&self) -> bool {
        self.abort.load(Ordering::SeqCst)
    }
    /// Marks the start and end of cleanup work that a first stop request must not interrupt.
    pub(crate) fn set_cleanup(&self, on: bool) {
        self.cleanup.store(on, Ordering::SeqCst);
    }
    /// Whether work should stop here: always after an abort; after a stop request only outside
    /// steps (a step runs to its end so the journal stays consistent) and outside cleanup.
    pub fn should_stop(&self) -> bool {
        if self.is_aborting() {
            return true;
        }
        !self.cleanup.load(Ordering::SeqCst) && self.is_stopping() && current_step().is_none()
    }
    pub(crate) fn abort_flag(&self) -> &AtomicBool {
        &self.abort
    }
    /// Whether capstan is cleaning up (a rollback, guard restores).
    pub(crate) fn is_cleaning(&self) -> bool {
        self.cleanup.load(Ordering::SeqCst)
    }
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Largest file `read_file` returns; beyond it the script should use a command that filters.
const MAX_READ: usize = 64 * 1024 * 1024;
/// Output kept per stream for ordinary commands.
const MAX_OUTPUT: usize = 16 * 1024 * 1024;

enum Backend {
    Real {
        transports: Mutex<HashMap<String, Arc<dyn Transport>>>,
        /// Sessions to bastions, shared by every host behind them.
        jumps: Arc<transport::JumpPool>,
        sql: SqlClient,
        // Boxed: its runtime slot is large, and `Sim` is the common variant in tests.
        ddb: Box<DdbClient>,
    },
    Sim(Arc<Mutex<dyn Simulated>>),
    /// `describe`: a playbook is evaluated only up to `params()`; any action is a mistake.
    Inert,
}

thread_local! {
    /// The step the current thread is inside, for attributing actions. `parallel` copies it
    /// into the threads it starts.
    static CURRENT_STEP: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// The step this thread is in.
pub fn current_step() -> Option<String> {
    CURRENT_STEP.with(|s| s.borrow().clone())
}

/// Sets this thread's step and returns the previous one (restore it afterwards).
pub fn set_current_step(step: Option<String>) -> Option<String> {
    CURRENT_STEP.with(|s| std::mem::replace(&mut *s.borrow_mut(), step))
}

/// Performs, skips or simulates actions according to the mode, and records every one.
/// Work the simulation runs after each action of the run (a probe's writes).
pub(crate) type Ticker = Arc<dyn Fn() + Send + Sync>;

thread_local! {
    /// Set while a ticker runs, so its own actions do not tick again.
    static TICKING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

pub struct Executor {
    mode: Mode,
    inventory: Arc<Inventory>,
    backend: Backend,
    cancel: Arc<Cancel>,
    events: Arc<dyn EventSink>,
    started: Instant,
    /// The wall clock when the executor was made: a simulation's clock starts there.
    started_wall: std::time::SystemTime,
    seq: AtomicU64,
    /// Per step: the hosts its actions touched (first-touch order) and how many actions ran.
    /// Kept as actions are recorded, so a step's summary costs nothing however long the run.
    per_step: Mutex<HashMap<String, (Vec<String>, usize)>>,
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
        let backend = match (mode, world) {
            (Mode::Simulate, Some(w)) => Backend::Sim(w),
            (Mode::Simulate, None) => Backend::Inert,
            _ => Backend::Real {
                transports: Mutex::new(HashMap::new()),
                jumps: Arc::default(),
                sql: SqlClient::default(),
                ddb: Box::default(),
            },
        };
        Executor {
            mode,
            inventory,
            backend,
            cancel,
            events,
            started: Instant::now(),
            started_wall: std::time::SystemTime::now(),
            seq: AtomicU64::new(0),
            per_step: Mutex::new(HashMap::new()),
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
        let failed: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
        match &self.backend {
            // The rehearsal meets the same check: hosts a scenario cuts off from the start.
            Backend::Sim(w) => {
                *lock(&failed) = lock(w).unreachable_at_start();
            }
            _ => {
                let cmd = Command::Argv(vec!["true".into()]);
                for chunk in hosts.chunks(32) {
                    std::thread::scope(|s| {
                        for h in chunk {
                            let (cmd, failed) = (&cmd, &failed);
                            s.spawn(move || {
                                let t = self.transport(h);
                                if let Err(f) = self.exec_plain(h, t.as_ref(), cmd, 4096) {
                                    if f.kind == FaultKind::Unreachable {
                                        lock(failed).push((h.name.clone(), f.message));
                                    }
                                }
                            });
                        }
                    });
                }
            }
        }
        let mut failed = failed.into_inner().unwrap_or_else(|e| e.into_inner());
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

    /// Before a resume or rollback touches anything: looks on every host of the run for commands
    /// of earlier attempts (their markers), waits for or kills those still running, and
    /// remembers what each marker said for the report of the action in flight. Refuses when a
    /// command is still running after the wait.
    pub(crate) fn fence(&self, on_running: OnRunning, wait: Duration) -> Result<(), Fault> {
        let Some(j) = self.journal.get() else {
            return Ok(());
        };
        if j.attempt < 2 || self.mode != Mode::Run || !matches!(self.backend, Backend::Real { .. })
        {
            return Ok(());
        }
        let rows = j.journal.replay_log(&j.run_id).unwrap_or_default();
        let what = |name: &str| -> String {
            rows.iter()
                .find(|r| format!("{}.{}.{}", j.run_id, r.attempt, r.seq) == name)
                .map_or_else(
                    || format!("a command ({name})"),
                    |r| format!("`{}` (attempt {})", r.description, r.attempt),
                )
        };
        let policy = match on_running {
            OnRunning::Wait => "wait",
            OnRunning::Kill => "kill",
        };
        let secs = wait.as_secs().to_string();
        let argv: Vec<String> = [
            "sh",
            "-c",
            transport::wrap::SCAN,
            "sh",
            &j.run_id,
            policy,
            &secs,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let cmd = Command::Argv(argv);
        let hosts: Vec<&HostEntry> = self.inventory.hosts.iter().collect();
        let found: Mutex<Vec<(String, Result<ExecOutput, Fault>)>> = Mutex::new(Vec::new());
        for chunk in hosts.chunks(32) {
            std::thread::scope(|s| {
                for h in chunk {
                    let (cmd, found) = (&cmd, &found);
                    s.spawn(move || {
                        let t = self.transport(h);
                        let r = self.exec_on(
                            h,
                            t.as_ref(),
                            cmd,
                            &BTreeMap::new(),
                            None,
                            None,
                            Some(wait + Duration::from_secs(60)),
                            1 << 20,
                            None,
                            None,
                        );
                        lock(found).push((h.name.clone(), r));
                    });
                }
            });
        }
        let mut found = found.into_inner().unwrap_or_else(|e| e.into_inner());
        found.sort_by(|a, b| a.0.cmp(&b.0));
        let mut markers = HashMap::new();
        let mut still = Vec::new();
        for (host, r) in found {
            let out = match r {
                Ok(o) if o.code == Some(0) => o,
                Ok(o) => {
                    self.log("warn", &format!("{host}: could not look for commands of earlier attempts still running: {}", last_lines(&o.stderr, 3)));
                    continue;
                }
                Err(f) => {
                    self.log("warn", &format!("{host}: could not look for commands of earlier attempts still running: {}", f.message));
                    continue;
                }
            };
            use transport::wrap::MarkerStatus as M;
            for m in transport::wrap::parse_scan(&String::from_utf8_lossy(&out.stdout)) {
                match &m.status {
                    M::Killed => self.log(
                        "warn",
                        &format!(
                            "{host}: {} was still running: killed it (--on-running kill)",
                            what(&m.name)
                        ),
                    ),
                    M::EndedWhileWaiting => self.log(
                        "warn",
                        &format!(
                            "{host}: {} was still running: waited until it ended",
                            what(&m.name)
                        ),
                    ),
                    M::Running { pid } => still.push(format!(
                        "{host}: {} is still running (pid {pid}) after waiting {}s",
                        what(&m.name),
                        wait.as_secs()
                    )),
                    M::Done | M::Gone => {}
                }
                markers.insert(m.name, m.status);
            }
        }
        let mut book = lock(&self.replay);
        book.set_markers(markers);
        for row in book.in_flight() {
            let note = replay::in_flight_note(book.marker(&j.run_id, row));
            self.log(
                "warn",
                &format!(
                    "{}: `{}` may have run: attempt {} was running it when it stopped ({note}); step `{}` runs it again",
                    row.host, row.description, row.attempt, row.step
                ),
            );
        }
        drop(book);
        if still.is_empty() {
            Ok(())
        } else {
            Err(Fault::new(
                FaultKind::Action,
                None,
                format!(
                    "commands of an earlier attempt of this run are still running; nothing was done:\n  {}\nwait and try again, allow a longer wait (--running-timeout), or end them (--on-running kill)",
                    still.join("\n  ")
                ),
            ))
        }
    }

    /// Removes this run's markers from the hosts this attempt left them on (the run ended:
    /// nothing will ask for them). Best effort.
    pub(crate) fn clear_markers(&self) {
        let (Some(j), Backend::Real { .. }) = (self.journal.get(), &self.backend) else {
            return;
        };
        let hosts: Vec<String> = std::mem::take(&mut *lock(&self.marked))
            .into_iter()
            .collect();
        let argv: Vec<String> = ["sh", "-c", transport::wrap::CLEAR, "sh", &j.run_id]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let cmd = Command::Argv(argv);
        for chunk in hosts.chunks(32) {
            std::thread::scope(|s| {
                for name in chunk {
                    let cmd = &cmd;
                    s.spawn(move || {
                        if let Some(h) = self.inventory.host(name) {
                            let t = self.transport(h);
                            if let Err(e) = self.exec_plain(h, t.as_ref(), cmd, 4096) {
                                tracing::debug!(host = %name, "markers not cleared: {e}");
                            }
                        }
                    });
                }
            });
        }
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
        self.journal_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(|| e.to_string());
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
        match &self.backend {
            Backend::Sim(w) => w.lock().unwrap_or_else(|e| e.into_inner()).now(),
            _ => self.started.elapsed(),
        }
    }

    /// Seconds since the Unix epoch: the wall clock, or in simulation the moment the run started
    /// plus the simulated time (so a duration measured with it is the simulated one).
    pub fn clock(&self) -> f64 {
        let at = match &self.backend {
            Backend::Sim(_) => self.started_wall + self.now(),
            _ => std::time::SystemTime::now(),
        };
        at.duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    }

    /// Waits; in simulation the clock moves instead. Wakes early to honour a stop request.
    pub fn sleep(&self, d: Duration) -> Result<(), Fault> {
        match &self.backend {
            Backend::Sim(w) => {
                w.lock().unwrap_or_else(|e| e.into_inner()).advance(d);
                Ok(())
            }
            _ => {
                let end = Instant::now() + d;
                while Instant::now() < end {
                    if self.cancel.should_stop() {
                        return Err(Fault::new(FaultKind::Interrupted, None, "interrupted"));
                    }
                    std::thread::sleep((end - Instant::now()).min(Duration::from_millis(100)));
                }
                Ok(())
            }
        }
    }

    /// True when this executor acts on a simulated world.
    pub fn is_simulated(&self) -> bool {
        matches!(self.backend, Backend::Sim(_))
    }

    pub(crate) fn add_ticker(&self, t: Ticker) {
        self.tickers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(t);
    }

    pub(crate) fn clear_tickers(&self) {
        self.tickers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// The hosts (in first-touch order) and the number of actions recorded for `step`.
    pub fn step_summary(&self, step: &str) -> (Vec<String>, usize) {
        self.per_step
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(step)
            .cloned()
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
        match &self.backend {
            Backend::Real {
                transports, jumps, ..
            } => {
                let mut t = transports.lock().unwrap_or_else(|e| e.into_inner());
                t.entry(host.name.clone())
                    .or_insert_with(|| transport::open(host, jumps))
                    .clone()
            }
            _ => unreachable!("transports exist only in run and check modes"),
        }
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
        match &self.backend {
            Backend::Real {
                transports, jumps, ..
            } => {
                let mut t = transports.lock().unwrap_or_else(|e| e.into_inner());
                Ok(t.entry(format!("{}\u{1}{user}", host.name))
                    .or_insert_with(|| {
                        let mut as_user = host.clone();
                        as_user.become_ = Some(crate::inventory::Become {
                            user: user.to_string(),
                            password: host.become_password.clone(),
                        });
                        transport::open(&as_user, jumps)
                    })
                    .clone())
            }
            _ => unreachable!("transports exist only in run and check modes"),
        }
    }

    /// Reaches every host and takes their locks, as the first change does: a rollback asks
    /// before its first undo, so that a refusal leaves every undo pending.
    pub(crate) fn ready_to_change(&self) -> Result<(), Fault> {
        if matches!(self.backend, Backend::Inert) {
            return Ok(());
        }
        self.journal_refusal(None)?;
        self.reach_all()?;
        self.lock_hosts()
    }

    /// Refuses every action once a journal write failed (see `journal_failed`).
    fn journal_refusal(&self, host: Option<&str>) -> Result<(), Fault> {
        match self
            .journal_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
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
        if !held && !action.is_read_only() && !matches!(self.backend, Backend::Inert) {
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
        let name = entry.map_or_else(|| host.to_string(), |e| e.name.clone());
        let seq = self.seq.fetch_add(1, Ordering::SeqCst);
        let at = self.now();
        let wall = Instant::now();
        // Every action of a step in a real run is journaled with what it returned (a mutating
        // one durably, before it runs too), and a resumed step gets back what its earlier
        // attempt finished (see `replay`).
        let replay = match (&self.backend, self.journal.get(), current_step()) {
            (Backend::Real { .. }, Some(j), Some(step))
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
            let (pos, decision) = lock(&self.replay).next(&step, &name, &fp);
            if let replay::Decision::Replay { outcome, attempt } = decision {
                let result = Ok(outcome);
                self.record(
                    seq,
                    &name,
                    &action,
                    Disposition::Replayed,
                    at,
                    Duration::ZERO,
                    &result,
                );
                self.replay_row(j, &step, &name, pos, seq, &fp, &action, &result);
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
                        step: step.clone(),
                        host: name.clone(),
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
                lock(&self.marked).insert(name.clone());
                format!("{}.{}.{seq}", j.run_id, j.attempt)
            });
        let (disposition, result) = match &self.backend {
            Backend::Inert => (
                Disposition::Simulated,
                Err(Fault::new(
                    FaultKind::Script,
                    Some(host),
                    "this playbook acts on hosts before calling params(); call params() first",
                )),
            ),
            _ if held => (Disposition::Skipped, Ok(Outcome::Skipped)),
            Backend::Sim(w) => {
                let r = w.lock().unwrap_or_else(|e| e.into_inner()).apply(
                    &name,
                    current_step().as_deref(),
                    &action,
                );
                (Disposition::Simulated, r)
            }
            Backend::Real { .. } if self.mode == Mode::Check && !action.is_read_only() => {
                (Disposition::Skipped, Ok(Outcome::Skipped))
            }
            Backend::Real { sql, ddb, .. } => {
                let r = match (&action, entry) {
                    (
                        Action::Sql {
                            target,
                            kind,
                            statement,
                            params,
                        },
                        _,
                    ) => sql
                        .perform(&self.inventory, target, *kind, statement, params)
                        .map(Outcome::Sql)
                        .map_err(|f| self.redacted(f)),
                    (
                        Action::Ddb {
                            target,
                            kind,
                            script,
                        },
                        _,
                    ) => ddb
                        .perform(&self.inventory, target, *kind, script)
                        .map(Outcome::Ddb)
                        .map_err(|f| self.redacted(f)),
                    (_, Some(entry)) => self.perform_real(entry, &action, marker.as_deref()),
                    (_, None) => unreachable!("only SQL actions run without an inventory host"),
                };
                (Disposition::Performed, r)
            }
        };
        let duration = match &self.backend {
            Backend::Sim(_) => self.now().saturating_sub(at),
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
                    &name,
                    pos,
                    state,
                    outcome.as_deref(),
                ) {
                    self.journal_failed(&e);
                }
            } else {
                self.replay_row(j, &step, &name, pos, seq, &fp, &action, &result);
            }
        }
        self.record(seq, &name, &action, disposition, at, duration, &result);
        if matches!(self.backend, Backend::Sim(_)) && !TICKING.with(|t| t.get()) {
            let tickers = self
                .tickers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
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

    fn redacted(&self, mut f: Fault) -> Fault {
        f.message = self.inventory.redactor.redact(&f.message);
        f
    }

    /// Journals a replayed action, or a read, in this attempt's replay log (a later resume
    /// replays it too).
    #[allow(clippy::too_many_arguments)]
    fn replay_row(
        &self,
        j: &RunJournal,
        step: &str,
        host: &str,
        pos: u32,
        seq: u64,
        fp: &str,
        action: &Action,
        result: &Result<Outcome, Fault>,
    ) {
        let outcome = result
            .as_ref()
            .ok()
            .and_then(|o| Recorded::of(o, &self.inventory.redactor))
            .and_then(|r| serde_json::to_string(&r).ok());
        let row = ReplayRow {
            attempt: j.attempt,
            step: step.to_string(),
            host: host.to_string(),
            pos,
            seq,
            fingerprint: fp.to_string(),
            description: self.inventory.redactor.redact(&action.describe()),
            state: if result.is_ok() {
                ReplayState::Done
            } else {
                ReplayState::Failed
            },
            outcome,
        };
        // Batched: nothing depends on it before the next durable write, which writes it first.
        if let Err(e) = j.journal.replay_read(&j.run_id, &row) {
            self.journal_failed(&e);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        seq: u64,
        host: &str,
        action: &Action,
        disposition: Disposition,
        at: Duration,
        duration: Duration,
        result: &Result<Outcome, Fault>,
    ) {
        let red = &self.inventory.redactor;
        let summary = match result {
            Ok(Outcome::Exec(o)) => match (o.code, &o.signal) {
                (Some(c), _) => format!("exit {c}"),
                (None, Some(s)) => format!("killed by SIG{s}"),
                (None, None) => "ended".into(),
            },
            Ok(Outcome::Skipped) => "skipped (check mode)".into(),
            Ok(Outcome::Bool(b)) => b.to_string(),
            Ok(Outcome::Int(i)) => i.to_string(),
            Ok(Outcome::Text(t)) => t.clone(),
            Ok(Outcome::Bytes(b)) => format!("{} bytes", b.len()),
            Ok(Outcome::Unit) => "ok".into(),
            Ok(Outcome::Sql(r)) if r.columns.is_empty() => format!("{} affected", r.affected),
            Ok(Outcome::Sql(r)) => format!("{} rows", r.rows.len()),
            Ok(Outcome::Ddb(v)) => v.summary(),
            Ok(Outcome::Backup(b)) => format!(
                "{} files, {} bytes, sha256 {}",
                b.files,
                b.bytes,
                &b.sha256[..b.sha256.len().min(12)]
            ),
            Err(f) => f.message.clone(),
        };
        let summary = if disposition == Disposition::Replayed {
            format!("{summary} (replayed: finished by an earlier attempt)")
        } else {
            summary
        };
        let rec = ActionRecord {
            attempt: self.journal.get().map_or(1, |j| j.attempt),
            seq,
            host: host.to_string(),
            step: current_step(),
            op: action.op().to_string(),
            read_only: action.is_read_only(),
            description: red.redact(&action.describe()),
            disposition,
            at_ms: at.as_millis() as u64,
            duration_ms: duration.as_millis() as u64,
            ok: result.is_ok(),
            result: red.redact(&summary),
            argv: action
                .argv()
                .map(|a| a.iter().map(|x| red.redact(x)).collect()),
        };
        if let Some(j) = self.journal.get() {
            if let Err(e) = j.journal.record_action(&j.run_id, j.attempt, &rec) {
                self.journal_failed(&e);
            }
        }
        if let Some(step) = &rec.step {
            let mut per = self.per_step.lock().unwrap_or_else(|e| e.into_inner());
            let (hosts, n) = per.entry(step.clone()).or_default();
            *n += 1;
            if !hosts.contains(&rec.host) {
                hosts.push(rec.host.clone());
            }
        }
        // The journal keeps the records (reports are read from it); nothing else holds them.
        self.events.emit(&Event::Action(rec));
    }

    fn transport_fault(&self, host: &HostEntry, e: TransportError) -> Fault {
        let kind = match &e {
            TransportError::CommandTimeout { .. } => FaultKind::Timeout,
            TransportError::Aborted => FaultKind::Interrupted,
            e if e.is_unreachable() => FaultKind::Unreachable,
            _ => FaultKind::Action,
        };
        let mut msg = format!("{}: {e}", host.name);
        if let TransportError::CommandTimeout { partial, .. } = &e {
            let tail = last_lines(&partial.stderr, 5);
            if !tail.is_empty() {
                msg.push_str(&format!("; last stderr:\n{tail}"));
            }
        }
        let f = Fault::new(kind, Some(&host.name), self.inventory.redactor.redact(&msg));
        match e {
            TransportError::Spawn { .. } => f.with_reason("spawn"),
            _ => f,
        }
    }

    /// Runs a helper command (argv) for a file primitive and returns its output when it exits 0.
    fn helper(
        &self,
        host: &HostEntry,
        t: &dyn Transport,
        argv: &[&str],
        what: &str,
    ) -> Result<ExecOutput, Fault> {
        let cmd = Command::Argv(argv.iter().map(|s| s.to_string()).collect());
        let out = self.exec_plain(host, t, &cmd, MAX_READ)?;
        if out.code == Some(0) {
            Ok(out)
        } else {
            Err(Fault::new(
                FaultKind::Action,
                Some(&host.name),
                format!(
                    "{}: {what} failed: {}",
                    host.name,
                    last_lines(&out.stderr, 3)
                ),
            ))
        }
    }

    /// A helper command: no env, cwd, stdin or live output; the host's command timeout.
    fn exec_plain(
        &self,
        host: &HostEntry,
        t: &dyn Transport,
        cmd: &Command,
        max_output: usize,
    ) -> Result<ExecOutput, Fault> {
        self.exec_on(
            host,
            t,
            cmd,
            &BTreeMap::new(),
            None,
            None,
            None,
            max_output,
            None,
            None,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn exec_on(
        &self,
        host: &HostEntry,
        t: &dyn Transport,
        command: &Command,
        env: &BTreeMap<String, String>,
        cwd: Option<&str>,
        stdin: Option<&[u8]>,
        timeout: Option<Duration>,
        max_output: usize,
        on_output: Option<transport::OutputSink>,
        extra: Option<(&BTreeMap<String, String>, Option<&str>)>,
    ) -> Result<ExecOutput, Fault> {
        static NONE: BTreeMap<String, String> = BTreeMap::new();
        let (secret_files, marker) = extra.unwrap_or((&NONE, None));
        let red = &self.inventory.redactor;
        let sensitive = red.contains_secret(&command.display())
            || env.values().any(|v| red.contains_secret(v))
            || cwd.is_some_and(|c| red.contains_secret(c));
        t.exec(&ExecRequest {
            command,
            env,
            cwd,
            stdin,
            timeout: timeout.unwrap_or(host.command_timeout),
            max_output,
            abort: self.cancel.abort_flag(),
            on_output,
            marker,
            sensitive,
            secret_files,
        })
        .map_err(|e| self.transport_fault(host, e))
    }

    fn perform_real(
        &self,
        host: &HostEntry,
        action: &Action,
        marker: Option<&str>,
    ) -> Result<Outcome, Fault> {
        let t = self.transport_as(host, action.become_user())?;
        let action = action.inner();
        if let Action::WaitPort { port, timeout } = action {
            return self.wait_port_real(host, *port, *timeout);
        }
        let t = t.as_ref();
        let fault = |m: String| {
            Fault::new(
                FaultKind::Action,
                Some(&host.name),
                format!("{}: {m}", host.name),
            )
        };
        match action {
            Action::Exec {
                command,
                env,
                cwd,
                stdin,
                timeout,
                secret_files,
                ..
            } => {
                let (live, sink) = self.live_output(host);
                let out = self.exec_on(
                    host,
                    t,
                    command,
                    env,
                    cwd.as_deref(),
                    stdin.as_deref(),
                    *timeout,
                    MAX_OUTPUT,
                    Some(sink),
                    Some((secret_files, marker)),
                );
                live.finish();
                out.map(Outcome::Exec)
            }
            Action::ReadFile { path } => {
                let out = self.helper(host, t, &["cat", "--", path], &format!("read {path}"))?;
                if out.truncated {
                    return Err(fault(format!(
                        "{path} is larger than {} MiB",
                        MAX_READ >> 20
                    )));
                }
                Ok(Outcome::Bytes(out.stdout))
            }
            Action::Exists { path } => {
                let cmd = Command::Argv(vec!["test".into(), "-e".into(), path.clone()]);
                let out = self.exec_plain(host, t, &cmd, 4096)?;
                Ok(Outcome::Bool(out.code == Some(0)))
            }
            Action::Checksum { path } => {
                let out = self.helper(
                    host,
                    t,
                    &["sha256sum", "--", path],
                    &format!("checksum of {path}"),
                )?;
                let text = String::from_utf8_lossy(&out.stdout);
                let sum = text
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                if sum.len() != 64 {
                    return Err(fault(format!("unexpected sha256sum output: {text}")));
                }
                Ok(Outcome::Text(sum))
            }
            Action::FreeSpace { path } => {
                let out =
                    self.helper(host, t, &["df", "-Pk", "--", path], &format!("df {path}"))?;
                let text = String::from_utf8_lossy(&out.stdout);
                parse_df(&text)
                    .map(Outcome::Int)
                    .ok_or_else(|| fault(format!("unexpected df output: {text}")))
            }
            Action::DiskUsage { path } => {
                let out =
                    self.helper(host, t, &["du", "-sk", "--", path], &format!("du {path}"))?;
                let text = String::from_utf8_lossy(&out.stdout);
                text.split_whitespace()
                    .next()
                    .and_then(|k| k.parse::<i64>().ok())
                    .map(|k| Outcome::Int(k * 1024))
                    .ok_or_else(|| fault(format!("unexpected du output: {text}")))
            }
            Action::WriteFile {
                path,
                content,
                mode,
            } => t
                .put(path, &mut content.as_slice(), content.len() as u64, *mode)
                .map(|_| Outcome::Unit)
                .map_err(|e| self.transport_fault(host, e)),
            Action::Mkdir { path } => {
                self.helper(
                    host,
                    t,
                    &["mkdir", "-p", "--", path],
                    &format!("mkdir {path}"),
                )?;
                Ok(Outcome::Unit)
            }
            Action::Copy { from, to } => {
                self.helper(
                    host,
                    t,
                    &["cp", "-a", "--", from, to],
                    &format!("copy {from} to {to}"),
                )?;
                Ok(Outcome::Unit)
            }
            Action::Move { from, to } => {
                self.helper(
                    host,
                    t,
                    &["mv", "--", from, to],
                    &format!("move {from} to {to}"),
                )?;
                Ok(Outcome::Unit)
            }
            Action::Remove { path } => {
                self.helper(
                    host,
                    t,
                    &["rm", "-rf", "--", path],
                    &format!("remove {path}"),
                )?;
                Ok(Outcome::Unit)
            }
            Action::ReplaceDir {
                target,
                source,
                keep,
            } => {
                self.helper(
                    host,
                    t,
                    &[
                        "sh",
                        "-c",
                        REPLACE_DIR_SH,
                        "capstan-replace-dir",
                        source,
                        target,
                        keep.as_deref().unwrap_or(""),
                    ],
                    &format!("replace {target}"),
                )?;
                Ok(Outcome::Unit)
            }
            Action::Restore { target, saved } => {
                self.helper(
                    host,
                    t,
                    &["sh", "-c", RESTORE_SH, "capstan-restore", saved, target],
                    &format!("restore {target}"),
                )?;
                Ok(Outcome::Unit)
            }
            Action::Upload {
                local,
                remote,
                mode,
            } => {
                let mut f = std::fs::File::open(local).map_err(|e| {
                    Fault::new(
                        FaultKind::BadInput,
                        Some(&host.name),
                        format!("cannot open {local}: {e}"),
                    )
                })?;
                let size = f.metadata().map(|m| m.len()).unwrap_or(0);
                t.put(remote, &mut f, size, *mode)
                    .map(|_| Outcome::Unit)
                    .map_err(|e| self.transport_fault(host, e))
            }
            Action::WaitPort { .. } => unreachable!("handled above"),
            Action::Sql { .. } => unreachable!("SQL goes to the SQL client"),
            Action::Ddb { .. } => unreachable!("DolphinDB goes to its client"),
            Action::Become { .. } => unreachable!("unwrapped above (`inner`)"),
            Action::Snapshot { source, to } => {
                let sh = self.shell(host, t);
                let run = self.journal.get().map(|j| j.run_id.as_str());
                crate::backup::snapshot(&sh, source, to, run)
                    .map(|m| Outcome::Backup(BackupInfo::from_manifest(&host.name, &m, true)))
            }
            Action::VerifyBackup { path } => crate::backup::verify(&self.shell(host, t), path)
                .map(|m| Outcome::Backup(BackupInfo::from_manifest(&host.name, &m, false))),
            Action::MysqlDump {
                target,
                db,
                path,
                flags,
                tool,
            } => {
                let pw = target
                    .resolve_password(&self.inventory)
                    .map_err(|m| fault(format!("mysqldump of {db}: {m}")))?;
                let run = self.journal.get().map(|j| j.run_id.as_str());
                crate::backup::mysqldump(
                    &self.shell(host, t),
                    target,
                    pw.as_ref(),
                    &crate::backup::DumpJob {
                        db,
                        path,
                        flags,
                        tool: tool.as_deref().unwrap_or("mysqldump"),
                    },
                    run,
                )
                .map(|m| Outcome::Backup(BackupInfo::from_manifest(&host.name, &m, true)))
                .map_err(|f| self.redacted(f))
            }
            Action::MysqlLoad { target, db, path } => {
                let pw = target
                    .resolve_password(&self.inventory)
                    .map_err(|m| fault(format!("loading {path} into {db}: {m}")))?;
                crate::backup::mysql_load(&self.shell(host, t), target, pw.as_ref(), db, path)
                    .map(|m| Outcome::Backup(BackupInfo::from_manifest(&host.name, &m, false)))
                    .map_err(|f| self.redacted(f))
            }
            Action::RestoreSnapshot { snapshot, target } => {
                crate::backup::restore_dir(&self.shell(host, t), snapshot, target)
                    .map(|m| Outcome::Backup(BackupInfo::from_manifest(&host.name, &m, false)))
            }
            Action::Docker { call, timeout } => self.docker_real(host, t, call, *timeout, marker),
        }
    }

    /// Runs a docker operation; a failure carries docker's own message and its reason.
    fn docker_real(
        &self,
        host: &HostEntry,
        t: &dyn Transport,
        op: &DockerOp,
        timeout: Option<Duration>,
        marker: Option<&str>,
    ) -> Result<Outcome, Fault> {
        let (live, sink) = self.live_output(host);
        let out = self.exec_on(
            host,
            t,
            &Command::Argv(op.argv()),
            &BTreeMap::new(),
            None,
            None,
            timeout,
            MAX_OUTPUT,
            Some(sink),
            Some((&BTreeMap::new(), marker)),
        );
        live.finish();
        let out = out.map_err(|mut f| {
            if matches!(f.reason.as_deref(), Some("spawn")) {
                // The local transport could not even start its shell.
                f.message = format!(
                    "{}: `{}` failed: the docker CLI is not installed ({})",
                    host.name,
                    op.describe(),
                    f.message
                );
                f.reason = Some("no_cli".into());
            }
            f
        })?;
        crate::docker::judge(&host.name, op, out)
            .map_err(|mut f| {
                if f.reason.as_deref() == Some("no_cli") && !f.message.contains("not installed") {
                    // The wrapper's shell says "docker: not found"; say what it means.
                    f.message = format!(
                        "{}: `{}` failed: the docker CLI is not installed ({})",
                        host.name,
                        op.describe(),
                        f.message
                    );
                }
                self.redacted(f)
            })
            .map(|o| o.map_or(Outcome::Unit, Outcome::Exec))
    }

    /// A long command's output as `output` events: the collector, and the sink the transport
    /// feeds (call `finish` on the collector when the command ends).
    fn live_output(&self, host: &HostEntry) -> (Arc<LiveOutput>, transport::OutputSink) {
        let live = Arc::new(LiveOutput::new(
            &host.name,
            self.events.clone(),
            self.inventory.redactor.clone(),
        ));
        let l = live.clone();
        (live, Arc::new(move |stream, bytes| l.push(stream, bytes)))
    }

    fn shell<'a>(&'a self, host: &'a HostEntry, t: &'a dyn Transport) -> ExecShell<'a> {
        ExecShell {
            exec: self,
            host,
            t,
        }
    }

    /// Probes the port from here, the way clients will reach it.
    fn wait_port_real(
        &self,
        host: &HostEntry,
        port: u16,
        timeout: Duration,
    ) -> Result<Outcome, Fault> {
        let start = Instant::now();
        let mut last;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let addrs = (host.address.as_str(), port).to_socket_addrs();
            match addrs {
                Ok(mut it) => match it.next() {
                    Some(a) => match TcpStream::connect_timeout(&a, Duration::from_secs(1)) {
                        Ok(_) => return Ok(Outcome::Unit),
                        Err(e) => last = e.to_string(),
                    },
                    None => last = "address resolves to nothing".into(),
                },
                Err(e) => last = e.to_string(),
            }
            if start.elapsed() >= timeout {
                return Err(Fault::new(
                    FaultKind::Timeout,
                    Some(&host.name),
                    format!(
                        "{}: port {port} on {} did not accept a connection within {}s (last: {last})",
                        host.name,
                        host.address,
                        timeout.as_secs()
                    ),
                ));
            }
            // The live status line and the heartbeat show the wait: its first try, then one
            // event every 2 s (a try every 250 ms would flood `--json`).
            if attempt % 8 == 1 {
                self.events.emit(&Event::Waiting {
                    step: current_step(),
                    what: format!("port {port} on {} ({})", host.name, host.address),
                    attempt,
                    waited_ms: start.elapsed().as_millis() as u64,
                    timeout_ms: timeout.as_millis() as u64,
                    every_ms: 2_000,
                    last: self.inventory.redactor.redact(&last),
                });
            }
            self.sleep(Duration::from_millis(250).min(timeout.saturating_sub(start.elapsed())))?;
        }
    }
}

/// A host's shell for the backup module: helper scripts and file writes through the transport.
struct ExecShell<'a> {
    exec: &'a Executor,
    host: &'a HostEntry,
    t: &'a dyn Transport,
}

impl HostShell for ExecShell<'_> {
    fn sh(&self, script: &str, args: &[&str], stdin: Option<&[u8]>) -> Result<ExecOutput, Fault> {
        let mut argv = vec![
            "sh".to_string(),
            "-c".into(),
            script.into(),
            "capstan".into(),
        ];
        argv.extend(args.iter().map(|a| a.to_string()));
        self.exec.exec_on(
            self.host,
            self.t,
            &Command::Argv(argv),
            &BTreeMap::new(),
            None,
            stdin,
            None,
            MAX_READ,
            None,
            None,
        )
    }

    fn put(&self, path: &str, data: &[u8], mode: i32) -> Result<(), Fault> {
        self.t
            .put(path, &mut &data[..], data.len() as u64, mode)
            .map_err(|e| self.exec.transport_fault(self.host, e))
    }

    fn name(&self) -> &str {
        &self.host.name
    }
}

/// How long a command runs before its output is also sent as `output` events.
const LIVE_AFTER: Duration = Duration::from_secs(1);
/// The longest line one `output` event carries; longer lines are cut into pieces.
const LIVE_LINE_MAX: usize = 16 * 1024;

/// A command's output as `output` events, for long commands: lines seen in its first second are
/// held (short commands stay quiet; their output is in the script's result), then every complete
/// line is sent as it arrives. Whole lines only, so a secret split across two reads is still
/// redacted.
struct LiveOutput {
    host: String,
    step: Option<String>,
    events: Arc<dyn EventSink>,
    redactor: crate::secret::Redactor,
    start: Instant,
    state: Mutex<LiveState>,
}

#[derive(Default)]
struct LiveState {
    /// The command has ended: a daemon it started may still hold its pipes; that is not its output.
    ended: bool,
    partial: [Vec<u8>; 2],
    held: Vec<(&'static str, String)>,
}

impl LiveOutput {
    fn new(host: &str, events: Arc<dyn EventSink>, redactor: crate::secret::Redactor) -> Self {
        LiveOutput {
            host: host.to_string(),
            step: current_step(),
            events,
            redactor,
            start: Instant::now(),
            state: Mutex::new(LiveState::default()),
        }
    }

    fn push(&self, stream: &'static str, bytes: &[u8]) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.ended {
            return;
        }
        let buf = &mut st.partial[usize::from(stream == "stderr")];
        buf.extend_from_slice(bytes);
        let mut lines = Vec::new();
        while let Some(i) = buf
            .iter()
            .position(|b| *b == b'\n')
            .or_else(|| (buf.len() >= LIVE_LINE_MAX).then_some(LIVE_LINE_MAX - 1))
        {
            let line: Vec<u8> = buf.drain(..=i).collect();
            lines.push((stream, String::from_utf8_lossy(&line).into_owned()));
        }
        st.held.extend(lines);
        if self.start.elapsed() >= LIVE_AFTER {
            let out = std::mem::take(&mut st.held);
            drop(st);
            self.send(out);
        }
    }

    /// The command ended: a long one sends what is left, a short one nothing.
    fn finish(&self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.ended = true;
        if self.start.elapsed() < LIVE_AFTER {
            return;
        }
        let mut out = std::mem::take(&mut st.held);
        for (i, name) in ["stdout", "stderr"].into_iter().enumerate() {
            let rest = std::mem::take(&mut st.partial[i]);
            if !rest.is_empty() {
                out.push((name, String::from_utf8_lossy(&rest).into_owned()));
            }
        }
        drop(st);
        self.send(out);
    }

    fn send(&self, lines: Vec<(&'static str, String)>) {
        for (stream, text) in lines {
            self.events.emit(&Event::Output {
                host: self.host.clone(),
                step: self.step.clone(),
                stream: stream.to_string(),
                text: self.redactor.redact(&text),
            });
        }
    }
}

/// `$1` = source, `$2` = target, `$3` = where to keep the old directory (empty: remove it).
/// The new copy is complete before the old directory moves.
const REPLACE_DIR_SH: &str = r#"set -e
src=$1; dst=$2; keep=$3; new="$dst.capstan-new"; old="$dst.capstan-old"
rm -rf -- "$new" "$old"
cp -a -- "$src" "$new"
if [ -e "$dst" ]; then mv -- "$dst" "$old"; fi
mv -- "$new" "$dst"
if [ -n "$keep" ] && [ -e "$old" ]; then rm -rf -- "$keep"; mv -- "$old" "$keep"; else rm -rf -- "$old"; fi"#;

/// `$1` = saved copy, `$2` = target. Safe to run twice: once `saved` is gone the target has
/// been restored, and nothing is touched.
const RESTORE_SH: &str = r#"set -e
saved=$1; dst=$2
if [ ! -e "$saved" ] && [ ! -L "$saved" ]; then exit 0; fi
rm -rf -- "$dst"
mv -- "$saved" "$dst""#;

fn parse_df(text: &str) -> Option<i64> {
    // POSIX `df -P`: header, then one line; the 4th field is available 1K blocks.
    let line = text.lines().nth(1)?;
    let avail: i64 = line.split_whitespace().nth(3)?.parse().ok()?;
    Some(avail * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn df_available_bytes() {
        let t =
            "Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/vda 100 40 60 40% /\n";
        assert_eq!(parse_df(t), Some(60 * 1024));
        assert_eq!(parse_df("garbage"), None);
    }

    #[test]
    fn read_only_split() {
        assert!(Action::Exists { path: "/".into() }.is_read_only());
        assert!(!Action::Remove { path: "/x".into() }.is_read_only());
    }
}
