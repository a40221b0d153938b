//! The `oms` product model: OMS nodes as docker containers and their metadata databases, answering as the lab double does.
//!
//! It keeps the metadata server's three kinds of database (rm with `oms_normal_config` and
//! `oms_version`, cm with `cm_node`, each region's cm_hb with `heatbeat_sequence`) and answers
//! the statements `stdlib/oms.rhai` sends there; it plays `/root/docker_init.sh` in a new
//! container (the 4.1.1 gate, the schema version, `oms_version`), the container's services (the
//! success line in `docker logs` once the metadata is at its version), and `GET /oms/health`
//! (curl on the host). Dumps and loads save and restore a database's state; a database dropped
//! is gone until it is created and loaded again. Availability: a node serves while a healthy
//! container runs there; the rule: at least one node serves.

use std::collections::{BTreeMap, BTreeSet};

use crate::docker::DockerOp;
use crate::inventory::Inventory;
use crate::sql::{SqlKind, SqlParams, SqlResult, SqlValue};
use crate::transport::{Command, ExecOutput};

use super::model::{
    check_keys, output, settings_int, settings_str, settings_strings, Component, ProductModel,
};
use super::SimHost;

const SUCCESS: &str = "OMS service start successfully";
const TOO_OLD: &str = "Version before 4.1.1 is not allowed to upgrade.";

/// One metadata database's state.
#[derive(Debug, Clone, PartialEq)]
enum Db {
    Rm {
        ha: String,
        /// `None`: no `oms_version` table.
        versions: Option<Vec<String>>,
        schema: String,
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
/// text), `heartbeat_rows` (default 200), `init_fail` and `unhealthy` (hosts whose new
/// container's docker_init.sh fails, or whose services never turn healthy).
#[derive(Debug, Clone)]
pub struct OmsModel {
    metadb: String,
    rm: String,
    cm: String,
    hbs: Vec<String>,
    nodes: Vec<Node>,
    dbs: BTreeMap<String, Db>,
    dumps: BTreeMap<String, Db>,
    init_fail: BTreeSet<String>,
    unhealthy: BTreeSet<String>,
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

impl OmsModel {
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
                "unhealthy",
            ],
        )?;
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
        Ok(OmsModel {
            metadb,
            rm,
            cm,
            hbs,
            nodes,
            dbs,
            dumps: BTreeMap::new(),
            init_fail: settings_strings(s, "init_fail")?.into_iter().collect(),
            unhealthy: settings_strings(s, "unhealthy")?.into_iter().collect(),
        })
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
        for db in self.dbs.values_mut() {
            match db {
                Db::Rm {
                    schema, versions, ..
                } => {
                    *schema = version.clone();
                    if let Some(vs) = versions {
                        vs.retain(|x| *x != version);
                        vs.push(version.clone());
                    }
                }
                Db::Cm { schema, .. } | Db::Hb { schema, .. } => *schema = version.clone(),
                Db::Empty => {}
            }
        }
        out.push_str("[docker_init] [Completed] All initialization steps are executed.\n");
        output(0, &out, "")
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
        let node = self.nodes.iter().find(|n| n.host == host)?;
        if argv.first()? != "curl" {
            return None;
        }
        let url = argv.last()?;
        let want = format!("http://{}:{}/oms/health", node.ip, node.port);
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

    fn docker(
        &mut self,
        host: &str,
        op: &DockerOp,
        out: &ExecOutput,
        state: &mut SimHost,
    ) -> Option<(ExecOutput, Vec<(String, String)>)> {
        self.nodes.iter().find(|n| n.host == host)?;
        match op {
            DockerOp::Exec { name, argv, .. }
                if argv.len() == 2 && argv[0] == "sh" && argv[1] == "/root/docker_init.sh" =>
            {
                let image = state
                    .docker
                    .running()
                    .into_iter()
                    .find(|(n, _, _)| n == name)
                    .map(|(_, i, _)| i)?;
                let o = self.docker_init(host, &image);
                let mut log = Vec::new();
                if o.code == Some(0) {
                    log = self.services_started(state, host);
                }
                Some((o, log))
            }
            DockerOp::Run { spec } if spec.env.get("IS_UPGRADE").is_some_and(|v| v == "true") => {
                // Its services start at once when the region's metadata is already there.
                let log = if self.healthy(host, &spec.image, &spec.env) {
                    vec![(spec.name.clone(), SUCCESS.to_string())]
                } else {
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
            .map(|n| Component {
                name: format!("oms@{}", n.host),
                host: n.host.clone(),
                up: hosts.get(&n.host).is_some_and(|h| {
                    h.docker.running().into_iter().any(|(_, image, env)| {
                        env.get("OMS_HOST_IP") == Some(&n.ip) && self.healthy(&n.host, &image, &env)
                    })
                }),
            })
            .collect()
    }

    fn violations(&self, components: &[Component]) -> Vec<String> {
        let mut out = Vec::new();
        if !components.iter().any(|c| c.up) {
            out.push("oms: no OMS node serves".to_string());
        }
        out
    }

    fn box_clone(&self) -> Box<dyn ProductModel> {
        Box::new(self.clone())
    }
}
