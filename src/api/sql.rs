//! `sql::connect` and the `SqlConn` object: bound statements through the executor, and `wait::sql`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rhai::{Array, Blob, Dynamic, Engine, EvalAltResult, FnPtr, Map, Module, NativeCallContext};

use super::opts::Opts;
use super::{at, bad_input, def, def_in, fault, HostHandle, RunCtx};
use crate::action::{Action, Outcome};
use crate::error::FaultKind;
use crate::secret::Secret;
use crate::sql::{Password, SqlKind, SqlParams, SqlResult, SqlTarget, SqlValue};

type R<T> = Result<T, Box<EvalAltResult>>;

/// Session ids, unique in the process: a connection rebuilt from the journal gets a new one.
static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

pub(crate) fn new_session_id() -> u64 {
    NEXT_SESSION.fetch_add(1, Ordering::SeqCst)
}

/// A connection to a SQL server as scripts see it (`sql::connect`). Cloning it shares the session.
#[derive(Clone)]
pub struct SqlConn {
    pub(crate) target: Arc<SqlTarget>,
    pub(crate) run: Arc<RunCtx>,
}

impl std::fmt::Debug for SqlConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SqlConn({})", self.target.server())
    }
}

impl SqlConn {
    /// The server this connection talks to.
    pub fn target(&self) -> &SqlTarget {
        &self.target
    }

    fn statement(&self, kind: SqlKind, sql: &str, params: SqlParams) -> R<SqlResult> {
        let action = Action::Sql {
            target: (*self.target).clone(),
            kind,
            statement: sql.to_string(),
            params,
        };
        match self.run.exec.perform(&self.target.label(), action)? {
            Outcome::Sql(r) => Ok(r),
            // `--check` skipped a change, or a rollback replay held it.
            _ => Ok(SqlResult::default()),
        }
    }

    fn query(&self, sql: &str, params: &Dynamic) -> R<Array> {
        let r = self.statement(SqlKind::Query, sql, to_params(params)?)?;
        Ok(rows(&r))
    }

    fn value(&self, sql: &str, params: &Dynamic) -> R<Dynamic> {
        let r = self.statement(SqlKind::Query, sql, to_params(params)?)?;
        Ok(r.rows
            .first()
            .and_then(|row| row.first())
            .map_or(Dynamic::UNIT, to_dynamic))
    }

    fn exec(&self, sql: &str, params: &Dynamic) -> R<i64> {
        let r = self.statement(SqlKind::Exec, sql, to_params(params)?)?;
        Ok(i64::try_from(r.affected).unwrap_or(i64::MAX))
    }
}

/// A result's rows as an array of maps, column name → value.
fn rows(r: &SqlResult) -> Array {
    r.rows
        .iter()
        .map(|row| {
            let mut m = Map::new();
            for (c, v) in r.columns.iter().zip(row) {
                m.insert(c.as_str().into(), to_dynamic(v));
            }
            Dynamic::from_map(m)
        })
        .collect()
}

/// Integers beyond i64 (BIGINT UNSIGNED) become strings: Rhai integers are i64.
fn to_dynamic(v: &SqlValue) -> Dynamic {
    match v {
        SqlValue::Null => Dynamic::UNIT,
        SqlValue::Int(i) => Dynamic::from_int(*i),
        SqlValue::UInt(u) => match i64::try_from(*u) {
            Ok(i) => Dynamic::from_int(i),
            Err(_) => Dynamic::from(u.to_string()),
        },
        SqlValue::Float(f) => Dynamic::from_float(*f),
        SqlValue::Text(t) => Dynamic::from(t.clone()),
        SqlValue::Bytes(b) => Dynamic::from_blob(b.clone()),
    }
}

fn to_value(v: &Dynamic) -> R<SqlValue> {
    let v = if v.is_shared() {
        v.flatten_clone()
    } else {
        v.clone()
    };
    if v.is_unit() {
        return Ok(SqlValue::Null);
    }
    if let Ok(b) = v.as_bool() {
        return Ok(SqlValue::Int(i64::from(b)));
    }
    if let Ok(i) = v.as_int() {
        return Ok(SqlValue::Int(i));
    }
    if let Ok(f) = v.as_float() {
        return Ok(SqlValue::Float(f));
    }
    if let Ok(c) = v.as_char() {
        return Ok(SqlValue::Text(c.to_string()));
    }
    if v.is_string() {
        return Ok(SqlValue::Text(v.to_string()));
    }
    if v.is_blob() {
        return Ok(SqlValue::Bytes(v.cast::<Blob>()));
    }
    Err(bad_input(format!(
        "a SQL parameter must be (), a bool, a number, a string or a blob, not {}",
        v.type_name()
    )))
}

/// `[a, b]` binds `?` placeholders in order; `#{name: v}` binds `:name` placeholders.
fn to_params(p: &Dynamic) -> R<SqlParams> {
    if p.is_unit() {
        return Ok(SqlParams::None);
    }
    if let Some(a) = p.read_lock::<Array>() {
        return Ok(SqlParams::Positional(
            a.iter().map(to_value).collect::<R<_>>()?,
        ));
    }
    if let Some(m) = p.read_lock::<Map>() {
        return Ok(SqlParams::Named(
            m.iter()
                .map(|(k, v)| Ok((k.to_string(), to_value(v)?)))
                .collect::<R<_>>()?,
        ));
    }
    Err(bad_input(format!(
        "SQL parameters must be an array (for `?`) or a map (for `:name`), not {}",
        p.type_name()
    )))
}

/// A server option `host`: an inventory host (a `Host`, or its name), or an address. Returns
/// the inventory host's name (actions are recorded under it) and the address to connect to.
pub(super) fn server_host(
    func: &str,
    o: &Opts,
    inv: &crate::inventory::Inventory,
) -> R<(Option<String>, String)> {
    match o.raw("host") {
        None => Err(bad_input(format!(
            "{func}: option `host` is required (an inventory host or an address)"
        ))),
        Some(v) => {
            if let Some(h) = v.read_lock::<HostHandle>() {
                Ok((Some(h.name.to_string()), h.entry().address.clone()))
            } else if v.is_string() {
                let s = v.to_string();
                Ok(match inv.host(&s) {
                    Some(e) => (Some(e.name.clone()), e.address.clone()),
                    None => (None, s),
                })
            } else {
                Err(bad_input(format!(
                    "{func}: option `host` must be a Host or a string, got {}",
                    v.type_name()
                )))
            }
        }
    }
}

/// A password option: by secret name when it is one of the inventory's `[secrets]` (a later
/// process can resolve it), inline otherwise (never printed, but only this process has it).
pub(super) fn password_of(p: String, inv: &crate::inventory::Inventory) -> Password {
    match inv.secret_name(&p) {
        Some(name) => Password::Secret(name.to_string()),
        None => {
            let s = Secret::new(p);
            inv.redactor.add(&s);
            Password::Inline(Some(s))
        }
    }
}

const CONNECT_OPTS: &[&str] = &[
    "host", "port", "user", "password", "db", "timeout", "tls", "tls_ca", "lazy",
];

fn connect(run: &Arc<RunCtx>, opts: Map) -> R<SqlConn> {
    let o = Opts::new("sql::connect", opts, CONNECT_OPTS)?;
    let inv = run.exec.inventory();
    let (host, address) = server_host("sql::connect", &o, inv)?;
    let port = match o.int("port")?.unwrap_or(3306) {
        p @ 1..=65535 => p as u16,
        p => return Err(bad_input(format!("sql::connect: port {p} is out of range"))),
    };
    let user = o
        .string("user")?
        .ok_or_else(|| bad_input("sql::connect: option `user` is required"))?;
    let password = o.string("password")?.map(|p| password_of(p, inv));
    let db = o.string("db")?;
    if let Some(d) = &db {
        crate::sql::quote_ident(d).map_err(|m| bad_input(format!("sql::connect: db {m}")))?;
    }
    let timeout = o.duration("timeout")?.unwrap_or(Duration::from_secs(30));
    let target = SqlTarget {
        id: new_session_id(),
        host,
        address,
        port,
        user,
        password,
        db,
        timeout_ms: timeout.as_millis().max(1) as u64,
        tls: o.bool("tls")?.unwrap_or(false) || o.string("tls_ca")?.is_some(),
        tls_ca: o.string("tls_ca")?,
    };
    let conn = SqlConn {
        target: Arc::new(target),
        run: run.clone(),
    };
    // A lazy session connects at its first statement: a playbook can hold sessions to servers
    // that are down now and use whichever answers later.
    if !o.bool("lazy")?.unwrap_or(false) {
        conn.statement(SqlKind::Connect, "", SqlParams::None)?;
    }
    Ok(conn)
}

pub(super) fn register(engine: &mut Engine, run: &Arc<RunCtx>) {
    engine.register_type_with_name::<SqlConn>("SqlConn");
    // Methods take the connection by value (a cheap clone sharing the session): closures that
    // capture `db` (transaction bodies, `parallel`) would otherwise find it locked by the call.
    engine.register_fn("to_string", |c: &mut SqlConn| c.target.server());
    engine.register_fn("to_debug", |c: &mut SqlConn| {
        format!("SqlConn({})", c.target.server())
    });

    let mut m = Module::new();
    let r = run.clone();
    def_in(
        &mut m,
        "connect",
        &["options: Map", "SqlConn"],
        r#"
Opens a session with a SQL server over the MySQL protocol (MySQL, MariaDB, OceanBase's MySQL
mode), from the machine capstan runs on, over TCP (never a local socket). Options: `host` (an
inventory host or an address, required), `port` (3306), `user` (required), `password` (give it as
`secret("name")`: it is never printed and the journal keeps only the name), `db`, `timeout`
(connect and per-statement, default 30 s), `tls` (false; the server's certificate is verified
against the system's roots), `tls_ca` (a CA certificate file to verify it against instead; implies
`tls`), `lazy` (false; true: connect at the first statement instead of now, so a session can be
held to a server that is down and tried later). Read-only: it runs under `--check`.
Errors say which of these happened (`e.reason`): `connect` (nothing answers), `auth` (access
denied), `timeout`, `lost` (connection dropped mid-statement), `server` (an SQL error; `e.code` is
the server's error number).

```rhai
let db = sql::connect(#{ host: "127.0.0.1", port: 3306, user: "root", db: "mysql" });
let version = db.value("SELECT VERSION()");
```"#,
        move |ctx: NativeCallContext, opts: Map| -> R<SqlConn> {
            connect(&r, opts).map_err(|e| at(e, ctx.call_position()))
        },
    );
    def_in(
        &mut m,
        "ident",
        &["name: String", "String"],
        r#"
A database, table or column name, validated (letters, digits, `_`, `$`) and backquoted, for the
places where SQL cannot take a bound value. Anything else is an error, never an injection.

```rhai
let t = sql::ident("heatbeat_sequence");   // "`heatbeat_sequence`"
```"#,
        |name: &str| -> R<String> { crate::sql::quote_ident(name).map_err(bad_input) },
    );
    def_in(
        &mut m,
        "transaction",
        &["conn: SqlConn", "body: FnPtr", "?"],
        r#"
Runs `body` inside a transaction on the connection's session: committed when it returns, rolled
back (and the error raised again) when it fails. Returns what `body` returned. Under `--check` the
changes inside are recorded, not sent. A function of the `sql` module rather than a method, so the
body can use the connection it captured.

```rhai
let db = sql::connect(#{ host: "127.0.0.1", user: "root" });
db.exec("CREATE DATABASE IF NOT EXISTS capstan_doc");
db.exec("CREATE TABLE IF NOT EXISTS capstan_doc.t (id INT PRIMARY KEY)");
sql::transaction(db, || {
    db.exec("INSERT INTO capstan_doc.t VALUES (?)", [1]);
    db.exec("DELETE FROM capstan_doc.t WHERE id = ?", [1]);
});
db.exec("DROP DATABASE capstan_doc");
```"#,
        |ctx: NativeCallContext, c: SqlConn, body: FnPtr| -> R<Dynamic> {
            c.statement(SqlKind::Begin, "", SqlParams::None)?;
            match body.call_within_context::<Dynamic>(&ctx, ()) {
                Ok(v) => {
                    c.statement(SqlKind::Commit, "", SqlParams::None)?;
                    Ok(v)
                }
                Err(e) => {
                    if let Err(re) = c.statement(SqlKind::Rollback, "", SqlParams::None) {
                        c.run.log(
                            "warn",
                            &format!(
                                "{}: ROLLBACK after a failure failed too: {re}",
                                c.target.server()
                            ),
                        );
                    }
                    Err(e)
                }
            }
        },
    );
    engine.register_static_module("sql", m.into());

    for (name, params_doc) in [("query", false), ("query", true)] {
        let p: &[&str] = if params_doc {
            &["conn: SqlConn", "sql: String", "params: ?", "Array"]
        } else {
            &["conn: SqlConn", "sql: String", "Array"]
        };
        let doc = r#"
Runs a read and returns its rows as an array of maps (column → value). Values are typed: integers,
floats, strings, `()` for NULL, dates and times as ISO text (`2026-11-22 03:04:05`), DECIMAL as
text (exact), BIGINT UNSIGNED beyond the integer range as text, binary columns as blobs. `params`
(an array for `?`, a map for `:name`) are bound by the server, never pasted into the text.
Read-only: runs under `--check`. Only the first result set is returned.

```rhai
let db = sql::connect(#{ host: "127.0.0.1", user: "root" });
for row in db.query("SELECT user, host FROM mysql.user WHERE user = ?", ["root"]) {
    print(`${row.user}@${row.host}`);
}
```"#;
        if params_doc {
            def(
                engine,
                name,
                p,
                doc,
                |c: SqlConn, sql: &str, params: Dynamic| c.query(sql, &params),
            );
        } else {
            def(engine, name, p, doc, |c: SqlConn, sql: &str| {
                c.query(sql, &Dynamic::UNIT)
            });
        }
    }

    let value_doc = r#"
Runs a read and returns the first column of the first row, or `()` when there is no row.
Read-only: runs under `--check`.

```rhai
let db = sql::connect(#{ host: "127.0.0.1", user: "root" });
let n = db.value("SELECT COUNT(*) FROM mysql.user WHERE user = ?", ["root"]);
```"#;
    def(
        engine,
        "value",
        &["conn: SqlConn", "sql: String", "?"],
        value_doc,
        |c: SqlConn, sql: &str| c.value(sql, &Dynamic::UNIT),
    );
    def(
        engine,
        "value",
        &["conn: SqlConn", "sql: String", "params: ?", "?"],
        value_doc,
        |c: SqlConn, sql: &str, params: Dynamic| c.value(sql, &params),
    );

    let exec_doc = r#"
Runs a change (INSERT, UPDATE, DELETE, DDL, SET GLOBAL) and returns the number of rows affected.
Mutating: under `--check` it is recorded in the plan, not sent, and returns 0. Values are bound.
Not undoable by itself: register an `undo` that reverses it, or take `backup::mysqldump` first.

```rhai
let db = sql::connect(#{ host: "127.0.0.1", user: "root" });
db.exec("CREATE DATABASE IF NOT EXISTS capstan_doc");
db.exec("DROP DATABASE capstan_doc");
```"#;
    def(
        engine,
        "exec",
        &["conn: SqlConn", "sql: String", "int"],
        exec_doc,
        |c: SqlConn, sql: &str| c.exec(sql, &Dynamic::UNIT),
    );
    def(
        engine,
        "exec",
        &["conn: SqlConn", "sql: String", "params: ?", "int"],
        exec_doc,
        |c: SqlConn, sql: &str, params: Dynamic| c.exec(sql, &params),
    );
}

/// `wait::sql`, registered into the `wait` module.
pub(super) fn register_wait(m: &mut Module, run: &Arc<RunCtx>) {
    let r = run.clone();
    def_in(
        m,
        "sql",
        &[
            "conn: SqlConn",
            "sql: String",
            "params: ?",
            "expect: ?",
            "options: Map",
            "Array",
        ],
        r#"
Runs a read until its result is what `expect` says, and returns the rows. `expect` is a value (the
first column of the first row must equal it, compared as text: `0` matches `"0"`), a map (there is
at least one row, and every row has these column values), or a function given the rows that
returns true. Bounded: `timeout` (default 300 s), `every` (default 2 s), `what` names the wait in
the timeout error, which shows the last result. A SQL error stops the wait unless
`ignore_errors: true`.

```rhai
let db = sql::connect(#{ host: "127.0.0.1", user: "root" });
wait::sql(db, "SELECT COUNT(*) FROM mysql.user WHERE user = ?", ["root"], 1, #{ timeout: 10, every: 1 });
```"#,
        move |ctx: NativeCallContext,
              conn: SqlConn,
              sql: &str,
              params: Dynamic,
              expect: Dynamic,
              opts: Map|
              -> R<Array> {
            wait_sql(&r, &ctx, &conn, sql, &params, &expect, opts)
                .map_err(|e| at(e, ctx.call_position()))
        },
    );
}

fn matches_expect(ctx: &NativeCallContext, rows: &Array, expect: &Dynamic) -> R<bool> {
    if let Some(f) = expect.read_lock::<FnPtr>() {
        let v = f.call_within_context::<Dynamic>(ctx, (rows.clone(),))?;
        return Ok(v.as_bool().unwrap_or(!v.is_unit()));
    }
    let text = |v: &Dynamic| {
        if v.is_unit() {
            "()".to_string()
        } else {
            v.to_string()
        }
    };
    if let Some(want) = expect.read_lock::<Map>() {
        return Ok(!rows.is_empty()
            && rows.iter().all(|row| {
                let row = row.read_lock::<Map>();
                want.iter().all(|(k, w)| {
                    row.as_ref()
                        .and_then(|r| r.get(k))
                        .is_some_and(|v| text(v) == text(w))
                })
            }));
    }
    let first = rows.first().and_then(|r| {
        r.read_lock::<Map>()
            .and_then(|m| m.values().next().cloned())
    });
    Ok(match first {
        Some(v) => text(&v) == text(expect),
        None => expect.is_unit(),
    })
}

fn wait_sql(
    r: &RunCtx,
    ctx: &NativeCallContext,
    conn: &SqlConn,
    sql: &str,
    params: &Dynamic,
    expect: &Dynamic,
    opts: Map,
) -> R<Array> {
    let o = Opts::new(
        "wait::sql",
        opts,
        &["timeout", "every", "what", "ignore_errors"],
    )?;
    let pace = super::wait::Pace::from_opts(&o, Duration::from_secs(300))?;
    let what = o
        .string("what")?
        .unwrap_or_else(|| format!("`{}`", crate::sql::first_line(sql)));
    let ignore_errors = o.bool("ignore_errors")?.unwrap_or(false);
    super::wait::until(
        r,
        &pace,
        &format!("{what} on {}", conn.target.server()),
        || match conn.query(sql, params) {
            Ok(rows) if matches_expect(ctx, &rows, expect)? => Ok(Ok(rows)),
            Ok(rows) => {
                let seen = format!("{rows:?}");
                Ok(Err(if seen.chars().count() > 300 {
                    format!("{}...", seen.chars().take(300).collect::<String>())
                } else {
                    seen
                }))
            }
            Err(e) if ignore_errors => Ok(Err(super::wait::seen_error(&e))),
            Err(e) => Err(e),
        },
        |last| {
            fault(
                FaultKind::Timeout,
                conn.target.host.as_deref(),
                format!(
                    "gave up waiting for {what} on {} after {}s; last result: {last}",
                    conn.target.server(),
                    pace.timeout.as_secs_f64()
                ),
            )
        },
    )
}
