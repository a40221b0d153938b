//! The `openmldb` product model: start.sh, the binary's roles, the ops tool and the cluster metadata, as the lab double behaves.
//!
//! It answers the same commands as `lab/openmldb/` (the double) with the same outputs, and keeps
//! the state ZooKeeper holds for the real product: tables and their partitions' replicas
//! (leader, alive), ops, `auto_failover`, and which components run. The behaviours are the
//! double's (lab/openmldb/README.md): start.sh and the ops tool exit 0 when they fail; a tablet
//! that leaves takes its replicas offline (with auto_failover on its leaders fail over, and its
//! replicas are recovered when it comes back; with it off they stay offline until
//! `recoverdata`); pre-upgrade moves a tablet's leaders away (single-replica tables get a
//! temporary replica unless `--allow_single_replica`), post-upgrade moves them back and deletes
//! the whole statfile. Ops complete at once here (the double walks them through kInited and
//! kDoing in under a second).

use std::collections::{BTreeMap, BTreeSet};

use crate::inventory::Inventory;
use crate::transport::{Command, ExecOutput};

use super::model::{check_keys, output, settings_str, Component, ProductModel};
use super::SimHost;

const ROLES: &[&str] = &["nameserver", "tablet", "apiserver", "taskmanager"];

#[derive(Debug, Clone)]
struct Node {
    host: String,
    role: &'static str,
    root: String,
    endpoint: String,
    port: u16,
}

#[derive(Debug, Clone)]
struct Replica {
    ep: String,
    leader: bool,
    /// The nameserver's `is_alive` flag.
    alive: bool,
    /// The partition's state on its tablet when not `kTableNormal` (e.g. `kTableUndefined`).
    state: Option<String>,
    /// Held back by the `stuck` setting: `recoverdata` cannot bring it back.
    stuck: bool,
}

#[derive(Debug, Clone)]
struct Partition {
    pid: usize,
    replicas: Vec<Replica>,
}

#[derive(Debug, Clone)]
struct Table {
    db: String,
    name: String,
    tid: usize,
    replicanum: usize,
    rows: u64,
    partitions: Vec<Partition>,
}

#[derive(Debug, Clone)]
struct Op {
    id: usize,
    op_type: &'static str,
    db: String,
    name: String,
    pid: usize,
}

/// A running component: its pid (in the host's process table and pid file) and version.
#[derive(Debug, Clone)]
struct Running {
    pid: Option<u32>,
    /// The mon supervisor's pid when started in daemon mode (`start.sh start <c> mon`).
    mon_pid: Option<u32>,
    version: Option<String>,
}

/// The `stuck` setting for one tablet: when `version` starts there, partition `pid` of `table`
/// (`db.name`) stays `unalive` or in a tablet state such as `kTableUndefined`.
#[derive(Debug, Clone)]
struct Stuck {
    table: String,
    pid: usize,
    state: String,
    version: String,
}

/// The OpenMLDB cluster of a scenario (`model = "openmldb"`). Settings: `tables` (`{ db, name,
/// partitions, replicas }`, placed as the lab places them), `auto_failover` (default true),
/// `zk_cluster` (when set, the ops tool and ns_client refuse any other), `down` (hosts whose
/// component is not running at the start), `fail_start` (`{ host = "version" }`: that version
/// fails to start there), `ops_error` (`{ cmd, message }`: that ops-tool command logs the
/// error and does nothing, exit 0), `ops_crash` (a command that crashes after turning
/// auto_failover off), `stuck` (`{ host = { table, pid, state, version } }`: when that version
/// starts on the tablet, the partition stays `unalive` or in `state`), `post_upgrade_error` (how
/// many post-upgrade partitions fail as "get empty table status", keeping the statfile),
/// `writes` (tables clients write to: their Rows grow between two status reads),
/// `confset_error` (`confset auto_failover` prints `failed to set auto_failover. error msg:
/// <this>` and exits 0).
#[derive(Debug, Clone)]
pub struct OpenMldb {
    nodes: Vec<Node>,
    /// Positions in `nodes` by endpoint (first) and by host (in order): every command, status
    /// read and availability sample looks nodes up, thousands of times in a big rehearsal.
    by_ep: crate::FastMap<String, usize>,
    on_host: crate::FastMap<String, Vec<usize>>,
    /// Tablet endpoints in inventory order (placement, and the least-loaded choice).
    tablets: Vec<String>,
    tables: Vec<Table>,
    ops: Vec<Op>,
    auto_failover: bool,
    zk_cluster: Option<String>,
    running: BTreeMap<String, Running>,
    fail_start: BTreeMap<String, String>,
    ops_error: Option<(String, String)>,
    ops_crash: Option<String>,
    stuck: BTreeMap<String, Stuck>,
    /// How many more post-upgrade partitions fail (`post_upgrade_error`).
    post_upgrade_error: u32,
    /// Tables (`db.name`) that clients write to: their Rows grow between two status reads.
    writes: Vec<String>,
    /// `confset auto_failover` fails with this message (exit 0, as the ns_client does).
    confset_error: Option<String>,
}

fn var(inv: &Inventory, host: &str, key: &str) -> Result<String, String> {
    let h = inv.host(host).ok_or_else(|| format!("no host `{host}`"))?;
    match h.vars.get(key) {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        Some(v) => Err(format!(
            "host `{host}`: var `{key}` must be a string, not {v}"
        )),
        None => Err(format!(
            "host `{host}` has no var `{key}` (the openmldb model needs `root` and `endpoint`)"
        )),
    }
}

impl OpenMldb {
    pub(super) fn from_settings(
        hosts: Vec<String>,
        s: &toml::Table,
        inv: &Inventory,
    ) -> Result<Self, String> {
        check_keys(
            "openmldb",
            s,
            &[
                "tables",
                "auto_failover",
                "zk_cluster",
                "down",
                "fail_start",
                "ops_error",
                "ops_crash",
                "stuck",
                "post_upgrade_error",
                "writes",
                "confset_error",
            ],
        )?;
        let mut nodes = Vec::new();
        for h in &hosts {
            let entry = inv.host(h).ok_or_else(|| format!("no host `{h}`"))?;
            let Some(role) = ROLES.iter().find(|r| entry.groups.iter().any(|g| g == *r)) else {
                return Err(format!(
                    "host `{h}` is in none of the groups {} (the openmldb model reads a host's component from its group)",
                    ROLES.join(", ")
                ));
            };
            let endpoint = var(inv, h, "endpoint")?;
            let port = endpoint
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("host `{h}`: endpoint `{endpoint}` is not host:port"))?;
            nodes.push(Node {
                host: h.clone(),
                role,
                root: var(inv, h, "root")?.trim_end_matches('/').to_string(),
                endpoint,
                port,
            });
        }
        let tablets: Vec<String> = nodes
            .iter()
            .filter(|n| n.role == "tablet")
            .map(|n| n.endpoint.clone())
            .collect();
        let mut tables = Vec::new();
        if let Some(v) = s.get("tables") {
            let arr = v.as_array().ok_or("`tables` must be an array of tables")?;
            if !arr.is_empty() && tablets.is_empty() {
                return Err("`tables` needs hosts in group `tablet`".into());
            }
            for (i, t) in arr.iter().enumerate() {
                let t = t
                    .as_table()
                    .ok_or_else(|| format!("tables[{i}] must be a table"))?;
                let get = |k: &str| -> Result<String, String> {
                    t.get(k)
                        .and_then(|v| v.as_str())
                        .map(str::to_string)
                        .ok_or_else(|| format!("tables[{i}] needs `{k}` (a string)"))
                };
                let int = |k: &str| -> Result<usize, String> {
                    match t.get(k) {
                        None => Ok(1),
                        Some(toml::Value::Integer(n)) if *n >= 1 => Ok(*n as usize),
                        Some(_) => Err(format!("tables[{i}].{k} must be a positive integer")),
                    }
                };
                let n = tablets.len();
                let r = int("replicas")?.min(n);
                let partitions = (0..int("partitions")?)
                    .map(|p| {
                        let lead = (i + p) % n;
                        Partition {
                            pid: p,
                            replicas: (0..r)
                                .map(|k| Replica {
                                    ep: tablets[(lead + k) % n].clone(),
                                    leader: k == 0,
                                    alive: true,
                                    state: None,
                                    stuck: false,
                                })
                                .collect(),
                        }
                    })
                    .collect();
                tables.push(Table {
                    db: get("db")?,
                    name: get("name")?,
                    tid: i + 1,
                    replicanum: r,
                    rows: 100 * (i as u64 + 1),
                    partitions,
                });
            }
        }
        let auto_failover = match s.get("auto_failover") {
            None => true,
            Some(toml::Value::Boolean(b)) => *b,
            Some(_) => return Err("`auto_failover` must be true or false".into()),
        };
        let mut running: BTreeMap<String, Running> = nodes
            .iter()
            .map(|n| {
                (
                    n.host.clone(),
                    Running {
                        pid: None,
                        mon_pid: None,
                        version: None,
                    },
                )
            })
            .collect();
        if let Some(v) = s.get("down") {
            for d in v
                .as_array()
                .ok_or("`down` must be an array of host names")?
            {
                let d = d.as_str().ok_or("`down` must be an array of host names")?;
                running
                    .remove(d)
                    .ok_or_else(|| format!("down: `{d}` is not a host of this product"))?;
            }
        }
        let mut fail_start = BTreeMap::new();
        if let Some(v) = s.get("fail_start") {
            for (h, ver) in v
                .as_table()
                .ok_or("`fail_start` must be a table of host = \"version\"")?
            {
                if !hosts.contains(h) {
                    return Err(format!("fail_start: `{h}` is not a host of this product"));
                }
                let ver = ver
                    .as_str()
                    .ok_or("`fail_start` must be a table of host = \"version\"")?;
                fail_start.insert(h.clone(), ver.to_string());
            }
        }
        let ops_error = match s.get("ops_error") {
            None => None,
            Some(v) => {
                let t = v
                    .as_table()
                    .ok_or("`ops_error` must be a table { cmd, message }")?;
                let cmd = t
                    .get("cmd")
                    .and_then(|c| c.as_str())
                    .ok_or("ops_error needs `cmd`")?;
                let msg = t
                    .get("message")
                    .and_then(|c| c.as_str())
                    .map_or_else(|| format!("{cmd} failed"), str::to_string);
                Some((cmd.to_string(), msg))
            }
        };
        let mut stuck = BTreeMap::new();
        if let Some(v) = s.get("stuck") {
            let shape =
                "`stuck` must be a table of host = { table = \"db.name\", pid, state, version }";
            for (h, k) in v.as_table().ok_or(shape)? {
                if !hosts.contains(h) {
                    return Err(format!("stuck: `{h}` is not a host of this product"));
                }
                let k = k.as_table().ok_or(shape)?;
                let text = |key: &str, default: Option<&str>| -> Result<String, String> {
                    match (k.get(key).and_then(|v| v.as_str()), default) {
                        (Some(v), _) => Ok(v.to_string()),
                        (None, Some(d)) => Ok(d.to_string()),
                        (None, None) => Err(format!("stuck.{h} needs `{key}` (a string)")),
                    }
                };
                let pid = match k.get("pid") {
                    Some(toml::Value::Integer(n)) if *n >= 0 => *n as usize,
                    _ => return Err(format!("stuck.{h} needs `pid` (a partition number)")),
                };
                stuck.insert(
                    h.clone(),
                    Stuck {
                        table: text("table", None)?,
                        pid,
                        state: text("state", Some("unalive"))?,
                        version: text("version", None)?,
                    },
                );
            }
        }
        let post_upgrade_error = match s.get("post_upgrade_error") {
            None => 0,
            Some(toml::Value::Integer(n)) if *n >= 0 => *n as u32,
            Some(_) => {
                return Err(
                    "`post_upgrade_error` must be a count (how many partitions fail)".into(),
                )
            }
        };
        let mut writes = Vec::new();
        if let Some(v) = s.get("writes") {
            let shape = "`writes` must be an array of \"db.table\" names";
            for w in v.as_array().ok_or(shape)? {
                writes.push(w.as_str().ok_or(shape)?.to_string());
            }
        }
        let mut by_ep = crate::FastMap::default();
        let mut on_host: crate::FastMap<String, Vec<usize>> = crate::FastMap::default();
        for (i, n) in nodes.iter().enumerate() {
            by_ep.entry(n.endpoint.clone()).or_insert(i);
            on_host.entry(n.host.clone()).or_default().push(i);
        }
        Ok(OpenMldb {
            by_ep,
            on_host,
            nodes,
            tablets,
            tables,
            ops: Vec::new(),
            auto_failover,
            zk_cluster: settings_str(s, "zk_cluster")?,
            running,
            fail_start,
            ops_error,
            ops_crash: settings_str(s, "ops_crash")?,
            stuck,
            post_upgrade_error,
            writes,
            confset_error: settings_str(s, "confset_error")?,
        })
    }

    fn node_by_ep(&self, ep: &str) -> Option<&Node> {
        self.nodes.get(*self.by_ep.get(ep)?)
    }

    fn node_alive(&self, ep: &str) -> bool {
        self.node_by_ep(ep)
            .is_some_and(|n| self.running.contains_key(&n.host))
    }

    fn replica_alive(&self, r: &Replica) -> bool {
        r.alive && self.node_alive(&r.ep)
    }

    fn new_op(&mut self, op_type: &'static str, t: usize, pid: usize) {
        let (db, name) = (self.tables[t].db.clone(), self.tables[t].name.clone());
        self.ops.push(Op {
            id: self.ops.len() + 1,
            op_type,
            db,
            name,
            pid,
        });
    }

    fn change_leader(&mut self, t: usize, p: usize, to: &str) {
        for r in &mut self.tables[t].partitions[p].replicas {
            r.leader = r.ep == to;
        }
        self.new_op("kChangeLeaderOP", t, p);
    }

    /// The partition's state as its tablet reports it (`gettablestatus`), or `None` when the
    /// tablet does not hold it: the tablet is down, or came back without loading it.
    fn held_state<'a>(&self, r: &'a Replica) -> Option<&'a str> {
        if !self.node_alive(&r.ep) || (!r.alive && r.state.is_none()) {
            return None;
        }
        Some(r.state.as_deref().unwrap_or("kTableNormal"))
    }

    /// `Partition_unalive` and `Warnings` of SHOW TABLE STATUS: one warning per replica problem,
    /// `[pid=N][leader|follower][ENDPOINT]: MESSAGE`, joined by newlines.
    fn table_status(&self, t: &Table) -> (usize, String) {
        let mut unalive = 0;
        let mut warnings: Vec<String> = Vec::new();
        for part in &t.partitions {
            let leader = part.replicas.iter().find(|r| r.leader);
            let led = leader.is_some_and(|r| self.replica_alive(r));
            for r in &part.replicas {
                let role = if r.leader { "leader" } else { "follower" };
                if !self.replica_alive(r) {
                    unalive += 1;
                }
                let message = match self.held_state(r) {
                    None => Some("state is kNotFound".to_string()),
                    Some("kTableNormal") if !r.leader && (!led || !r.alive) => {
                        Some("not connected to leader".to_string())
                    }
                    Some("kTableNormal") => None,
                    Some(other) => Some(format!("state is {other}")),
                };
                if let Some(m) = message {
                    warnings.push(format!("[pid={}][{role}][{}]: {m}", part.pid, r.ep));
                }
            }
            if part.replicas.len() != t.replicanum {
                warnings.push(format!(
                    "[pid={}][leader][{}]: real replica number {} does not match the configured replicanum {}",
                    part.pid,
                    leader.map_or("-", |r| r.ep.as_str()),
                    part.replicas.len(),
                    t.replicanum
                ));
            }
        }
        (unalive, warnings.join("\n"))
    }

    fn tablet_down(&mut self, ep: &str) {
        for t in 0..self.tables.len() {
            for p in 0..self.tables[t].partitions.len() {
                let part = &self.tables[t].partitions[p];
                let Some(i) = part.replicas.iter().position(|r| r.ep == ep) else {
                    continue;
                };
                let was_leader = part.replicas[i].leader;
                let r = &mut self.tables[t].partitions[p].replicas[i];
                r.alive = false;
                r.state = None;
                r.stuck = false;
                if was_leader && self.auto_failover {
                    let to = self.tables[t].partitions[p]
                        .replicas
                        .iter()
                        .find(|r| r.ep != ep && self.replica_alive(r))
                        .map(|r| r.ep.clone());
                    if let Some(to) = to {
                        self.change_leader(t, p, &to);
                    }
                }
            }
        }
    }

    fn tablet_up(&mut self, host: &str, ep: &str, version: Option<&str>) {
        if self.auto_failover {
            for t in 0..self.tables.len() {
                for p in 0..self.tables[t].partitions.len() {
                    let mut recovered = false;
                    for r in &mut self.tables[t].partitions[p].replicas {
                        if r.ep == ep && !r.alive {
                            r.alive = true;
                            recovered = true;
                        }
                    }
                    if recovered {
                        self.new_op("kRecoverTableOP", t, p);
                    }
                }
            }
        }
        // `stuck`: one partition of this tablet does not come back when that version starts.
        let Some(k) = self.stuck.get(host).cloned() else {
            return;
        };
        if version.map(short) != Some(k.version.as_str()) {
            return;
        }
        for t in &mut self.tables {
            if format!("{}.{}", t.db, t.name) != k.table {
                continue;
            }
            if let Some(part) = t.partitions.get_mut(k.pid) {
                for r in part.replicas.iter_mut().filter(|r| r.ep == ep) {
                    r.stuck = true;
                    if k.state == "unalive" {
                        r.alive = false;
                        r.state = None;
                    } else {
                        r.state = Some(k.state.clone());
                    }
                }
            }
        }
    }

    /// `bash ROOT/bin/start.sh start|stop COMPONENT [mon]`, as release/bin/start.sh behaves
    /// (PRODUCTS.md §1.2): success is a line, not the exit code; in daemon mode `bin/<c>.pid`
    /// holds the mon supervisor's pid and `bin/<c>.pid.child` the component's.
    fn start_sh(&mut self, node: &Node, argv: &[String], state: &mut SimHost) -> ExecOutput {
        let (Some(op), Some(comp)) = (argv.get(2), argv.get(3)) else {
            return output(
                1,
                "Usage: start.sh start/stop/restart <component> [mon]\n",
                "",
            );
        };
        let daemon = argv.get(4).is_some_and(|m| m == "mon");
        let pid_file = format!("{}/bin/{comp}.pid", node.root);
        let child_file = format!("{pid_file}.child");
        match op.as_str() {
            "start" => {
                let mut out = format!("Starting {comp} ... \n");
                if let Some(r) = self.running.get(&node.host) {
                    let pid = r.mon_pid.or(r.pid).map_or_else(
                        || read_text(state, &pid_file).unwrap_or_default(),
                        |p| p.to_string(),
                    );
                    out.push_str(&format!(
                        "{comp} already running as process {}\n",
                        pid.trim()
                    ));
                    return output(0, &out, "");
                }
                let version = if comp == "taskmanager" {
                    taskmanager_version(state, &node.root)
                } else {
                    banner_of(state, &format!("{}/bin/openmldb", node.root))
                };
                let spark_ok = comp != "taskmanager" || spark_home_ok(state, &node.root);
                let knob = self.fail_start.get(&node.host);
                let cmdline = if comp == "taskmanager" {
                    "python3 ./bin/openmldb --role=taskmanager".to_string()
                } else {
                    format!("./bin/openmldb --flagfile=./conf/{comp}.flags --enable_status_service=true")
                };
                let mon_pid =
                    daemon.then(|| state.spawn(&format!("{} ./bin/mon {cmdline}", node.root)));
                let pid = state.spawn(&format!("{} {cmdline}", node.root));
                if let Some(m) = mon_pid {
                    state.write(&pid_file, format!("{m}\n").into_bytes());
                    state.write(&child_file, format!("{pid}\n").into_bytes());
                    out.push_str(&format!(
                        "mon pid is {m}, process pid is {pid}, check {pid} status\n"
                    ));
                } else if comp != "taskmanager" {
                    out.push_str(&format!("process pid is {pid}\n"));
                }
                let starts = version.is_some()
                    && spark_ok
                    && knob.is_none_or(|k| Some(short(k)) != version.as_deref().map(short));
                if starts {
                    state.open_port(node.port);
                }
                if starts && state.ports.contains(&node.port) {
                    if !daemon {
                        state.write(&pid_file, format!("{pid}\n").into_bytes());
                    }
                    self.running.insert(
                        node.host.clone(),
                        Running {
                            pid: Some(pid),
                            mon_pid,
                            version: version.clone(),
                        },
                    );
                    if node.role == "tablet" {
                        self.tablet_up(&node.host, &node.endpoint.clone(), version.as_deref());
                    }
                    out.push_str(&format!("Start {comp} success\n"));
                } else {
                    // The process died at once (or never served): start.sh gave up polling. A
                    // supervisor would start it again later; it fails the same way.
                    state.processes.remove(&pid);
                    out.push_str(&format!(
                        "\u{1b}[1;31mStart {comp} failed! Please check log in ./logs/{comp}[_mon].log and ./logs/{comp}.INFO \u{1b}[0m\n"
                    ));
                }
                output(0, &out, "")
            }
            "stop" => {
                let mut out = format!("Stopping {comp} ... \n");
                // Like the script: it stops what the pid files name, running or not, and says
                // "Stop ... success" even when there was nothing to stop.
                let had_pid_file = state.exists(&pid_file);
                if !had_pid_file {
                    out.push_str(&format!(
                        "no {comp} to stop (could not find file ./bin/{comp}.pid)\n"
                    ));
                }
                let had_child = state.exists(&child_file);
                if had_pid_file || had_child {
                    if let Some(r) = self.running.remove(&node.host) {
                        for p in [r.pid, r.mon_pid].into_iter().flatten() {
                            state.processes.remove(&p);
                        }
                        state.ports.remove(&node.port);
                        if node.role == "tablet" {
                            self.tablet_down(&node.endpoint.clone());
                        }
                    }
                }
                state.remove(&pid_file);
                if had_child {
                    state.remove(&child_file);
                    out.push_str(&format!("Stop {comp} success(mon mode)\n"));
                } else {
                    out.push_str(&format!("Stop {comp} success\n"));
                }
                output(0, &out, "")
            }
            _ => output(1, "", "Only support {start|stop|restart}\n"),
        }
    }

    fn version_page(&self, url: &str) -> ExecOutput {
        let rest = url.strip_prefix("http://").unwrap_or(url);
        let (ep, page) = rest.split_once('/').unwrap_or((rest, ""));
        let Some(node) = self.node_by_ep(ep) else {
            return output(7, "", "");
        };
        match self.running.get(&node.host) {
            None => output(7, "", ""),
            Some(r) => match page {
                "status" => output(0, "OK\n", ""),
                "version" => {
                    let v = r.version.clone().unwrap_or_else(|| "unknown".into());
                    output(0, &format!("{v}\n"), "")
                }
                _ => output(0, "no such page\n", ""),
            },
        }
    }

    fn ns_alive(&self) -> bool {
        self.nodes
            .iter()
            .any(|n| n.role == "nameserver" && self.running.contains_key(&n.host))
    }

    fn zk_ok(&self, args: &BTreeMap<String, String>) -> bool {
        self.zk_cluster
            .as_ref()
            .is_none_or(|z| args.get("zk_cluster") == Some(z))
    }

    fn ns_client(&mut self, args: &BTreeMap<String, String>) -> ExecOutput {
        if !self.zk_ok(args) {
            return output(
                1,
                "",
                &format!(
                    "zk client init failed: no ZooKeeper at {}\n",
                    args.get("zk_cluster").map_or("", String::as_str)
                ),
            );
        }
        if !self.ns_alive() {
            return output(1, "", "fail to get nameserver leader\n");
        }
        let cmd: Vec<&str> = args
            .get("cmd")
            .map_or("", String::as_str)
            .split_whitespace()
            .collect();
        let db = args.get("database").map_or("", String::as_str);
        match cmd.as_slice() {
            ["confget", "auto_failover"] => output(
                0,
                &format!(
                    "{}\n",
                    ns_table(
                        &["key", "value"],
                        &[vec!["auto_failover".into(), self.auto_failover.to_string()]]
                    )
                ),
                "",
            ),
            ["confset", "auto_failover", _] if self.confset_error.is_some() => output(
                0,
                &format!(
                    "failed to set auto_failover. error msg: {}\n",
                    self.confset_error.as_deref().unwrap_or_default()
                ),
                "",
            ),
            ["confset", "auto_failover", v @ ("true" | "false")] => {
                self.auto_failover = *v == "true";
                output(0, "set auto_failover ok\n", "")
            }
            ["confset", "auto_failover", ..] => output(
                0,
                "failed to set auto_failover. error msg: the value must be true or false\n",
                "",
            ),
            ["showdb"] => {
                let mut dbs: Vec<&str> = self.tables.iter().map(|t| t.db.as_str()).collect();
                dbs.sort_unstable();
                dbs.dedup();
                let rows: Vec<Vec<String>> = dbs
                    .iter()
                    .enumerate()
                    .map(|(i, d)| vec![(i + 1).to_string(), d.to_string()])
                    .collect();
                printed(ns_table(&["#", "name"], &rows))
            }
            ["showtable", rest @ ..] => {
                // What a table's replicas share, made once per table and borrowed by its rows.
                // `memused` is `{:.3}` of rows / 10 in integers (float formatting was most of
                // the model's time for this command).
                let shown: Vec<(&Table, [String; 3], Vec<String>)> = self
                    .tables
                    .iter()
                    .filter(|t| t.db == db && rest.first().is_none_or(|n| *n == t.name))
                    .map(|t| {
                        let texts = [
                            t.tid.to_string(),
                            t.rows.to_string(),
                            format!("{}.{:03}", t.rows / 10, t.rows % 10 * 100),
                        ];
                        let pids = t.partitions.iter().map(|p| p.pid.to_string()).collect();
                        (t, texts, pids)
                    })
                    .collect();
                let mut rows: Vec<[&str; 10]> = Vec::new();
                for (t, [tid, count, memused], pids) in &shown {
                    for (part, pid) in t.partitions.iter().zip(pids) {
                        for r in &part.replicas {
                            rows.push([
                                &t.name,
                                tid,
                                pid,
                                &r.ep,
                                if r.leader { "leader" } else { "follower" },
                                if self.replica_alive(r) { "yes" } else { "no" },
                                count,
                                count,
                                memused,
                                "0.000",
                            ]);
                        }
                    }
                }
                let header = [
                    "name",
                    "tid",
                    "pid",
                    "endpoint",
                    "role",
                    "is_alive",
                    "offset",
                    "record_cnt",
                    "memused",
                    "diskused",
                ];
                printed(ns_table(&header, &rows))
            }
            _ => output(
                1,
                "",
                &format!(
                    "unsupported cmd {}\n",
                    args.get("cmd").map_or("", String::as_str)
                ),
            ),
        }
    }

    /// `--role=sql_client --cmd="show table status like 'P';"`: the SQL client's TextTable, every
    /// row (a multi-line Warnings cell spreads over lines of its own).
    fn sql_client(&mut self, args: &BTreeMap<String, String>) -> ExecOutput {
        if !self.zk_ok(args) {
            return output(1, "", "zk client init failed\n");
        }
        if !self.ns_alive() {
            return output(1, "", "fail to get nameserver leader\n");
        }
        let sql = args.get("cmd").map_or("", String::as_str);
        let stmt = sql.trim().trim_end_matches(';').trim();
        let unsupported = || {
            output(
                0,
                &format!("Error: [2000] Syntax error or unsupported statement: {sql}\n"),
                "",
            )
        };
        // Keywords in any case; `like` takes a quoted pattern on the database name.
        let head = "show table status";
        if stmt.len() < head.len() || !stmt[..head.len()].eq_ignore_ascii_case(head) {
            return unsupported();
        }
        let rest = stmt[head.len()..].trim();
        let pattern = if rest.is_empty() {
            "%"
        } else if rest.len() > 4 && rest[..4].eq_ignore_ascii_case("like") {
            rest[4..].trim().trim_matches('\'')
        } else {
            return unsupported();
        };
        for t in &mut self.tables {
            if self.writes.contains(&format!("{}.{}", t.db, t.name)) {
                t.rows += 10;
            }
        }
        let rows: Vec<Vec<String>> = self
            .status_rows()
            .into_iter()
            .filter(|r| like(pattern, &r[2]))
            .collect();
        printed(text_table(&STATUS_HEADER, &rows))
    }

    fn ops_tool(&mut self, args: &BTreeMap<String, String>, state: &mut SimHost) -> ExecOutput {
        const CMDS: &[&str] = &[
            "recoverdata",
            "scaleout",
            "scalein",
            "pre-upgrade",
            "post-upgrade",
            "showopstatus",
            "showtablestatus",
        ];
        let cmd = args.get("cmd").cloned().unwrap_or_default();
        if !CMDS.contains(&cmd.as_str()) {
            return output(
                0,
                &format!("unsupported cmd: {cmd}\navailable cmds: {CMDS:?}\n"),
                "",
            );
        }
        let bin = args
            .get("openmldb_bin_path")
            .cloned()
            .unwrap_or_else(|| "./bin/openmldb".into());
        if !state.exists(&bin) {
            return output(
                1,
                "",
                &format!("Traceback (most recent call last):\nFileNotFoundError: [Errno 2] No such file or directory: '{bin}'\n"),
            );
        }
        if !self.zk_ok(args) || !self.ns_alive() {
            return output(0, "", "ERROR: connect OpenMLDB failed, get ns failed\n");
        }
        let mut log = String::new();
        match cmd.as_str() {
            "showopstatus" => {
                let filter = args.get("filter").filter(|f| !f.is_empty());
                let db = args.get("db").filter(|d| !d.is_empty());
                return printed(self.opstatus(filter, db));
            }
            "showtablestatus" => return printed(self.tablestatus()),
            _ => {}
        }
        let auto_failover = self.auto_failover;
        log.push_str("INFO: confget auto_failover\n");
        if auto_failover {
            log.push_str("INFO: confset auto_failover false\n");
            self.auto_failover = false;
        }
        if self.ops_crash.as_deref() == Some(cmd.as_str()) {
            log.push_str(&format!(
                "Traceback (most recent call last):\nRuntimeError: knob ops_crash: {cmd} crashed\n"
            ));
            return output(1, "", &log);
        }
        let endpoints: Vec<String> = args
            .get("endpoints")
            .map(|e| e.split(',').map(str::to_string).collect())
            .unwrap_or_default();
        let statfile = args
            .get("statfile")
            .cloned()
            .unwrap_or_else(|| ".stat".into());
        if let Some((_, msg)) = self.ops_error.clone().filter(|(c, _)| *c == cmd) {
            log.push_str(&format!("ERROR: {msg}\n"));
        } else {
            match cmd.as_str() {
                "pre-upgrade" | "post-upgrade" if endpoints.is_empty() => {
                    log.push_str("ERROR: must provide --endpoints\nTraceback (most recent call last):\nAttributeError: 'NoneType' object has no attribute 'split'\n");
                    return output(1, "", &log);
                }
                "pre-upgrade" | "post-upgrade" => {
                    // The tool acts on the first endpoint only, whatever else was given.
                    if endpoints.len() != 1 {
                        log.push_str("WARNING: must provide --endpoints with only one endpoint\n");
                    }
                    let ep = endpoints[0].clone();
                    if cmd == "pre-upgrade" {
                        let single = args.contains_key("allow_single_replica");
                        let lines = self.pre_upgrade(&ep, single, &mut log);
                        let mut text = read_text(state, &statfile).unwrap_or_default();
                        for l in &lines {
                            text.push_str(l);
                            text.push('\n');
                        }
                        state.write(&statfile, text.into_bytes());
                    } else {
                        // The statfile is opened unchecked: missing, the tool dies, leaving
                        // auto_failover off (it is set back only at the very end).
                        let Some(text) = read_text(state, &statfile) else {
                            log.push_str(&format!(
                                "Traceback (most recent call last):\nFileNotFoundError: [Errno 2] No such file or directory: '{statfile}'\n"
                            ));
                            return output(1, "", &log);
                        };
                        if self.post_upgrade(&ep, &text, &mut log) {
                            state.remove(&statfile);
                        }
                    }
                }
                "recoverdata" => self.recoverdata(&mut log),
                other => log.push_str(&format!("ERROR: {other} is not modelled\n")),
            }
        }
        if auto_failover {
            log.push_str("INFO: confset auto_failover true\n");
            self.auto_failover = true;
        }
        output(0, "", &log)
    }

    fn pre_upgrade(&mut self, ep: &str, allow_single: bool, log: &mut String) -> Vec<String> {
        let mut lines = Vec::new();
        log.push_str(&format!("INFO: start to pre-upgrade endpoint {ep}\n"));
        for t in 0..self.tables.len() {
            for p in 0..self.tables[t].partitions.len() {
                let part = &self.tables[t].partitions[p];
                if !part.replicas.iter().any(|r| r.leader && r.ep == ep) {
                    continue;
                }
                let (db, name, tid) = {
                    let tb = &self.tables[t];
                    (tb.db.clone(), tb.name.clone(), tb.tid)
                };
                if part.replicas.len() > 1 {
                    let to = part
                        .replicas
                        .iter()
                        .find(|r| r.ep != ep && self.replica_alive(r))
                        .map(|r| r.ep.clone());
                    let Some(to) = to else {
                        log.push_str(&format!(
                            "ERROR: no alive follower for table {name} in {db} pid {p}\n"
                        ));
                        continue;
                    };
                    self.change_leader(t, p, &to);
                    self.new_op("kRecoverTableOP", t, p);
                    lines.push(format!("{ep},{db},{name},{tid},{p},"));
                } else if allow_single {
                    log.push_str(&format!(
                        "INFO: table {name} in {db} pid {p} has a single replica, skipped\n"
                    ));
                } else {
                    let mut load: Vec<(usize, usize, String)> = Vec::new();
                    for (i, e) in self.tablets.iter().enumerate() {
                        if e != ep && self.node_alive(e) {
                            let n = self
                                .tables
                                .iter()
                                .flat_map(|tt| &tt.partitions)
                                .flat_map(|pp| &pp.replicas)
                                .filter(|r| &r.ep == e)
                                .count();
                            load.push((n, i, e.clone()));
                        }
                    }
                    let Some((_, _, new_ep)) = load.into_iter().min() else {
                        log.push_str(&format!(
                            "ERROR: no other alive tablet to add a replica of {name} in {db}\n"
                        ));
                        continue;
                    };
                    self.tables[t].partitions[p].replicas.push(Replica {
                        ep: new_ep.clone(),
                        leader: false,
                        alive: true,
                        state: None,
                        stuck: false,
                    });
                    self.new_op("kAddReplicaOP", t, p);
                    self.change_leader(t, p, &new_ep);
                    lines.push(format!("{ep},{db},{name},{tid},{p},{new_ep}"));
                }
            }
        }
        lines
    }

    /// post-upgrade for `ep` from the statfile's lines; true when it completed (only then does
    /// the tool remove the statfile). The first failure ends it: a partition the tablet does
    /// not hold logs an ERROR; a partition with no live leader to take over from logs only a
    /// WARNING.
    fn post_upgrade(&mut self, ep: &str, statfile: &str, log: &mut String) -> bool {
        log.push_str(&format!("INFO: start to post-upgrade {ep}\n"));
        for line in statfile.lines().filter(|l| !l.trim().is_empty()) {
            let f: Vec<&str> = line.trim().split(',').map(str::trim).collect();
            if f.len() != 6 || f[0] != ep {
                continue;
            }
            let (db, name, tid, new_ep) = (f[1], f[2], f[3], f[5]);
            let Some(t) = self
                .tables
                .iter()
                .position(|x| x.db == db && x.name == name)
            else {
                continue;
            };
            let Some(p) = f[4]
                .parse::<usize>()
                .ok()
                .filter(|p| *p < self.tables[t].partitions.len())
            else {
                continue;
            };
            let mine = self.tables[t].partitions[p]
                .replicas
                .iter()
                .find(|r| r.ep == ep);
            let held = mine.is_some_and(|r| self.held_state(r).is_some());
            if self.post_upgrade_error > 0 || !held {
                self.post_upgrade_error = self.post_upgrade_error.saturating_sub(1);
                log.push_str(&format!(
                    "ERROR: get empty table status for partition {tid}_{p} from {ep}\n"
                ));
                return false;
            }
            if mine.is_some_and(|r| r.leader) {
                log.push_str(&format!(
                    "WARNING: {db} {name} {p} in {ep} is already leader\n"
                ));
                continue;
            }
            let led = self.tables[t].partitions[p]
                .replicas
                .iter()
                .any(|r| r.leader && self.replica_alive(r));
            if new_ep.is_empty() && !led {
                log.push_str(&format!(
                    "WARNING: cannot find leader endpoint for {name} {p}\n"
                ));
                return false;
            }
            self.change_leader(t, p, ep);
            if !new_ep.is_empty() {
                self.tables[t].partitions[p]
                    .replicas
                    .retain(|r| r.ep != new_ep);
                self.new_op("kDelReplicaOP", t, p);
            }
        }
        true
    }

    fn recoverdata(&mut self, log: &mut String) {
        for t in 0..self.tables.len() {
            let (db, name) = (self.tables[t].db.clone(), self.tables[t].name.clone());
            if self.table_status(&self.tables[t]) == (0, String::new()) {
                log.push_str(&format!("INFO: {name} in {db} is healthy\n"));
                continue;
            }
            for p in 0..self.tables[t].partitions.len() {
                for r in self.tables[t].partitions[p]
                    .replicas
                    .iter()
                    .filter(|r| r.stuck)
                {
                    log.push_str(&format!(
                        "ERROR: recover table partition failed. db {db} name {name} pid {p} endpoint {}\n",
                        r.ep
                    ));
                }
                let offline: Vec<usize> = self.tables[t].partitions[p]
                    .replicas
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| !r.alive && !r.stuck && self.node_alive(&r.ep))
                    .map(|(i, _)| i)
                    .collect();
                for i in offline {
                    self.tables[t].partitions[p].replicas[i].alive = true;
                    self.new_op("kRecoverTableOP", t, p);
                }
                let part = &self.tables[t].partitions[p];
                let led = part
                    .replicas
                    .iter()
                    .find(|r| r.leader)
                    .is_some_and(|r| self.replica_alive(r));
                if !led {
                    let to = part
                        .replicas
                        .iter()
                        .find(|r| self.replica_alive(r))
                        .map(|r| r.ep.clone());
                    if let Some(to) = to {
                        self.change_leader(t, p, &to);
                    }
                }
            }
            if self.table_status(&self.tables[t]).0 == 0 {
                log.push_str(&format!("INFO: {name} in {db} recover success\n"));
            } else {
                log.push_str(&format!(
                    "ERROR: recover table failed. db {db} name {name}, check log for detail\n"
                ));
            }
        }
    }

    fn opstatus(&self, filter: Option<&String>, db: Option<&String>) -> String {
        let mut rows = vec![[
            "db",
            "op_id",
            "op_type",
            "name",
            "pid",
            "status",
            "start_time",
            "execute_time",
            "end_time",
            "cur_task",
            "for_replica_cluster",
        ]
        .map(String::from)
        .to_vec()];
        for op in &self.ops {
            if filter.is_some_and(|f| f != "kDone") || db.is_some_and(|d| *d != op.db) {
                continue;
            }
            rows.push(vec![
                op.db.clone(),
                op.id.to_string(),
                op.op_type.to_string(),
                op.name.clone(),
                op.pid.to_string(),
                "kDone".into(),
                "-".into(),
                "0s".into(),
                "-".into(),
                "-".into(),
                "no".into(),
            ]);
        }
        pretty_table(&rows)
    }

    /// The rows of SHOW TABLE STATUS, every table, in STATUS_HEADER's order.
    fn status_rows(&self) -> Vec<Vec<String>> {
        self.tables
            .iter()
            .map(|t| {
                let (unalive, warnings) = self.table_status(t);
                vec![
                    t.tid.to_string(),
                    t.name.clone(),
                    t.db.clone(),
                    "memory".into(),
                    t.rows.to_string(),
                    (t.rows * 100).to_string(),
                    "0".into(),
                    t.partitions.len().to_string(),
                    unalive.to_string(),
                    t.replicanum.to_string(),
                    "NULL".into(),
                    "NULL".into(),
                    "NULL".into(),
                    warnings,
                ]
            })
            .collect()
    }

    /// The ops tool's `showtablestatus`: the SQL client's table read as the v0.9.2 tool reads
    /// it (split on white space after the first rule; only lines with the header's field count,
    /// or one fewer, are rows), so a table with any warning is not in it.
    fn tablestatus(&self) -> String {
        let text = text_table(&STATUS_HEADER, &self.status_rows());
        let mut lines = text
            .lines()
            .map(str::trim_start)
            .skip_while(|l| !l.starts_with("------"))
            .filter(|l| !l.starts_with("------"))
            .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .filter(|f| !f.is_empty());
        let Some(header) = lines.next() else {
            return String::new();
        };
        let n = header.len();
        let mut rows = vec![header];
        for mut f in lines {
            if f.len() == n - 1 {
                f.push(String::new());
            }
            if f.len() == n {
                rows.push(f);
            }
        }
        pretty_table(&rows)
    }

    fn node_of_host(&self, host: &str) -> Option<&Node> {
        self.nodes.get(*self.on_host.get(host)?.first()?)
    }
}

const STATUS_HEADER: [&str; 14] = [
    "Table_id",
    "Table_name",
    "Database_name",
    "Storage_type",
    "Rows",
    "Memory_data_size",
    "Disk_data_size",
    "Partition",
    "Partition_unalive",
    "Replica",
    "Offline_path",
    "Offline_format",
    "Offline_symbolic_paths",
    "Warnings",
];

/// The SQL client's result table (hybridse TextTable, as in docs/en/openmldb_sql/ddl/
/// SHOW_TABLE_STATUS.md): rules of dash groups around the header and the rows, each cell one
/// space in and left-aligned in a column two wider than its widest first line. A cell's later
/// lines are printed as they are, from the start of a line.
fn text_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].lines().next().unwrap_or("").len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
                + 2
        })
        .collect();
    let mut rule = String::from(" ");
    for (k, w) in widths.iter().enumerate() {
        if k > 0 {
            rule.push(' ');
        }
        push_repeated(&mut rule, '-', *w);
    }
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        for (c, w) in cells.zip(&widths) {
            out.push_str("  ");
            push_padded(out, c, w - 1);
        }
    };
    let mut out = String::with_capacity((rows.len() + 4) * (rule.len() + 8));
    out.push_str(&rule);
    out.push('\n');
    line(&mut out, &mut header.iter().copied());
    out.push('\n');
    out.push_str(&rule);
    for r in rows {
        out.push('\n');
        line(&mut out, &mut r.iter().map(String::as_str));
    }
    out.push('\n');
    out.push_str(&rule);
    out
}

/// A command that printed `text` and a newline, and exited 0 (the text moved, not copied).
fn printed(mut text: String) -> ExecOutput {
    text.push('\n');
    ExecOutput {
        code: Some(0),
        signal: None,
        stdout: text.into_bytes(),
        stderr: Vec::new(),
        truncated: false,
    }
}

/// `c` left-aligned in `width` characters, as `format!("{c:<width$}")` would write it.
fn push_padded(out: &mut String, c: &str, width: usize) {
    out.push_str(c);
    let n = if c.is_ascii() {
        c.len()
    } else {
        c.chars().count()
    };
    push_repeated(out, ' ', width.saturating_sub(n));
}

/// `n` copies of the ASCII `c`, pushed a slice at a time: `extend` with a repeated `char`
/// pushes (and encodes) one character per call, and the tables' rules and padding are most of
/// the text the model writes.
fn push_repeated(out: &mut String, c: char, mut n: usize) {
    const SPACES: &str = "                                                                ";
    const DASHES: &str = "----------------------------------------------------------------";
    let run = if c == ' ' { SPACES } else { DASHES };
    debug_assert!(c == ' ' || c == '-');
    while n > 0 {
        let k = n.min(run.len());
        out.push_str(&run[..k]);
        n -= k;
    }
}

/// SQL `LIKE`: `%` any run, `_` any one character.
fn like(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    fn go(p: &[char], t: &[char]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some('%') => (0..=t.len()).any(|k| go(&p[1..], &t[k..])),
            Some('_') => !t.is_empty() && go(&p[1..], &t[1..]),
            Some(c) => t.first() == Some(c) && go(&p[1..], &t[1..]),
        }
    }
    go(&p, &t)
}

fn read_text(state: &SimHost, path: &str) -> Option<String> {
    state
        .files
        .get(path)
        .map(|b| String::from_utf8_lossy(b).into_owned())
}

/// The version in an openmldb binary's banner (`openmldb version 0.9.2-<commit>`), as
/// `0.9.2-<commit>`.
fn banner_of(state: &SimHost, bin: &str) -> Option<String> {
    let text = read_text(state, bin)?;
    let at = text.find("openmldb version ")?;
    let rest = &text[at + "openmldb version ".len()..];
    let v: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
        .collect();
    (!v.is_empty()).then_some(v)
}

fn short(v: &str) -> &str {
    v.split('-').next().unwrap_or(v)
}

fn taskmanager_version(state: &SimHost, root: &str) -> Option<String> {
    let lib = format!("{root}/taskmanager/lib/openmldb-taskmanager-");
    state.files.keys().find_map(|k| {
        k.strip_prefix(&lib)
            .and_then(|r| r.strip_suffix(".jar"))
            .filter(|v| !v.contains('/'))
            .map(str::to_string)
    })
}

fn spark_home_ok(state: &SimHost, root: &str) -> bool {
    let props =
        read_text(state, &format!("{root}/conf/taskmanager.properties")).unwrap_or_default();
    let Some(home) = props
        .lines()
        .find_map(|l| l.trim().strip_prefix("spark.home="))
    else {
        return false;
    };
    let jars = format!("{}/jars/", home.trim().trim_end_matches('/'));
    state.files.keys().any(|k| k.starts_with(&jars))
}

/// `ls DIR`: the names directly under a directory of the simulated tree, sorted.
fn ls(state: &SimHost, dir: &str) -> ExecOutput {
    let d = dir.trim_end_matches('/');
    if !state.dirs.contains(d) {
        return output(
            2,
            "",
            &format!("ls: cannot access '{dir}': No such file or directory\n"),
        );
    }
    let prefix = format!("{d}/");
    let mut names: Vec<&str> = state
        .files
        .keys()
        .map(String::as_str)
        .chain(state.dirs.iter().map(String::as_str))
        .filter_map(|k| k.strip_prefix(&prefix))
        .filter(|r| !r.is_empty() && !r.contains('/'))
        .collect();
    names.sort();
    names.dedup();
    let mut out = names.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    output(0, &out, "")
}

/// The double's prettytable: borders of `+---+`, cells centred, the first row the header.
fn pretty_table(rows: &[Vec<String>]) -> String {
    let n = rows[0].len();
    let widths: Vec<usize> = (0..n)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0) + 2)
        .collect();
    let sep = format!(
        "+{}+",
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("+")
    );
    let mut out = vec![sep.clone()];
    for (k, r) in rows.iter().enumerate() {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| {
                let len = c.chars().count();
                // Python's str.center: an odd padding's extra space goes left only when the
                // width is odd.
                let pad = w - len;
                let left = if pad % 2 == 1 && w % 2 == 1 {
                    pad / 2 + 1
                } else {
                    pad / 2
                };
                format!("{}{c}{}", " ".repeat(left), " ".repeat(pad - left))
            })
            .collect();
        out.push(format!("|{}|", cells.join("|")));
        if k == 0 {
            out.push(sep.clone());
        }
    }
    out.push(sep);
    out.join("\n")
}

/// ns_client's table: the header, a `------` line, then the rows.
fn ns_table<S: AsRef<str>, R: AsRef<[S]>>(header: &[&str], rows: &[R]) -> String {
    let n = header.len();
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .map(|r| r.as_ref()[i].as_ref().len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
                + 2
        })
        .collect();
    // Each line's cells padded to their column, the line's trailing spaces trimmed.
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let start = out.len();
        out.push_str("  ");
        for (c, w) in cells.zip(&widths) {
            push_padded(out, c, *w);
        }
        let kept = out[start..].trim_end().len();
        out.truncate(start + kept);
    };
    let total: usize = widths.iter().sum::<usize>() + 2;
    let mut out = String::with_capacity((rows.len() + 2) * (total + 1));
    line(&mut out, &mut header.iter().copied());
    out.push('\n');
    push_repeated(&mut out, '-', total);
    for r in rows {
        out.push('\n');
        line(&mut out, &mut r.as_ref().iter().map(AsRef::as_ref));
    }
    out
}

fn long_args(argv: &[String]) -> BTreeMap<String, String> {
    argv.iter()
        .filter_map(|a| a.strip_prefix("--"))
        .map(|a| match a.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (a.to_string(), String::new()),
        })
        .collect()
}

impl ProductModel for OpenMldb {
    fn name(&self) -> &str {
        "openmldb"
    }

    fn exec(&mut self, host: &str, command: &Command, state: &mut SimHost) -> Option<ExecOutput> {
        let node = self.node_of_host(host)?.clone();
        let Command::Argv(argv) = command else {
            return None;
        };
        // A component running since the start runs what its install held then.
        if let Some(r) = self.running.get_mut(host).filter(|r| r.version.is_none()) {
            r.version = if node.role == "taskmanager" {
                taskmanager_version(state, &node.root)
            } else {
                banner_of(state, &format!("{}/bin/openmldb", node.root))
            };
        }
        let prog = argv.first()?.as_str();
        let base = prog.rsplit('/').next().unwrap_or(prog);
        let args = long_args(argv);
        match base {
            "bash" if argv.get(1).is_some_and(|s| s.ends_with("/bin/start.sh")) => {
                let script = &argv[1];
                if !state.exists(script) {
                    return Some(output(
                        127,
                        "",
                        &format!("bash: {script}: No such file or directory\n"),
                    ));
                }
                Some(self.start_sh(&node, argv, state))
            }
            "openmldb" => {
                if !state.exists(prog) {
                    return Some(output(127, "", &format!("sh: 1: {prog}: not found\n")));
                }
                if args.contains_key("version") {
                    return Some(match banner_of(state, prog) {
                        Some(v) => output(0, &format!("openmldb version {v}\n"), ""),
                        None => output(126, "", &format!("sh: 1: {prog}: cannot execute\n")),
                    });
                }
                match args.get("role").map(String::as_str) {
                    Some("ns_client") => return Some(self.ns_client(&args)),
                    Some("sql_client") => return Some(self.sql_client(&args)),
                    _ => {}
                }
                None
            }
            "curl" => {
                let url = argv.iter().rfind(|a| a.starts_with("http://"))?;
                Some(self.version_page(url))
            }
            // The stdlib's `alive`: `ps -o stat= -p PID | grep -qv '^Z'`, exit 0 while it runs.
            "sh" if super::model::process_check_pid(argv).is_some() => {
                let pid = super::model::process_check_pid(argv)?;
                let alive = self.running.get(host).is_some_and(|r| match r.pid {
                    Some(p) => {
                        p.to_string() == *pid || r.mon_pid.is_some_and(|m| m.to_string() == *pid)
                    }
                    // Running since the start: the pid files name the processes (the mon
                    // supervisor's and the component's in daemon mode).
                    None => ["pid", "pid.child"].iter().any(|ext| {
                        read_text(state, &format!("{}/bin/{}.{ext}", node.root, node.role))
                            .is_some_and(|t| t.trim() == pid)
                    }),
                });
                Some(output(if alive { 0 } else { 1 }, "", ""))
            }
            "ls" => Some(ls(state, argv.last()?)),
            _ if base.starts_with("python")
                && argv.get(1).is_some_and(|t| t.ends_with("openmldb_ops.py")) =>
            {
                let tool = &argv[1];
                if !state.exists(tool) {
                    return Some(output(
                        2,
                        "",
                        &format!("{prog}: can't open file '{tool}': [Errno 2] No such file or directory\n"),
                    ));
                }
                Some(self.ops_tool(&args, state))
            }
            _ => None,
        }
    }

    fn components(&self, hosts: &BTreeMap<String, SimHost>) -> Vec<Component> {
        self.nodes
            .iter()
            .map(|n| self.component(n, hosts))
            .collect()
    }

    fn components_on(&self, host: &str, hosts: &BTreeMap<String, SimHost>) -> Vec<Component> {
        self.on_host
            .get(host)
            .into_iter()
            .flatten()
            .map(|&i| self.component(&self.nodes[i], hosts))
            .collect()
    }

    fn violations(&self, components: &[Component], down: &BTreeSet<usize>) -> Vec<String> {
        // A host is up while any of its components is: it is down when as many of its
        // components are down as it has. Read from what is down, once per sample (the
        // replicas' checks below ask per replica).
        let mut down_on: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for &i in down {
            *down_on.entry(components[i].host.as_str()).or_default() += 1;
        }
        let host_down = |host: &str| {
            down_on
                .get(host)
                .is_some_and(|&n| n >= self.on_host.get(host).map_or(0, Vec::len))
        };
        let up = |host: &str| !host_down(host);
        let mut out = Vec::new();
        if !self
            .nodes
            .iter()
            .any(|n| n.role == "nameserver" && up(&n.host))
        {
            out.push("openmldb: no nameserver is up".to_string());
        }
        for t in &self.tables {
            let mut dead = Vec::new();
            for part in &t.partitions {
                let led = part.replicas.iter().any(|r| {
                    r.leader && r.alive && self.node_by_ep(&r.ep).is_some_and(|n| up(&n.host))
                });
                if !led {
                    dead.push(part.pid.to_string());
                }
            }
            if dead.is_empty() {
                continue;
            }
            if t.replicanum == 1 {
                out.push(format!(
                    "openmldb: single-replica table {}.{} is down",
                    t.db, t.name
                ));
            } else {
                out.push(format!(
                    "openmldb: {}.{} partition(s) {} have no live leader",
                    t.db,
                    t.name,
                    dead.join(", ")
                ));
            }
        }
        out
    }

    fn box_clone(&self) -> Box<dyn ProductModel> {
        Box::new(self.clone())
    }
}

impl OpenMldb {
    fn component(&self, n: &Node, hosts: &BTreeMap<String, SimHost>) -> Component {
        Component {
            name: format!("openmldb/{}@{}", n.role, n.host),
            host: n.host.clone(),
            up: self.running.contains_key(&n.host)
                && hosts
                    .get(&n.host)
                    .is_some_and(|s| s.ports.contains(&n.port)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pretty_table_centres_cells_as_python_does() {
        let t = pretty_table(&[
            vec!["ab".into(), "x".into()],
            vec!["1".into(), "yyyy".into()],
        ]);
        assert_eq!(
            t,
            "+----+------+\n| ab |  x   |\n+----+------+\n| 1  | yyyy |\n+----+------+"
        );
    }
}
