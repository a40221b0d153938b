//! The `dolphindb` product model: an HA cluster's machines, nodes, Raft leader and chunks, answering the clusterDemo scripts and the API's scripts as the lab double does.
//!
//! It answers what `lab/dolphindb/` (the double) answers, with the same outputs: the machine
//! scripts run from clusterDemo/ (`stopAllNodes.sh`, `startController.sh`, `startagent.sh`,
//! `upgrade.sh` with its prompts answered, exiting 0 when it fails), the stdlib's process
//! listing and file overlay, and the DolphinDB scripts of `stdlib/dolphindb.rhai` on each node's
//! endpoint. A node runs the version its machine's `server/dolphindb` held when it started. A
//! data node that starts sends its chunks RECOVERING; they are COMPLETE again after
//! `recovery_polls` chunk-status queries (the double: after a few seconds). The Raft leader is
//! re-elected among the live controllers when it goes, while a majority lives. Availability: a
//! chunk with no live replica, and a Raft group without a majority, are violations.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::ddb::{DdbKind, DdbValue};
use crate::inventory::Inventory;
use crate::transport::{Command, ExecOutput};

use super::model::{check_keys, output, settings_int, settings_strings, Component, ProductModel};
use super::SimHost;

/// The scripts `stdlib/dolphindb.rhai` runs on a machine (`sh -c SCRIPT sh SERVER ARGS..`).
const STOP: &str = "cd \"$1/clusterDemo\" && sh stopAllNodes.sh";
const START_CONTROLLER: &str = "cd \"$1/clusterDemo\" && sh startController.sh";
const START_AGENT: &str = "cd \"$1/clusterDemo\" && sh startagent.sh";
const UPGRADE: &str = "cd \"$1/clusterDemo\" && printf 'y\\n2\\n%s\\n' \"$2\" | bash upgrade.sh";
const RUNNING: &str = "here=$(cd \"$1/clusterDemo\" && pwd -P) || exit 1; for p in /proc/[0-9]*; do [ \"$(readlink \"$p/cwd\" 2>/dev/null)\" = \"$here\" ] || continue; tr '\\0' ' ' < \"$p/cmdline\" 2>/dev/null | grep -q dolphindb || continue; [ \"$(sed 's/.*) //' \"$p/stat\" 2>/dev/null | cut -c1)\" = Z ] && continue; echo \"${p#/proc/}\"; done";
const OVERLAY: &str = "set -e; mkdir -p \"$2\"; cd \"$1\"; for f in *; do case \"$f\" in clusterDemo|dolphindb.cfg|dolphindb.lic|config|data|log) continue;; esac; cp -rf \"$f\" \"$2/\"; done";
/// `dolphindb::plugins_in`: each `DIR/*/Plugin*.txt` and its first line.
const PLUGINS: &str = "for f in \"$1\"/*/Plugin*.txt; do [ -f \"$f\" ] || continue; printf '%s\\t%s\\n' \"$f\" \"$(head -n 1 \"$f\" | tr -d '\\r')\"; done";
/// `dolphindb::replace_plugin`: a plugin directory replaced by the new release's.
const REPLACE_DIR: &str = "rm -rf \"$2\" && cp -rf \"$1\" \"$2\"";
/// Top-level entries of server/ that the overlay leaves alone.
const KEPT: &[&str] = &[
    "clusterDemo",
    "dolphindb.cfg",
    "dolphindb.lic",
    "config",
    "data",
    "log",
];

/// The API scripts (whitespace collapsed).
const CHUNKS: &str = "select string(chunkId) as chunkId, file, state from rpc(getControllerAlias(), getClusterChunksStatus) where state != \"COMPLETE\"";
const MARKER: &str = "exec sum(version) from rpc(getControllerAlias(), getClusterChunksStatus)";
const PERF: &str =
    "select name, mode, int(state) as state from rpc(getControllerAlias(), getClusterPerf, true)";
/// `PERF` for some nodes only: `PERF_WHERE` then `"a","b"]`.
const PERF_WHERE: &str = "select name, mode, int(state) as state from rpc(getControllerAlias(), getClusterPerf, true) where name in [";

const MODES: &[&str] = &["datanode", "agent", "controller"];

#[derive(Debug, Clone)]
struct Node {
    alias: String,
    mode: &'static str,
    host: String,
    port: u16,
    endpoint: String,
    server: String,
    /// `dolphindb/MODE ALIAS@HOST`, its component's name (made once: availability asks after
    /// every change).
    component: String,
}

#[derive(Debug, Clone)]
struct Chunk {
    id: String,
    file: String,
    replicas: Vec<String>,
    version: i64,
    /// Chunk-status queries left before it is COMPLETE again (`u32::MAX`: stuck).
    recovering: u32,
    /// The replica that is catching up (its node restarted): it does not serve until then.
    recovering_on: Option<String>,
}

/// The DolphinDB cluster of a scenario (`model = "dolphindb"`), over the hosts of a group (one
/// machine each; host vars as the stdlib reads them). Settings: `chunks` (how many, default 6,
/// placed as the lab places them), `tables` (DFS tables `"dfs://db/table"` the probe may write),
/// `config` (`dfsHAMode`, `dfsReplicationFactor`, `dfsReplicaReliabilityLevel`; default Raft, 2,
/// 1), `releases` (`{ "2.00.8.12" = "2.00.8.12 2023.01.10" }`: what each package's
/// `version()` says), `recovery_polls` (default 1; plus one per `writes_per_poll` writes a chunk
/// took, when set: recovery grows with the data), `down` (aliases not running at the start),
/// `upgrade_fail` (hosts whose package does not unzip), `no_return` (`{ alias = "version" }`:
/// that node does not start with that version), `stuck_recovering` (chunk ids that stay
/// RECOVERING).
#[derive(Debug, Clone)]
pub struct DolphinDb {
    nodes: Vec<Arc<Node>>,
    /// Positions in `nodes` by endpoint, by alias and by host: every script and command looks
    /// its node up, and a rehearsal of a thousand machines sends a hundred thousand.
    by_endpoint: crate::FastMap<String, usize>,
    by_alias: crate::FastMap<String, usize>,
    by_host: crate::FastMap<String, Vec<usize>>,
    /// How many controllers the cluster has, and the chunks each data node holds a replica of
    /// (placement never changes): availability is sampled after every change and reads only
    /// what is down, not the whole cluster.
    controllers: usize,
    chunks_of: crate::FastMap<String, Vec<usize>>,
    /// The chunks whose `recovering` is above 0.
    recovering: BTreeSet<usize>,
    /// alias → (pid, version) of the nodes that run.
    running: BTreeMap<String, (u32, String)>,
    leader: Option<String>,
    chunks: Vec<Chunk>,
    tables: BTreeMap<String, Vec<i64>>,
    /// When each row of a table was written (simulated milliseconds), in insertion order.
    times: BTreeMap<String, Vec<i64>>,
    config: BTreeMap<String, String>,
    releases: BTreeMap<String, String>,
    recovery_polls: u32,
    /// Writes a chunk holds per extra recovery poll (0: recovery does not grow with data).
    writes_per_poll: i64,
    upgrade_fail: BTreeSet<String>,
    /// alias → the version it does not start with.
    no_return: BTreeMap<String, String>,
    stuck: BTreeSet<String>,
    /// Hosts whose nodes have not been read from their files yet (the start of the run).
    unread: BTreeSet<String>,
    down_at_start: BTreeSet<String>,
    next_pid: u32,
    /// Bumped by every change to what availability reads: `running`, `unread`, a chunk's
    /// recovery (`ProductModel::generation`).
    generation: u64,
    /// The hosts whose nodes started or stopped since the world last asked
    /// (`ProductModel::take_changed_hosts`).
    changed_hosts: BTreeSet<String>,
}

fn string_table(s: &toml::Table, key: &str) -> Result<BTreeMap<String, String>, String> {
    match s.get(key) {
        None => Ok(BTreeMap::new()),
        Some(toml::Value::Table(t)) => t
            .iter()
            .map(|(k, v)| match v {
                toml::Value::String(x) => Ok((k.clone(), x.clone())),
                toml::Value::Integer(i) => Ok((k.clone(), i.to_string())),
                _ => Err(format!("`{key}.{k}` must be a string")),
            })
            .collect(),
        Some(v) => Err(format!("`{key}` must be a table, not {}", v.type_str())),
    }
}

fn var<'a>(inv: &'a Inventory, host: &str, key: &str) -> Result<&'a serde_json::Value, String> {
    let h = inv.host(host).ok_or_else(|| format!("no host `{host}`"))?;
    h.vars.get(key).ok_or_else(|| {
        format!(
            "host `{host}` has no var `{key}` (the dolphindb model reads server, controller, controller_port, agent, agent_port, datanode, datanode_port)"
        )
    })
}

fn var_str(inv: &Inventory, host: &str, key: &str) -> Result<String, String> {
    match var(inv, host, key)? {
        serde_json::Value::String(s) => Ok(s.clone()),
        v => Err(format!(
            "host `{host}`: var `{key}` must be a string, not {v}"
        )),
    }
}

fn var_port(inv: &Inventory, host: &str, key: &str) -> Result<u16, String> {
    var(inv, host, key)?
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| format!("host `{host}`: var `{key}` must be a port number"))
}

/// The version a `server/dolphindb` of the lab holds (its `VERSION = "..."` line).
fn binary_version(state: &SimHost, server: &str) -> Option<String> {
    let text =
        String::from_utf8_lossy(state.files.get(&format!("{server}/dolphindb"))?).to_string();
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION = \"")?.strip_suffix('"'))
        .map(str::to_string)
}

type Answer = Result<DdbValue, (&'static str, String)>;

fn server_err(m: impl Into<String>) -> Answer {
    Err(("server", m.into()))
}

fn table(cols: Vec<(&str, Vec<DdbValue>)>) -> DdbValue {
    let n = cols.first().map_or(0, |c| c.1.len());
    DdbValue::Table {
        columns: cols.iter().map(|c| c.0.to_string()).collect(),
        rows: (0..n)
            .map(|i| cols.iter().map(|c| c.1[i].clone()).collect())
            .collect(),
    }
}

impl DolphinDb {
    pub(super) fn from_settings(
        hosts: Vec<String>,
        s: &toml::Table,
        inv: &Inventory,
    ) -> Result<Self, String> {
        check_keys(
            "dolphindb",
            s,
            &[
                "chunks",
                "tables",
                "config",
                "releases",
                "recovery_polls",
                "down",
                "upgrade_fail",
                "no_return",
                "stuck_recovering",
                "writes_per_poll",
            ],
        )?;
        let mut nodes = Vec::new();
        for mode in ["controller", "agent", "datanode"] {
            for h in &hosts {
                let address = inv.host(h).map(|e| e.address.clone()).unwrap_or_default();
                let server = var_str(inv, h, "server")?;
                let port = var_port(inv, h, &format!("{mode}_port"))?;
                let alias = var_str(inv, h, mode)?;
                let mode: &'static str = MODES
                    .iter()
                    .find(|m| **m == mode)
                    .copied()
                    .unwrap_or("datanode");
                nodes.push(Arc::new(Node {
                    component: format!("dolphindb/{mode} {alias}@{h}"),
                    alias,
                    mode,
                    host: h.clone(),
                    port,
                    endpoint: format!("{address}:{port}"),
                    server,
                }));
            }
        }
        let mut config: BTreeMap<String, String> = [
            ("dfsHAMode", "Raft"),
            ("dfsReplicationFactor", "2"),
            ("dfsReplicaReliabilityLevel", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        config.extend(string_table(s, "config")?);
        let rf: usize = config["dfsReplicationFactor"]
            .parse()
            .map_err(|_| "`config.dfsReplicationFactor` must be a number".to_string())?;
        let dns: Vec<String> = nodes
            .iter()
            .filter(|n| n.mode == "datanode")
            .map(|n| n.alias.clone())
            .collect();
        let n_chunks = settings_int(s, "chunks", 6)?.max(0) as usize;
        let chunks: Vec<Chunk> = (0..n_chunks)
            .map(|i| Chunk {
                id: format!("c0a8{i:04x}-0000-4000-8000-{i:012}"),
                file: format!("/stock/2023010{}/Apple", i % 9 + 1),
                replicas: (0..rf.min(dns.len()))
                    .map(|k| dns[(i + k) % dns.len()].clone())
                    .collect(),
                version: 1,
                recovering: 0,
                recovering_on: None,
            })
            .collect();
        let leader = nodes
            .iter()
            .find(|n| n.mode == "controller")
            .map(|n| n.alias.clone());
        let mut by_endpoint = crate::FastMap::default();
        let mut by_alias = crate::FastMap::default();
        let mut by_host: crate::FastMap<String, Vec<usize>> = crate::FastMap::default();
        for (i, n) in nodes.iter().enumerate() {
            by_endpoint.entry(n.endpoint.clone()).or_insert(i);
            by_alias.entry(n.alias.clone()).or_insert(i);
            by_host.entry(n.host.clone()).or_default().push(i);
        }
        let mut chunks_of: crate::FastMap<String, Vec<usize>> = crate::FastMap::default();
        for (i, c) in chunks.iter().enumerate() {
            for r in &c.replicas {
                chunks_of.entry(r.clone()).or_default().push(i);
            }
        }
        Ok(DolphinDb {
            controllers: nodes.iter().filter(|n| n.mode == "controller").count(),
            chunks_of,
            recovering: BTreeSet::new(),
            unread: hosts.iter().cloned().collect(),
            nodes,
            by_endpoint,
            by_alias,
            by_host,
            running: BTreeMap::new(),
            leader,
            chunks,
            tables: settings_strings(s, "tables")?
                .into_iter()
                .map(|t| (t, Vec::new()))
                .collect(),
            times: BTreeMap::new(),
            config,
            releases: string_table(s, "releases")?,
            recovery_polls: settings_int(s, "recovery_polls", 1)?.max(0) as u32,
            writes_per_poll: settings_int(s, "writes_per_poll", 0)?.max(0),
            upgrade_fail: settings_strings(s, "upgrade_fail")?.into_iter().collect(),
            no_return: string_table(s, "no_return")?,
            stuck: settings_strings(s, "stuck_recovering")?
                .into_iter()
                .collect(),
            down_at_start: settings_strings(s, "down")?.into_iter().collect(),
            next_pid: 20000,
            generation: 0,
            changed_hosts: BTreeSet::new(),
        })
    }

    /// At the first touch of a host, its nodes run what its install holds (unless `down`).
    fn read_host(&mut self, host: &str, state: &SimHost) {
        if !self.unread.remove(host) {
            return;
        }
        self.generation += 1;
        self.changed_hosts.insert(host.to_string());
        let nodes: Vec<Arc<Node>> = self.on_host(host).cloned().collect();
        for n in nodes {
            if self.down_at_start.contains(&n.alias) {
                continue;
            }
            if let Some(v) = binary_version(state, &n.server) {
                self.next_pid += 1;
                self.running.insert(n.alias.clone(), (self.next_pid, v));
            }
        }
    }

    fn read_all(&mut self, hosts: &BTreeMap<String, SimHost>) {
        let all: Vec<String> = self.unread.iter().cloned().collect();
        for h in all {
            if let Some(state) = hosts.get(&h) {
                self.read_host(&h, state);
            }
        }
    }

    /// A node as a component: up while it runs (on a host not touched yet: while its install
    /// holds a binary, as `read_host` will find it).
    fn component(&self, n: &Node, hosts: &BTreeMap<String, SimHost>) -> Component {
        let up = if self.unread.contains(&n.host) {
            !self.down_at_start.contains(&n.alias)
                && hosts
                    .get(&n.host)
                    .is_some_and(|h| binary_version(h, &n.server).is_some())
        } else {
            self.up(&n.alias)
        };
        Component {
            name: n.component.clone(),
            host: n.host.clone(),
            up,
        }
    }

    /// Whether the replica of chunk `c` on `alias` serves: its node is up and, when that node
    /// restarted, the chunk has recovered.
    fn serves(&self, c: &Chunk, alias: &str) -> bool {
        self.up(alias) && !(c.recovering > 0 && c.recovering_on.as_deref() == Some(alias))
    }

    fn up(&self, alias: &str) -> bool {
        self.running.contains_key(alias)
    }

    /// The nodes on `host`, in their order.
    fn on_host<'a>(&'a self, host: &str) -> impl Iterator<Item = &'a Arc<Node>> + 'a {
        self.by_host
            .get(host)
            .into_iter()
            .flatten()
            .map(|&i| &self.nodes[i])
    }

    fn of_mode<'a>(&'a self, mode: &'a str) -> impl Iterator<Item = &'a Arc<Node>> + 'a {
        self.nodes.iter().filter(move |n| n.mode == mode)
    }

    fn leader_now(&mut self) -> Result<String, (&'static str, String)> {
        if let Some(l) = self.leader.clone().filter(|l| self.up(l)) {
            return Ok(l);
        }
        let ctls: Vec<String> = self
            .of_mode("controller")
            .map(|n| n.alias.clone())
            .collect();
        let live: Vec<String> = ctls.iter().filter(|c| self.up(c)).cloned().collect();
        if live.len() * 2 > ctls.len() {
            self.leader = Some(live[0].clone());
            return Ok(live[0].clone());
        }
        Err((
            "server",
            "<UnknownLeader> The Raft group has no leader: fewer than a majority of the controllers are up.".into(),
        ))
    }

    /// Starts `node` on its machine from the binary its install holds now.
    fn start(&mut self, node: &Node, state: &mut SimHost) {
        if self.up(&node.alias) {
            return;
        }
        let Some(v) = binary_version(state, &node.server) else {
            return;
        };
        if self.no_return.get(&node.alias) == Some(&v) {
            return;
        }
        self.next_pid += 1;
        self.generation += 1;
        self.changed_hosts.insert(node.host.clone());
        self.running.insert(node.alias.clone(), (self.next_pid, v));
        state.open_port(node.port);
        if node.mode == "datanode" {
            for &i in self.chunks_of.get(&node.alias).into_iter().flatten() {
                let c = &mut self.chunks[i];
                c.recovering_on = Some(node.alias.clone());
                c.recovering = if self.stuck.contains(&c.id) {
                    u32::MAX
                } else if self.writes_per_poll > 0 {
                    // The replica copies what it missed: longer the more the chunk holds.
                    let more = (c.version / self.writes_per_poll).clamp(0, 10_000) as u32;
                    self.recovery_polls + more
                } else {
                    self.recovery_polls
                };
                if c.recovering > 0 {
                    self.recovering.insert(i);
                } else {
                    self.recovering.remove(&i);
                }
            }
        }
    }

    fn upgrade_sh(
        &mut self,
        host: &str,
        server: &str,
        version: &str,
        state: &mut SimHost,
    ) -> ExecOutput {
        let mut out = String::from(
            "Tips: please shut down all DolphinDB processes on this machine before upgrading.\n\
             Tips: please back up the metadata (dfsMeta, raft, CHUNK_METADATA) before upgrading.\n\
             1: OnlineUpgrade 2: OfflineUpgrade 3: EXIT\n",
        );
        let zip = format!("{server}/clusterDemo/DolphinDB_Linux64_V{version}.zip");
        if !state.exists(&zip) {
            out.push_str("DolphinDB package uploaded failed!  UpLoadFailure\n");
            return output(0, &out, "");
        }
        out.push_str("DolphinDB package uploaded successfully!  UpLoadSuccess\n");
        if self.upgrade_fail.contains(host) {
            out.push_str("DolphinDB package unzipped failed!  UnzipFailure\n");
            return output(0, &out, "");
        }
        out.push_str("DolphinDB package unzipped successfully!  UnzipSuccess\n");
        let new = self
            .releases
            .get(version)
            .cloned()
            .unwrap_or_else(|| version.to_string());
        let old = binary_version(state, server).unwrap_or_default();
        // The release's files: what the lab's package holds, with the new version in them.
        for f in [
            "dolphindb",
            "libDolphinDB.so",
            "web/index.html",
            "dolphindb.dos",
        ] {
            let p = format!("{server}/{f}");
            if let Some(body) = state.files.get(&p) {
                let text = String::from_utf8_lossy(body).replace(&old, &new);
                state.write(&p, text.into_bytes());
            }
        }
        state.remove(&zip);
        out.push_str("DolphinDB upgraded successfully!  UpgradeSuccess\n");
        output(0, &out, "")
    }

    /// The plugin descriptions under `dir`: `<dir>/<sub>/Plugin*.txt`, a line each with its
    /// first line, as the shell's glob lists them (sorted).
    fn plugins(dir: &str, state: &SimHost) -> ExecOutput {
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        let mut out = String::new();
        for (p, body) in &state.files {
            let Some(rel) = p.strip_prefix(&prefix) else {
                continue;
            };
            let parts: Vec<&str> = rel.split('/').collect();
            if parts.len() != 2 || !parts[1].starts_with("Plugin") || !parts[1].ends_with(".txt") {
                continue;
            }
            let text = String::from_utf8_lossy(body);
            let first = text.lines().next().unwrap_or("").trim_end_matches('\r');
            out.push_str(&format!("{p}\t{first}\n"));
        }
        output(0, &out, "")
    }

    /// `rm -rf TO && cp -rf FROM TO` on the simulated files.
    fn replace_dir(from: &str, to: &str, state: &mut SimHost) -> ExecOutput {
        let (from, to) = (from.trim_end_matches('/'), to.trim_end_matches('/'));
        if !state.exists(from) {
            return output(
                1,
                "",
                &format!("cp: cannot stat '{from}': No such file or directory\n"),
            );
        }
        state.remove(to);
        let prefix = format!("{from}/");
        let copies: Vec<(String, Vec<u8>)> = state
            .files
            .iter()
            .filter_map(|(p, b)| Some((format!("{to}/{}", p.strip_prefix(&prefix)?), b.clone())))
            .collect();
        state.dirs.insert(to.to_string());
        for (p, b) in copies {
            state.write(&p, b);
        }
        output(0, "", "")
    }

    fn overlay(from: &str, to: &str, state: &mut SimHost) -> ExecOutput {
        let from = from.trim_end_matches('/');
        let to = to.trim_end_matches('/');
        if !state.exists(from) {
            return output(2, "", &format!("sh: 1: cd: can't cd to {from}\n"));
        }
        let prefix = format!("{from}/");
        let copies: Vec<(String, Vec<u8>)> = state
            .files
            .iter()
            .filter_map(|(p, body)| {
                let rel = p.strip_prefix(&prefix)?;
                let top = rel.split('/').next().unwrap_or(rel);
                (!KEPT.contains(&top)).then(|| (format!("{to}/{rel}"), body.clone()))
            })
            .collect();
        state.dirs.insert(to.to_string());
        for (p, body) in copies {
            state.write(&p, body);
        }
        output(0, "", "")
    }

    fn node_at(&self, endpoint: &str) -> Option<Arc<Node>> {
        self.by_endpoint
            .get(endpoint)
            .map(|&i| self.nodes[i].clone())
    }

    /// `now_ms`: the simulated clock, what the node's `now()` answers.
    fn answer(
        &mut self,
        node: &Node,
        script: &str,
        hosts: &mut BTreeMap<String, SimHost>,
        now_ms: i64,
    ) -> Answer {
        let s = script.split_whitespace().collect::<Vec<_>>().join(" ");
        match s.as_str() {
            "version()" => return Ok(DdbValue::Str(self.running[&node.alias].1.clone())),
            "getNodeAlias()" => return Ok(DdbValue::Str(node.alias.clone())),
            "getActiveMaster()" => return self.leader_now().map(DdbValue::Str),
            "pnodeRun(version)" | "pnodeRun(getConfig{`chunkMetaDir})" => {
                let mut names = Vec::new();
                let mut values = Vec::new();
                let dns: Vec<Arc<Node>> = self.of_mode("datanode").cloned().collect();
                for n in dns {
                    if !self.up(&n.alias) {
                        return server_err(format!(
                            "<DataNodeNotAvail>The data node {} is not available.",
                            n.alias
                        ));
                    }
                    names.push(DdbValue::Str(n.alias.clone()));
                    values.push(DdbValue::Str(if s == "pnodeRun(version)" {
                        self.running[&n.alias].1.clone()
                    } else {
                        format!("{}/clusterDemo/data/{}/storage", n.server, n.alias)
                    }));
                }
                return Ok(table(vec![("node", names), ("value", values)]));
            }
            CHUNKS => {
                self.leader_now()?;
                let bad: Vec<&Chunk> = self.recovering.iter().map(|&i| &self.chunks[i]).collect();
                let t = table(vec![
                    (
                        "chunkId",
                        bad.iter().map(|c| DdbValue::Str(c.id.clone())).collect(),
                    ),
                    (
                        "file",
                        bad.iter().map(|c| DdbValue::Str(c.file.clone())).collect(),
                    ),
                    (
                        "state",
                        bad.iter()
                            .map(|_| DdbValue::Str("RECOVERING".into()))
                            .collect(),
                    ),
                ]);
                let recovering: Vec<usize> = self.recovering.iter().copied().collect();
                for i in recovering {
                    let c = &mut self.chunks[i];
                    if c.recovering != u32::MAX {
                        c.recovering -= 1;
                        self.generation += 1;
                        if c.recovering == 0 {
                            self.recovering.remove(&i);
                        }
                    }
                }
                return Ok(t);
            }
            MARKER => {
                self.leader_now()?;
                return Ok(DdbValue::Int(self.chunks.iter().map(|c| c.version).sum()));
            }
            _ if s == PERF || s.starts_with(PERF_WHERE) => {
                self.leader_now()?;
                // `where name in ["a","b"]` keeps the rows of those names, in the table's order;
                // a name no node has matches nothing.
                let order: Vec<Arc<Node>> = match s.strip_prefix(PERF_WHERE) {
                    None => self.nodes.clone(),
                    Some(rest) => {
                        let Some(list) = rest.strip_suffix(']') else {
                            return server_err(format!("Syntax Error: [line #1] {s}"));
                        };
                        let mut at: Vec<usize> = list
                            .split(',')
                            .filter_map(|n| self.by_alias.get(n.trim().trim_matches('"')).copied())
                            .collect();
                        at.sort_unstable();
                        at.dedup();
                        at.into_iter().map(|i| self.nodes[i].clone()).collect()
                    }
                };
                return Ok(table(vec![
                    (
                        "name",
                        order
                            .iter()
                            .map(|n| DdbValue::Str(n.alias.clone()))
                            .collect(),
                    ),
                    (
                        "mode",
                        order
                            .iter()
                            .map(|n| {
                                DdbValue::Int(
                                    MODES.iter().position(|m| *m == n.mode).unwrap_or(0) as i64
                                )
                            })
                            .collect(),
                    ),
                    (
                        "state",
                        order
                            .iter()
                            .map(|n| DdbValue::Int(i64::from(self.up(&n.alias))))
                            .collect(),
                    ),
                ]));
            }
            _ => {}
        }
        if let Some(key) = s
            .strip_prefix("getConfig(`")
            .and_then(|r| r.strip_suffix(')'))
        {
            let own = match (node.mode, key) {
                ("controller", "dfsMetaDir") => Some(format!(
                    "{}/clusterDemo/data/{}/dfsMeta",
                    node.server, node.alias
                )),
                ("datanode", "chunkMetaDir") => Some(format!(
                    "{}/clusterDemo/data/{}/storage",
                    node.server, node.alias
                )),
                _ => None,
            };
            return match own.or_else(|| self.config.get(key).cloned()) {
                Some(v) => Ok(DdbValue::Str(v)),
                None => server_err(format!(
                    "getConfig: the configuration parameter {key} is not set on {}.",
                    node.alias
                )),
            };
        }
        if let Some(list) = s
            .strip_prefix("startDataNode(")
            .and_then(|r| r.strip_suffix(')'))
        {
            if node.mode != "controller" {
                return server_err("startDataNode only runs on a controller.");
            }
            let l = self.leader_now()?;
            if l != node.alias {
                let ln = self.by_alias.get(&l).map(|&i| self.nodes[i].clone());
                let at = ln.map(|n| n.endpoint.clone()).unwrap_or_default();
                return server_err(format!("<NotLeader>{at}"));
            }
            let aliases: Vec<String> = list
                .split('"')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect();
            for a in aliases {
                let Some(n) = self
                    .by_alias
                    .get(&a)
                    .map(|&i| &self.nodes[i])
                    .filter(|n| n.mode == "datanode")
                    .cloned()
                else {
                    return server_err(format!("startDataNode: {a} is not a data node."));
                };
                let agent = self
                    .on_host(&n.host)
                    .find(|x| x.mode == "agent")
                    .map(|x| x.alias.clone());
                if !agent.is_some_and(|x| self.up(&x)) {
                    return server_err(format!(
                        "startDataNode: the agent of {a} is not available."
                    ));
                }
                if let Some(state) = hosts.get_mut(&n.host) {
                    self.start(&n, state);
                }
            }
            return Ok(DdbValue::Null);
        }
        if let Some(rest) = s.strip_prefix("tableInsert(loadTable(\"") {
            if node.mode != "datanode" {
                return server_err("loadTable: only data nodes serve DFS tables.");
            }
            // tableInsert(loadTable("DB", "T"), now(), "NAME", ID)
            let id: i64 = rest
                .rsplit(", ")
                .next()
                .and_then(|x| x.strip_suffix(')'))
                .and_then(|x| x.parse().ok())
                .unwrap_or(0);
            let key = table_key(rest);
            if !self.tables.contains_key(&key) {
                return server_err(format!("loadTable: table {key} does not exist."));
            }
            let n = self.chunks.len().max(1);
            let i = usize::try_from(id).unwrap_or(0) % n;
            if let Some(c) = self.chunks.get(i) {
                if !c.replicas.iter().any(|r| self.serves(c, r)) {
                    return server_err(format!("The chunk {} has no available replica.", c.id));
                }
            }
            if let Some(c) = self.chunks.get_mut(i) {
                c.version += 1;
            }
            self.tables.entry(key.clone()).or_default().push(id);
            self.times.entry(key).or_default().push(now_ms);
            return Ok(DdbValue::Int(1));
        }
        if let Some(db) = s
            .strip_prefix("existsDatabase(\"")
            .and_then(|r| r.strip_suffix("\")"))
        {
            let prefix = format!("{db}/");
            return Ok(DdbValue::Bool(
                self.tables.keys().any(|k| k.starts_with(&prefix)),
            ));
        }
        if let Some(db) = s
            .strip_prefix("dropDatabase(\"")
            .and_then(|r| r.strip_suffix("\")"))
        {
            if node.mode != "datanode" {
                return server_err("Only data nodes serve DFS databases.");
            }
            let prefix = format!("{db}/");
            if !self.tables.keys().any(|k| k.starts_with(&prefix)) {
                return server_err(format!("The database [{db}] does not exist."));
            }
            self.tables.retain(|k, _| !k.starts_with(&prefix));
            self.times.retain(|k, _| !k.starts_with(&prefix));
            return Ok(DdbValue::Null);
        }
        // db = database("DB", HASH, [INT, N]); db.createPartitionedTable(table(1:0, `time`name`id,
        // [TIMESTAMP, SYMBOL, INT]), "T", "id")
        if let Some(rest) = s.strip_prefix("db = database(\"") {
            let parts: Vec<&str> = rest.split('"').collect();
            let shape =
                "db.createPartitionedTable(table(1:0, `time`name`id, [TIMESTAMP, SYMBOL, INT]), ";
            if parts.len() < 5 || !rest.contains(shape) || !parts[1].starts_with(", HASH, [INT, ") {
                return server_err(format!("The lab double does not know this script: {s}"));
            }
            if node.mode != "datanode" {
                return server_err("Only data nodes serve DFS databases.");
            }
            let (db, t) = (parts[0], parts[2]);
            let prefix = format!("{db}/");
            if self.tables.keys().any(|k| k.starts_with(&prefix)) {
                return server_err(format!("The database [{db}] already exists."));
            }
            self.tables.insert(format!("{db}/{t}"), Vec::new());
            return Ok(DdbValue::Null);
        }
        if let Some(rest) = s.strip_prefix("exec long(now()) - long(max(time)) from loadTable(\"") {
            let key = table_key(rest);
            if !self.tables.contains_key(&key) {
                return server_err(format!("loadTable: table {key} does not exist."));
            }
            return match self.times.get(&key).and_then(|t| t.iter().max()) {
                Some(last) => Ok(DdbValue::Int(now_ms - last)),
                None => server_err("max(time) of an empty table is NULL."),
            };
        }
        if let Some(rest) = s.strip_prefix("exec id from loadTable(\"") {
            let key = table_key(rest);
            return match self.tables.get(&key) {
                Some(ids) => Ok(DdbValue::List(
                    ids.iter().map(|i| DdbValue::Int(*i)).collect(),
                )),
                None => server_err(format!("loadTable: table {key} does not exist.")),
            };
        }
        server_err(format!(
            "The lab double does not know this script: {}",
            s.chars().take(200).collect::<String>()
        ))
    }
}

/// `DB/T` from what follows `loadTable("` in a script: `DB", "T")...`.
fn table_key(rest: &str) -> String {
    let parts: Vec<&str> = rest.split('"').collect();
    format!(
        "{}/{}",
        parts.first().copied().unwrap_or(""),
        parts.get(2).copied().unwrap_or("")
    )
}

impl ProductModel for DolphinDb {
    fn name(&self) -> &str {
        "dolphindb"
    }

    fn exec(&mut self, host: &str, command: &Command, state: &mut SimHost) -> Option<ExecOutput> {
        let Command::Argv(argv) = command else {
            return None;
        };
        if argv.len() < 5 || argv[0] != "sh" || argv[1] != "-c" {
            return None;
        }
        let server = argv[4].trim_end_matches('/').to_string();
        let machine: Vec<Arc<Node>> = self
            .on_host(host)
            .filter(|n| n.server == server)
            .cloned()
            .collect();
        let script = argv[2].as_str();
        if script == OVERLAY {
            return Some(Self::overlay(&argv[4], argv.get(5)?, state));
        }
        if script == PLUGINS {
            return Some(Self::plugins(&argv[4], state));
        }
        if script == REPLACE_DIR {
            return Some(Self::replace_dir(&argv[4], argv.get(5)?, state));
        }
        if machine.is_empty() {
            return None;
        }
        self.read_host(host, state);
        match script {
            STOP => {
                self.generation += 1;
                for n in &machine {
                    self.changed_hosts.insert(n.host.clone());
                    self.running.remove(&n.alias);
                    state.ports.remove(&n.port);
                }
                Some(output(0, "", ""))
            }
            START_CONTROLLER | START_AGENT => {
                let mode = if script == START_CONTROLLER {
                    "controller"
                } else {
                    "agent"
                };
                if let Some(n) = machine.iter().find(|n| n.mode == mode) {
                    self.start(n, state);
                }
                Some(output(0, "", ""))
            }
            RUNNING => {
                let pids: String = machine
                    .iter()
                    .filter_map(|n| self.running.get(&n.alias))
                    .map(|(pid, _)| format!("{pid}\n"))
                    .collect();
                Some(output(0, &pids, ""))
            }
            UPGRADE => {
                let version = argv.get(5)?.clone();
                Some(self.upgrade_sh(host, &server, &version, state))
            }
            _ => None,
        }
    }

    fn ddb(
        &mut self,
        endpoint: &str,
        kind: DdbKind,
        script: &str,
        hosts: &mut BTreeMap<String, SimHost>,
        now: std::time::Duration,
    ) -> Option<Answer> {
        let node = self.node_at(endpoint)?;
        self.read_all(hosts);
        if !self.up(&node.alias) {
            return Some(Err((
                "connect",
                "connect: Connection refused (os error 111)".into(),
            )));
        }
        if kind == DdbKind::Connect {
            return Some(Ok(DdbValue::Null));
        }
        Some(self.answer(&node, script, hosts, now.as_millis() as i64))
    }

    fn components(&self, hosts: &BTreeMap<String, SimHost>) -> Vec<Component> {
        self.nodes
            .iter()
            .map(|n| self.component(n, hosts))
            .collect()
    }

    // The world asks after every change on a host: answer from that host's nodes only.
    fn components_on(&self, host: &str, hosts: &BTreeMap<String, SimHost>) -> Vec<Component> {
        self.on_host(host)
            .map(|n| self.component(n, hosts))
            .collect()
    }

    fn generation(&self) -> Option<u64> {
        Some(self.generation)
    }

    fn take_changed_hosts(&mut self) -> Option<Vec<String>> {
        Some(
            std::mem::take(&mut self.changed_hosts)
                .into_iter()
                .collect(),
        )
    }

    fn violations(&self, components: &[Component], down: &BTreeSet<usize>) -> Vec<String> {
        // The aliases down, from the components' names (`dolphindb/MODE ALIAS@HOST`): a handful
        // while a machine restarts, whatever the cluster's size.
        let down: std::collections::HashSet<&str> = down
            .iter()
            .filter_map(|&i| components[i].name.split(' ').nth(1)?.split('@').next())
            .collect();
        let up = |alias: &str| !down.contains(alias);
        let mut out = Vec::new();
        let ctls = self.controllers;
        let live = ctls
            - down
                .iter()
                .filter(|a| {
                    self.by_alias
                        .get(**a)
                        .is_some_and(|&i| self.nodes[i].mode == "controller")
                })
                .count();
        if live * 2 <= ctls {
            out.push(format!(
                "dolphindb: the controllers' Raft group has no majority ({live} of {ctls} up)"
            ));
        }
        // A replica counts once it is COMPLETE: a restarted node's replica is live only after
        // its chunk recovered.
        // Only a chunk with a replica down or recovering can have no live one.
        let candidates: BTreeSet<usize> = down
            .iter()
            .filter_map(|a| self.chunks_of.get(*a))
            .flatten()
            .chain(&self.recovering)
            .copied()
            .collect();
        let lost: Vec<&str> = candidates
            .iter()
            .map(|&i| &self.chunks[i])
            .filter(|c| {
                !c.replicas.iter().any(|r| {
                    up(r) && !(c.recovering > 0 && c.recovering_on.as_deref() == Some(r.as_str()))
                })
            })
            .map(|c| c.id.as_str())
            .collect();
        if !lost.is_empty() {
            out.push(format!(
                "dolphindb: {} chunk(s) have no live COMPLETE replica: {}",
                lost.len(),
                lost.join(", ")
            ));
        }
        out
    }

    fn box_clone(&self) -> Box<dyn ProductModel> {
        Box::new(self.clone())
    }
}
