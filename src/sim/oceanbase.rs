//! The `oceanbase` product model: the sys tenant's catalog and `ALTER SYSTEM` effects, and observers on the hosts.
//!
//! [`ObCluster`] is an OceanBase 4.x cluster as the upgrade sees it: zones, servers (build
//! version, status, stop and start-service times), parameters (per server in
//! `GV$OB_PARAMETERS`), tenants and their `compatible`, log streams, major compaction and
//! `__all_rootservice_job`. It answers the catalog queries through SQLite (the views are
//! materialised before each read; `oceanbase.` names resolve to the same tables) and executes the
//! `ALTER SYSTEM` statements of the upgrade with their effects. The simulation's model wraps it
//! and plays the observers from the hosts' files (`bin/observer` and its `-V`); the lab's sys
//! tenant (`tests/it/oceanbase.rs`) serves the same cluster over the MySQL protocol and learns
//! its observers from the processes on the lab hosts. A changed parameter reaches the last
//! server one read late, so waits for parameter sync really wait.

use std::collections::BTreeMap;

use rusqlite::types::Value as Lite;

use crate::inventory::Inventory;
use crate::sql::{SqlKind, SqlParams, SqlResult, SqlValue};
use crate::transport::{Command, ExecOutput};

use super::model::{check_keys, output, Component, ProductModel};
use super::SimHost;

/// OceanBase's "operation not allowed now" (OB_OP_NOT_ALLOW), as the server answers it.
pub const OP_NOT_ALLOW: u16 = 4179;
/// A statement the double does not understand.
pub const PARSE_ERROR: u16 = 1064;

/// One observer.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ObServer {
    /// The inventory host it runs on (simulation), or "".
    pub host: String,
    pub ip: String,
    pub rpc_port: u16,
    pub sql_port: u16,
    pub zone: String,
    /// `4.2.1.6_106000012023112417-...`: the version, then the build.
    pub build_version: String,
    /// Its process runs.
    pub alive: bool,
    pub start_service_time: Option<i64>,
    pub stop_time: Option<i64>,
    /// The parameter values this server has (one read behind for a fresh change).
    #[serde(default)]
    pub params: BTreeMap<String, String>,
}

/// A tenant.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ObTenant {
    pub id: i64,
    pub name: String,
    pub tenant_type: String,
    pub status: String,
    pub role: String,
    pub compatible: String,
}

/// A row of `__all_rootservice_job`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ObJob {
    pub job_id: i64,
    pub job_type: String,
    pub job_status: String,
    /// Reads of the job table left before it finishes.
    pub reads_left: u32,
    pub fails: bool,
}

/// Knobs: ways the cluster is unfit for an upgrade, or fails during one.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ObKnobs {
    /// A tenant whose status is not NORMAL.
    #[serde(default)]
    pub abnormal_tenant: Option<String>,
    /// A log stream replica out of sync.
    #[serde(default)]
    pub unsynced_log: bool,
    /// A major compaction in progress.
    #[serde(default)]
    pub merging: bool,
    /// The upgrade job fails.
    #[serde(default)]
    pub job_fails: bool,
}

/// The cluster.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ObCluster {
    /// Zone name → status (ACTIVE or INACTIVE).
    pub zones: BTreeMap<String, String>,
    pub servers: Vec<ObServer>,
    /// The cluster's parameters as set (servers catch up one read later).
    pub params: BTreeMap<String, String>,
    pub tenants: Vec<ObTenant>,
    pub jobs: Vec<ObJob>,
    pub knobs: ObKnobs,
    /// A logical clock (microseconds), for the times the views show.
    pub clock: i64,
}

/// `4.2.1.8` from a build version `4.2.1.8_1080000...` or `OceanBase_CE 4.2.1.8`.
pub fn version_of(build: &str) -> String {
    let t = build.trim();
    let t = t.rsplit(' ').next().unwrap_or(t);
    t.split('_')
        .next()
        .unwrap_or(t)
        .trim_start_matches('v')
        .to_string()
}

/// The catalog's tables, as the playbook and the checker read them. Columns are declared in
/// lower case: SQLite names a result column as declared, OceanBase (as MySQL) as the query
/// wrote it, and the stdlib writes them in lower case.
const SCHEMA: &str = r#"
CREATE TABLE oceanbase."GV$OB_PARAMETERS" (svr_ip TEXT, svr_port INT, zone TEXT, scope TEXT, tenant_id INT, name TEXT, value TEXT);
CREATE TABLE oceanbase."__all_virtual_sys_parameter_stat" (svr_ip TEXT, svr_port INT, zone TEXT, name TEXT, value TEXT);
CREATE TABLE oceanbase.DBA_OB_SERVERS (svr_ip TEXT, svr_port INT, zone TEXT, sql_port INT, with_rootserver TEXT, status TEXT, start_service_time INT, stop_time INT, build_version TEXT);
CREATE TABLE oceanbase."__all_server" (svr_ip TEXT, svr_port INT, zone TEXT, status TEXT, build_version TEXT, start_service_time INT, stop_time INT);
CREATE TABLE oceanbase.DBA_OB_ZONES (zone TEXT, status TEXT);
CREATE TABLE oceanbase."__all_zone" (zone TEXT, name TEXT, value INT, info TEXT);
CREATE TABLE oceanbase.DBA_OB_TENANTS (tenant_id INT, tenant_name TEXT, tenant_type TEXT, status TEXT, tenant_role TEXT);
CREATE TABLE oceanbase."__all_tenant" (tenant_id INT, tenant_name TEXT);
CREATE TABLE oceanbase."__all_virtual_tenant_parameter_info" (tenant_id INT, svr_ip TEXT, name TEXT, value TEXT);
CREATE TABLE oceanbase."__all_virtual_core_table" (tenant_id INT, table_name TEXT, column_name TEXT, column_value TEXT);
CREATE TABLE oceanbase."GV$OB_LOG_STAT" (tenant_id INT, ls_id INT, svr_ip TEXT, svr_port INT, role TEXT, in_sync TEXT);
CREATE TABLE oceanbase.CDB_OB_MAJOR_COMPACTION (tenant_id INT, global_broadcast_scn INT, last_scn INT, status TEXT);
CREATE TABLE oceanbase.DBA_OB_TENANT_JOBS (job_id INT, job_type TEXT, job_status TEXT, result_code INT);
CREATE TABLE oceanbase.CDB_OB_LS_REPLICA_TASKS (tenant_id INT, task_type TEXT);
CREATE TABLE oceanbase.CDB_OB_RESTORE_PROGRESS (tenant_id INT, status TEXT);
CREATE TABLE oceanbase.CDB_OB_BACKUP_JOBS (tenant_id INT, status TEXT);
CREATE TABLE oceanbase."__all_virtual_ddl_task_status" (tenant_id INT, task_id INT);
CREATE TABLE oceanbase."__all_rootservice_job" (job_id INT, job_type TEXT, job_status TEXT, tenant_id INT);
"#;

/// The data version `compatible` encodes (`(major<<32)|(minor<<16)|(patch<<8)|minor_patch`).
pub fn encode(v: &str) -> i64 {
    let p: Vec<i64> = v.split('.').map(|x| x.parse().unwrap_or(0)).collect();
    let g = |i: usize| p.get(i).copied().unwrap_or(0);
    (g(0) << 32) | (g(1) << 16) | (g(2) << 8) | g(3)
}

fn norm(sql: &str) -> String {
    sql.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .trim_end_matches(';')
        .trim()
        .to_string()
}

fn quoted(s: &str) -> Option<String> {
    let a = s.find('\'')?;
    let b = s[a + 1..].find('\'')? + a + 1;
    Some(s[a + 1..b].to_string())
}

impl ObCluster {
    /// A cluster of `servers` (one zone each unless they say), all at `version`, with a sys
    /// tenant and the user tenants `tenants`.
    pub fn new(servers: Vec<ObServer>, version: &str, tenants: &[&str]) -> ObCluster {
        let mut zones = BTreeMap::new();
        for s in &servers {
            zones.insert(s.zone.clone(), "ACTIVE".to_string());
        }
        let params: BTreeMap<String, String> = [
            ("min_observer_version", version),
            ("enable_upgrade_mode", "False"),
            ("_upgrade_stage", "NONE"),
            ("server_permanent_offline_time", "3600s"),
            ("enable_rebalance", "True"),
            ("enable_rereplication", "True"),
            ("enable_ddl", "True"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let mut all = vec![ObTenant {
            id: 1,
            name: "sys".into(),
            tenant_type: "SYS".into(),
            status: "NORMAL".into(),
            role: "PRIMARY".into(),
            compatible: version.into(),
        }];
        for (i, t) in tenants.iter().enumerate() {
            let id = 1002 + 2 * i as i64;
            all.push(ObTenant {
                id: id - 1,
                name: format!("META${id}"),
                tenant_type: "META".into(),
                status: "NORMAL".into(),
                role: "PRIMARY".into(),
                compatible: version.into(),
            });
            all.push(ObTenant {
                id,
                name: t.to_string(),
                tenant_type: "USER".into(),
                status: "NORMAL".into(),
                role: "PRIMARY".into(),
                compatible: version.into(),
            });
        }
        let mut c = ObCluster {
            zones,
            servers,
            params,
            tenants: all,
            jobs: Vec::new(),
            knobs: ObKnobs::default(),
            clock: 1_764_000_000_000_000,
        };
        for s in &mut c.servers {
            s.params = c.params.clone();
            if s.alive {
                s.start_service_time = Some(c.clock);
            }
        }
        c
    }

    fn tick(&mut self) -> i64 {
        self.clock += 1_000_000;
        self.clock
    }

    /// A server's process started (with the binary of `version`): it registers, and serves.
    pub fn server_started(&mut self, ip: &str, rpc_port: u16, build_version: &str) {
        let now = self.tick();
        let params = self.params.clone();
        if let Some(s) = self.server_mut(ip, rpc_port) {
            s.alive = true;
            s.build_version = build_version.to_string();
            s.start_service_time = Some(now);
            s.params = params;
        }
    }

    /// A server's process is gone.
    pub fn server_stopped(&mut self, ip: &str, rpc_port: u16) {
        if let Some(s) = self.server_mut(ip, rpc_port) {
            s.alive = false;
            s.start_service_time = None;
        }
    }

    fn server_mut(&mut self, ip: &str, rpc_port: u16) -> Option<&mut ObServer> {
        self.servers
            .iter_mut()
            .find(|s| s.ip == ip && s.rpc_port == rpc_port)
    }

    /// Runs one statement as the sys tenant does; an error is OceanBase's code and message.
    pub fn sql(
        &mut self,
        kind: SqlKind,
        statement: &str,
        params: &SqlParams,
    ) -> Result<SqlResult, (u16, String)> {
        let s = norm(statement);
        let upper = s.to_ascii_uppercase();
        match kind {
            SqlKind::Connect | SqlKind::Begin | SqlKind::Commit | SqlKind::Rollback => {
                return Ok(SqlResult::default())
            }
            _ => {}
        }
        if upper == "SELECT 1" {
            return Ok(one("1", SqlValue::Int(1)));
        }
        if upper == "SELECT VERSION()" {
            let v = self.params["min_observer_version"].clone();
            return Ok(one(
                "version()",
                SqlValue::Text(format!("5.7.25-OceanBase_CE-v{v}")),
            ));
        }
        if upper.starts_with("SELECT @@VERSION_COMMENT") {
            return Ok(one(
                "@@version_comment",
                SqlValue::Text(format!(
                    "OceanBase_CE {} (capstan lab double)",
                    self.params["min_observer_version"]
                )),
            ));
        }
        if upper.starts_with("ALTER SYSTEM ") {
            return self.alter_system(&s, &upper);
        }
        if upper.starts_with("SELECT ") || upper.starts_with("SHOW ") {
            return self.select(&s, params);
        }
        Err((
            PARSE_ERROR,
            format!(
                "You have an error in your SQL syntax (the OceanBase double does not run `{s}`)"
            ),
        ))
    }

    fn alter_system(&mut self, s: &str, upper: &str) -> Result<SqlResult, (u16, String)> {
        let rest = &upper["ALTER SYSTEM ".len()..];
        let not_allowed = |m: &str| Err((OP_NOT_ALLOW, format!("Operation not allowed now: {m}")));
        if let Some(set) = rest.strip_prefix("SET ") {
            let (name, _) = set
                .split_once('=')
                .ok_or((PARSE_ERROR, "SET needs name = value".to_string()))?;
            let name = s["ALTER SYSTEM SET ".len().."ALTER SYSTEM SET ".len() + name.len()]
                .trim()
                .trim_matches('`')
                .to_string();
            let value = quoted(&s[s.find('=').unwrap_or(0)..])
                .ok_or((PARSE_ERROR, "the value must be quoted".to_string()))?;
            self.set_param(&name, &value);
            return Ok(SqlResult::default());
        }
        match rest {
            "BEGIN UPGRADE" => {
                self.set_param("enable_upgrade_mode", "True");
            }
            "BEGIN ROLLING UPGRADE" => {
                if self.params["enable_upgrade_mode"] != "True" {
                    return not_allowed("begin rolling upgrade needs upgrade mode (begin upgrade)");
                }
                self.set_param("_upgrade_stage", "DBUPGRADE");
            }
            "END ROLLING UPGRADE" => {
                if self.params["_upgrade_stage"] != "DBUPGRADE" {
                    return not_allowed("not in a rolling upgrade");
                }
                let versions: std::collections::BTreeSet<String> = self
                    .servers
                    .iter()
                    .map(|s| version_of(&s.build_version))
                    .collect();
                if self.servers.iter().any(|s| !s.alive) || versions.len() != 1 {
                    return not_allowed(&format!(
                        "every server must run one version first (versions: {versions:?}, {} server(s) down)",
                        self.servers.iter().filter(|s| !s.alive).count()
                    ));
                }
                let v = versions.into_iter().next().unwrap_or_default();
                self.set_param("min_observer_version", &v);
                self.set_param("_upgrade_stage", "POSTUPGRADE");
            }
            "END UPGRADE" => {
                self.set_param("enable_upgrade_mode", "False");
                self.set_param("_upgrade_stage", "NONE");
            }
            _ => {
                if let Some(z) = rest.strip_prefix("STOP ZONE ") {
                    let z = self.zone_name(s, z)?;
                    if self.zones[&z] == "INACTIVE" {
                        return Ok(SqlResult::default());
                    }
                    let down: Vec<&String> = self
                        .zones
                        .iter()
                        .filter(|(n, st)| *n != &z && *st == "INACTIVE")
                        .map(|(n, _)| n)
                        .collect();
                    if !down.is_empty() {
                        return not_allowed(&format!(
                            "zone {} is already stopped: stopping {z} too would lose the majority",
                            down[0]
                        ));
                    }
                    let now = self.tick();
                    self.zones.insert(z.clone(), "INACTIVE".into());
                    for srv in self.servers.iter_mut().filter(|x| x.zone == z) {
                        srv.stop_time = Some(now);
                    }
                } else if let Some(z) = rest.strip_prefix("START ZONE ") {
                    let z = self.zone_name(s, z)?;
                    self.zones.insert(z.clone(), "ACTIVE".into());
                    for srv in self.servers.iter_mut().filter(|x| x.zone == z) {
                        srv.stop_time = None;
                    }
                } else if rest.starts_with("RUN UPGRADE JOB ") || rest.starts_with("RUN JOB ") {
                    let job = quoted(s).unwrap_or_default().to_ascii_uppercase();
                    let id = self.jobs.len() as i64 + 1;
                    let upgrade = job.starts_with("UPGRADE");
                    if upgrade && self.params["_upgrade_stage"] != "POSTUPGRADE" {
                        return not_allowed("the upgrade job runs after end rolling upgrade");
                    }
                    self.jobs.push(ObJob {
                        job_id: id,
                        job_type: if upgrade {
                            "UPGRADE_ALL".into()
                        } else {
                            job.clone()
                        },
                        job_status: "INPROGRESS".into(),
                        reads_left: if upgrade { 1 } else { 0 },
                        fails: upgrade && self.knobs.job_fails,
                    });
                } else {
                    return Err((
                        PARSE_ERROR,
                        format!("the OceanBase double does not run `{s}`"),
                    ));
                }
            }
        }
        Ok(SqlResult::default())
    }

    fn zone_name(&self, s: &str, upper_tail: &str) -> Result<String, (u16, String)> {
        let raw = &s[s.len() - upper_tail.len()..];
        let z = raw
            .trim()
            .trim_matches(|c| c == '\'' || c == '"' || c == '`')
            .to_string();
        if self.zones.contains_key(&z) {
            Ok(z)
        } else {
            Err((4662, format!("zone '{z}' not exist")))
        }
    }

    fn set_param(&mut self, name: &str, value: &str) {
        self.params.insert(name.to_string(), value.to_string());
        // Every live server but the last takes it now; the last one on the next read.
        let n = self.servers.len();
        for (i, s) in self.servers.iter_mut().enumerate() {
            if s.alive && i + 1 < n {
                s.params.insert(name.to_string(), value.to_string());
            }
        }
    }

    /// Jobs move on each time the job table is read: one still to wait for counts down, one
    /// with none left finishes. A successful upgrade job moves every tenant's `compatible` to
    /// the cluster version.
    fn advance_jobs(&mut self) {
        let mut upgraded = false;
        for j in self
            .jobs
            .iter_mut()
            .filter(|j| j.job_status == "INPROGRESS")
        {
            if j.reads_left > 0 {
                j.reads_left -= 1;
                continue;
            }
            j.job_status = if j.fails { "FAILED" } else { "SUCCESS" }.into();
            upgraded |= j.job_type == "UPGRADE_ALL" && !j.fails;
        }
        if upgraded {
            let v = self.params["min_observer_version"].clone();
            for t in &mut self.tenants {
                t.compatible = v.clone();
            }
        }
    }

    fn select(&mut self, s: &str, params: &SqlParams) -> Result<SqlResult, (u16, String)> {
        let lower = s.to_ascii_lowercase();
        if lower.contains("__all_rootservice_job") {
            self.advance_jobs();
        }
        let reads_params = lower.contains("ob_parameters") || lower.contains("sys_parameter_stat");
        let db = self.materialise().map_err(|e| (4016, e))?;
        let out = super::sqlstore::SqlStore::from_connection(db)
            .run(SqlKind::Query, &s.replace('`', "\""), params)
            .map_err(|e| (PARSE_ERROR, e));
        if reads_params {
            // The late server has caught up now.
            let p = self.params.clone();
            for srv in self.servers.iter_mut().filter(|x| x.alive) {
                srv.params = p.clone();
            }
        }
        out
    }

    fn materialise(&self) -> Result<rusqlite::Connection, String> {
        let db = rusqlite::Connection::open_in_memory().map_err(|e| e.to_string())?;
        db.execute_batch("ATTACH DATABASE ':memory:' AS oceanbase;")
            .map_err(|e| e.to_string())?;
        db.execute_batch(SCHEMA).map_err(|e| e.to_string())?;
        let ins = |sql: &str, v: Vec<Lite>| -> Result<(), String> {
            db.execute(sql, rusqlite::params_from_iter(v))
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        let t = |x: &str| Lite::Text(x.to_string());
        let opt = |x: Option<i64>| x.map_or(Lite::Null, Lite::Integer);
        for srv in &self.servers {
            let status = if srv.alive { "ACTIVE" } else { "INACTIVE" };
            let (svc, stop) = (
                if srv.alive {
                    opt(srv.start_service_time)
                } else {
                    Lite::Null
                },
                opt(srv.stop_time),
            );
            ins(
                "INSERT INTO DBA_OB_SERVERS VALUES (?,?,?,?,?,?,?,?,?)",
                vec![
                    t(&srv.ip),
                    Lite::Integer(srv.rpc_port.into()),
                    t(&srv.zone),
                    Lite::Integer(srv.sql_port.into()),
                    t("YES"),
                    t(status),
                    svc.clone(),
                    stop.clone(),
                    t(&srv.build_version),
                ],
            )?;
            ins(
                "INSERT INTO \"__all_server\" VALUES (?,?,?,?,?,?,?)",
                vec![
                    t(&srv.ip),
                    Lite::Integer(srv.rpc_port.into()),
                    t(&srv.zone),
                    t(status),
                    t(&srv.build_version),
                    svc,
                    stop,
                ],
            )?;
            if !srv.alive {
                continue;
            }
            for (k, v) in &srv.params {
                ins(
                    "INSERT INTO \"GV$OB_PARAMETERS\" VALUES (?,?,?,?,?,?,?)",
                    vec![
                        t(&srv.ip),
                        Lite::Integer(srv.rpc_port.into()),
                        t(&srv.zone),
                        t("CLUSTER"),
                        Lite::Null,
                        t(k),
                        t(v),
                    ],
                )?;
                ins(
                    "INSERT INTO \"__all_virtual_sys_parameter_stat\" VALUES (?,?,?,?,?)",
                    vec![
                        t(&srv.ip),
                        Lite::Integer(srv.rpc_port.into()),
                        t(&srv.zone),
                        t(k),
                        t(v),
                    ],
                )?;
            }
            for tn in &self.tenants {
                ins(
                    "INSERT INTO \"__all_virtual_tenant_parameter_info\" VALUES (?,?,?,?)",
                    vec![
                        Lite::Integer(tn.id),
                        t(&srv.ip),
                        t("compatible"),
                        t(&tn.compatible),
                    ],
                )?;
            }
        }
        for (z, st) in &self.zones {
            ins("INSERT INTO DBA_OB_ZONES VALUES (?,?)", vec![t(z), t(st)])?;
            ins(
                "INSERT INTO \"__all_zone\" VALUES (?,?,?,?)",
                vec![
                    t(z),
                    t("status"),
                    Lite::Integer(i64::from(st == "ACTIVE") + 1),
                    t(st),
                ],
            )?;
        }
        let unsynced = self.knobs.unsynced_log;
        for (i, tn) in self.tenants.iter().enumerate() {
            let status = if self.knobs.abnormal_tenant.as_deref() == Some(tn.name.as_str()) {
                "RESTORE"
            } else {
                tn.status.as_str()
            };
            ins(
                "INSERT INTO DBA_OB_TENANTS VALUES (?,?,?,?,?)",
                vec![
                    Lite::Integer(tn.id),
                    t(&tn.name),
                    t(&tn.tenant_type),
                    t(status),
                    t(&tn.role),
                ],
            )?;
            ins(
                "INSERT INTO \"__all_tenant\" VALUES (?,?)",
                vec![Lite::Integer(tn.id), t(&tn.name)],
            )?;
            let dv = encode(&tn.compatible).to_string();
            for c in ["target_data_version", "current_data_version"] {
                ins(
                    "INSERT INTO \"__all_virtual_core_table\" VALUES (?,?,?,?)",
                    vec![Lite::Integer(tn.id), t("__all_global_stat"), t(c), t(&dv)],
                )?;
            }
            let merging = self.knobs.merging && tn.tenant_type == "USER";
            ins(
                "INSERT INTO CDB_OB_MAJOR_COMPACTION VALUES (?,?,?,?)",
                vec![
                    Lite::Integer(tn.id),
                    Lite::Integer(if merging { 200 } else { 100 }),
                    Lite::Integer(100),
                    t(if merging { "COMPACTING" } else { "IDLE" }),
                ],
            )?;
            for (k, srv) in self.servers.iter().filter(|x| x.alive).enumerate() {
                let sync = if unsynced && i == self.tenants.len() - 1 && k == 0 {
                    "NO"
                } else {
                    "YES"
                };
                ins(
                    "INSERT INTO \"GV$OB_LOG_STAT\" VALUES (?,?,?,?,?,?)",
                    vec![
                        Lite::Integer(tn.id),
                        Lite::Integer(1001),
                        t(&srv.ip),
                        Lite::Integer(srv.rpc_port.into()),
                        t(if k == 0 { "LEADER" } else { "FOLLOWER" }),
                        t(sync),
                    ],
                )?;
            }
        }
        for j in &self.jobs {
            ins(
                "INSERT INTO \"__all_rootservice_job\" VALUES (?,?,?,?)",
                vec![
                    Lite::Integer(j.job_id),
                    t(&j.job_type),
                    t(&j.job_status),
                    Lite::Integer(1),
                ],
            )?;
        }
        Ok(db)
    }
}

fn one(col: &str, v: SqlValue) -> SqlResult {
    SqlResult {
        columns: vec![col.to_string()],
        rows: vec![vec![v]],
        ..Default::default()
    }
}

/// An observer on a simulated host: its inventory host and where it is installed.
#[derive(Debug, Clone)]
struct Observer {
    host: String,
    home: String,
    ip: String,
    rpc_port: u16,
    sql_port: u16,
    /// The pid this model gave its process (None: running since the start, pid from the file).
    pid: Option<u32>,
}

/// The OceanBase cluster of a scenario (`model = "oceanbase"`): the hosts of the product are
/// observers; a host's vars give `home` (the install: `bin/observer`, `run/observer.pid`),
/// `zone`, `rpc_port` (2882) and `sql_port` (2881). Settings: `version` (what runs at the
/// start), `tenants` (user tenants), `abnormal_tenant`, `unsynced_log`, `merging`, `job_fails`,
/// `no_restart` (`{ host = "version" }`: that version does not come up there). The sys
/// tenant answers on any of the observers' `address:sql_port`.
#[derive(Debug, Clone)]
pub struct ObModel {
    cluster: ObCluster,
    observers: Vec<Observer>,
    no_restart: BTreeMap<String, String>,
}

fn var_str(
    inv: &Inventory,
    host: &str,
    key: &str,
    default: Option<&str>,
) -> Result<String, String> {
    let h = inv.host(host).ok_or_else(|| format!("no host `{host}`"))?;
    match h.vars.get(key) {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
        Some(v) => Err(format!(
            "host `{host}`: var `{key}` must be a string, not {v}"
        )),
        None => default.map(str::to_string).ok_or_else(|| {
            format!(
                "host `{host}` has no var `{key}` (the oceanbase model needs `home` and `zone`)"
            )
        }),
    }
}

/// The version in an observer binary's banner (`observer (OceanBase_CE 4.2.1.8)`), with its build.
fn banner(state: &SimHost, bin: &str) -> Option<String> {
    let text = String::from_utf8_lossy(state.files.get(bin)?).into_owned();
    let at = text.find("OceanBase_CE ")?;
    let v: String = text[at + 13..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let build = text
        .find("BUILD_VERSION=")
        .map(|b| {
            text[b + 14..]
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '"')
                .collect::<String>()
        })
        .unwrap_or_else(|| format!("{v}_0"));
    (!v.is_empty()).then_some(build)
}

impl ObModel {
    pub(super) fn from_settings(
        hosts: Vec<String>,
        s: &toml::Table,
        inv: &Inventory,
    ) -> Result<Self, String> {
        check_keys(
            "oceanbase",
            s,
            &[
                "version",
                "tenants",
                "abnormal_tenant",
                "unsynced_log",
                "merging",
                "job_fails",
                "no_restart",
            ],
        )?;
        let version = s
            .get("version")
            .and_then(|v| v.as_str())
            .ok_or("the oceanbase model needs `version` (the build version running at the start, e.g. \"4.2.1.6_106000012023112417\")")?
            .to_string();
        let mut observers = Vec::new();
        let mut servers = Vec::new();
        for h in &hosts {
            let entry = inv.host(h).ok_or_else(|| format!("no host `{h}`"))?;
            let port = |k: &str, d: &str| -> Result<u16, String> {
                var_str(inv, h, k, Some(d))?
                    .parse()
                    .map_err(|_| format!("host `{h}`: `{k}` must be a port"))
            };
            let o = Observer {
                host: h.clone(),
                home: var_str(inv, h, "home", None)?
                    .trim_end_matches('/')
                    .to_string(),
                ip: var_str(inv, h, "ip", Some(&entry.address))?,
                rpc_port: port("rpc_port", "2882")?,
                sql_port: port("sql_port", "2881")?,
                pid: None,
            };
            servers.push(ObServer {
                host: h.clone(),
                ip: o.ip.clone(),
                rpc_port: o.rpc_port,
                sql_port: o.sql_port,
                zone: var_str(inv, h, "zone", None)?,
                build_version: version.clone(),
                alive: true,
                start_service_time: None,
                stop_time: None,
                params: BTreeMap::new(),
            });
            observers.push(o);
        }
        let tenants: Vec<String> = match s.get("tenants") {
            None => vec!["tpcc".into()],
            Some(v) => v
                .as_array()
                .ok_or("`tenants` must be an array of names")?
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .ok_or("`tenants` must be an array of names")
                })
                .collect::<Result<_, _>>()?,
        };
        let names: Vec<&str> = tenants.iter().map(String::as_str).collect();
        let mut cluster = ObCluster::new(servers, &version_of(&version), &names);
        for srv in &mut cluster.servers {
            srv.build_version = version.clone();
        }
        let flag = |k: &str| -> Result<bool, String> {
            match s.get(k) {
                None => Ok(false),
                Some(toml::Value::Boolean(b)) => Ok(*b),
                Some(_) => Err(format!("`{k}` must be true or false")),
            }
        };
        cluster.knobs = ObKnobs {
            abnormal_tenant: s
                .get("abnormal_tenant")
                .and_then(|v| v.as_str())
                .map(str::to_string),
            unsynced_log: flag("unsynced_log")?,
            merging: flag("merging")?,
            job_fails: flag("job_fails")?,
        };
        let mut no_restart = BTreeMap::new();
        if let Some(v) = s.get("no_restart") {
            for (h, ver) in v
                .as_table()
                .ok_or("`no_restart` must be a table of host = \"version\"")?
            {
                if !hosts.contains(h) {
                    return Err(format!("no_restart: `{h}` is not a host of this product"));
                }
                no_restart.insert(h.clone(), ver.as_str().unwrap_or_default().to_string());
            }
        }
        Ok(ObModel {
            cluster,
            observers,
            no_restart,
        })
    }

    /// The sys tenant answers on every observer: by its inventory name or `ip:sql_port`.
    fn serves(&self, server: &str) -> bool {
        self.observers
            .iter()
            .any(|o| server == o.host || server == format!("{}:{}", o.ip, o.sql_port))
    }
}

impl ProductModel for ObModel {
    fn name(&self) -> &str {
        "oceanbase"
    }

    fn exec(&mut self, host: &str, command: &Command, state: &mut SimHost) -> Option<ExecOutput> {
        let i = self.observers.iter().position(|o| o.host == host)?;
        let Command::Argv(argv) = command else {
            return None;
        };
        let o = self.observers[i].clone();
        let bin = format!("{}/bin/observer", o.home);
        let pid_file = format!("{}/run/observer.pid", o.home);
        let srv = self
            .cluster
            .servers
            .iter()
            .position(|s| s.ip == o.ip && s.rpc_port == o.rpc_port)?;
        let running_pid = || -> Option<String> {
            if !self.cluster.servers[srv].alive {
                return None;
            }
            match o.pid {
                Some(p) => Some(p.to_string()),
                None => state
                    .files
                    .get(&pid_file)
                    .map(|b| String::from_utf8_lossy(b).trim().to_string()),
            }
        };
        if let Some(pid) = super::model::process_check_pid(argv) {
            return Some(output(
                if running_pid().as_deref() == Some(pid) {
                    0
                } else {
                    1
                },
                "",
                "",
            ));
        }
        let prog = argv.first()?.as_str();
        if prog.ends_with("/bin/observer") {
            if !state.exists(prog) {
                return Some(output(127, "", &format!("sh: 1: {prog}: not found\n")));
            }
            let Some(build) = banner(state, prog) else {
                return Some(output(
                    126,
                    "",
                    &format!("sh: 1: {prog}: cannot execute binary file\n"),
                ));
            };
            if argv.get(1).map(String::as_str) == Some("-V") {
                return Some(output(
                    0,
                    &format!(
                        "observer (OceanBase_CE {})\n\nREVISION: 1-{}\nBUILD_VERSION={build}\n",
                        version_of(&build),
                        build.split('_').nth(1).unwrap_or("0")
                    ),
                    "",
                ));
            }
            if prog != bin {
                return None;
            }
            if running_pid().is_some() {
                return Some(output(0, "", "observer is already running\n"));
            }
            let pid = state.spawn(&format!("{bin} -z {}", self.cluster.servers[srv].zone));
            let fails = self
                .no_restart
                .get(host)
                .is_some_and(|v| version_of(v) == version_of(&build));
            if fails {
                // It daemonised, then died on start: the pid file stays, the process is gone.
                state.processes.remove(&pid);
                state.write(&pid_file, format!("{pid}\n").into_bytes());
                self.observers[i].pid = Some(pid);
                return Some(output(0, "", ""));
            }
            state.write(&pid_file, format!("{pid}\n").into_bytes());
            state.open_port(o.sql_port);
            state.open_port(o.rpc_port);
            self.observers[i].pid = Some(pid);
            self.cluster.server_started(&o.ip, o.rpc_port, &build);
            return Some(output(0, "", ""));
        }
        if prog == "kill" {
            let pid = argv.last()?;
            if running_pid().as_deref() == Some(pid.as_str()) {
                if let Ok(p) = pid.parse::<u32>() {
                    state.processes.remove(&p);
                }
                state.ports.remove(&o.sql_port);
                state.ports.remove(&o.rpc_port);
                self.cluster.server_stopped(&o.ip, o.rpc_port);
                return Some(output(0, "", ""));
            }
            return Some(output(1, "", &format!("kill: ({pid}) - No such process\n")));
        }
        None
    }

    fn sql(
        &mut self,
        server: &str,
        kind: SqlKind,
        statement: &str,
        params: &SqlParams,
        _hosts: &mut BTreeMap<String, SimHost>,
    ) -> Option<Result<SqlResult, (u16, String)>> {
        if !self.serves(server) {
            return None;
        }
        Some(self.cluster.sql(kind, statement, params))
    }

    fn components(&self, _hosts: &BTreeMap<String, SimHost>) -> Vec<Component> {
        self.cluster
            .servers
            .iter()
            .map(|s| Component {
                name: format!("oceanbase/{}@{}", s.zone, s.host),
                host: s.host.clone(),
                up: s.alive
                    && self
                        .cluster
                        .zones
                        .get(&s.zone)
                        .is_some_and(|z| z == "ACTIVE"),
            })
            .collect()
    }

    fn violations(&self, components: &[Component]) -> Vec<String> {
        let zones = &self.cluster.zones;
        let serving = zones
            .keys()
            .filter(|z| {
                let mine: Vec<&Component> = components
                    .iter()
                    .filter(|c| c.name.starts_with(&format!("oceanbase/{z}@")))
                    .collect();
                !mine.is_empty() && mine.iter().all(|c| c.up)
            })
            .count();
        if serving * 2 <= zones.len() {
            vec![format!(
                "oceanbase: {serving} of {} zones serve: no majority, the cluster cannot write",
                zones.len()
            )]
        } else {
            Vec::new()
        }
    }

    fn box_clone(&self) -> Box<dyn ProductModel> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> ObCluster {
        let servers = (1..=3)
            .map(|i| ObServer {
                host: format!("ob{i}"),
                ip: format!("10.0.0.{i}"),
                rpc_port: 2882,
                sql_port: 2881,
                zone: format!("zone{i}"),
                build_version: "4.2.1.6_106000012023112417".into(),
                alive: true,
                start_service_time: None,
                stop_time: None,
                params: BTreeMap::new(),
            })
            .collect();
        ObCluster::new(servers, "4.2.1.6", &["tpcc"])
    }

    fn q(c: &mut ObCluster, sql: &str) -> Vec<Vec<SqlValue>> {
        c.sql(SqlKind::Query, sql, &SqlParams::None).unwrap().rows
    }

    #[test]
    fn a_parameter_reaches_the_last_server_one_read_late() {
        let mut c = cluster();
        c.sql(
            SqlKind::Exec,
            "alter system set enable_rebalance = 'False'",
            &SqlParams::None,
        )
        .unwrap();
        let sql = "select count(*) from oceanbase.GV$OB_PARAMETERS where name = 'enable_rebalance' and value != 'False'";
        assert_eq!(q(&mut c, sql), vec![vec![SqlValue::Int(1)]]);
        assert_eq!(q(&mut c, sql), vec![vec![SqlValue::Int(0)]]);
    }

    #[test]
    fn a_second_zone_cannot_stop_and_end_rolling_upgrade_needs_one_version() {
        let mut c = cluster();
        c.sql(
            SqlKind::Exec,
            "ALTER SYSTEM STOP ZONE zone1",
            &SqlParams::None,
        )
        .unwrap();
        let e = c
            .sql(
                SqlKind::Exec,
                "ALTER SYSTEM STOP ZONE zone2",
                &SqlParams::None,
            )
            .unwrap_err();
        assert_eq!(e.0, OP_NOT_ALLOW);
        c.sql(
            SqlKind::Exec,
            "ALTER SYSTEM BEGIN UPGRADE",
            &SqlParams::None,
        )
        .unwrap();
        c.sql(
            SqlKind::Exec,
            "ALTER SYSTEM BEGIN ROLLING UPGRADE",
            &SqlParams::None,
        )
        .unwrap();
        c.server_started("10.0.0.1", 2882, "4.2.1.8_108000022024072217");
        assert!(c
            .sql(
                SqlKind::Exec,
                "ALTER SYSTEM END ROLLING UPGRADE",
                &SqlParams::None
            )
            .is_err());
        assert_eq!(encode("4.2.1.0"), 0x0000_0004_0002_0100);
        assert_eq!(version_of("4.2.1.8_108000022024072217"), "4.2.1.8");
    }
}
