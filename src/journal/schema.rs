//! The journal's schema: its versions, the migrations of a file, the tables made on a server.

use super::*;

/// The schema this build writes. Older files are migrated forward on open; newer ones refused.
pub const SCHEMA_VERSION: i64 = 5;

pub(super) const SCHEMA_V1: &str = r#"
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
pub(super) const SCHEMA_V2: &str = r#"
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
pub(super) const SCHEMA_V3: &str = r#"
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
pub(super) const SCHEMA_V4: &str = r#"
ALTER TABLE actions ADD COLUMN argv TEXT;
"#;

/// Version 5: a list that closures capture (a `shared_list`, such as a cluster's machines), kept
/// once per run by the SHA-256 of its JSON; an undo or guard refers to it as `{"$list": hash}`
/// instead of holding a copy (2n undos each holding an n-machine list made the journal n²).
pub(super) const SCHEMA_V5: &str = r#"
CREATE TABLE captured (
    run_id TEXT NOT NULL,
    hash   TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (run_id, hash)
);
"#;

/// Migrations in order: entry `i` takes a journal from version `i` to `i + 1`.
pub(super) const MIGRATIONS: &[&str] = &[SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4, SCHEMA_V5];

impl Journal {
    pub(super) fn init_sqlite(&self) -> Result<()> {
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
    pub(super) fn init_server(&self) -> Result<()> {
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

    pub(super) fn version_known(&self, version: i64) -> Result<()> {
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
}
