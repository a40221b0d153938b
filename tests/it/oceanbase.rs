//! OceanBase: the shipped rolling-upgrade playbook on the lab (observers from lab/oceanbase on
//! sshd hosts, the sys tenant served here over the MySQL protocol), its pre-check knobs, a server
//! that does not come back, the point of no return, kill -9 and resume, and trace parity with the
//! simulation's `oceanbase` model.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use capstan::sim::oceanbase::{version_of, ObCluster, ObServer};
use capstan::sql::{SqlKind, SqlParams, SqlValue};
use msql_srv::{
    Column, ColumnFlags, ColumnType, ErrorKind, MysqlIntermediary, MysqlShim, ParamParser,
    QueryResultWriter, StatementMetaWriter, ValueInner,
};
use serde_json::{json, Value};

use crate::parity::*;
use crate::support::*;

const FROM: (&str, &str) = ("4.2.1.6", "4.2.1.6_106000012023120514");
const TO: (&str, &str) = ("4.2.1.8", "4.2.1.8_108000022024072217");

/// The sys tenant of the lab: capstan's `ObCluster` behind the MySQL protocol, with its
/// observers' liveness and build versions read from what the lab's observer processes registered.
#[derive(Clone)]
struct SysTenant {
    cluster: Arc<Mutex<ObCluster>>,
    registry: PathBuf,
}

fn pid_alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().map(|r| r.trim().to_string()))
        .is_some_and(|r| !r.starts_with('Z'))
}

impl SysTenant {
    /// Observers register a file `IP_PORT.json` (`pid`, `build_version`) when they start; a
    /// server is alive while that pid runs.
    fn refresh(&self) {
        let mut c = self.cluster.lock().unwrap();
        let servers: Vec<(String, u16)> = c
            .servers
            .iter()
            .map(|s| (s.ip.clone(), s.rpc_port))
            .collect();
        for (ip, port) in servers {
            let reg = self.registry.join(format!("{ip}_{port}.json"));
            let r: Option<Value> = std::fs::read_to_string(reg)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok());
            let (alive, build) = match &r {
                Some(v) => (
                    pid_alive(v["pid"].as_u64().unwrap_or(0)),
                    v["build_version"].as_str().unwrap_or_default().to_string(),
                ),
                None => (false, String::new()),
            };
            let s = c
                .servers
                .iter()
                .find(|s| s.ip == ip && s.rpc_port == port)
                .unwrap();
            if alive && (!s.alive || s.build_version != build) {
                c.server_started(&ip, port, &build);
            } else if !alive && s.alive {
                c.server_stopped(&ip, port);
            }
        }
    }

    fn run(&self, sql: &str, params: SqlParams) -> Result<capstan::sql::SqlResult, (u16, String)> {
        self.refresh();
        let t = sql.trim_start().to_ascii_lowercase();
        let kind = if t.starts_with("select") || t.starts_with("show") {
            SqlKind::Query
        } else {
            SqlKind::Exec
        };
        self.cluster.lock().unwrap().sql(kind, sql, &params)
    }

    /// Serves the protocol on a port of 127.0.0.1, a thread per connection, until the process ends.
    fn serve(&self) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let me = self.clone();
        std::thread::spawn(move || {
            for s in l.incoming().map_while(Result::ok) {
                let shim = Shim {
                    sys: me.clone(),
                    prepared: BTreeMap::new(),
                };
                std::thread::spawn(move || {
                    let _ = MysqlIntermediary::run_on_tcp(shim, s);
                });
            }
        });
        port
    }
}

struct Shim {
    sys: SysTenant,
    prepared: BTreeMap<u32, String>,
}

fn write_result<W: std::io::Read + std::io::Write>(
    r: Result<capstan::sql::SqlResult, (u16, String)>,
    out: QueryResultWriter<'_, W>,
) -> std::io::Result<()> {
    let res = match r {
        Err((code, msg)) => {
            let kind = if code == 1064 {
                ErrorKind::ER_PARSE_ERROR
            } else {
                ErrorKind::ER_UNKNOWN_ERROR
            };
            return out.error(kind, format!("{msg} (OceanBase error {code})").as_bytes());
        }
        Ok(r) => r,
    };
    if res.columns.is_empty() {
        return out.completed(res.affected, res.last_insert_id.unwrap_or(0));
    }
    let cols: Vec<Column> = res
        .columns
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let int = res
                .rows
                .iter()
                .find_map(|r| match &r[i] {
                    SqlValue::Null => None,
                    SqlValue::Int(_) | SqlValue::UInt(_) => Some(true),
                    _ => Some(false),
                })
                .unwrap_or(false);
            Column {
                table: String::new(),
                column: name.clone(),
                coltype: if int {
                    ColumnType::MYSQL_TYPE_LONGLONG
                } else {
                    ColumnType::MYSQL_TYPE_VAR_STRING
                },
                colflags: ColumnFlags::empty(),
            }
        })
        .collect();
    let mut w = out.start(&cols)?;
    for row in &res.rows {
        for (v, c) in row.iter().zip(&cols) {
            let int = c.coltype == ColumnType::MYSQL_TYPE_LONGLONG;
            match v {
                SqlValue::Null if int => w.write_col(None::<i64>)?,
                SqlValue::Null => w.write_col(None::<String>)?,
                SqlValue::Int(i) => w.write_col(*i)?,
                SqlValue::UInt(u) => w.write_col(*u as i64)?,
                SqlValue::Float(f) => w.write_col(f.to_string())?,
                SqlValue::Text(t) => w.write_col(t.as_str())?,
                SqlValue::Bytes(b) => w.write_col(String::from_utf8_lossy(b).into_owned())?,
            }
        }
        w.end_row()?;
    }
    w.finish()
}

impl<W: std::io::Read + std::io::Write> MysqlShim<W> for Shim {
    type Error = std::io::Error;

    fn on_prepare(&mut self, sql: &str, info: StatementMetaWriter<'_, W>) -> std::io::Result<()> {
        let id = self.prepared.len() as u32 + 1;
        let n = sql.matches('?').count();
        self.prepared.insert(id, sql.to_string());
        let params: Vec<Column> = (0..n)
            .map(|_| Column {
                table: String::new(),
                column: "?".into(),
                coltype: ColumnType::MYSQL_TYPE_VAR_STRING,
                colflags: ColumnFlags::empty(),
            })
            .collect();
        info.reply(id, &params, &[])
    }

    fn on_execute(
        &mut self,
        id: u32,
        params: ParamParser<'_>,
        out: QueryResultWriter<'_, W>,
    ) -> std::io::Result<()> {
        let sql = self.prepared.get(&id).cloned().unwrap_or_default();
        let values: Vec<SqlValue> = params
            .into_iter()
            .map(|p| match p.value.into_inner() {
                ValueInner::NULL => SqlValue::Null,
                ValueInner::Int(i) => SqlValue::Int(i),
                ValueInner::UInt(u) => SqlValue::UInt(u),
                ValueInner::Double(f) => SqlValue::Float(f),
                ValueInner::Bytes(b) => SqlValue::Text(String::from_utf8_lossy(b).into_owned()),
                other => SqlValue::Text(format!("{other:?}")),
            })
            .collect();
        let p = if values.is_empty() {
            SqlParams::None
        } else {
            SqlParams::Positional(values)
        };
        write_result(self.sys.run(&sql, p), out)
    }

    fn on_close(&mut self, id: u32) {
        self.prepared.remove(&id);
    }

    fn on_query(&mut self, sql: &str, out: QueryResultWriter<'_, W>) -> std::io::Result<()> {
        write_result(self.sys.run(sql, SqlParams::None), out)
    }
}

/// Three zones, one observer each, on three sshd hosts; the sys tenant served here.
struct ObLab {
    p: Parity,
    spec_file: PathBuf,
    sys: SysTenant,
    sql_port: u16,
    rpc: BTreeMap<String, u16>,
    hosts: &'static [(&'static str, &'static str)],
}

const HOSTS: &[(&str, &str)] = &[("ob1", "zone1"), ("ob2", "zone2"), ("ob3", "zone3")];
/// The same three hosts in two zones.
const TWO_ZONES: &[(&str, &str)] = &[("ob1", "zone1"), ("ob2", "zone2"), ("ob3", "zone2")];

fn lab_script(args: &[&str]) -> String {
    lab_py("oceanbase", args)
}

impl ObLab {
    fn new() -> ObLab {
        Self::with_zones(HOSTS)
    }

    fn with_zones(hosts: &'static [(&'static str, &'static str)]) -> ObLab {
        let names: Vec<&str> = hosts.iter().map(|(n, _)| *n).collect();
        let p = Parity::new(&names);
        let d = p.dir().to_path_buf();
        let registry = d.join("registry");
        let rpc: BTreeMap<String, u16> = hosts
            .iter()
            .map(|(n, _)| (n.to_string(), free_port()))
            .collect();
        // Served before the cluster is filled in: the observers need its port in their config.
        let sys = SysTenant {
            cluster: Arc::new(Mutex::new(ObCluster::new(Vec::new(), FROM.0, &[]))),
            registry: registry.clone(),
        };
        let sql_port = sys.serve();
        let observers: Vec<Value> = hosts
            .iter()
            .map(|(n, z)| {
                json!({"name": n, "home": d.join(n), "ip": "127.0.0.1", "rpc_port": rpc[*n],
                       "sql_port": sql_port, "zone": z})
            })
            .collect();
        let spec = json!({
            "registry": registry, "from": [FROM.0, FROM.1], "to": [TO.0, TO.1],
            "release": d.join("release"), "observers": observers,
        });
        let spec_file = p.scratch.write("spec.json", &spec.to_string());
        lab_script(&["install", spec_file.to_str().unwrap()]);
        lab_script(&["start", spec_file.to_str().unwrap()]);
        let servers = hosts
            .iter()
            .map(|(n, z)| ObServer {
                host: n.to_string(),
                ip: "127.0.0.1".into(),
                rpc_port: rpc[*n],
                sql_port,
                zone: z.to_string(),
                build_version: FROM.1.into(),
                alive: true,
                start_service_time: None,
                stop_time: None,
                params: BTreeMap::new(),
            })
            .collect();
        *sys.cluster.lock().unwrap() = ObCluster::new(servers, FROM.0, &["tpcc"]);
        // Every observer registered before the first statement.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_dir(&registry).unwrap().count() < hosts.len() {
            assert!(Instant::now() < deadline, "the observers did not register");
            std::thread::sleep(Duration::from_millis(50));
        }
        ObLab {
            p,
            spec_file,
            sys,
            sql_port,
            rpc,
            hosts,
        }
    }

    fn dir(&self) -> &Path {
        self.p.dir()
    }

    fn vars(&self, n: &str, zone: &str) -> String {
        format!(
            "home = {}, zone = \"{zone}\", ip = \"127.0.0.1\", rpc_port = {}, sql_port = {}",
            toml_str(&self.dir().join(n).display().to_string()),
            self.rpc[n],
            self.sql_port
        )
    }

    /// The lab now, as a scenario: each host's install and the release, the same cluster.
    fn scenario(&self, model_extra: &str) -> PathBuf {
        let mut s =
            String::from("[inventory.defaults]\ntransport = \"ssh\"\ngroups = [\"observer\"]\n");
        for (n, z) in self.hosts {
            s.push_str(&format!(
                "\n[inventory.hosts.{n}]\naddress = \"127.0.0.1\"\nvars = {{ {} }}\n",
                self.vars(n, z)
            ));
        }
        for (n, _) in self.hosts {
            let body = files_body(&[self.dir().join(n), self.dir().join("release")]);
            s.push_str(&format!("\n[hosts.{n}]\nfiles = {{ {} }}\n", body));
        }
        s.push_str(&format!(
            "\n[[products]]\nmodel = \"oceanbase\"\ngroup = \"observer\"\nversion = \"{}\"\ntenants = [\"tpcc\"]\n{model_extra}",
            FROM.1
        ));
        self.p.scratch.write("ob-scenario.toml", &s)
    }

    fn cluster(&self) -> ObCluster {
        self.sys.refresh();
        self.sys.cluster.lock().unwrap().clone()
    }

    fn param(&self, name: &str) -> String {
        self.cluster().params[name].clone()
    }
}

impl ProductLab for ObLab {
    fn parity(&self) -> &Parity {
        &self.p
    }
    fn playbook(&self) -> &'static str {
        "oceanbase"
    }
    fn params(&self) -> Vec<String> {
        vec![
            "-p".into(),
            format!("release={}", self.dir().join("release").display()),
            "-p".into(),
            format!("sql_port={}", self.sql_port),
        ]
    }
    fn inventory(&self) -> PathBuf {
        let mut s = format!(
            "[defaults]\n{}groups = [\"observer\"]\n",
            self.p.lab.defaults()
        );
        for (i, (n, z)) in self.hosts.iter().enumerate() {
            s.push_str(&format!(
                "\n[hosts.{n}]\nport = {}\nvars = {{ {} }}\n",
                self.p.lab.ports[i],
                self.vars(n, z)
            ));
        }
        self.p.scratch.write("lab.toml", &s)
    }
}

impl Drop for ObLab {
    fn drop(&mut self) {
        lab_stop("oceanbase", &self.spec_file);
    }
}

#[test]
fn oceanbase_rolls_zone_by_zone_on_the_lab_and_the_simulation_acts_alike() {
    let lab = ObLab::new();
    let scenario = lab.scenario("");
    // The mysql command-line client talks to the same sys tenant.
    let out = Command::new("mysql")
        .args([
            "-h127.0.0.1",
            &format!("-P{}", lab.sql_port),
            "-uroot",
            "-N",
            "-e",
            "select zone, status from oceanbase.DBA_OB_ZONES",
        ])
        .output()
        .expect("the mysql client is missing: run scripts/test.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "zone1\tACTIVE\nzone2\tACTIVE\nzone3\tACTIVE\n"
    );

    // --check reads the real cluster and walks every step, changing nothing.
    let (out, check) = lab.run(&["--check"]);
    ok_run(&out, &check);
    assert!(check["actions"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["read_only"] == true || a["result"] == "skipped (check mode)"));
    let c = lab.cluster();
    assert!(c.servers.iter().all(|s| s.build_version == FROM.1));
    assert!(c.zones.values().all(|z| z == "ACTIVE"));
    assert_eq!(c.params["enable_upgrade_mode"], "False");

    let (out, report) = lab.run(&[]);
    ok_run(&out, &report);
    let c = lab.cluster();
    assert!(c.servers.iter().all(|s| s.alive && s.build_version == TO.1));
    assert_eq!(c.params["min_observer_version"], TO.0);
    assert!(c.tenants.iter().all(|t| t.compatible == TO.0));
    assert_eq!(c.params["enable_upgrade_mode"], "False");
    assert_eq!(c.params["server_permanent_offline_time"], "3600s");
    assert!(c.zones.values().all(|z| z == "ACTIVE"));
    // The binaries on the hosts say so too.
    for (n, _) in HOSTS {
        let v = Command::new(lab.dir().join(n).join("bin/observer"))
            .arg("-V")
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&v.stdout).contains("OceanBase_CE 4.2.1.8"));
    }

    let sim = lab.simulate(&scenario, &[]);
    assert_eq!(
        sim["outcome"]["status"],
        "succeeded",
        "{}",
        outcome_error(&sim)
    );
    compare(&mask_pids(trace(&report)), &mask_pids(trace(&sim)));
}

#[test]
fn each_precheck_knob_stops_the_run_before_any_change_and_lists_every_reason() {
    let lab = ObLab::new();
    {
        let mut c = lab.sys.cluster.lock().unwrap();
        c.knobs.abnormal_tenant = Some("tpcc".into());
        c.knobs.unsynced_log = true;
        c.knobs.merging = true;
    }
    let (out, report) = lab.run(&[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let err = outcome_error(&report);
    assert!(
        err.contains("upgrade checker failed with 3 reasons"),
        "{err}"
    );
    for reason in ["replicas unsync", "are merging", "tpcc (RESTORE, PRIMARY)"] {
        assert!(err.contains(reason), "{reason} missing from: {err}");
    }
    assert!(
        report["actions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["read_only"] == true),
        "a failed precheck changed something"
    );
    assert_eq!(lab.param("enable_upgrade_mode"), "False");
    assert!(lab
        .cluster()
        .servers
        .iter()
        .all(|s| s.build_version == FROM.1));
}

#[test]
fn a_cluster_of_two_zones_is_refused_on_the_lab_before_any_change() {
    let lab = ObLab::with_zones(TWO_ZONES);
    let (out, report) = lab.run(&[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let err = outcome_error(&report);
    assert!(
        err.contains("the cluster has 2 zone(s): a rolling upgrade needs at least 3"),
        "{err}"
    );
    assert!(report["actions"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["read_only"] == true));
    assert_eq!(lab.param("enable_upgrade_mode"), "False");
}

#[test]
fn two_zones_are_refused_and_a_route_through_a_barrier_is_named() {
    let sc = repo().join("examples/oceanbase/scenario.toml");
    let text = std::fs::read_to_string(&sc).unwrap();
    // The same cluster with ob3 in zone2: two zones.
    let two = text.replace("vars = { zone = \"zone3\" }", "vars = { zone = \"zone2\" }");
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("two.toml");
    std::fs::write(&f, two).unwrap();
    let pb = repo().join("playbooks/oceanbase.rhai");
    let out = capstan(&[
        "simulate",
        pb.to_str().unwrap(),
        "--scenario",
        f.to_str().unwrap(),
        "--json",
    ]);
    let r = last_report(&out.stdout);
    let err = outcome_error(&r);
    assert!(
        err.contains("the cluster has 2 zone(s): a rolling upgrade needs at least 3")
            && err.contains("stop_everything=true"),
        "{err}"
    );
    assert!(r["actions"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["read_only"] == true));
    // With the explicit param, the whole cluster is stopped instead.
    let out = capstan(&[
        "simulate",
        pb.to_str().unwrap(),
        "--scenario",
        f.to_str().unwrap(),
        "-p",
        "stop_everything=true",
    ]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out
        .stdout
        .contains("every zone: 4.2.1.6 -> 4.2.1.8 (whole cluster stopped)"));
    // Every zone down at once breaks the majority, and the report flags it.
    assert!(
        out.stdout
            .contains("!! RULE BROKEN: oceanbase: 0 of 2 zones serve: no majority"),
        "{}",
        out.stdout
    );

    // 4.1.0.1 -> 4.2.3.1 must stop at the 4.2.1.2 barrier.
    let script = "import \"oceanbase\" as ob;\nob::check_route(\"4.1.0.1\", \"4.2.3.1\");\n";
    let p = d.path().join("route.rhai");
    std::fs::write(&p, script).unwrap();
    let out = capstan(&[
        "simulate",
        p.to_str().unwrap(),
        "--scenario",
        sc.to_str().unwrap(),
        "--json",
    ]);
    assert_ne!(out.code, 0);
    let err = outcome_error(&last_report(&out.stdout));
    assert!(
        err.contains("4.1.0.1 -> 4.2.3.1 needs intermediate version(s): the route is [\"4.1.0.1\", \"4.2.1.2\", \"4.2.3.1\"]; upgrade to 4.2.1.2 first"),
        "{err}"
    );
}

#[test]
fn a_server_that_does_not_come_back_stops_the_run_with_its_zone_stopped() {
    let lab = ObLab::new();
    lab_script(&[
        "knob",
        lab.spec_file.to_str().unwrap(),
        "no_restart",
        &json!({ format!("127.0.0.1:{}", lab.rpc["ob2"]): TO.0 }).to_string(),
    ]);
    let (out, report) = lab.run(&["--on-failure", "stop", "-p", "zone_timeout=4"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(failed_step(&report), "zone zone2: 4.2.1.6 -> 4.2.1.8");
    let err = outcome_error(&report);
    assert!(
        err.contains("zone zone2: server(s) not serving 4.2.1.8")
            && err.contains("Zone zone2 is stopped")
            && err.contains("capstan resume RUN")
            && err.contains("capstan rollback RUN"),
        "{err}"
    );
    let c = lab.cluster();
    assert_eq!(c.zones["zone2"], "INACTIVE");
    assert_eq!(c.zones["zone3"], "ACTIVE");
    assert_eq!(
        c.params["enable_upgrade_mode"], "True",
        "upgrade mode is the state resume continues from"
    );

    // The way back: zone2 (and zone1) return to 4.2.1.6, the zone starts, upgrade mode ends.
    let run = report["run_id"].as_str().unwrap();
    let out = lab.p.scratch.capstan(&["rollback", run, "--yes"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let c = lab.cluster();
    assert!(
        c.servers
            .iter()
            .all(|s| s.alive && s.build_version == FROM.1),
        "{:?}",
        c.servers
    );
    assert!(c.zones.values().all(|z| z == "ACTIVE"));
    assert_eq!(c.params["enable_upgrade_mode"], "False");
}

#[test]
fn past_end_rolling_upgrade_the_rollback_stops_and_says_why_alike_in_simulation() {
    let lab = ObLab::new();
    lab.sys.cluster.lock().unwrap().knobs.job_fails = true;
    let scenario = lab.scenario("job_fails = true\n");
    let (_, report) = lab.run(&["--on-failure", "rollback"]);
    assert_eq!(failed_step(&report), "upgrade tenants");
    let undos: Vec<(String, String)> = report["undos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["description"].as_str().unwrap().to_string(),
                u["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let barrier = undos
        .iter()
        .find(|(d, _)| d.starts_with("no way back: min_observer_version is 4.2.1.8"))
        .expect("no barrier");
    assert_eq!(barrier.1, "failed");
    // Nothing before the barrier ran: the binaries stay new, the zones up.
    assert!(undos
        .iter()
        .filter(|(d, _)| !d.starts_with("no way back"))
        .all(|(_, s)| s == "pending"));
    assert!(lab
        .cluster()
        .servers
        .iter()
        .all(|s| s.build_version == TO.1));

    let sim = lab.simulate(&scenario, &["--on-failure", "rollback"]);
    compare(&mask_pids(trace(&report)), &mask_pids(trace(&sim)));
}

#[test]
fn kill_9_inside_the_zone_loop_then_resume_completes() {
    let lab = ObLab::new();
    let inv = lab.inventory();
    // Killed once zone2's observer is down (zone2 stopped, its binary not yet new).
    let run_id = kill_9_at(
        &lab.p,
        "oceanbase",
        &inv,
        &lab.params(),
        ("zone zone2: 4.2.1.6 -> 4.2.1.8", "kill -9"),
    );
    assert_eq!(lab.cluster().zones["zone2"], "INACTIVE");

    resume_skipping(
        &lab.p,
        &run_id,
        &[
            "precheck",
            "back up parameters",
            "begin upgrade",
            "zone zone1: 4.2.1.6 -> 4.2.1.8",
        ],
    );
    let c = lab.cluster();
    assert!(c
        .servers
        .iter()
        .all(|s| s.alive && version_of(&s.build_version) == TO.0));
    assert_eq!(c.params["min_observer_version"], TO.0);
    assert_eq!(c.params["server_permanent_offline_time"], "3600s");
}
