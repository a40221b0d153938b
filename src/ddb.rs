//! DolphinDB over its API protocol (the `dolphindb` crate): targets, values, and a client with timeouts and contained panics.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use dolphindb::types::{ConstantImpl, ScalarImpl, VectorImpl};

use crate::error::Fault;
use crate::error::FaultKind;
use crate::inventory::Inventory;
use crate::sql::Password;

/// One DolphinDB node session as a script opened it with `ddb::connect`. Serializable (undos
/// and plans keep it); the password is kept by reference only.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DdbTarget {
    /// The session within the run: scripts on one target share one connection.
    pub id: u64,
    /// The inventory host the node runs on, when it was named by host.
    pub host: Option<String>,
    pub address: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<Password>,
    /// Connect and per-script timeout (the crate has none of its own).
    pub timeout_ms: u64,
}

impl DdbTarget {
    /// The name actions are recorded under: the inventory host, or `address:port`.
    pub fn label(&self) -> String {
        match &self.host {
            Some(h) => h.clone(),
            None => format!("{}:{}", self.address, self.port),
        }
    }

    /// `user@address:port`, for plans and errors.
    pub fn server(&self) -> String {
        match &self.user {
            Some(u) => format!("{u}@{}:{}", self.address, self.port),
            None => format!("{}:{}", self.address, self.port),
        }
    }

    /// `address:port`: what simulated nodes are keyed by.
    pub fn endpoint(&self) -> String {
        format!("{}:{}", self.address, self.port)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// What a DolphinDB script is, as the caller declared it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DdbKind {
    /// Opening the session (and logging in): read-only.
    Connect,
    /// A script that only reads: it runs under `--check`.
    Query,
    /// A script that changes the cluster: recorded, skipped under `--check`.
    Exec,
}

/// A DolphinDB result as capstan passes it on: scalars, vectors (pairs, sets) as lists,
/// dictionaries as maps, tables as columns and rows.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "t", content = "v", rename_all = "snake_case")]
pub enum DdbValue {
    /// The script returned nothing, or a null.
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// Strings and symbols, and every type without a Rhai counterpart (temporal, decimal),
    /// in DolphinDB's own text form.
    Str(String),
    List(Vec<DdbValue>),
    Dict(BTreeMap<String, DdbValue>),
    Table {
        columns: Vec<String>,
        rows: Vec<Vec<DdbValue>>,
    },
}

impl DdbValue {
    /// A one-line summary for the action log.
    pub fn summary(&self) -> String {
        match self {
            DdbValue::Null => "no result".into(),
            DdbValue::Table { rows, .. } => format!("{} rows", rows.len()),
            DdbValue::List(v) => format!("{} values", v.len()),
            DdbValue::Dict(m) => format!("{} keys", m.len()),
            DdbValue::Str(s) => {
                let s: String = s.chars().take(60).collect();
                format!("{s:?}")
            }
            DdbValue::Bool(b) => b.to_string(),
            DdbValue::Int(i) => i.to_string(),
            DdbValue::Float(f) => f.to_string(),
        }
    }
}

fn scalar(s: &ScalarImpl) -> DdbValue {
    fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> DdbValue) -> DdbValue {
        v.map_or(DdbValue::Null, f)
    }
    match s.clone() {
        ScalarImpl::Void(_) => DdbValue::Null,
        ScalarImpl::Bool(b) => opt(b.into_inner(), DdbValue::Bool),
        ScalarImpl::Char(c) => opt(c.into_inner(), |v| DdbValue::Int(i64::from(v))),
        ScalarImpl::Short(v) => opt(v.into_inner(), |v| DdbValue::Int(i64::from(v))),
        ScalarImpl::Int(v) => opt(v.into_inner(), |v| DdbValue::Int(i64::from(v))),
        ScalarImpl::Long(v) => opt(v.into_inner(), DdbValue::Int),
        ScalarImpl::Float(v) => opt(v.into_inner(), |v| DdbValue::Float(f64::from(v))),
        ScalarImpl::Double(v) => opt(v.into_inner(), DdbValue::Float),
        ScalarImpl::String(v) => opt(v.into_inner(), DdbValue::Str),
        ScalarImpl::Symbol(v) => opt(v.into_inner(), DdbValue::Str),
        other if ConstantImpl::Scalar(other.clone()).is_null() => DdbValue::Null,
        other => DdbValue::Str(other.to_string()),
    }
}

fn vector(v: &VectorImpl) -> Vec<DdbValue> {
    (0..v.len())
        .map(|i| v.get(i).map_or(DdbValue::Null, |c| value(&c)))
        .collect()
}

/// A decoded result as a `DdbValue`.
pub fn value(c: &ConstantImpl) -> DdbValue {
    match c {
        ConstantImpl::Scalar(s) => scalar(s),
        ConstantImpl::Vector(v) => DdbValue::List(vector(v)),
        ConstantImpl::Table(t) => {
            let cols: Vec<Vec<DdbValue>> = t.columns().iter().map(vector).collect();
            let n = cols.first().map_or(0, Vec::len);
            let rows = (0..n)
                .map(|i| {
                    cols.iter()
                        .map(|c| c.get(i).cloned().unwrap_or(DdbValue::Null))
                        .collect()
                })
                .collect();
            DdbValue::Table {
                columns: t.column_names().clone(),
                rows,
            }
        }
        // Pairs, sets and dictionaries have no accessors of their own in the crate; their text
        // form is what DolphinDB prints.
        other => DdbValue::Str(other.to_string()),
    }
}

type Conn = Arc<tokio::sync::Mutex<dolphindb::client::Client>>;

/// The real client: one connection per target, every call on a runtime of its own, bounded by
/// the target's timeout, with a panic in the crate turned into an error.
#[derive(Default)]
pub struct DdbClient {
    runtime: OnceLock<Result<tokio::runtime::Runtime, String>>,
    conns: Mutex<HashMap<String, Conn>>,
}

impl std::fmt::Debug for DdbClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DdbClient")
    }
}

fn fault(target: &DdbTarget, reason: &str, message: String) -> Fault {
    Fault::new(
        FaultKind::Action,
        Some(&target.label()),
        format!(
            "{}: dolphindb {}: {message}",
            target.label(),
            target.server()
        ),
    )
    .with_reason(reason)
}

/// The first line of a script, for error messages.
pub fn first_line(script: &str) -> String {
    let line = script.trim().lines().next().unwrap_or("");
    let mut s: String = line.chars().take(120).collect();
    if s.len() < line.len() || script.trim().lines().nth(1).is_some() {
        s.push_str(" …");
    }
    s
}

impl DdbClient {
    fn runtime(&self) -> Result<&tokio::runtime::Runtime, String> {
        self.runtime
            .get_or_init(|| {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("capstan-ddb")
                    .enable_all()
                    .build()
                    .map_err(|e| format!("cannot start the DolphinDB client's runtime: {e}"))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Runs `fut` on the client's runtime and waits for it on this thread (scripts run on
    /// plain threads, some inside another runtime's blocking pool: no `block_on` here). A
    /// panic inside the crate ends only its task and comes back as `Err`.
    fn call<T: Send + 'static>(
        &self,
        target: &DdbTarget,
        what: &str,
        fut: impl std::future::Future<Output = Result<T, dolphindb::error::Error>> + Send + 'static,
    ) -> Result<T, Fault> {
        let rt = self
            .runtime()
            .map_err(|m| fault(target, "client", m.to_string()))?;
        let (tx, rx) = std::sync::mpsc::channel();
        let limit = target.timeout();
        let task = rt.spawn(async move { tokio::time::timeout(limit, fut).await });
        rt.spawn(async move {
            let _ = tx.send(task.await);
        });
        match rx.recv() {
            Ok(Ok(Ok(Ok(v)))) => Ok(v),
            Ok(Ok(Ok(Err(e)))) => Err(classify(target, what, &e)),
            Ok(Ok(Err(_))) => Err(fault(
                target,
                "timeout",
                format!(
                    "{what}: no answer within {}",
                    humantime::format_duration(limit)
                ),
            )),
            Ok(Err(join)) if join.is_panic() => {
                let p = join.into_panic();
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "(no message)".into());
                Err(fault(
                    target,
                    "client",
                    format!(
                        "{what}: the DolphinDB client failed decoding the reply ({msg}); select \
                         named columns and cast unusual types with string()"
                    ),
                ))
            }
            Ok(Err(join)) => Err(fault(target, "client", format!("{what}: {join}"))),
            Err(_) => Err(fault(
                target,
                "client",
                format!("{what}: the client's runtime stopped"),
            )),
        }
    }

    /// The connection for `target`'s node: one per node and user for the whole run (a script
    /// polled every second must not open a socket every second). `fresh` replaces it with a new
    /// one (a `ddb::connect`, which must find out whether the node answers now).
    fn connection(&self, inv: &Inventory, target: &DdbTarget, fresh: bool) -> Result<Conn, Fault> {
        let key = pool_key(target);
        if !fresh {
            if let Some(c) = crate::lock(&self.conns).get(&key) {
                return Ok(c.clone());
            }
        }
        let password = crate::sql::resolve_password(&target.password, inv)
            .map_err(|m| fault(target, "auth", m))?;
        let addr = target.endpoint();
        let user = target.user.clone();
        let client = self.call(target, "connect", async move {
            let mut b = dolphindb::client::ClientBuilder::new(addr);
            // `with_auth` borrows its strings for the builder's life: keep them in this task.
            let pw = password.as_ref().map(|s| s.expose().to_string());
            if let (Some(u), Some(p)) = (user.as_deref(), pw.as_deref()) {
                b.with_auth((u, p));
            }
            b.connect().await
        });
        let client = match client {
            Ok(c) => c,
            Err(f) => {
                crate::lock(&self.conns).remove(&key);
                return Err(f);
            }
        };
        let c = Arc::new(tokio::sync::Mutex::new(client));
        crate::lock(&self.conns).insert(key, c.clone());
        Ok(c)
    }

    /// Opens the session (`Connect`) or runs one script on it.
    pub fn perform(
        &self,
        inv: &Inventory,
        target: &DdbTarget,
        kind: DdbKind,
        script: &str,
    ) -> Result<DdbValue, Fault> {
        let conn = self.connection(inv, target, kind == DdbKind::Connect)?;
        if kind == DdbKind::Connect {
            return Ok(DdbValue::Null);
        }
        let s = script.to_string();
        let r = self.call(target, &first_line(script), async move {
            conn.lock().await.run_script(&s).await
        });
        match r {
            Ok(Some(c)) => Ok(value(&c)),
            Ok(None) => Ok(DdbValue::Null),
            Err(f) => {
                // After a timeout or a panic the stream may be out of step: never reuse it.
                if f.reason.as_deref() != Some("server") {
                    crate::lock(&self.conns).remove(&pool_key(target));
                }
                Err(f)
            }
        }
    }
}

fn pool_key(t: &DdbTarget) -> String {
    format!("{}@{}", t.user.as_deref().unwrap_or(""), t.endpoint())
}

fn classify(target: &DdbTarget, what: &str, e: &dolphindb::error::Error) -> Fault {
    use dolphindb::error::Error as E;
    match e {
        E::BadResponse(m) => {
            let m = m.strip_prefix("server response: ").unwrap_or(m);
            let reason = if what == "connect" { "auth" } else { "server" };
            fault(target, reason, format!("{what}: {m}"))
        }
        E::IO(io) if what == "connect" => fault(target, "connect", format!("connect: {io}")),
        E::IO(_) | E::UnexpectedEof => fault(target, "lost", format!("{what}: {e}")),
        E::TimedOut => fault(target, "timeout", format!("{what}: {e}")),
        _ => fault(target, "client", format!("{what}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_lines_are_short() {
        assert_eq!(first_line("version()"), "version()");
        assert_eq!(first_line("a = 1\nb = 2"), "a = 1 …");
    }

    #[test]
    fn summaries() {
        let t = DdbValue::Table {
            columns: vec!["node".into()],
            rows: vec![vec![DdbValue::Str("n1".into())]],
        };
        assert_eq!(t.summary(), "1 rows");
        assert_eq!(DdbValue::Null.summary(), "no result");
        assert_eq!(
            DdbValue::Str("2.00.7.4 2022.12.08".into()).summary(),
            "\"2.00.7.4 2022.12.08\""
        );
    }
}
