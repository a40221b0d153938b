//! `backup::dir`, `backup::mysqldump`, `backup::verify`, `backup::restore`, `backup::undo_restore`: backups that prove themselves.

use rhai::{Dynamic, Engine, EvalAltResult, Map, Module, NativeCallContext};

use super::opts::Opts;
use super::sql::SqlConn;
use super::{at, def_in, HostHandle, RunCtx};
use crate::action::{Action, Outcome};
use crate::backup::{manifest_path, BackupInfo};
use crate::error::FaultKind;
use crate::report::BackupRecord;
use crate::sql::Password;

type R<T> = Result<T, Box<EvalAltResult>>;

fn info_map(b: &BackupInfo, skipped: bool) -> Dynamic {
    let mut m = Map::new();
    m.insert("kind".into(), b.kind.clone().into());
    m.insert("host".into(), b.host.clone().into());
    m.insert("source".into(), b.source.clone().into());
    m.insert("path".into(), b.path.clone().into());
    m.insert("manifest".into(), manifest_path(&b.path).into());
    m.insert("files".into(), Dynamic::from_int(b.files as i64));
    m.insert("bytes".into(), Dynamic::from_int(b.bytes as i64));
    m.insert("sha256".into(), b.sha256.clone().into());
    m.insert("taken".into(), b.taken.into());
    m.insert("skipped".into(), skipped.into());
    m.into()
}

/// What `--check` (or a held rollback replay) returns instead of a backup.
fn skipped(h: &HostHandle, kind: &str, source: &str, path: &str) -> Dynamic {
    info_map(
        &BackupInfo {
            kind: kind.into(),
            host: h.name.to_string(),
            source: source.into(),
            path: path.into(),
            files: 0,
            bytes: 0,
            sha256: String::new(),
            taken: false,
        },
        true,
    )
}

fn record(run: &RunCtx, b: &BackupInfo) {
    if let Some(j) = run.exec.journal() {
        let rec = BackupRecord {
            step: crate::action::current_step(),
            at_ms: run.exec.now().as_millis() as u64,
            backup: b.clone(),
        };
        if let Err(e) = j.journal.record_backup(&j.run_id, j.attempt, &rec) {
            run.exec.journal_failed(&e);
        }
    }
}

fn abs(func: &str, path: &str) -> R<String> {
    if path.starts_with('/') && path.trim_end_matches('/').len() > 1 {
        Ok(path.trim_end_matches('/').to_string())
    } else {
        Err(super::bad_input(format!(
            "{func}: path `{path}` must be absolute (and not `/`)"
        )))
    }
}

/// An existing backup at `path` of `source` that verifies: the one a resumed run took already.
fn reusable(h: &HostHandle, path: &str, source: &str) -> R<Option<BackupInfo>> {
    let exists = h.perform(Action::Exists {
        path: manifest_path(path),
    })?;
    if !matches!(exists, Outcome::Bool(true)) {
        return Ok(None);
    }
    match h.perform(Action::VerifyBackup {
        path: path.to_string(),
    }) {
        Ok(Outcome::Backup(b)) if b.source == source => Ok(Some(b)),
        Ok(Outcome::Backup(b)) => {
            h.run.log(
                "warn",
                &format!(
                    "{}: {path} holds a backup of {}, not of {source}: taking a new one",
                    h.name, b.source
                ),
            );
            Ok(None)
        }
        Ok(_) => Ok(None),
        Err(f) => {
            h.run.log(
                "warn",
                &format!(
                    "{}: the backup at {path} does not verify ({f}): taking a new one",
                    h.name
                ),
            );
            Ok(None)
        }
    }
}

fn default_to(run: &RunCtx, path: &str) -> String {
    match run.exec.journal() {
        Some(j) => format!("{path}.capstan-backup-{}", j.run_id),
        None => format!("{path}.capstan-backup"),
    }
}

/// `undo: true` (the default) registers the restore with the snapshot; `false` never (the
/// playbook restores in an undo of its own); `"later"` leaves it to `backup::undo_restore`,
/// called where the directory is about to change: after the service's stop and its start undo,
/// so a rollback restores with the service stopped.
fn undo_now(o: &Opts) -> R<bool> {
    match o.raw("undo") {
        None => Ok(true),
        Some(v) if v.is_bool() => Ok(v.as_bool().unwrap_or(true)),
        Some(v) if v.clone().into_string().is_ok_and(|s| s == "later") => Ok(false),
        Some(v) => Err(super::bad_input(format!(
            "backup::dir: option `undo` must be true, false or \"later\", got {}",
            if v.is_string() {
                format!("\"{v}\"")
            } else {
                v.type_name().to_string()
            }
        ))),
    }
}

fn dir(h: &HostHandle, path: &str, opts: Map) -> R<Dynamic> {
    let o = Opts::new("backup::dir", opts, &["to", "undo"])?;
    let with_undo = undo_now(&o)?;
    let source = abs("backup::dir", path)?;
    let to = match o.string("to")? {
        Some(t) => abs("backup::dir", &t)?,
        None => default_to(&h.run, &source),
    };
    if to == source || to.starts_with(&format!("{source}/")) {
        return Err(super::bad_input(format!(
            "backup::dir: the snapshot {to} cannot be inside {source}"
        )));
    }
    if let Some(b) = reusable(h, &to, &source)? {
        h.run.log(
            "info",
            &format!("{}: reusing the verified snapshot {to} of {source}", h.name),
        );
        if with_undo {
            register_dir_undo(h, &to, &source);
        }
        record(&h.run, &b);
        return Ok(info_map(&b, false));
    }
    if h.run.exec.mode() == crate::Mode::Check {
        // The snapshot itself is a write; its space check is a read a check run can make now.
        precheck_space(h, &source, &to)?;
    }
    match h.perform(Action::Snapshot {
        source: source.clone(),
        to: to.clone(),
    })? {
        Outcome::Backup(b) => {
            if with_undo {
                register_dir_undo(h, &to, &source);
            }
            record(&h.run, &b);
            Ok(info_map(&b, false))
        }
        _ => Ok(skipped(h, "dir", &source, &to)),
    }
}

fn parent(p: &str) -> String {
    match p.rfind('/') {
        Some(0) | None => "/".into(),
        Some(i) => p[..i].to_string(),
    }
}

fn precheck_space(h: &HostHandle, source: &str, to: &str) -> R<()> {
    let need = match h.perform(Action::DiskUsage {
        path: source.to_string(),
    })? {
        Outcome::Int(n) => n,
        _ => return Ok(()),
    };
    let free = match h.perform(Action::FreeSpace { path: parent(to) })? {
        Outcome::Int(n) => n,
        _ => return Ok(()),
    };
    if need >= free {
        return Err(crate::action::Fault::new(
            FaultKind::Action,
            Some(&h.name),
            format!(
                "{}: not enough free space for a snapshot of {source} at {to}: it needs {need} bytes and {} has {free} free",
                h.name,
                parent(to)
            ),
        )
        .with_reason("no_space")
        .into());
    }
    Ok(())
}

/// `backup::undo_restore(h, b)`: the restore undo of a `backup::dir(.., #{undo: "later"})`
/// snapshot, registered here.
fn undo_restore(h: &HostHandle, b: &Map) -> R<()> {
    let field = |k: &str| -> R<String> {
        b.get(k)
            .and_then(|v| v.clone().into_string().ok())
            .filter(|s| !s.is_empty() || h.run.exec.mode() == crate::Mode::Check)
            .ok_or_else(|| {
                super::bad_input(format!(
                    "backup::undo_restore: the snapshot map has no `{k}`: pass what backup::dir returned"
                ))
            })
    };
    if field("kind")? != "dir" {
        return Err(super::bad_input(format!(
            "backup::undo_restore: `{}` is not a directory snapshot (kind {}): a dump is restored with backup::restore in an undo",
            field("path")?,
            field("kind")?
        )));
    }
    if field("host")? != h.name.as_str() {
        return Err(super::bad_input(format!(
            "backup::undo_restore: the snapshot {} is on {}, not on {}",
            field("path")?,
            field("host")?,
            h.name
        )));
    }
    register_dir_undo(h, &field("path")?, &field("source")?);
    Ok(())
}

fn register_dir_undo(h: &HostHandle, to: &str, source: &str) {
    h.register_undo(
        format!("{}: restore {source} from snapshot {to}", h.name),
        vec![Action::RestoreSnapshot {
            snapshot: to.to_string(),
            target: source.to_string(),
        }],
    );
}

fn mysqldump(h: &HostHandle, conn: &SqlConn, db: &str, path: &str, opts: Map) -> R<Dynamic> {
    let o = Opts::new("backup::mysqldump", opts, &["flags", "tool", "undo"])?;
    let tool = o.string("tool")?;
    // `undo: false`: the playbook restores in an undo of its own (drop, recreate, load).
    let with_undo = o.bool("undo")?.unwrap_or(true);
    crate::sql::quote_ident(db)
        .map_err(|m| super::bad_input(format!("backup::mysqldump: database {m}")))?;
    let path = abs("backup::mysqldump", path)?;
    let flags = o.string_list("flags")?.unwrap_or_default();
    crate::backup::check_dump_flags(&flags).map_err(super::bad_input)?;
    let target = conn.target().clone();
    let source = format!("{db}@{}", target.server());
    if let Some(b) = reusable(h, &path, &source)? {
        h.run.log(
            "info",
            &format!("{}: reusing the verified dump {path} of {source}", h.name),
        );
        if with_undo {
            register_dump_undo(h, conn, db, &path);
        }
        record(&h.run, &b);
        return Ok(info_map(&b, false));
    }
    match h.perform(Action::MysqlDump {
        target,
        db: db.to_string(),
        path: path.clone(),
        flags,
        tool,
    })? {
        Outcome::Backup(b) => {
            if with_undo {
                register_dump_undo(h, conn, db, &path);
            }
            record(&h.run, &b);
            Ok(info_map(&b, false))
        }
        _ => Ok(skipped(h, "mysqldump", &source, &path)),
    }
}

fn register_dump_undo(h: &HostHandle, conn: &SqlConn, db: &str, path: &str) {
    if !h.run.registers_undos() {
        return;
    }
    if matches!(conn.target().password, Some(Password::Inline(_))) {
        h.run.log(
            "warn",
            &format!(
                "{}: the connection's password is not a secret of the inventory: a rollback in this process can restore {path}, `capstan rollback` in a later one cannot",
                h.name
            ),
        );
    }
    h.register_undo(
        format!("{}: load {path} into {db}", h.name),
        vec![Action::MysqlLoad {
            target: conn.target().clone(),
            db: db.to_string(),
            path: path.to_string(),
        }],
    );
}

pub(super) fn register(engine: &mut Engine) {
    let mut m = Module::new();
    let dir_doc = r#"
Snapshots a directory on its own host: a copy (`cp -a`) at `to` (default `PATH.capstan-backup-RUN`)
with a manifest `TO.manifest.json` listing every file's size and sha256. Refused before anything is
copied when the copy would not fit (also under `--check`, which measures and skips the copy). The
copy becomes the snapshot only once complete and equal, file by file, to the directory (one that
changed while it was copied, because something still writes to it, fails: reason
`changed_during_copy`). Registers an undo that puts the snapshot back at
`path`. Undos run newest first, so where it is registered decides what a rollback restores
under: take the snapshot after the service's stop (and its start undo), and a rollback stops the
service, restores, then starts it. Options: `to` (the snapshot's path); `undo`: `true` (the
default: registered now), `"later"` (registered where `backup::undo_restore(h, b)` is called: for
a snapshot taken while the service still runs, to keep the downtime short), or `false` (none: the
playbook restores with `backup::restore` in an undo of its own). A snapshot already at `to` of the same directory that verifies is reused (a resumed run
keeps the first one: the directory may have changed since). Returns `#{path, manifest, files,
bytes, sha256, taken, skipped}`.

```rhai
let h = cluster().host("web1");
let ctl = "/srv/app/bin/app-ctl";
step("upgrade web1", || {
    // The snapshot while the service runs; its restore registered after the stop's undo.
    let b = backup::dir(h, "/srv/app/data", #{ to: "/srv/app/data.before", undo: "later" });
    log(`snapshot of ${b.files} files at ${b.path}`);
    h.run([ctl, "stop"]);
    undo(`${h}: start the service`, || h.run([ctl, "start"]));
    backup::undo_restore(h, b); // a rollback: stop, restore, then start
});
```"#;
    def_in(
        &mut m,
        "dir",
        &["host: Host", "path: String", "Map"],
        dir_doc,
        |ctx: NativeCallContext, h: HostHandle, path: &str| -> R<Dynamic> {
            dir(&h, path, Map::new()).map_err(|e| at(e, ctx.call_position()))
        },
    );
    def_in(
        &mut m,
        "dir",
        &["host: Host", "path: String", "options: Map", "Map"],
        dir_doc,
        |ctx: NativeCallContext, h: HostHandle, path: &str, opts: Map| -> R<Dynamic> {
            dir(&h, path, opts).map_err(|e| at(e, ctx.call_position()))
        },
    );

    def_in(
        &mut m,
        "undo_restore",
        &["host: Host", "snapshot: Map", "()"],
        r#"
Registers, at this point, the undo that puts back a snapshot taken with `backup::dir(h, path,
#{undo: "later"})` (`snapshot` is the map it returned). Call it after the undo that starts the
service again (right after the stop), so a rollback runs it between the service's stop and its
start. Refuses a map that is not a directory snapshot of this host.

```rhai
let h = cluster().host("web1");
step("stop web1 and change its data", || {
    let b = backup::dir(h, "/srv/app/data", #{ undo: "later" });
    h.run(["/srv/app/bin/app-ctl", "stop"]);
    undo(`${h}: start the service`, || h.run(["/srv/app/bin/app-ctl", "start"]));
    backup::undo_restore(h, b);
    h.write_file("/srv/app/data/app.db", "migrated\n");
});
```"#,
        |ctx: NativeCallContext, h: HostHandle, b: Map| -> R<()> {
            undo_restore(&h, &b).map_err(|e| at(e, ctx.call_position()))
        },
    );

    let dump_doc = r#"
Dumps database `db` with `mysqldump` on host `h` (as the vendor procedures do) into `path`, with
the caller's `flags` (e.g. `["--triggers=false", "--single-transaction"]`). The server is the
connection's; its password reaches mysqldump through a 0600 option file removed afterwards, never
a command line. The dump must exit 0, be non-empty and end with mysqldump's completion line, or it
fails and nothing takes the name `path`; a manifest (size, sha256) is written beside it. Registers
an undo that loads the dump back with the `mysql` client on the same host (tables created after
the dump are left alone), unless `undo: false` (the playbook restores it itself, e.g. after
dropping and recreating the database). `tool` names the dump program when it is not
`mysqldump` on the host's PATH. A verified dump already at `path` of the same database is reused.

```rhai
let h = cluster().host("db1");
let db = sql::connect(#{ host: h, user: "root", password: secret("db_pw") });
backup::mysqldump(h, db, "oms_rm", "/home/admin/oms_rm.sql", #{ flags: ["--single-transaction"] });
```"#;
    def_in(
        &mut m,
        "mysqldump",
        &[
            "host: Host",
            "conn: SqlConn",
            "db: String",
            "path: String",
            "Map",
        ],
        dump_doc,
        |ctx: NativeCallContext, h: HostHandle, c: SqlConn, db: &str, path: &str| -> R<Dynamic> {
            mysqldump(&h, &c, db, path, Map::new()).map_err(|e| at(e, ctx.call_position()))
        },
    );
    def_in(
        &mut m,
        "mysqldump",
        &[
            "host: Host",
            "conn: SqlConn",
            "db: String",
            "path: String",
            "options: Map",
            "Map",
        ],
        dump_doc,
        |ctx: NativeCallContext,
         h: HostHandle,
         c: SqlConn,
         db: &str,
         path: &str,
         opts: Map|
         -> R<Dynamic> {
            mysqldump(&h, &c, db, path, opts).map_err(|e| at(e, ctx.call_position()))
        },
    );

    def_in(
        &mut m,
        "verify",
        &["host: Host", "path: String", "Map"],
        r#"
Proves the backup at `path` (a snapshot or a dump) complete against its manifest: every file there
with the same size and sha256 and no other file; a dump also ends with the completion line. Fails,
naming the differences, when it does not. Read-only: runs under `--check`.

```rhai
let h = cluster().host("web1");
let b = backup::dir(h, "/srv/app/bin");
backup::verify(h, b.path);
```"#,
        |ctx: NativeCallContext, h: HostHandle, path: &str| -> R<Dynamic> {
            let path = abs("backup::verify", path).map_err(|e| at(e, ctx.call_position()))?;
            match h
                .perform(Action::VerifyBackup { path })
                .map_err(|f| at(f.into(), ctx.call_position()))?
            {
                Outcome::Backup(b) => Ok(info_map(&b, false)),
                _ => Ok(Dynamic::UNIT),
            }
        },
    );

    def_in(
        &mut m,
        "restore",
        &["host: Host", "snapshot: String", "target: String", "Map"],
        r#"
Puts a directory snapshot back: verifies it, then a copy of it replaces `target` in one rename
(the snapshot stays, so a restore can be repeated). Mutating. This is what the undo of
`backup::dir` does; call it yourself to restore outside a rollback.

```rhai
let h = cluster().host("web1");
let b = backup::dir(h, "/srv/app/bin");
backup::restore(h, b.path, "/srv/app/bin");
```"#,
        |ctx: NativeCallContext, h: HostHandle, snapshot: &str, target: &str| -> R<Dynamic> {
            let (snapshot, target) = (
                abs("backup::restore", snapshot).map_err(|e| at(e, ctx.call_position()))?,
                abs("backup::restore", target).map_err(|e| at(e, ctx.call_position()))?,
            );
            match h
                .perform(Action::RestoreSnapshot {
                    snapshot: snapshot.clone(),
                    target,
                })
                .map_err(|f| at(f.into(), ctx.call_position()))?
            {
                Outcome::Backup(b) => Ok(info_map(&b, false)),
                _ => Ok(skipped(&h, "dir", "", &snapshot)),
            }
        },
    );
    def_in(
        &mut m,
        "restore",
        &[
            "host: Host",
            "conn: SqlConn",
            "db: String",
            "dump: String",
            "Map",
        ],
        r#"
Loads a dump back into database `db`: verifies it against its manifest, then runs the `mysql`
client on host `h` with the connection's server and credentials (option file, never the command
line). Mutating. This is what the undo of `backup::mysqldump` does.

```rhai
let h = cluster().host("db1");
let db = sql::connect(#{ host: h, user: "root", password: secret("db_pw") });
let dump = backup::mysqldump(h, db, "oms_rm", "/home/admin/oms_rm.sql");
backup::restore(h, db, "oms_rm", dump.path);
```"#,
        |ctx: NativeCallContext, h: HostHandle, c: SqlConn, db: &str, dump: &str| -> R<Dynamic> {
            crate::sql::quote_ident(db).map_err(|m| {
                at(
                    super::bad_input(format!("backup::restore: database {m}")),
                    ctx.call_position(),
                )
            })?;
            let path = abs("backup::restore", dump).map_err(|e| at(e, ctx.call_position()))?;
            match h
                .perform(Action::MysqlLoad {
                    target: c.target().clone(),
                    db: db.to_string(),
                    path: path.clone(),
                })
                .map_err(|f| at(f.into(), ctx.call_position()))?
            {
                Outcome::Backup(b) => Ok(info_map(&b, false)),
                _ => Ok(skipped(&h, "mysqldump", db, &path)),
            }
        },
    );
    engine.register_static_module("backup", m.into());
}
