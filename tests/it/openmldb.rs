//! OpenMLDB: the shipped playbook on the lab double (lab/openmldb) over SSH, its faults, kill -9
//! and resume, and trace parity with the simulation's `openmldb` model.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::parity::*;
use crate::support::*;

const NAMES: &[(&str, &str)] = &[
    ("ns1", "nameserver"),
    ("ns2", "nameserver"),
    ("tablet1", "tablet"),
    ("tablet2", "tablet"),
    ("tablet3", "tablet"),
    ("api1", "apiserver"),
    ("tm1", "taskmanager"),
];

/// A lab cluster: seven sshd hosts, each the install of one component (0.9.1), the 0.9.2
/// release and Spark distribution, and the double's ZooKeeper data; stopped on drop.
struct OmLab {
    p: Parity,
    spec: Value,
    spec_file: PathBuf,
    endpoints: BTreeMap<String, String>,
}

fn lab_script(args: &[&str]) -> String {
    lab_py("openmldb", args)
}

impl OmLab {
    fn new(auto_failover: bool, knobs: Value) -> OmLab {
        OmLab::with(auto_failover, knobs, &[], json!({}))
    }

    /// A lab whose components named in `mon` run in daemon mode, and whose taskmanager has the
    /// extra `tm_properties`.
    fn with(auto_failover: bool, knobs: Value, mon: &[&str], tm_properties: Value) -> OmLab {
        let names: Vec<&str> = NAMES.iter().map(|(n, _)| *n).collect();
        let p = Parity::new(&names);
        let d = p.dir().to_path_buf();
        let mut endpoints = BTreeMap::new();
        let comps: Vec<Value> = NAMES
            .iter()
            .map(|(n, role)| {
                let ep = format!("127.0.0.1:{}", free_port());
                endpoints.insert(n.to_string(), ep.clone());
                let mut c = json!({"name": n, "role": role, "root": d.join(n), "endpoint": ep});
                if *role == "taskmanager" {
                    c["spark_home"] = json!(d.join("spark"));
                    c["properties"] = tm_properties.clone();
                }
                if mon.contains(n) {
                    c["mon"] = json!(true);
                }
                c
            })
            .collect();
        let spec = json!({
            "zk_cluster": format!("127.0.0.1:{}", free_port()),
            "zk_root_path": "/openmldb",
            "from": "0.9.1",
            "to": "0.9.2",
            "release": d.join("release"),
            "spark_release": d.join("spark-0.9.2"),
            "auto_failover": auto_failover,
            "tables": [
                {"db": "demo", "name": "orders", "partitions": 4, "replicas": 3},
                {"db": "demo", "name": "users", "partitions": 2, "replicas": 2},
                {"db": "demo", "name": "cache", "partitions": 1, "replicas": 1},
            ],
            "components": comps,
            "knobs": knobs,
        });
        let spec_file = p.scratch.write("spec.json", &spec.to_string());
        lab_script(&["install", spec_file.to_str().unwrap()]);
        lab_script(&["start", spec_file.to_str().unwrap()]);
        OmLab {
            p,
            spec,
            spec_file,
            endpoints,
        }
    }

    fn dir(&self) -> &Path {
        self.p.dir()
    }

    fn knob(&self, name: &str, value: Value) {
        let (zk, root) = self.zk();
        lab_script(&["knob", zk, root, name, &value.to_string()]);
    }

    /// The lab's ops tool (on ns1) with `args`: its exit code, stdout and stderr.
    fn ops_tool(&self, args: &[&str]) -> (i32, String, String) {
        let (zk, root) = self.zk();
        let ns = self.dir().join("ns1");
        let out = Command::new("python3")
            .arg(ns.join("tools/openmldb_ops.py"))
            .arg(format!(
                "--openmldb_bin_path={}",
                ns.join("bin/openmldb").display()
            ))
            .arg(format!("--zk_cluster={zk}"))
            .arg(format!("--zk_root_path={root}"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// What the vendor's ops tool prints for `showtablestatus` on this lab.
    fn ops_showtablestatus(&self) -> String {
        self.ops_tool(&["--cmd=showtablestatus"]).1
    }

    /// Clients writing to `table` (`db.name`) until the returned flag is set.
    fn writer(
        &self,
        table: &str,
    ) -> (
        std::sync::Arc<std::sync::atomic::AtomicBool>,
        std::thread::JoinHandle<()>,
    ) {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (zk, root) = self.zk();
        let (zk, root, table, flag) = (
            zk.to_string(),
            root.to_string(),
            table.to_string(),
            stop.clone(),
        );
        let h = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                lab_script(&["write", &zk, &root, &table, "5"]);
                std::thread::sleep(std::time::Duration::from_millis(300));
            }
        });
        (stop, h)
    }

    fn zk(&self) -> (&str, &str) {
        (
            self.spec["zk_cluster"].as_str().unwrap(),
            self.spec["zk_root_path"].as_str().unwrap(),
        )
    }

    fn state(&self) -> Value {
        let (zk, root) = self.zk();
        serde_json::from_str(&lab_script(&["state", zk, root])).unwrap()
    }

    /// Which tablet leads each partition (`db.table/pid` → endpoint).
    fn leaders(&self) -> BTreeMap<String, String> {
        let st = self.state();
        let mut out = BTreeMap::new();
        for t in st["tables"].as_array().unwrap() {
            for part in t["partitions"].as_array().unwrap() {
                let lead = part["replicas"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|r| r["leader"] == true)
                    .map(|r| r["ep"].as_str().unwrap().to_string())
                    .unwrap_or_default();
                out.insert(format!("{}.{}/{}", t["db"], t["name"], part["pid"]), lead);
            }
        }
        out
    }

    /// The version each component's endpoint reports (`/version`, brpc's page).
    fn versions(&self) -> BTreeMap<String, String> {
        self.endpoints
            .iter()
            .map(|(n, ep)| {
                let out = Command::new("curl")
                    .args(["-s", "-m", "5", &format!("http://{ep}/version")])
                    .output()
                    .unwrap();
                let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
                (
                    n.clone(),
                    v.split('-').next().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    fn host_vars(&self, name: &str) -> String {
        let mut v = format!(
            "root = {}, endpoint = {}",
            toml_str(&self.dir().join(name).display().to_string()),
            toml_str(&self.endpoints[name])
        );
        if name == "tm1" {
            v.push_str(&format!(
                ", spark_home = {}",
                toml_str(&self.dir().join("spark").display().to_string())
            ));
        }
        v
    }

    /// A scenario of the lab as it is now: each host holds its own install, the release and the
    /// Spark distributions; its endpoint port is open; the model has the same tables.
    fn scenario(&self, model_extra: &str) -> PathBuf {
        let mut s = String::from("[inventory.defaults]\ntransport = \"ssh\"\n");
        for (i, (n, role)) in NAMES.iter().enumerate() {
            s.push_str(&format!(
                "\n[inventory.hosts.{n}]\naddress = \"10.99.0.{}\"\ngroups = [\"{role}\"]\nvars = {{ {} }}\n",
                i + 1,
                self.host_vars(n)
            ));
        }
        for (n, _) in NAMES {
            let mut trees = vec![self.dir().join(n), self.dir().join("release")];
            trees.push(self.dir().join("spark-0.9.2"));
            if *n == "tm1" {
                trees.push(self.dir().join("spark"));
            }
            let body = files_body(&trees);
            let port = self.endpoints[*n].rsplit(':').next().unwrap();
            s.push_str(&format!(
                "\n[hosts.{n}]\nports = [{port}]\nfiles = {{ {} }}\n",
                body
            ));
        }
        s.push_str(&format!(
            "\n[[products]]\nmodel = \"openmldb\"\nzk_cluster = {}\nauto_failover = {}\ntables = [\n  {{ db = \"demo\", name = \"orders\", partitions = 4, replicas = 3 }},\n  {{ db = \"demo\", name = \"users\", partitions = 2, replicas = 2 }},\n  {{ db = \"demo\", name = \"cache\", partitions = 1, replicas = 1 }},\n]\n{model_extra}",
            toml_str(self.zk().0),
            self.spec["auto_failover"]
        ));
        self.p.scratch.write("openmldb-scenario.toml", &s)
    }
}

impl ProductLab for OmLab {
    fn parity(&self) -> &Parity {
        &self.p
    }
    fn playbook(&self) -> &'static str {
        "openmldb"
    }
    fn params(&self) -> Vec<String> {
        vec![
            "-p".into(),
            format!("release={}", self.dir().join("release").display()),
            "-p".into(),
            format!("zk_cluster={}", self.zk().0),
            "-p".into(),
            format!("spark_release={}", self.dir().join("spark-0.9.2").display()),
            // A short settle window: the knobs that kill a tablet do so within a second or two.
            "-p".into(),
            "settle=3".into(),
        ]
    }
    fn inventory(&self) -> PathBuf {
        let mut s = format!("[defaults]\n{}", self.p.lab.defaults());
        for (i, (n, role)) in NAMES.iter().enumerate() {
            s.push_str(&format!(
                "\n[hosts.{n}]\nport = {}\ngroups = [\"{role}\"]\nvars = {{ {} }}\n",
                self.p.lab.ports[i],
                self.host_vars(n)
            ));
        }
        self.p.scratch.write("lab.toml", &s)
    }
}

impl Drop for OmLab {
    fn drop(&mut self) {
        lab_stop("openmldb", &self.spec_file);
    }
}

/// A run's trace for parity: pids masked, and a read repeated back to back counted once. A
/// bounded poll (the Rows check, the health wait) reads until it sees what it waits for, and on
/// the lab how many reads that takes depends on the machine's load (the writer's rows land when
/// they land); the model answers at once.
fn comparable(r: &Value) -> BTreeMap<String, Vec<String>> {
    let mut t = mask_pids(trace(r));
    for lines in t.values_mut() {
        collapse_repeats(lines);
    }
    t
}

#[test]
pub(crate) fn openmldb_upgrades_on_the_lab_and_the_simulation_acts_alike() {
    let lab = OmLab::new(true, json!({}));
    // Clients keep writing to demo.orders, so the guide's closing check (Rows grow) can pass.
    let scenario = lab.scenario("writes = [\"demo.orders\"]\n");
    let rows = ["-p", "rows_check=demo.orders", "-p", "rows_timeout=30"];
    let leaders = lab.leaders();
    assert!(lab.versions().values().all(|v| v == "0.9.1"));

    // --check reads the real cluster and walks every step, changing nothing.
    let (out, check) = lab.run(&["--check"]);
    ok_run(&out, &check);
    assert_eq!(check["steps"].as_array().unwrap().len(), 11);
    assert!(check["actions"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["read_only"] == true || a["result"] == "skipped (check mode)"));
    assert!(lab.versions().values().all(|v| v == "0.9.1"));
    assert_eq!(lab.leaders(), leaders);

    let (stop, writer) = lab.writer("demo.orders");
    let (out, report) = lab.run(&rows);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    ok_run(&out, &report);
    assert!(
        lab.versions().values().all(|v| v == "0.9.2"),
        "{:?}",
        lab.versions()
    );
    assert_eq!(
        lab.leaders(),
        leaders,
        "leaders did not end where they began"
    );
    let logs = report["logs"].to_string();
    assert!(
        logs.contains("Rows grew on") && logs.contains("demo.orders"),
        "{logs}"
    );
    assert!(logs.contains("pip install openmldb==0.9.2"), "{logs}");
    let st = lab.state();
    assert_eq!(st["auto_failover"], true);
    // The temporary replica of the single-replica table is gone again.
    assert_eq!(
        st["tables"][2]["partitions"][0]["replicas"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // One statfile per tablet, each deleted by its post-upgrade.
    assert!(!std::fs::read_dir(lab.dir().join("ns1")).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".stat")));
    // Tablets strictly one at a time: each tablet's actions sit in its own step.
    let order = step_names(&report);
    assert_eq!(
        order,
        [
            "precheck",
            "hold auto_failover",
            "nameserver ns1: 0.9.1 -> 0.9.2",
            "nameserver ns2: 0.9.1 -> 0.9.2",
            "tablet tablet1: 0.9.1 -> 0.9.2",
            "tablet tablet2: 0.9.1 -> 0.9.2",
            "tablet tablet3: 0.9.1 -> 0.9.2",
            "writes resume: Rows grow",
            "apiserver api1: 0.9.1 -> 0.9.2",
            "taskmanager tm1: 0.9.1 -> 0.9.2",
            "verify"
        ]
    );

    lab.assert_simulation_acts_alike(&scenario, &rows, &report, comparable);

    // Without writes the closing check fails, naming the table (simulated: the model's Rows
    // stay put without `writes`).
    let quiet = lab.scenario("");
    let sim = lab.simulate(&quiet, &rows);
    assert_eq!(failed_step(&sim), "writes resume: Rows grow");
    assert!(
        outcome_error(&sim).contains("the Rows of [\"demo.orders (Rows 100)\"] did not grow"),
        "{}",
        outcome_error(&sim)
    );

    // A second run finds everything at 0.9.2 and changes nothing.
    let (out, again) = lab.run(&[]);
    ok_run(&out, &again);
    assert!(
        again["actions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["read_only"] == true),
        "a second run changed something"
    );
}

#[test]
fn a_tablet_that_fails_to_start_stops_the_run_and_rolls_back_one_tablet_at_a_time_alike_in_simulation(
) {
    let lab = OmLab::new(true, json!({}));
    let scenario = lab.scenario("fail_start = { tablet3 = \"0.9.2\" }\n");
    let leaders = lab.leaders();
    // The new version fails to start on the third tablet only (start.sh prints the failure,
    // exits 0).
    lab.knob(
        "fail_start",
        json!({ lab.endpoints["tablet3"].clone(): "0.9.2" }),
    );
    let (_, report) = lab.run(&["--on-failure", "rollback"]);
    assert_eq!(
        report["status"],
        "rolled_back",
        "{}",
        outcome_error(&report)
    );
    let err = outcome_error(&report);
    assert!(
        err.contains("tablet3: tablet did not start") && err.contains("Start tablet failed!"),
        "{err}"
    );
    // The run stopped before the apiserver: api1 was only read.
    assert!(report["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["host"] == "api1")
        .all(|a| a["read_only"] == true));
    // Every tablet's bin/ is the old one again, and it runs; every component is back at 0.9.1.
    for t in ["tablet1", "tablet2", "tablet3"] {
        let bin = std::fs::read_to_string(lab.dir().join(format!("{t}/bin/openmldb"))).unwrap();
        assert!(bin.contains("openmldb version 0.9.1-"), "{t}");
    }
    assert!(
        lab.versions().values().all(|v| v == "0.9.1"),
        "{:?}",
        lab.versions()
    );
    assert_eq!(lab.leaders(), leaders);
    assert_eq!(lab.state()["auto_failover"], true);

    // The way back keeps the guide's rule, one tablet at a time, confirmed: each tablet is
    // back on the old binary, settled, its leaders back and the cluster healthy (SHOW TABLE
    // STATUS read) before the next tablet is stopped.
    let back: Vec<(String, String)> = report["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["step"].as_str().unwrap_or("").starts_with("undo #"))
        .map(|a| {
            (
                a["host"].as_str().unwrap().to_string(),
                a["description"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let at = |host: &str, what: &str| {
        back.iter()
            .position(|(h, d)| h == host && d.contains(what))
            .unwrap_or_else(|| panic!("no `{what}` on {host} in the rollback: {back:#?}"))
    };
    let gate_after = |from: usize| {
        back[from..]
            .iter()
            .position(|(_, d)| d.contains("show table status like"))
            .map(|k| k + from)
    };
    let t3_start = at("tablet3", "start.sh start tablet");
    let t2_stop = at("tablet2", "start.sh stop tablet");
    let t2_start = at("tablet2", "start.sh start tablet");
    let t1_stop = at("tablet1", "start.sh stop tablet");
    assert!(t3_start < t2_stop && t2_stop < t2_start && t2_start < t1_stop);
    for (start, next_stop) in [(t3_start, t2_stop), (t2_start, t1_stop)] {
        let post = back[start..next_stop]
            .iter()
            .any(|(_, d)| d.contains("--cmd=post-upgrade"));
        let gate = gate_after(start).is_some_and(|g| g < next_stop);
        assert!(
            post && gate,
            "no post-upgrade and health gate between {start} and {next_stop}: {back:#?}"
        );
    }

    let sim = lab.simulate(&scenario, &["--on-failure", "rollback"]);
    assert_eq!(sim["status"], "rolled_back", "{}", outcome_error(&sim));
    compare(&comparable(&report), &comparable(&sim));
    assert_eq!(undo_path(&report), undo_path(&sim));
}

#[test]
fn an_error_line_from_the_ops_tool_is_a_failure_and_a_crash_leaves_auto_failover_to_the_guard() {
    let lab = OmLab::new(
        true,
        json!({"ops_error": {"cmd": "post-upgrade", "message": "changeleader failed, check log for detail"}}),
    );
    let (out, report) = lab.run(&["--on-failure", "stop"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let err = outcome_error(&report);
    assert!(
        err.contains("--cmd=post-upgrade")
            && err.contains("exited 0 but logged errors")
            && err.contains("ERROR: changeleader failed"),
        "{err}"
    );
    assert_eq!(failed_step(&report), "tablet tablet1: 0.9.1 -> 0.9.2");

    // The ops tool crashes in pre-upgrade after turning auto_failover off; the guard turns it
    // back on when the run ends.
    let (zk, root) = lab.zk();
    lab_script(&["knob", zk, root, "ops_error", "{}"]);
    lab_script(&["knob", zk, root, "ops_crash", "\"pre-upgrade\""]);
    // The failed run above left tablet1's leaders moved: put them back first.
    let pb = lab.dir().join("fix.rhai");
    std::fs::write(
        &pb,
        "let p = params(#{ zk_cluster: param::required(\"zk\") });\nimport \"openmldb\" as ob;\nlet c = cluster();\nlet ops = ob::ops_tool(c.group(\"nameserver\")[0], #{ zk_cluster: p.zk_cluster });\nstep(\"post\", || ob::post_upgrade(ops, c.host(\"tablet1\"), false));\n",
    )
    .unwrap();
    let inv = lab.inventory();
    let zkp = format!("zk_cluster={zk}");
    let out = lab.p.scratch.capstan(&[
        "run",
        pb.to_str().unwrap(),
        "-i",
        inv.to_str().unwrap(),
        "-p",
        &zkp,
        "--yes",
    ]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let (out, report) = lab.run(&["--on-failure", "stop"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let err = outcome_error(&report);
    assert!(
        err.contains("crashed (exit 1)") && err.contains("RuntimeError"),
        "{err}"
    );
    assert_eq!(
        lab.state()["auto_failover"],
        true,
        "the guard did not restore auto_failover"
    );
    assert!(report["guards"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g["name"] == "openmldb auto_failover"));
}

#[test]
fn kill_9_in_the_tablet_loop_then_resume_completes_without_repeating_done_steps() {
    let lab = OmLab::new(false, json!({}));
    let leaders = lab.leaders();
    let inv = lab.inventory();
    // Killed once tablet2's step has stopped the tablet (its leaders moved, bin/ not yet new).
    let run_id = kill_9_at(
        &lab.p,
        "openmldb",
        &inv,
        &lab.params(),
        ("tablet tablet2: 0.9.1 -> 0.9.2", "start.sh stop tablet"),
    );

    let report = resume_skipping(
        &lab.p,
        &run_id,
        &[
            "precheck",
            "nameserver ns1: 0.9.1 -> 0.9.2",
            "nameserver ns2: 0.9.1 -> 0.9.2",
            "tablet tablet1: 0.9.1 -> 0.9.2",
        ],
    );
    assert!(report["actions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["attempt"] == 2 && a["step"] == "tablet tablet3: 0.9.1 -> 0.9.2"));
    assert!(lab.versions().values().all(|v| v == "0.9.2"));
    assert_eq!(lab.leaders(), leaders);
    // auto_failover was off at the start: recoverdata ran after each tablet, and it is off still.
    assert_eq!(lab.state()["auto_failover"], false);
    assert!(report["actions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["description"]
            .as_str()
            .unwrap()
            .contains("--cmd=recoverdata")));
}

#[test]
fn the_openmldb_example_simulates_with_its_availability_and_rollback() {
    let pb = repo().join("playbooks/openmldb.rhai");
    let sc = repo().join("examples/openmldb/scenario.toml");
    let out = capstan(&[
        "simulate",
        pb.to_str().unwrap(),
        "--scenario",
        sc.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out
        .stdout
        .contains("tablet tablet2: 0.9.1 -> 0.9.2   down: openmldb/tablet@tablet2"));
    assert!(!out.stdout.contains("RULE BROKEN"), "{}", out.stdout);

    // With --allow_single_replica the single-replica table is down while its tablet restarts.
    let out = capstan(&[
        "simulate",
        pb.to_str().unwrap(),
        "--scenario",
        sc.to_str().unwrap(),
        "-p",
        "allow_single_replica=true",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("!! RULE BROKEN: openmldb: single-replica table ops.feature_cache is down"),
        "{}",
        out.stdout
    );

    // A tablet whose start fails: the run stops there and the rollback brings everything back.
    let out = capstan(&[
        "simulate",
        pb.to_str().unwrap(),
        "--scenario",
        sc.to_str().unwrap(),
        "--fail",
        "tablet2:*start.sh start tablet*",
        "--json",
    ]);
    let r = last_report(&out.stdout);
    assert_eq!(r["status"], "rolled_back");
    assert_eq!(failed_step(&r), "tablet tablet2: 0.9.1 -> 0.9.2");
    let actions = r["actions"].as_array().unwrap();
    assert!(actions
        .iter()
        .filter(|a| a["host"] == "tablet3")
        .all(|a| a["read_only"] == true));
    // tablet1 (done) is rolled back with its leaders moved off first: a pre-upgrade in the rollback.
    assert!(actions
        .iter()
        .any(|a| a["step"] == "undo #13: tablet1: stop the new tablet"
            && a["description"]
                .as_str()
                .unwrap()
                .contains("--cmd=pre-upgrade")));
    let left: Vec<String> = r["simulation"]["changed_after_rollback"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert!(
        left.iter()
            .all(|c| !c.contains("file /opt/openmldb/bin/openmldb")),
        "a binary still differs after the rollback: {left:?}"
    );
}

/// Runs the playbook on a lab whose `knob` fires on one tablet, and checks that the run stopped in
/// that tablet's step, before the next tablet was touched, with an error holding `needles`.
fn stops_at(lab: &OmLab, tablet: &str, next: &str, needles: &[&str]) -> Value {
    let (out, report) = lab.run(&["--on-failure", "stop", "-p", "health_timeout=6"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        failed_step(&report),
        format!("tablet {tablet}: 0.9.1 -> 0.9.2")
    );
    let err = outcome_error(&report);
    for n in needles {
        assert!(err.contains(n), "`{n}` is not in: {err}");
    }
    assert!(
        report["actions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["host"] == next)
            .all(|a| a["read_only"] == true),
        "{next} was changed"
    );
    report
}

#[test]
fn a_follower_that_does_not_come_back_stops_the_run_at_its_tablet_though_the_ops_tool_hides_it() {
    let lab = OmLab::new(true, json!({}));
    // demo.orders partition 0 is led by tablet1, followed by tablet2 and tablet3: when 0.9.2
    // starts on tablet2, its replica of that partition stays offline.
    let ep2 = lab.endpoints["tablet2"].clone();
    lab.knob(
        "stuck",
        json!({ ep2.clone(): {"table": "demo.orders", "pid": 0, "version": "0.9.2"} }),
    );
    let tag = format!("[pid=0][follower][{ep2}]: state is kNotFound");
    let dead = format!("table demo.orders partition 0: the follower on {ep2} is not alive");
    stops_at(&lab, "tablet2", "tablet3", &[&tag, &dead]);
    // The vendor's own health table has no row for the sick table at all (v0.9.2 drops rows
    // whose Warnings hold spaces), while the healthy ones are listed.
    let shown = lab.ops_showtablestatus();
    assert!(shown.contains("users"), "{shown}");
    assert!(!shown.contains("orders"), "{shown}");
}

#[test]
fn a_partition_stuck_in_k_table_undefined_stops_the_run_at_its_tablet() {
    let lab = OmLab::new(true, json!({}));
    // demo.orders partition 2 is led by tablet3 and followed by tablet1: after tablet1's
    // restart it is registered alive but never loaded (Partition_unalive stays 0).
    let ep1 = lab.endpoints["tablet1"].clone();
    lab.knob(
        "stuck",
        json!({ ep1.clone(): {"table": "demo.orders", "pid": 2, "version": "0.9.2", "state": "kTableUndefined"} }),
    );
    let tag = format!("[pid=2][follower][{ep1}]: state is kTableUndefined");
    stops_at(&lab, "tablet1", "tablet2", &["table demo.orders", &tag]);
}

#[test]
fn a_tablet_that_dies_seconds_after_its_success_line_is_caught_before_the_next_tablet() {
    let lab = OmLab::new(true, json!({}));
    let ep1 = lab.endpoints["tablet1"].clone();
    lab.knob(
        "die_after",
        json!({ ep1: {"version": "0.9.2", "seconds": 1.5} }),
    );
    // The settle window's error: start.sh had printed its success line (start() checks it
    // before the window opens), so one probe right after it would have passed.
    stops_at(
        &lab,
        "tablet1",
        "tablet2",
        &["tablet1: the tablet started, then"],
    );
}

#[test]
fn components_in_daemon_mode_are_stopped_waited_for_and_started_under_mon_again() {
    let lab = OmLab::with(true, json!({}), &["ns1", "tablet1"], json!({}));
    for n in [
        "ns1/bin/nameserver.pid.child",
        "tablet1/bin/tablet.pid.child",
    ] {
        assert!(lab.dir().join(n).exists(), "{n}");
    }
    let (out, report) = lab.run(&[]);
    ok_run(&out, &report);
    assert!(
        lab.versions().values().all(|v| v == "0.9.2"),
        "{:?}",
        lab.versions()
    );
    let actions = report["actions"].as_array().unwrap();
    for (host, comp) in [("ns1", "nameserver"), ("tablet1", "tablet")] {
        // Started again with `mon`, and running under it: mon's pid file and the child's.
        assert!(actions.iter().any(|a| a["host"] == host
            && a["description"]
                .as_str()
                .unwrap()
                .contains(&format!("start.sh start {comp} mon"))));
        let dir = lab.dir().join(host).join("bin");
        let mon: u32 = std::fs::read_to_string(dir.join(format!("{comp}.pid")))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let child: u32 = std::fs::read_to_string(dir.join(format!("{comp}.pid.child")))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_ne!(mon, child);
        for pid in [mon, child] {
            assert!(
                Path::new(&format!("/proc/{pid}")).exists(),
                "{host}: pid {pid} is not running"
            );
        }
        let cmdline = std::fs::read_to_string(format!("/proc/{mon}/cmdline")).unwrap();
        assert!(cmdline.contains("bin/mon"), "{cmdline}");
    }
    // A component in normal mode stays in normal mode.
    assert!(!lab.dir().join("tablet2/bin/tablet.pid.child").exists());
}

#[test]
fn a_post_upgrade_that_fails_keeps_its_statfile_and_a_resume_moves_the_leaders_back() {
    // The failure the tool logs at WARNING only: no ERROR line, exit 0. Only the statfile it
    // keeps tells.
    let lab = OmLab::new(
        true,
        json!({"post_upgrade_error": {"times": 1, "level": "warning"}}),
    );
    let leaders = lab.leaders();
    let (out, report) = lab.run(&["--on-failure", "stop"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let err = outcome_error(&report);
    assert_eq!(
        failed_step(&report),
        "tablet tablet1: 0.9.1 -> 0.9.2",
        "{err}"
    );
    assert!(
        err.contains("post-upgrade for tablet1")
            && err.contains("kept its statfile")
            && err.contains("WARNING: cannot find leader endpoint"),
        "{err}"
    );
    // The tool kept its statfile, as the real one does on a failure.
    let stat: Vec<_> = std::fs::read_dir(lab.dir().join("ns1"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".stat")
        })
        .collect();
    assert_eq!(stat.len(), 1);
    assert_ne!(
        lab.leaders(),
        leaders,
        "tablet1's leaders should still be elsewhere"
    );

    let run_id = report["run_id"].as_str().unwrap().to_string();
    let out = lab
        .p
        .scratch
        .capstan(&["resume", &run_id, "--json", "--yes"]);
    let resumed = last_report(&out.stdout);
    assert_eq!(
        resumed["status"],
        "succeeded",
        "{}",
        outcome_error(&resumed)
    );
    assert_eq!(
        lab.leaders(),
        leaders,
        "the resume did not move the leaders back"
    );
    assert!(lab.versions().values().all(|v| v == "0.9.2"));

    // The tool's own edges, as the vendor's v0.9.2 has them: with several --endpoints only the
    // first is used (a warning), and a missing statfile is an uncaught exception after
    // auto_failover was turned off, which stays off.
    let eps = format!("{},{}", lab.endpoints["tablet1"], lab.endpoints["tablet2"]);
    let (code, _, err) = lab.ops_tool(&[
        "--cmd=post-upgrade",
        &format!("--endpoints={eps}"),
        "--statfile=/nonexistent/capstan.stat",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("WARNING: must provide --endpoints with only one endpoint")
            && err.contains("FileNotFoundError"),
        "{err}"
    );
    assert_eq!(lab.state()["auto_failover"], false);
}

/// The shipped playbook simulated on the example scenario with `from` replaced by `to`.
fn simulate_example_with(from: &str, to: &str, extra: &[&str]) -> Value {
    simulate_edited_example("openmldb", "scenario.toml", (from, to), extra)
}

#[test]
fn a_yarn_mode_taskmanager_needs_the_hdfs_packages_confirmed() {
    let (from, to) = (
        "spark.home=/opt/spark\\njob.log.path=./logs\\n",
        "spark.home=/opt/spark\\njob.log.path=./logs\\nspark.yarn.jars=hdfs://nn:8020/openmldb/spark/jars/*\\n",
    );
    let r = simulate_example_with(from, to, &[]);
    assert_eq!(failed_step(&r), "precheck");
    let err = outcome_error(&r);
    assert!(
        err.contains("tm1: YARN mode")
            && err.contains("spark.yarn.jars=hdfs://nn:8020/openmldb/spark/jars/*")
            && err.contains("-p hdfs_updated=true"),
        "{err}"
    );
    let r = simulate_example_with(from, to, &["-p", "hdfs_updated=true"]);
    assert_eq!(r["status"], "succeeded", "{}", outcome_error(&r));
    assert!(r["logs"].to_string().contains("YARN mode: spark.yarn.jars"));
}

#[test]
fn a_confset_that_prints_failed_is_not_taken_for_ok() {
    // The ops tool crashes in pre-upgrade with auto_failover off; the guard's confset then
    // fails with a message that happens to hold "ok". Only `set auto_failover ok` counts.
    let r = simulate_example_with(
        "auto_failover = true\n",
        "auto_failover = true\nops_crash = \"pre-upgrade\"\nconfset_error = \"nameserver leader is not ok\"\n",
        &["--on-failure", "stop"],
    );
    let guard = r["guards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "openmldb auto_failover")
        .unwrap()
        .to_string();
    assert!(
        guard.contains("failed to set auto_failover. error msg: nameserver leader is not ok"),
        "{guard}"
    );
}

#[test]
fn daemon_mode_is_kept_in_simulation_too() {
    // tablet1 runs under mon at the start: mon's pid in tablet.pid, the tablet's in .child.
    let r = simulate_example_with(
        "\"/opt/openmldb/bin/tablet.pid\" = \"31002\\n\"",
        "\"/opt/openmldb/bin/tablet.pid\" = \"31902\\n\", \"/opt/openmldb/bin/tablet.pid.child\" = \"31002\\n\"",
        &[],
    );
    assert_eq!(r["status"], "succeeded", "{}", outcome_error(&r));
    let on = |host: &str, what: &str| {
        r["actions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["host"] == host && a["description"].as_str().unwrap().contains(what))
            .count()
    };
    assert_eq!(on("tablet1", "start.sh start tablet mon"), 1);
    assert_eq!(on("tablet2", "start.sh start tablet mon"), 0);
    assert_eq!(on("tablet2", "start.sh start tablet"), 1);
    assert!(r["logs"]
        .to_string()
        .contains("tablet1: the tablet runs in daemon mode (mon)"));
}
