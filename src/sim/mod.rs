//! The simulated world: scenario files, and hosts with files, ports and scripted command answers.

mod answer;
mod apply;
mod availability;
mod docker;
mod dolphindb;
pub mod faults;
mod host;
pub mod model;
pub mod oceanbase;
mod oms;
pub mod openmldb;
pub mod products;
mod scenario;
pub mod sqlstore;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use sha2::Digest;
use toml::Spanned;

use crate::action::{Action, Outcome};
use crate::backup::{manifest_path, BackupInfo, Manifest, ManifestFile};
use crate::docker::DockerOp;
use crate::error::Fault;
use crate::error::{Error, FaultKind, Result};
use crate::inventory::{config_error, Dur, Inventory, InventorySpec};
use crate::report::{AvailabilitySample, FiredFault, HostChange, SimReport};
use crate::sql::{SqlKind, SqlResult, SqlValue};
use crate::transport::{Command, ExecOutput};

/// A byte count written as `"10GiB"`, `"500MB"` or a plain number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            T(String),
        }
        match Raw::deserialize(d) {
            Ok(Raw::N(n)) => Ok(Size(n)),
            Ok(Raw::T(t)) => parse_size(&t).map(Size).map_err(serde::de::Error::custom),
            Err(_) => Err(serde::de::Error::custom(
                "expected a size such as \"10GiB\" or a number of bytes",
            )),
        }
    }
}

/// `10GiB`, `500 MB`, `1.5 TiB` or a number of bytes (bytesize's units: KB is 1000, KiB 1024).
fn parse_size(t: &str) -> std::result::Result<u64, String> {
    t.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("invalid size {t:?}: {e} (a size such as 10GiB, 500MB or 1.5 TiB)"))
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostState {
    /// Path → contents.
    #[serde(default)]
    files: BTreeMap<String, String>,
    #[serde(default)]
    dirs: Vec<String>,
    free_space: Option<Size>,
    /// Ports accepting connections at the start.
    #[serde(default)]
    ports: Vec<u16>,
    /// The host's docker engine: images, containers (absent: an engine with nothing in it).
    docker: Option<docker::DockerSpec>,
    /// Command lines of the processes running at the start (`pgrep -f`/`pkill -f` see them).
    #[serde(default)]
    processes: Vec<String>,
    /// Another run's maintenance lock on the host at the start: the rehearsal is refused as the
    /// real run would be (exit 5), unless it has expired and `--take-over-lock` is given.
    host_lock: Option<SimLockSpec>,
}

/// `[hosts.NAME.host_lock]`: who holds the host's lock.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SimLockSpec {
    run: String,
    #[serde(default = "someone")]
    operator: String,
    #[serde(default = "another_machine")]
    controller: String,
    /// The lease left when the rehearsal starts (default 10m).
    lease_left: Option<Dur>,
    /// Its holder was killed long enough ago that the lease has run out.
    #[serde(default)]
    expired: bool,
}

fn someone() -> String {
    "someone".into()
}

fn another_machine() -> String {
    "another-machine".into()
}

/// The simulated hosts' clock for locks: any fixed epoch does (only differences are shown).
const LOCK_EPOCH: u64 = 1_800_000_000;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    /// Host name pattern (`*` and `?` wildcards); every host when absent.
    host: Option<String>,
    /// Command line pattern, matched against the command as shown in plans.
    command: String,
    #[serde(default)]
    code: i32,
    #[serde(default)]
    stdout: String,
    #[serde(default)]
    stderr: String,
    /// Effects on the host's state when the rule answers.
    #[serde(default)]
    open_ports: Vec<u16>,
    #[serde(default)]
    close_ports: Vec<u16>,
    #[serde(default)]
    write: BTreeMap<String, String>,
    #[serde(default)]
    remove: Vec<String>,
    /// For `docker exec` commands: lines the container logs (what `wait_log` waits for).
    #[serde(default)]
    log: Vec<String>,
    /// How long the command takes in simulated time.
    duration: Option<Dur>,
    /// Answer only this many times, then let later rules answer.
    times: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Defaults {
    free_space: Option<Size>,
    /// Simulated duration per operation name (`exec`, `write_file`, `copy`, ...).
    #[serde(default)]
    durations: BTreeMap<String, Dur>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioSpec {
    description: Option<String>,
    inventory: Option<Spanned<InventorySpec>>,
    inventory_file: Option<Spanned<String>>,
    #[serde(default)]
    params: toml::Table,
    #[serde(default)]
    defaults: Defaults,
    #[serde(default)]
    hosts: BTreeMap<String, Spanned<HostState>>,
    #[serde(default)]
    rules: Vec<Spanned<RuleSpec>>,
    /// Answers of simulated SQL servers.
    #[serde(default)]
    sql: Vec<Spanned<SqlRuleSpec>>,
    /// Products running on the hosts (their models answer their commands and say what is up).
    #[serde(default)]
    products: Vec<Spanned<ProductSpec>>,
    /// Failures to inject.
    #[serde(default)]
    faults: Vec<Spanned<faults::FaultSpec>>,
    /// Simulated SQL servers with a plain store (an inventory host, or `address:port`).
    #[serde(default)]
    sql_servers: BTreeMap<String, Spanned<SqlServerSpec>>,
}

/// `[sql_servers.NAME]`: the statements that build the server's tables and rows.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlServerSpec {
    #[serde(default)]
    init: Vec<String>,
}

/// `[[products]]`: a model over some hosts, with the model's own settings beside.
#[derive(Debug, Clone, Deserialize)]
struct ProductSpec {
    model: String,
    /// Host name pattern; every host when absent.
    hosts: Option<String>,
    /// Or an inventory group.
    group: Option<String>,
    #[serde(flatten)]
    settings: toml::Table,
}

/// `[[sql]]`: how a simulated SQL server answers statements that match.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlRuleSpec {
    /// The server: an inventory host pattern, or `address:port`; every server when absent.
    host: Option<String>,
    /// Statement pattern (`*` and `?` wildcards), matched against the statement on one line.
    statement: String,
    /// Rows of a query, as tables of column = value.
    #[serde(default)]
    rows: Vec<toml::Table>,
    /// Rows a change affected.
    #[serde(default)]
    affected: u64,
    /// Answer with this server error instead.
    error_code: Option<u16>,
    error_message: Option<String>,
    /// Answer only this many times, then let later rules answer.
    times: Option<u32>,
}

impl SqlRuleSpec {
    fn rows_checked(&self) -> std::result::Result<(), String> {
        for (i, row) in self.rows.iter().enumerate() {
            for (k, v) in row {
                if matches!(v, toml::Value::Array(_) | toml::Value::Table(_)) {
                    return Err(format!("rows[{i}].{k}: a column value must be a scalar"));
                }
            }
        }
        Ok(())
    }

    fn result(&self) -> SqlResult {
        let mut columns: Vec<String> = Vec::new();
        for row in &self.rows {
            for k in row.keys() {
                if !columns.contains(k) {
                    columns.push(k.clone());
                }
            }
        }
        let rows = self
            .rows
            .iter()
            .map(|row| {
                columns
                    .iter()
                    .map(|c| match row.get(c) {
                        None => SqlValue::Null,
                        Some(toml::Value::Integer(i)) => SqlValue::Int(*i),
                        Some(toml::Value::Float(f)) => SqlValue::Float(*f),
                        Some(toml::Value::Boolean(b)) => SqlValue::Int(i64::from(*b)),
                        Some(toml::Value::String(s)) => SqlValue::Text(s.clone()),
                        Some(other) => SqlValue::Text(other.to_string()),
                    })
                    .collect()
            })
            .collect();
        SqlResult {
            columns,
            rows,
            affected: self.affected,
            last_insert_id: None,
        }
    }
}

/// A scenario: the inventory, params and starting state of a simulated world.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub source: String,
    pub description: Option<String>,
    pub inventory: Inventory,
    /// Params the scenario gives the playbook (the CLI's `-p` wins).
    pub params: BTreeMap<String, serde_json::Value>,
    defaults: Defaults,
    hosts: BTreeMap<String, HostState>,
    rules: Vec<(RuleSpec, glob::Pattern, Option<glob::Pattern>)>,
    sql_rules: Vec<(SqlRuleSpec, glob::Pattern, Option<glob::Pattern>)>,
    models: Vec<Box<dyn model::ProductModel>>,
    faults: Vec<faults::ActiveFault>,
    sql_servers: BTreeMap<String, Vec<String>>,
}

/// A host pattern of a rule, which must match some inventory host.
fn host_pattern(
    inventory: &Inventory,
    pattern: Option<&str>,
) -> std::result::Result<Option<glob::Pattern>, String> {
    let Some(h) = pattern else { return Ok(None) };
    let p = glob::Pattern::new(h).map_err(|e| format!("bad host pattern: {e}"))?;
    if !inventory.hosts.iter().any(|x| p.matches(&x.name)) {
        return Err(format!(
            "host pattern `{h}` matches no host in the inventory"
        ));
    }
    Ok(Some(p))
}

/// One simulated host: a file tree, free space and listening ports.
#[derive(Debug, Clone, Default)]
pub struct SimHost {
    pub files: BTreeMap<String, Vec<u8>>,
    pub dirs: BTreeSet<String>,
    pub free_space: u64,
    pub ports: BTreeSet<u16>,
    pub docker: docker::SimDocker,
    /// Ports a `stays_down` fault keeps closed.
    pub held_down: BTreeSet<u16>,
    /// Running processes: pid → command line.
    pub processes: BTreeMap<u32, String>,
    next_pid: u32,
    /// The simulated clock when the action being applied started: models that need time to
    /// pass (a container still starting) read it.
    pub now: Duration,
}

fn norm(p: &str) -> String {
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        "/".into()
    } else {
        t.to_string()
    }
}

fn parent(p: &str) -> Option<String> {
    let p = norm(p);
    p.rfind('/').map(|i| {
        if i == 0 {
            "/".to_string()
        } else {
            p[..i].to_string()
        }
    })
}

fn under(p: &str, dir: &str) -> bool {
    let d = dir.trim_end_matches('/');
    p == dir || p.strip_prefix(d).is_some_and(|rest| rest.starts_with('/'))
}

/// Whether `p` starts with `dir/` (what `p.starts_with(&format!("{dir}/"))` tells, without
/// making the string: `changes` asks it for every pair of new directories of every host).
fn is_under(p: &str, dir: &str) -> bool {
    p.strip_prefix(dir)
        .is_some_and(|rest| rest.starts_with('/'))
}

type Rule = (RuleSpec, glob::Pattern, Option<glob::Pattern>, u32);

/// What a scenario rule answered a command with.
struct RuleAnswer {
    out: ExecOutput,
    took: Option<Duration>,
    /// Lines for the container's log (`docker exec`).
    log: Vec<String>,
}

/// The first rule (with answers left) that matches `line` (or the program `argv0`) on `host`:
/// its effects applied to the host, its answer returned.
fn answer_by_rule(
    rules: &mut [Rule],
    host: &str,
    line: &str,
    argv0: Option<&str>,
    h: &mut SimHost,
) -> Option<RuleAnswer> {
    let (r, _, _, used) = rules.iter_mut().find(|(r, cmd, hp, used)| {
        hp.as_ref().is_none_or(|p| p.matches(host))
            && (cmd.matches(line) || argv0.is_some_and(|a| cmd.matches(a)))
            && r.times.is_none_or(|t| *used < t)
    })?;
    *used += 1;
    for p in &r.open_ports {
        h.open_port(*p);
    }
    for p in &r.close_ports {
        h.ports.remove(p);
    }
    for (p, c) in &r.write {
        h.write(p, c.as_bytes().to_vec());
    }
    for p in &r.remove {
        h.remove(p);
    }
    Some(RuleAnswer {
        out: ExecOutput {
            code: Some(r.code),
            signal: None,
            stdout: r.stdout.clone().into_bytes(),
            stderr: r.stderr.clone().into_bytes(),
            truncated: false,
        },
        took: r.duration.map(|d| d.0),
        log: r.log.clone(),
    })
}

/// The simulated world a playbook runs against in `simulate` mode. No network, no sleeping.
#[derive(Debug)]
pub struct World {
    /// Plain SQL stores of simulated servers, by inventory host or `address:port`.
    sql_stores: BTreeMap<String, sqlstore::SqlStore>,
    pub hosts: BTreeMap<String, SimHost>,
    /// The hosts as the scenario started them, to tell what a run changed.
    initial: Option<BTreeMap<String, SimHost>>,
    models: Vec<Box<dyn model::ProductModel>>,
    faults: Vec<faults::ActiveFault>,
    fired: Vec<FiredFault>,
    /// Step names and their numbers (from 1) in the order the world first saw them (faults
    /// count steps).
    steps_seen: crate::FastMap<String, usize>,
    availability: Vec<AvailabilitySample>,
    /// Each model's components as last read (availability is updated host by host), and where
    /// each host's components are in them.
    comps: Vec<Vec<model::Component>>,
    comp_index: crate::FastMap<String, Vec<(usize, usize)>>,
    /// Each model's components down now, by position: a sample reads these, not every
    /// component.
    down: Vec<std::collections::BTreeSet<usize>>,
    /// What the last availability sample said was down (a sample records the difference).
    sampled_down: std::collections::BTreeSet<(usize, usize)>,
    /// `(model, component)` of the components whose state may differ from `sampled_down`: a
    /// sample compares these only, not everything down (half a cluster can be down at once).
    dirty: std::collections::BTreeSet<(usize, usize)>,
    /// Components down at the last sample that no model lists any more: up at the next one.
    vanished: Vec<String>,
    /// Each model's `generation` when `comps` was last read in full, and how many full reads
    /// there were (the complexity tests count them).
    comps_generation: Vec<Option<u64>>,
    full_reads: u64,
    /// The step of the action being applied (for samples and fired faults).
    step: Option<String>,
    /// Components read one by one after a change (the complexity tests count them).
    comp_reads: u64,
    rules: Vec<Rule>,
    sql_rules: Vec<(SqlRuleSpec, glob::Pattern, Option<glob::Pattern>, u32)>,
    durations: BTreeMap<String, Duration>,
    clock: Duration,
    /// Other runs' locks on the hosts at the start (`host_lock` in the scenario).
    host_locks: BTreeMap<String, crate::hostlock::Holder>,
}

impl crate::action::Simulated for World {
    fn apply(
        &mut self,
        host: &str,
        step: Option<&str>,
        action: &Action,
    ) -> std::result::Result<Outcome, Fault> {
        self.apply_in(host, step, action)
    }
    fn now(&self) -> Duration {
        self.clock
    }
    fn advance(&mut self, d: Duration) {
        self.clock += d;
    }
    fn unreachable_at_start(&mut self) -> Vec<(String, String)> {
        World::unreachable_at_start(self)
    }
    fn host_lock(&self, host: &str) -> Option<(crate::hostlock::Holder, u64)> {
        World::host_lock(self, host)
    }
}

impl World {
    /// Another run's lock on `host`, and the host's clock now (unix seconds), if it has one.
    pub fn host_lock(&self, host: &str) -> Option<(crate::hostlock::Holder, u64)> {
        let h = self.host_locks.get(host)?;
        Some((h.clone(), LOCK_EPOCH + self.clock.as_secs()))
    }

    pub fn now(&self) -> Duration {
        self.clock
    }
    pub fn advance(&mut self, d: Duration) {
        self.clock += d;
    }

    fn duration_of(&self, op: &str) -> Duration {
        self.durations.get(op).copied().unwrap_or(match op {
            "exec" | "read" => Duration::from_millis(500),
            "replace_dir" | "copy" | "upload" => Duration::from_secs(2),
            "snapshot" | "mysqldump" | "mysql_load" | "restore_snapshot" => Duration::from_secs(5),
            "docker_load" | "docker_save" => Duration::from_secs(20),
            "docker_stop" | "docker_restart" => Duration::from_secs(10),
            "docker_run" | "docker_start" | "docker_exec" => Duration::from_secs(2),
            _ => Duration::from_millis(50),
        })
    }

    /// Applies one action to host `host` outside every step (see `Simulated::apply`).
    pub fn apply(&mut self, host: &str, action: &Action) -> std::result::Result<Outcome, Fault> {
        self.apply_in(host, None, action)
    }

    fn apply_in(
        &mut self,
        host: &str,
        step: Option<&str>,
        action: &Action,
    ) -> std::result::Result<Outcome, Fault> {
        // Privilege is not modelled: a simulated host lets every user do everything.
        if let Action::Become { action, .. } = action {
            return self.apply_in(host, step, action);
        }
        // Most actions come from the step of the one before: no new string for those.
        if self.step.as_deref() != step {
            self.step = step.map(str::to_string);
        }
        let step_no = self.step_number(step);
        let mut fired = None;
        for f in &mut self.faults {
            if let Some(hit) = f.fire(host, action, step_no, step) {
                fired = Some(hit);
                break;
            }
        }
        if let Some((result, what)) = fired {
            let rec = FiredFault {
                at_ms: self.clock.as_millis() as u64,
                host: host.to_string(),
                step: step.map(str::to_string),
                action: action.describe(),
                fault: what,
            };
            // An unreachable host takes every later action: the first is the news.
            if !self.fired.iter().any(|x| {
                x.host == rec.host && x.fault == rec.fault && x.fault.ends_with("unreachable")
            }) {
                self.fired.push(rec);
            }
            self.clock += self.duration_of(action.op());
            return result;
        }
        if let Action::MysqlDump {
            target, db, path, ..
        }
        | Action::MysqlLoad { target, db, path } = action
        {
            let load = matches!(action, Action::MysqlLoad { .. });
            let server = target.label();
            for m in &mut self.models {
                m.mysql_backup(&server, db, path, load);
            }
        }
        let by_model = match self.model_ddb(host, action) {
            Some(r) => Some(r),
            None => self.model_sql(host, action),
        };
        let product_sql = by_model.is_some();
        let r = match by_model {
            Some(r) => r,
            None => self.apply_inner(host, action),
        };
        if !action.is_read_only() {
            if product_sql {
                // A product's SQL (`ALTER SYSTEM STOP ZONE`) changes components on other hosts;
                // a status poll changes none, which the models' generations tell.
                let unchanged = self.models.len() == self.comps_generation.len()
                    && self
                        .models
                        .iter()
                        .zip(&self.comps_generation)
                        .all(|(m, g)| g.is_some() && m.generation() == *g);
                if !unchanged {
                    self.sample_after_statement();
                }
            } else {
                self.sample_availability_on(host);
            }
        }
        r
    }

    /// The number (from 1) of the step `name` among the playbook's steps seen so far; undo and
    /// guard work during a rollback counts as the last step.
    fn step_number(&mut self, name: Option<&str>) -> usize {
        let Some(n) = name else {
            return self.steps_seen.len();
        };
        // Undo and guard work, and a probe's writes between actions, are not steps of their own.
        if n.starts_with("undo #") || n.starts_with("guard ") || n.starts_with("probe ") {
            return self.steps_seen.len();
        }
        if let Some(&i) = self.steps_seen.get(n) {
            return i;
        }
        let next = self.steps_seen.len() + 1;
        self.steps_seen.insert(n.to_string(), next);
        next
    }

    /// What differs now from the starting state, host by host.
    pub fn changes(&self) -> Vec<HostChange> {
        let Some(initial) = &self.initial else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (name, now) in &self.hosts {
            let Some(was) = initial.get(name) else {
                continue;
            };
            let mut add = |c: String| {
                out.push(HostChange {
                    host: name.clone(),
                    change: c,
                })
            };
            // Files inside a directory the run created are told by that directory.
            let new_dirs: Vec<&String> = now.dirs.difference(&was.dirs).collect();
            let in_new_dir = |p: &str| new_dirs.iter().any(|d| under(p, d) && p != d.as_str());
            for (p, v) in &now.files {
                match was.files.get(p) {
                    None if in_new_dir(p) => {}
                    None => add(format!("file {p} created")),
                    Some(w) if w != v => add(format!("file {p} changed")),
                    _ => {}
                }
            }
            let gone_dirs: Vec<&String> = was.dirs.difference(&now.dirs).collect();
            for p in was.files.keys().filter(|p| !now.files.contains_key(*p)) {
                if !gone_dirs.iter().any(|d| under(p, d) && p != d.as_str()) {
                    add(format!("file {p} removed"));
                }
            }
            for d in now.dirs.difference(&was.dirs) {
                if !now
                    .dirs
                    .iter()
                    .any(|x| x != d && is_under(d, x) && !was.dirs.contains(x))
                {
                    add(format!("directory {d} created"));
                }
            }
            for d in was.dirs.difference(&now.dirs) {
                if !was
                    .dirs
                    .iter()
                    .any(|x| x != d && is_under(d, x) && !now.dirs.contains(x))
                {
                    add(format!("directory {d} removed"));
                }
            }
            for p in now.ports.difference(&was.ports) {
                add(format!("port {p} open"));
            }
            for p in was.ports.difference(&now.ports) {
                add(format!("port {p} closed"));
            }
            // By command line: a restarted process (new pid) is the same process.
            let count = |m: &BTreeMap<u32, String>| {
                let mut c: BTreeMap<String, usize> = BTreeMap::new();
                for v in m.values() {
                    *c.entry(v.clone()).or_default() += 1;
                }
                c
            };
            let (now_p, was_p) = (count(&now.processes), count(&was.processes));
            for (c, n) in &now_p {
                if was_p.get(c).copied().unwrap_or(0) < *n {
                    add(format!("process `{c}` running"));
                }
            }
            for (c, n) in &was_p {
                if now_p.get(c).copied().unwrap_or(0) < *n {
                    add(format!("process `{c}` gone"));
                }
            }
            for c in now.docker.differences(&was.docker) {
                add(c);
            }
        }
        out
    }

    /// The hosts an `unreachable` fault cuts off from the start, with what a connection gets:
    /// the simulated side of the check that every host answers before the first change.
    pub fn unreachable_at_start(&mut self) -> Vec<(String, String)> {
        let names: Vec<String> = self.hosts.keys().cloned().collect();
        let mut out = Vec::new();
        for h in names {
            for f in &mut self.faults {
                if let Some(m) = f.unreachable_from_start(&h) {
                    self.fired.push(FiredFault {
                        at_ms: self.clock.as_millis() as u64,
                        host: h.clone(),
                        step: self.step.clone(),
                        action: "connect (every host is reached before the first change)".into(),
                        fault: format!("{h} unreachable"),
                    });
                    out.push((h.clone(), m));
                    break;
                }
            }
        }
        out
    }

    /// The simulation's part of the report.
    pub fn report(&self) -> SimReport {
        SimReport {
            faults: self.fired.clone(),
            unfired: self
                .faults
                .iter()
                .filter(|f| !f.took_effect())
                .map(|f| f.describe())
                .collect(),
            components: self.components().into_iter().map(|c| c.name).collect(),
            availability: self.availability.clone(),
            changed_at_stop: Vec::new(),
            changed_after_rollback: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INV: &str = "[inventory.hosts.a]\ntransport = \"local\"\n";

    /// A session to server `a`'s SQL.
    fn sql_target() -> crate::sql::SqlTarget {
        crate::sql::SqlTarget {
            id: 1,
            host: Some("a".into()),
            address: "127.0.0.1".into(),
            port: 3306,
            user: "root".into(),
            password: None,
            db: None,
            timeout_ms: 1000,
            tls: false,
            tls_ca: None,
        }
    }

    /// A model that owns the SQL of server `a`: it answers its status query and refuses DDL.
    #[derive(Debug, Clone)]
    struct SqlModel;

    impl model::ProductModel for SqlModel {
        fn name(&self) -> &str {
            "sqlmodel"
        }
        fn exec(&mut self, _: &str, _: &Command, _: &mut SimHost) -> Option<ExecOutput> {
            None
        }
        fn sql(
            &mut self,
            server: &str,
            _: u64,
            _: SqlKind,
            statement: &str,
            _: &crate::sql::SqlParams,
            _: &mut BTreeMap<String, SimHost>,
        ) -> Option<std::result::Result<SqlResult, (u16, String)>> {
            if server != "a" {
                return None;
            }
            if statement.starts_with("ALTER") {
                return Some(Err((1235, "not supported".into())));
            }
            statement.starts_with("SELECT status").then(|| {
                Ok(SqlResult {
                    columns: vec!["status".into()],
                    rows: vec![vec![SqlValue::Text("ACTIVE".into())]],
                    ..Default::default()
                })
            })
        }
        fn components(&self, _: &BTreeMap<String, SimHost>) -> Vec<model::Component> {
            Vec::new()
        }
        fn violations(&self, _: &[model::Component], _: &BTreeSet<usize>) -> Vec<String> {
            Vec::new()
        }
        fn box_clone(&self) -> Box<dyn model::ProductModel> {
            Box::new(self.clone())
        }
    }

    #[test]
    fn a_model_answers_its_products_sql_before_the_rules() {
        let mut sc = Scenario::from_str_at(
            &format!(
                "{INV}\n[[sql]]\nstatement = \"SELECT*\"\nrows = [{{ status = \"FROM RULE\" }}]\n"
            ),
            "s.toml",
            Path::new("."),
        )
        .unwrap();
        sc.add_model(Box::new(SqlModel));
        let mut w = sc.world();
        let target = sql_target();
        let sql = |kind, statement: &str| Action::Sql {
            target: target.clone(),
            kind,
            statement: statement.into(),
            params: Default::default(),
        };
        match w.apply("a", &sql(SqlKind::Query, "SELECT status FROM zones")) {
            Ok(Outcome::Sql(r)) => assert_eq!(r.rows[0][0], SqlValue::Text("ACTIVE".into())),
            other => panic!("{other:?}"),
        }
        let e = w
            .apply("a", &sql(SqlKind::Exec, "ALTER SYSTEM x"))
            .unwrap_err();
        assert_eq!((e.code, e.reason.as_deref()), (Some(1235), Some("server")));
        match w.apply("a", &sql(SqlKind::Query, "SELECT 1")) {
            Ok(Outcome::Sql(r)) => assert_eq!(r.rows[0][0], SqlValue::Text("FROM RULE".into())),
            other => panic!("{other:?}"),
        }
    }

    /// The write probe's inserts and the waits' status scripts change nothing availability
    /// reads: they cost no re-reading of every component, whatever the cluster's size.
    #[test]
    fn a_dolphindb_statement_that_changes_no_node_rereads_nothing() {
        use crate::ddb::DdbKind;
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/dolphindb");
        let sc = Scenario::from_file(dir.join("scenario.toml")).unwrap();
        let mut w = sc.world();
        let target = |port| crate::ddb::DdbTarget {
            id: 1,
            host: Some("ddb1".into()),
            address: "10.10.11.1".into(),
            port,
            user: None,
            password: None,
            timeout_ms: 1000,
        };
        let ddb = |port, kind, script: &str| Action::Ddb {
            target: target(port),
            kind,
            script: script.into(),
        };
        // The first statement reads the hosts' installs (every node starts): one full read.
        w.apply("ddb1", &ddb(8920, DdbKind::Exec, "getActiveMaster()"))
            .unwrap();
        let before = w.full_reads;
        for id in 0..50 {
            let insert =
                format!(r#"tableInsert(loadTable("dfs://stock", "stock"), now(), "p", {id})"#);
            w.apply("ddb1", &ddb(8922, DdbKind::Exec, &insert)).unwrap();
            w.apply("ddb1", &ddb(8920, DdbKind::Exec, "getActiveMaster()"))
                .unwrap();
        }
        assert_eq!(
            w.full_reads, before,
            "status and insert statements re-read the cluster"
        );
    }

    /// Starting a node re-reads the components of its host alone, and a status query for some
    /// nodes answers with their rows alone: neither costs the cluster's size.
    #[test]
    fn a_dolphindb_node_started_rereads_its_own_host_only() {
        use crate::ddb::{DdbKind, DdbValue};
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/dolphindb");
        let text = std::fs::read_to_string(dir.join("scenario.toml"))
            .unwrap()
            .replace("chunks = 6\n", "chunks = 6\ndown = [\"node45\"]\n");
        let sc = Scenario::from_str_at(&text, "scenario.toml", &dir).unwrap();
        let mut w = sc.world();
        let ddb = |kind, script: &str| Action::Ddb {
            target: crate::ddb::DdbTarget {
                id: 1,
                host: Some("ddb1".into()),
                address: "10.10.11.1".into(),
                port: 8920,
                user: None,
                password: None,
                timeout_ms: 1000,
            },
            kind,
            script: script.into(),
        };
        w.apply("ddb1", &ddb(DdbKind::Exec, "getActiveMaster()"))
            .unwrap();
        let down = |w: &World| {
            let r = w.report();
            r.down_at(r.availability.len() - 1)
        };
        assert_eq!(down(&w), ["dolphindb/datanode node45@ddb3"]);
        let (full, reads) = (w.full_reads, w.comp_reads);
        w.apply("ddb1", &ddb(DdbKind::Exec, r#"startDataNode(["node45"])"#))
            .unwrap();
        assert_eq!(w.full_reads, full, "a node start re-read the whole cluster");
        assert_eq!(
            w.comp_reads - reads,
            3,
            "ddb3's controller, agent and data node"
        );
        assert!(down(&w).is_empty(), "{:?}", w.availability.last());
        let perf = r#"select name, mode, int(state) as state from rpc(getControllerAlias(), getClusterPerf, true) where name in ["node45","agent43"]"#;
        match w.apply("ddb1", &ddb(DdbKind::Query, perf)) {
            Ok(Outcome::Ddb(DdbValue::Table { rows, .. })) => {
                let names: Vec<&DdbValue> = rows.iter().map(|r| &r[0]).collect();
                let want = [
                    DdbValue::Str("agent43".into()),
                    DdbValue::Str("node45".into()),
                ];
                assert_eq!(
                    names,
                    want.iter().collect::<Vec<_>>(),
                    "in the table's order"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    /// A model that does not report a generation is re-read after each of its statements.
    #[test]
    fn a_model_without_a_generation_is_reread_after_every_statement() {
        let mut sc = Scenario::from_str_at(INV, "s.toml", Path::new(".")).unwrap();
        sc.add_model(Box::new(SqlModel));
        let mut w = sc.world();
        let target = sql_target();
        let before = w.full_reads;
        for _ in 0..3 {
            let _ = w.apply(
                "a",
                &Action::Sql {
                    target: target.clone(),
                    kind: SqlKind::Exec,
                    statement: "ALTER SYSTEM x".into(),
                    params: Default::default(),
                },
            );
        }
        assert_eq!(w.full_reads, before + 3);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10GiB").unwrap(), 10 << 30);
        assert_eq!(parse_size("1.5 KB").unwrap(), 1500);
        assert!(parse_size("3 parsecs").is_err());
    }

    #[test]
    fn unknown_host_is_positioned() {
        let t = format!("{INV}[hosts.b]\nports = [1]\n");
        let e = Scenario::from_str_at(&t, "s.toml", Path::new("."))
            .err()
            .unwrap();
        assert!(
            e.to_string()
                .starts_with("s.toml:3:1: hosts.b: unknown host `b`"),
            "{e}"
        );
    }

    #[test]
    fn rules_answer_and_change_state() {
        let t = format!(
            "{INV}[[rules]]\ncommand = \"svc start*\"\nstdout = \"started\"\nopen_ports = [80]\n"
        );
        let s = Scenario::from_str_at(&t, "s.toml", Path::new(".")).unwrap();
        let mut w = s.world();
        let exec = |argv: &[&str]| Action::Exec {
            command: Command::Argv(argv.iter().map(|x| x.to_string()).collect()),
            read_only: false,
            env: Default::default(),
            cwd: None,
            stdin: None,
            timeout: None,
            secret_files: Default::default(),
        };
        let wait = Action::WaitPort {
            port: 80,
            timeout: Duration::from_secs(5),
        };
        assert!(w.apply("a", &wait).is_err());
        match w.apply("a", &exec(&["svc", "start", "x"])).unwrap() {
            Outcome::Exec(o) => assert_eq!(o.stdout, b"started"),
            o => panic!("{o:?}"),
        }
        assert!(w.apply("a", &wait).is_ok());
        assert!(w.now() >= Duration::from_secs(5));
    }

    #[test]
    fn copy_and_replace_dir() {
        let t = format!(
            "{INV}[hosts.a]\nfiles = {{ \"/r/new/bin/x\" = \"2\", \"/opt/bin/x\" = \"1\" }}\n"
        );
        let s = Scenario::from_str_at(&t, "s.toml", Path::new(".")).unwrap();
        let mut w = s.world();
        w.apply(
            "a",
            &Action::ReplaceDir {
                target: "/opt/bin".into(),
                source: "/r/new/bin".into(),
                keep: Some("/opt/bin.old".into()),
            },
        )
        .unwrap();
        assert_eq!(w.hosts["a"].files["/opt/bin/x"], b"2");
        assert!(w.hosts["a"].files.contains_key("/r/new/bin/x"));
        let restore = Action::Restore {
            target: "/opt/bin".into(),
            saved: "/opt/bin.old".into(),
        };
        w.apply("a", &restore).unwrap();
        assert_eq!(w.hosts["a"].files["/opt/bin/x"], b"1");
        // A second restore finds nothing saved and leaves the target alone.
        w.apply("a", &restore).unwrap();
        assert_eq!(w.hosts["a"].files["/opt/bin/x"], b"1");
    }
}
