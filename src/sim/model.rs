//! Product models: a product running on some simulated hosts, answering its commands and saying what is up.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::ddb::{DdbKind, DdbValue};
use crate::inventory::Inventory;
use crate::sql::{SqlKind, SqlParams, SqlResult};
use crate::transport::{Command, ExecOutput};

use super::SimHost;

/// One component of a product (a process on a host) and whether it serves.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Component {
    /// `product/role@host`, as reports show it.
    pub name: String,
    pub host: String,
    pub up: bool,
}

/// A product in the simulated world. It interprets the product's commands on the hosts it runs
/// on (changing their state: files, ports), says which of its components serve, and which of the
/// product's availability rules (quorum, replicas) the current state breaks.
pub trait ProductModel: Send + Sync + std::fmt::Debug {
    /// The product's name in reports.
    fn name(&self) -> &str;

    /// Answers `command` on `host` when it is one of this product's commands (`None`: not
    /// mine; the scenario's rules or the default answer it).
    fn exec(&mut self, host: &str, command: &Command, state: &mut SimHost) -> Option<ExecOutput>;

    /// The same with what the command reads on stdin (a vendor script's prompts answered
    /// through a pipe); models whose commands read no input keep the default.
    fn exec_input(
        &mut self,
        host: &str,
        command: &Command,
        _stdin: Option<&[u8]>,
        state: &mut SimHost,
    ) -> Option<ExecOutput> {
        self.exec(host, command, state)
    }

    /// Answers a SQL statement sent to `server` (an inventory host, or `address:port`) on the
    /// client's session `session` when it is this product's (`None`: not mine; the scenario's
    /// rules or the plain store answer). An error is the server's code and message; 2003 means
    /// nothing listens (the client cannot connect) and 2013 that the session's connection was
    /// lost (its server restarted since the session's last statement).
    fn sql(
        &mut self,
        server: &str,
        session: u64,
        kind: SqlKind,
        statement: &str,
        params: &SqlParams,
        hosts: &mut BTreeMap<String, SimHost>,
    ) -> Option<Result<SqlResult, (u16, String)>> {
        let _ = (server, session, kind, statement, params, hosts);
        None
    }

    /// Answers a DolphinDB script (or a connect) sent to the node at `endpoint` (`address:port`)
    /// when that node is this product's (`None`: not mine). An error is the text the node (or
    /// the connection) fails with, and its reason (`connect`, `auth`, `server`). `now` is the
    /// simulated clock (what the node's `now()` answers).
    fn ddb(
        &mut self,
        endpoint: &str,
        kind: DdbKind,
        script: &str,
        hosts: &mut BTreeMap<String, SimHost>,
        now: Duration,
    ) -> Option<Result<DdbValue, (&'static str, String)>> {
        let _ = (endpoint, kind, script, hosts, now);
        None
    }

    /// After the simulated engine on `host` answered a docker operation (`out`): a product may
    /// answer instead (its own script run by `docker exec`) and add lines to containers' logs
    /// (`(container, line)`; its services starting). `None`: not mine (the scenario's rules answer
    /// an exec).
    fn docker(
        &mut self,
        host: &str,
        op: &crate::docker::DockerOp,
        out: &ExecOutput,
        state: &mut SimHost,
    ) -> Option<(ExecOutput, Vec<(String, String)>)> {
        let _ = (host, op, out, state);
        None
    }

    /// A `mysqldump` of database `db` on `server` (`address:port`) was taken (`load` false) or
    /// loaded back (`load` true): a model that keeps the server's databases saves or restores
    /// them.
    fn mysql_backup(&mut self, server: &str, db: &str, path: &str, load: bool) {
        let _ = (server, db, path, load);
    }

    /// Every component and whether it is up, read from the hosts' state.
    fn components(&self, hosts: &BTreeMap<String, SimHost>) -> Vec<Component>;

    /// The components on one host (after an action there). Models should answer without
    /// walking every host: the world calls this after every change.
    fn components_on(&self, host: &str, hosts: &BTreeMap<String, SimHost>) -> Vec<Component> {
        self.components(hosts)
            .into_iter()
            .filter(|c| c.host == host)
            .collect()
    }

    /// The availability rules the components break now, one sentence each. `down` holds the
    /// indices in `components` of those down (the world keeps it as components change, not
    /// rebuilt per call): the world calls this whenever what is up changes, so a model should
    /// answer from `down` (a handful in a rolling upgrade; `down.len()` costs nothing when half
    /// the cluster is down) and its own state, not by walking every component.
    fn violations(&self, components: &[Component], down: &BTreeSet<usize>) -> Vec<String>;

    /// The hosts whose components may have changed since the last call, drained: after a
    /// product statement the world re-reads only those. `None` (the default): not tracked, so
    /// the world re-reads every component when `generation` moved.
    fn take_changed_hosts(&mut self) -> Option<Vec<String>> {
        None
    }

    /// A number that changes whenever anything `components` or `violations` read changes (a
    /// node started or stopped, a chunk's recovery moved on). After a product statement the
    /// world re-reads every component, which costs the cluster's size; when the number is the
    /// same as at the last reading it skips that, so the status polls of a wait cost nothing.
    /// `None` (the default): not tracked, re-read after every statement.
    fn generation(&self) -> Option<u64> {
        None
    }

    /// A copy for a fresh world (each simulation starts from the scenario's state).
    fn box_clone(&self) -> Box<dyn ProductModel>;
}

impl Clone for Box<dyn ProductModel> {
    fn clone(&self) -> Self {
        self.box_clone()
    }
}

pub(super) fn settings_int(settings: &toml::Table, key: &str, default: i64) -> Result<i64, String> {
    match settings.get(key) {
        None => Ok(default),
        Some(toml::Value::Integer(i)) => Ok(*i),
        Some(v) => Err(format!("`{key}` must be an integer, not {}", v.type_str())),
    }
}

/// A string setting, `None` when absent.
pub(super) fn settings_str(settings: &toml::Table, key: &str) -> Result<Option<String>, String> {
    match settings.get(key) {
        None => Ok(None),
        Some(toml::Value::String(v)) => Ok(Some(v.clone())),
        Some(v) => Err(format!("`{key}` must be a string, not {}", v.type_str())),
    }
}

/// A list of names (one string counts as a list of one), empty when absent.
pub(super) fn settings_strings(settings: &toml::Table, key: &str) -> Result<Vec<String>, String> {
    match settings.get(key) {
        None => Ok(Vec::new()),
        Some(toml::Value::String(v)) => Ok(vec![v.clone()]),
        Some(toml::Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("`{key}` must be an array of strings"))
            })
            .collect(),
        Some(v) => Err(format!("`{key}` must be an array, not {}", v.type_str())),
    }
}

pub(super) fn check_keys(
    model: &str,
    settings: &toml::Table,
    allowed: &[&str],
) -> Result<(), String> {
    for k in settings.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(format!(
                "the `{model}` model has no setting `{k}` (settings: {})",
                allowed.join(", ")
            ));
        }
    }
    Ok(())
}

/// The pid that the stdlib's `process::alive` asks about (`sh -c 'ps -o stat= -p "$1" | grep
/// -qv ^Z' sh PID`), so that a model answers it for the daemons it runs.
pub(super) fn process_check_pid(argv: &[String]) -> Option<&str> {
    (argv.first()? == "sh" && argv.get(2)?.starts_with("ps -o stat= -p "))
        .then_some(argv.get(4)?.as_str())
}

/// The models that are not a shipped product's (`super::products` lists those).
const GENERIC_MODELS: &[&str] = &["service", "hello"];

/// The models a scenario can name in `[[products]]`: the generic ones, then every product's.
pub fn model_names() -> Vec<&'static str> {
    GENERIC_MODELS
        .iter()
        .copied()
        .chain(super::products::PRODUCTS.iter().map(|p| p.name))
        .collect()
}

/// Builds the model `name` over `hosts` with the scenario's settings (a model may read the
/// hosts' groups and vars from the inventory).
pub fn build(
    name: &str,
    hosts: Vec<String>,
    settings: &toml::Table,
    inventory: &Inventory,
) -> Result<Box<dyn ProductModel>, String> {
    if let Some(p) = super::products::product(name) {
        return (p.model)(hosts, settings, inventory);
    }
    match name {
        "service" => Ok(Box::new(PortService::from_settings(hosts, settings)?)),
        "hello" => Ok(Box::new(Hello::from_settings(hosts, settings)?)),
        other => Err(format!(
            "unknown product model `{other}` (models: {})",
            model_names().join(", ")
        )),
    }
}

/// The generic model: a service is up on a host while its port accepts connections; at least
/// `min_up` of them must be (default: a majority).
#[derive(Debug, Clone)]
pub struct PortService {
    pub label: String,
    pub hosts: Vec<String>,
    /// The same hosts, for the per-change lookup.
    member: std::collections::HashSet<String>,
    pub port: u16,
    pub min_up: usize,
}

impl PortService {
    fn from_settings(hosts: Vec<String>, s: &toml::Table) -> Result<Self, String> {
        check_keys("service", s, &["name", "port", "min_up"])?;
        let label = match s.get("name") {
            None => "service".to_string(),
            Some(toml::Value::String(n)) => n.clone(),
            Some(_) => return Err("`name` must be a string".into()),
        };
        let port = settings_int(s, "port", 0)?;
        if !(1..=65535).contains(&port) {
            return Err("the `service` model needs `port` (1-65535)".into());
        }
        let majority = hosts.len() / 2 + 1;
        let min_up = settings_int(s, "min_up", majority as i64)?.max(0) as usize;
        Ok(PortService {
            label,
            member: hosts.iter().cloned().collect(),
            hosts,
            port: port as u16,
            min_up,
        })
    }

    fn components_of(&self, hosts: &BTreeMap<String, SimHost>) -> Vec<Component> {
        self.hosts
            .iter()
            .map(|h| self.component(h, hosts))
            .collect()
    }

    fn component(&self, h: &str, hosts: &BTreeMap<String, SimHost>) -> Component {
        Component {
            name: format!("{}@{h}", self.label),
            host: h.to_string(),
            up: hosts.get(h).is_some_and(|s| s.ports.contains(&self.port)),
        }
    }

    fn components_on_host(&self, h: &str, hosts: &BTreeMap<String, SimHost>) -> Vec<Component> {
        if self.member.contains(h) {
            vec![self.component(h, hosts)]
        } else {
            Vec::new()
        }
    }

    fn violations_of(&self, components: &[Component], down: &BTreeSet<usize>) -> Vec<String> {
        let up = components.len() - down.len();
        if up < self.min_up {
            vec![format!(
                "{}: {up} of {} up, the rule needs at least {}",
                self.label,
                components.len(),
                self.min_up
            )]
        } else {
            Vec::new()
        }
    }
}

impl ProductModel for PortService {
    fn name(&self) -> &str {
        &self.label
    }
    fn exec(&mut self, _: &str, _: &Command, _: &mut SimHost) -> Option<ExecOutput> {
        None
    }
    fn components(&self, hosts: &BTreeMap<String, SimHost>) -> Vec<Component> {
        self.components_of(hosts)
    }
    fn components_on(&self, host: &str, hosts: &BTreeMap<String, SimHost>) -> Vec<Component> {
        self.components_on_host(host, hosts)
    }
    fn violations(&self, components: &[Component], down: &BTreeSet<usize>) -> Vec<String> {
        self.violations_of(components, down)
    }
    fn box_clone(&self) -> Box<dyn ProductModel> {
        Box::new(self.clone())
    }
}

/// The README example's app: `BIN/app-ctl start|stop|status|version`. It serves on `port`
/// (default 8080) while started; `version` prints `BIN/VERSION`, the version of the binaries
/// in that directory, so a botched swap shows. At least `min_up` hosts (default a majority) must
/// serve.
#[derive(Debug, Clone)]
pub struct Hello {
    service: PortService,
}

impl Hello {
    fn from_settings(hosts: Vec<String>, s: &toml::Table) -> Result<Self, String> {
        check_keys("hello", s, &["port", "min_up"])?;
        let mut t = s.clone();
        t.entry("port").or_insert(toml::Value::Integer(8080));
        t.insert("name".into(), toml::Value::String("hello".into()));
        Ok(Hello {
            service: PortService::from_settings(hosts, &t)?,
        })
    }
}

pub(super) fn output(code: i32, stdout: &str, stderr: &str) -> ExecOutput {
    ExecOutput {
        code: Some(code),
        signal: None,
        stdout: stdout.as_bytes().to_vec(),
        stderr: stderr.as_bytes().to_vec(),
        truncated: false,
    }
}

impl ProductModel for Hello {
    fn name(&self) -> &str {
        "hello"
    }

    fn exec(&mut self, host: &str, command: &Command, state: &mut SimHost) -> Option<ExecOutput> {
        if !self.service.member.contains(host) {
            return None;
        }
        let Command::Argv(argv) = command else {
            return None;
        };
        let ctl = argv.first()?;
        let bin = ctl.strip_suffix("/app-ctl")?;
        if !state.files.contains_key(ctl.as_str()) {
            return Some(output(
                127,
                "",
                &format!("sh: {ctl}: No such file or directory\n"),
            ));
        }
        let version = state
            .files
            .get(&format!("{bin}/VERSION"))
            .map(|v| String::from_utf8_lossy(v).trim().to_string());
        let port = self.service.port;
        Some(match argv.get(1).map(String::as_str) {
            Some("start") => {
                state.open_port(port);
                output(
                    0,
                    &format!("hello {} started\n", version.as_deref().unwrap_or("?")),
                    "",
                )
            }
            Some("stop") => {
                state.ports.remove(&port);
                output(0, "hello stopped\n", "")
            }
            Some("status") if state.ports.contains(&port) => output(0, "running\n", ""),
            Some("status") => output(3, "stopped\n", ""),
            Some("version") => match version {
                Some(v) => output(0, &format!("{v}\n"), ""),
                None => output(
                    1,
                    "",
                    &format!("{bin}/VERSION: No such file or directory\n"),
                ),
            },
            _ => output(2, "", "usage: app-ctl start|stop|status|version\n"),
        })
    }

    fn components(&self, hosts: &BTreeMap<String, SimHost>) -> Vec<Component> {
        self.service.components_of(hosts)
    }

    fn components_on(&self, host: &str, hosts: &BTreeMap<String, SimHost>) -> Vec<Component> {
        self.service.components_on_host(host, hosts)
    }

    fn violations(&self, components: &[Component], down: &BTreeSet<usize>) -> Vec<String> {
        self.service.violations_of(components, down)
    }

    fn box_clone(&self) -> Box<dyn ProductModel> {
        Box::new(self.clone())
    }
}
