//! The `oms` product model: OMS nodes as docker containers and their metadata databases, answering as the lab double does.
//!
//! It keeps the metadata server's three kinds of database (rm with `oms_normal_config` and
//! `oms_version`, cm with `cm_node`, each region's cm_hb with `heatbeat_sequence`) and answers
//! the statements `stdlib/oms.rhai` sends there; it plays `/root/docker_init.sh` in a new
//! container (the 4.1.1 gate, the schema version, `oms_version`), the container's services (the
//! success line in `docker logs` once the metadata is at its version), and `GET /oms/health`
//! (curl on the host). From 4.1.0 it plays the deploy script the guide pulls out of the 4.2.3
//! image (its dialog read from stdin, config_copy.yaml, the new container on the old mounts), and
//! `docker_oms_ce_version_upgrade.sh` / `docker_oms_ce_version_roll_back.sh` in that container.
//! Dumps and loads save and restore a database's state; a database dropped is gone until it is
//! created and loaded again. Availability: a node serves while a healthy container runs there;
//! the rule: at least one node serves.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::docker::{DockerOp, RunSpec};
use crate::inventory::Inventory;
use crate::sql::{SqlKind, SqlParams, SqlResult, SqlValue};
use crate::transport::{Command, ExecOutput};

use super::model::{
    check_keys, output, settings_int, settings_str, settings_strings, Component, ProductModel,
};
use super::SimHost;

const SUCCESS: &str = "OMS service start successfully";
/// How long a new container's services take to come up before docker_init.sh can work (the
/// guide waits 300 s; the model, like the lab's double, a few seconds), and what it logs then.
const READY_AFTER: std::time::Duration = std::time::Duration::from_secs(3);
const READY: &str = "services are up, ready for docker_init.sh";
const TOO_OLD: &str = "Version before 4.1.1 is not allowed to upgrade.";
const COMPLETED: &str = "[Completed] All initialization steps are executed.";
/// The 4.1.0 → 4.2.3 deploy script, in the 4.2.3 image's /root.
const DEPLOY: &str = "docker_remote_deploy_410_up_423_version.sh";
const UPGRADE_410: &str = "/root/docker_oms_ce_version_upgrade.sh";
const ROLL_BACK_410: &str = "/root/docker_oms_ce_version_roll_back.sh";
/// The version the 4.1.0 path's scripts ship in.
const SCRIPTS_IN: &str = "4.2.3-CE";

/// One metadata database's state.
#[derive(Debug, Clone, PartialEq)]
enum Db {
    Rm {
        ha: String,
        /// `None`: no `oms_version` table.
        versions: Option<Vec<String>>,
        schema: String,
        /// The console's projects and data sources: OMS keeps them in its rm database, so a
        /// dump and its load carry them.
        projects: Vec<Project>,
        sources: Vec<Source>,
    },
    Cm {
        nodes: Vec<(String, String)>,
        schema: String,
    },
    Hb {
        ids: Vec<i64>,
        schema: String,
    },
    /// Created, not loaded yet.
    Empty,
}

/// A migration or synchronization project as the console's OpenAPI lists it.
#[derive(Debug, Clone, PartialEq)]
struct Project {
    id: String,
    name: String,
    kind: String,
    status: String,
    /// Its steps in order: name and status.
    steps: Vec<(String, String)>,
}

/// A data source as `ListDataSource` gives it.
#[derive(Debug, Clone, PartialEq)]
struct Source {
    id: String,
    name: String,
    kind: String,
}

/// The OpenAPI's page size limit (`ListProjects`: at most 150).
const MAX_PAGE: i64 = 150;

#[derive(Debug, Clone)]
struct Node {
    host: String,
    ip: String,
    port: i64,
}

/// The OMS deployment of a scenario (`model = "oms"`), over the hosts of a group (host vars
/// `container`, `ip`, `health_port`). Settings: `metadb` (`"address:port"` of the metadata
/// server, required), `rm`, `cm`, `cm_hb` (the databases; `cm_hb` an array), `version` (what
/// `oms_version` records at the start, default `4.2.2-CE`), `no_version_table` (an install
/// without `oms_version`: docker_init.sh says it is older than 4.1.1), `ha` (the `ha.config`
/// text), `heartbeat_rows` (default 200), `init_fail`, `upgrade_fail` and `unhealthy` (hosts whose
/// new container's docker_init.sh fails, whose docker_oms_ce_version_upgrade.sh stops after the rm
/// change, or whose services never turn healthy). The console's OpenAPI (`POST /api/v2?Action=`
/// ListProjects, DescribeProjectSteps, ListDataSource on the node's port): `projects` (tables
/// with `id`, `name`, `type`, `status` and `steps`, a table of step name to status, in the
/// order OMS runs them), `data_sources` (`id`, `name`, `type`), `no_openapi` (hosts whose console
/// answers 404, as one older than CE 4.1.1 may), `user_creates` (hosts where, once a 4.2.3
/// console serves, a user creates a project and an HBase data source).
#[derive(Debug, Clone)]
pub struct OmsModel {
    metadb: String,
    rm: String,
    cm: String,
    hbs: Vec<String>,
    nodes: Vec<Node>,
    /// Positions in `nodes` by host, in order: every command and container change on a host
    /// looks its node up.
    on_host: std::collections::HashMap<String, Vec<usize>>,
    dbs: BTreeMap<String, Db>,
    dumps: BTreeMap<String, Db>,
    init_fail: BTreeSet<String>,
    upgrade_fail: BTreeSet<String>,
    unhealthy: BTreeSet<String>,
    /// New containers whose services are still starting: name → when they were run.
    starting: BTreeMap<String, std::time::Duration>,
    no_openapi: BTreeSet<String>,
    /// Hosts whose user has yet to create a project on a 4.2.3 console.
    user_creates: BTreeSet<String>,
}

/// The deploy script's prompts, answered from its stdin one line each; the transcript so far.
struct Dialog {
    answers: VecDeque<String>,
    text: String,
}

impl Dialog {
    fn ask(&mut self, q: &str) -> Result<String, String> {
        self.text.push_str(q);
        self.text.push(' ');
        let a = self
            .answers
            .pop_front()
            .ok_or_else(|| format!("no answer to: {q}"))?;
        self.text.push_str(&a);
        self.text.push('\n');
        Ok(a)
    }

    fn yes(&mut self, q: &str, otherwise: &str) -> Result<(), String> {
        if self.ask(q)? == "y" {
            Ok(())
        } else {
            Err(otherwise.to_string())
        }
    }
}

/// A `config.yaml` value (`key: value`).
fn yaml_value(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().to_string())
}

/// A `config.yaml`'s `cm_nodes`, in order.
fn yaml_nodes(text: &str) -> Vec<String> {
    text.lines()
        .skip_while(|l| !l.starts_with("cm_nodes:"))
        .skip(1)
        .take_while(|l| l.starts_with(' '))
        .filter_map(|l| l.trim().strip_prefix("- ").map(|v| v.trim().to_string()))
        .collect()
}

/// x.y.z as a number for comparisons (`4.2.3-CE` → 4002003).
fn vnum(v: &str) -> i64 {
    let core = v
        .rsplit(':')
        .next()
        .unwrap_or(v)
        .trim_end_matches("-CE")
        .trim_end_matches("-ce");
    let mut n = 0;
    for (i, p) in core.split('.').take(3).enumerate() {
        let digits: String = p.chars().filter(char::is_ascii_digit).collect();
        n += digits.parse::<i64>().unwrap_or(0) * [1_000_000, 1_000, 1][i];
    }
    n
}

/// `4.2.3-CE` from an image name such as `oms:4.2.3-CE`.
fn image_version(image: &str) -> String {
    image.rsplit(':').next().unwrap_or(image).to_string()
}

fn rows(columns: &[&str], rows: Vec<Vec<SqlValue>>) -> SqlResult {
    SqlResult {
        columns: columns.iter().map(|c| c.to_string()).collect(),
        rows,
        ..SqlResult::default()
    }
}

fn affected(n: u64) -> SqlResult {
    SqlResult {
        affected: n,
        ..SqlResult::default()
    }
}

type SqlAnswer = Result<SqlResult, (u16, String)>;

fn table_str(t: &toml::Table, key: &str, what: &str) -> Result<String, String> {
    match t.get(key) {
        Some(toml::Value::String(v)) => Ok(v.clone()),
        _ => Err(format!("{what} needs `{key}` (a string)")),
    }
}

/// The scenario's `projects`: `[{ id, name, type, status, steps = { NAME = "STATUS", .. } }]`.
fn settings_projects(s: &toml::Table) -> Result<Vec<Project>, String> {
    let Some(v) = s.get("projects") else {
        return Ok(Vec::new());
    };
    let list = v
        .as_array()
        .ok_or("oms: `projects` is an array of tables")?;
    let mut out = Vec::new();
    for p in list {
        let t = p.as_table().ok_or("oms: each of `projects` is a table")?;
        let steps = match t.get("steps") {
            None => Vec::new(),
            Some(toml::Value::Table(st)) => st
                .iter()
                .map(|(k, v)| match v {
                    toml::Value::String(x) => Ok((k.clone(), x.clone())),
                    _ => Err(format!("oms: project step `{k}` needs a status string")),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err("oms: a project's `steps` is a table of step = status".into()),
        };
        out.push(Project {
            id: table_str(t, "id", "oms: a project")?,
            name: table_str(t, "name", "oms: a project")?,
            kind: table_str(t, "type", "oms: a project").unwrap_or_else(|_| "MIGRATION".into()),
            status: table_str(t, "status", "oms: a project")?,
            steps,
        });
    }
    Ok(out)
}

/// The scenario's `data_sources`: `[{ id, name, type }]`.
fn settings_sources(s: &toml::Table) -> Result<Vec<Source>, String> {
    let Some(v) = s.get("data_sources") else {
        return Ok(Vec::new());
    };
    let list = v
        .as_array()
        .ok_or("oms: `data_sources` is an array of tables")?;
    list.iter()
        .map(|x| {
            let t = x
                .as_table()
                .ok_or("oms: each of `data_sources` is a table")?;
            Ok(Source {
                id: table_str(t, "id", "oms: a data source")?,
                name: table_str(t, "name", "oms: a data source")?,
                kind: table_str(t, "type", "oms: a data source")?,
            })
        })
        .collect()
}

/// The OpenAPI's envelope around `data` (a list: with its page).
fn envelope(data: serde_json::Value, page: Option<(i64, i64, usize)>) -> serde_json::Value {
    let (n, size, total) = page.map_or((None, None, None), |(n, s, t)| (Some(n), Some(s), Some(t)));
    serde_json::json!({
        "success": true, "errorDetail": null, "code": null, "message": null, "advice": null,
        "requestId": "sim", "pageNumber": n, "pageSize": size, "totalCount": total,
        "cost": "1 ms", "data": data,
    })
}

fn api_error(code: &str, message: &str) -> serde_json::Value {
    serde_json::json!({
        "success": false, "errorDetail": { "code": code, "message": message }, "code": code,
        "message": message, "advice": null, "requestId": "sim", "pageNumber": null,
        "pageSize": null, "totalCount": null, "cost": "1 ms", "data": null,
    })
}

/// One page of `items` as `pageNumber` / `pageSize` in `body` ask (1 and 10 by default).
fn paged(
    items: Vec<serde_json::Value>,
    body: &serde_json::Value,
) -> Result<serde_json::Value, serde_json::Value> {
    let n = body["pageNumber"].as_i64().unwrap_or(1).max(1);
    let size = body["pageSize"].as_i64().unwrap_or(10);
    if !(1..=MAX_PAGE).contains(&size) {
        return Err(api_error(
            "CM-PARAM-INVALID",
            &format!("pageSize must be between 1 and {MAX_PAGE}"),
        ));
    }
    let total = items.len();
    let page: Vec<_> = items
        .into_iter()
        .skip(((n - 1) * size) as usize)
        .take(size as usize)
        .collect();
    Ok(envelope(
        serde_json::Value::Array(page),
        Some((n, size, total)),
    ))
}

impl OmsModel {
    /// The (first) node on `host`.
    fn node_on(&self, host: &str) -> Option<&Node> {
        let i = *self.on_host.get(host)?.first()?;
        self.nodes.get(i)
    }

    pub(super) fn from_settings(
        hosts: Vec<String>,
        s: &toml::Table,
        inv: &Inventory,
    ) -> Result<Self, String> {
        check_keys(
            "oms",
            s,
            &[
                "metadb",
                "rm",
                "cm",
                "cm_hb",
                "version",
                "no_version_table",
                "ha",
                "heartbeat_rows",
                "init_fail",
                "upgrade_fail",
                "unhealthy",
                "projects",
                "data_sources",
                "no_openapi",
                "user_creates",
            ],
        )?;
        let projects = settings_projects(s)?;
        let sources = settings_sources(s)?;
        let metadb =
            settings_str(s, "metadb")?.ok_or("the oms model needs `metadb` (\"address:port\")")?;
        let rm = settings_str(s, "rm")?.unwrap_or_else(|| "rm_422".into());
        let cm = settings_str(s, "cm")?.unwrap_or_else(|| "cm_422".into());
        let mut hbs = settings_strings(s, "cm_hb")?;
        if hbs.is_empty() {
            hbs.push("cm_hb_422".into());
        }
        let version = settings_str(s, "version")?.unwrap_or_else(|| "4.2.2-CE".into());
        let no_table = matches!(s.get("no_version_table"), Some(toml::Value::Boolean(true)));
        let ha = settings_str(s, "ha")?.unwrap_or_else(|| "{\"enable\": true}".into());
        let rows_n = settings_int(s, "heartbeat_rows", 200)?;
        let mut nodes = Vec::new();
        for h in &hosts {
            let e = inv.host(h).ok_or_else(|| format!("no host `{h}`"))?;
            let ip = match e.vars.get("ip") {
                Some(serde_json::Value::String(v)) => v.clone(),
                _ => return Err(format!("host `{h}` has no var `ip` (its OMS_HOST_IP)")),
            };
            let port = e
                .vars
                .get("health_port")
                .and_then(|v| v.as_i64())
                .unwrap_or(8089);
            nodes.push(Node {
                host: h.clone(),
                ip,
                port,
            });
        }
        let schema = version.clone();
        let mut dbs = BTreeMap::new();
        dbs.insert(
            rm.clone(),
            Db::Rm {
                ha,
                versions: (!no_table).then(|| vec![version.clone()]),
                schema: schema.clone(),
                projects,
                sources,
            },
        );
        dbs.insert(
            cm.clone(),
            Db::Cm {
                nodes: nodes
                    .iter()
                    .map(|n| (n.ip.clone(), "ONLINE".to_string()))
                    .collect(),
                schema: schema.clone(),
            },
        );
        for hb in &hbs {
            dbs.insert(
                hb.clone(),
                Db::Hb {
                    ids: (1..=rows_n).collect(),
                    schema: schema.clone(),
                },
            );
        }
        let mut on_host: std::collections::HashMap<String, Vec<usize>> =
            std::collections::HashMap::new();
        for (i, n) in nodes.iter().enumerate() {
            on_host.entry(n.host.clone()).or_default().push(i);
        }
        Ok(OmsModel {
            metadb,
            rm,
            cm,
            hbs,
            nodes,
            on_host,
            dbs,
            dumps: BTreeMap::new(),
            init_fail: settings_strings(s, "init_fail")?.into_iter().collect(),
            upgrade_fail: settings_strings(s, "upgrade_fail")?.into_iter().collect(),
            unhealthy: settings_strings(s, "unhealthy")?.into_iter().collect(),
            starting: BTreeMap::new(),
            no_openapi: settings_strings(s, "no_openapi")?.into_iter().collect(),
            user_creates: settings_strings(s, "user_creates")?.into_iter().collect(),
        })
    }

    /// `curl -X POST --data-binary BODY [-w FORMAT] http://IP:PORT/api/v2?Action=ACTION`: the
    /// console of the container that serves on the host answers.
    fn openapi(
        &mut self,
        host: &str,
        action: &str,
        argv: &[String],
        state: &mut SimHost,
    ) -> ExecOutput {
        let arg_after = |flag: &str| {
            argv.iter()
                .position(|a| a == flag)
                .and_then(|i| argv.get(i + 1))
                .cloned()
        };
        let node = self.node_on(host).cloned();
        let Some(node) = node else {
            return output(7, "", "curl: (7) Couldn't connect to server\n");
        };
        let served = state
            .docker
            .running()
            .into_iter()
            .find(|(_, _, env)| env.get("OMS_HOST_IP") == Some(&node.ip));
        let Some((_, image, env)) = served else {
            return output(
                7,
                "",
                &format!(
                    "curl: (7) Failed to connect to {} port {} after 0 ms: Couldn't connect to server\n",
                    node.ip, node.port
                ),
            );
        };
        let (status, text) = if !self.healthy(host, &image, &env) {
            (
                502,
                "<html><head><title>502 Bad Gateway</title></head></html>".to_string(),
            )
        } else if self.no_openapi.contains(host) {
            (
                404,
                "{\"status\":404,\"error\":\"Not Found\",\"path\":\"/api/v2\"}".to_string(),
            )
        } else {
            if vnum(&image) >= vnum("4.2.3") && self.user_creates.remove(host) {
                self.user_creates_on_new(host);
            }
            let body: serde_json::Value = arg_after("--data-binary")
                .and_then(|b| serde_json::from_str(&b).ok())
                .unwrap_or(serde_json::Value::Null);
            let answer = self.api_answer(action, &body);
            (200, answer.unwrap_or_else(|e| e).to_string())
        };
        let mut out = text;
        if let Some(w) = arg_after("-w") {
            out.push_str(
                &w.replace("\\n", "\n")
                    .replace("%{http_code}", &status.to_string()),
            );
        }
        output(0, &out, "")
    }

    /// A user creates a project and an HBase data source on the 4.2.3 console of `host`.
    fn user_creates_on_new(&mut self, host: &str) {
        if let Some(Db::Rm {
            projects, sources, ..
        }) = self.dbs.get_mut(&self.rm)
        {
            projects.push(Project {
                id: format!("np_new_{host}"),
                name: format!("created_on_423_{host}"),
                kind: "MIGRATION".into(),
                status: "INIT".into(),
                steps: Vec::new(),
            });
            sources.push(Source {
                id: format!("e_hbase_{host}"),
                name: format!("hbase_{host}"),
                kind: "HBASE".into(),
            });
        }
    }

    fn api_answer(
        &self,
        action: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, serde_json::Value> {
        let (projects, sources) = match self.dbs.get(&self.rm) {
            Some(Db::Rm {
                projects, sources, ..
            }) => (projects.clone(), sources.clone()),
            _ => {
                return Err(api_error(
                    "CM-RESOAT1111",
                    &format!("Unknown database '{}'", self.rm),
                ))
            }
        };
        match action {
            "ListProjects" => {
                let want: Vec<String> = match &body["status"] {
                    serde_json::Value::Array(a) => a
                        .iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect(),
                    serde_json::Value::String(x) => vec![x.clone()],
                    _ => Vec::new(),
                };
                // Newest first (gmtCreate descend): the scenario lists them oldest first.
                let items = projects
                    .iter()
                    .rev()
                    .filter(|p| want.is_empty() || want.contains(&p.status))
                    .map(|p| {
                        serde_json::json!({
                            "id": p.id, "name": p.name, "type": p.kind, "status": p.status,
                        })
                    })
                    .collect();
                paged(items, body)
            }
            "DescribeProjectSteps" => {
                let id = body["id"].as_str().unwrap_or_default();
                let Some(p) = projects.iter().find(|p| p.id == id) else {
                    return Err(api_error(
                        "CM-RESOURCE-NOT-FOUND",
                        &format!("project {id} not found"),
                    ));
                };
                let steps = p
                    .steps
                    .iter()
                    .enumerate()
                    .map(|(i, (name, status))| {
                        let progress = match status.as_str() {
                            "FINISHED" => 100,
                            "RUNNING" => 50,
                            _ => 0,
                        };
                        serde_json::json!({
                            "order": i + 1, "name": name, "description": name,
                            "status": status, "progress": progress,
                        })
                    })
                    .collect();
                Ok(envelope(serde_json::Value::Array(steps), None))
            }
            "ListDataSource" => {
                let items = sources
                    .iter()
                    .map(|s| serde_json::json!({ "id": s.id, "name": s.name, "type": s.kind }))
                    .collect();
                paged(items, body)
            }
            other => Err(api_error(
                "CM-ACTION-NOT-SUPPORTED",
                &format!("unknown action {other}"),
            )),
        }
    }

    /// The version `oms_version` records last.
    fn recorded(&self) -> Option<String> {
        match self.dbs.get(&self.rm) {
            Some(Db::Rm {
                versions: Some(v), ..
            }) => v.iter().max_by_key(|x| vnum(x)).cloned(),
            _ => None,
        }
    }

    fn at_version(&self, image: &str) -> bool {
        self.recorded().as_deref() == Some(image_version(image).as_str())
    }

    /// Whether the OMS container `image` (started with `env`) on `host` serves a healthy console.
    /// Node `n` as a component: up while a healthy OMS container of its address runs on its host.
    fn component(&self, n: &Node, hosts: &BTreeMap<String, SimHost>) -> Component {
        Component {
            name: format!("oms@{}", n.host),
            host: n.host.clone(),
            up: hosts.get(&n.host).is_some_and(|h| {
                h.docker.running().into_iter().any(|(_, image, env)| {
                    env.get("OMS_HOST_IP") == Some(&n.ip) && self.healthy(&n.host, &image, &env)
                })
            }),
        }
    }

    fn healthy(&self, host: &str, image: &str, env: &BTreeMap<String, String>) -> bool {
        if self.unhealthy.contains(host) && env.get("IS_UPGRADE").is_some_and(|v| v == "true") {
            return false;
        }
        env.get("IS_UPGRADE").is_none_or(|v| v != "true") || self.at_version(image)
    }

    fn db_mut(&mut self, name: &str) -> Result<&mut Db, (u16, String)> {
        self.dbs
            .get_mut(name)
            .ok_or_else(|| (1049, format!("Unknown database '{name}'")))
    }

    fn sql_answer(&mut self, statement: &str, params: &SqlParams) -> SqlAnswer {
        let s = crate::sql::one_line(statement);
        let q = |d: &str| format!("`{d}`");
        let p0 = || match params {
            SqlParams::Positional(v) => v.first().cloned(),
            _ => None,
        };
        let (rm, cm) = (self.rm.clone(), self.cm.clone());
        if s.starts_with("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = 'oms_version'") {
            let has = matches!(self.dbs.get(&rm), Some(Db::Rm { versions: Some(_), .. }));
            return Ok(rows(&["COUNT(*)"], vec![vec![SqlValue::Int(i64::from(has))]]));
        }
        if s == format!(
            "SELECT version FROM {}.oms_version ORDER BY gmt_modified DESC, version DESC LIMIT 1",
            q(&rm)
        ) {
            return match self.dbs.get(&rm) {
                Some(Db::Rm {
                    versions: Some(_), ..
                }) => Ok(rows(
                    &["version"],
                    self.recorded()
                        .map(|v| vec![SqlValue::Text(v)])
                        .into_iter()
                        .collect(),
                )),
                _ => Err((1146, format!("Table '{rm}.oms_version' doesn't exist"))),
            };
        }
        if s == format!(
            "SELECT cfg_value FROM {}.oms_normal_config WHERE cfg_name = 'ha.config'",
            q(&rm)
        ) {
            return match self.db_mut(&rm)? {
                Db::Rm { ha, .. } => {
                    Ok(rows(&["cfg_value"], vec![vec![SqlValue::Text(ha.clone())]]))
                }
                _ => Err((
                    1146,
                    format!("Table '{rm}.oms_normal_config' doesn't exist"),
                )),
            };
        }
        if s == format!(
            "UPDATE {}.oms_normal_config SET cfg_value = ? WHERE cfg_name = 'ha.config'",
            q(&rm)
        ) {
            let v = match p0() {
                Some(SqlValue::Text(t)) => t,
                _ => return Err((1064, "ha.config needs a text value".into())),
            };
            return match self.db_mut(&rm)? {
                Db::Rm { ha, .. } => {
                    let n = u64::from(*ha != v);
                    *ha = v;
                    Ok(affected(n))
                }
                _ => Err((
                    1146,
                    format!("Table '{rm}.oms_normal_config' doesn't exist"),
                )),
            };
        }
        if s == format!("SELECT ip, status FROM {}.cm_node ORDER BY ip", q(&cm)) {
            return match self.db_mut(&cm)? {
                Db::Cm { nodes, .. } => {
                    let mut n = nodes.clone();
                    n.sort();
                    Ok(rows(
                        &["ip", "status"],
                        n.into_iter()
                            .map(|(i, st)| vec![SqlValue::Text(i), SqlValue::Text(st)])
                            .collect(),
                    ))
                }
                _ => Err((1146, format!("Table '{cm}.cm_node' doesn't exist"))),
            };
        }
        for hb in self.hbs.clone() {
            if s == format!("SELECT MAX(id) FROM {}.heatbeat_sequence", q(&hb)) {
                return match self.db_mut(&hb)? {
                    Db::Hb { ids, .. } => Ok(rows(
                        &["MAX(id)"],
                        vec![vec![ids
                            .iter()
                            .max()
                            .map_or(SqlValue::Null, |m| SqlValue::Int(*m))]],
                    )),
                    _ => Err((
                        1146,
                        format!("Table '{hb}.heatbeat_sequence' doesn't exist"),
                    )),
                };
            }
            if s == format!("DELETE FROM {}.heatbeat_sequence WHERE id < ?", q(&hb)) {
                let below = match p0() {
                    Some(SqlValue::Int(i)) => i,
                    _ => return Err((1064, "DELETE needs an id".into())),
                };
                return match self.db_mut(&hb)? {
                    Db::Hb { ids, .. } => {
                        let before = ids.len();
                        ids.retain(|i| *i >= below);
                        Ok(affected((before - ids.len()) as u64))
                    }
                    _ => Err((
                        1146,
                        format!("Table '{hb}.heatbeat_sequence' doesn't exist"),
                    )),
                };
            }
        }
        if s.starts_with(&format!(
            "CREATE TABLE IF NOT EXISTS {}.oms_version",
            q(&rm)
        )) {
            if let Db::Rm { versions, .. } = self.db_mut(&rm)? {
                if versions.is_none() {
                    *versions = Some(Vec::new());
                }
            }
            return Ok(affected(0));
        }
        if s == format!("REPLACE INTO {}.oms_version (version) VALUES (?)", q(&rm)) {
            let v = match p0() {
                Some(SqlValue::Text(t)) => t,
                _ => return Err((1064, "REPLACE needs a version".into())),
            };
            return match self.db_mut(&rm)? {
                Db::Rm {
                    versions: Some(vs), ..
                } => {
                    vs.retain(|x| *x != v);
                    vs.push(v);
                    Ok(affected(1))
                }
                _ => Err((1146, format!("Table '{rm}.oms_version' doesn't exist"))),
            };
        }
        if let Some(db) = s
            .strip_prefix("DROP DATABASE IF EXISTS `")
            .and_then(|r| r.strip_suffix('`'))
        {
            let n = u64::from(self.dbs.remove(db).is_some());
            return Ok(affected(n));
        }
        if let Some(db) = s
            .strip_prefix("CREATE DATABASE `")
            .and_then(|r| r.strip_suffix('`'))
        {
            if self.dbs.contains_key(db) {
                return Err((
                    1007,
                    format!("Can't create database '{db}'; database exists"),
                ));
            }
            self.dbs.insert(db.to_string(), Db::Empty);
            return Ok(affected(1));
        }
        Err((
            1064,
            format!("the oms model does not know this statement: {s}"),
        ))
    }

    fn docker_init(&mut self, host: &str, image: &str) -> ExecOutput {
        let version = image_version(image);
        let mut out = String::from("[docker_init] start, config /home/admin/conf/config.yaml\n");
        if self.init_fail.contains(host) {
            return output(
                1,
                &out,
                &format!(
                    "[docker_init] ERROR: schema change of {} failed: Lost connection to server during query\n",
                    self.cm
                ),
            );
        }
        let old = self.recorded();
        if old.as_ref().is_none_or(|v| vnum(v) < vnum("4.1.1")) {
            out.push_str(TOO_OLD);
            out.push('\n');
            return output(1, &out, "");
        }
        out.push_str(&format!(
            "[docker_init] upgrading the metadata from {} to {version}\n",
            old.unwrap_or_default()
        ));
        self.migrate(&version, |vs| {
            if let Some(vs) = vs {
                vs.retain(|x| *x != version);
                vs.push(version.clone());
            }
        });
        out.push_str(&format!("[docker_init] {COMPLETED}\n"));
        output(0, &out, "")
    }

    /// Every database's schema to `schema`, and `oms_version` (`None`: no table) changed by
    /// `versions`.
    fn migrate(&mut self, schema: &str, versions: impl FnOnce(&mut Option<Vec<String>>)) {
        let mut versions = Some(versions);
        for db in self.dbs.values_mut() {
            match db {
                Db::Rm {
                    schema: s,
                    versions: vs,
                    ..
                } => {
                    *s = schema.to_string();
                    if let Some(f) = versions.take() {
                        f(vs);
                    }
                }
                Db::Cm { schema: s, .. } | Db::Hb { schema: s, .. } => *s = schema.to_string(),
                Db::Empty => {}
            }
        }
    }

    /// The deploy script of the 4.1.0 path, run on `host` (`sh SCRIPT -o DIR -c CONFIG -i IP -d
    /// IMAGE`, its answers on stdin). Like the vendor's tools it exits 0 when it fails.
    fn deploy_410(
        &mut self,
        host: &str,
        argv: &[String],
        stdin: &[u8],
        state: &mut SimHost,
    ) -> ExecOutput {
        if !state.files.contains_key(&argv[1]) {
            return output(
                2,
                "",
                &format!("sh: 0: cannot open {}: No such file\n", argv[1]),
            );
        }
        let mut d = Dialog {
            answers: String::from_utf8_lossy(stdin)
                .lines()
                .map(str::to_string)
                .collect(),
            text: String::new(),
        };
        match self.deploy_dialog(host, &argv[2..], &mut d, state) {
            Ok(()) => output(0, &d.text, ""),
            Err(m) => output(0, &format!("{}[ERROR] {m}\n", d.text), ""),
        }
    }

    fn deploy_dialog(
        &mut self,
        host: &str,
        args: &[String],
        d: &mut Dialog,
        state: &mut SimHost,
    ) -> Result<(), String> {
        let usage = "usage: sh docker_remote_deploy_410_up_423_version.sh -o <mount directory> -c <config.yaml> -i <local IP> -d <image>";
        let mut opt = BTreeMap::new();
        for pair in args.chunks(2) {
            match pair {
                [k, v] if ["-o", "-c", "-i", "-d"].contains(&k.as_str()) => {
                    opt.insert(k.as_str(), v.clone());
                }
                _ => return Err(usage.into()),
            }
        }
        let (Some(dir), Some(cfg), Some(ip), Some(image)) =
            (opt.get("-o"), opt.get("-c"), opt.get("-i"), opt.get("-d"))
        else {
            return Err(usage.into());
        };
        let body = state
            .files
            .get(cfg.as_str())
            .cloned()
            .ok_or_else(|| format!("the configuration file {cfg} does not exist"))?;
        if !state.exists(dir) {
            return Err(format!("the mount directory {dir} does not exist"));
        }
        let conf = String::from_utf8_lossy(&body).to_string();
        let parent = cfg.rsplit_once('/').map_or(".", |(p, _)| p);
        let copy = format!("{parent}/config_copy.yaml");
        state.files.insert(copy.clone(), body.clone());
        d.text
            .push_str(&format!("The configuration file is backed up as {copy}\n"));
        let mode = d.ask(
            "Select a deployment mode: [1] Multiple Nodes in Single Region [2] Multiple Regions:",
        )?;
        if mode != "1" && mode != "2" {
            return Err(format!("unknown deployment mode: {mode}"));
        }
        let task = d.ask("Select a task: [1] Use Configuration File Uploaded with Script Option [-c] [2] Enter the settings:")?;
        if task != "1" {
            return Err(format!("task {task} is not supported by this tool's upgrade mode: use the configuration file given with -c"));
        }
        if !self.dbs.contains_key(&self.rm) {
            return Err(format!(
                "cannot connect to the MetaDB or its database {}",
                self.rm
            ));
        }
        d.yes("The specified database names already exist in the MetaDB. Are you sure that you want to continue? [y/n]:", "deployment cancelled")?;
        d.yes("The specified database names already exist in the MetaDB. Do you want to reinitialize the MetaDB? [y/n]:", "deployment cancelled")?;
        d.yes(
            "Are the settings correct? [y/n]:",
            &format!("modify the settings in {cfg} and run the tool again"),
        )?;
        let nodes = yaml_nodes(&conf);
        let mut volumes = vec![
            format!("{dir}/config.yaml:/home/admin/conf/config.yaml"),
            format!("{dir}/oms_logs:/home/admin/logs"),
            format!("{dir}/oms_store:/home/ds/store"),
            format!("{dir}/oms_run:/home/ds/run"),
        ];
        let mut found = false;
        for n in &nodes {
            if n == ip {
                found = true;
                let at = d.ask(&format!("Enter the directory on {n} to which the container of OMS Community Edition is mounted:"))?;
                if at != *dir {
                    return Err(format!("the mount directory {at} is not the one given with -o ({dir}): it must be the V4.1.0 container's"));
                }
                d.yes(
                    &format!(
                        "Name the image of OMS Community Edition as OMS_IMAGE ({image})? [y/n]:"
                    ),
                    "run the tool again with -d <image>",
                )?;
                if d.ask(
                    "Mount an SSL certificate to the container of OMS Community Edition? [y/n]:",
                )? == "y"
                {
                    let key = d.ask("Enter the https_key path:")?;
                    let crt = d.ask("Enter the https_crt path:")?;
                    volumes.push(format!("{crt}:/etc/pki/nginx/oms_server.crt"));
                    volumes.push(format!("{key}:/etc/pki/nginx/oms_server.key"));
                }
            } else {
                let q = format!("The IP address {n} of the deployment mode is inconsistent with the IP address of this server ({ip}). Execute the script on {n} remotely? [y/n]:");
                if d.ask(&q)? == "y" {
                    return Err(
                        "remote execution (SSH with a sudo user) is not modelled by the lab double"
                            .into(),
                    );
                }
            }
        }
        if !found {
            return Err(format!(
                "{ip} is not one of the configuration file's cm_nodes ({})",
                nodes.join(" ")
            ));
        }
        d.yes(
            &format!("Write the configuration file to {dir}/config.yaml? [y/n]:"),
            "deployment cancelled",
        )?;
        if mode == "2" && d.ask("Deploy OMS Community Edition in a new region? [y/n]:")? == "y" {
            return Err("a new region is not modelled by the lab double".into());
        }
        let version = image_version(image);
        let mut written = body;
        written.extend_from_slice(format!("oms_deployed_version: {version}\n").as_bytes());
        state.files.insert(format!("{dir}/config.yaml"), written);
        let port = yaml_value(&conf, "nginx_server_port").unwrap_or_default();
        let env: BTreeMap<String, String> = [
            ("OMS_HOST_IP".to_string(), ip.clone()),
            ("IS_UPGRADE".to_string(), "true".to_string()),
        ]
        .into();
        let spec = RunSpec {
            image: image.clone(),
            name: format!("oms-{version}-{ip}-{port}"),
            net: Some("host".into()),
            volumes,
            env: env.clone(),
            privileged: true,
            pids_limit: Some(-1),
            ulimits: [("nproc".to_string(), "65535:65535".to_string())].into(),
            tty: true,
            interactive: true,
            ..RunSpec::default()
        };
        let name = spec.name.clone();
        let o = state
            .docker
            .apply(&DockerOp::Run { spec }, &mut state.files, &state.dirs);
        if o.code != Some(0) {
            return Err(format!("docker run of {image} failed"));
        }
        if self.healthy(host, image, &env) {
            state.docker.append_log(&name, &[SUCCESS.to_string()]);
        }
        d.text.push_str(&format!("OMS Community Edition {version} is deployed on {ip} (container {name}): run {UPGRADE_410} in it\n"));
        Ok(())
    }

    /// `docker_oms_ce_version_upgrade.sh` in a container of `image` on `host`: 4.1.0's MetaDB to
    /// the image's version. Exits 0 when it fails.
    fn upgrade_410(&mut self, host: &str, image: &str) -> ExecOutput {
        let version = image_version(image);
        let mut out = format!(
            "[upgrade] start: the MetaDB to {version}, config /home/admin/conf/config.yaml\n"
        );
        let old = self.recorded();
        // Again on a MetaDB it upgraded already: harmless (another node of the region).
        if old
            .as_ref()
            .is_some_and(|v| !v.starts_with("4.1.0") && *v != version)
        {
            out.push_str(&format!(
                "[ERROR] this script upgrades OMS Community Edition 4.1.0; the MetaDB records {}\n",
                old.unwrap_or_default()
            ));
            return output(0, &out, "");
        }
        let rm = self.rm.clone();
        if let Some(Db::Rm { schema, .. }) = self.dbs.get_mut(&rm) {
            *schema = version.clone();
        }
        if self.upgrade_fail.contains(host) {
            out.push_str(&format!(
                "[ERROR] schema change of {} failed: Lost connection to server during query\n",
                self.cm
            ));
            return output(0, &out, "");
        }
        self.migrate(&version, |vs| {
            let vs = vs.get_or_insert_with(Vec::new);
            vs.retain(|x| *x != version);
            vs.push(version.clone());
        });
        out.push_str(COMPLETED);
        out.push('\n');
        output(0, &out, "")
    }

    /// `docker_oms_ce_version_roll_back.sh` in a container of `image`: the image's schema taken
    /// out again, its version out of `oms_version`.
    fn roll_back_410(&mut self, image: &str) -> ExecOutput {
        let version = image_version(image);
        self.migrate("4.1.0-CE", |vs| {
            if let Some(vs) = vs {
                vs.retain(|x| *x != version);
            }
        });
        output(
            0,
            &format!("[roll_back] start: the MetaDB back from {version} to 4.1.0\n{COMPLETED}\n"),
            "",
        )
    }

    /// The success line for every upgrade container (on any host of this model) that was waiting
    /// for the metadata to reach its version.
    fn services_started(&self, state: &SimHost, host: &str) -> Vec<(String, String)> {
        state
            .docker
            .running()
            .into_iter()
            .filter(|(_, image, env)| {
                env.get("IS_UPGRADE").is_some_and(|v| v == "true") && self.healthy(host, image, env)
            })
            .map(|(name, _, _)| (name, SUCCESS.to_string()))
            .collect()
    }
}

impl ProductModel for OmsModel {
    fn name(&self) -> &str {
        "oms"
    }

    fn exec(&mut self, host: &str, command: &Command, state: &mut SimHost) -> Option<ExecOutput> {
        let Command::Argv(argv) = command else {
            return None;
        };
        let node = self.node_on(host)?;
        if argv.first()? != "curl" {
            return None;
        }
        let url = argv.last()?;
        let base = format!("http://{}:{}", node.ip, node.port);
        if let Some(action) = url.strip_prefix(&format!("{base}/api/v2?Action=")) {
            let (node_host, action) = (node.host.clone(), action.to_string());
            return Some(self.openapi(&node_host, &action, argv, state));
        }
        let want = format!("{base}/oms/health");
        if *url != want {
            return None;
        }
        let served = state
            .docker
            .running()
            .into_iter()
            .find(|(_, _, env)| env.get("OMS_HOST_IP") == Some(&node.ip));
        Some(match served {
            None => output(7, "", ""),
            Some((_, image, env)) => output(
                0,
                &format!(
                    "{{\"code\":200,\"success\":true,\"data\":{{\"healthy\":{},\"version\":\"{}\"}}}}",
                    self.healthy(host, &image, &env),
                    image_version(&image)
                ),
                "",
            ),
        })
    }

    fn exec_input(
        &mut self,
        host: &str,
        command: &Command,
        stdin: Option<&[u8]>,
        state: &mut SimHost,
    ) -> Option<ExecOutput> {
        if let Command::Argv(argv) = command {
            if argv.len() >= 2
                && argv[0] == "sh"
                && argv[1].ends_with(&format!("/{DEPLOY}"))
                && self.node_on(host).is_some()
            {
                return Some(self.deploy_410(host, argv, stdin.unwrap_or_default(), state));
            }
        }
        self.exec(host, command, state)
    }

    fn docker(
        &mut self,
        host: &str,
        op: &DockerOp,
        out: &ExecOutput,
        state: &mut SimHost,
    ) -> Option<(ExecOutput, Vec<(String, String)>)> {
        self.node_on(host)?;
        let image_of = |name: &str| state.docker.image_of(name).map(str::to_string);
        match op {
            // The deploy script is in the 4.2.3 image, not under a mount.
            DockerOp::Cp { from, to } if from.ends_with(&format!(":/root/{DEPLOY}")) => {
                let c = from.split_once(':')?.0;
                if image_of(c).is_some_and(|i| image_version(&i) == SCRIPTS_IN) {
                    state.files.insert(
                        to.clone(),
                        format!("#!/bin/sh\n# {DEPLOY} of OMS {SCRIPTS_IN} (the simulation's stand-in)\n").into_bytes(),
                    );
                    Some((out.clone(), Vec::new()))
                } else {
                    Some((
                        output(1, "", &format!("Error response from daemon: Could not find the file /root/{DEPLOY} in container {c}\n")),
                        Vec::new(),
                    ))
                }
            }
            DockerOp::Exec { name, argv, .. }
                if argv.len() == 2
                    && argv[0] == "sh"
                    && (argv[1] == UPGRADE_410 || argv[1] == ROLL_BACK_410) =>
            {
                let image = image_of(name)?;
                if image_version(&image) != SCRIPTS_IN {
                    return Some((
                        output(
                            2,
                            "",
                            &format!("sh: can't open '{}': No such file or directory\n", argv[1]),
                        ),
                        Vec::new(),
                    ));
                }
                if argv[1] == ROLL_BACK_410 {
                    return Some((self.roll_back_410(&image), Vec::new()));
                }
                let o = self.upgrade_410(host, &image);
                let log = if String::from_utf8_lossy(&o.stdout).contains(COMPLETED) {
                    self.services_started(state, host)
                } else {
                    Vec::new()
                };
                Some((o, log))
            }
            DockerOp::Exec { name, argv, .. }
                if argv.len() == 2 && argv[0] == "sh" && argv[1] == "/root/docker_init.sh" =>
            {
                let image = state
                    .docker
                    .running()
                    .into_iter()
                    .find(|(n, _, _)| n == name)
                    .map(|(_, i, _)| i)?;
                let mut log = Vec::new();
                if let Some(since) = self.starting.get(name).copied() {
                    if state.now.saturating_sub(since) < READY_AFTER {
                        return Some((
                            output(
                                1,
                                "[docker_init] start, config /home/admin/conf/config.yaml\n",
                                "[docker_init] ERROR: the OMS services in this container are still starting: run docker_init.sh once they are up\n",
                            ),
                            Vec::new(),
                        ));
                    }
                    // Up by now: it said so in its log before this ran.
                    self.starting.remove(name);
                    log.push((
                        name.clone(),
                        format!("OMS {}: {READY}", image_version(&image)),
                    ));
                }
                let o = self.docker_init(host, &image);
                if o.code == Some(0) {
                    log = self.services_started(state, host);
                }
                Some((o, log))
            }
            // A new container's services take a while to come up: it logs when they have.
            DockerOp::Logs { name, .. } if self.starting.contains_key(name) => {
                let since = self.starting[name];
                if state.now.saturating_sub(since) < READY_AFTER {
                    return None;
                }
                self.starting.remove(name);
                let line = format!("OMS {}: {READY}", image_version(&image_of(name)?));
                let mut o = out.clone();
                o.stdout.extend_from_slice(format!("{line}\n").as_bytes());
                Some((o, vec![(name.clone(), line)]))
            }
            DockerOp::Run { spec } if spec.env.get("IS_UPGRADE").is_some_and(|v| v == "true") => {
                // When the region's metadata is already there (docker_init.sh ran on another
                // node), its services come up and it is healthy; otherwise it starts, and
                // docker_init.sh must wait until it is up.
                let log = if self.healthy(host, &spec.image, &spec.env) {
                    let ready = format!("OMS {}: {READY}", image_version(&spec.image));
                    vec![
                        (spec.name.clone(), ready),
                        (spec.name.clone(), SUCCESS.to_string()),
                    ]
                } else {
                    self.starting.insert(spec.name.clone(), state.now);
                    Vec::new()
                };
                Some((out.clone(), log))
            }
            DockerOp::Start { name } => {
                let c = state
                    .docker
                    .running()
                    .into_iter()
                    .find(|(n, _, _)| n == name)?;
                let log = if self.healthy(host, &c.1, &c.2) {
                    vec![(name.clone(), SUCCESS.to_string())]
                } else {
                    Vec::new()
                };
                Some((out.clone(), log))
            }
            _ => None,
        }
    }

    fn sql(
        &mut self,
        server: &str,
        _session: u64,
        kind: SqlKind,
        statement: &str,
        params: &SqlParams,
        _hosts: &mut BTreeMap<String, SimHost>,
    ) -> Option<Result<SqlResult, (u16, String)>> {
        if server != self.metadb {
            return None;
        }
        Some(match kind {
            SqlKind::Query | SqlKind::Exec => self.sql_answer(statement, params),
            _ => Ok(SqlResult::default()),
        })
    }

    fn mysql_backup(&mut self, server: &str, db: &str, _path: &str, load: bool) {
        if server != self.metadb {
            return;
        }
        if load {
            if let Some(d) = self.dumps.get(db).cloned() {
                self.dbs.insert(db.to_string(), d);
            }
        } else if let Some(d) = self.dbs.get(db).cloned() {
            self.dumps.insert(db.to_string(), d);
        }
    }

    fn components(&self, hosts: &BTreeMap<String, SimHost>) -> Vec<Component> {
        self.nodes
            .iter()
            .map(|n| self.component(n, hosts))
            .collect()
    }

    // After a change on one host: that host's nodes only.
    fn components_on(&self, host: &str, hosts: &BTreeMap<String, SimHost>) -> Vec<Component> {
        self.on_host
            .get(host)
            .into_iter()
            .flatten()
            .map(|&i| self.component(&self.nodes[i], hosts))
            .collect()
    }

    // What a node's health reads besides its host's containers: the version recorded in the
    // metadata database. A statement that changes it re-reads every node; any other statement
    // (the heartbeats, HA switches, dumps) re-reads none.
    fn generation(&self) -> Option<u64> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.recorded().hash(&mut h);
        Some(h.finish())
    }

    fn violations(&self, components: &[Component], down: &BTreeSet<usize>) -> Vec<String> {
        let mut out = Vec::new();
        if down.len() == components.len() {
            out.push("oms: no OMS node serves".to_string());
        }
        out
    }

    fn box_clone(&self) -> Box<dyn ProductModel> {
        Box::new(self.clone())
    }
}
