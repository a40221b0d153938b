//! The simulated world: scenario files, and hosts with files, ports and scripted command answers.

mod docker;
mod dolphindb;
pub mod faults;
pub mod model;
pub mod oceanbase;
mod oms;
pub mod openmldb;
pub mod products;
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

impl Scenario {
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_str_at(
            &text,
            &path.display().to_string(),
            path.parent().unwrap_or(Path::new(".")),
        )
    }

    /// Parses scenario TOML; `file` names it in errors, `base` anchors `inventory_file`.
    pub fn from_str_at(text: &str, file: &str, base: &Path) -> Result<Self> {
        let spec: ScenarioSpec =
            toml::from_str(text).map_err(|e| config_error(file, text, e.span(), e.message()))?;
        let inventory = match (spec.inventory, spec.inventory_file) {
            (Some(inv), None) => inv.into_inner().resolve(file, text, base)?,
            (None, Some(p)) => {
                let path = base.join(p.get_ref());
                if !path.exists() {
                    return Err(config_error(
                        file,
                        text,
                        Some(p.span()),
                        &format!("inventory_file: {} does not exist", path.display()),
                    ));
                }
                Inventory::from_file(path)?
            }
            (Some(inv), Some(_)) => {
                return Err(config_error(
                    file,
                    text,
                    Some(inv.span()),
                    "give `inventory` or `inventory_file`, not both",
                ))
            }
            (None, None) => {
                return Err(config_error(
                    file,
                    text,
                    None,
                    "a scenario needs `inventory_file` or an [inventory] table",
                ))
            }
        };
        let mut hosts = BTreeMap::new();
        for (name, st) in spec.hosts {
            if inventory.host(&name).is_none() {
                return Err(config_error(
                    file,
                    text,
                    Some(st.span()),
                    &format!(
                        "hosts.{name}: unknown host `{name}` (the inventory has: {})",
                        inventory.host_names().join(", ")
                    ),
                ));
            }
            hosts.insert(name, st.into_inner());
        }
        let mut rules = Vec::new();
        for (i, r) in spec.rules.into_iter().enumerate() {
            let span = r.span();
            let r = r.into_inner();
            let bad = |m: String| {
                config_error(file, text, Some(span.clone()), &format!("rules[{i}]: {m}"))
            };
            let cmd = glob::Pattern::new(&r.command)
                .map_err(|e| bad(format!("bad command pattern: {e}")))?;
            let host = host_pattern(&inventory, r.host.as_deref()).map_err(bad)?;
            rules.push((r, cmd, host));
        }
        let mut sql_rules = Vec::new();
        for (i, r) in spec.sql.into_iter().enumerate() {
            let span = r.span();
            let r = r.into_inner();
            let bad =
                |m: String| config_error(file, text, Some(span.clone()), &format!("sql[{i}]: {m}"));
            let pat = glob::Pattern::new(&r.statement)
                .map_err(|e| bad(format!("bad statement pattern: {e}")))?;
            let host = match r.host.as_deref() {
                // A server named by address (`127.0.0.1:3306`) is not an inventory host.
                Some(h) if h.contains(':') => {
                    Some(glob::Pattern::new(h).map_err(|e| bad(format!("bad host pattern: {e}")))?)
                }
                h => host_pattern(&inventory, h).map_err(bad)?,
            };
            r.rows_checked().map_err(bad)?;
            sql_rules.push((r, pat, host));
        }
        let mut models = Vec::new();
        for (i, p) in spec.products.into_iter().enumerate() {
            let span = p.span();
            let p = p.into_inner();
            let bad = |m: String| {
                config_error(
                    file,
                    text,
                    Some(span.clone()),
                    &format!("products[{i}]: {m}"),
                )
            };
            let hosts: Vec<String> = match (&p.hosts, &p.group) {
                (Some(_), Some(_)) => return Err(bad("give `hosts` or `group`, not both".into())),
                (None, Some(g)) => inventory.groups.get(g).cloned().ok_or_else(|| {
                    bad(format!(
                        "no group `{g}` in the inventory (groups: {})",
                        inventory
                            .groups
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?,
                (h, None) => {
                    let pat = host_pattern(&inventory, h.as_deref()).map_err(bad)?;
                    inventory
                        .host_names()
                        .into_iter()
                        .filter(|n| pat.as_ref().is_none_or(|p| p.matches(n)))
                        .collect()
                }
            };
            models.push(model::build(&p.model, hosts, &p.settings, &inventory).map_err(bad)?);
        }
        let mut sql_servers = BTreeMap::new();
        for (name, spec) in spec.sql_servers {
            let span = spec.span();
            let spec = spec.into_inner();
            let bad = |m: String| {
                config_error(
                    file,
                    text,
                    Some(span.clone()),
                    &format!("sql_servers.{name}: {m}"),
                )
            };
            if !name.contains(':') && inventory.host(&name).is_none() {
                return Err(bad(format!(
                    "`{name}` is neither an inventory host nor an address:port"
                )));
            }
            // Built once here so a bad statement is reported with the scenario's position.
            sqlstore::SqlStore::new(&spec.init).map_err(bad)?;
            sql_servers.insert(name, spec.init);
        }
        let mut active = Vec::new();
        for (i, f) in spec.faults.into_iter().enumerate() {
            let span = f.span();
            active.push(
                faults::ActiveFault::new(f.into_inner(), &inventory).map_err(|m| {
                    config_error(file, text, Some(span), &format!("faults[{i}]: {m}"))
                })?,
            );
        }
        let params = spec
            .params
            .iter()
            .map(|(k, v)| (k.clone(), crate::inventory::toml_to_json(v)))
            .collect();
        Ok(Scenario {
            source: file.to_string(),
            description: spec.description,
            inventory,
            params,
            defaults: spec.defaults,
            hosts,
            rules,
            sql_rules,
            models,
            faults: active,
            sql_servers,
        })
    }

    /// Adds a product model of the embedder's own (beside the scenario's `[[products]]`).
    pub fn add_model(&mut self, model: Box<dyn model::ProductModel>) {
        self.models.push(model);
    }

    /// Adds a fault given on the command line (`simulate --fail [HOST:]PATTERN[#N]`).
    pub fn add_fault(&mut self, spec: &str) -> Result<()> {
        let f = faults::ActiveFault::from_cli(spec, &self.inventory)
            .map_err(|m| Error::Usage(format!("--fail {spec:?}: {m}")))?;
        self.faults.push(f);
        Ok(())
    }

    /// A fresh world in this scenario's starting state.
    pub fn world(&self) -> World {
        let default_free = self.defaults.free_space.map_or(100 * (1 << 30), |s| s.0);
        let hosts = self
            .inventory
            .hosts
            .iter()
            .map(|h| {
                let st = self.hosts.get(&h.name).cloned().unwrap_or_default();
                let mut host = SimHost {
                    files: BTreeMap::new(),
                    dirs: BTreeSet::new(),
                    free_space: st.free_space.map_or(default_free, |s| s.0),
                    ports: st.ports.iter().copied().collect(),
                    docker: docker::SimDocker::from_spec(st.docker.as_ref()),
                    held_down: BTreeSet::new(),
                    processes: BTreeMap::new(),
                    next_pid: 0,
                    now: Duration::ZERO,
                };
                for p in &st.processes {
                    host.spawn(p);
                }
                host.held_down = self
                    .faults
                    .iter()
                    .filter_map(|f| f.held_port(&h.name))
                    .collect();
                for d in &st.dirs {
                    host.mkdir_p(d);
                }
                for (p, c) in &st.files {
                    host.write(p, c.as_bytes().to_vec());
                }
                (h.name.clone(), host)
            })
            .collect();
        let mut world = World {
            sql_stores: self
                .sql_servers
                .iter()
                .filter_map(|(k, init)| Some((k.clone(), sqlstore::SqlStore::new(init).ok()?)))
                .collect(),
            initial: None,
            hosts,
            rules: self
                .rules
                .iter()
                .map(|(r, c, h)| (r.clone(), c.clone(), h.clone(), 0))
                .collect(),
            sql_rules: self
                .sql_rules
                .iter()
                .map(|(r, c, h)| (r.clone(), c.clone(), h.clone(), 0))
                .collect(),
            durations: self
                .defaults
                .durations
                .iter()
                .map(|(k, v)| (k.clone(), v.0))
                .collect(),
            clock: Duration::ZERO,
            host_locks: self
                .hosts
                .iter()
                .filter_map(|(name, st)| {
                    let l = st.host_lock.as_ref()?;
                    let lease_until = if l.expired {
                        LOCK_EPOCH - 60
                    } else {
                        LOCK_EPOCH + l.lease_left.map_or(600, |d| d.0.as_secs())
                    };
                    Some((
                        name.clone(),
                        crate::hostlock::Holder {
                            run: l.run.clone(),
                            operator: l.operator.clone(),
                            controller: l.controller.clone(),
                            pid: "?".into(),
                            taken: LOCK_EPOCH - 3600,
                            lease_until,
                        },
                    ))
                })
                .collect(),
            models: self.models.clone(),
            faults: self.faults.clone(),
            fired: Vec::new(),
            steps_seen: Default::default(),
            availability: Vec::new(),
            comps: Vec::new(),
            comp_index: Default::default(),
            down: Default::default(),
            comps_generation: Vec::new(),
            full_reads: 0,
            step: None,
            comp_reads: 0,
        };
        world.initial = Some(world.hosts.clone());
        world.sample_availability(true);
        world
    }
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
    p == dir || p.starts_with(&format!("{}/", dir.trim_end_matches('/')))
}

impl SimHost {
    /// Starts a process (a model starting its daemon); returns its pid.
    pub fn spawn(&mut self, cmdline: &str) -> u32 {
        self.next_pid = self.next_pid.max(1000) + 1;
        self.processes.insert(self.next_pid, cmdline.to_string());
        self.next_pid
    }

    /// Ends the processes whose command line contains `pattern`; returns how many.
    pub fn kill_matching(&mut self, pattern: &str) -> usize {
        let before = self.processes.len();
        self.processes.retain(|_, c| !c.contains(pattern));
        before - self.processes.len()
    }

    /// `pgrep [-f] PATTERN` and `pkill [-f] PATTERN` against the process table (a substring
    /// match on the command line), answered as procps does: exit 1 when nothing matches.
    fn process_command(&mut self, command: &Command) -> Option<ExecOutput> {
        let Command::Argv(argv) = command else {
            return None;
        };
        let prog = argv.first()?.rsplit('/').next()?;
        if prog != "pgrep" && prog != "pkill" {
            return None;
        }
        let pattern = argv[1..].iter().rfind(|a| !a.starts_with('-'))?;
        let found: Vec<u32> = self
            .processes
            .iter()
            .filter(|(_, c)| c.contains(pattern.as_str()))
            .map(|(p, _)| *p)
            .collect();
        let code = if found.is_empty() { 1 } else { 0 };
        let stdout = if prog == "pgrep" {
            found.iter().map(|p| format!("{p}\n")).collect()
        } else {
            self.kill_matching(pattern);
            String::new()
        };
        Some(ExecOutput {
            code: Some(code),
            signal: None,
            stdout: stdout.into_bytes(),
            stderr: Vec::new(),
            truncated: false,
        })
    }

    /// Opens a port (a service came up), unless a `stays_down` fault keeps it closed.
    pub fn open_port(&mut self, port: u16) {
        if !self.held_down.contains(&port) {
            self.ports.insert(port);
        }
    }

    fn mkdir_p(&mut self, d: &str) {
        let mut cur = Some(norm(d));
        while let Some(c) = cur {
            if !self.dirs.insert(c.clone()) {
                break;
            }
            cur = parent(&c).filter(|p| p != &c);
        }
    }
    /// Writes a file (and its parent directories).
    pub fn write(&mut self, p: &str, data: Vec<u8>) {
        if let Some(d) = parent(p) {
            self.mkdir_p(&d);
        }
        self.files.insert(norm(p), data);
    }
    /// Whether a file or directory exists.
    pub fn exists(&self, p: &str) -> bool {
        let p = norm(p);
        self.files.contains_key(&p) || self.dirs.contains(&p)
    }
    /// Removes a file or a directory tree.
    pub fn remove(&mut self, p: &str) {
        let p = norm(p);
        self.files.retain(|k, _| !under(k, &p));
        self.dirs.retain(|k| !under(k, &p));
    }
    /// Bytes of the files at or under `p`.
    fn size_under(&self, p: &str) -> u64 {
        let p = norm(p);
        self.files
            .iter()
            .filter(|(k, _)| under(k, &p))
            .map(|(_, v)| v.len() as u64)
            .sum()
    }

    /// A manifest of what is at `path` now, as the real snapshot would write it.
    fn manifest_of(&self, kind: &str, source: &str, path: &str) -> Manifest {
        let root = norm(path);
        let files = self
            .files
            .iter()
            .filter(|(k, _)| under(k, &root))
            .map(|(k, v)| ManifestFile {
                path: if *k == root {
                    String::new()
                } else {
                    format!(".{}", &k[root.len()..])
                },
                size: v.len() as u64,
                sha256: format!("{:x}", sha2::Sha256::digest(v)),
            })
            .collect();
        Manifest {
            capstan_backup: 1,
            kind: kind.into(),
            source: source.into(),
            path: path.into(),
            run: None,
            files,
        }
    }

    /// Compares the backup at `path` with its manifest.
    fn verify(&self, path: &str) -> std::result::Result<Manifest, String> {
        let mp = manifest_path(path);
        let m: Manifest = self
            .files
            .get(&norm(&mp))
            .and_then(|b| serde_json::from_slice(b).ok())
            .ok_or_else(|| format!("no backup at {path} (no manifest {mp})"))?;
        let mut now = self.manifest_of(&m.kind, &m.source, path);
        if m.kind == "mysqldump" {
            for f in &mut now.files {
                f.path.clear();
            }
        }
        if now.files != m.files {
            return Err(format!("backup {path} does not match its manifest"));
        }
        Ok(m)
    }

    /// Copies a file or a tree; `to` names the copy (like `cp -a src dst` with no existing dst).
    fn copy(&mut self, from: &str, to: &str) -> std::result::Result<(), String> {
        let (from, to) = (norm(from), norm(to));
        if !self.exists(&from) {
            return Err(format!(
                "cp: cannot stat '{from}': No such file or directory"
            ));
        }
        let rebase = |k: &str| format!("{to}{}", &k[from.len()..]);
        let files: Vec<_> = self
            .files
            .iter()
            .filter(|(k, _)| under(k, &from))
            .map(|(k, v)| (rebase(k), v.clone()))
            .collect();
        let dirs: Vec<_> = self
            .dirs
            .iter()
            .filter(|k| under(k, &from))
            .map(|k| rebase(k))
            .collect();
        for d in dirs {
            self.mkdir_p(&d);
        }
        for (k, v) in files {
            self.write(&k, v);
        }
        Ok(())
    }
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
    steps_seen: std::collections::HashMap<String, usize>,
    availability: Vec<AvailabilitySample>,
    /// Each model's components as last read (availability is updated host by host), and where
    /// each host's components are in them.
    comps: Vec<Vec<model::Component>>,
    comp_index: std::collections::HashMap<String, Vec<(usize, usize)>>,
    /// `(model, component)` of every component down now, in model order: a sample reads these,
    /// not every component.
    down: std::collections::BTreeSet<(usize, usize)>,
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
        self.step = step.map(str::to_string);
        let step = self.step.clone();
        let step_no = self.step_number(step.as_deref());
        let mut fired = None;
        for f in &mut self.faults {
            if let Some(hit) = f.fire(host, action, step_no, step.as_deref()) {
                fired = Some(hit);
                break;
            }
        }
        if let Some((result, what)) = fired {
            let rec = FiredFault {
                at_ms: self.clock.as_millis() as u64,
                host: host.to_string(),
                step,
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

    /// A DolphinDB action: a product model answers for the node at its endpoint, and where no
    /// model has a node there, nothing listens (as on a real network).
    fn model_ddb(
        &mut self,
        label: &str,
        action: &Action,
    ) -> Option<std::result::Result<Outcome, Fault>> {
        let Action::Ddb {
            target,
            kind,
            script,
        } = action
        else {
            return None;
        };
        let endpoint = target.endpoint();
        let hosts = &mut self.hosts;
        let now = self.clock;
        let answer = self
            .models
            .iter_mut()
            .find_map(|m| m.ddb(&endpoint, *kind, script, hosts, now))
            .unwrap_or_else(|| {
                Err((
                    "connect",
                    "connect: Connection refused (os error 111)".into(),
                ))
            });
        self.clock += self.duration_of(action.op());
        Some(match answer {
            Ok(v) => Ok(Outcome::Ddb(v)),
            Err((reason, message)) => Err(Fault::new(
                FaultKind::Action,
                Some(label),
                format!("{label}: dolphindb {}: {message}", target.server()),
            )
            .with_reason(reason)),
        })
    }

    /// A product model's answer to a SQL action, when one of them takes it.
    fn model_sql(
        &mut self,
        server: &str,
        action: &Action,
    ) -> Option<std::result::Result<Outcome, Fault>> {
        let Action::Sql {
            target,
            kind,
            statement,
            params,
        } = action
        else {
            return None;
        };
        let hosts = &mut self.hosts;
        let answer = self
            .models
            .iter_mut()
            .find_map(|m| m.sql(server, target.id, *kind, statement, params, hosts))?;
        self.clock += self.duration_of(action.op());
        // The client's own failures read as a real client reports them (src/sql: classify).
        let client = |what: String, with_statement: bool| {
            let mut msg = format!("{server}: sql {}: {what}", target.server());
            if with_statement {
                msg.push_str(&format!(
                    "\n  statement: {}",
                    crate::sql::first_line(statement)
                ));
            }
            Fault::new(FaultKind::Unreachable, Some(server), msg)
        };
        Some(match answer {
            Ok(r) => Ok(Outcome::Sql(r)),
            // A model's "nothing listens there" is the client's connect failure, as on a network.
            Err((2003, message)) => {
                Err(client(format!("cannot connect: {message}"), false).with_reason("connect"))
            }
            Err((2013, message)) => {
                Err(client(format!("connection lost: {message}"), true).with_reason("lost"))
            }
            Err((code, message)) => {
                let mut f = Fault::new(
                    FaultKind::Action,
                    Some(server),
                    format!(
                        "{server}: sql: server error {code}: {message}\n  statement: {}",
                        crate::sql::first_line(statement)
                    ),
                )
                .with_reason("server");
                f.code = Some(i64::from(code));
                Err(f)
            }
        })
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

    /// Re-reads every component (the start of a run) and records a sample.
    fn sample_availability(&mut self, force: bool) {
        if self.models.is_empty() {
            return;
        }
        self.comps = self
            .models
            .iter()
            .map(|m| m.components(&self.hosts))
            .collect();
        self.comps_generation = self.models.iter().map(|m| m.generation()).collect();
        // Everything was just read: what the models noted as changed is stale.
        for m in &mut self.models {
            m.take_changed_hosts();
        }
        self.full_reads += 1;
        self.comp_index.clear();
        self.down.clear();
        for (mi, comps) in self.comps.iter().enumerate() {
            for (ci, c) in comps.iter().enumerate() {
                self.comp_index
                    .entry(c.host.clone())
                    .or_default()
                    .push((mi, ci));
                if !c.up {
                    self.down.insert((mi, ci));
                }
            }
        }
        self.push_sample(force);
    }

    /// After a product statement that changed a model: re-reads the hosts the models say
    /// changed, or everything when a model does not say, and records a sample when what is up
    /// or a rule changed (a chunk's recovery moves no component but ends a violation).
    fn sample_after_statement(&mut self) {
        let changed: Option<Vec<Vec<String>>> = self
            .models
            .iter_mut()
            .map(|m| m.take_changed_hosts())
            .collect();
        match changed {
            Some(hosts) if self.comps.len() == self.models.len() => {
                for h in hosts.iter().flatten() {
                    self.refresh_host(h);
                }
                self.comps_generation = self.models.iter().map(|m| m.generation()).collect();
                self.push_sample(false);
            }
            _ => self.sample_availability(false),
        }
    }

    /// After a change on `host`: re-reads that host's components only, and records a sample when
    /// what is up changed. (A run over a thousand hosts makes thousands of changes.)
    fn sample_availability_on(&mut self, host: &str) {
        if self.refresh_host(host) {
            self.push_sample(false);
        }
    }

    /// Re-reads the components on `host`; whether any went up or down.
    fn refresh_host(&mut self, host: &str) -> bool {
        let Some(slots) = self.comp_index.get(host) else {
            return false;
        };
        let mut changed = false;
        for (mi, m) in self.models.iter().enumerate() {
            for c in m.components_on(host, &self.hosts) {
                self.comp_reads += 1;
                let slot = slots
                    .iter()
                    .find(|(i, ci)| *i == mi && self.comps[mi][*ci].name == c.name);
                if let Some(&(_, ci)) = slot {
                    let x = &mut self.comps[mi][ci];
                    if x.up != c.up {
                        x.up = c.up;
                        changed = true;
                        if c.up {
                            self.down.remove(&(mi, ci));
                        } else {
                            self.down.insert((mi, ci));
                        }
                    }
                }
            }
        }
        changed
    }

    /// Records what is down and which rules are broken, when it changed (always when `force`).
    /// Costs what is down, not the cluster's size.
    fn push_sample(&mut self, force: bool) {
        let mut down = Vec::new();
        let mut by_model = vec![Vec::new(); self.models.len()];
        for &(mi, ci) in &self.down {
            down.push(self.comps[mi][ci].name.clone());
            by_model[mi].push(ci);
        }
        let mut violations = Vec::new();
        for ((m, comps), down) in self.models.iter().zip(&self.comps).zip(&by_model) {
            violations.extend(m.violations(comps, down));
        }
        if !force {
            if let Some(last) = self.availability.last() {
                if last.down == down && last.violations == violations {
                    return;
                }
            }
        }
        self.availability.push(AvailabilitySample {
            at_ms: self.clock.as_millis() as u64,
            step: self.step.clone(),
            down,
            violations,
        });
    }

    /// Every component of the products, in model order.
    pub fn components(&self) -> Vec<model::Component> {
        self.models
            .iter()
            .flat_map(|m| m.components(&self.hosts))
            .collect()
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
                    .any(|x| x != d && d.starts_with(&format!("{x}/")) && !was.dirs.contains(x))
                {
                    add(format!("directory {d} created"));
                }
            }
            for d in was.dirs.difference(&now.dirs) {
                if !was
                    .dirs
                    .iter()
                    .any(|x| x != d && d.starts_with(&format!("{x}/")) && !now.dirs.contains(x))
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

    fn apply_inner(&mut self, host: &str, action: &Action) -> std::result::Result<Outcome, Fault> {
        let fail = |m: String| Fault::new(FaultKind::Action, Some(host), format!("{host}: {m}"));
        let mut took = self.duration_of(action.op());
        let outcome = {
            let rules = &mut self.rules;
            let sql_rules = &mut self.sql_rules;
            let stores = &self.sql_stores;
            let models = &mut self.models;
            let mut scratch = SimHost::default();
            // A SQL server named by address only has no simulated host of its own.
            let h = match self.hosts.get_mut(host) {
                Some(h) => h,
                None if matches!(action, Action::Sql { .. }) => &mut scratch,
                None => return Err(fail("not in the simulated world".into())),
            };
            h.now = self.clock;
            let mut model_out = match action {
                Action::Exec { command, stdin, .. } => models
                    .iter_mut()
                    .find_map(|m| m.exec_input(host, command, stdin.as_deref(), h)),
                _ => None,
            };
            match action {
                // `model_ddb` answers every DolphinDB action before this.
                Action::Ddb { .. } => return Err(fail("no DolphinDB node answers".into())),
                Action::Become { .. } => unreachable!("unwrapped at the top of `apply`"),
                // A product's own command: its model answers.
                Action::Exec { .. } if model_out.is_some() => {
                    Outcome::Exec(model_out.take().unwrap_or_default())
                }
                Action::Exec { command, .. } => {
                    let argv0 = match command {
                        Command::Argv(a) => a.first().map(String::as_str),
                        Command::Shell(_) => None,
                    };
                    match answer_by_rule(rules, host, &command.display(), argv0, h) {
                        Some(a) => {
                            took = a.took.unwrap_or(took);
                            Outcome::Exec(a.out)
                        }
                        // No rule: `pgrep`/`pkill` read the process table; anything else is taken
                        // to succeed silently (the plan still shows it).
                        None => Outcome::Exec(h.process_command(command).unwrap_or(ExecOutput {
                            code: Some(0),
                            ..Default::default()
                        })),
                    }
                }
                Action::ReadFile { path } => match h.files.get(&norm(path)) {
                    Some(c) => Outcome::Bytes(c.clone()),
                    None => {
                        return Err(fail(format!(
                            "read {path} failed: cat: {path}: No such file or directory"
                        )))
                    }
                },
                Action::Exists { path } => Outcome::Bool(h.exists(path)),
                Action::Checksum { path } => match h.files.get(&norm(path)) {
                    Some(c) => Outcome::Text(format!("{:x}", sha2::Sha256::digest(c))),
                    None => {
                        return Err(fail(format!(
                            "checksum of {path} failed: No such file or directory"
                        )))
                    }
                },
                Action::FreeSpace { .. } => Outcome::Int(h.free_space as i64),
                Action::DiskUsage { path } => Outcome::Int(h.size_under(path) as i64),
                Action::WriteFile { path, content, .. } => {
                    h.write(path, content.clone());
                    Outcome::Unit
                }
                Action::Mkdir { path } => {
                    h.mkdir_p(path);
                    Outcome::Unit
                }
                Action::Copy { from, to } => {
                    h.copy(from, to).map_err(fail)?;
                    Outcome::Unit
                }
                Action::Move { from, to } => {
                    h.copy(from, to)
                        .map_err(|e| fail(e.replace("cp:", "mv:")))?;
                    h.remove(from);
                    Outcome::Unit
                }
                Action::Remove { path } => {
                    h.remove(path);
                    Outcome::Unit
                }
                Action::ReplaceDir {
                    target,
                    source,
                    keep,
                } => {
                    if !h.dirs.contains(&norm(source)) {
                        return Err(fail(format!("replace {target} failed: cp: cannot stat '{source}': No such file or directory")));
                    }
                    if let Some(k) = keep.as_ref().filter(|_| h.exists(target)) {
                        h.remove(k);
                        h.copy(target, k).map_err(fail)?;
                    }
                    h.remove(target);
                    h.copy(source, target).map_err(fail)?;
                    Outcome::Unit
                }
                Action::Restore { target, saved } => {
                    if h.exists(saved) {
                        h.remove(target);
                        h.copy(saved, target).map_err(fail)?;
                        h.remove(saved);
                    }
                    Outcome::Unit
                }
                Action::Upload { local, remote, .. } => {
                    let data = std::fs::read(local).map_err(|e| {
                        Fault::new(
                            FaultKind::BadInput,
                            Some(host),
                            format!("cannot open {local}: {e}"),
                        )
                    })?;
                    h.write(remote, data);
                    Outcome::Unit
                }
                Action::Sql {
                    kind,
                    statement,
                    params,
                    ..
                } => {
                    let line = crate::sql::one_line(statement);
                    let rule = sql_rules.iter_mut().find(|(r, pat, hp, used)| {
                        hp.as_ref().is_none_or(|p| p.matches(host))
                            && pat.matches(&line)
                            && r.times.is_none_or(|t| *used < t)
                    });
                    match (rule, kind) {
                        (Some((r, _, _, used)), SqlKind::Query | SqlKind::Exec) => {
                            *used += 1;
                            if let Some(code) = r.error_code {
                                let mut f = fail(format!(
                                    "sql: server error {code}: {}\n  statement: {}",
                                    r.error_message.as_deref().unwrap_or("simulated error"),
                                    crate::sql::first_line(statement)
                                ))
                                .with_reason("server");
                                f.code = Some(i64::from(code));
                                return Err(f);
                            }
                            Outcome::Sql(r.result())
                        }
                        // No rule: the server's plain store answers, if it has one.
                        _ => match stores.get(host) {
                            Some(store) => match store.run(*kind, statement, params) {
                                Ok(r) => Outcome::Sql(r),
                                Err(m) => {
                                    let code = if m.contains("no such table") {
                                        1146
                                    } else if m.contains("syntax error") {
                                        1064
                                    } else {
                                        1105
                                    };
                                    let mut f = fail(format!(
                                        "sql: server error {code}: {m}\n  statement: {}",
                                        crate::sql::first_line(statement)
                                    ))
                                    .with_reason("server");
                                    f.code = Some(code);
                                    return Err(f);
                                }
                            },
                            // Reads find nothing, changes change nothing (the plan shows them).
                            None => Outcome::Sql(SqlResult::default()),
                        },
                    }
                }
                Action::Snapshot { source, to } => {
                    if !h.dirs.contains(&norm(source)) {
                        return Err(fail(format!(
                            "copy of {source} failed: cp: cannot stat '{source}': No such file or directory"
                        )));
                    }
                    let need = h.size_under(source);
                    if need >= h.free_space {
                        return Err(fail(format!(
                            "not enough free space for a snapshot of {source} at {to}: it needs {need} bytes and {} are free; nothing was copied",
                            h.free_space
                        ))
                        .with_reason("no_space"));
                    }
                    h.remove(to);
                    h.copy(source, to).map_err(fail)?;
                    let m = h.manifest_of("dir", source, to);
                    h.write(
                        &manifest_path(to),
                        serde_json::to_vec(&m).unwrap_or_default(),
                    );
                    Outcome::Backup(BackupInfo::from_manifest(host, &m, true))
                }
                Action::VerifyBackup { path } => {
                    let m = h.verify(path).map_err(|m| fail(m).with_reason("missing"))?;
                    Outcome::Backup(BackupInfo::from_manifest(host, &m, false))
                }
                Action::MysqlDump {
                    target, db, path, ..
                } => {
                    let body = format!(
                        "-- MariaDB dump (simulated) of {db} from {}\n-- Dump completed\n",
                        target.server()
                    );
                    h.write(path, body.into_bytes());
                    let mut m =
                        h.manifest_of("mysqldump", &format!("{db}@{}", target.server()), path);
                    for f in &mut m.files {
                        f.path.clear();
                    }
                    h.write(
                        &manifest_path(path),
                        serde_json::to_vec(&m).unwrap_or_default(),
                    );
                    Outcome::Backup(BackupInfo::from_manifest(host, &m, true))
                }
                Action::MysqlLoad { path, .. } => {
                    let m = h.verify(path).map_err(|m| fail(m).with_reason("missing"))?;
                    Outcome::Backup(BackupInfo::from_manifest(host, &m, false))
                }
                Action::RestoreSnapshot { snapshot, target } => {
                    let m = h
                        .verify(snapshot)
                        .map_err(|m| fail(m).with_reason("missing"))?;
                    h.remove(target);
                    h.copy(snapshot, target).map_err(fail)?;
                    Outcome::Backup(BackupInfo::from_manifest(host, &m, false))
                }
                Action::Docker { call, .. } => {
                    let mut out = h.docker.apply(call, &mut h.files, &h.dirs);
                    let by_model = if out.code == Some(0) {
                        models
                            .iter_mut()
                            .find_map(|m| m.docker(host, call, &out, h))
                    } else {
                        None
                    };
                    if let Some((o, log)) = by_model {
                        // A product's own script in its container, its services: its model.
                        out = o;
                        for (c, line) in log {
                            h.docker.append_log(&c, &[line]);
                        }
                    } else if let (DockerOp::Exec { name, .. }, Some(0)) = (call, out.code) {
                        // What the command inside prints: the scenario's rules answer.
                        if let Some(a) = answer_by_rule(rules, host, &action.describe(), None, h) {
                            out = a.out;
                            took = a.took.unwrap_or(took);
                            h.docker.append_log(name, &a.log);
                        }
                    }
                    crate::docker::judge(host, call, out)?.map_or(Outcome::Unit, Outcome::Exec)
                }
                Action::WaitPort { port, timeout } => {
                    if h.ports.contains(port) {
                        Outcome::Unit
                    } else {
                        self.clock += *timeout;
                        return Err(Fault::new(
                            FaultKind::Timeout,
                            Some(host),
                            format!(
                                "{host}: port {port} did not accept a connection within {}s",
                                timeout.as_secs()
                            ),
                        ));
                    }
                }
            }
        };
        self.clock += took;
        Ok(outcome)
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
        fn violations(&self, _: &[model::Component], _: &[usize]) -> Vec<String> {
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
        let down = |w: &World| w.availability.last().unwrap().down.clone();
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
