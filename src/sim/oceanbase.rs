//! The `oceanbase` product model: the sys tenant's catalog and `ALTER SYSTEM` effects, and observers on the hosts.
//!
//! [`ObCluster`] is an OceanBase 4.x cluster as the upgrade sees it: zones, servers (build
//! version, status, stop and start-service times), parameters (per server in
//! `GV$OB_PARAMETERS`), tenants and their `compatible`, log streams, major compaction and
//! `__all_rootservice_job`. It answers the catalog queries through SQLite (the views are
//! materialised before each read; `oceanbase.` names resolve to the same tables) and executes the
//! `ALTER SYSTEM` statements of the upgrade with their effects. The simulation's model wraps it
//! and plays the observers from the hosts' files (`bin/observer` and its `-V`), obproxy, and the
//! effects of the release's upgrade scripts; a stopped observer refuses connections. A changed
//! parameter reaches the last server one read late, so waits for parameter sync really wait.
//! The lab's double (lab/oceanbase, Python) is a separate implementation of the same facts: the
//! parity tests compare the two.

use std::collections::{BTreeMap, BTreeSet};

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
/// `ALTER SYSTEM SET` of a parameter the server does not have (OB_ERR_SYS_CONFIG_UNKNOWN).
pub const UNKNOWN_CONFIG: u16 = 5099;
/// A parameter value of the wrong type (OB_INVALID_CONFIG).
pub const INVALID_CONFIG: u16 = 4147;
/// What a client reports when nothing listens (CR_CONN_HOST_ERROR): a stopped observer.
pub const CANNOT_CONNECT: u16 = 2003;
/// What a client reports when its connection went away mid-session (CR_SERVER_LOST).
pub const LOST_SESSION: u16 = 2013;
/// The parameters whose values read back as `True`/`False` whatever was written.
const BOOLEAN_PARAMS: &[&str] = &[
    "enable_upgrade_mode",
    "enable_rebalance",
    "enable_rereplication",
    "enable_ddl",
    "enable_major_freeze",
];

/// The zones of a locality that hold a voting (FULL or LOGONLY) replica.
pub fn paxos_zones(locality: &str) -> Vec<String> {
    locality
        .split(',')
        .filter_map(|p| {
            let (kind, zone) = p.trim().split_once('@')?;
            let k = kind.trim().to_ascii_uppercase();
            (k.starts_with('F') || k.starts_with('L')).then(|| zone.trim().to_string())
        })
        .collect()
}

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
    /// The values set for this server alone (`ALTER SYSTEM SET .. SERVER = 'ip:port'`), over
    /// the cluster's; a cluster-wide set replaces them.
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
    /// Its replicas: `FULL{1}@zone1, FULL{1}@zone2, ...` (every zone unless a scenario says).
    #[serde(default)]
    pub locality: String,
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
    /// The last serving server has not refreshed its tenants' schemas.
    #[serde(default)]
    pub schema_not_refreshed: bool,
    /// A tablet whose major compaction has not finished (`__all_virtual_tablet_compaction_info`).
    #[serde(default)]
    pub tablet_merging: bool,
    /// More user tenants, by name (e.g. `ALL_USER`, which the checker refuses).
    #[serde(default)]
    pub extra_tenants: Vec<String>,
    /// A tenant's locality instead of a replica in every zone (tenant name → locality).
    #[serde(default)]
    pub locality: BTreeMap<String, String>,
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
    /// What the release's upgrade scripts did that is specific to their version, in order
    /// (`pre:4.2.1.8`, `post:4.2.1.8`).
    #[serde(default)]
    pub special_actions: Vec<String>,
    /// The values the last server still shows (a cluster-wide change reaches it one read late).
    #[serde(default)]
    pub lagging: BTreeMap<String, String>,
    /// The views as SQLite tables, kept between statements and brought up to date before a
    /// read (never rebuilt whole for one statement: a rehearsal sends thousands).
    #[serde(skip)]
    pub catalog: Catalog,
    /// What availability reads (a server alive, its zone active) changed: how many times, and
    /// on which servers since the world last asked (`ProductModel::generation` and
    /// `take_changed_hosts`).
    #[serde(skip)]
    pub up_changes: u64,
    #[serde(skip)]
    pub up_changed: std::collections::BTreeSet<usize>,
    /// Positions in `servers` by `(ip, rpc_port)`: every start, stop and command looks its
    /// server up, and a rehearsal of ten thousand servers sends a hundred thousand. Checked on
    /// use (a cluster read back from JSON has none yet: the lookup falls back to a scan).
    #[serde(skip)]
    pub server_at: std::collections::HashMap<(String, u16), usize>,
}

/// The catalog's SQLite database and what in it is out of date. The parameter views (a row per
/// server and parameter) are brought up to date server by server; every other view, rebuilt
/// whole, only when a statement reads it after a change.
#[derive(Debug, Default)]
pub struct Catalog {
    db: std::sync::Mutex<Option<rusqlite::Connection>>,
    /// The views other than the parameters' need rebuilding.
    rest_stale: bool,
    /// Servers (by index) whose parameter rows need rebuilding.
    params_stale: std::collections::BTreeSet<usize>,
    all_params_stale: bool,
    /// Rows written into the database so far (the complexity test counts them).
    pub rows_written: u64,
}

impl Clone for Catalog {
    /// A copy (a fresh world) builds its own database on its first read.
    fn clone(&self) -> Self {
        Catalog::default()
    }
}

/// The views whose rows are a server's parameters: kept up to date per server.
const PARAM_VIEWS: [&str; 2] = ["gv$ob_parameters", "__all_virtual_sys_parameter_stat"];

/// The other views' names, lower case (as a statement's text is matched against them).
static SCHEMA_TABLES: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
    SCHEMA
        .lines()
        .filter_map(|l| l.strip_prefix("CREATE TABLE oceanbase."))
        .filter_map(|r| r.split(" (").next())
        .map(|t| t.trim_matches('"').to_ascii_lowercase())
        .filter(|t| !PARAM_VIEWS.contains(&t.as_str()))
        .collect()
});

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
/// wrote it, and the stdlib writes them in lower case. Text compares case-insensitively
/// (`materialise` declares every TEXT column `COLLATE NOCASE`), as under OceanBase's default
/// collation, utf8mb4_general_ci.
const SCHEMA: &str = r#"
CREATE TABLE oceanbase."GV$OB_PARAMETERS" (svr_ip TEXT, svr_port INT, zone TEXT, scope TEXT, tenant_id INT, name TEXT, value TEXT);
CREATE TABLE oceanbase."__all_virtual_sys_parameter_stat" (svr_ip TEXT, svr_port INT, zone TEXT, name TEXT, value TEXT);
CREATE TABLE oceanbase.DBA_OB_SERVERS (svr_ip TEXT, svr_port INT, zone TEXT, sql_port INT, with_rootserver TEXT, status TEXT, start_service_time INT, stop_time INT, build_version TEXT);
CREATE TABLE oceanbase."__all_server" (svr_ip TEXT, svr_port INT, zone TEXT, status TEXT, build_version TEXT, start_service_time INT, stop_time INT);
CREATE TABLE oceanbase.DBA_OB_ZONES (zone TEXT, status TEXT);
CREATE TABLE oceanbase."__all_zone" (zone TEXT, name TEXT, value INT, info TEXT);
CREATE TABLE oceanbase.DBA_OB_TENANTS (tenant_id INT, tenant_name TEXT, tenant_type TEXT, status TEXT, tenant_role TEXT, locality TEXT, locked TEXT);
CREATE TABLE oceanbase."__all_tenant" (tenant_id INT, tenant_name TEXT);
CREATE TABLE oceanbase."__all_virtual_tenant_info" (tenant_id INT, tenant_role TEXT);
CREATE TABLE oceanbase."__all_virtual_server_schema_info" (svr_ip TEXT, svr_port INT, tenant_id INT, refreshed_schema_version INT);
CREATE TABLE oceanbase."__all_virtual_tablet_compaction_info" (svr_ip TEXT, svr_port INT, tenant_id INT, tablet_id INT, finished_scn INT, max_received_scn INT);
CREATE TABLE oceanbase."__all_virtual_table" (tenant_id INT, table_name TEXT, compress_func_name TEXT);
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
            ("enable_major_freeze", "True"),
            ("tableapi_transport_compress_func", "none"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let locality = zones
            .keys()
            .map(|z| format!("FULL{{1}}@{z}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut all = vec![ObTenant {
            id: 1,
            name: "sys".into(),
            tenant_type: "SYS".into(),
            status: "NORMAL".into(),
            role: "PRIMARY".into(),
            compatible: version.into(),
            locality: locality.clone(),
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
                locality: locality.clone(),
            });
            all.push(ObTenant {
                id,
                name: t.to_string(),
                tenant_type: "USER".into(),
                status: "NORMAL".into(),
                role: "PRIMARY".into(),
                compatible: version.into(),
                locality: locality.clone(),
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
            special_actions: Vec::new(),
            lagging: BTreeMap::new(),
            catalog: Catalog::default(),
            up_changes: 0,
            up_changed: Default::default(),
            server_at: Default::default(),
        };
        c.server_at = c
            .servers
            .iter()
            .enumerate()
            .map(|(i, s)| ((s.ip.clone(), s.rpc_port), i))
            .collect();
        for s in &mut c.servers {
            s.params.clear();
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

    /// A server's process started (with the binary of `version`): it registers, and serves
    /// with the cluster's parameters as they are now (and its own, kept in its config file).
    pub fn server_started(&mut self, ip: &str, rpc_port: u16, build_version: &str) {
        let now = self.tick();
        if let Some(i) = self.server_index(ip, rpc_port) {
            let s = &mut self.servers[i];
            s.alive = true;
            s.build_version = build_version.to_string();
            s.start_service_time = Some(now);
            if i + 1 == self.servers.len() {
                self.lagging.clear();
            }
            self.server_changed(i);
        }
    }

    /// A server's process is gone.
    pub fn server_stopped(&mut self, ip: &str, rpc_port: u16) {
        if let Some(i) = self.server_index(ip, rpc_port) {
            let s = &mut self.servers[i];
            s.alive = false;
            s.start_service_time = None;
            self.server_changed(i);
        }
    }

    pub fn server_index(&self, ip: &str, rpc_port: u16) -> Option<usize> {
        let is = |s: &ObServer| s.ip == ip && s.rpc_port == rpc_port;
        match self.server_at.get(&(ip.to_string(), rpc_port)) {
            Some(&i) if self.servers.get(i).is_some_and(is) => Some(i),
            _ => self.servers.iter().position(is),
        }
    }

    /// Something other than one server's parameters changed: the other views are out of date.
    pub fn touch(&mut self) {
        self.catalog.rest_stale = true;
    }

    /// Server `i` started, stopped or changed: its rows everywhere are out of date.
    fn server_changed(&mut self, i: usize) {
        self.catalog.rest_stale = true;
        self.catalog.params_stale.insert(i);
        self.up_changes += 1;
        self.up_changed.insert(i);
    }

    /// Zone `z` stopped or started: every server of it serves, or not, from now.
    fn zone_changed(&mut self, z: &str) {
        self.up_changes += 1;
        let of_zone = self.servers.iter().enumerate().filter(|(_, s)| s.zone == z);
        self.up_changed.extend(of_zone.map(|(i, _)| i));
    }

    /// The value of parameter `name` that server `i` shows now.
    fn shown(&self, i: usize, name: &str) -> Option<&String> {
        let late = i + 1 == self.servers.len();
        late.then(|| self.lagging.get(name))
            .flatten()
            .or_else(|| self.servers[i].params.get(name))
            .or_else(|| self.params.get(name))
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
        if let Some(what) = upper.strip_prefix("ALTER SYSTEM ") {
            if !what.starts_with("SET ") {
                self.touch();
            }
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
            let after = s[s.find('=').unwrap_or(0) + 1..].trim_start();
            let value = if after.starts_with('\'') {
                quoted(after).ok_or((PARSE_ERROR, "an unterminated string".to_string()))?
            } else {
                after
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string()
            };
            // `SERVER = 'ip:port'` after the value: that server alone (a zone or tenant scope
            // is taken as the whole cluster here).
            let tail = upper[upper.find('=').unwrap_or(0) + 1..].trim_start();
            let tail = if let Some(quoted) = tail.strip_prefix('\'') {
                quoted.find('\'').map_or("", |e| &quoted[e + 1..])
            } else {
                tail.split_once(char::is_whitespace).map_or("", |(_, r)| r)
            };
            let scope = tail.trim();
            if let Some(srv) = scope.strip_prefix("SERVER") {
                let at = s.len() - srv.len();
                let target = s[at..]
                    .trim_start_matches([' ', '='])
                    .trim()
                    .trim_matches(|c| c == '\'' || c == '"')
                    .to_string();
                let i = target
                    .rsplit_once(':')
                    .and_then(|(ip, port)| self.server_index(ip, port.parse().ok()?))
                    .ok_or((4018, format!("server {target} not found")))?;
                return self.set_user_param(&name, &value, Some(i));
            }
            return self.set_user_param(&name, &value, None);
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
                    for t in self.tenants_now() {
                        let zs = paxos_zones(&t.locality);
                        if zs.contains(&z) {
                            let left = zs
                                .iter()
                                .filter(|x| {
                                    *x != &z
                                        && self.servers.iter().any(|s| &s.zone == *x && s.alive)
                                })
                                .count();
                            if 2 * left <= zs.len() {
                                return not_allowed(&format!(
                                    "stopping zone {z} leaves tenant {} ({}) without a majority",
                                    t.name, t.locality
                                ));
                            }
                        }
                    }
                    let now = self.tick();
                    self.zones.insert(z.clone(), "INACTIVE".into());
                    for srv in self.servers.iter_mut().filter(|x| x.zone == z) {
                        srv.stop_time = Some(now);
                    }
                    self.zone_changed(&z);
                } else if let Some(z) = rest.strip_prefix("START ZONE ") {
                    let z = self.zone_name(s, z)?;
                    self.zones.insert(z.clone(), "ACTIVE".into());
                    for srv in self.servers.iter_mut().filter(|x| x.zone == z) {
                        srv.stop_time = None;
                    }
                    self.zone_changed(&z);
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

    /// `ALTER SYSTEM SET`: an unknown name is refused (5099), a boolean is stored canonically.
    fn set_user_param(
        &mut self,
        name: &str,
        value: &str,
        server: Option<usize>,
    ) -> Result<SqlResult, (u16, String)> {
        let name = name.to_ascii_lowercase();
        if !self.params.contains_key(&name) {
            return Err((UNKNOWN_CONFIG, "System config unknown".into()));
        }
        let value = if BOOLEAN_PARAMS.contains(&name.as_str()) {
            match value.to_ascii_lowercase().as_str() {
                "true" | "1" | "on" => "True".to_string(),
                "false" | "0" | "off" => "False".to_string(),
                _ => {
                    return Err((
                        INVALID_CONFIG,
                        format!("Invalid config, value: \"{value}\", name: \"{name}\""),
                    ))
                }
            }
        } else {
            value.to_string()
        };
        match server {
            Some(i) => {
                // One server's own value: it takes it at once.
                self.servers[i].params.insert(name.clone(), value);
                if i + 1 == self.servers.len() {
                    self.lagging.remove(&name);
                }
                self.catalog.params_stale.insert(i);
            }
            None => self.set_param(&name, &value),
        }
        Ok(SqlResult::default())
    }

    fn set_param(&mut self, name: &str, value: &str) {
        // Every live server but the last takes it now; the last one on the next read.
        if let Some(last) = self.servers.len().checked_sub(1) {
            if self.servers[last].alive && !self.lagging.contains_key(name) {
                if let Some(old) = self.shown(last, name).cloned() {
                    self.lagging.insert(name.to_string(), old);
                }
            }
        }
        self.params.insert(name.to_string(), value.to_string());
        for s in &mut self.servers {
            s.params.remove(name);
        }
        self.catalog.all_params_stale = true;
        self.catalog.rest_stale = true;
    }

    /// Every live server has the parameters as set (what a wait for their sync sees at its end).
    pub fn sync_params(&mut self) {
        if !self.lagging.is_empty() {
            self.lagging.clear();
            self.catalog.params_stale.insert(self.servers.len() - 1);
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
            self.touch();
        }
        let reads_params = PARAM_VIEWS.iter().any(|v| lower.contains(v));
        // Any other name of the catalog read: those views are brought up to date too.
        let reads_rest = SCHEMA_TABLES.iter().any(|t| lower.contains(t.as_str()));
        let out = self.refresh(reads_params, reads_rest).and_then(|()| {
            let db = crate::lock(&self.catalog.db);
            let db = db.as_ref().ok_or("no catalog")?;
            super::sqlstore::run_on(db, SqlKind::Query, &s.replace('`', "\""), params)
        });
        let out = out.map_err(|e| (PARSE_ERROR, e));
        if reads_params {
            // The late server has caught up now.
            self.sync_params();
        }
        out
    }

    /// The tenants as the catalog shows them: with the knobs' extra tenants and localities.
    fn tenants_now(&self) -> Vec<ObTenant> {
        let mut all = self.tenants.clone();
        let mut id = all.iter().map(|t| t.id).max().unwrap_or(1000) + 2;
        for name in &self.knobs.extra_tenants {
            let mut t = all[0].clone();
            t.id = id;
            t.name = name.clone();
            t.tenant_type = "USER".into();
            all.push(t);
            id += 2;
        }
        for t in &mut all {
            if let Some(l) = self.knobs.locality.get(&t.name) {
                t.locality = l.clone();
            }
        }
        all
    }

    /// Brings the catalog up to date for a statement that reads the parameter views (`params`)
    /// and any other view (`rest`): parameter rows of the servers that changed, the other views
    /// whole when anything changed since they were last read.
    fn refresh(&mut self, params: bool, rest: bool) -> Result<(), String> {
        let fresh = self
            .catalog
            .db
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let db = match fresh {
            Some(db) => db,
            None => {
                self.catalog.rest_stale = true;
                self.catalog.all_params_stale = true;
                catalog_db()?
            }
        };
        let r = self.refresh_on(&db, params, rest);
        *self.catalog.db.get_mut().unwrap_or_else(|e| e.into_inner()) = Some(db);
        r
    }

    fn refresh_on(
        &mut self,
        db: &rusqlite::Connection,
        params: bool,
        rest: bool,
    ) -> Result<(), String> {
        let params =
            params && (self.catalog.all_params_stale || !self.catalog.params_stale.is_empty());
        let rest = rest && self.catalog.rest_stale;
        if !params && !rest {
            return Ok(());
        }
        let e = |e: rusqlite::Error| e.to_string();
        db.execute_batch("BEGIN").map_err(e)?;
        let mut written = 0;
        if params {
            let servers: Vec<usize> = if self.catalog.all_params_stale {
                for v in ["GV$OB_PARAMETERS", "__all_virtual_sys_parameter_stat"] {
                    db.execute(&format!("DELETE FROM oceanbase.\"{v}\""), [])
                        .map_err(e)?;
                }
                (0..self.servers.len()).collect()
            } else {
                let stale: Vec<usize> = self.catalog.params_stale.iter().copied().collect();
                for &i in &stale {
                    let s = &self.servers[i];
                    for v in ["GV$OB_PARAMETERS", "__all_virtual_sys_parameter_stat"] {
                        db.prepare_cached(&format!(
                            "DELETE FROM oceanbase.\"{v}\" WHERE svr_ip = ? AND svr_port = ?"
                        ))
                        .and_then(|mut st| st.execute(rusqlite::params![s.ip, s.rpc_port]))
                        .map_err(e)?;
                    }
                }
                stale
            };
            for i in servers {
                written += self.write_params(db, i)?;
            }
            self.catalog.all_params_stale = false;
            self.catalog.params_stale.clear();
        }
        if rest {
            for t in SCHEMA_TABLES.iter() {
                db.execute(&format!("DELETE FROM oceanbase.\"{t}\""), [])
                    .map_err(e)?;
            }
            written += self.write_rest(db)?;
            self.catalog.rest_stale = false;
        }
        db.execute_batch("COMMIT").map_err(e)?;
        self.catalog.rows_written += written;
        Ok(())
    }

    /// The parameter rows of server `i` (none while it is down); how many were written.
    fn write_params(&self, db: &rusqlite::Connection, i: usize) -> Result<u64, String> {
        let srv = &self.servers[i];
        if !srv.alive {
            return Ok(0);
        }
        let mut a = db
            .prepare_cached("INSERT INTO \"GV$OB_PARAMETERS\" VALUES (?,?,?,'CLUSTER',NULL,?,?)")
            .map_err(|e| e.to_string())?;
        let mut b = db
            .prepare_cached("INSERT INTO \"__all_virtual_sys_parameter_stat\" VALUES (?,?,?,?,?)")
            .map_err(|e| e.to_string())?;
        let mut n = 0;
        for k in self.params.keys() {
            let v = self.shown(i, k).cloned().unwrap_or_default();
            let row = rusqlite::params![srv.ip, srv.rpc_port, srv.zone, k, v];
            a.execute(row).map_err(|e| e.to_string())?;
            b.execute(row).map_err(|e| e.to_string())?;
            n += 2;
        }
        Ok(n)
    }

    /// Every view but the parameters', from the cluster's state; how many rows were written.
    fn write_rest(&self, db: &rusqlite::Connection) -> Result<u64, String> {
        let written = std::cell::Cell::new(0u64);
        let ins = |sql: &str, v: Vec<Lite>| -> Result<(), String> {
            written.set(written.get() + 1);
            db.prepare_cached(sql)
                .and_then(|mut st| st.execute(rusqlite::params_from_iter(v)))
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
            for tn in &self.tenants_now() {
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
        let tenants = self.tenants_now();
        let serving: Vec<&ObServer> = self.servers.iter().filter(|x| x.alive).collect();
        for (k, srv) in serving.iter().enumerate() {
            let stale = self.knobs.schema_not_refreshed && k + 1 == serving.len();
            for tn in &tenants {
                ins(
                    "INSERT INTO \"__all_virtual_server_schema_info\" VALUES (?,?,?,?)",
                    vec![
                        t(&srv.ip),
                        Lite::Integer(srv.rpc_port.into()),
                        Lite::Integer(tn.id),
                        Lite::Integer(if stale { 1 } else { 1_717_171_712 }),
                    ],
                )?;
            }
            ins(
                "INSERT INTO \"__all_virtual_tablet_compaction_info\" VALUES (?,?,?,?,?,?)",
                vec![
                    t(&srv.ip),
                    Lite::Integer(srv.rpc_port.into()),
                    Lite::Integer(1002),
                    Lite::Integer(200_001),
                    Lite::Integer(if self.knobs.tablet_merging { 90 } else { 120 }),
                    Lite::Integer(120),
                ],
            )?;
        }
        for (i, tn) in tenants.iter().enumerate() {
            let status = if self.knobs.abnormal_tenant.as_deref() == Some(tn.name.as_str()) {
                "RESTORE"
            } else {
                tn.status.as_str()
            };
            ins(
                "INSERT INTO DBA_OB_TENANTS VALUES (?,?,?,?,?,?,?)",
                vec![
                    Lite::Integer(tn.id),
                    t(&tn.name),
                    t(&tn.tenant_type),
                    t(status),
                    t(&tn.role),
                    t(&tn.locality),
                    t("NO"),
                ],
            )?;
            ins(
                "INSERT INTO \"__all_virtual_tenant_info\" VALUES (?,?)",
                vec![Lite::Integer(tn.id), t(&tn.role)],
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
                let sync = if unsynced && i == tenants.len() - 1 && k == 0 {
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
        Ok(written.get())
    }
}

/// An empty catalog: the views' tables (text compared without case), their indexes, and the
/// MySQL functions the statements use.
fn catalog_db() -> Result<rusqlite::Connection, String> {
    use rusqlite::functions::FunctionFlags;
    let db = rusqlite::Connection::open_in_memory().map_err(|e| e.to_string())?;
    db.execute_batch("ATTACH DATABASE ':memory:' AS oceanbase;")
        .map_err(|e| e.to_string())?;
    db.execute_batch(&SCHEMA.replace(" TEXT", " TEXT COLLATE NOCASE"))
        .map_err(|e| e.to_string())?;
    // A server's parameter rows are replaced on their own, and read by name.
    db.execute_batch(
        "CREATE INDEX oceanbase.p_srv ON \"GV$OB_PARAMETERS\" (svr_ip, svr_port);
         CREATE INDEX oceanbase.p_name ON \"GV$OB_PARAMETERS\" (name);
         CREATE INDEX oceanbase.s_srv ON \"__all_virtual_sys_parameter_stat\" (svr_ip, svr_port);
         CREATE INDEX oceanbase.s_name ON \"__all_virtual_sys_parameter_stat\" (name);",
    )
    .map_err(|e| e.to_string())?;
    let pure = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    // MySQL's substring_index(s, delim, n): the part before the n-th delimiter.
    db.create_scalar_function("substring_index", 3, pure, |ctx| {
        let s: Option<String> = ctx.get(0)?;
        let d: String = ctx.get(1)?;
        let n: i64 = ctx.get(2)?;
        Ok(s.map(|s| {
            let parts: Vec<&str> = s.split(d.as_str()).collect();
            let k = (n.unsigned_abs() as usize).min(parts.len());
            if n >= 0 {
                parts[..k].join(&d)
            } else {
                parts[parts.len() - k..].join(&d)
            }
        }))
    })
    .map_err(|e| e.to_string())?;
    db.create_scalar_function("if", 3, pure, |ctx| {
        let c: Option<i64> = ctx.get(0)?;
        let pick = if c.unwrap_or(0) != 0 { 1 } else { 2 };
        ctx.get::<Lite>(pick)
    })
    .map_err(|e| e.to_string())?;
    Ok(db)
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
    /// Positions in `observers` by host and by `ip:sql_port` (every command on a host and
    /// every statement to a server looks its observer up).
    observer_of: std::collections::HashMap<String, usize>,
    observer_at: std::collections::HashMap<String, usize>,
    no_restart: BTreeMap<String, String>,
    /// The inventory host that runs obproxy: its sessions reach any observer that serves.
    obproxy: Option<String>,
    /// How many times each observer (by host) has started: a client session opened before its
    /// latest start is broken.
    starts: BTreeMap<String, u32>,
    /// Each client session's server (for obproxy's, the observer behind it) and that
    /// server's start count when the session last used it.
    sessions: BTreeMap<u64, (String, u32)>,
    /// Inventory host → its server's index in `cluster.servers` (one server per host).
    by_host: std::collections::HashMap<String, usize>,
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
                "schema_not_refreshed",
                "tablet_merging",
                "extra_tenants",
                "locality",
                "obproxy",
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
            schema_not_refreshed: flag("schema_not_refreshed")?,
            tablet_merging: flag("tablet_merging")?,
            extra_tenants: match s.get("extra_tenants") {
                None => Vec::new(),
                Some(v) => v
                    .as_array()
                    .and_then(|a| {
                        a.iter()
                            .map(|x| x.as_str().map(str::to_string))
                            .collect::<Option<Vec<_>>>()
                    })
                    .ok_or("`extra_tenants` must be an array of names")?,
            },
            locality: match s.get("locality") {
                None => BTreeMap::new(),
                Some(v) => v
                    .as_table()
                    .and_then(|t| {
                        t.iter()
                            .map(|(k, x)| x.as_str().map(|x| (k.clone(), x.to_string())))
                            .collect::<Option<BTreeMap<_, _>>>()
                    })
                    .ok_or("`locality` must be a table of tenant = \"FULL{1}@zone1, ...\"")?,
            },
        };
        let obproxy = match s.get("obproxy") {
            None => None,
            Some(v) => {
                let h = v
                    .as_str()
                    .ok_or("`obproxy` must be the name of the host that runs obproxy")?;
                inv.host(h)
                    .ok_or_else(|| format!("obproxy: no host `{h}` in the inventory"))?;
                Some(h.to_string())
            }
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
        let by_host = cluster
            .servers
            .iter()
            .enumerate()
            .map(|(i, s)| (s.host.clone(), i))
            .collect();
        // The first observer of each name, as a scan would find it.
        let mut observer_of = std::collections::HashMap::new();
        let mut observer_at = std::collections::HashMap::new();
        for (i, o) in observers.iter().enumerate() {
            observer_of.entry(o.host.clone()).or_insert(i);
            observer_at
                .entry(format!("{}:{}", o.ip, o.sql_port))
                .or_insert(i);
        }
        Ok(ObModel {
            observer_of,
            observer_at,
            cluster,
            observers,
            no_restart,
            obproxy,
            starts: BTreeMap::new(),
            sessions: BTreeMap::new(),
            by_host,
        })
    }

    /// Server `i` as a component: up while it is alive and its zone active.
    fn component(&self, i: usize) -> Component {
        let s = &self.cluster.servers[i];
        Component {
            name: format!("oceanbase/{}@{}", s.zone, s.host),
            host: s.host.clone(),
            up: s.alive
                && self
                    .cluster
                    .zones
                    .get(&s.zone)
                    .is_some_and(|z| z == "ACTIVE"),
        }
    }

    /// Whether the observer on inventory host `host` runs.
    fn runs(&self, host: &str) -> bool {
        self.observer_of.get(host).is_some_and(|&i| {
            let o = &self.observers[i];
            self.cluster
                .server_index(&o.ip, o.rpc_port)
                .is_some_and(|s| self.cluster.servers[s].alive)
        })
    }

    /// The observer a statement to `server` (an inventory name or `ip:sql_port`) lands on:
    /// `Some(Some(host))`, or `Some(None)` when nothing answers there (the observer is down,
    /// or behind obproxy none runs); `None` when the server is not this cluster's. obproxy keeps
    /// a session on the observer it chose while that one runs, else takes the first that runs.
    fn backend(&self, server: &str, session: u64) -> Option<Option<String>> {
        if self.obproxy.as_deref() == Some(server) {
            if let Some((h, _)) = self.sessions.get(&session) {
                if self.runs(h) {
                    return Some(Some(h.clone()));
                }
            }
            return Some(
                self.observers
                    .iter()
                    .find(|o| self.runs(&o.host))
                    .map(|o| o.host.clone()),
            );
        }
        // The first observer named so, by host or by address.
        let i = [self.observer_of.get(server), self.observer_at.get(server)]
            .into_iter()
            .flatten()
            .min()?;
        let o = &self.observers[*i];
        Some(self.runs(&o.host).then(|| o.host.clone()))
    }
}

/// The upgrade scripts a release ships in `etc/`, which the model plays when a host runs them.
const SCRIPTS: &[&str] = &[
    "upgrade_checker.py",
    "upgrade_pre.py",
    "upgrade_health_checker.py",
    "upgrade_post.py",
];

impl ObModel {
    /// A release's upgrade script run on a host (`python3 REL/etc/NAME -h .. -l LOG [-z ZONE]`):
    /// its effect on the cluster (PRODUCTS.md §4.3), its log written where `-l` says, exit 1
    /// with the script's error on failure. The script's version is its release's observer's.
    fn run_script(&mut self, state: &mut SimHost, path: &str, argv: &[String]) -> ExecOutput {
        if !state.exists(path) {
            return output(
                2,
                "",
                &format!(
                    "python3: can't open file '{path}': [Errno 2] No such file or directory\n"
                ),
            );
        }
        let name = path.rsplit('/').next().unwrap_or_default().to_string();
        let release = &path[..path.len() - name.len() - "/etc/".len()];
        let version = banner(state, &format!("{release}/bin/observer"))
            .map(|b| version_of(&b))
            .unwrap_or_default();
        let opt = |flag: &str| {
            argv.iter()
                .position(|a| a == flag)
                .and_then(|i| argv.get(i + 1))
                .cloned()
        };
        let mut lines = vec![format!(
            "parameters from cmd: host=\"{}\", port={}, user=\"{}\", password=\"******\"",
            opt("-h").unwrap_or_default(),
            opt("-P").unwrap_or_default(),
            opt("-u").unwrap_or_default()
        )];
        let outcome = match name.as_str() {
            "upgrade_checker.py" => self.script_checker(),
            "upgrade_pre.py" => self.script_pre(&version),
            "upgrade_health_checker.py" => self.script_health(opt("-z").as_deref()),
            _ => self.script_post(&version),
        };
        let code = match &outcome {
            Ok(()) => {
                lines.push(format!("{name} {version} finished"));
                0
            }
            Err(e) => {
                lines.push(format!("Traceback: {e}"));
                1
            }
        };
        let text: String = lines
            .iter()
            .map(|l| {
                let level = if l.starts_with("Traceback") {
                    "ERROR"
                } else {
                    "INFO"
                };
                format!("[2026-01-01 00:00:00] {level} {name}:1 {l}\n")
            })
            .collect();
        if let Some(log) = opt("-l") {
            state.write(&log, text.clone().into_bytes());
        }
        output(code, &text, "")
    }

    fn exec_sql(&mut self, sql: &str) -> Result<(), String> {
        self.cluster
            .sql(SqlKind::Exec, sql, &SqlParams::None)
            .map(|_| ())
            .map_err(|(code, m)| format!("mysql connector error {code}: {m}, sql: {sql}"))
    }

    fn script_checker(&mut self) -> Result<(), String> {
        let c = &self.cluster;
        let mut fail = Vec::new();
        let mov = c.params["min_observer_version"].clone();
        if encode(&mov) < encode("4.1.0.0") {
            fail.push("last barrier cluster version is 4.1.0.0".to_string());
        }
        if c.knobs.unsynced_log {
            fail.push("replicas unsync, please check".into());
        }
        if c.knobs.merging {
            fail.push("tenant is merging, please check".into());
        }
        if c.knobs.tablet_merging && encode(&mov) < encode("4.2.0.0") {
            fail.push("tablet is merging, please check".into());
        }
        if c.knobs.abnormal_tenant.is_some() {
            fail.push("has abnormal tenant, should stop".into());
        }
        if c.servers.iter().any(|s| !s.alive) {
            fail.push("observer not available , please check".into());
        }
        if c.knobs.schema_not_refreshed {
            fail.push("schema not available, please check".into());
        }
        let versions: std::collections::BTreeSet<String> = c
            .servers
            .iter()
            .map(|s| version_of(&s.build_version))
            .collect();
        if versions.len() != 1 {
            fail.push("servers build_version not match".into());
        }
        if c.tenants_now().iter().any(|t| {
            ["all", "all_user", "all_meta"].contains(&t.name.to_ascii_lowercase().as_str())
        }) {
            fail.push("a tenant named all/all_user/all_meta (case insensitive) cannot exist in the cluster, please rename the tenant".into());
        }
        if !fail.is_empty() {
            let list: Vec<String> = fail.iter().map(|f| format!("[{f}] ")).collect();
            return Err(format!(
                "upgrade checker failed with {} reasons: {}",
                fail.len(),
                list.join(", ")
            ));
        }
        self.exec_sql("alter system set server_permanent_offline_time = '72h'")
    }

    fn script_pre(&mut self, version: &str) -> Result<(), String> {
        self.exec_sql("alter system begin upgrade")?;
        self.exec_sql("alter system begin rolling upgrade")?;
        self.cluster.special_actions.push(format!("pre:{version}"));
        if self.cluster.knobs.merging {
            return Err("result not expected: a major compaction is running".into());
        }
        Ok(())
    }

    fn script_health(&mut self, zone: Option<&str>) -> Result<(), String> {
        if let Some(z) = zone {
            if !self.cluster.zones.contains_key(z) {
                return Err(format!("zone {z} not exist"));
            }
        }
        let down: Vec<String> = self
            .cluster
            .servers
            .iter()
            .filter(|s| zone.is_none_or(|z| s.zone == z) && !s.alive)
            .map(|s| format!("{}:{}", s.ip, s.rpc_port))
            .collect();
        if !down.is_empty() {
            return Err(format!(
                "result not expected, sql: 'select count(*) from DBA_OB_SERVERS ..', expected: '0', current: '{}' ({})",
                down.len(),
                down.join(", ")
            ));
        }
        Ok(())
    }

    fn script_post(&mut self, version: &str) -> Result<(), String> {
        self.script_health(None)?;
        self.exec_sql("alter system end rolling upgrade")?;
        // The script waits until every server has the new min_observer_version.
        self.cluster.sync_params();
        let id = self.cluster.jobs.len() as i64 + 1;
        let fails = self.cluster.knobs.job_fails;
        self.cluster.jobs.push(ObJob {
            job_id: id,
            job_type: "UPGRADE_ALL".into(),
            job_status: if fails { "FAILED" } else { "SUCCESS" }.into(),
            reads_left: 0,
            fails,
        });
        if fails {
            return Err("run job UPGRADE_ALL failed".into());
        }
        let v = self.cluster.params["min_observer_version"].clone();
        for t in &mut self.cluster.tenants {
            t.compatible = v.clone();
        }
        self.cluster.special_actions.push(format!("post:{version}"));
        self.cluster.touch();
        self.cluster.jobs.push(ObJob {
            job_id: id + 1,
            job_type: "ROOT_INSPECTION".into(),
            job_status: "SUCCESS".into(),
            reads_left: 0,
            fails: false,
        });
        self.exec_sql("alter system end upgrade")
    }
}

impl ProductModel for ObModel {
    fn name(&self) -> &str {
        "oceanbase"
    }

    fn exec(&mut self, host: &str, command: &Command, state: &mut SimHost) -> Option<ExecOutput> {
        let i = *self.observer_of.get(host)?;
        let Command::Argv(argv) = command else {
            return None;
        };
        let o = self.observers[i].clone();
        let bin = format!("{}/bin/observer", o.home);
        let pid_file = format!("{}/run/observer.pid", o.home);
        let srv = self.cluster.server_index(&o.ip, o.rpc_port)?;
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
        if let Some(script) = argv
            .get(1)
            .filter(|a| SCRIPTS.iter().any(|n| a.ends_with(&format!("/etc/{n}"))))
        {
            let script = script.clone();
            return Some(self.run_script(state, &script, argv));
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
            *self.starts.entry(host.to_string()).or_default() += 1;
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
        session: u64,
        kind: SqlKind,
        statement: &str,
        params: &SqlParams,
        _hosts: &mut BTreeMap<String, SimHost>,
    ) -> Option<Result<SqlResult, (u16, String)>> {
        let Some(host) = self.backend(server, session)? else {
            // A stopped observer answers nothing: the client cannot connect.
            self.sessions.remove(&session);
            return Some(Err((
                CANNOT_CONNECT,
                "Connection refused (os error 111)".into(),
            )));
        };
        // A session whose server restarted (or, through obproxy, whose observer went away)
        // since its last statement is broken: the statement fails, the next one reconnects.
        let now = self.starts.get(&host).copied().unwrap_or(0);
        let broken = self.sessions.get(&session).is_some_and(|(h, n)| {
            if self.obproxy.as_deref() == Some(server) {
                h != &host || *n != now
            } else {
                *n != now
            }
        });
        if broken {
            self.sessions.remove(&session);
            return Some(Err((LOST_SESSION, "server disconnected".into())));
        }
        self.sessions.insert(session, (host, now));
        Some(self.cluster.sql(kind, statement, params))
    }

    fn components(&self, _hosts: &BTreeMap<String, SimHost>) -> Vec<Component> {
        (0..self.cluster.servers.len())
            .map(|i| self.component(i))
            .collect()
    }

    fn components_on(&self, host: &str, _hosts: &BTreeMap<String, SimHost>) -> Vec<Component> {
        self.by_host
            .get(host)
            .map(|&i| vec![self.component(i)])
            .unwrap_or_default()
    }

    fn generation(&self) -> Option<u64> {
        Some(self.cluster.up_changes)
    }

    fn take_changed_hosts(&mut self) -> Option<Vec<String>> {
        let changed = std::mem::take(&mut self.cluster.up_changed);
        Some(
            changed
                .into_iter()
                .map(|i| self.cluster.servers[i].host.clone())
                .collect(),
        )
    }

    fn violations(&self, components: &[Component], down: &BTreeSet<usize>) -> Vec<String> {
        let zones = &self.cluster.zones;
        // A zone serves while it has servers and none of them is down (`oceanbase/ZONE@HOST`).
        fn zone_of(c: &Component) -> Option<&str> {
            c.name
                .strip_prefix("oceanbase/")
                .and_then(|r| r.rsplit_once('@'))
                .map(|(z, _)| z)
        }
        // Names borrowed, not copied: a whole zone is down while it upgrades.
        let down_zones: std::collections::HashSet<&str> = down
            .iter()
            .filter_map(|&i| zone_of(&components[i]))
            .collect();
        let serving = zones
            .keys()
            .filter(|z| {
                !down_zones.contains(z.as_str())
                    && self.cluster.servers.iter().any(|s| &s.zone == *z)
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
        cluster_of(3)
    }

    /// `n` observers over three zones.
    fn cluster_of(n: usize) -> ObCluster {
        let servers = (1..=n)
            .map(|i| ObServer {
                host: format!("ob{i}"),
                ip: format!("10.0.{}.{}", i / 250, i % 250),
                rpc_port: 2882,
                sql_port: 2881,
                zone: format!("zone{}", (i - 1) % 3 + 1),
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

    /// The work of one statement does not grow with the cluster: the playbook's per-server
    /// statements (a parameter set on one server, read back on it, a server restarted) write
    /// the same number of catalog rows at 30 and at 600 observers. (Rebuilding the catalog for
    /// each statement made a 1,000-observer rehearsal quadratic: 122 s.)
    /// What availability reads changes on the servers a statement touches and no other: the
    /// world re-reads those hosts alone, and nothing after a read or a parameter change that
    /// stops no server.
    #[test]
    fn a_zone_stop_marks_its_servers_and_a_read_marks_none() {
        let mut c = cluster_of(30);
        c.up_changed.clear();
        let before = c.up_changes;
        q(&mut c, "select zone, status from oceanbase.DBA_OB_ZONES");
        c.sql(
            SqlKind::Exec,
            "alter system set enable_rebalance = 'False'",
            &SqlParams::None,
        )
        .unwrap();
        assert_eq!((c.up_changes, c.up_changed.len()), (before, 0));
        c.sql(
            SqlKind::Exec,
            "alter system stop zone 'zone2'",
            &SqlParams::None,
        )
        .unwrap();
        assert!(c.up_changes > before);
        let marked: Vec<&str> = c
            .up_changed
            .iter()
            .map(|&i| c.servers[i].zone.as_str())
            .collect();
        assert_eq!(marked, vec!["zone2"; 10], "only zone2's servers");
        let (ip, port) = (c.servers[0].ip.clone(), c.servers[0].rpc_port);
        c.up_changed.clear();
        c.server_stopped(&ip, port);
        assert_eq!(c.up_changed.iter().copied().collect::<Vec<_>>(), [0]);
    }

    #[test]
    fn a_per_server_statement_costs_the_same_at_any_cluster_size() {
        let per_server = |n: usize| {
            let mut c = cluster_of(n);
            let check = "select count(*) as cnt from oceanbase.GV$OB_PARAMETERS where name = ? and svr_ip = ? and svr_port = ? and value != ?";
            q(&mut c, "select zone, status from oceanbase.DBA_OB_ZONES");
            let before = c.catalog.rows_written;
            for i in 0..n {
                let (ip, port) = (c.servers[i].ip.clone(), c.servers[i].rpc_port);
                c.sql(
                    SqlKind::Exec,
                    &format!("alter system set enable_rebalance = 'False' server '{ip}:{port}'"),
                    &SqlParams::None,
                )
                .unwrap();
                let args = SqlParams::Positional(vec![
                    SqlValue::Text("enable_rebalance".into()),
                    SqlValue::Text(ip.clone()),
                    SqlValue::Int(port.into()),
                    SqlValue::Text("False".into()),
                ]);
                let r = c.sql(SqlKind::Query, check, &args).unwrap();
                assert_eq!(r.rows, vec![vec![SqlValue::Int(0)]], "server {ip}");
                c.server_stopped(&ip, port);
                c.server_started(&ip, port, "4.2.1.8_108000022024072217");
                c.sql(SqlKind::Query, check, &args).unwrap();
            }
            // Only the servers touched were written; the other servers' rows were left alone.
            let other = "select count(*) from oceanbase.GV$OB_PARAMETERS where name = 'enable_rebalance' and value = 'True'";
            assert_eq!(q(&mut c, other), vec![vec![SqlValue::Int(0)]]);
            (c.catalog.rows_written - before) as f64 / n as f64
        };
        let (small, large) = (per_server(30), per_server(600));
        assert!(small > 0.0, "the statements wrote nothing");
        // Equal but for one server's rows spread over the cluster (rebuilding per statement
        // would make the larger cluster's figure 20 times the smaller's).
        assert!(
            (large - small).abs() < 1.0,
            "rows written per server: {small} at 30, {large} at 600"
        );
    }

    #[test]
    fn a_server_scoped_set_changes_that_server_alone() {
        let mut c = cluster();
        c.sql(
            SqlKind::Exec,
            "alter system set enable_rebalance = 'False' server = '10.0.0.2:2882'",
            &SqlParams::None,
        )
        .unwrap();
        let rows = q(
            &mut c,
            "select svr_ip, value from oceanbase.GV$OB_PARAMETERS where name = 'enable_rebalance' order by svr_ip",
        );
        let shown: Vec<String> = rows.iter().map(|r| format!("{:?}", r[1])).collect();
        assert_eq!(
            shown,
            ["Text(\"True\")", "Text(\"False\")", "Text(\"True\")"]
        );
        let e = c
            .sql(
                SqlKind::Exec,
                "alter system set enable_rebalance = 'False' server '10.9.9.9:2882'",
                &SqlParams::None,
            )
            .unwrap_err();
        assert_eq!(e.0, 4018, "{e:?}");
        // A cluster-wide set replaces the server's own value (the last server one read late).
        c.sql(
            SqlKind::Exec,
            "alter system set enable_rebalance = 'True'",
            &SqlParams::None,
        )
        .unwrap();
        q(&mut c, "select count(*) from oceanbase.GV$OB_PARAMETERS");
        let left = "select count(*) from oceanbase.GV$OB_PARAMETERS where name = 'enable_rebalance' and value != 'True'";
        assert_eq!(q(&mut c, left), vec![vec![SqlValue::Int(0)]]);
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

    #[test]
    fn parameters_are_known_and_canonical_and_text_compares_without_case() {
        let mut c = cluster();
        let set = |c: &mut ObCluster, sql: &str| c.sql(SqlKind::Exec, sql, &SqlParams::None);
        assert_eq!(
            set(&mut c, "alter system set no_such_thing = 'x'")
                .unwrap_err()
                .0,
            UNKNOWN_CONFIG
        );
        assert_eq!(
            set(&mut c, "alter system set enable_ddl = 'maybe'")
                .unwrap_err()
                .0,
            INVALID_CONFIG
        );
        set(&mut c, "alter system set enable_ddl = 0").unwrap();
        assert_eq!(c.params["enable_ddl"], "False");
        set(&mut c, "alter system set `enable_ddl` = 'true'").unwrap();
        assert_eq!(c.params["enable_ddl"], "True");
        let n = "select count(*) from oceanbase.__all_server where status != 'active'";
        assert_eq!(q(&mut c, n), vec![vec![SqlValue::Int(0)]]);
        let v =
            "select distinct substring_index(build_version, '_', 1) from oceanbase.__all_server";
        assert_eq!(q(&mut c, v), vec![vec![SqlValue::Text("4.2.1.6".into())]]);
    }

    #[test]
    fn a_zone_stop_that_leaves_a_tenant_without_a_majority_is_refused() {
        let mut c = cluster();
        c.knobs
            .locality
            .insert("tpcc".into(), "FULL{1}@zone1, FULL{1}@zone2".into());
        let e = c
            .sql(
                SqlKind::Exec,
                "ALTER SYSTEM STOP ZONE zone1",
                &SqlParams::None,
            )
            .unwrap_err();
        assert!(e.1.contains("tenant tpcc"), "{}", e.1);
        c.sql(
            SqlKind::Exec,
            "ALTER SYSTEM STOP ZONE zone3",
            &SqlParams::None,
        )
        .unwrap();
        assert_eq!(
            paxos_zones("FULL{1}@z1, READONLY{1}@z2, LOGONLY{1}@z3"),
            ["z1", "z3"]
        );
    }
}
