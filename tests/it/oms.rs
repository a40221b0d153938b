//! OMS: the shipped playbook on the lab double (lab/oms: OMS images built locally, the
//! machine's Docker engine, the metadata databases on the test MariaDB) through two sshd hosts;
//! its faults, kill -9 and resume, and trace parity with the simulation's `oms` model.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::parity::*;
use crate::support::*;

const NODES: &[&str] = &["oms1", "oms2"];
const NEW: &str = "capstan-lab/oms:4.2.3-CE";

/// The OMS images (4.1.0, 4.2.2, 4.2.3), built once per test process and saved as tars.
fn image_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("capstan-it-oms-{}", std::process::id()));
        lab_py("oms", &["images", dir.to_str().unwrap()]);
        dir
    })
}

/// Two OMS nodes (containers of 4.2.2-CE on this machine's engine, mounts under the scratch
/// dir) reached through two sshd hosts, and their metadata databases on the shared MariaDB.
struct OmsLab {
    p: Parity,
    spec: Value,
    spec_file: PathBuf,
    ports: BTreeMap<String, u16>,
    extra: Vec<String>,
}

impl OmsLab {
    fn new(old_version_table: bool) -> OmsLab {
        OmsLab::at("4.2.2-CE", old_version_table)
    }

    /// Two nodes running `from` (4.2.2-CE or 4.1.0-CE).
    fn at(from: &str, old_version_table: bool) -> OmsLab {
        OmsLab::build(from, old_version_table, false)
    }

    /// Two nodes running `from`; with `two_regions`, oms2 is in a second region with its own
    /// heartbeat database (named only by its config.yaml).
    fn build(from: &str, old_version_table: bool, two_regions: bool) -> OmsLab {
        OmsLab::build_with(from, old_version_table, two_regions, json!({}))
    }

    /// As `build`, with `extra` merged into the lab's spec (its `projects`, `data_sources`).
    fn build_with(from: &str, old_version_table: bool, two_regions: bool, extra: Value) -> OmsLab {
        let db = MariaDb::shared();
        let p = Parity::new(NODES);
        let tag = free_port();
        let mut ports = BTreeMap::new();
        let nodes: Vec<Value> = NODES
            .iter()
            .enumerate()
            .map(|(i, n)| {
                ports.insert(n.to_string(), free_port());
                let mut node = json!({"name": n, "ip": format!("127.0.0.{}", i + 2), "port": ports[*n],
                       "dir": p.dir().join(n), "container": format!("capstan_oms{tag}_{n}")});
                if two_regions && i == 1 {
                    node["region"] = json!("cn-shanghai");
                    node["cm_hb"] = json!(format!("cm_hb2_422_{tag}"));
                }
                node
            })
            .collect();
        let mut spec = json!({
            "prefix": format!("capstan_oms{tag}"),
            "image": "capstan-lab/oms",
            "from": from,
            "db": {"host": "127.0.0.1", "port": db.port, "user": "capstan", "password": DB_PASSWORD},
            "databases": {"rm": format!("rm_422_{tag}"), "cm": format!("cm_422_{tag}"), "cm_hb": format!("cm_hb_422_{tag}")},
            "old_version_table": old_version_table,
            "region": "cn-hangzhou",
            "nodes": nodes,
        });
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        image_dir();
        let spec_file = p.scratch.write("oms-spec.json", &spec.to_string());
        lab_py("oms", &["install", spec_file.to_str().unwrap()]);
        p.scratch.write("meta-pw", &format!("{DB_PASSWORD}\n"));
        std::fs::create_dir_all(p.dir().join("backup")).unwrap();
        OmsLab {
            p,
            spec,
            spec_file,
            ports,
            extra: Vec::new(),
        }
    }

    fn db(&self, key: &str) -> String {
        self.spec["databases"][key].as_str().unwrap().to_string()
    }

    /// Every region's heartbeat database.
    fn hb_dbs(&self) -> Vec<String> {
        let mut out = vec![self.db("cm_hb")];
        for n in self.spec["nodes"].as_array().unwrap() {
            if let Some(db) = n["cm_hb"].as_str() {
                out.push(db.to_string());
            }
        }
        out
    }

    fn container(&self, n: &str) -> String {
        self.spec["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == n)
            .unwrap()["container"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn ip(&self, i: usize) -> String {
        format!("127.0.0.{}", i + 2)
    }

    fn old_version(&self) -> String {
        self.spec["from"].as_str().unwrap().to_string()
    }

    fn node_dir(&self, n: &str) -> PathBuf {
        self.p.dir().join(n)
    }

    /// The container the 4.1.0 deploy script starts on node `i` (the double's name for it).
    fn deployed(&self, i: usize, n: &str) -> String {
        format!("oms-4.2.3-CE-{}-{}", self.ip(i), self.ports[n])
    }

    fn vars(&self, i: usize, n: &str) -> String {
        format!(
            "container = \"{}\", ip = \"{}\", health_port = {}, region = \"cn-hangzhou\"",
            self.container(n),
            self.ip(i),
            self.ports[n]
        )
    }

    fn secrets(&self) -> String {
        format!(
            "\n[secrets]\nmeta = {{ file = {} }}\n",
            toml_str(&self.p.dir().join("meta-pw").display().to_string())
        )
    }

    fn checksums(&self) -> BTreeMap<String, String> {
        serde_json::from_str(&lab_py(
            "oms",
            &["checksums", self.spec_file.to_str().unwrap()],
        ))
        .unwrap()
    }

    fn sql(&self, q: &str) -> Vec<String> {
        use mysql::prelude::Queryable;
        MariaDb::shared().conn().query::<String, _>(q).unwrap()
    }

    fn ha(&self) -> String {
        self.sql(&format!(
            "SELECT cfg_value FROM {}.oms_normal_config WHERE cfg_name = 'ha.config'",
            self.db("rm")
        ))
        .remove(0)
    }

    /// Asserts `ha.config` is back on as the guide says after `before` (HA on): the same
    /// settings with `perceiveStoreClientCheckpoint` true (the playbook's default).
    fn ha_back_on(&self, before: &str) {
        let mut want: Value = serde_json::from_str(before).unwrap();
        assert_eq!(want["enable"], true, "the lab starts with HA on: {before}");
        want["perceiveStoreClientCheckpoint"] = json!(true);
        let now: Value = serde_json::from_str(&self.ha()).unwrap();
        assert_eq!(now, want, "HA is not back on as the guide says");
    }

    fn versions(&self) -> Vec<String> {
        self.sql(&format!(
            "SELECT version FROM {}.oms_version ORDER BY version",
            self.db("rm")
        ))
    }

    fn inspect(&self, name: &str) -> Option<Value> {
        let out = Command::new("docker")
            .args(["inspect", name])
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| serde_json::from_slice::<Value>(&out.stdout).unwrap()[0].clone())
    }

    fn running(&self, name: &str) -> bool {
        self.inspect(name)
            .is_some_and(|v| v["State"]["Running"] == true)
    }

    /// The lab now, as a scenario: each host's engine with its old container (as `docker
    /// inspect` shows it) and the image tar, the metadata server through the `oms` model.
    fn scenario(&self, model_extra: &str) -> PathBuf {
        let mut s = String::from("[inventory.defaults]\ntransport = \"ssh\"\ngroups = [\"oms\"]\n");
        s.push_str(&self.secrets().replace("[secrets]", "[inventory.secrets]"));
        for (i, n) in NODES.iter().enumerate() {
            s.push_str(&format!(
                "\n[inventory.hosts.{n}]\naddress = \"10.99.0.{}\"\nvars = {{ {} }}\n",
                i + 1,
                self.vars(i, n)
            ));
        }
        let tar = image_dir().join("oms-4.2.3-CE.tar");
        for (i, n) in NODES.iter().enumerate() {
            let c = self.container(n);
            let v = self.inspect(&c).unwrap();
            let binds: Vec<String> = v["HostConfig"]["Binds"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| toml_str(b.as_str().unwrap()))
                .collect();
            // The mount directory as it is (the 4.1.0 path reads and copies its config.yaml).
            let dir = self.node_dir(n);
            let config = dir.join("config.yaml");
            let from = self.old_version();
            s.push_str(&format!(
                "\n[hosts.{n}]\nfiles = {{ {} = \"{NEW}\\n\", {} = {} }}\ndirs = [{}, {}, {}, {}, {}]\n\n[hosts.{n}.docker]\nimages = [\"capstan-lab/oms:{from}\"]\n\n[[hosts.{n}.docker.containers]]\nname = \"{c}\"\nimage = \"capstan-lab/oms:{from}\"\nnet = \"host\"\nvolumes = [{}]\nenv = {{ OMS_HOST_IP = \"{}\" }}\npids_limit = -1\nulimits = {{ nproc = \"65535:65535\" }}\ntty = true\ninteractive = true\nlogs = [\"OMS {from} starting\", \"OMS service start successfully\"]\n",
                toml_str(&tar.display().to_string()),
                toml_str(&config.display().to_string()),
                toml_str(&std::fs::read_to_string(&config).unwrap()),
                toml_str(&self.p.dir().join("backup").display().to_string()),
                toml_str(&dir.display().to_string()),
                toml_str(&dir.join("oms_logs").display().to_string()),
                toml_str(&dir.join("oms_store").display().to_string()),
                toml_str(&dir.join("oms_run").display().to_string()),
                binds.join(", "),
                self.ip(i),
            ));
        }
        s.push_str(&format!(
            "\n[[products]]\nmodel = \"oms\"\ngroup = \"oms\"\nmetadb = \"127.0.0.1:{}\"\nversion = \"{}\"\nrm = \"{}\"\ncm = \"{}\"\ncm_hb = [{}]\nha = {}\n{model_extra}{}",
            MariaDb::shared().port,
            self.old_version(),
            self.db("rm"),
            self.db("cm"),
            self.hb_dbs()
                .iter()
                .map(|d| toml_str(d))
                .collect::<Vec<_>>()
                .join(", "),
            toml_str(&self.ha()),
            // The double's console lists lab.py's projects and data sources unless the spec
            // gives its own (the tests that do pass them in `model_extra` too).
            if model_extra.contains("projects =") {
                ""
            } else {
                LAB_CONSOLE
            },
        ));
        self.p.scratch.write("oms-scenario.toml", &s)
    }
}

impl OmsLab {
    /// Each node's config.yaml as it is now.
    fn configs(&self) -> Vec<String> {
        NODES
            .iter()
            .map(|n| std::fs::read_to_string(self.node_dir(n).join("config.yaml")).unwrap())
            .collect()
    }

    /// Each old container's bind mounts, sorted.
    fn old_binds(&self) -> Vec<Vec<String>> {
        NODES
            .iter()
            .map(|n| binds(&self.inspect(&self.container(n)).unwrap()))
            .collect()
    }

    /// Turns a knob of the double on for `node`'s next container (lab/oms/README.md).
    fn knob(&self, node: &str, name: &str) {
        lab_py(
            "oms",
            &["knob", self.spec_file.to_str().unwrap(), node, name, "on"],
        );
    }

    /// The ids of the heartbeat rows in the dump of heartbeat database `db` the run took.
    fn dumped_heartbeats(&self, db: &str) -> Vec<u64> {
        let dump = self.p.dir().join("backup").join(format!("{db}.sql"));
        let text = std::fs::read_to_string(&dump).unwrap();
        // One statement per table's rows, on one line or (MariaDB 10.11) one row a line.
        let mut ids = Vec::new();
        let head = "INSERT INTO `heatbeat_sequence` VALUES";
        for part in text.split(head).skip(1) {
            let values = part.split(";\n").next().unwrap().replace('\n', "");
            for tuple in values.trim().split("),(") {
                let id = tuple.trim_start_matches('(').split(',').next().unwrap();
                ids.push(id.trim().parse().unwrap());
            }
        }
        ids
    }

    /// Every table of the metadata databases has the checksum and columns of `before`, but the
    /// heartbeat table: the row the vendor's shrink kept (the one row its dump holds) is there
    /// and no older one; the old containers, running again, write newer ones.
    fn metadata_as(&self, before: &BTreeMap<String, String>) {
        let after = self.checksums();
        let hbs: Vec<String> = self
            .hb_dbs()
            .iter()
            .map(|db| format!("{db}.heatbeat_sequence"))
            .collect();
        // ha.config is put back on as the guide says (ha_back_on checks it), so that table is
        // compared by its columns and its other rows.
        let cfg = format!("{}.oms_normal_config", self.db("rm"));
        // The running tasks' progress moves while the old containers run (before the stop, and
        // again once they are back): that table is compared without it.
        let steps = format!("{}.oms_project_step", self.db("rm"));
        for (t, sum) in before {
            if *t == steps {
                let cols = |v: &str| v.split_once(' ').map(|(_, c)| c.to_string());
                assert_eq!(
                    after.get(t).and_then(|v| cols(v)),
                    cols(sum),
                    "{t}'s columns"
                );
            } else if *t == cfg {
                let cols = |v: &str| v.split_once(' ').map(|(_, c)| c.to_string());
                assert_eq!(
                    after.get(t).and_then(|v| cols(v)),
                    cols(sum),
                    "{t}'s columns"
                );
            } else if !hbs.contains(t) {
                assert_eq!(after.get(t), Some(sum), "{t} differs after the rollback");
            }
        }
        assert_eq!(
            self.sql(&format!(
                "SELECT cfg_value FROM {cfg} WHERE cfg_name = 'oms.timezone'"
            )),
            ["+08:00"]
        );
        assert_eq!(before.len(), after.len(), "{after:#?}");
        for (db, hb) in self.hb_dbs().iter().zip(&hbs) {
            let kept = self.dumped_heartbeats(db);
            assert_eq!(kept.len(), 1, "the dump of {db} holds {kept:?}");
            assert_eq!(
                self.sql(&format!("SELECT id FROM {hb} WHERE id <= {}", kept[0])),
                [kept[0].to_string()]
            );
        }
    }

    /// The simulation of the lab's scenario acts as the successful lab run `report` did, and a
    /// second lab run finds every node on its 4.2.3 container (by name, or by image and mounts)
    /// and touches none.
    fn happy_path_acts_alike(&self, scenario: &Path, report: &Value) {
        self.assert_simulation_acts_alike(scenario, &[], report, comparable);
        let (out, again) = self.run(&[]);
        ok_run(&out, &again);
        assert!(
            !again["actions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["read_only"] == false
                    && (a["op"].as_str().unwrap().starts_with("docker_")
                        || a["description"]
                            .as_str()
                            .unwrap()
                            .contains("docker_remote_deploy"))),
            "a second run touched a container"
        );
    }

    /// A lab run with `--on-failure rollback` that fails in `step` with an error containing
    /// `error` and is rolled back; its report.
    fn run_rolled_back(&self, step: &str, error: &str) -> Value {
        let (out, report) = self.run(&["--on-failure", "rollback"]);
        assert_eq!(out.code, 1, "{}", out.stderr);
        assert_eq!(
            report["status"],
            "rolled_back",
            "{}",
            outcome_error(&report)
        );
        assert_eq!(failed_step(&report), step);
        assert!(
            outcome_error(&report).contains(error),
            "{}",
            outcome_error(&report)
        );
        report
    }

    /// `capstan simulate` of `scenario` with `--on-failure rollback`: the report.
    fn simulate_rollback(&self, scenario: &Path) -> Value {
        self.p
            .shipped(
                "oms",
                "simulate",
                &[
                    "--scenario",
                    scenario.to_str().unwrap(),
                    "--on-failure",
                    "rollback",
                ],
                &self.params(),
                &[],
            )
            .1
    }

    /// The simulation of the lab's scenario rolls back as the lab run `report` did, action by
    /// action and undo by undo.
    fn rollback_acts_alike(&self, scenario: &Path, report: &Value) {
        let sim = self.simulate_rollback(scenario);
        assert_eq!(sim["status"], "rolled_back", "{}", outcome_error(&sim));
        compare(&comparable(report), &comparable(&sim));
        assert_eq!(undo_path(report), undo_path(&sim));
    }
}

impl ProductLab for OmsLab {
    fn parity(&self) -> &Parity {
        &self.p
    }
    fn playbook(&self) -> &'static str {
        "oms"
    }
    fn params(&self) -> Vec<String> {
        let mut v: Vec<String> = [
            format!("image={NEW}"),
            format!(
                "image_tar={}",
                image_dir().join("oms-4.2.3-CE.tar").display()
            ),
            "meta_host=127.0.0.1".into(),
            format!("meta_port={}", MariaDb::shared().port),
            "meta_user=capstan".into(),
            "meta_password_secret=meta".into(),
            format!("rm_db={}", self.db("rm")),
            format!("cm_db={}", self.db("cm")),
            format!("backup_dir={}", self.p.dir().join("backup").display()),
            // This machine's engine refuses privileged containers (it runs in a container).
            "privileged=false".into(),
            "health_timeout=30".into(),
            // Concurrent labs share this engine: each has its own container to copy the 4.1.0
            // deploy script out of (lab.py stop removes it).
            format!(
                "config_tool={}-config-tool",
                self.spec["prefix"].as_str().unwrap()
            ),
            // The double's container says when its services are up (after a few seconds).
            "ready_log=services are up, ready for docker_init.sh".into(),
            "init_wait=60".into(),
        ]
        .into_iter()
        .chain(self.extra.iter().cloned())
        .collect();
        v = v.into_iter().flat_map(|p| ["-p".to_string(), p]).collect();
        v
    }
    fn inventory(&self) -> PathBuf {
        let mut s = format!("[defaults]\n{}groups = [\"oms\"]\n", self.p.lab.defaults());
        for (i, n) in NODES.iter().enumerate() {
            s.push_str(&format!(
                "\n[hosts.{n}]\nport = {}\nvars = {{ {} }}\n",
                self.p.lab.ports[i],
                self.vars(i, n)
            ));
        }
        s.push_str(&self.secrets());
        self.p.scratch.write("lab.toml", &s)
    }
}

impl Drop for OmsLab {
    fn drop(&mut self) {
        lab_stop("oms", &self.spec_file);
    }
}

/// What the lab's console lists by default (lab/oms/lab.py's PROJECTS and SOURCES), as the `oms`
/// model's settings.
const LAB_CONSOLE: &str = r#"projects = [
  { id = "np_1", name = "mysql_to_ob_orders", type = "MIGRATION", status = "RUNNING", steps = { TRANSFER_PRECHECK = "FINISHED", STRUCT_TRANSFER = "FINISHED", FULL_TRANSFER = "FINISHED", INCR_TRANSFER = "RUNNING", FULL_VERIFIER = "FINISHED" } },
  { id = "np_2", name = "ob_to_kafka_events", type = "SYNC", status = "RUNNING", steps = { TRANSFER_PRECHECK = "FINISHED", INCR_TRANSFER = "RUNNING" } },
  { id = "np_3", name = "pg_to_ob_archive", type = "MIGRATION", status = "SUSPEND", steps = { TRANSFER_PRECHECK = "FINISHED", FULL_TRANSFER = "SUSPEND" } },
]
data_sources = [
  { id = "e_1", name = "orders_mysql", type = "MYSQL" },
  { id = "e_2", name = "ob_tenant", type = "OB_MYSQL" },
  { id = "e_3", name = "events_kafka", type = "KAFKA" },
]
"#;

/// A trace to compare with the simulation's: the dumps' sizes and sums (a simulated dump is a
/// stand-in file) and image ids masked, and a poll's repeated lines kept once.
fn comparable(r: &Value) -> BTreeMap<String, Vec<String>> {
    let mut t = trace(r);
    for lines in t.values_mut() {
        for l in lines.iter_mut() {
            if l.contains("] mysqldump:")
                || l.contains("] verify_backup:")
                || l.contains("] mysql_load:")
            {
                if let Some(at) = l.rfind(" -> ok ") {
                    l.replace_range(at + 7.., "N");
                }
            }
            // The console's answers carry request ids and timings of their own.
            if l.contains("/api/v2?Action=") {
                if let Some(at) = l.rfind(" -> ok ") {
                    l.replace_range(at + 7.., "JSON");
                }
            }
            // MariaDB counts the tables a DROP DATABASE removed; the model does not keep tables.
            if l.contains(": DROP DATABASE IF EXISTS ") {
                if let Some(at) = l.rfind(" -> ok ") {
                    l.replace_range(at + 7.., "N affected");
                }
            }
            // The lab's running containers write a heartbeat a second, so the ids the shrink
            // reads and deletes depend on how long they ran; the model's table is as the
            // scenario was written.
            if l.contains("heatbeat_sequence") {
                let mut masked = String::new();
                let mut in_digits = false;
                for ch in l.chars() {
                    if ch.is_ascii_digit() {
                        if !in_digits {
                            masked.push('N');
                        }
                        in_digits = true;
                    } else {
                        masked.push(ch);
                        in_digits = false;
                    }
                }
                *l = masked;
            }
            if l.contains("] docker_load:") || l.contains("] docker_run:") {
                if let Some(at) = l.rfind(" -> ok ") {
                    l.replace_range(at + 7.., "ID");
                }
            }
        }
        // wait_log's poll is `docker logs`, then (not there yet) a check that the container
        // still runs: the lab's container logs its success line a moment after docker_init.sh.
        let mut i = 1;
        while i + 1 < lines.len() {
            if lines[i].contains("] docker_inspect: ")
                && lines[i - 1].contains("] docker_logs: docker logs --tail 500 ")
                && lines[i - 1] == lines[i + 1]
            {
                lines.remove(i);
            } else {
                i += 1;
            }
        }
        collapse_repeats(lines);
    }
    t
}

#[test]
pub(crate) fn oms_upgrades_two_nodes_on_the_lab_and_the_simulation_acts_alike() {
    let lab = OmsLab::new(true);
    // The double's running containers write into the metadata: a heartbeat row and their tasks'
    // progress every second, so a dump taken while they run is not the state they stop with.
    let a = lab.checksums();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let b = lab.checksums();
    for t in [
        format!("{}.heatbeat_sequence", lab.db("cm_hb")),
        format!("{}.oms_project_step", lab.db("rm")),
    ] {
        assert_ne!(
            a[&t], b[&t],
            "{t} did not change while the old containers ran"
        );
    }
    let ha_before = lab.ha();
    let scenario = lab.scenario("");
    let old_binds = lab.old_binds();

    let (out, report) = lab.run(&[]);
    ok_run(&out, &report);
    for (i, n) in NODES.iter().enumerate() {
        let fresh = format!("{}_4.2.3", lab.container(n));
        let v = lab.inspect(&fresh).expect("the new container");
        assert_eq!(v["State"]["Running"], true);
        assert_eq!(binds(&v), old_binds[i], "{n}: the mounts changed");
        let env: Vec<&str> = v["Config"]["Env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap())
            .collect();
        assert!(env.contains(&"IS_UPGRADE=true"), "{env:?}");
        assert!(
            env.contains(&format!("OMS_HOST_IP={}", lab.ip(i)).as_str()),
            "{env:?}"
        );
        assert!(
            !lab.running(&lab.container(n)),
            "{n}: the old container still runs"
        );
    }
    assert_eq!(lab.versions(), ["4.2.2-CE", "4.2.3-CE"]);
    lab.ha_back_on(&ha_before);
    // The shared config file: docker_init.sh ran once in the region, on oms1.
    let inits: Vec<&Value> = report["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| {
            a["description"]
                .as_str()
                .unwrap()
                .contains("docker_init.sh")
        })
        .collect();
    assert_eq!(inits.len(), 1, "{inits:?}");
    assert_eq!(inits[0]["host"], "oms1");

    // The guide's order: every old container stopped before the heartbeat table is shrunk and
    // the metadata dumped, so the dump holds the one row the shrink kept (the double's running
    // containers write a heartbeat every second), and the run said so before it began.
    let actions = report["actions"].as_array().unwrap();
    let first = |what: &str| {
        actions
            .iter()
            .position(|a| a["description"].as_str().unwrap().contains(what))
            .unwrap_or_else(|| panic!("no {what}"))
    };
    let last_stop = actions
        .iter()
        .rposition(|a| a["op"] == "docker_stop")
        .unwrap();
    assert!(last_stop < first("heatbeat_sequence"));
    assert!(last_stop < first("mysqldump"));
    assert_eq!(lab.dumped_heartbeats(&lab.db("cm_hb")).len(), 1);
    assert!(report["logs"].to_string().contains("outage: OMS stops on"));

    lab.happy_path_acts_alike(&scenario, &report);
}

#[test]
fn docker_init_failing_on_the_second_node_rolls_everything_back() {
    let mut lab = OmsLab::new(true);
    // Each node has its own config file: docker_init.sh runs on every node, and fails on oms2.
    lab.extra.push("shared_config=false".into());
    lab.knob("oms2", "init_fail");
    let ha_before = lab.ha();
    let scenario = lab.scenario("init_fail = [\"oms2\"]\n");
    let before = lab.checksums();
    let report = lab.run_rolled_back("node oms2: 4.2.2-CE -> 4.2.3", "docker_init.sh failed");
    // The metadata is what it was: every table's checksum (the heartbeat table as the vendor's
    // shrink left it, its newest row, before the dump).
    lab.metadata_as(&before);
    for n in NODES {
        assert!(
            lab.running(&lab.container(n)),
            "{n}: the old container is not running"
        );
        assert!(lab
            .inspect(&format!("{}_4.2.3", lab.container(n)))
            .is_none());
    }
    lab.ha_back_on(&ha_before);

    lab.rollback_acts_alike(&scenario, &report);
}

#[test]
fn two_regions_have_both_heartbeat_databases_dumped_and_restored() {
    // oms2 is in its own region with its own heartbeat database, named only by its config.yaml
    // (the run is given no cm_hb_dbs): docker_init.sh runs once per region, on both nodes, and
    // fails on oms2.
    let lab = OmsLab::build("4.2.2-CE", true, true);
    lab.knob("oms2", "init_fail");
    let scenario = lab.scenario("init_fail = [\"oms2\"]\n");
    let before = lab.checksums();
    let hbs = lab.hb_dbs();
    assert_eq!(hbs.len(), 2);
    let report = lab.run_rolled_back("node oms2: 4.2.2-CE -> 4.2.3", "docker_init.sh failed");
    for db in &hbs {
        assert!(
            report["backups"]
                .as_array()
                .unwrap()
                .iter()
                .any(|b| b.to_string().contains(&format!("{db}.sql"))),
            "{db} was not dumped"
        );
    }
    // Both regions' heartbeat databases (and every other table) are as they were dumped.
    lab.metadata_as(&before);
    assert_eq!(
        report["actions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["description"]
                .as_str()
                .unwrap()
                .contains("docker_init.sh"))
            .count(),
        2,
        "docker_init.sh runs once in each region"
    );
    lab.rollback_acts_alike(&scenario, &report);
}

#[test]
fn an_install_older_than_4_1_1_gets_the_documented_recovery() {
    // No oms_version table: docker_init.sh says "Version before 4.1.1 is not allowed to upgrade."
    let lab = OmsLab::new(false);
    let (out, report) = lab.run(&["-p", "from_version=4.2.2-CE"]);
    ok_run(&out, &report);
    assert!(report["logs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["message"]
            .as_str()
            .unwrap()
            .contains("recording 4.2.2-CE in oms_version and running it again")));
    assert_eq!(lab.versions(), ["4.2.2-CE", "4.2.3-CE"]);
}

#[test]
fn an_empty_dump_stops_the_run_before_any_new_container_and_the_old_ones_start_again() {
    let mut lab = OmsLab::new(true);
    // A dump program that exits 0 and writes nothing (a broken client wrapper, a full disk).
    let fake = lab
        .p
        .scratch
        .write("empty-mysqldump", "#!/bin/sh\nexit 0\n");
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    lab.extra.push(format!("mysqldump={}", fake.display()));
    let ha_before = lab.ha();
    let (out, report) = lab.run(&["--on-failure", "rollback"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(failed_step(&report), "back up the metadata");
    assert!(
        outcome_error(&report).contains("empty"),
        "{}",
        outcome_error(&report)
    );
    // The guide stops the old containers before its backup; past that, nothing: no image
    // loaded, no new container, no script run in one.
    let changes: Vec<&str> = report["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["op"].as_str().unwrap().starts_with("docker_") && a["read_only"] == false)
        .map(|a| a["op"].as_str().unwrap())
        .collect();
    assert!(
        changes
            .iter()
            .all(|op| *op == "docker_stop" || *op == "docker_start"),
        "{changes:?}"
    );
    // The rollback started the old containers again, and put HA back.
    for n in NODES {
        assert!(lab.running(&lab.container(n)));
    }
    lab.ha_back_on(&ha_before);
}

#[test]
fn kill_9_between_the_two_nodes_then_resume_completes() {
    let lab = OmsLab::new(true);
    let inv = lab.inventory();
    let run_id = kill_9_at(
        &lab.p,
        "oms",
        &inv,
        &lab.params(),
        ("node oms2: 4.2.2-CE -> 4.2.3", ""),
    );
    resume_skipping(
        &lab.p,
        &run_id,
        &[
            "precheck",
            "back up the metadata",
            "node oms1: 4.2.2-CE -> 4.2.3",
        ],
    );
    for n in NODES {
        assert!(lab.running(&format!("{}_4.2.3", lab.container(n))));
    }
    assert_eq!(lab.versions(), ["4.2.2-CE", "4.2.3-CE"]);
    let ha: Value = serde_json::from_str(&lab.ha()).unwrap();
    assert_eq!(ha["enable"], true, "{ha}");
}

#[test]
fn the_route_refuses_what_does_not_reach_4_2_3_in_simulation() {
    let simulate = |from: &str| -> Value {
        let sc = repo().join("examples/oms/scenario.toml");
        let pb = repo().join("playbooks/oms.rhai");
        let v = format!("from_version={from}");
        last_report(
            &capstan(&[
                "simulate",
                pb.to_str().unwrap(),
                "--scenario",
                sc.to_str().unwrap(),
                "-p",
                &v,
                "--json",
            ])
            .stdout,
        )
    };
    // Older than 4.1.0: the route through 4.1.0 is named, and nothing changed.
    let r = simulate("3.3.1-CE");
    assert_eq!(failed_step(&r), "precheck");
    let e = outcome_error(&r);
    assert!(
        e.contains("upgrade to 4.1.0 first (route: 3.3.1 -> 4.1.0 -> 4.2.3)"),
        "{e}"
    );
    assert!(r["actions"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["read_only"] == true));
    // 4.2.1 is not on the route at all.
    let r = simulate("4.2.1-CE");
    assert!(outcome_error(&r).contains("only 4.2.2 and 4.1.0 can"));
}

fn binds(v: &Value) -> Vec<String> {
    let mut b: Vec<String> = v["HostConfig"]["Binds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    b.sort();
    b
}

fn actions_about<'a>(r: &'a Value, text: &str) -> Vec<&'a Value> {
    r["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["description"].as_str().unwrap().contains(text))
        .collect()
}

#[test]
fn oms_upgrades_from_4_1_0_by_the_deploy_script_and_the_simulation_acts_alike() {
    let lab = OmsLab::at("4.1.0-CE", true);
    let ha_before = lab.ha();
    let scenario = lab.scenario("");
    let configs = lab.configs();
    let old_binds = lab.old_binds();

    let (out, report) = lab.run(&[]);
    ok_run(&out, &report);
    for (i, n) in NODES.iter().enumerate() {
        let v = lab
            .inspect(&lab.deployed(i, n))
            .expect("the container the deploy script started");
        assert_eq!(v["State"]["Running"], true);
        assert_eq!(v["Config"]["Image"], NEW);
        assert_eq!(binds(&v), old_binds[i], "{n}: the mounts changed");
        let env = v["Config"]["Env"].to_string();
        assert!(env.contains(&format!("OMS_HOST_IP={}", lab.ip(i))), "{env}");
        assert!(
            !lab.running(&lab.container(n)),
            "{n}: the old container still runs"
        );
        // The deploy script backed the config up and wrote the new version's beside it.
        let work = lab.node_dir(n).join("upgrade_4.2.3");
        assert_eq!(
            std::fs::read_to_string(work.join("config_copy.yaml")).unwrap(),
            configs[i]
        );
        assert_eq!(
            std::fs::read_to_string(lab.node_dir(n).join("config.yaml")).unwrap(),
            format!("{}oms_deployed_version: 4.2.3-CE\n", configs[i])
        );
    }
    assert_eq!(lab.versions(), ["4.1.0-CE", "4.2.3-CE"]);
    lab.ha_back_on(&ha_before);
    // The shared config file: the upgrade script ran once in the region, on oms1; the deploy
    // script on every node, each pulled out of the image by a container that is gone again.
    let upgrades = actions_about(&report, "sh /root/docker_oms_ce_version_upgrade.sh");
    assert_eq!(upgrades.len(), 1, "{upgrades:?}");
    assert_eq!(upgrades[0]["host"], "oms1");
    assert_eq!(
        actions_about(&report, "docker_remote_deploy_410_up_423_version.sh -o ")
            .iter()
            .map(|a| a["host"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["oms1", "oms2"]
    );
    assert!(lab
        .inspect(&format!(
            "{}-config-tool",
            lab.spec["prefix"].as_str().unwrap()
        ))
        .is_none());
    assert!(!actions_about(&report, "docker_init.sh")
        .iter()
        .any(|a| a["op"] == "docker_exec"));

    lab.happy_path_acts_alike(&scenario, &report);
}

#[test]
fn the_4_1_0_upgrade_script_failing_on_the_second_node_is_rolled_back_by_the_guides_script() {
    let mut lab = OmsLab::at("4.1.0-CE", true);
    // Each node has its own config file: the upgrade script runs on every node; on oms2 it stops
    // after the rm change and, as the vendor's scripts do, exits 0.
    lab.extra.push("shared_config=false".into());
    lab.knob("oms2", "upgrade_fail");
    let ha_before = lab.ha();
    let scenario = lab.scenario("upgrade_fail = [\"oms2\"]\n");
    let configs = lab.configs();
    let before = lab.checksums();
    let report = lab.run_rolled_back(
        "node oms2: 4.1.0-CE -> 4.2.3",
        "docker_oms_ce_version_upgrade.sh did not complete",
    );
    // The guide's roll-back script put the metadata back (no dump was loaded): every table's
    // checksum and columns as before (the heartbeat table as the shrink left it).
    assert!(!report["actions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["op"] == "mysql_load"));
    assert_eq!(
        actions_about(&report, "sh /root/docker_oms_ce_version_roll_back.sh")
            .iter()
            .map(|a| a["host"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["oms2", "oms1"]
    );
    lab.metadata_as(&before);
    assert_eq!(lab.versions(), ["4.1.0-CE"]);
    for (i, n) in NODES.iter().enumerate() {
        assert!(
            lab.running(&lab.container(n)),
            "{n}: the old container is not running"
        );
        assert!(lab.inspect(&lab.deployed(i, n)).is_none());
        assert_eq!(
            std::fs::read_to_string(lab.node_dir(n).join("config.yaml")).unwrap(),
            configs[i],
            "{n}: config.yaml is not as it was"
        );
    }
    lab.ha_back_on(&ha_before);

    lab.rollback_acts_alike(&scenario, &report);
}

#[test]
fn a_4_1_0_roll_back_script_that_does_not_complete_falls_back_on_the_dumps_in_simulation() {
    let sc = repo().join("examples/oms/scenario-4.1.0.toml");
    let pb = repo().join("playbooks/oms.rhai");
    let r = last_report(
        &capstan(&[
            "simulate",
            pb.to_str().unwrap(),
            "--scenario",
            sc.to_str().unwrap(),
            "--fail",
            "oms2:*docker_remote_deploy_410_up_423_version.sh -o*",
            "--fail",
            "oms1:docker exec*docker_oms_ce_version_roll_back.sh*",
            "--on-failure",
            "rollback",
            "--json",
        ])
        .stdout,
    );
    assert_eq!(r["status"], "rolled_back", "{}", outcome_error(&r));
    assert_eq!(failed_step(&r), "node oms2: 4.1.0-CE -> 4.2.3");
    // oms1 upgraded the MetaDB; its roll-back script failed, so the dumps were loaded in its undo,
    // after its 4.2.3 container was removed and before the old containers started.
    let in_undo = |text: &str| -> Vec<String> {
        r["actions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["step"].as_str().unwrap_or("").starts_with("undo #"))
            .map(|a| {
                format!(
                    "{} {}",
                    a["host"].as_str().unwrap(),
                    a["description"].as_str().unwrap()
                )
            })
            .filter(|d| d.contains(text))
            .collect()
    };
    assert_eq!(
        r["actions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["op"] == "mysql_load"
                && a["step"]
                    .as_str()
                    .unwrap_or("")
                    .contains("oms1: the guide's rollback"))
            .count(),
        3,
        "rm, cm and cm_hb loaded from their dumps"
    );
    let plan: Vec<String> = in_undo("");
    let at = |text: &str| {
        plan.iter()
            .position(|l| l.contains(text))
            .unwrap_or_else(|| panic!("no {text} in {plan:#?}"))
    };
    assert!(
        at("oms1 docker rm -f oms-4.2.3-CE-10.0.3.11-8089")
            < at("DROP DATABASE IF EXISTS `rm_410`")
    );
    assert!(at("DROP DATABASE IF EXISTS `cm_hb_410`") < at("oms1 docker start oms"));
    assert!(r["logs"].as_array().unwrap().iter().any(|l| l["message"]
        .as_str()
        .unwrap()
        .contains("restoring the metadata databases from the dumps instead")));
}

#[test]
fn kill_9_between_the_two_nodes_from_4_1_0_then_resume_completes() {
    let lab = OmsLab::at("4.1.0-CE", true);
    let inv = lab.inventory();
    let run_id = kill_9_at(
        &lab.p,
        "oms",
        &inv,
        &lab.params(),
        ("node oms2: 4.1.0-CE -> 4.2.3", ""),
    );
    resume_skipping(
        &lab.p,
        &run_id,
        &[
            "precheck",
            "back up the metadata",
            "node oms1: 4.1.0-CE -> 4.2.3",
        ],
    );
    for (i, n) in NODES.iter().enumerate() {
        assert!(lab.running(&lab.deployed(i, n)), "{n}");
    }
    assert_eq!(lab.versions(), ["4.1.0-CE", "4.2.3-CE"]);
    let ha: Value = serde_json::from_str(&lab.ha()).unwrap();
    assert_eq!(ha["enable"], true, "{ha}");
}

#[test]
fn with_perceive_checkpoint_kept_false_refetch_store_interval_is_raised_above_the_time_ha_was_off()
{
    // The example's cluster with refetchStoreIntervalMin at 1 minute; the upgrade keeps HA off
    // for minutes (simulated).
    let r = simulate_edited_example(
        "oms",
        "scenario.toml",
        (
            "\"refetchStoreIntervalMin\": 120",
            "\"refetchStoreIntervalMin\": 1",
        ),
        &["-p", "perceive_checkpoint=false"],
    );
    assert_eq!(r["status"], "succeeded", "{}", outcome_error(&r));
    // The last write of ha.config turns HA on with refetchStoreIntervalMin above T2 - T1.
    let last = r["actions"]
        .as_array()
        .unwrap()
        .iter()
        .rfind(|a| a["description"].as_str().unwrap().contains("SET cfg_value"))
        .unwrap()["description"]
        .as_str()
        .unwrap()
        .to_string();
    let logs = r["logs"].to_string();
    let line = logs
        .split("ha.config: HA back on")
        .nth(1)
        .expect("the T1/T2 line")
        .to_string();
    let minutes: i64 = line
        .split(" min)")
        .next()
        .unwrap()
        .rsplit('(')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(minutes >= 1, "{line}");
    assert!(
        last.contains("\"enable\":true")
            && last.contains("\"perceiveStoreClientCheckpoint\":false")
            && last.contains(&format!("\"refetchStoreIntervalMin\":{}", minutes + 10)),
        "{last}\n{line}"
    );
    assert!(line.contains("refetchStoreIntervalMin 1 -> "), "{line}");
}

#[test]
fn docker_init_run_into_a_container_still_starting_fails_in_the_double() {
    // A copy of the playbook without the wait for the new container's services.
    let lab = OmsLab::new(true);
    let text = std::fs::read_to_string(repo().join("playbooks/oms.rhai")).unwrap();
    let wait =
        "            oms::wait_ready(d, named, #{ log: p.ready_log, timeout: p.init_wait });\n";
    let early = text.replace(wait, "");
    assert_ne!(early, text, "the wait is not where the test expects it");
    let pb = lab.p.scratch.write("oms-too-early.rhai", &early);
    let inv = lab.inventory();
    let mut args: Vec<String> = [
        "run",
        pb.to_str().unwrap(),
        "-i",
        inv.to_str().unwrap(),
        "--yes",
        "--json",
        "--on-failure",
        "rollback",
    ]
    .map(String::from)
    .to_vec();
    args.extend(lab.params());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = lab.p.scratch.capstan(&argv);
    let r = last_report(&out.stdout);
    assert_eq!(r["status"], "rolled_back", "{}", outcome_error(&r));
    let err = outcome_error(&r);
    assert!(
        err.contains("docker_init.sh failed") && err.contains("still starting"),
        "{err}"
    );
    for n in NODES {
        assert!(lab.running(&lab.container(n)), "{n}: the old container");
    }

    // The shipped playbook waits for the container's word first: in its trace, the ready line
    // is seen in docker logs before docker_init.sh runs.
    let (out, report) = lab.run(&[]);
    ok_run(&out, &report);
    let actions = report["actions"].as_array().unwrap();
    let init = actions
        .iter()
        .position(|a| {
            a["description"]
                .as_str()
                .unwrap()
                .contains("docker_init.sh")
        })
        .unwrap();
    let ready = actions[..init]
        .iter()
        .rposition(|a| a["op"] == "docker_logs")
        .expect("docker logs read before docker_init.sh");
    assert_eq!(actions[ready]["host"], actions[init]["host"]);
}

/// Projects for the 4.1.0 preconditions: a full verification running, a project being created,
/// and an incremental synchronization running (which the guide allows).
const BUSY_PROJECTS: &str = r#"[
  {"id": "np_v", "name": "verify_orders", "type": "MIGRATION", "status": "RUNNING",
   "steps": [["TRANSFER_PRECHECK", "FINISHED"], ["FULL_TRANSFER", "FINISHED"], ["FULL_VERIFIER", "RUNNING"]]},
  {"id": "np_c", "name": "new_archive", "type": "MIGRATION", "status": "INIT", "steps": []},
  {"id": "np_i", "name": "sync_events", "type": "SYNC", "status": "RUNNING",
   "steps": [["TRANSFER_PRECHECK", "FINISHED"], ["INCR_TRANSFER", "RUNNING"]]}
]"#;

const BUSY_PROJECTS_TOML: &str = r#"projects = [
  { id = "np_v", name = "verify_orders", type = "MIGRATION", status = "RUNNING", steps = { TRANSFER_PRECHECK = "FINISHED", FULL_TRANSFER = "FINISHED", FULL_VERIFIER = "RUNNING" } },
  { id = "np_c", name = "new_archive", type = "MIGRATION", status = "INIT" },
  { id = "np_i", name = "sync_events", type = "SYNC", status = "RUNNING", steps = { TRANSFER_PRECHECK = "FINISHED", INCR_TRANSFER = "RUNNING" } },
]
"#;

#[test]
fn from_4_1_0_a_running_full_verification_or_a_project_being_created_stops_the_run_before_any_change(
) {
    let mut lab = OmsLab::build_with(
        "4.1.0-CE",
        true,
        false,
        json!({ "projects": serde_json::from_str::<Value>(BUSY_PROJECTS).unwrap() }),
    );
    let ha_before = lab.ha();
    let scenario = lab.scenario(BUSY_PROJECTS_TOML);
    let (out, report) = lab.run(&[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(failed_step(&report), "precheck");
    let e = outcome_error(&report);
    assert!(
        e.contains("project verify_orders (np_v): its step FULL_VERIFIER is RUNNING"),
        "{e}"
    );
    assert!(
        e.contains("project new_archive (np_c) is being created (status INIT)"),
        "{e}"
    );
    assert!(
        !e.contains("np_i"),
        "an incremental sync does not stop the run: {e}"
    );
    assert!(e.contains("nothing was changed"), "{e}");
    // Nothing changed: HA as it was, the old containers running, no container touched.
    assert_eq!(lab.ha(), ha_before);
    for n in NODES {
        assert!(lab.running(&lab.container(n)), "{n}");
    }
    assert!(!report["actions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["read_only"] == false));
    // The simulation, told of the same projects, refuses the same way.
    let sim = lab.simulate(&scenario, &[]);
    assert_eq!(failed_step(&sim), "precheck");
    assert!(
        outcome_error(&sim)
            .contains("project verify_orders (np_v): its step FULL_VERIFIER is RUNNING")
            && outcome_error(&sim).contains("project new_archive (np_c) is being created"),
        "{}",
        outcome_error(&sim)
    );

    // A console that cannot list its projects (404, as one older than CE 4.1.1 may answer) is a
    // failure, not a pass; the operator who checked the console says so with projects_checked.
    lab.knob("oms1", "no_openapi");
    let (out, report) = lab.run(&["--check"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let e = outcome_error(&report);
    assert!(
        e.contains("could not be read")
            && e.contains("HTTP 404")
            && e.contains("projects_checked=true"),
        "{e}"
    );
    lab.extra.push("projects_checked=true".into());
    let (out, report) = lab.run(&["--check"]);
    ok_run(&out, &report);
    assert!(report["logs"]
        .to_string()
        .contains("projects_checked=true: you checked in the console"));
}

#[test]
fn a_rollback_to_4_1_0_after_a_project_was_created_on_4_2_3_is_refused_up_front() {
    let mut lab = OmsLab::at("4.1.0-CE", true);
    lab.extra.push("shared_config=false".into());
    // Once oms1's 4.2.3 console serves, a user creates a project and an HBase data source on
    // it; then the upgrade script fails on oms2.
    lab.knob("oms1", "user_creates");
    lab.knob("oms2", "upgrade_fail");
    let scenario = lab.scenario(&format!(
        "{LAB_CONSOLE}user_creates = [\"oms1\"]\nupgrade_fail = [\"oms2\"]\n"
    ));
    let (out, report) = lab.run(&["--on-failure", "rollback"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_rollback_refused(
        &report,
        "node oms2: 4.1.0-CE -> 4.2.3",
        &[
            "project created_on_423 (np_new_127.0.0.2) was created on 4.2.3",
            "is of type HBASE, which 4.1.0 does not support",
        ],
    );
    // Nothing was undone: no roll-back script ran, oms1 still serves 4.2.3, the old containers
    // stay stopped, and every undo is pending.
    assert!(actions_about(&report, "docker_oms_ce_version_roll_back.sh").is_empty());
    assert!(lab.running(&lab.deployed(0, "oms1")));
    for n in NODES {
        assert!(!lab.running(&lab.container(n)), "{n}");
    }
    assert!(report["undos"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| !u["description"]
            .as_str()
            .unwrap()
            .starts_with("rollback gate"))
        .all(|u| u["status"] == "pending"));
    // The simulation refuses the same rollback.
    let sim = lab.simulate_rollback(&scenario);
    assert_rollback_refused(
        &sim,
        "node oms2: 4.1.0-CE -> 4.2.3",
        &["project created_on_423_oms1 (np_new_oms1) was created on 4.2.3"],
    );

    // Once the project and the data source are gone, `capstan rollback` checks again and goes
    // the guide's way back.
    lab.sql(&format!(
        "DELETE FROM {rm}.oms_project WHERE id LIKE 'np_new_%'",
        rm = lab.db("rm")
    ));
    lab.sql(&format!(
        "DELETE FROM {rm}.oms_data_source WHERE type = 'HBASE'",
        rm = lab.db("rm")
    ));
    let run = report["run_id"].as_str().unwrap();
    let out = lab.p.scratch.capstan(&["rollback", run, "--yes", "--json"]);
    let again = last_report(&out.stdout);
    assert_eq!(
        again["status"],
        "rolled_back",
        "{}\n{}",
        outcome_error(&again),
        out.stderr
    );
    assert_eq!(lab.versions(), ["4.1.0-CE"]);
    for n in NODES {
        assert!(
            lab.running(&lab.container(n)),
            "{n}: the old container is not running"
        );
    }
}
