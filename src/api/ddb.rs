//! `ddb::connect` and the `DdbConn` object: DolphinDB scripts through the executor, declared read-only or mutating.

use std::sync::Arc;
use std::time::Duration;

use rhai::{Array, Dynamic, Engine, EvalAltResult, Map, Module, NativeCallContext};

use super::opts::Opts;
use super::{at, bad_input, def, def_in, RunCtx};
use crate::action::{Action, Outcome};
use crate::ddb::{DdbKind, DdbTarget, DdbValue};

type R<T> = Result<T, Box<EvalAltResult>>;

/// A session with one DolphinDB node as scripts see it (`ddb::connect`). Cloning it shares
/// the session.
#[derive(Clone)]
pub struct DdbConn {
    pub(crate) target: Arc<DdbTarget>,
    pub(crate) run: Arc<RunCtx>,
}

impl std::fmt::Debug for DdbConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DdbConn({})", self.target.server())
    }
}

impl DdbConn {
    fn script(&self, kind: DdbKind, script: &str) -> R<Dynamic> {
        let action = Action::Ddb {
            target: (*self.target).clone(),
            kind,
            script: script.to_string(),
        };
        match self.run.exec.perform(&self.target.label(), action)? {
            Outcome::Ddb(v) => Ok(to_dynamic(&v)),
            // `--check` skipped a change, or a rollback replay held it.
            _ => Ok(Dynamic::UNIT),
        }
    }
}

/// Scalars as Rhai values, vectors as arrays, dictionaries as maps, tables as arrays of maps.
pub(crate) fn to_dynamic(v: &DdbValue) -> Dynamic {
    match v {
        DdbValue::Null => Dynamic::UNIT,
        DdbValue::Bool(b) => Dynamic::from_bool(*b),
        DdbValue::Int(i) => Dynamic::from_int(*i),
        DdbValue::Float(f) => Dynamic::from_float(*f),
        DdbValue::Str(s) => Dynamic::from(s.clone()),
        DdbValue::List(xs) => Dynamic::from_array(xs.iter().map(to_dynamic).collect()),
        DdbValue::Dict(m) => Dynamic::from_map(
            m.iter()
                .map(|(k, v)| (k.as_str().into(), to_dynamic(v)))
                .collect(),
        ),
        DdbValue::Table { columns, rows } => Dynamic::from_array(
            rows.iter()
                .map(|row| {
                    let m: Map = columns
                        .iter()
                        .zip(row)
                        .map(|(c, v)| (c.as_str().into(), to_dynamic(v)))
                        .collect();
                    Dynamic::from_map(m)
                })
                .collect::<Array>(),
        ),
    }
}

const CONNECT_OPTS: &[&str] = &["host", "port", "user", "password", "timeout"];

fn connect(run: &Arc<RunCtx>, opts: Map) -> R<DdbConn> {
    let o = Opts::new("ddb::connect", opts, CONNECT_OPTS)?;
    let inv = run.exec.inventory();
    let (host, address) = super::sql::server_host("ddb::connect", &o, inv)?;
    let port = match o.int("port")? {
        Some(p @ 1..=65535) => p as u16,
        Some(p) => return Err(bad_input(format!("ddb::connect: port {p} is out of range"))),
        None => {
            return Err(bad_input(
                "ddb::connect: option `port` is required (the node's port)",
            ))
        }
    };
    let user = o.string("user")?;
    let password = o
        .string("password")?
        .map(|p| super::sql::password_of(p, inv));
    if user.is_some() != password.is_some() {
        return Err(bad_input(
            "ddb::connect: give both `user` and `password`, or neither (a guest session)",
        ));
    }
    let timeout = o.duration("timeout")?.unwrap_or(Duration::from_secs(30));
    let target = DdbTarget {
        id: super::sql::new_session_id(),
        host,
        address,
        port,
        user,
        password,
        timeout_ms: timeout.as_millis().max(1) as u64,
    };
    let conn = DdbConn {
        target: Arc::new(target),
        run: run.clone(),
    };
    let _ = conn.script(DdbKind::Connect, "")?;
    Ok(conn)
}

pub(super) fn register(engine: &mut Engine, run: &Arc<RunCtx>) {
    engine.register_type_with_name::<DdbConn>("DdbConn");
    engine.register_fn("to_string", |c: &mut DdbConn| c.target.server());
    engine.register_fn("to_debug", |c: &mut DdbConn| {
        format!("DdbConn({})", c.target.server())
    });
    engine.register_get("host", |c: &mut DdbConn| match &c.target.host {
        Some(h) => h.clone(),
        None => c.target.address.clone(),
    });
    engine.register_get("port", |c: &mut DdbConn| i64::from(c.target.port));

    let mut m = Module::new();
    let r = run.clone();
    def_in(
        &mut m,
        "connect",
        &["options: Map", "DdbConn"],
        r#"
Opens a session with one DolphinDB node (controller, agent or data node) over DolphinDB's API
protocol, from the machine capstan runs on. Options: `host` (an inventory host or an address,
required), `port` (the node's port, required), `user` and `password` (both or neither; give the
password as `secret("name")`: it is never printed and the journal keeps only the name), `timeout`
(connect and per-script, default 30 s: the client library has no timeouts of its own, so without
one a node that stops answering would hang the run). Read-only: it runs under `--check`.
Errors say which of these happened (`e.reason`): `connect` (nothing listens), `auth` (login
refused), `timeout`, `lost` (the connection dropped), `server` (the script failed; the message is
the node's, HA tags such as `<NotLeader>` included), `client` (the reply could not be decoded:
select named columns and cast unusual types with `string()`).

```rhai
let c = ddb::connect(#{ host: cluster().host("ddb1"), port: 8922, user: "admin", password: "123456" });
let v = c.query("version()");
```"#,
        move |ctx: NativeCallContext, opts: Map| -> R<DdbConn> {
            connect(&r, opts).map_err(|e| at(e, ctx.call_position()))
        },
    );
    engine.register_static_module("ddb", m.into());

    def(
        engine,
        "query",
        &["conn: DdbConn", "script: String", "?"],
        r#"
Runs a DolphinDB script that only reads, and returns its result: a scalar as a Rhai value (a
null as `()`), a vector as an array, a dictionary as a map, a table as an array of maps (column →
value). Temporal and decimal values come as DolphinDB's text. Read-only: runs under `--check`.
Name the columns you need and cast unusual types (UUID, INT128, IPADDR) with `string()`: the
client library cannot decode those. A script that changes the cluster belongs in `exec`.

```rhai
let c = ddb::connect(#{ host: cluster().host("ddb1"), port: 8922, user: "admin", password: "123456" });
for row in c.query("pnodeRun(version)") { log(`${row.node}: ${row.value}`); }
```"#,
        |ctx: NativeCallContext, c: DdbConn, script: &str| -> R<Dynamic> {
            c.script(DdbKind::Query, script)
                .map_err(|e| at(e, ctx.call_position()))
        },
    );
    def(
        engine,
        "exec",
        &["conn: DdbConn", "script: String", "?"],
        r#"
Runs a DolphinDB script that changes the cluster (`startDataNode`, writes, configuration) and
returns its result like `query`. Mutating: under `--check` it is recorded in the plan, not sent,
and returns `()`.

```rhai
let c = ddb::connect(#{ host: cluster().host("ddb1"), port: 8920, user: "admin", password: "123456" });
c.exec(`startDataNode(["node43"])`);
```"#,
        |ctx: NativeCallContext, c: DdbConn, script: &str| -> R<Dynamic> {
            c.script(DdbKind::Exec, script)
                .map_err(|e| at(e, ctx.call_position()))
        },
    );
}
