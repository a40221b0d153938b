//! The run journal: every run, step, action, undo, guard and log line, in a SQLite file or on a server.
//!
//! Writes are durable before the playbook moves on (a SQLite file in WAL with `synchronous =
//! FULL`, or a committed InnoDB transaction on a MySQL-protocol server), so a `kill -9` at any
//! point leaves a journal that says exactly where the run stood. Every text that reaches this
//! module is already redacted by its caller.

mod copy;
mod lock;
mod report;
mod runs;
mod schema;
mod server;
mod steps;
mod store;
mod undos;

pub use schema::SCHEMA_VERSION;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use copy::CopySummary;
pub use lock::{holder_alive, process_alive, process_start_time, HostLock, LockConflict};
pub use server::{JournalAt, ServerSpec};
use store::{vals, Conn, Row, SResult, Server, StoreErr, SERVER_SCHEMA};

use crate::error::{Error, Located, Result};
use crate::report::{
    ActionRecord, BackupRecord, Disposition, GuardRecord, LogLine, Outcome, RunReport, StepRecord,
    StepStatus, UndoRecord,
};
use crate::Mode;

/// Where a mutating action stands in the replay log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayState {
    /// Journaled before it ran; nothing after: it was running when the process died.
    Started,
    /// Ended well; `outcome` holds what it returned.
    Done,
    /// Ended with an error (runs again on resume).
    Failed,
}

/// One row of the replay log: a mutating action at a position of a step on a host.
#[derive(Debug, Clone)]
pub struct ReplayRow {
    pub attempt: u32,
    pub step: String,
    pub host: String,
    /// Its place among the step's replayable actions on that host, from 0.
    pub pos: u32,
    /// The action's number in its attempt (the marker on the host is `RUN.ATTEMPT.SEQ`).
    pub seq: u64,
    /// The action, hashed: a resumed step replays an action only when it asks for the same one.
    pub fingerprint: String,
    pub description: String,
    pub state: ReplayState,
    /// What it returned (JSON of `action::Recorded`), redacted.
    pub outcome: Option<String>,
}

/// One run's place in a journal: what the executor and the script API write through.
#[derive(Debug, Clone)]
pub struct RunJournal {
    pub journal: std::sync::Arc<Journal>,
    pub run_id: String,
    /// 1 for the first attempt; each resume or rollback adds one.
    pub attempt: u32,
}

/// A run's state in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    Interrupted,
    /// Failed (or stopped), then every registered undo ran.
    RolledBack,
    /// A rollback ran and some undos failed or could not be restored.
    RollbackIncomplete,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
            RunStatus::RolledBack => "rolled_back",
            RunStatus::RollbackIncomplete => "rollback_incomplete",
        }
    }
    fn parse(s: &str) -> RunStatus {
        match s {
            "succeeded" => RunStatus::Succeeded,
            "failed" => RunStatus::Failed,
            "interrupted" => RunStatus::Interrupted,
            "rolled_back" => RunStatus::RolledBack,
            "rollback_incomplete" => RunStatus::RollbackIncomplete,
            _ => RunStatus::Running,
        }
    }
}

/// What an undo does, as data: it survives the process that registered it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum UndoSpec {
    /// Actions on one host, performed in order (registered by mutating primitives). The
    /// journal keeps them as the executor wrote them (its `Action` as JSON) and does not read
    /// them, but for a restore's kept copy in the report.
    Actions {
        host: String,
        actions: Vec<serde_json::Value>,
    },
    /// A script closure: its function name and the values it captured (see `api::persist`).
    Closure(ClosureSpec),
    /// A point of no return (`no_way_back`): a rollback stops here, and the undos registered
    /// before it stay pending.
    Barrier { reason: String },
    /// A check every rollback runs before its first undo (`rollback_gate`): when it fails, the
    /// rollback changes nothing and every undo stays pending.
    Gate(ClosureSpec),
}

/// A script closure as the journal keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClosureSpec {
    /// Rhai's name for it (`anon$…`): a hash of its body, the same for the same playbook.
    pub function: String,
    /// Captured values in order, as JSON with hosts and secrets by reference.
    pub captured: Vec<serde_json::Value>,
    /// Why it cannot be rebuilt by another process, when it cannot (a value with no JSON form).
    pub not_restorable: Option<String>,
    /// Where it was written, for messages.
    pub at: Option<String>,
    /// The shared lists `captured` refers to (`{"$list": hash}`) that this run's journal may not
    /// hold yet, as (hash, JSON): written with the undo or guard, in its transaction.
    #[serde(skip)]
    pub lists: Vec<(String, String)>,
}

/// The state of one registered undo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UndoStatus {
    Pending,
    Done,
    Failed,
}

/// The state of one guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardStatus {
    /// Set and not yet restored: the dangerous toggle is in effect.
    Set,
    /// Restored when an attempt ended: a resume sets it again (the steps that set it are done).
    Restored,
    /// Restored by the script (`restore_guard`): it stays restored.
    Released,
    /// Its restore failed: the toggle is still in effect.
    RestoreFailed,
}

impl GuardStatus {
    /// Whether the dangerous toggle is on now (set, or its restore failed).
    pub fn in_effect(self) -> bool {
        matches!(self, GuardStatus::Set | GuardStatus::RestoreFailed)
    }
}

fn status_str<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn parse_status<T: for<'a> Deserialize<'a>>(s: &str, fallback: T) -> T {
    serde_json::from_value(serde_json::Value::String(s.to_string())).unwrap_or(fallback)
}

/// What `begin_run` records about a new run.
#[derive(Debug, Clone)]
pub struct RunStart {
    pub playbook: String,
    pub playbook_path: Option<String>,
    pub source: String,
    pub inventory_id: String,
    pub inventory_path: Option<String>,
    pub hosts: Vec<String>,
    /// Already redacted.
    pub params: serde_json::Value,
    pub mode: Mode,
}

/// One run as `capstan runs` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    pub id: String,
    pub playbook: String,
    pub playbook_path: Option<String>,
    pub playbook_hash: String,
    #[serde(skip)]
    pub playbook_source: String,
    pub inventory_id: String,
    pub inventory_path: Option<String>,
    pub hosts: Vec<String>,
    pub params: serde_json::Value,
    pub mode: Mode,
    pub operator: String,
    pub controller: String,
    pub pid: u32,
    /// The process's start time (clock ticks since boot, Linux; 0 unknown): with `pid`, tells
    /// the run's process from another that reuses its pid.
    pub pid_start: u64,
    /// Recorded as running, but its process is gone: it was killed. Known for a run of this
    /// machine, and for any machine's run with a journal on a server (see `Journal::hold_run`).
    pub process_gone: bool,
    pub started_unix_ms: u64,
    pub ended_unix_ms: Option<u64>,
    pub status: RunStatus,
    pub attempts: u32,
    /// Guards still in effect (set and not restored): the operator must act on these.
    pub guards_set: Vec<String>,
    /// Undos registered and not yet run.
    pub undos_pending: usize,
}

/// An undo as it is registered.
#[derive(Debug, Clone, Copy)]
pub struct NewUndo<'a> {
    pub step: Option<&'a str>,
    pub host: Option<&'a str>,
    pub description: &'a str,
    pub spec: &'a UndoSpec,
    /// Milliseconds since the attempt started.
    pub at_ms: u64,
}

/// A registered undo as the journal holds it.
#[derive(Debug, Clone)]
pub struct UndoRow {
    pub id: u64,
    pub step: Option<String>,
    pub host: Option<String>,
    pub description: String,
    pub spec: UndoSpec,
    pub status: UndoStatus,
}

/// A guard as the journal holds it.
#[derive(Debug, Clone)]
pub struct GuardRow {
    pub name: String,
    pub step: Option<String>,
    pub set_fn: ClosureSpec,
    pub restore_fn: ClosureSpec,
    pub status: GuardStatus,
}

/// A step as the journal holds it.
#[derive(Debug, Clone)]
pub struct StepRow {
    pub key: String,
    pub status: StepStatus,
    pub attempt: u32,
    pub result: Option<serde_json::Value>,
}

/// The journal: a SQLite file or a table set on a MySQL-protocol server, shared by the threads
/// of one run.
pub struct Journal {
    conn: Mutex<Db>,
    /// Rows waiting to be written, in the order they came (see `Db::flushed`).
    queue: Mutex<Queue>,
    at: Where,
    /// An in-memory journal's actions, as records by run: nothing but its report reads them,
    /// and a SQLite row per action (written, then read back whole for the report) was a fifth
    /// of a large rehearsal's time and a third of its memory. Written out to the table before
    /// the run is copied to another journal.
    kept: Option<Mutex<Kept>>,
}

/// An in-memory journal's actions, by run.
type Kept = HashMap<String, KeptRun>;

/// One run's actions in an in-memory journal.
#[derive(Default)]
struct KeptRun {
    /// Recorded since the last report, as they came (in order of attempt and seq but for a
    /// record written again; the report sorts and keeps the last, as the table's upsert). A
    /// list, not a map: the report takes it whole, with no second copy of every record.
    new: Vec<ActionRecord>,
    /// Every action as the last report has them, shared with it: a report moves the records
    /// in, it does not copy them (a 10,000-host rehearsal's actions are most of its memory).
    reported: Arc<Vec<ActionRecord>>,
}

/// Where a journal lives, for messages.
#[derive(Debug, Clone)]
enum Where {
    Memory,
    File(PathBuf),
    Server(ServerSpec),
}

impl std::fmt::Display for Where {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Where::Memory => f.write_str(":memory:"),
            Where::File(p) => write!(f, "{}", p.display()),
            Where::Server(s) => write!(f, "journal server {s}"),
        }
    }
}

/// Rows not yet written, and how many were ever queued (a ticket per row).
#[derive(Default)]
struct Queue {
    rows: Vec<Pending>,
    queued: u64,
}

/// The connection, and how far the queue has been written.
struct Db {
    conn: Conn,
    /// Action, log and read rows wait in the queue and go out with the next write that must
    /// be durable (a step's start or end, a change's replay row, an undo, a guard, the end of
    /// the run) or when `BATCH` are waiting: one fsync (one commit) for many rows. A `kill -9`
    /// can lose the action rows of the step that was running, never a step's state, a change's
    /// replay row or an undo. Durable rows from several threads at once share one transaction
    /// (group commit): whoever takes the connection writes every row queued so far, the others
    /// find theirs done.
    flushed: u64,
}

enum Pending {
    Action(String, u32, ActionRecord),
    Log(String, u32, LogLine),
    Replay(String, ReplayRow),
    ReplayEnd {
        run: String,
        attempt: u32,
        step: String,
        host: String,
        pos: u32,
        state: ReplayState,
        outcome: Option<String>,
    },
}

/// Rows written at once, at most, before a durable write forces them out.
const BATCH: usize = 256;

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Journal({})", self.at)
    }
}

/// Creates `path` readable and writable by this user only, or narrows an existing file to that:
/// the journal holds commands, outputs and hosts (secrets are redacted, but not the rest).
fn private_file(path: &Path) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let err = |e: std::io::Error| Error::Journal(format!("cannot create {}: {e}", path.display()));
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    let mode = f.metadata().map_err(err)?.permissions().mode() & 0o777;
    if mode != 0o600 {
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(err)?;
    }
    Ok(())
}

/// This process's start time, or 0 where the system does not tell.
fn my_start_time() -> u64 {
    lock::process_start_time(std::process::id()).unwrap_or(0)
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Who runs capstan: `$USER`, `$LOGNAME`, or the numeric uid.
pub fn operator() -> String {
    let uid = rustix::process::getuid().as_raw();
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| format!("uid {uid}"))
}

/// The machine capstan runs on, for locks and `capstan runs`: `CAPSTAN_CONTROLLER` when set
/// (containers and CI runners get random host names; two checkouts on one machine can be told
/// apart), else the host name.
pub fn controller() -> String {
    match std::env::var("CAPSTAN_CONTROLLER") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ => gethostname::gethostname().to_string_lossy().into_owned(),
    }
}

/// A content hash of a playbook's source, as the journal records it.
pub fn source_hash(source: &str) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(source.as_bytes());
    d.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// A UTC time of day as the run ids and `capstan runs` write it (`fmt` is strftime's).
fn utc(ms: u64, fmt: &str) -> String {
    jiff::Timestamp::from_millisecond(ms as i64)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .strftime(fmt)
        .to_string()
}

/// `20261122-214039-3fa2`: the UTC second the run started, then 4 hex digits that keep runs of
/// the same second apart.
fn new_run_id() -> String {
    use sha2::{Digest, Sha256};
    let now = unix_ms();
    let salt = Sha256::digest(format!(
        "{now}-{}-{:?}-{}",
        std::process::id(),
        std::thread::current().id(),
        controller()
    ));
    format!(
        "{}-{:02x}{:02x}",
        utc(now, "%Y%m%d-%H%M%S"),
        salt[0],
        salt[1]
    )
}

/// A UTC timestamp for people: `2026-11-22 21:40:39Z`.
pub fn format_unix_ms(ms: u64) -> String {
    utc(ms, "%Y-%m-%d %H:%M:%SZ")
}

/// The server session lock a run's process holds while it works on the run: another machine
/// reads whether the process lives from it (a killed process's session, and its lock, end).
fn run_lock_name(run: &str) -> String {
    format!("capstan-run:{run}")
}

impl Journal {
    /// Where the CLI keeps the journal unless `--journal` or `CAPSTAN_JOURNAL` says otherwise:
    /// `$XDG_STATE_HOME/capstan/journal.db`, else `~/.local/state/capstan/journal.db`.
    pub fn default_path() -> PathBuf {
        if let Some(p) = std::env::var_os("CAPSTAN_JOURNAL") {
            return PathBuf::from(p);
        }
        // The XDG state directory on every Unix, macOS included (the docs promise one place):
        // $XDG_STATE_HOME when absolute, else ~/.local/state.
        use etcetera::BaseStrategy as _;
        let base = etcetera::base_strategy::Xdg::new()
            .ok()
            .and_then(|x| x.state_dir())
            .unwrap_or_else(|| PathBuf::from("."));
        base.join("capstan").join("journal.db")
    }

    /// Opens the journal `at` names: a file (created with its directory if needed), or a server.
    pub fn open_at(at: &JournalAt) -> Result<Journal> {
        match at {
            JournalAt::File(p) => Journal::open(p),
            JournalAt::Server(s) => Journal::connect(s),
        }
    }

    /// Opens (creating it and its directory if needed) the journal at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Journal> {
        let path = path.as_ref();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::Journal(format!("cannot create {}: {e}", dir.display())))?;
        }
        private_file(path)?;
        let at = Where::File(path.to_path_buf());
        let conn =
            rusqlite::Connection::open(path).map_err(|e| Error::Journal(format!("{at}: {e}")))?;
        let j = Journal::with_conn(Conn::Sqlite(conn), at);
        j.init_sqlite()?;
        // SQLite makes its WAL and shared-memory files with the database's mode; make sure of it
        // for files an older capstan created.
        for suffix in ["-wal", "-shm"] {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            let p = PathBuf::from(p);
            if p.exists() {
                private_file(&p)?;
            }
        }
        Ok(j)
    }

    /// Connects to a journal on a MySQL-protocol server, creating its tables if needed.
    pub fn connect(spec: &ServerSpec) -> Result<Journal> {
        let at = Where::Server(spec.clone());
        let conn =
            Server::connect(spec.opts()?).map_err(|e| Error::Journal(format!("{at}: {}", e.0)))?;
        let j = Journal::with_conn(Conn::Server(conn), at);
        j.init_server()?;
        Ok(j)
    }

    /// A journal that lives as long as the process: simulations, and embedders that keep none.
    pub fn in_memory() -> Journal {
        let conn = rusqlite::Connection::open_in_memory()
            .expect("SQLite can always open a memory database");
        let mut j = Journal::with_conn(Conn::Sqlite(conn), Where::Memory);
        j.init_sqlite()
            .expect("a new memory database takes the schema");
        j.kept = Some(Mutex::default());
        j
    }

    /// Whether the journal keeps its actions as records in memory (`in_memory`) rather than
    /// writing them to its table.
    pub fn keeps_records(&self) -> bool {
        self.kept.is_some()
    }

    fn with_conn(conn: Conn, at: Where) -> Journal {
        if let Conn::Sqlite(c) = &conn {
            // The journal has about 70 statements; rusqlite keeps 16 by default, so the ones a
            // step runs in turn evicted each other and were parsed again every time.
            c.set_prepared_statement_cache_capacity(128);
        }
        Journal {
            conn: Mutex::new(Db { conn, flushed: 0 }),
            queue: Mutex::new(Queue::default()),
            at,
            kept: None,
        }
    }

    /// The actions of run `id` an in-memory journal keeps as records, in order; `None` for a
    /// journal that writes them to its table.
    fn kept_actions(&self, id: &str) -> Option<Arc<Vec<ActionRecord>>> {
        let mut kept = crate::lock(self.kept.as_ref()?);
        let Some(run) = kept.get_mut(id) else {
            return Some(Arc::default());
        };
        if !run.new.is_empty() {
            let mut all = std::mem::take(&mut run.new);
            if !run.reported.is_empty() {
                // Recorded after an earlier report (a resume, a rollback): merged, the newer
                // record of an action last.
                all.splice(0..0, run.reported.iter().cloned());
            }
            let key = |a: &ActionRecord| (a.attempt, a.seq);
            if !all.is_sorted_by_key(key) {
                all.sort_by_key(key); // stable: an action written twice keeps its order
            }
            // The last record of each action wins: keep the last of equal neighbours.
            all.reverse();
            all.dedup_by_key(|a| key(a));
            all.reverse();
            run.reported = Arc::new(all);
        }
        Some(run.reported.clone())
    }

    /// Writes the kept actions of run `id` to the table (before the run is copied elsewhere).
    fn write_kept_actions(&self, id: &str) -> Result<()> {
        let Some(kept) = self.kept_actions(id) else {
            return Ok(());
        };
        let rows: Vec<Pending> = kept
            .iter()
            .map(|a| Pending::Action(id.to_string(), a.attempt, a.clone()))
            .collect();
        let mut db = crate::lock(&self.conn);
        flush(&mut db.conn, &rows).map_err(|e| self.err(e))
    }

    /// The journal's file, if it is one.
    pub fn path(&self) -> Option<&Path> {
        match &self.at {
            Where::File(p) => Some(p),
            _ => None,
        }
    }

    /// Where the journal is, as messages name it (a path, or `journal server mysql://..`).
    pub fn location(&self) -> String {
        self.at.to_string()
    }

    /// Whether the journal is on a server (shared by control machines).
    pub fn on_server(&self) -> bool {
        matches!(self.at, Where::Server(_))
    }

    fn err(&self, e: StoreErr) -> Error {
        Error::Journal(format!("{}: {}", self.at, e.0))
    }

    /// Runs `f` on the connection after writing the rows that wait (see `Db::flushed`).
    fn with<T>(&self, f: impl FnOnce(&mut Conn) -> SResult<T>) -> Result<T> {
        let mut db = crate::lock(&self.conn);
        self.write_queue(&mut db)?;
        f(&mut db.conn).map_err(|e| self.err(e))
    }

    /// Writes every queued row in one transaction. Rows that failed to go out stay queued, in
    /// order, for the next try: a server that was down for a moment loses nothing.
    fn write_queue(&self, db: &mut Db) -> Result<()> {
        let (rows, upto) = {
            let mut q = crate::lock(&self.queue);
            (std::mem::take(&mut q.rows), q.queued)
        };
        if let Err(e) = flush(&mut db.conn, &rows) {
            let mut q = crate::lock(&self.queue);
            let newer = std::mem::replace(&mut q.rows, rows);
            q.rows.extend(newer);
            return Err(self.err(e));
        }
        db.flushed = upto;
        Ok(())
    }

    /// Queues a row; returns its ticket and whether the batch is full.
    fn enqueue(&self, row: Pending) -> (u64, bool) {
        let mut q = crate::lock(&self.queue);
        q.rows.push(row);
        q.queued += 1;
        (q.queued, q.rows.len() >= BATCH)
    }

    fn queue(&self, row: Pending) -> Result<()> {
        if let (_, true) = self.enqueue(row) {
            let mut db = crate::lock(&self.conn);
            self.write_queue(&mut db)?;
        }
        Ok(())
    }

    /// Queues a row and returns once it is durable, with whatever else was queued by then.
    fn durable(&self, row: Pending) -> Result<()> {
        let (ticket, _) = self.enqueue(row);
        let mut db = crate::lock(&self.conn);
        if db.flushed >= ticket {
            return Ok(());
        }
        self.write_queue(&mut db)
    }
}

/// Writes waiting rows in one transaction.
fn flush(c: &mut Conn, pending: &[Pending]) -> SResult<()> {
    if pending.is_empty() {
        return Ok(());
    }
    c.tx(true, |c| {
        for p in pending.iter() {
            match p {
                Pending::Action(run, attempt, a) => c.exec(
                    "INSERT OR REPLACE INTO actions (run_id, attempt, seq, step, host, op,
                        read_only, description, disposition, at_ms, duration_ms, ok, result, argv)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    vals![
                        run,
                        *attempt,
                        a.seq,
                        a.step.clone(),
                        &a.host,
                        &a.op,
                        a.read_only,
                        &a.description,
                        status_str(&a.disposition),
                        a.at_ms,
                        a.duration_ms,
                        a.ok,
                        &a.result,
                        a.argv.as_ref().and_then(|v| serde_json::to_string(v).ok()),
                    ],
                )?,
                Pending::Log(run, attempt, l) => c.exec(
                    "INSERT INTO logs (run_id, attempt, at_ms, level, step, message)
                     VALUES (?, ?, ?, ?, ?, ?)",
                    vals![run, *attempt, l.at_ms, &l.level, l.step.clone(), &l.message],
                )?,
                Pending::Replay(run, r) => c.exec(
                    "INSERT OR REPLACE INTO replay (run_id, attempt, step, host, pos, seq,
                        fingerprint, description, state, outcome)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    vals![
                        run,
                        r.attempt,
                        &r.step,
                        &r.host,
                        r.pos,
                        r.seq,
                        &r.fingerprint,
                        &r.description,
                        status_str(&r.state),
                        r.outcome.clone(),
                    ],
                )?,
                Pending::ReplayEnd {
                    run,
                    attempt,
                    step,
                    host,
                    pos,
                    state,
                    outcome,
                } => c.exec(
                    "UPDATE replay SET state = ?, outcome = ?
                     WHERE run_id = ? AND attempt = ? AND step = ? AND host = ? AND pos = ?",
                    vals![
                        status_str(state),
                        outcome.clone(),
                        run,
                        *attempt,
                        step,
                        host,
                        *pos
                    ],
                )?,
            };
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_times_for_people_and_run_ids() {
        assert_eq!(format_unix_ms(0), "1970-01-01 00:00:00Z");
        assert_eq!(format_unix_ms(1_763_847_639_000), "2025-11-22 21:40:39Z");
        // The last second of a year, and a leap day.
        assert_eq!(format_unix_ms(1_798_761_599_999), "2026-12-31 23:59:59Z");
        assert_eq!(utc(1_709_164_800_000, "%Y%m%d-%H%M%S"), "20240229-000000");
        let id = new_run_id();
        assert_eq!(id.len(), "20261122-214039-3fa2".len(), "{id}");
        assert!(
            id.chars().all(|c| c.is_ascii_hexdigit() || c == '-'),
            "{id}"
        );
    }

    #[test]
    fn a_version_1_journal_is_migrated_forward_with_its_runs() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j.db");
        {
            let c = rusqlite::Connection::open(&p).unwrap();
            c.execute_batch(schema::SCHEMA_V1).unwrap();
            c.execute(
                "INSERT INTO logs (run_id, attempt, at_ms, level, message) VALUES ('r', 1, 0, 'info', 'kept')",
                [],
            )
            .unwrap();
            c.pragma_update(None, "user_version", 1).unwrap();
        }
        let j = Journal::open(&p).unwrap();
        let (v, logs, backups): (i64, i64, i64) = j
            .with(|c| {
                let mut n = |q: &str| c.one(q, &[]).map(|r| r.map_or(-1, |r| r.int(0)));
                Ok((
                    n("PRAGMA user_version")?,
                    n("SELECT COUNT(*) FROM logs")?,
                    n("SELECT COUNT(*) FROM backups")?,
                ))
            })
            .unwrap();
        assert_eq!((v, logs, backups), (SCHEMA_VERSION, 1, 0));
    }

    #[test]
    fn processes_opening_a_new_journal_at_once_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j.db");
        let opened: Vec<_> = (0..8)
            .map(|_| {
                let p = p.clone();
                std::thread::spawn(move || Journal::open(&p).map(|_| ()))
            })
            .collect();
        for t in opened {
            t.join().unwrap().unwrap();
        }
    }

    #[test]
    fn schema_is_created_once_and_version_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/j.db");
        drop(Journal::open(&p).unwrap());
        let j = Journal::open(&p).unwrap();
        let v: i64 = j
            .with(|c| {
                c.one("PRAGMA user_version", &[])
                    .map(|r| r.map_or(-1, |r| r.int(0)))
            })
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        j.with(|c| c.batch("PRAGMA user_version = 99")).unwrap();
        drop(j);
        let e = Journal::open(&p).unwrap_err().to_string();
        assert!(e.contains("schema version 99 is newer"), "{e}");
    }

    /// A run of playbook `p` on host `a`, begun in `j`.
    fn begin(j: &Journal, mode: Mode) -> String {
        j.begin_run(&RunStart {
            playbook: "p".into(),
            playbook_path: None,
            source: "x".into(),
            inventory_id: "i".into(),
            inventory_path: None,
            hosts: vec!["a".into()],
            params: serde_json::json!({}),
            mode,
        })
        .unwrap()
    }

    #[test]
    fn undos_come_back_in_order_with_their_specs() {
        let j = Journal::in_memory();
        let id = begin(&j, Mode::Run);
        let spec = UndoSpec::Actions {
            host: "a".into(),
            actions: vec![serde_json::json!({ "op": "remove", "path": "/x/y" })],
        };
        let u = NewUndo {
            step: Some("s"),
            host: Some("a"),
            description: "rm",
            spec: &spec,
            at_ms: 0,
        };
        assert_eq!(j.add_undo(&id, 1, &u).unwrap(), 1);
        assert_eq!(j.add_undo(&id, 1, &u).unwrap(), 2);
        j.undo_finished(&id, 2, UndoStatus::Done, None).unwrap();
        let u = j.undos(&id).unwrap();
        assert_eq!(u.len(), 2);
        assert_eq!(u[1].status, UndoStatus::Done);
        assert!(matches!(&u[0].spec, UndoSpec::Actions { actions, .. } if actions.len() == 1));
        assert_eq!(j.run(&id).unwrap().undos_pending, 1);
    }

    /// An in-memory journal keeps its actions as records (one per attempt and seq, the last
    /// written wins, as the table's upsert), reports them in order, and writes them out when
    /// the run is copied to a journal file.
    #[test]
    fn a_memory_journal_keeps_its_actions_and_copies_them_out() {
        let j = Journal::in_memory();
        let id = begin(&j, Mode::Simulate);
        let act = |attempt, seq, result: &str| ActionRecord {
            attempt,
            seq,
            host: "a".into(),
            step: Some("s".into()),
            op: "exec".into(),
            read_only: false,
            description: format!("run: x{seq}").into(),
            disposition: Disposition::Simulated,
            at_ms: seq,
            duration_ms: 1,
            ok: true,
            result: result.to_string().into(),
            argv: None,
        };
        for (attempt, seq, result) in [(2, 1, "b"), (1, 2, "a2"), (1, 1, "old"), (1, 1, "a1")] {
            j.record_action(&id, attempt, act(attempt, seq, result))
                .unwrap();
        }
        let outcome = Outcome::Succeeded;
        j.finish_run(
            &id,
            RunStatus::Succeeded,
            &outcome,
            5,
            &serde_json::Value::Null,
        )
        .unwrap();
        let order = |r: &RunReport| -> Vec<(u32, u64, String)> {
            r.actions
                .iter()
                .map(|a| (a.attempt, a.seq, a.result.to_string()))
                .collect()
        };
        let want = vec![
            (1, 1, "a1".to_string()),
            (1, 2, "a2".to_string()),
            (2, 1, "b".to_string()),
        ];
        let first = j.report(&id).unwrap();
        assert_eq!(order(&first), want);
        // A second report shares the list; an action recorded after it (a resume) joins it in
        // order, without changing the first report.
        assert!(Arc::ptr_eq(&first.actions, &j.report(&id).unwrap().actions));
        j.record_action(&id, 2, act(2, 2, "b2")).unwrap();
        let mut want = want;
        want.push((2, 2, "b2".to_string()));
        assert_eq!(order(&j.report(&id).unwrap()), want);
        assert_eq!(first.actions.len(), 3);
        let dir = tempfile::tempdir().unwrap();
        let file = Journal::open(dir.path().join("j.db")).unwrap();
        j.copy_runs(&file, std::slice::from_ref(&id)).unwrap();
        assert_eq!(order(&file.report(&id).unwrap()), want);
    }
}
