//! DolphinDB: the shipped playbook on the lab double (lab/dolphindb, spoken to by the real
//! `dolphindb` client) over SSH, with the write probe running throughout; its faults, kill -9 and
//! resume, and trace parity with the simulation's `dolphindb` model.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::parity::*;
use crate::support::*;

const FROM: &str = "2.00.7.4 2022.12.08";
const TO: &str = "2.00.8.12 2023.01.10";
/// (host, controller, agent, data node), as in the vendor's tutorial.
const MACHINES: &[(&str, &str, &str, &str)] = &[
    ("ddb1", "HActl43", "agent43", "node43"),
    ("ddb2", "HActl44", "agent44", "node44"),
    ("ddb3", "HActl45", "agent45", "node45"),
];
const TABLE: &str = "dfs://stock/stock";
/// The table the vendor's own writer (lab/dolphindb/seed_writer.py) appends to.
const SEED_TABLE: &str = "dfs://stock/seed";

/// Three machines on sshd hosts, each with its server/ install (2.00.7.4) and the 2.00.8.12
/// package beside upgrade.sh, every node running; stopped on drop.
struct DdbLab {
    p: Parity,
    spec_file: PathBuf,
    ports: BTreeMap<String, u16>,
    pw: PathBuf,
}

impl DdbLab {
    fn new(knobs: Value) -> DdbLab {
        let names: Vec<&str> = MACHINES.iter().map(|m| m.0).collect();
        let p = Parity::new(&names);
        let d = p.dir().to_path_buf();
        let mut ports = BTreeMap::new();
        let machines: Vec<Value> = MACHINES
            .iter()
            .map(|(h, c, a, n)| {
                for alias in [c, a, n] {
                    ports.insert(alias.to_string(), free_port());
                }
                json!({"name": h, "server": d.join(h).join("server"),
                       "controller": [c, ports[*c]], "agent": [a, ports[*a]], "datanode": [n, ports[*n]]})
            })
            .collect();
        let spec = json!({
            "state": d.join("ddb-state.json"),
            "from": FROM, "to": TO,
            "users": {"admin": "123456"},
            "config": {"dfsHAMode": "Raft", "dfsReplicationFactor": "2", "dfsReplicaReliabilityLevel": "1"},
            // Long enough that the first status query after a data node is back sees its
            // chunks RECOVERING (the simulation's recovery_polls = 1 does the same).
            "recovery_s": 3.0,
            "chunks": 6,
            "tables": [TABLE, SEED_TABLE],
            "machines": machines,
            "knobs": knobs,
        });
        let spec_file = p.scratch.write("ddb-spec.json", &spec.to_string());
        lab_py("dolphindb", &["install", spec_file.to_str().unwrap()]);
        lab_py("dolphindb", &["start", spec_file.to_str().unwrap()]);
        let pw = p.scratch.write("ddb-admin-pw", "123456\n");
        DdbLab {
            p,
            spec_file,
            ports,
            pw,
        }
    }

    fn dir(&self) -> &Path {
        self.p.dir()
    }

    fn server(&self, host: &str) -> PathBuf {
        self.dir().join(host).join("server")
    }

    fn state(&self) -> Value {
        serde_json::from_str(&lab_py(
            "dolphindb",
            &["state", self.spec_file.to_str().unwrap()],
        ))
        .unwrap()
    }

    fn knob(&self, name: &str, value: Value) {
        lab_py(
            "dolphindb",
            &[
                "knob",
                self.spec_file.to_str().unwrap(),
                name,
                &value.to_string(),
            ],
        );
    }

    /// The version each node last started with, and whether it serves now (as the nodes
    /// record it in the cluster state).
    fn versions(&self) -> BTreeMap<String, String> {
        let st = self.state();
        st["nodes"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(a, n)| {
                let v = n["version"].as_str().unwrap().to_string();
                (
                    a.clone(),
                    if n["serving"] == true {
                        v
                    } else {
                        format!("down ({v})")
                    },
                )
            })
            .collect()
    }

    fn vars(&self, host: &str) -> String {
        let (_, c, a, n) = MACHINES.iter().find(|m| m.0 == host).unwrap();
        format!(
            "server = {}, controller = \"{c}\", controller_port = {}, agent = \"{a}\", agent_port = {}, datanode = \"{n}\", datanode_port = {}",
            toml_str(&self.server(host).display().to_string()),
            self.ports[*c],
            self.ports[*a],
            self.ports[*n]
        )
    }

    fn secrets(&self) -> String {
        format!(
            "\n[secrets]\nddb_admin = {{ file = {} }}\n",
            toml_str(&self.pw.display().to_string())
        )
    }

    /// A scenario of the lab as it is now: each machine's tree, its nodes' ports open, the
    /// same inventory (127.0.0.1, so the nodes' endpoints read the same in both traces).
    fn scenario(&self, model_extra: &str) -> PathBuf {
        let mut s =
            String::from("[inventory.defaults]\ntransport = \"ssh\"\ngroups = [\"dolphindb\"]\n");
        s.push_str(&self.secrets().replace("[secrets]", "[inventory.secrets]"));
        for (h, ..) in MACHINES {
            s.push_str(&format!(
                "\n[inventory.hosts.{h}]\naddress = \"127.0.0.1\"\nvars = {{ {} }}\n",
                self.vars(h)
            ));
        }
        for (h, c, a, n) in MACHINES {
            let body = files_body(&[self.dir().join(h)]);
            s.push_str(&format!(
                "\n[hosts.{h}]\nports = [{}, {}, {}]\nfiles = {{ {} }}\n",
                self.ports[*c], self.ports[*a], self.ports[*n], body
            ));
        }
        s.push_str(&format!(
            "\n[[products]]\nmodel = \"dolphindb\"\ngroup = \"dolphindb\"\nchunks = 6\ntables = [\"{TABLE}\"]\nreleases = {{ \"2.00.8.12\" = \"{TO}\" }}\nrecovery_polls = 1\n{model_extra}"
        ));
        self.p.scratch.write("ddb-scenario.toml", &s)
    }

    fn with(&self, extra: &[&str]) -> Vec<String> {
        let mut v = self.params();
        for e in extra {
            v.push("-p".into());
            v.push(e.to_string());
        }
        v
    }
}

impl ProductLab for DdbLab {
    fn parity(&self) -> &Parity {
        &self.p
    }
    fn playbook(&self) -> &'static str {
        "dolphindb"
    }
    fn params(&self) -> Vec<String> {
        [
            "version=2.00.8.12",
            "compatibility_level=5",
            "password_secret=ddb_admin",
            &format!("probe_table={TABLE}"),
            "probe_every=200ms",
            "node_timeout=20",
            "recovery_timeout=30",
        ]
        .iter()
        .flat_map(|p| ["-p".to_string(), p.to_string()])
        .collect()
    }
    fn inventory(&self) -> PathBuf {
        let mut s = format!(
            "[defaults]\n{}groups = [\"dolphindb\"]\n",
            self.p.lab.defaults()
        );
        for (i, (h, ..)) in MACHINES.iter().enumerate() {
            s.push_str(&format!(
                "\n[hosts.{h}]\nport = {}\nvars = {{ {} }}\n",
                self.p.lab.ports[i],
                self.vars(h)
            ));
        }
        s.push_str(&self.secrets());
        self.p.scratch.write("lab.toml", &s)
    }
}

impl Drop for DdbLab {
    fn drop(&mut self) {
        lab_stop("dolphindb", &self.spec_file);
    }
}

/// A trace for comparing the lab with the simulation: the probe's writes left out (they run
/// on a clock of their own, between the playbook's actions), the write marker's value masked
/// (it counts those writes), and a poll's repeated lines (the same query with the same
/// answer) kept once: the lab's waits take as many polls as its clock needs.
fn comparable(r: &Value) -> BTreeMap<String, Vec<String>> {
    let mut t = mask_pids(trace(r));
    for lines in t.values_mut() {
        lines.retain(|l| !l.starts_with("[probe "));
        for l in lines.iter_mut() {
            if l.contains("exec sum(version) from") || l.contains("long(max(time))") {
                if let Some(at) = l.rfind("-> ok ") {
                    l.replace_range(at + 6.., "N");
                }
            }
        }
        collapse_repeats(lines);
    }
    t
}

/// What the probe reported in the run's log: (attempted, failed, ids consecutive, first id).
fn probe_report(r: &Value) -> (i64, i64, bool, i64) {
    let logs: Vec<&str> = r["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    // The probe names its table: the lab's, or the run's own (dfs://capstan_probe/probe).
    let prefix = logs
        .iter()
        .find(|l| l.starts_with("probe dfs://") && l.contains(" from id "))
        .and_then(|l| l.split_once(": "))
        .map(|(p, _)| format!("{p}: "))
        .unwrap_or_else(|| panic!("no probe in {logs:#?}"));
    let summary = logs
        .iter()
        .rfind(|l| l.starts_with(&prefix) && l.contains("writes attempted"))
        .unwrap_or_else(|| panic!("no probe report in {logs:#?}"));
    let started = logs
        .iter()
        .rfind(|l| l.starts_with(&prefix) && l.contains(" from id "))
        .unwrap();
    let num = |text: &str, after: &str| -> i64 {
        let at = text.find(after).unwrap() + after.len();
        text[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap()
    };
    (
        num(summary, &prefix),
        num(summary, "attempted, "),
        summary.ends_with("ids consecutive"),
        num(started, " from id "),
    )
}

/// The files of the metadata and the release on every machine, by path (what a rollback must
/// put back).
fn installed(lab: &DdbLab) -> BTreeMap<String, String> {
    let mut all = BTreeMap::new();
    for (h, c, _, n) in MACHINES {
        let s = lab.server(h);
        for d in [
            s.join(format!("clusterDemo/data/{n}/storage/CHUNK_METADATA")),
            s.join(format!("clusterDemo/data/{c}/dfsMeta")),
            s.join(format!("clusterDemo/data/{c}/raft")),
            s.join("web"),
        ] {
            collect(&d, &mut all);
        }
        for f in ["dolphindb", "libDolphinDB.so", "dolphindb.dos"] {
            let p = s.join(f);
            all.insert(
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            );
        }
    }
    all
}

#[test]
pub(crate) fn dolphindb_upgrades_on_the_lab_with_writes_throughout_and_the_simulation_acts_alike() {
    let lab = DdbLab::new(json!({}));
    let scenario = lab.scenario("");
    assert!(lab.versions().values().all(|v| v == FROM));

    // --check reads the real cluster and walks every step, changing nothing.
    let (out, check) = lab.run(&["--check"]);
    ok_run(&out, &check);
    assert!(check["actions"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["read_only"] == true || a["result"] == "skipped (check mode)"));
    assert!(lab.versions().values().all(|v| v == FROM));

    // The tutorial's own writer, with the vendor's Python API, writes through the whole
    // upgrade as the tutorial does it (an HA session over the data nodes' sites).
    let writer = SeedWriter::start(&lab);
    let (out, report) = lab.run(&[]);
    ok_run(&out, &report);
    writer.stop_and_check(&lab);
    assert!(
        lab.versions().values().all(|v| v == TO),
        "{:?}",
        lab.versions()
    );
    let order = step_names(&report);
    assert_eq!(
        order,
        [
            "precheck",
            "machine ddb1: 2.00.7.4 -> 2.00.8.12",
            "machine ddb2: 2.00.7.4 -> 2.00.8.12",
            "machine ddb3: 2.00.7.4 -> 2.00.8.12",
            "verify"
        ]
    );
    // The probe wrote throughout: no failed write, ids consecutive, and the table holds them.
    let (attempted, failed, consecutive, _) = probe_report(&report);
    assert_eq!((failed, consecutive), (0, true));
    let written = attempted;
    assert!(written >= 20, "{attempted} writes");
    let ids: Vec<i64> = lab.state()["tables"][TABLE]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(ids, (1..=written).collect::<Vec<_>>());
    // Every machine's nodes were down in its own step only, and every chunk kept a replica.
    for (h, c, _, _) in MACHINES {
        assert!(report["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["host"] == *h
                && a["step"] == format!("machine {h}: 2.00.7.4 -> 2.00.8.12")
                && a["description"]
                    .as_str()
                    .unwrap()
                    .contains("stopAllNodes.sh")));
        assert!(lab
            .server(h)
            .join(format!("clusterDemo/data/{c}/dfsMeta_capstan_bak"))
            .is_dir());
    }

    let sim = lab.assert_simulation_acts_alike(&scenario, &[], &report, comparable);
    // The simulation's timeline: each machine down in its step, no chunk without a replica.
    let text = serde_json::to_string(&sim["simulation"]).unwrap();
    assert!(!text.contains("no live replica"), "{text}");
    assert!(text.contains("dolphindb/datanode node44@ddb2"), "{text}");

    // A second run finds every node at 2.00.8.12 and changes nothing.
    let (out, again) = lab.run(&["-p", "probe_table="]);
    assert!(again["logs"]
        .to_string()
        .contains("write continuity was not checked: no machine was upgraded"));
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
fn chunks_stuck_recovering_stop_the_run_before_the_next_machine() {
    let lab = DdbLab::new(json!({}));
    // A chunk with a replica on node43 (ddb1's data node) never recovers once it restarts.
    let stuck = lab.state()["chunks"][0]["id"].as_str().unwrap().to_string();
    lab.knob("stuck_recovering", json!([stuck]));
    let params = lab.with(&["recovery_timeout=4"]);
    let inv = lab.inventory();
    let (out, report) = lab.p.shipped(
        "dolphindb",
        "run",
        &["-i", inv.to_str().unwrap(), "--yes"],
        &params,
        &[],
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(failed_step(&report), "machine ddb1: 2.00.7.4 -> 2.00.8.12");
    let err = outcome_error(&report);
    assert!(
        err.contains("still not COMPLETE after 4 s") && err.contains(&stuck),
        "{err}"
    );
    // Nothing touched the next machine.
    assert!(!report["actions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["step"].as_str().unwrap_or("").starts_with("machine ddb2")));
    assert!(lab.versions()["HActl44"] == FROM);
}

#[test]
fn upgrade_sh_failing_with_exit_0_is_caught() {
    let lab = DdbLab::new(json!({}));
    // ddb2's package is damaged: upgrade.sh prints UnzipFailure and exits 0.
    lab_py(
        "dolphindb",
        &["corrupt", lab.spec_file.to_str().unwrap(), "ddb2"],
    );
    let (out, report) = lab.run(&[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(failed_step(&report), "machine ddb2: 2.00.7.4 -> 2.00.8.12");
    let err = outcome_error(&report);
    assert!(
        err.contains("upgrade.sh failed (exit 0") && err.contains("UnzipFailure"),
        "{err}"
    );
    // The script's own exit status was 0: capstan went by its tokens.
    assert!(report["actions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["host"] == "ddb2"
            && a["description"].as_str().unwrap().contains("upgrade.sh")
            && a["result"] == "exit 0"));
    let v = lab.versions();
    assert_eq!(v["HActl43"], TO);
    assert_eq!(v["HActl44"], format!("down ({FROM})"));
}

#[test]
fn a_node_that_does_not_come_back_rolls_the_machine_back_on_the_lab_and_in_simulation() {
    let lab = DdbLab::new(json!({"no_return": {"node44": TO}}));
    let scenario = lab.scenario(&format!("no_return = {{ node44 = \"{TO}\" }}\n"));
    let before = installed(&lab);
    let params = lab.with(&["node_timeout=6"]);
    let (out, report) = run_with_rollback(&lab, &["node_timeout=6"]);
    assert_eq!(
        report["status"],
        "rolled_back",
        "{}",
        outcome_error(&report)
    );
    assert_eq!(out.code, 1);
    assert_eq!(failed_step(&report), "machine ddb2: 2.00.7.4 -> 2.00.8.12");
    assert!(
        outcome_error(&report).contains("node44"),
        "{}",
        outcome_error(&report)
    );
    // Metadata and release files are back as they were, on ddb2 and on ddb1 (level 5 rolls
    // back unconditionally), and every node runs the old version again.
    assert_eq!(installed(&lab), before);
    assert!(
        lab.versions().values().all(|v| v == FROM),
        "{:?}",
        lab.versions()
    );
    let path = undo_path(&report);
    assert!(path.iter().all(|u| u.contains(" \"done\" ")), "{path:#?}");

    let (_, sim) = lab.p.shipped(
        "dolphindb",
        "simulate",
        &[
            "--scenario",
            scenario.to_str().unwrap(),
            "--on-failure",
            "rollback",
        ],
        &params,
        &[],
    );
    assert_eq!(sim["status"], "rolled_back", "{}", outcome_error(&sim));
    compare(&comparable(&report), &comparable(&sim));
    assert_eq!(undo_path(&report), undo_path(&sim));
}

/// Asserts from the trace that no other machine was stopped while chunks could still be
/// recovering: after each `startDataNode` of a machine's data nodes, a chunk-status query that
/// found nothing but COMPLETE chunks comes before any other machine's `stopAllNodes.sh` (the
/// machine whose nodes were started may be stopped again: the way back of a failed step).
fn no_stop_while_recovering(r: &Value) {
    let machine_of = |d: &str| {
        MACHINES
            .iter()
            .find(|m| d.contains(&format!("\"{}\"", m.3)))
            .map(|m| m.0.to_string())
    };
    let mut pending: Option<(String, String)> = None;
    for a in r["actions"].as_array().unwrap() {
        let d = a["description"].as_str().unwrap();
        let step = a["step"].as_str().unwrap_or("-");
        if d.contains("startDataNode(") {
            pending = machine_of(d).map(|m| (m, format!("{step}: {d}")));
        } else if d.contains("getClusterChunksStatus) where state != \"COMPLETE\"")
            && a["result"] == "0 rows"
        {
            pending = None;
        } else if d.contains("sh stopAllNodes.sh") {
            if let Some((m, what)) = &pending {
                assert!(
                    a["host"] == m.as_str(),
                    "{} was stopped ({step}) while chunks could still recover after {what}",
                    a["host"]
                );
            }
        }
    }
}

/// The shipped playbook without the wait for COMPLETE chunks after a machine and without the
/// check before a machine goes down: what the vendor's rule forbids.
fn without_recovery_wait() -> String {
    let text = std::fs::read_to_string(repo().join("playbooks/dolphindb.rhai")).unwrap();
    let edited = text
        .replacen(
            "        dolphindb::wait_chunks_complete(d, p.recovery_timeout);\n",
            "",
            1,
        )
        .replacen("        dolphindb::assert_chunks_complete(d);\n", "", 1);
    assert_ne!(edited, text);
    edited
}

fn simulate_example(extra: &[&str]) -> Value {
    let sc = repo().join("examples/dolphindb/scenario.toml");
    let pb = repo().join("playbooks/dolphindb.rhai");
    let mut a = vec![
        "simulate",
        pb.to_str().unwrap(),
        "--scenario",
        sc.to_str().unwrap(),
        "--json",
    ];
    a.extend_from_slice(extra);
    last_report(&capstan(&a).stdout)
}

#[test]
fn the_way_back_follows_the_compatibility_level_in_simulation() {
    // Level 4: the probe writes throughout, so no machine may go back; the rollback says so
    // before it stops any node, and every undo stays pending.
    let r = simulate_example(&[
        "-p",
        "compatibility_level=4",
        "--fail",
        "ddb3:*upgrade.sh*",
        "--on-failure",
        "rollback",
    ]);
    assert_eq!(r["status"], "rollback_incomplete", "{}", outcome_error(&r));
    let undos = r["undos"].as_array().unwrap();
    let gates: Vec<&Value> = undos
        .iter()
        .filter(|u| {
            u["description"]
                .as_str()
                .unwrap()
                .starts_with("rollback gate: ")
        })
        .collect();
    assert_eq!(gates.len(), 3, "{undos:?}");
    for g in &gates {
        assert_eq!(g["status"], "failed", "{g}");
        assert!(
            g["error"]
                .as_str()
                .unwrap()
                .contains("level 4 allows no rollback after writes"),
            "{g}"
        );
    }
    assert!(undos
        .iter()
        .filter(|u| !u["description"]
            .as_str()
            .unwrap()
            .starts_with("rollback gate: "))
        .all(|u| u["status"] == "pending"));
    assert!(!r["actions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["step"].as_str().unwrap_or("").starts_with("undo #")));
    assert!(r["logs"]
        .to_string()
        .contains("rollback refused before any undo ran"));

    // Level 5: binaries only, machine by machine, each back and COMPLETE before the next; the
    // metadata backups are not put back (the writes made since stay).
    let r = simulate_example(&["--fail", "ddb3:*upgrade.sh*", "--on-failure", "rollback"]);
    assert_eq!(r["status"], "rolled_back", "{}", outcome_error(&r));
    let restored: Vec<&str> = r["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["op"] == "restore_snapshot")
        .map(|a| a["description"].as_str().unwrap())
        .collect();
    assert!(
        !restored
            .iter()
            .any(|d| d.contains("CHUNK_METADATA") || d.contains("dfsMeta") || d.contains("raft")),
        "{restored:?}"
    );
    assert!(
        restored.iter().any(|d| d.contains("server_capstan_old")),
        "{restored:?}"
    );
    no_stop_while_recovering(&r);
    assert!(violations(&r).is_empty(), "{:?}", violations(&r));
    // A level that does not roll is refused before anything changes.
    let r = simulate_example(&["-p", "compatibility_level=3"]);
    assert_eq!(failed_step(&r), "precheck");
    assert!(outcome_error(&r).contains("compatibility level 3 does not allow a rolling upgrade"));
}

#[test]
fn the_availability_rule_bites_when_the_recovery_wait_is_removed_in_simulation() {
    // A copy of the playbook without the wait for COMPLETE chunks (and without the check
    // before a machine goes down): the next machine stops while the last one's replicas are
    // still RECOVERING, and the simulation reports chunks with no live COMPLETE replica.
    let edited = without_recovery_wait();
    let dir = tempfile::tempdir().unwrap();
    let pb = dir.path().join("dolphindb.rhai");
    std::fs::write(&pb, edited).unwrap();
    let sc = repo().join("examples/dolphindb/scenario.toml");
    let out = capstan(&[
        "simulate",
        pb.to_str().unwrap(),
        "--scenario",
        sc.to_str().unwrap(),
        "--json",
    ]);
    let r = last_report(&out.stdout);
    let v = violations(&r);
    assert!(
        v.iter().any(|x| x.contains("no live COMPLETE replica")),
        "{v:?} {}",
        outcome_error(&r)
    );
    // The shipped playbook keeps the rule.
    let r = simulate_example(&[]);
    assert_eq!(r["status"], "succeeded", "{}", outcome_error(&r));
    assert!(violations(&r).is_empty(), "{:?}", violations(&r));
    no_stop_while_recovering(&r);
}

#[test]
fn a_plugin_that_does_not_fit_stops_the_run_or_is_replaced_and_put_back_in_simulation() {
    let old = r#""/home/dolphindb/server/plugins/odbc/PluginODBC.txt" = "odbc,libPluginODBC.so,2.00.7\n", "/home/dolphindb/plugins-2.00.8/odbc/PluginODBC.txt" = "odbc,libPluginODBC.so,2.00.8\n", "/home/dolphindb/server/clusterDemo/DolphinDB_Linux64_V2.00.8.12.zip""#;
    let edit = (
        "\"/home/dolphindb/server/clusterDemo/DolphinDB_Linux64_V2.00.8.12.zip\"",
        old,
    );
    let r = simulate_edited_example("dolphindb", "scenario.toml", edit, &[]);
    assert_eq!(failed_step(&r), "precheck");
    let e = outcome_error(&r);
    assert!(
        e.contains("ddb1: the plugin odbc has version 2.00.7 (")
            && e.contains("does not fit 2.00.8.12")
            && e.contains("plugins_dir"),
        "{e}"
    );
    assert!(!r["actions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["read_only"] == false));
    // With the new release's plugins: replaced after a snapshot, and put back by the undo.
    let r = simulate_edited_example(
        "dolphindb",
        "scenario.toml",
        edit,
        &["-p", "plugins_dir=/home/dolphindb/plugins-2.00.8"],
    );
    assert_eq!(r["status"], "succeeded", "{}", outcome_error(&r));
    assert!(r["logs"]
        .to_string()
        .contains("ddb1: plugin odbc 2.00.7 replaced from /home/dolphindb/plugins-2.00.8/odbc"));
    assert!(r["undos"]
        .as_array()
        .unwrap()
        .iter()
        .any(|u| u["description"].as_str().unwrap().contains("plugins/odbc")));
}

#[test]
fn kill_9_in_the_middle_of_a_machine_then_resume_completes() {
    let lab = DdbLab::new(json!({}));
    let inv = lab.inventory();
    // No probe_table: the default write probe, on a table of its own the run creates.
    let params = lab.with(&["probe_table="]);
    let run_id = kill_9_at(
        &lab.p,
        "dolphindb",
        &inv,
        &params,
        ("machine ddb2: 2.00.7.4 -> 2.00.8.12", "upgrade.sh"),
    );
    // ddb2 is down mid-upgrade; the others serve.
    let v = lab.versions();
    assert_eq!(v["HActl43"], TO);
    assert!(v["node44"].starts_with("down"), "{v:?}");
    let report = resume_skipping(
        &lab.p,
        &run_id,
        &["precheck", "machine ddb1: 2.00.7.4 -> 2.00.8.12"],
    );
    assert!(
        lab.versions().values().all(|v| v == TO),
        "{:?}",
        lab.versions()
    );
    // The resumed probe continued the id sequence where the store left it.
    let (_, failed, consecutive, first_id) = probe_report(&report);
    assert_eq!((failed, consecutive), (0, true));
    assert!(
        first_id > 1,
        "the resumed probe started again at id {first_id}"
    );
    // Its own table was checked (the newest row current) and its database dropped at the end.
    assert!(report["logs"].to_string().contains("write continuity: "));
    let st = lab.state();
    assert!(
        !st["tables"]
            .as_object()
            .unwrap()
            .keys()
            .any(|k| k.starts_with("dfs://capstan_probe/")),
        "{}",
        st["tables"]
    );
}

/// The vendor's tutorial writer (lab/dolphindb/seed_writer.py) on the vendor's `dolphindb`
/// Python package, installed by scripts/test.sh into target/vendor-clients.
struct SeedWriter {
    child: std::process::Child,
    stop: PathBuf,
    out: PathBuf,
}

impl SeedWriter {
    fn start(lab: &DdbLab) -> SeedWriter {
        let python = repo().join("target/vendor-clients/bin/python");
        assert!(
            python.exists(),
            "{} is missing: scripts/test.sh installs the vendors' Python clients there",
            python.display()
        );
        let sites: Vec<String> = MACHINES
            .iter()
            .map(|m| format!("127.0.0.1:{}", lab.ports[m.3]))
            .collect();
        let stop = lab.dir().join("seed-writer.stop");
        let out = lab.dir().join("seed-writer.out");
        let child = std::process::Command::new(python)
            .arg(repo().join("lab/dolphindb/seed_writer.py"))
            .args([&sites.join(","), "dfs://stock", "seed"])
            .arg(&stop)
            .arg("0.2")
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(lab.dir().join("seed-writer.err")).unwrap())
            .spawn()
            .unwrap();
        // It is writing before the upgrade starts.
        let t0 = std::time::Instant::now();
        while std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .count()
            < 3
        {
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(60),
                "the seed writer did not start: {}",
                std::fs::read_to_string(lab.dir().join("seed-writer.err")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        SeedWriter { child, stop, out }
    }

    /// Stops the writer and checks as the tutorial does: the ids in the table are consecutive
    /// (none lost, none twice) and the latest time written is current.
    fn stop_and_check(mut self, lab: &DdbLab) {
        std::fs::write(&self.stop, "").unwrap();
        let status = self.child.wait().unwrap();
        let text = std::fs::read_to_string(&self.out).unwrap();
        let err = std::fs::read_to_string(lab.dir().join("seed-writer.err")).unwrap_or_default();
        assert!(status.success(), "the seed writer failed: {err}\n{text}");
        let done: Vec<i64> = text
            .lines()
            .find_map(|l| l.strip_prefix("done "))
            .unwrap_or_else(|| panic!("no summary: {text}\n{err}"))
            .split(' ')
            .map(|x| x.parse().unwrap())
            .collect();
        let (last, now_ms) = (done[0], done[1]);
        let st = lab.state();
        let ids: Vec<i64> = st["tables"][SEED_TABLE]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        assert!(last > 10, "only {last} rows written");
        assert_eq!(ids, (1..=last).collect::<Vec<_>>(), "ids not consecutive");
        let latest = st["times"][SEED_TABLE]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .max()
            .unwrap();
        assert!(
            (now_ms - latest).abs() < 5_000,
            "the latest time written ({latest}) is not current ({now_ms})"
        );
    }
}

/// The ids the probe's rows hold in the lab's table now.
fn table_ids(lab: &DdbLab) -> Vec<i64> {
    lab.state()["tables"][TABLE]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect()
}

/// The release files of every machine (binaries, web, plugins): what a binaries-only rollback
/// puts back.
fn release_files(lab: &DdbLab) -> BTreeMap<String, String> {
    installed(lab)
        .into_iter()
        .filter(|(p, _)| !p.contains("/clusterDemo/data/"))
        .collect()
}

fn run_with_rollback(lab: &DdbLab, extra: &[&str]) -> (Out, Value) {
    let params = lab.with(extra);
    let inv = lab.inventory();
    lab.p.shipped(
        "dolphindb",
        "run",
        &[
            "-i",
            inv.to_str().unwrap(),
            "--yes",
            "--on-failure",
            "rollback",
        ],
        &params,
        &[],
    )
}

#[test]
fn a_failure_on_the_third_machine_rolls_back_binaries_only_at_level_5_on_the_lab() {
    // node45 (the third machine) does not come back with the new version. ddb1 has a plugin
    // of the old release, replaced from the new release's plugins during its step.
    let lab = DdbLab::new(json!({"no_return": {"node45": TO}, "recovery_per_write": 0.02}));
    let plugins = lab.server("ddb1").join("plugins");
    lab_py(
        "dolphindb",
        &["plugin", plugins.to_str().unwrap(), "odbc", "2.00.7"],
    );
    let fresh = lab.dir().join("plugins-2.00.8");
    lab_py(
        "dolphindb",
        &["plugin", fresh.to_str().unwrap(), "odbc", "2.00.8"],
    );
    let plugin = plugins.join("odbc/PluginOdbc.txt");
    let before = release_files(&lab);
    let (out, report) = run_with_rollback(
        &lab,
        &[
            "node_timeout=6",
            &format!("plugins_dir={}", lab.dir().join("plugins-2.00.8").display()),
        ],
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(
        report["status"],
        "rolled_back",
        "{}",
        outcome_error(&report)
    );
    assert_eq!(failed_step(&report), "machine ddb3: 2.00.7.4 -> 2.00.8.12");
    assert!(report["logs"]
        .to_string()
        .contains("ddb1: plugin odbc 2.00.7 replaced from"));
    // Binaries only: the old release's files (the plugin too) are back, no metadata snapshot
    // was put back over what was written since, every node runs the old version, and every
    // row the probe wrote during the upgrade is still there.
    assert_eq!(release_files(&lab), before);
    assert_eq!(
        std::fs::read_to_string(&plugin).unwrap(),
        "odbc,libPluginOdbc.so,2.00.7\n"
    );
    assert!(!report["actions"].as_array().unwrap().iter().any(|a| {
        a["op"] == "restore_snapshot" && {
            let d = a["description"].as_str().unwrap();
            d.contains("CHUNK_METADATA") || d.contains("dfsMeta") || d.contains("/raft")
        }
    }));
    assert!(
        lab.versions().values().all(|v| v == FROM),
        "{:?}",
        lab.versions()
    );
    let (attempted, failed, consecutive, _) = probe_report(&report);
    assert!(
        attempted > 0 && failed == 0 && consecutive,
        "{attempted} {failed}"
    );
    let ids = table_ids(&lab);
    assert_eq!(ids, (1..=ids.len() as i64).collect::<Vec<_>>());
    assert!(ids.len() as i64 >= attempted);
    // Machine by machine on the way back too: none went down while chunks recovered.
    no_stop_while_recovering(&report);
}

#[test]
fn at_level_4_a_rollback_after_writes_is_refused_before_any_node_stops_on_the_lab() {
    let lab = DdbLab::new(json!({"no_return": {"node45": TO}}));
    let (out, report) = run_with_rollback(&lab, &["node_timeout=6", "compatibility_level=4"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    // No node was stopped or started by a rollback: the upgraded machines keep serving.
    assert_rollback_refused(
        &report,
        "machine ddb3: 2.00.7.4 -> 2.00.8.12",
        &["level 4 allows no rollback after writes"],
    );
    let v = lab.versions();
    for n in [
        "HActl43", "agent43", "node43", "HActl44", "agent44", "node44",
    ] {
        assert_eq!(v[n], TO, "{v:?}");
    }
    no_stop_while_recovering(&report);
}

#[test]
fn without_the_recovery_wait_the_next_machine_stops_while_chunks_recover_and_writes_fail_on_the_lab(
) {
    // A copy of the playbook without the wait for COMPLETE chunks and without the check before a
    // machine goes down: the double's replicas that restarted serve only once recovered, so the
    // next machine's stop leaves chunks with no live replica, and the probe's writes fail.
    let lab = DdbLab::new(json!({"recovery_per_write": 0.05}));
    let edited = without_recovery_wait();
    let pb = lab.p.scratch.write("dolphindb-no-wait.rhai", &edited);
    let inv = lab.inventory();
    let mut args = vec![
        "run".to_string(),
        pb.display().to_string(),
        "-i".into(),
        inv.display().to_string(),
        "--yes".into(),
        "--json".into(),
    ];
    args.extend(lab.params());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = lab.p.scratch.capstan(&argv);
    let report = last_report(&out.stdout);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(failed_step(&report), "verify", "{}", outcome_error(&report));
    let (_, failed, _, _) = probe_report(&report);
    assert!(failed > 0, "no write failed: {}", outcome_error(&report));
    assert!(
        report.to_string().contains("has no available replica"),
        "{}",
        outcome_error(&report)
    );
}
