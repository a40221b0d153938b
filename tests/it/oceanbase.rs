//! OceanBase: the shipped playbook on the lab (lab/oceanbase: observers on sshd hosts, each
//! serving the sys tenant over the MySQL protocol from a shared cluster state, obproxy, the
//! release's upgrade-script stand-ins), the checker's rules, a server that does not come back,
//! the point of no return, two hops, kill -9 and resume, and trace parity with the simulation's
//! `oceanbase` model (an independent implementation).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::parity::*;
use crate::support::*;

const FROM: (&str, &str) = ("4.2.1.6", "4.2.1.6_106000012023120514");
const TO: (&str, &str) = ("4.2.1.8", "4.2.1.8_108000022024072217");
const PASSWORD: &str = "ob-lab-Pw-71c3";

fn pid_alive(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().map(|r| r.trim().to_string()))
        .is_some_and(|r| !r.starts_with('Z'))
}

/// How a lab is laid out: hosts and zones, the version at the start, the releases (one per
/// hop), obproxy or not, and other builds of the start version on some hosts.
struct Layout {
    hosts: &'static [(&'static str, &'static str)],
    from: (&'static str, &'static str),
    releases: &'static [(&'static str, &'static str)],
    obproxy: bool,
    builds: &'static [(&'static str, &'static str)],
}

const THREE: Layout = Layout {
    hosts: &[("ob1", "zone1"), ("ob2", "zone2"), ("ob3", "zone3")],
    from: FROM,
    releases: &[TO],
    obproxy: false,
    builds: &[],
};

/// The lab now, as the tests read it from the cluster's state file.
struct ObState {
    /// host → (zone, build, alive)
    servers: BTreeMap<String, (String, String, bool)>,
    zones: BTreeMap<String, String>,
    compatible: Vec<String>,
}

struct ObLab {
    p: Parity,
    spec_file: PathBuf,
    registry: PathBuf,
    rpc: BTreeMap<String, u16>,
    sql: BTreeMap<String, u16>,
    obproxy_port: Option<u16>,
    layout: &'static Layout,
}

fn lab_script(args: &[&str]) -> String {
    lab_py("oceanbase", args)
}

fn release_dir(v: &str) -> String {
    format!("release-{v}")
}

impl ObLab {
    fn new(layout: &'static Layout) -> ObLab {
        let names: Vec<&str> = layout.hosts.iter().map(|(n, _)| *n).collect();
        let p = Parity::new(&names);
        let d = p.dir().to_path_buf();
        let registry = d.join("registry");
        let rpc: BTreeMap<String, u16> =
            names.iter().map(|n| (n.to_string(), free_port())).collect();
        let sql: BTreeMap<String, u16> =
            names.iter().map(|n| (n.to_string(), free_port())).collect();
        let obproxy_port = layout.obproxy.then(free_port);
        let observers: Vec<Value> = layout
            .hosts
            .iter()
            .map(|(n, z)| {
                let mut o = json!({"name": n, "home": d.join(n), "ip": "127.0.0.1", "rpc_port": rpc[*n],
                       "sql_port": sql[*n], "zone": z});
                if let Some((_, b)) = layout.builds.iter().find(|(h, _)| h == n) {
                    o["build"] = json!(b);
                }
                o
            })
            .collect();
        let releases: Vec<Value> = layout
            .releases
            .iter()
            .map(|(v, b)| json!({"dir": d.join(release_dir(v)), "version": v, "build": b}))
            .collect();
        let mut spec = json!({
            "registry": registry, "from": [layout.from.0, layout.from.1], "releases": releases,
            "observers": observers, "tenants": ["tpcc"], "password": PASSWORD,
        });
        if let Some(port) = obproxy_port {
            spec["obproxy_port"] = json!(port);
        }
        let spec_file = p.scratch.write("spec.json", &spec.to_string());
        p.scratch.write("ob.pw", PASSWORD);
        lab_script(&["install", spec_file.to_str().unwrap()]);
        lab_script(&["start", spec_file.to_str().unwrap()]);
        let lab = ObLab {
            p,
            spec_file,
            registry,
            rpc,
            sql,
            obproxy_port,
            layout,
        };
        lab.wait_serving();
        lab
    }

    /// Every observer serves SQL (they start serving a while after they start).
    fn wait_serving(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !self.state().servers.values().all(|(_, _, alive)| *alive)
            || self
                .sql
                .values()
                .any(|p| self.mysql_at(*p, "select 1").is_err())
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the observers did not start serving"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        // A cluster about to be upgraded has run a while: its logs are in sync. A freshly
        // started observer's are not yet (the double, like OceanBase, needs a moment), and the
        // upgrade checker rightly refuses then.
        let port = *self.sql.values().next().expect("an observer");
        while self
            .mysql_at(
                port,
                "select count(*) from GV$OB_LOG_STAT where in_sync = 'NO'",
            )
            .map_or(true, |n| n.trim() != "0")
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the observers' logs did not come in sync"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    fn dir(&self) -> &Path {
        self.p.dir()
    }

    fn spec(&self) -> &str {
        self.spec_file.to_str().unwrap()
    }

    fn knob(&self, name: &str, value: Value) {
        lab_script(&["knob", self.spec(), name, &value.to_string()]);
    }

    /// The `mysql` command-line client against one port: the rows, tab-separated.
    fn mysql_at(&self, port: u16, sql: &str) -> Result<String, String> {
        let out = Command::new("mysql")
            .args([
                "--protocol=tcp",
                "-h127.0.0.1",
                &format!("-P{port}"),
                "-uroot",
                "-N",
                "-B",
                "-e",
                sql,
            ])
            .env("MYSQL_PWD", PASSWORD)
            .output()
            .expect("the mysql client is missing: run scripts/test.sh");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    fn state(&self) -> ObState {
        let db = rusqlite::Connection::open(self.registry.join("state.sqlite")).unwrap();
        let mut servers = BTreeMap::new();
        let mut st = db
            .prepare("SELECT rpc_port, zone, build_version, pid FROM server")
            .unwrap();
        for row in st
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                ))
            })
            .unwrap()
        {
            let (port, zone, build, pid) = row.unwrap();
            let host = self
                .rpc
                .iter()
                .find(|(_, p)| i64::from(**p) == port)
                .unwrap()
                .0
                .clone();
            servers.insert(host, (zone, build, pid.is_some_and(pid_alive)));
        }
        let zones = db
            .prepare("SELECT zone, status FROM zone")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let compatible = db
            .prepare("SELECT DISTINCT compatible FROM tenant")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        ObState {
            servers,
            zones,
            compatible,
        }
    }

    /// A parameter's values across the servers (a pending change counts as made).
    fn param(&self, name: &str) -> Vec<String> {
        let db = rusqlite::Connection::open(self.registry.join("state.sqlite")).unwrap();
        let mut st = db
            .prepare("SELECT DISTINCT coalesce(pending, value) FROM param WHERE name = ?1")
            .unwrap();
        let values = st
            .query_map([name], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        values
    }

    fn vars(&self, n: &str, zone: &str) -> String {
        format!(
            "home = {}, zone = \"{zone}\", ip = \"127.0.0.1\", rpc_port = {}, sql_port = {}",
            toml_str(&self.dir().join(n).display().to_string()),
            self.rpc[n],
            self.sql[n]
        )
    }

    /// The lab now, as a scenario: each host's install and the releases, the same cluster, and
    /// `model_extra` settings of the model.
    fn scenario(&self, model_extra: &str) -> PathBuf {
        let mut s = format!(
            "[inventory.defaults]\ntransport = \"ssh\"\n\n[inventory.secrets]\nob_pw = {{ file = {} }}\n",
            toml_str(&self.dir().join("ob.pw").display().to_string())
        );
        for (n, z) in self.layout.hosts {
            s.push_str(&format!(
                "\n[inventory.hosts.{n}]\naddress = \"127.0.0.1\"\ngroups = [\"observer\"]\nvars = {{ {} }}\n",
                self.vars(n, z)
            ));
        }
        if self.obproxy_port.is_some() {
            s.push_str("\n[inventory.hosts.proxy]\naddress = \"127.0.0.1\"\n");
        }
        let mut trees: Vec<PathBuf> = self
            .layout
            .releases
            .iter()
            .map(|(v, _)| self.dir().join(release_dir(v)))
            .collect();
        for (n, _) in self.layout.hosts {
            trees.insert(0, self.dir().join(n));
            let body = files_body(&trees);
            trees.remove(0);
            s.push_str(&format!("\n[hosts.{n}]\nfiles = {{ {} }}\n", body));
        }
        s.push_str(&format!(
            "\n[[products]]\nmodel = \"oceanbase\"\ngroup = \"observer\"\nversion = \"{}\"\ntenants = [\"tpcc\"]\n{}{model_extra}",
            self.layout.from.1,
            if self.obproxy_port.is_some() { "obproxy = \"proxy\"\n" } else { "" }
        ));
        self.p.scratch.write("ob-scenario.toml", &s)
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
        let dirs: Vec<String> = self
            .layout
            .releases
            .iter()
            .map(|(v, _)| self.dir().join(release_dir(v)).display().to_string())
            .collect();
        let mut p = vec![
            "-p".into(),
            format!("releases={}", serde_json::to_string(&dirs).unwrap()),
            "-p".into(),
            "password_secret=ob_pw".into(),
            "-p".into(),
            "script_timeout=60".into(),
        ];
        if let Some(port) = self.obproxy_port {
            p.extend([
                "-p".into(),
                "obproxy=proxy".into(),
                "-p".into(),
                format!("obproxy_port={port}"),
            ]);
        }
        p
    }
    fn inventory(&self) -> PathBuf {
        let mut s = format!(
            "[defaults]\n{}\n[secrets]\nob_pw = {{ file = \"ob.pw\" }}\n",
            self.p.lab.defaults()
        );
        for (i, (n, z)) in self.layout.hosts.iter().enumerate() {
            s.push_str(&format!(
                "\n[hosts.{n}]\nport = {}\ngroups = [\"observer\"]\nvars = {{ {} }}\n",
                self.p.lab.ports[i],
                self.vars(n, z)
            ));
        }
        if self.obproxy_port.is_some() {
            // obproxy runs on this machine: the host is only its address.
            s.push_str(&format!(
                "\n[hosts.proxy]\nport = {}\n",
                self.p.lab.ports[0]
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

/// A report's trace, comparable between the lab and the simulation: a poll's repeated reads
/// of one statement count once (the last), because a real cluster takes its time (a restarted
/// server serves after a while, its logs catch up later) where the model answers at once; the
/// scripts' logs are each implementation's own words.
fn comparable(report: &Value) -> BTreeMap<String, Vec<String>> {
    let mut t = mask_pids(trace(report));
    for lines in t.values_mut() {
        for l in lines.iter_mut() {
            if let Some(at) = l.find(".log -> ok ") {
                l.replace_range(at + 11.., "N bytes");
            }
            // Kept copies are numbered in the order the hosts of a parallel phase got there.
            if let Some(at) = l.find(".capstan-undo-RUN-") {
                let end = l[at..].find(')').map_or(l.len(), |e| at + e);
                l.replace_range(at..end, ".capstan-undo-RUN-N");
            }
        }
        // A read and its answer: a poll's "not yet" (or its lost connection) and its final
        // answer are the same read.
        let read = |l: &str| -> Option<String> {
            let at = l.find("] sql_query: ")?;
            let end = l.find(" -> ok ").or_else(|| l.find(" -> FAILED "))?;
            Some(l[at..end].to_string())
        };
        let mut out: Vec<String> = Vec::with_capacity(lines.len());
        for l in lines.drain(..) {
            if let (Some(prev), Some(this)) = (out.last().and_then(|p| read(p)), read(&l)) {
                if prev == this {
                    out.pop();
                }
            }
            out.push(l);
        }
        *lines = out;
    }
    t
}

fn is_sql(action: &Value) -> bool {
    action["op"].as_str().is_some_and(|o| o.starts_with("sql"))
}

fn assert_nothing_changed(report: &Value) {
    assert!(
        report["actions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["read_only"] == true),
        "a failed precheck changed something"
    );
}

#[test]
pub(crate) fn oceanbase_upgrades_on_the_lab_with_the_release_scripts_and_the_simulation_acts_alike()
{
    let lab = ObLab::new(&THREE);
    let scenario = lab.scenario("");
    // Each observer serves the sys tenant on its own port, to the mysql client too.
    assert_eq!(
        lab.mysql_at(
            lab.sql["ob2"],
            "select zone, status from oceanbase.DBA_OB_ZONES"
        )
        .unwrap(),
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
    assert!(lab.state().servers.values().all(|s| s.1 == FROM.1));
    assert_eq!(lab.param("enable_upgrade_mode"), ["False"]);

    let (out, report) = lab.run(&[]);
    ok_run(&out, &report);
    let st = lab.state();
    assert!(
        st.servers.values().all(|s| s.2 && s.1 == TO.1),
        "{:?}",
        st.servers
    );
    assert!(st.zones.values().all(|z| z == "ACTIVE"));
    assert_eq!(st.compatible, [TO.0]);
    assert_eq!(lab.param("min_observer_version"), [TO.0]);
    assert_eq!(lab.param("enable_upgrade_mode"), ["False"]);
    assert_eq!(lab.param("server_permanent_offline_time"), ["3600s"]);
    // The release's own scripts ran, with their version's special actions, in obd's order.
    assert_eq!(
        lab.param("_lab_special_actions"),
        ["pre:4.2.1.8,post:4.2.1.8"]
    );
    let steps = step_names(&report);
    assert_eq!(
        steps,
        [
            "precheck",
            "4.2.1.8: back up parameters",
            "4.2.1.8: upgrade_checker.py",
            "4.2.1.8: upgrade_pre.py",
            "4.2.1.8: upgrade_health_checker.py",
            "4.2.1.8: zone zone1",
            "4.2.1.8: zone zone2",
            "4.2.1.8: zone zone3",
            "4.2.1.8: upgrade_post.py",
            "4.2.1.8: restore parameters",
            "4.2.1.8: upgrade finished",
        ]
    );
    let logs = report["logs"].to_string();
    for script in [
        "upgrade_checker.py",
        "upgrade_pre.py",
        "upgrade_health_checker.py",
        "upgrade_post.py",
    ] {
        assert!(
            logs.contains(&format!("{script} exited 0; its log")),
            "no {script} log in {logs}"
        );
    }
    assert!(
        logs.contains("================STATISTICS================"),
        "{logs}"
    );
    // zone1's observer is the one every statement went to before; zone1's step stops it, and
    // no statement of that step went to it.
    for a in report["actions"].as_array().unwrap() {
        if is_sql(a) && a["step"] == "4.2.1.8: zone zone1" {
            assert_ne!(
                a["host"], "ob1",
                "a statement went to the observer being stopped: {a}"
            );
        }
    }
    // The password was given to the scripts and to the sessions, and is written nowhere.
    assert!(!out.stdout.contains(PASSWORD) && !out.stderr.contains(PASSWORD));
    let journal = std::fs::read(lab.p.scratch.path("journal.db")).unwrap();
    assert!(!String::from_utf8_lossy(&journal).contains(PASSWORD));
    let shown = lab
        .p
        .scratch
        .capstan(&["report", report["run_id"].as_str().unwrap()]);
    assert!(shown.stdout.contains("upgrade_post.py") && !shown.stdout.contains(PASSWORD));

    lab.assert_simulation_acts_alike(&scenario, &[], &report, comparable);
}

const THREE_BY_TWO: Layout = Layout {
    hosts: &[
        ("ob1", "zone1"),
        ("ob2", "zone1"),
        ("ob3", "zone2"),
        ("ob4", "zone2"),
        ("ob5", "zone3"),
        ("ob6", "zone3"),
    ],
    from: FROM,
    releases: &[TO],
    obproxy: true,
    builds: &[],
};

#[test]
fn three_zones_of_two_servers_through_obproxy_upgrade_alike_in_simulation() {
    let lab = ObLab::new(&THREE_BY_TWO);
    let scenario = lab.scenario("");
    let port = lab.obproxy_port.unwrap();
    assert_eq!(
        lab.mysql_at(port, "select count(*) from oceanbase.DBA_OB_SERVERS")
            .unwrap(),
        "6\n"
    );
    let (out, report) = lab.run(&[]);
    ok_run(&out, &report);
    let st = lab.state();
    assert!(
        st.servers.values().all(|s| s.2 && s.1 == TO.1),
        "{:?}",
        st.servers
    );
    assert_eq!(lab.param("min_observer_version"), [TO.0]);
    // Both servers of a zone were stopped and started within the zone's step.
    for h in ["ob1", "ob2"] {
        assert!(report["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["host"] == h
                && a["step"] == "4.2.1.8: zone zone1"
                && a["description"].as_str().unwrap().contains("kill -9")));
    }
    // Every statement went through obproxy (but the probes that pick the host a script runs on).
    for a in report["actions"].as_array().unwrap() {
        if is_sql(a) && !a["description"].as_str().unwrap().ends_with(": select 1") {
            assert_eq!(a["host"], "proxy", "{a}");
        }
    }
    lab.assert_simulation_acts_alike(&scenario, &[], &report, comparable);
}

#[test]
fn each_checker_rule_stops_the_run_before_any_change_and_names_itself() {
    let lab = ObLab::new(&THREE);
    lab.knob("extra_tenants", json!(["ALL_USER", "All_Meta"]));
    lab.knob("schema_not_refreshed", json!(true));
    lab.knob("locality", json!({"tpcc": "FULL{1}@zone1, FULL{1}@zone2"}));
    lab.knob("unsynced_log", json!(true));
    let (out, report) = lab.run(&[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let err = outcome_error(&report);
    for rule in [
        "[no reserved tenant name: ",
        "ALL_USER",
        "All_Meta",
        "[schema refreshed: ",
        "[paxos replicas in sync: ",
        "[tenant locality keeps a majority: tenant(s) ",
        "tpcc (locality FULL{1}@zone1, FULL{1}@zone2)",
        "stop_everything=true",
    ] {
        assert!(err.contains(rule), "{rule} missing from: {err}");
    }
    assert_nothing_changed(&report);
    assert_eq!(lab.param("enable_upgrade_mode"), ["False"]);

    // The same rules in simulation, each alone.
    for (knob, rule) in [
        (
            "extra_tenants = [\"ALL_USER\"]",
            "[no reserved tenant name: ",
        ),
        (
            "extra_tenants = [\"All_Meta\"]",
            "[no reserved tenant name: ",
        ),
        ("schema_not_refreshed = true", "[schema refreshed: "),
        (
            "locality = { tpcc = \"FULL{1}@zone1, FULL{1}@zone2\" }",
            "tenant locality keeps a majority",
        ),
        ("merging = true", "[no major compaction: "),
        ("abnormal_tenant = \"tpcc\"", "[tenants normal: "),
    ] {
        let r = simulate_edited_example(
            "oceanbase",
            "scenario.toml",
            (
                "tenants = [\"tpcc\"]\n",
                &format!("tenants = [\"tpcc\"]\n{knob}\n"),
            ),
            &[],
        );
        let err = outcome_error(&r);
        assert!(
            err.contains("precheck found 1 problem(s); nothing was changed") && err.contains(rule),
            "{knob}: {err}"
        );
        assert_nothing_changed(&r);
    }
}

const TWO_BUILDS: Layout = Layout {
    hosts: &[("ob1", "zone1"), ("ob2", "zone2"), ("ob3", "zone3")],
    from: FROM,
    releases: &[TO],
    obproxy: false,
    builds: &[("ob3", "4.2.1.6_106000012023999999")],
};

#[test]
fn two_builds_of_one_version_pass_the_checker_as_the_vendors_does() {
    let lab = ObLab::new(&TWO_BUILDS);
    let (out, report) = lab.run(&["--check"]);
    ok_run(&out, &report);
    let logs = report["logs"].to_string();
    assert!(
        logs.contains("checks that pass: [") && logs.contains("\\\"one observer version\\\""),
        "{logs}"
    );
}

const FROM_41: Layout = Layout {
    hosts: &[("ob1", "zone1"), ("ob2", "zone2"), ("ob3", "zone3")],
    from: ("4.1.0.1", "4.1.0.1_101000012023031315"),
    releases: &[("4.2.1.2", "4.2.1.2_102000032023120515"), TO],
    obproxy: false,
    builds: &[],
};

#[test]
fn two_hops_in_one_run_killed_between_them_resume_and_match_the_simulation() {
    let lab = ObLab::new(&FROM_41);
    // A tablet still merging from a 4.1 source stops the run first, naming the rule.
    lab.knob("tablet_merging", json!(true));
    let (out, report) = lab.run(&[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        outcome_error(&report).contains("[no tablet merging: 3 tablet is merging"),
        "{}",
        outcome_error(&report)
    );
    assert_nothing_changed(&report);
    lab.knob("tablet_merging", json!(false));

    // A single release past the 4.2.1.2 barrier is refused with the route.
    let scenario = lab.scenario("");
    let sim = lab.simulate(
        &scenario,
        &[
            "-p",
            &format!("release={}", lab.dir().join(release_dir(TO.0)).display()),
            "-p",
            "releases=[]",
        ],
    );
    let err = outcome_error(&sim);
    assert!(
        err.contains("4.1.0.1 -> 4.2.1.8 needs intermediate version(s): the route is [")
            && err.contains("4.2.1.2")
            && err.contains("give a release for each version after 4.1.0.1"),
        "{err}"
    );

    // Both hops in one run, killed at the first change of the second hop, then resumed.
    let run_id = kill_9_at(
        &lab.p,
        "oceanbase",
        &lab.inventory(),
        &lab.params(),
        ("4.2.1.8: upgrade_checker.py", "upgrade_checker.py"),
    );
    assert_eq!(lab.param("min_observer_version"), ["4.2.1.2"]);
    let report = resume_skipping(
        &lab.p,
        &run_id,
        &[
            "precheck",
            "4.2.1.2: zone zone1",
            "4.2.1.2: upgrade_post.py",
            "4.2.1.8: back up parameters",
        ],
    );
    assert_eq!(
        report["outcome"]["status"],
        "succeeded",
        "{}",
        outcome_error(&report)
    );
    let st = lab.state();
    assert!(
        st.servers.values().all(|s| s.2 && s.1 == TO.1),
        "{:?}",
        st.servers
    );
    assert_eq!(lab.param("min_observer_version"), [TO.0]);
    assert_eq!(st.compatible, [TO.0]);
    assert_eq!(
        lab.param("_lab_special_actions"),
        ["pre:4.2.1.2,post:4.2.1.2,pre:4.2.1.8,post:4.2.1.8"]
    );

    // The simulation walks the same two hops.
    let sim = lab.simulate(&scenario, &[]);
    assert_eq!(
        sim["outcome"]["status"],
        "succeeded",
        "{}",
        outcome_error(&sim)
    );
    let names = step_names(&sim);
    assert!(
        names.contains(&"4.2.1.2: zone zone3") && names.contains(&"4.2.1.8: zone zone3"),
        "{names:?}"
    );
}

#[test]
fn a_server_that_does_not_come_back_stops_the_run_with_its_zone_stopped() {
    let lab = ObLab::new(&THREE);
    lab.knob(
        "no_restart",
        json!({ format!("127.0.0.1:{}", lab.rpc["ob2"]): TO.0 }),
    );
    let (out, report) = lab.run(&["--on-failure", "stop", "-p", "zone_timeout=4"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(failed_step(&report), "4.2.1.8: zone zone2");
    let err = outcome_error(&report);
    assert!(
        err.contains("zone zone2: server(s) not serving 4.2.1.8")
            && err.contains("Zone zone2 is stopped")
            && err.contains("capstan resume RUN")
            && err.contains("capstan rollback RUN"),
        "{err}"
    );
    let st = lab.state();
    assert_eq!(st.zones["zone2"], "INACTIVE");
    assert_eq!(st.zones["zone3"], "ACTIVE");
    assert_eq!(
        lab.param("enable_upgrade_mode"),
        ["True"],
        "upgrade mode is the state resume continues from"
    );

    // The way back: zone2 (and zone1) return to 4.2.1.6, the zone starts, upgrade mode ends.
    let run = report["run_id"].as_str().unwrap();
    let out = lab.p.scratch.capstan(&["rollback", run, "--yes"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let st = lab.state();
    assert!(
        st.servers.values().all(|s| s.2 && s.1 == FROM.1),
        "{:?}",
        st.servers
    );
    assert!(st.zones.values().all(|z| z == "ACTIVE"));
    assert_eq!(lab.param("enable_upgrade_mode"), ["False"]);
    assert_eq!(lab.param("server_permanent_offline_time"), ["3600s"]);
}

#[test]
fn past_end_rolling_upgrade_the_rollback_stops_and_says_why_alike_in_simulation() {
    let lab = ObLab::new(&THREE);
    lab.knob("job_fails", json!(true));
    let scenario = lab.scenario("job_fails = true\n");
    let (_, report) = lab.run(&["--on-failure", "rollback"]);
    assert_eq!(failed_step(&report), "4.2.1.8: upgrade_post.py");
    assert!(
        outcome_error(&report).contains("upgrade_post.py failed (exit 1)"),
        "{}",
        outcome_error(&report)
    );
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
    assert!(lab.state().servers.values().all(|s| s.1 == TO.1));

    let sim = lab.simulate(&scenario, &["--on-failure", "rollback"]);
    compare(&comparable(&report), &comparable(&sim));
}

#[test]
fn a_script_that_fails_with_exit_0_fails_its_step_and_the_session_survives_its_observer_dying() {
    let lab = ObLab::new(&THREE);
    lab.knob("script_fails", json!({"upgrade_pre.py": "exit0"}));
    let (out, report) = lab.run(&["--on-failure", "stop"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(failed_step(&report), "4.2.1.8: upgrade_pre.py");
    assert!(
        outcome_error(&report).contains("upgrade_pre.py exited 0 but its log has"),
        "{}",
        outcome_error(&report)
    );

    // The observer the sessions use (ob1, zone1's) dies: statements go on through zone2, and
    // the precheck's checker rules are what stop the run, naming the unavailable server.
    let lab = ObLab::new(&THREE);
    lab_script(&["kill", lab.spec(), "ob1"]);
    let (out, report) = lab.run(&["--on-failure", "stop"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let err = outcome_error(&report);
    assert!(
        err.contains("[servers active: 1 observer not available"),
        "{err}"
    );
    assert!(report["actions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| is_sql(a) && a["host"] == "ob2" && a["ok"] == true));
}

#[test]
fn kill_9_inside_the_zone_loop_then_resume_completes() {
    let lab = ObLab::new(&THREE);
    // An observer takes a while to serve after its start (a real one, tens of seconds): the
    // kill below lands while zone2 is still stopped, however quickly the commands before go.
    lab.knob("start_seconds", json!(4));
    // Killed once zone2's observer is down (zone2 stopped, its binary not yet new).
    let run_id = kill_9_at(
        &lab.p,
        "oceanbase",
        &lab.inventory(),
        &lab.params(),
        ("4.2.1.8: zone zone2", "kill -9"),
    );
    assert_eq!(lab.state().zones["zone2"], "INACTIVE");
    resume_skipping(
        &lab.p,
        &run_id,
        &["precheck", "4.2.1.8: upgrade_pre.py", "4.2.1.8: zone zone1"],
    );
    let st = lab.state();
    assert!(
        st.servers.values().all(|s| s.2 && s.1 == TO.1),
        "{:?}",
        st.servers
    );
    assert_eq!(lab.param("min_observer_version"), [TO.0]);
    assert_eq!(lab.param("server_permanent_offline_time"), ["3600s"]);
}

#[test]
fn two_zones_are_refused_and_with_stop_everything_the_whole_cluster_stops() {
    // The same cluster with ob3 in zone2: two zones.
    let two = ("vars = { zone = \"zone3\" }", "vars = { zone = \"zone2\" }");
    let r = simulate_edited_example("oceanbase", "scenario.toml", two, &[]);
    let err = outcome_error(&r);
    assert!(
        err.contains("the cluster has 2 zone(s): a rolling upgrade needs at least 3")
            && err.contains("stop_everything=true"),
        "{err}"
    );
    assert_nothing_changed(&r);
    // With the explicit param, the whole cluster is stopped instead, and the report says the
    // cluster could not write meanwhile.
    let r = simulate_edited_example(
        "oceanbase",
        "scenario.toml",
        two,
        &["-p", "stop_everything=true"],
    );
    assert_eq!(r["outcome"]["status"], "succeeded", "{}", outcome_error(&r));
    assert!(r["steps"]
        .to_string()
        .contains("4.2.1.8: every zone (whole cluster stopped)"));
    assert!(
        violations(&r)
            .iter()
            .any(|v| v.contains("0 of 2 zones serve: no majority")),
        "{:?}",
        violations(&r)
    );

    // The shipped example of three zones of two servers, through obproxy: no zone's step takes
    // the majority away, and both servers of a zone are replaced in its step.
    let pb = repo().join("playbooks/oceanbase.rhai");
    let x2 = repo().join("examples/oceanbase/scenario-3x2.toml");
    let out = capstan(&[
        "simulate",
        pb.to_str().unwrap(),
        "--scenario",
        x2.to_str().unwrap(),
        "--json",
    ]);
    let r = last_report(&out.stdout);
    assert_eq!(r["outcome"]["status"], "succeeded", "{}", outcome_error(&r));
    assert!(violations(&r).is_empty(), "{:?}", violations(&r));
    for (h, z) in [("ob2", "zone1"), ("ob4", "zone2"), ("ob6", "zone3")] {
        assert!(r["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["host"] == h
                && a["step"] == format!("4.2.1.8: zone {z}")
                && a["description"].as_str().unwrap().contains("replace dir")));
    }

    let sc = repo().join("examples/oceanbase/scenario.toml");
    let d = tempfile::tempdir().unwrap();
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

/// Every SELECT in the stdlib and the playbook, with a sample value for each `?`.
fn selects_sent() -> Vec<String> {
    let mut out = Vec::new();
    for file in ["stdlib/oceanbase.rhai", "playbooks/oceanbase.rhai"] {
        let text = std::fs::read_to_string(repo().join(file)).unwrap();
        for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
            let mut rest = line;
            while let Some(at) = rest.find(['"', '`']) {
                let q = rest.as_bytes()[at] as char;
                let Some(len) = rest[at + 1..].find(q) else {
                    break;
                };
                let lit = &rest[at + 1..at + 1 + len];
                rest = &rest[at + len + 2..];
                if lit.to_ascii_lowercase().starts_with("select ") && !lit.contains("${") {
                    out.push(lit.replace('?', "'zone1'"));
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Runs `statements` on the embedded SeekDB kernel: one JSON object per statement, or None
/// (with the reason printed) when the package is not installed here.
fn on_seekdb(statements: &[&str]) -> Option<Vec<Value>> {
    let py = repo().join("target/vendor-clients/bin/python");
    let d = tempfile::tempdir().unwrap();
    let list = d.path().join("statements.json");
    std::fs::write(&list, serde_json::to_string(statements).unwrap()).unwrap();
    let out = Command::new(&py)
        .arg(repo().join("lab/oceanbase/seekdb_check.py"))
        .arg(d.path().join("db"))
        .arg(&list)
        .current_dir(d.path())
        .output()
        .ok()?;
    if out.status.code() == Some(3) {
        eprintln!(
            "SKIPPED: the SeekDB kernel is not installed here ({}); scripts/test.sh installs it",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return None;
    }
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
    )
}

#[test]
fn the_vendors_kernel_parses_every_select_sent_and_agrees_with_the_double() {
    let selects = selects_sent();
    assert!(selects.len() > 30, "{selects:?}");
    let refs: Vec<&str> = selects.iter().map(String::as_str).collect();
    let Some(results) = on_seekdb(&refs) else {
        return;
    };
    // Parsed, then refused for the cluster views SeekDB lacks (1146): never a syntax error.
    for r in &results {
        assert!(
            r["ok"] == true || r["code"] == 1146,
            "the kernel does not take a statement capstan sends: {r}"
        );
    }
    assert!(results.iter().filter(|r| r["code"] == 1146).count() > 20);

    // What the double claims of OceanBase, beside the kernel: case-insensitive comparison,
    // booleans read back canonically, an unknown parameter refused with 5099, a value of the
    // wrong type with 4147.
    let probes = [
        "select 'False' = 'false'",
        "alter system set enable_ddl = 'false'",
        "select value from oceanbase.V$OB_PARAMETERS where name = 'ENABLE_DDL'",
        "alter system set enable_ddl = 1",
        "select value from oceanbase.V$OB_PARAMETERS where name = 'enable_ddl'",
        "alter system set enable_ddl = 0",
        "select value from oceanbase.V$OB_PARAMETERS where name = 'enable_ddl'",
        "alter system set no_such_parameter = 'x'",
        "alter system set enable_ddl = 'maybe'",
    ];
    let kernel = on_seekdb(&probes).unwrap();
    let lab = ObLab::new(&THREE);
    let double: Vec<Value> = probes
        .iter()
        .map(|p| {
            // The double's view of parameters is the cluster's: GV$, one row per server.
            let sql = p.replace("V$OB_PARAMETERS", "GV$OB_PARAMETERS") + " limit 1";
            let sql = if p.starts_with("select value") {
                sql
            } else {
                p.to_string()
            };
            match lab.mysql_at(lab.sql["ob1"], &sql) {
                Ok(rows) => json!({"ok": true, "rows": rows.lines().collect::<Vec<_>>()}),
                Err(e) => json!({"code": e
                    .split("ERROR ")
                    .nth(1)
                    .and_then(|t| t.split_whitespace().next())
                    .and_then(|c| c.parse::<i64>().ok())}),
            }
        })
        .collect();
    let expect = ["1", "", "False", "", "True", "", "False"];
    for (i, want) in expect.iter().enumerate() {
        let k = &kernel[i];
        assert_eq!(k["ok"], true, "kernel: {k}");
        let kv = k["rows"]
            .get(0)
            .map(|r| r[0].to_string().trim_matches('"').to_string())
            .unwrap_or_default();
        let dv = double[i]["rows"]
            .get(0)
            .and_then(|r| r.as_str())
            .unwrap_or_default()
            .to_string();
        assert_eq!(kv, *want, "kernel, {}", probes[i]);
        assert_eq!(dv, *want, "double, {}: {}", probes[i], double[i]);
    }
    for (i, code) in [(7, 5099), (8, 4147)] {
        assert_eq!(kernel[i]["code"], code, "kernel, {}", probes[i]);
        assert_eq!(double[i]["code"], code, "double, {}", probes[i]);
    }
}
