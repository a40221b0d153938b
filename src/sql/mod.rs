//! SQL over the MySQL protocol: server targets, bound values, results, the real client, its errors.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mysql::prelude::Queryable;

use crate::error::Fault;
use crate::error::FaultKind;
use crate::inventory::Inventory;
use crate::secret::Secret;

/// Where a connection's password comes from. Only a secret's *name* is ever serialized: a password
/// given inline in a playbook lives in this process alone.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Password {
    /// A secret of the inventory's `[secrets]` table, by name.
    Secret(String),
    /// A plain value from the script; journaled as `null`, so a later process cannot use it.
    Inline(#[serde(skip)] Option<Secret>),
}

/// One SQL server session as a script opened it with `sql::connect`. Serializable (undos and
/// plans keep it); the password is kept by reference only.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SqlTarget {
    /// The session within the run: statements on one target share one server session.
    pub id: u64,
    /// The inventory host the server was named by, if any (actions are recorded under it).
    pub host: Option<String>,
    pub address: String,
    pub port: u16,
    pub user: String,
    pub password: Option<Password>,
    pub db: Option<String>,
    /// Connect timeout, and the longest one statement may take.
    pub timeout_ms: u64,
    pub tls: bool,
    /// The CA certificate (PEM, on the machine capstan runs on) the server's certificate must
    /// chain to; the system's roots when absent.
    #[serde(default)]
    pub tls_ca: Option<String>,
}

impl SqlTarget {
    /// The name actions are recorded under: the inventory host, or `address:port`.
    pub fn label(&self) -> String {
        match &self.host {
            Some(h) => h.clone(),
            None => format!("{}:{}", self.address, self.port),
        }
    }

    /// `user@address:port/db`, for plans and errors.
    pub fn server(&self) -> String {
        let db = self
            .db
            .as_deref()
            .map(|d| format!("/{d}"))
            .unwrap_or_default();
        format!("{}@{}:{}{db}", self.user, self.address, self.port)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// The password in clear, for the one place that hands it to a server or a client tool.
    pub fn resolve_password(&self, inv: &Inventory) -> Result<Option<Secret>, String> {
        resolve_password(&self.password, inv)
    }
}

/// A password in clear, for the one place that hands it to a server or a client tool.
pub fn resolve_password(p: &Option<Password>, inv: &Inventory) -> Result<Option<Secret>, String> {
    match p {
        None => Ok(None),
        Some(Password::Secret(name)) => inv
            .secrets
            .get(name)
            .cloned()
            .map(Some)
            .ok_or_else(|| format!("no secret `{name}` in the inventory's [secrets]")),
        Some(Password::Inline(Some(s))) => Ok(Some(s.clone())),
        Some(Password::Inline(None)) => Err(
            "the password was given inline by the playbook, and this process does not have it: \
             give it as a secret (secret(\"name\")) so a later process can connect"
                .into(),
        ),
    }
}

/// A value bound to a statement or read from a result.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "t", content = "v", rename_all = "snake_case")]
pub enum SqlValue {
    Null,
    Int(i64),
    UInt(u64),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
}

impl SqlValue {
    /// As plans show it (secrets are redacted after).
    pub fn display(&self) -> String {
        match self {
            SqlValue::Null => "NULL".into(),
            SqlValue::Int(i) => i.to_string(),
            SqlValue::UInt(u) => u.to_string(),
            SqlValue::Float(f) => format!("{f:?}"),
            SqlValue::Text(t) => format!("'{}'", t.replace('\'', "''")),
            SqlValue::Bytes(b) => format!("<{} bytes>", b.len()),
        }
    }

    fn to_mysql(&self) -> mysql::Value {
        match self {
            SqlValue::Null => mysql::Value::NULL,
            SqlValue::Int(i) => mysql::Value::Int(*i),
            SqlValue::UInt(u) => mysql::Value::UInt(*u),
            SqlValue::Float(f) => mysql::Value::Double(*f),
            SqlValue::Text(t) => mysql::Value::Bytes(t.clone().into_bytes()),
            SqlValue::Bytes(b) => mysql::Value::Bytes(b.clone()),
        }
    }
}

/// A statement's bound values: `?` placeholders in order, or `:name` placeholders by name.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SqlParams {
    #[default]
    None,
    Positional(Vec<SqlValue>),
    Named(Vec<(String, SqlValue)>),
}

impl SqlParams {
    pub fn display(&self) -> String {
        match self {
            SqlParams::None => String::new(),
            SqlParams::Positional(v) => v
                .iter()
                .map(SqlValue::display)
                .collect::<Vec<_>>()
                .join(", "),
            SqlParams::Named(v) => v
                .iter()
                .map(|(k, v)| format!(":{k} = {}", v.display()))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    fn to_mysql(&self) -> mysql::Params {
        match self {
            SqlParams::None => mysql::Params::Empty,
            SqlParams::Positional(v) if v.is_empty() => mysql::Params::Empty,
            SqlParams::Positional(v) => {
                mysql::Params::Positional(v.iter().map(SqlValue::to_mysql).collect())
            }
            SqlParams::Named(v) => mysql::Params::Named(
                v.iter()
                    .map(|(k, v)| (k.as_bytes().to_vec(), v.to_mysql()))
                    .collect(),
            ),
        }
    }
}

/// What a statement does, for plans and for the mode: only `Query` and `Connect` are reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SqlKind {
    /// Open the session (and prove the server answers).
    Connect,
    /// A read: runs under `--check`.
    Query,
    /// A change: recorded, not sent, under `--check`.
    Exec,
    Begin,
    Commit,
    Rollback,
}

/// What the server answered.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SqlResult {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<SqlValue>>,
    pub affected: u64,
    pub last_insert_id: Option<u64>,
}

/// The statement's first line, for error messages.
pub fn first_line(sql: &str) -> &str {
    sql.trim().lines().next().unwrap_or("").trim()
}

/// The statement on one line (whitespace runs collapsed), for plans.
pub fn one_line(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    for w in sql.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(w);
    }
    out
}

/// Validates and backquotes an identifier (database, table, column): identifiers cannot be bound,
/// so only plain names pass.
pub fn quote_ident(name: &str) -> Result<String, String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
    if ok {
        Ok(format!("`{name}`"))
    } else {
        Err(format!(
            "`{name}` is not a plain identifier (letters, digits, `_` and `$`, at most 64)"
        ))
    }
}

/// Sessions of one run with real servers, by target id.
#[derive(Default)]
pub struct SqlClient {
    conns: Mutex<HashMap<u64, Arc<Mutex<mysql::Conn>>>>,
}

impl std::fmt::Debug for SqlClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqlClient")
    }
}

impl SqlClient {
    /// Runs one statement on the target's session (opened on first use). A session whose
    /// connection broke or timed out is dropped: the next statement opens a new one.
    pub fn perform(
        &self,
        inv: &Inventory,
        target: &SqlTarget,
        kind: SqlKind,
        sql: &str,
        params: &SqlParams,
    ) -> Result<SqlResult, Fault> {
        let conn = self.session(inv, target)?;
        let mut conn = crate::lock(&conn);
        let result = match kind {
            SqlKind::Connect => conn.query_drop("SELECT 1").map(|_| SqlResult::default()),
            SqlKind::Begin => conn
                .query_drop("START TRANSACTION")
                .map(|_| SqlResult::default()),
            SqlKind::Commit => conn.query_drop("COMMIT").map(|_| SqlResult::default()),
            SqlKind::Rollback => conn.query_drop("ROLLBACK").map(|_| SqlResult::default()),
            SqlKind::Query | SqlKind::Exec => run_statement(&mut conn, sql, params),
        };
        drop(conn);
        result.map_err(|e| {
            let f = classify(&e, target, sql, false);
            if matches!(f.reason.as_deref(), Some("lost" | "timeout")) {
                crate::lock(&self.conns).remove(&target.id);
            }
            f
        })
    }

    fn session(
        &self,
        inv: &Inventory,
        target: &SqlTarget,
    ) -> Result<Arc<Mutex<mysql::Conn>>, Fault> {
        if let Some(c) = crate::lock(&self.conns).get(&target.id) {
            return Ok(c.clone());
        }
        let password = target.resolve_password(inv).map_err(|m| {
            Fault::new(
                FaultKind::BadInput,
                Some(&target.label()),
                format!("{}: {m}", target.server()),
            )
            .with_reason("auth")
        })?;
        let mut opts = mysql::OptsBuilder::new()
            .ip_or_hostname(Some(target.address.clone()))
            .tcp_port(target.port)
            .user(Some(target.user.clone()))
            .pass(password.as_ref().map(|p| p.expose().to_string()))
            .db_name(target.db.clone())
            // A TCP connection to 127.0.0.1 would otherwise be swapped for the local socket,
            // which is another server when the address is a tunnel or a container's port.
            .prefer_socket(false)
            .tcp_connect_timeout(Some(target.timeout()))
            .read_timeout(Some(target.timeout()))
            .write_timeout(Some(target.timeout()));
        if target.tls {
            let ca = target
                .tls_ca
                .clone()
                .map(|p| std::borrow::Cow::Owned(std::path::PathBuf::from(p)));
            opts = opts.ssl_opts(Some(mysql::SslOpts::default().with_root_cert_path(ca)));
        }
        let conn = mysql::Conn::new(opts).map_err(|e| classify(&e, target, "", true))?;
        let conn = Arc::new(Mutex::new(conn));
        crate::lock(&self.conns).insert(target.id, conn.clone());
        Ok(conn)
    }
}

/// Binary protocol always (typed values, bound parameters), even without parameters.
fn run_statement(
    conn: &mut mysql::Conn,
    sql: &str,
    params: &SqlParams,
) -> Result<SqlResult, mysql::Error> {
    let mut result = conn.exec_iter(sql, params.to_mysql())?;
    let mut out = SqlResult::default();
    // Only the first result set is returned; the rest are drained so the session stays usable.
    if let Some(set) = result.iter() {
        // Read before the rows: the counts belong to this result, not to what follows it.
        out.affected = set.affected_rows();
        out.last_insert_id = set.last_insert_id().filter(|&i| i != 0);
        let columns = set.columns();
        let cols: Vec<(String, mysql::consts::ColumnType, u16)> = columns
            .as_ref()
            .iter()
            .map(|c| {
                (
                    c.name_str().into_owned(),
                    c.column_type(),
                    c.character_set(),
                )
            })
            .collect();
        out.columns = cols.iter().map(|c| c.0.clone()).collect();
        for row in set {
            let row = row?;
            let vals = row
                .unwrap()
                .into_iter()
                .zip(&cols)
                .map(|(v, (_, ty, cs))| from_mysql(v, *ty, *cs))
                .collect();
            out.rows.push(vals);
        }
    }
    while result.iter().is_some() {
        for row in result.iter().into_iter().flatten() {
            row?;
        }
    }
    Ok(out)
}

/// The character set number MySQL uses for binary strings.
const BINARY_CHARSET: u16 = 63;

fn from_mysql(v: mysql::Value, ty: mysql::consts::ColumnType, charset: u16) -> SqlValue {
    use mysql::consts::ColumnType as T;
    match v {
        mysql::Value::NULL => SqlValue::Null,
        mysql::Value::Int(i) => SqlValue::Int(i),
        mysql::Value::UInt(u) => SqlValue::UInt(u),
        // Through its decimal text: `1.1f32 as f64` would read 1.100000023841858.
        mysql::Value::Float(f) => SqlValue::Float(f.to_string().parse().unwrap_or(f64::from(f))),
        mysql::Value::Double(d) => SqlValue::Float(d),
        mysql::Value::Bytes(b) => {
            let text_type = matches!(
                ty,
                T::MYSQL_TYPE_DECIMAL | T::MYSQL_TYPE_NEWDECIMAL | T::MYSQL_TYPE_JSON
            );
            if charset == BINARY_CHARSET && !text_type {
                SqlValue::Bytes(b)
            } else {
                match String::from_utf8(b) {
                    Ok(s) => SqlValue::Text(s),
                    Err(e) => SqlValue::Bytes(e.into_bytes()),
                }
            }
        }
        mysql::Value::Date(y, mo, d, h, mi, s, us) => {
            if ty == T::MYSQL_TYPE_DATE || ty == T::MYSQL_TYPE_NEWDATE {
                SqlValue::Text(format!("{y:04}-{mo:02}-{d:02}"))
            } else {
                let frac = if us > 0 {
                    format!(".{us:06}")
                } else {
                    String::new()
                };
                SqlValue::Text(format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}{frac}"))
            }
        }
        mysql::Value::Time(neg, days, h, mi, s, us) => {
            let hours = u64::from(days) * 24 + u64::from(h);
            let sign = if neg { "-" } else { "" };
            let frac = if us > 0 {
                format!(".{us:06}")
            } else {
                String::new()
            };
            SqlValue::Text(format!("{sign}{hours:02}:{mi:02}:{s:02}{frac}"))
        }
    }
}

/// Server error codes that mean the session is gone: shutdown in progress, connection killed,
/// and the client-side "gone away" / "lost connection" codes some servers relay.
const LOST_CODES: &[u16] = &[1053, 1927, 2006, 2013];
/// Access denied (user, database, no password).
const AUTH_CODES: &[u16] = &[1044, 1045, 1698];

/// The I/O error under a driver error, directly or inside the packet codec.
fn io_of(e: &mysql::Error) -> Option<&std::io::Error> {
    use mysql::mysql_common::proto::codec::error::PacketCodecError;
    match e {
        mysql::Error::IoError(io) | mysql::Error::CodecError(PacketCodecError::Io(io)) => Some(io),
        _ => None,
    }
}

/// Turns a driver error into a fault: connect failure, authentication failure, timeout, lost
/// connection and server errors are distinct (`reason`), and each names the server and statement.
fn classify(e: &mysql::Error, target: &SqlTarget, sql: &str, connecting: bool) -> Fault {
    use std::io::ErrorKind as K;
    let (kind, reason, code, what) = match e {
        mysql::Error::MySqlError(me) if AUTH_CODES.contains(&me.code) => (
            FaultKind::Action,
            "auth",
            Some(me.code),
            format!("authentication failed: {}", me.message),
        ),
        mysql::Error::MySqlError(me) if LOST_CODES.contains(&me.code) => (
            FaultKind::Unreachable,
            "lost",
            Some(me.code),
            format!(
                "connection lost: server error {} ({}): {}",
                me.code, me.state, me.message
            ),
        ),
        mysql::Error::MySqlError(me) => (
            if connecting {
                FaultKind::Unreachable
            } else {
                FaultKind::Action
            },
            if connecting { "connect" } else { "server" },
            Some(me.code),
            format!("server error {} ({}): {}", me.code, me.state, me.message),
        ),
        mysql::Error::DriverError(mysql::DriverError::ConnectTimeout) => (
            FaultKind::Unreachable,
            "connect",
            None,
            format!(
                "cannot connect: no answer within {}s",
                target.timeout().as_secs_f64()
            ),
        ),
        mysql::Error::DriverError(mysql::DriverError::CouldNotConnect(detail)) => (
            FaultKind::Unreachable,
            "connect",
            None,
            match detail {
                Some((_, d, _)) => format!("cannot connect: {d}"),
                None => "cannot connect".into(),
            },
        ),
        mysql::Error::IoError(io) if connecting => (
            FaultKind::Unreachable,
            "connect",
            None,
            format!("cannot connect: {io}"),
        ),
        _ if !connecting
            && io_of(e).is_some_and(|io| matches!(io.kind(), K::TimedOut | K::WouldBlock)) =>
        {
            (
                FaultKind::Timeout,
                "timeout",
                None,
                format!(
                    "no answer within {}s (the statement may still be running on the server)",
                    target.timeout().as_secs_f64()
                ),
            )
        }
        mysql::Error::IoError(io) => (
            FaultKind::Unreachable,
            "lost",
            None,
            format!("connection lost: {io}"),
        ),
        mysql::Error::CodecError(c) => (
            FaultKind::Unreachable,
            "lost",
            None,
            format!("connection lost: {c}"),
        ),
        mysql::Error::TlsError(t) => (
            FaultKind::Unreachable,
            "connect",
            None,
            format!("TLS failed: {t}"),
        ),
        other if connecting => (
            FaultKind::Unreachable,
            "connect",
            None,
            format!("cannot connect: {other}"),
        ),
        other => (FaultKind::Action, "client", None, other.to_string()),
    };
    let label = target.label();
    let mut msg = format!("{label}: sql {}: {what}", target.server());
    let line = first_line(sql);
    if !line.is_empty() {
        msg.push_str(&format!("\n  statement: {line}"));
    }
    let mut f = Fault::new(kind, Some(&label), msg).with_reason(reason);
    f.code = code.map(i64::from);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_validated_and_quoted() {
        assert_eq!(quote_ident("oms_rm").unwrap(), "`oms_rm`");
        assert!(quote_ident("a`; DROP TABLE t; --").is_err());
        assert!(quote_ident("").is_err());
        assert!(quote_ident("db.name").is_err());
    }

    #[test]
    fn times_and_dates_read_as_iso_text() {
        use mysql::consts::ColumnType as T;
        let d = from_mysql(
            mysql::Value::Date(2026, 11, 2, 0, 0, 0, 0),
            T::MYSQL_TYPE_DATE,
            8,
        );
        assert_eq!(d, SqlValue::Text("2026-11-02".into()));
        let dt = from_mysql(
            mysql::Value::Date(2026, 1, 2, 3, 4, 5, 120),
            T::MYSQL_TYPE_DATETIME,
            8,
        );
        assert_eq!(dt, SqlValue::Text("2026-01-02 03:04:05.000120".into()));
        let t = from_mysql(
            mysql::Value::Time(true, 1, 2, 3, 4, 0),
            T::MYSQL_TYPE_TIME,
            8,
        );
        assert_eq!(t, SqlValue::Text("-26:03:04".into()));
    }

    #[test]
    fn inline_passwords_are_never_serialized() {
        let t = SqlTarget {
            id: 1,
            host: None,
            address: "127.0.0.1".into(),
            port: 3306,
            user: "root".into(),
            password: Some(Password::Inline(Some(Secret::new("hunter2-pw")))),
            db: None,
            timeout_ms: 1000,
            tls: false,
            tls_ca: None,
        };
        let j = serde_json::to_string(&t).unwrap();
        assert!(!j.contains("hunter2"), "{j}");
        let back: SqlTarget = serde_json::from_str(&j).unwrap();
        let inv = Inventory::from_str_at(
            "[hosts.a]\ntransport = \"local\"\n",
            "i.toml",
            std::path::Path::new("."),
        )
        .unwrap();
        assert!(back.resolve_password(&inv).unwrap_err().contains("inline"));
    }
}
