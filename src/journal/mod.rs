//! The run journal: every run, step, action, undo, guard and log line, in a SQLite file or on a server.
//!
//! Writes are durable before the playbook moves on (a SQLite file in WAL with `synchronous =
//! FULL`, or a committed InnoDB transaction on a MySQL-protocol server), so a `kill -9` at any
//! point leaves a journal that says exactly where the run stood. Every text that reaches this
//! module is already redacted by its caller.

mod copy;
mod lock;
mod server;
mod store;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use copy::CopySummary;
pub use lock::{holder_alive, process_alive, process_start_time, HostLock, LockConflict};
pub use server::{JournalAt, ServerSpec};
use store::{vals, Conn, Row, SResult, Server, StoreErr, SERVER_SCHEMA};

use crate::action::Action;
use crate::error::{Error, Located, Result};
use crate::report::{
    ActionRecord, BackupRecord, Disposition, GuardRecord, LogLine, Outcome, RunReport, StepRecord,
    StepStatus, UndoRecord,
};
use crate::Mode;

/// The schema this build writes. Older files are migrated forward on open; newer ones refused.
pub const SCHEMA_VERSION: i64 = 5;

const SCHEMA_V1: &str = r#"
CREATE TABLE runs (
    id              TEXT PRIMARY KEY,
    playbook        TEXT NOT NULL,
    playbook_path   TEXT,
    playbook_hash   TEXT NOT NULL,
    playbook_source TEXT NOT NULL,
    inventory_id    TEXT NOT NULL,
    inventory_path  TEXT,
    hosts           TEXT NOT NULL,
    params          TEXT NOT NULL,
    mode            TEXT NOT NULL,
    operator        TEXT NOT NULL,
    controller      TEXT NOT NULL,
    pid             INTEGER NOT NULL,
    started_ms      INTEGER NOT NULL,
    ended_ms        INTEGER,
    duration_ms     INTEGER NOT NULL DEFAULT 0,
    status          TEXT NOT NULL,
    outcome         TEXT,
    attempts        INTEGER NOT NULL DEFAULT 1,
    result          TEXT
);
CREATE TABLE steps (
    run_id      TEXT NOT NULL,
    key         TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    status      TEXT NOT NULL,
    at_ms       INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL DEFAULT 0,
    hosts       TEXT NOT NULL DEFAULT '[]',
    actions     INTEGER NOT NULL DEFAULT 0,
    result      TEXT,
    error       TEXT,
    PRIMARY KEY (run_id, key)
);
CREATE TABLE actions (
    run_id      TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    step        TEXT,
    host        TEXT NOT NULL,
    op          TEXT NOT NULL,
    read_only   INTEGER NOT NULL,
    description TEXT NOT NULL,
    disposition TEXT NOT NULL,
    at_ms       INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    ok          INTEGER NOT NULL,
    result      TEXT NOT NULL,
    PRIMARY KEY (run_id, attempt, seq)
);
CREATE TABLE undos (
    run_id      TEXT NOT NULL,
    id          INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    step        TEXT,
    host        TEXT,
    description TEXT NOT NULL,
    spec        TEXT NOT NULL,
    status      TEXT NOT NULL,
    at_ms       INTEGER NOT NULL,
    error       TEXT,
    PRIMARY KEY (run_id, id)
);
CREATE TABLE guards (
    run_id      TEXT NOT NULL,
    name        TEXT NOT NULL,
    step        TEXT,
    set_fn      TEXT NOT NULL,
    restore_fn  TEXT NOT NULL,
    status      TEXT NOT NULL,
    rechecks    INTEGER NOT NULL DEFAULT 0,
    error       TEXT,
    PRIMARY KEY (run_id, name)
);
CREATE TABLE logs (
    run_id  TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    at_ms   INTEGER NOT NULL,
    level   TEXT NOT NULL,
    step    TEXT,
    message TEXT NOT NULL
);
CREATE TABLE locks (
    host       TEXT PRIMARY KEY,
    run_id     TEXT NOT NULL,
    operator   TEXT NOT NULL,
    controller TEXT NOT NULL,
    pid        INTEGER NOT NULL,
    started_ms INTEGER NOT NULL
);
CREATE INDEX actions_by_step ON actions (run_id, step);
CREATE INDEX steps_by_seq ON steps (run_id, seq);
CREATE INDEX logs_by_run ON logs (run_id);
"#;

/// Version 2: the backups a run took or reused (`capstan report` lists them).
const SCHEMA_V2: &str = r#"
CREATE TABLE backups (
    run_id  TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    step    TEXT,
    at_ms   INTEGER NOT NULL,
    host    TEXT NOT NULL,
    kind    TEXT NOT NULL,
    source  TEXT NOT NULL,
    path    TEXT NOT NULL,
    files   INTEGER NOT NULL,
    bytes   INTEGER NOT NULL,
    sha256  TEXT NOT NULL,
    taken   INTEGER NOT NULL,
    PRIMARY KEY (run_id, host, path)
);
"#;

/// Version 3: every mutating action of a step, journaled durably before it runs and after it
/// ended with its outcome, so a resumed step replays what its earlier attempt finished
/// (docs/recovery.md); and the process start time of a lock's holder and of a run's process (a
/// reused pid is no holder, and `capstan runs` tells a killed run from a live one).
const SCHEMA_V3: &str = r#"
CREATE TABLE replay (
    run_id      TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    step        TEXT NOT NULL,
    host        TEXT NOT NULL,
    pos         INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    description TEXT NOT NULL,
    state       TEXT NOT NULL,
    outcome     TEXT,
    PRIMARY KEY (run_id, attempt, step, host, pos)
);
ALTER TABLE locks ADD COLUMN pid_start INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN pid_start INTEGER NOT NULL DEFAULT 0;
"#;

/// Version 4: a command's argv beside its one-line description (the HTML report shows it as
/// argv; a JSON array, NULL for actions that are not commands).
const SCHEMA_V4: &str = r#"
ALTER TABLE actions ADD COLUMN argv TEXT;
"#;

/// Version 5: a list that closures capture (a `shared_list`, such as a cluster's machines), kept
/// once per run by the SHA-256 of its JSON; an undo or guard refers to it as `{"$list": hash}`
/// instead of holding a copy (2n undos each holding an n-machine list made the journal n²).
const SCHEMA_V5: &str = r#"
CREATE TABLE captured (
    run_id TEXT NOT NULL,
    hash   TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (run_id, hash)
);
"#;

/// Migrations in order: entry `i` takes a journal from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4, SCHEMA_V5];

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
    /// Actions on one host, performed in order (registered by mutating primitives).
    Actions { host: String, actions: Vec<Action> },
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
        let j = Journal::with_conn(Conn::Sqlite(conn), Where::Memory);
        j.init_sqlite()
            .expect("a new memory database takes the schema");
        j
    }

    fn with_conn(conn: Conn, at: Where) -> Journal {
        Journal {
            conn: Mutex::new(Db { conn, flushed: 0 }),
            queue: Mutex::new(Queue::default()),
            at,
        }
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
        let mut db = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        self.write_queue(&mut db)?;
        f(&mut db.conn).map_err(|e| self.err(e))
    }

    /// Writes every queued row in one transaction. Rows that failed to go out stay queued, in
    /// order, for the next try: a server that was down for a moment loses nothing.
    fn write_queue(&self, db: &mut Db) -> Result<()> {
        let (rows, upto) = {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            (std::mem::take(&mut q.rows), q.queued)
        };
        if let Err(e) = flush(&mut db.conn, &rows) {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            let newer = std::mem::replace(&mut q.rows, rows);
            q.rows.extend(newer);
            return Err(self.err(e));
        }
        db.flushed = upto;
        Ok(())
    }

    /// Queues a row; returns its ticket and whether the batch is full.
    fn enqueue(&self, row: Pending) -> (u64, bool) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.rows.push(row);
        q.queued += 1;
        (q.queued, q.rows.len() >= BATCH)
    }

    fn queue(&self, row: Pending) -> Result<()> {
        if let (_, true) = self.enqueue(row) {
            let mut db = self.conn.lock().unwrap_or_else(|e| e.into_inner());
            self.write_queue(&mut db)?;
        }
        Ok(())
    }

    /// Queues a row and returns once it is durable, with whatever else was queued by then.
    fn durable(&self, row: Pending) -> Result<()> {
        let (ticket, _) = self.enqueue(row);
        let mut db = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if db.flushed >= ticket {
            return Ok(());
        }
        self.write_queue(&mut db)
    }

    fn init_sqlite(&self) -> Result<()> {
        self.with(|c| {
            let Conn::Sqlite(c) = c else {
                unreachable!("init_sqlite is called on SQLite journals only")
            };
            // Another capstan may hold the write lock for a moment: wait rather than fail.
            c.busy_timeout(std::time::Duration::from_secs(10))?;
            c.pragma_update(None, "journal_mode", "WAL")?;
            c.pragma_update(None, "synchronous", "FULL")?;
            Ok(c.pragma_update(None, "foreign_keys", "ON")?)
        })?;
        // The version is read and the migrations run in one IMMEDIATE transaction: two capstans
        // opening a new journal at once would otherwise both see version 0, and the second
        // would fail creating tables the first had just made.
        let version = self.with(|c| {
            c.tx(true, |c| {
                let v = c.one("PRAGMA user_version", &[])?.map_or(0, |r| r.int(0));
                if (0..SCHEMA_VERSION).contains(&v) {
                    for m in &MIGRATIONS[v as usize..] {
                        c.batch(m)?;
                    }
                    c.batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))?;
                    return Ok(SCHEMA_VERSION);
                }
                Ok(v)
            })
        })?;
        self.version_known(version)
    }

    /// Creates the tables on a server (once: `CREATE TABLE IF NOT EXISTS`, under a session lock
    /// so two machines starting at once do not race) and checks the schema version.
    fn init_server(&self) -> Result<()> {
        let version = self.with(|c| {
            c.one("SELECT GET_LOCK('capstan-schema', 30)", &[])?;
            let r = (|| {
                for t in SERVER_SCHEMA {
                    c.batch(t)?;
                }
                c.exec(
                    "INSERT OR IGNORE INTO capstan_schema (id, version) VALUES (1, ?)",
                    vals![SCHEMA_VERSION],
                )?;
                let v = c
                    .one("SELECT version FROM capstan_schema WHERE id = 1", &[])?
                    .map_or(0, |r| r.int(0));
                // From version 4 (the first on a server) on, a new version only adds tables,
                // which the loop above has just created: moving forward is a version bump.
                if (4..SCHEMA_VERSION).contains(&v) {
                    c.exec(
                        "UPDATE capstan_schema SET version = ? WHERE id = 1",
                        vals![SCHEMA_VERSION],
                    )?;
                    return Ok(SCHEMA_VERSION);
                }
                Ok(v)
            })();
            let _ = c.one("SELECT RELEASE_LOCK('capstan-schema')", &[]);
            r
        })?;
        self.version_known(version)
    }

    fn version_known(&self, version: i64) -> Result<()> {
        if version == SCHEMA_VERSION {
            Ok(())
        } else if version < SCHEMA_VERSION {
            // Only a server journal can get here, and only below version 4, which no capstan
            // wrote on a server: a file, and a server from version 4 on, move forward above.
            Err(Error::Journal(format!(
                "{}: journal schema version {version} is older than any capstan wrote on a server ({SCHEMA_VERSION} here): use another database",
                self.at
            )))
        } else {
            Err(Error::Journal(format!(
                "{}: journal schema version {version} is newer than this capstan understands ({SCHEMA_VERSION}); use a newer capstan or another --journal",
                self.at
            )))
        }
    }

    /// Marks this process as the one working on `run` (a server session lock; nothing on a
    /// file, where the pid and the machine tell). Called when a run begins or is reopened.
    pub fn hold_run(&self, run: &str) -> Result<()> {
        self.with(|c| c.session_lock(&run_lock_name(run)).map(|_| ()))
    }

    /// Whether the process that works on `run` lives: on a server, whether some session holds
    /// the run's lock (`None` when the server cannot tell); on a file, whether `pid` lives on
    /// this machine (`None` for another machine's run).
    pub fn run_process_alive(&self, row: &RunRow) -> Result<Option<bool>> {
        if self.on_server() {
            return self.with(|c| c.session_lock_used(&run_lock_name(&row.id)));
        }
        Ok((row.controller == controller()).then(|| lock::holder_alive(row.pid, row.pid_start)))
    }

    /// Records a new run and returns its id.
    pub fn begin_run(&self, s: &RunStart) -> Result<String> {
        let id = new_run_id();
        let hosts = serde_json::to_string(&s.hosts).unwrap_or_default();
        let mode = status_str(&s.mode);
        self.with(|c| {
            c.exec(
                "INSERT INTO runs (id, playbook, playbook_path, playbook_hash, playbook_source,
                    inventory_id, inventory_path, hosts, params, mode, operator, controller, pid,
                    started_ms, status, pid_start)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'running', ?)",
                vals![
                    &id,
                    &s.playbook,
                    s.playbook_path.clone(),
                    source_hash(&s.source),
                    &s.source,
                    &s.inventory_id,
                    s.inventory_path.clone(),
                    hosts,
                    s.params.to_string(),
                    mode,
                    operator(),
                    controller(),
                    std::process::id(),
                    unix_ms(),
                    my_start_time(),
                ],
            )
        })?;
        self.hold_run(&id)?;
        Ok(id)
    }

    /// Marks a stopped run as running again (resume or rollback) and returns the new attempt number.
    pub fn reopen_run(&self, id: &str, source: Option<&str>) -> Result<u32> {
        self.hold_run(id)?;
        self.with(|c| {
            c.tx(true, |c| {
                c.exec(
                    "UPDATE runs SET status = 'running', attempts = attempts + 1, pid = ?,
                        operator = ?, controller = ?, ended_ms = NULL, pid_start = ? WHERE id = ?",
                    vals![
                        std::process::id(),
                        operator(),
                        controller(),
                        my_start_time(),
                        id
                    ],
                )?;
                if let Some(src) = source {
                    c.exec(
                        "UPDATE runs SET playbook_source = ?, playbook_hash = ? WHERE id = ?",
                        vals![src, source_hash(src), id],
                    )?;
                }
                Ok(c.one("SELECT attempts FROM runs WHERE id = ?", vals![id])?
                    .map_or(1, |r| r.u32(0)))
            })
        })
    }

    /// Records how the run (this attempt) ended.
    pub fn finish_run(
        &self,
        id: &str,
        status: RunStatus,
        outcome: &Outcome,
        duration_ms: u64,
        result: &serde_json::Value,
    ) -> Result<()> {
        let outcome = serde_json::to_string(outcome).unwrap_or_default();
        self.with(|c| {
            c.exec(
                "UPDATE runs SET status = ?, outcome = ?, ended_ms = ?,
                    duration_ms = duration_ms + ?, result = ? WHERE id = ?",
                vals![
                    status.as_str(),
                    outcome,
                    unix_ms(),
                    duration_ms,
                    result.to_string(),
                    id
                ],
            )?;
            c.session_unlock(&run_lock_name(id))
        })?;
        Ok(())
    }

    /// Replaces the recorded params (once `params()` has applied defaults; already redacted).
    pub fn set_params(&self, id: &str, params: &serde_json::Value) -> Result<()> {
        self.with(|c| {
            c.exec(
                "UPDATE runs SET params = ? WHERE id = ?",
                vals![params.to_string(), id],
            )
        })?;
        Ok(())
    }

    /// Deletes a run that never started (its hosts were locked by another run).
    pub fn forget_run(&self, id: &str) -> Result<()> {
        self.with(|c| {
            c.exec("DELETE FROM runs WHERE id = ?", vals![id])?;
            c.session_unlock(&run_lock_name(id))
        })?;
        Ok(())
    }

    /// Sets only the status (after a rollback of a finished run).
    pub fn set_status(&self, id: &str, status: RunStatus) -> Result<()> {
        self.with(|c| {
            c.exec(
                "UPDATE runs SET status = ?, ended_ms = ? WHERE id = ?",
                vals![status.as_str(), unix_ms(), id],
            )
        })?;
        Ok(())
    }

    fn run_row(r: &Row) -> RunRow {
        RunRow {
            id: r.text(0),
            playbook: r.text(1),
            playbook_path: r.opt_text(2),
            playbook_hash: r.text(3),
            playbook_source: r.text(4),
            inventory_id: r.text(5),
            inventory_path: r.opt_text(6),
            hosts: serde_json::from_str(&r.text(7)).unwrap_or_default(),
            params: serde_json::from_str(&r.text(8)).unwrap_or_default(),
            mode: parse_status(&r.text(9), Mode::Run),
            operator: r.text(10),
            controller: r.text(11),
            pid: r.u32(12),
            pid_start: r.u64(13),
            process_gone: false,
            started_unix_ms: r.u64(14),
            ended_unix_ms: r.opt_int(15).map(|v| v as u64),
            status: RunStatus::parse(&r.text(16)),
            attempts: r.u32(17),
            guards_set: Vec::new(),
            undos_pending: 0,
        }
    }

    fn decorate(&self, c: &mut Conn, row: &mut RunRow) -> SResult<()> {
        row.process_gone = row.status == RunStatus::Running
            && match c.session_lock_used(&run_lock_name(&row.id))? {
                Some(used) => !used,
                None => {
                    row.controller == controller() && !lock::holder_alive(row.pid, row.pid_start)
                }
            };
        row.guards_set = c
            .query(
                "SELECT name FROM guards WHERE run_id = ? AND status IN ('set', 'restore_failed') ORDER BY rowid",
                vals![&row.id],
            )?
            .iter()
            .map(|r| r.text(0))
            .collect();
        row.undos_pending = c
            .one(
                "SELECT count(*) FROM undos WHERE run_id = ? AND status = 'pending'",
                vals![&row.id],
            )?
            .map_or(0, |r| r.int(0)) as usize;
        Ok(())
    }

    /// One run, or an error that says the id is unknown.
    pub fn run(&self, id: &str) -> Result<RunRow> {
        let row = self.with(|c| {
            let mut row = c
                .one(&format!("{RUN_COLUMNS} WHERE id = ?"), vals![id])?
                .map(|r| Self::run_row(&r));
            if let Some(r) = row.as_mut() {
                self.decorate(c, r)?;
            }
            Ok(row)
        })?;
        row.ok_or_else(|| {
            Error::Usage(format!(
                "no run `{id}` in the journal{} (see `capstan runs`)",
                match &self.at {
                    Where::Memory => String::new(),
                    other => format!(" {other}"),
                }
            ))
        })
    }

    /// The newest runs first.
    pub fn runs(&self, limit: usize) -> Result<Vec<RunRow>> {
        self.with(|c| {
            let mut rows: Vec<RunRow> = c
                .query(
                    &format!("{RUN_COLUMNS} ORDER BY started_ms DESC, rowid DESC LIMIT ?"),
                    vals![limit],
                )?
                .iter()
                .map(Self::run_row)
                .collect();
            for r in rows.iter_mut() {
                self.decorate(c, r)?;
            }
            Ok(rows)
        })
    }

    /// Records that a step started (or started again, on resume).
    pub fn step_started(&self, run: &str, key: &str, attempt: u32, at_ms: u64) -> Result<()> {
        self.with(|c| {
            let seq = c
                .one(
                    "SELECT coalesce((SELECT seq FROM steps WHERE run_id = ? AND `key` = ?),
                                 (SELECT max(seq) + 1 FROM steps WHERE run_id = ?), 0)",
                    vals![run, key, run],
                )?
                .map_or(0, |r| r.int(0));
            c.exec(
                "INSERT INTO steps (run_id, `key`, seq, attempt, status, at_ms, hosts)
                 VALUES (?, ?, ?, ?, 'running', ?, '[]')
                 ON CONFLICT (run_id, `key`) DO UPDATE SET attempt = excluded.attempt,
                    status = 'running', at_ms = excluded.at_ms, error = NULL, result = NULL",
                vals![run, key, seq, attempt, at_ms],
            )
        })?;
        Ok(())
    }

    /// Records how a step ended; its result is kept for resume.
    pub fn step_finished(
        &self,
        run: &str,
        rec: &StepRecord,
        result: Option<&serde_json::Value>,
    ) -> Result<()> {
        let hosts = serde_json::to_string(&rec.hosts).unwrap_or_default();
        self.with(|c| {
            c.exec(
                "UPDATE steps SET status = ?, duration_ms = ?, hosts = ?, actions = ?,
                    result = ?, error = ? WHERE run_id = ? AND `key` = ?",
                vals![
                    status_str(&rec.status),
                    rec.duration_ms,
                    hosts,
                    rec.actions,
                    result.map(|v| v.to_string()),
                    rec.error.clone(),
                    run,
                    &rec.name,
                ],
            )
        })?;
        Ok(())
    }

    /// A step of the run, if it was started.
    pub fn step(&self, run: &str, key: &str) -> Result<Option<StepRow>> {
        self.with(|c| {
            Ok(c.one(
                "SELECT `key`, status, attempt, result FROM steps WHERE run_id = ? AND `key` = ?",
                vals![run, key],
            )?
            .map(|r| StepRow {
                key: r.text(0),
                status: parse_status(&r.text(1), StepStatus::Running),
                attempt: r.u32(2),
                result: r.opt_text(3).and_then(|t| serde_json::from_str(&t).ok()),
            }))
        })
    }

    /// Records an action (batched: see `Db::pending`).
    pub fn record_action(&self, run: &str, attempt: u32, a: &ActionRecord) -> Result<()> {
        self.queue(Pending::Action(run.to_string(), attempt, a.clone()))
    }

    /// Journals, durably, that a mutating action is about to run (see `ReplayRow`).
    pub fn replay_started(&self, run: &str, row: &ReplayRow) -> Result<()> {
        self.durable(Pending::Replay(run.to_string(), row.clone()))
    }

    /// Journals a read a step made and what it returned (batched: a read is safe to repeat, and
    /// the next durable write, which any later change makes first, writes it out before it).
    pub fn replay_read(&self, run: &str, row: &ReplayRow) -> Result<()> {
        self.queue(Pending::Replay(run.to_string(), row.clone()))
    }

    /// Journals, durably, how a mutating action ended (and what it returned), before anything
    /// else sees it ended: a crash after a change finished must not leave it looking unfinished,
    /// or a resume would run it again.
    #[allow(clippy::too_many_arguments)]
    pub fn replay_ended(
        &self,
        run: &str,
        attempt: u32,
        step: &str,
        host: &str,
        pos: u32,
        state: ReplayState,
        outcome: Option<&str>,
    ) -> Result<()> {
        self.durable(Pending::ReplayEnd {
            run: run.to_string(),
            attempt,
            step: step.to_string(),
            host: host.to_string(),
            pos,
            state,
            outcome: outcome.map(str::to_string),
        })
    }

    /// The replay log of a run, by attempt, step, host and position.
    pub fn replay_log(&self, run: &str) -> Result<Vec<ReplayRow>> {
        self.with(|c| {
            Ok(c.query(
                "SELECT attempt, step, host, pos, seq, fingerprint, description, state, outcome
                 FROM replay WHERE run_id = ? ORDER BY attempt, step, host, pos",
                vals![run],
            )?
            .iter()
            .map(|r| ReplayRow {
                attempt: r.u32(0),
                step: r.text(1),
                host: r.text(2),
                pos: r.u32(3),
                seq: r.u64(4),
                fingerprint: r.text(5),
                description: r.text(6),
                state: parse_status(&r.text(7), ReplayState::Started),
                outcome: r.opt_text(8),
            })
            .collect())
        })
    }

    /// Records a log line (batched like actions).
    pub fn record_log(&self, run: &str, attempt: u32, l: &LogLine) -> Result<()> {
        self.queue(Pending::Log(run.to_string(), attempt, l.clone()))
    }

    /// Records a backup the run took or reused (one row per host and path). A reused backup
    /// keeps the row of the attempt that took it.
    pub fn record_backup(&self, run: &str, attempt: u32, b: &BackupRecord) -> Result<()> {
        let verb = if b.backup.taken {
            "INSERT OR REPLACE"
        } else {
            "INSERT OR IGNORE"
        };
        self.with(|c| {
            c.exec(
                &format!(
                    "{verb} INTO backups (run_id, attempt, step, at_ms, host, kind, source,
                        path, files, bytes, sha256, taken)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                ),
                vals![
                    run,
                    attempt,
                    b.step.clone(),
                    b.at_ms,
                    &b.backup.host,
                    &b.backup.kind,
                    &b.backup.source,
                    &b.backup.path,
                    b.backup.files,
                    b.backup.bytes,
                    &b.backup.sha256,
                    b.backup.taken,
                ],
            )
            .map(|_| ())
        })
    }

    /// Writes the rows that wait now (the end of a run does it too).
    pub fn flush(&self) -> Result<()> {
        self.with(|_| Ok(()))
    }

    /// Registers an undo and returns its id (ids grow: rollback runs them from the highest down).
    pub fn add_undo(&self, run: &str, attempt: u32, u: &NewUndo<'_>) -> Result<u64> {
        let NewUndo {
            step,
            host,
            description,
            spec,
            at_ms,
        } = *u;
        let lists = match spec {
            UndoSpec::Closure(c) | UndoSpec::Gate(c) => c.lists.as_slice(),
            _ => &[],
        };
        let spec = serde_json::to_string(spec).unwrap_or_default();
        self.with(|c| {
            c.tx(true, |c| {
                put_lists(c, run, lists)?;
                let id = c
                    .one(
                        "SELECT coalesce(max(id), 0) + 1 FROM undos WHERE run_id = ?",
                        vals![run],
                    )?
                    .map_or(1, |r| r.int(0));
                c.exec(
                    "INSERT INTO undos (run_id, id, attempt, step, host, description, spec, status, at_ms)
                     VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?)",
                    vals![run, id, attempt, step, host, description, spec, at_ms],
                )?;
                Ok(id as u64)
            })
        })
    }

    pub fn undo_finished(
        &self,
        run: &str,
        id: u64,
        status: UndoStatus,
        error: Option<&str>,
    ) -> Result<()> {
        self.with(|c| {
            c.exec(
                "UPDATE undos SET status = ?, error = ? WHERE run_id = ? AND id = ?",
                vals![status_str(&status), error, run, id],
            )
        })?;
        Ok(())
    }

    /// Every undo of the run, oldest first.
    pub fn undos(&self, run: &str) -> Result<Vec<UndoRow>> {
        self.with(|c| {
            Ok(c.query(
                "SELECT id, step, host, description, spec, status FROM undos
                 WHERE run_id = ? ORDER BY id",
                vals![run],
            )?
            .iter()
            .map(|r| UndoRow {
                id: r.u64(0),
                step: r.opt_text(1),
                host: r.opt_text(2),
                description: r.text(3),
                spec: serde_json::from_str(&r.text(4)).unwrap_or(UndoSpec::Closure(ClosureSpec {
                    function: String::new(),
                    captured: Vec::new(),
                    not_restorable: Some("the journal entry is unreadable".into()),
                    at: None,
                    lists: Vec::new(),
                })),
                status: parse_status(&r.text(5), UndoStatus::Pending),
            })
            .collect())
        })
    }

    /// Records a guard that was just set (or re-set on resume: the count of re-checks grows).
    pub fn guard_set(
        &self,
        run: &str,
        name: &str,
        step: Option<&str>,
        set_fn: &ClosureSpec,
        restore_fn: &ClosureSpec,
    ) -> Result<()> {
        let (s, r) = (
            serde_json::to_string(set_fn).unwrap_or_default(),
            serde_json::to_string(restore_fn).unwrap_or_default(),
        );
        self.with(|c| {
            c.tx(true, |c| {
                put_lists(c, run, &set_fn.lists)?;
                put_lists(c, run, &restore_fn.lists)?;
                c.exec(
                    "INSERT INTO guards (run_id, name, step, set_fn, restore_fn, status)
                 VALUES (?, ?, ?, ?, ?, 'set')
                 ON CONFLICT (run_id, name) DO UPDATE SET status = 'set', error = NULL,
                    set_fn = excluded.set_fn, restore_fn = excluded.restore_fn",
                    vals![run, name, step, s, r],
                )
            })
        })?;
        Ok(())
    }

    /// The JSON of a list that closures of `run` captured (see `SCHEMA_V5`).
    pub fn captured_list(&self, run: &str, hash: &str) -> Result<Option<String>> {
        self.with(|c| {
            Ok(c.one(
                "SELECT value FROM captured WHERE run_id = ? AND hash = ?",
                vals![run, hash],
            )?
            .map(|r| r.text(0)))
        })
    }

    pub fn guard_rechecked(&self, run: &str, name: &str) -> Result<()> {
        self.with(|c| {
            c.exec(
                "UPDATE guards SET rechecks = rechecks + 1 WHERE run_id = ? AND name = ?",
                vals![run, name],
            )
        })?;
        Ok(())
    }

    pub fn guard_finished(
        &self,
        run: &str,
        name: &str,
        status: GuardStatus,
        error: Option<&str>,
    ) -> Result<()> {
        self.with(|c| {
            c.exec(
                "UPDATE guards SET status = ?, error = ? WHERE run_id = ? AND name = ?",
                vals![status_str(&status), error, run, name],
            )
        })?;
        Ok(())
    }

    /// Every guard of the run, in the order they were first set.
    pub fn guards(&self, run: &str) -> Result<Vec<GuardRow>> {
        self.with(|c| {
            Ok(c.query(
                "SELECT name, step, set_fn, restore_fn, status FROM guards WHERE run_id = ? ORDER BY rowid",
                vals![run],
            )?
            .iter()
            .filter_map(|r| {
                Some(GuardRow {
                    name: r.text(0),
                    step: r.opt_text(1),
                    set_fn: serde_json::from_str(&r.text(2)).ok()?,
                    restore_fn: serde_json::from_str(&r.text(3)).ok()?,
                    status: parse_status(&r.text(4), GuardStatus::Set),
                })
            })
            .collect())
        })
    }

    /// The whole run as a report: every attempt's steps, actions and logs, undos and guards.
    pub fn report(&self, id: &str) -> Result<RunReport> {
        let run = self.run(id)?;
        self.with(|c| {
            let head = c
                .one("SELECT outcome, duration_ms, result FROM runs WHERE id = ?", vals![id])?
                .unwrap_or(Row(Vec::new()));
            let outcome = head
                .opt_text(0)
                .and_then(|o| serde_json::from_str::<Outcome>(&o).ok())
                .map(|o| with_source_line(o, &run))
                .unwrap_or_else(|| Outcome::Interrupted {
                    error: Located::new(
                        "the run did not finish: it was killed, or is still running",
                        None,
                    ),
                });
            let steps = c
                .query(
                    "SELECT `key`, status, at_ms, duration_ms, hosts, actions, error, attempt, result
                     FROM steps WHERE run_id = ? ORDER BY seq",
                    vals![id],
                )?
                .iter()
                .map(|r| {
                    let status = parse_status(&r.text(1), StepStatus::Running);
                    // A skipped step's result is its reason (see `skip_step`).
                    let reason = (status == StepStatus::Skipped)
                        .then(|| r.opt_text(8))
                        .flatten()
                        .and_then(|t| serde_json::from_str::<String>(&t).ok());
                    StepRecord {
                        name: r.text(0),
                        status,
                        at_ms: r.u64(2),
                        duration_ms: r.u64(3),
                        hosts: serde_json::from_str(&r.text(4)).unwrap_or_default(),
                        actions: r.int(5) as usize,
                        error: r.opt_text(6),
                        attempt: r.u32(7),
                        reason,
                    }
                })
                .collect();
            let actions = c
                .query(
                    "SELECT attempt, seq, step, host, op, read_only, description, disposition,
                        at_ms, duration_ms, ok, result, argv FROM actions WHERE run_id = ?
                     ORDER BY attempt, seq",
                    vals![id],
                )?
                .iter()
                .map(|r| ActionRecord {
                    attempt: r.u32(0),
                    seq: r.u64(1),
                    step: r.opt_text(2),
                    host: r.text(3),
                    op: r.text(4),
                    read_only: r.bool(5),
                    description: r.text(6),
                    disposition: parse_status(&r.text(7), Disposition::Performed),
                    at_ms: r.u64(8),
                    duration_ms: r.u64(9),
                    ok: r.bool(10),
                    result: r.text(11),
                    argv: r.opt_text(12).and_then(|t| serde_json::from_str(&t).ok()),
                })
                .collect();
            let logs = c
                .query(
                    "SELECT at_ms, level, step, message FROM logs WHERE run_id = ? ORDER BY rowid",
                    vals![id],
                )?
                .iter()
                .map(|r| LogLine {
                    at_ms: r.u64(0),
                    level: r.text(1),
                    step: r.opt_text(2),
                    message: r.text(3),
                })
                .collect();
            let undos = c
                .query(
                    "SELECT id, step, host, description, status, error, spec FROM undos
                     WHERE run_id = ? ORDER BY id",
                    vals![id],
                )?
                .iter()
                .map(|r| {
                    let saved = match serde_json::from_str::<UndoSpec>(&r.text(6)) {
                        Ok(UndoSpec::Actions { actions, .. }) => actions.iter().find_map(|a| match a {
                            Action::Restore { saved, .. } => Some(saved.clone()),
                            _ => None,
                        }),
                        _ => None,
                    };
                    UndoRecord {
                        id: r.u64(0),
                        step: r.opt_text(1),
                        host: r.opt_text(2),
                        description: r.text(3),
                        saved,
                        status: parse_status(&r.text(4), UndoStatus::Pending),
                        error: r.opt_text(5),
                    }
                })
                .collect();
            let guards = c
                .query(
                    "SELECT name, step, status, rechecks, error FROM guards WHERE run_id = ?
                     ORDER BY rowid",
                    vals![id],
                )?
                .iter()
                .map(|r| GuardRecord {
                    name: r.text(0),
                    step: r.opt_text(1),
                    status: parse_status(&r.text(2), GuardStatus::Set),
                    rechecks: r.u32(3),
                    error: r.opt_text(4),
                })
                .collect();
            let backups = c
                .query(
                    "SELECT step, at_ms, host, kind, source, path, files, bytes, sha256, taken
                     FROM backups WHERE run_id = ? ORDER BY at_ms, rowid",
                    vals![id],
                )?
                .iter()
                .map(|r| BackupRecord {
                    step: r.opt_text(0),
                    at_ms: r.u64(1),
                    backup: crate::report::BackupInfo {
                        host: r.text(2),
                        kind: r.text(3),
                        source: r.text(4),
                        path: r.text(5),
                        files: r.u64(6),
                        bytes: r.u64(7),
                        sha256: r.text(8),
                        taken: r.bool(9),
                    },
                })
                .collect();
            Ok(RunReport {
                run_id: run.id.clone(),
                playbook: run.playbook.clone(),
                mode: run.mode,
                status: run.status,
                outcome,
                started_unix_ms: run.started_unix_ms,
                duration_ms: head.u64(1),
                attempts: run.attempts,
                hosts: run.hosts.clone(),
                params: run.params.clone(),
                steps,
                actions,
                undos,
                guards,
                backups,
                simulation: None,
                host_groups: Vec::new(),
                logs,
                result: head
                    .opt_text(2)
                    .and_then(|r| serde_json::from_str(&r).ok())
                    .unwrap_or(serde_json::Value::Null),
            })
        })
    }
}

/// The columns of `runs` that `Journal::run_row` reads, in its order.
const RUN_COLUMNS: &str = "SELECT id, playbook, playbook_path, playbook_hash, playbook_source,
    inventory_id, inventory_path, hosts, params, mode, operator, controller, pid, pid_start,
    started_ms, ended_ms, status, attempts FROM runs";

/// Stores the lists a closure spec brings, once per run and content (inside the caller's
/// transaction).
fn put_lists(c: &mut Conn, run: &str, lists: &[(String, String)]) -> SResult<()> {
    for (hash, value) in lists {
        c.exec(
            "INSERT OR IGNORE INTO captured (run_id, hash, value) VALUES (?, ?, ?)",
            vals![run, hash, value],
        )?;
    }
    Ok(())
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

/// Puts the playbook's source line back on an error that points into it (the line is not stored).
fn with_source_line(o: Outcome, run: &RunRow) -> Outcome {
    let fix = |l: Located| match &l.pos {
        Some(p) if p.file == run.playbook => l.with_source_text(&run.playbook_source),
        _ => l,
    };
    match o {
        Outcome::Failed { kind, error } => Outcome::Failed {
            kind,
            error: fix(error),
        },
        Outcome::Interrupted { error } => Outcome::Interrupted { error: fix(error) },
        o => o,
    }
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
            c.execute_batch(SCHEMA_V1).unwrap();
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

    #[test]
    fn undos_come_back_in_order_with_their_specs() {
        let j = Journal::in_memory();
        let id = j
            .begin_run(&RunStart {
                playbook: "p".into(),
                playbook_path: None,
                source: "x".into(),
                inventory_id: "i".into(),
                inventory_path: None,
                hosts: vec!["a".into()],
                params: serde_json::json!({}),
                mode: Mode::Run,
            })
            .unwrap();
        let spec = UndoSpec::Actions {
            host: "a".into(),
            actions: vec![Action::Remove {
                path: "/x/y".into(),
            }],
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
}
