//! The trace parity harness: a playbook run on the lab's real SSH hosts and simulated from the same
//! starting state must act alike: the same actions on each host, in the same order, with the same
//! outcomes, the same branches, and, after a failure, the same rollback path. Product issues use
//! it for their playbooks (`Parity::new`, `scenario_of`, `compare`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::*;

/// A product's lab (its double on the sshd hosts) that runs and simulates its shipped playbook.
pub trait ProductLab {
    fn parity(&self) -> &Parity;
    /// The shipped playbook's name.
    fn playbook(&self) -> &'static str;
    /// `-p NAME=VALUE` pairs for this lab.
    fn params(&self) -> Vec<String>;
    /// The lab's inventory file.
    fn inventory(&self) -> PathBuf;

    /// `capstan run` on the lab, with `extra` arguments: the output and the report.
    fn run(&self, extra: &[&str]) -> (Out, Value) {
        let inv = self.inventory();
        self.parity().shipped(
            self.playbook(),
            "run",
            &["-i", inv.to_str().unwrap(), "--yes"],
            &self.params(),
            extra,
        )
    }

    /// Simulates `scenario` with the lab's params and `extra`, asserts that it succeeded, and
    /// compares its trace with the lab run's `report`, both seen through `view` (the product's
    /// comparable trace). Returns the simulation's report.
    fn assert_simulation_acts_alike(
        &self,
        scenario: &Path,
        extra: &[&str],
        report: &Value,
        view: fn(&Value) -> BTreeMap<String, Vec<String>>,
    ) -> Value {
        let sim = self.simulate(scenario, extra);
        assert_eq!(
            sim["outcome"]["status"],
            "succeeded",
            "{}",
            outcome_error(&sim)
        );
        compare(&view(report), &view(&sim));
        sim
    }

    /// `capstan simulate` of `scenario`, with the lab's params and `extra`: the report.
    fn simulate(&self, scenario: &Path, extra: &[&str]) -> Value {
        self.parity()
            .shipped(
                self.playbook(),
                "simulate",
                &["--scenario", scenario.to_str().unwrap()],
                &self.params(),
                extra,
            )
            .1
    }
}

/// Hosts on the lab's sshd instances, each with its own directory tree under a scratch dir.
pub struct Parity {
    pub scratch: Scratch,
    pub lab: Lab,
    pub hosts: Vec<String>,
}

impl Parity {
    pub fn new(hosts: &[&str]) -> Parity {
        Parity {
            scratch: Scratch::new(false, ""),
            lab: Lab::start(hosts.len()),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
        }
    }

    pub fn dir(&self) -> &Path {
        self.scratch.dir.path()
    }

    /// `capstan VERB playbooks/PLAYBOOK.rhai HOW.. --json PARAMS.. EXTRA..` in the scratch dir:
    /// the output and the final report.
    pub fn shipped(
        &self,
        playbook: &str,
        verb: &str,
        how: &[&str],
        params: &[String],
        extra: &[&str],
    ) -> (Out, Value) {
        let pb = repo().join(format!("playbooks/{playbook}.rhai"));
        let mut a: Vec<&str> = vec![verb, pb.to_str().unwrap()];
        a.extend_from_slice(how);
        a.push("--json");
        a.extend(params.iter().map(String::as_str));
        a.extend_from_slice(extra);
        let out = self.scratch.capstan(&a);
        let report = last_report(&out.stdout);
        (out, report)
    }

    /// The lab inventory: host `name` on sshd `i`, with `vars` (TOML inline table body) and groups.
    pub fn inventory(&self, groups: &str, vars: impl Fn(&str) -> String) -> PathBuf {
        let mut s = format!("[defaults]\n{}groups = [{groups}]\n", self.lab.defaults());
        for (i, h) in self.hosts.iter().enumerate() {
            s.push_str(&format!(
                "\n[hosts.{h}]\nport = {}\nvars = {{ {} }}\n",
                self.lab.ports[i],
                vars(h)
            ));
        }
        self.scratch.write("lab.toml", &s)
    }

    /// A scenario whose world is what the lab hosts have now: the same inventory (hosts at
    /// addresses that are never used), every file under `trees` on every host, `ports` open on
    /// every host, and `extra`.
    pub fn scenario_of(
        &self,
        groups: &str,
        vars: impl Fn(&str) -> String,
        trees: &[&Path],
        ports: &[u16],
        extra: &str,
    ) -> PathBuf {
        let body = files_body(trees);
        let mut s = format!("[inventory.defaults]\ntransport = \"ssh\"\ngroups = [{groups}]\n");
        for (i, h) in self.hosts.iter().enumerate() {
            s.push_str(&format!(
                "\n[inventory.hosts.{h}]\naddress = \"10.99.0.{}\"\nvars = {{ {} }}\n",
                i + 1,
                vars(h)
            ));
        }
        for h in &self.hosts {
            s.push_str(&format!(
                "\n[hosts.{h}]\nports = [{}]\nfiles = {{ {} }}\n",
                ports
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                body
            ));
        }
        s.push_str(extra);
        self.scratch.write("parity.toml", &s)
    }
}

pub fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// The body of a scenario host's `files = { .. }`: every file under `trees`, by path, with its text.
pub fn files_body<P: AsRef<Path>>(trees: &[P]) -> String {
    let mut files = BTreeMap::new();
    for t in trees {
        collect(t.as_ref(), &mut files);
    }
    files
        .iter()
        .map(|(p, c)| format!("{} = {}", toml_str(p), toml_str(c)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every file under `dir`, by path, with its text.
pub fn collect(dir: &Path, out: &mut BTreeMap<String, String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            collect(&p, out);
        } else {
            out.insert(
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap_or_default(),
            );
        }
    }
}

/// A report's actions per host, in order, as comparable lines: step, operation, what it did,
/// whether it succeeded and what it answered. Run ids in kept copies' names and the values that
/// depend on the machine (free space, disk usage) are masked.
pub fn trace(report: &Value) -> BTreeMap<String, Vec<String>> {
    let run = report["run_id"].as_str().unwrap_or_default().to_string();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for a in report["actions"].as_array().unwrap() {
        let op = a["op"].as_str().unwrap();
        let mask = |s: &str| s.replace(&run, "RUN");
        let result = match op {
            "free_space" | "disk_usage" => "N".to_string(),
            _ => mask(a["result"].as_str().unwrap_or_default()),
        };
        out.entry(a["host"].as_str().unwrap().to_string())
            .or_default()
            .push(format!(
                "[{}] {op}: {} -> {} {}",
                mask(a["step"].as_str().unwrap_or("-")),
                mask(a["description"].as_str().unwrap()),
                if a["ok"].as_bool().unwrap() {
                    "ok"
                } else {
                    "FAILED"
                },
                result
            ));
    }
    out
}

/// A trace with the pids masked (and pid files' sizes, which are their pids' lengths): a process
/// started during a run has the pid its machine gave it, in the lab and in the simulation alike.
pub fn mask_pids(mut t: BTreeMap<String, Vec<String>>) -> BTreeMap<String, Vec<String>> {
    for lines in t.values_mut() {
        for l in lines.iter_mut() {
            for marker in ["\" sh ", "kill -9 "] {
                if let Some(at) = l.find(marker) {
                    let start = at + marker.len();
                    let end = l[start..]
                        .find(|c: char| !c.is_ascii_digit())
                        .map_or(l.len(), |e| start + e);
                    l.replace_range(start..end, "PID");
                }
            }
            if l.contains(".pid -> ok ") && l.ends_with(" bytes") {
                let at = l.rfind(".pid -> ok ").unwrap() + 11;
                l.replace_range(at.., "N bytes");
            }
        }
    }
    t
}

/// The name of the step a report says failed ("" when none did).
/// Asserts that the run failed in `step` and that its rollback was refused up front by its
/// rollback gates, naming each of `reasons`: the run is `rollback_incomplete` and no undo ran.
pub fn assert_rollback_refused(r: &Value, step: &str, reasons: &[&str]) {
    assert_eq!(r["status"], "rollback_incomplete", "{}", r["outcome"]);
    assert_eq!(failed_step(r), step);
    let logs = r["logs"].to_string();
    assert!(
        logs.contains("rollback refused before any undo ran"),
        "{logs}"
    );
    for why in reasons {
        assert!(logs.contains(why), "no {why:?} in {logs}");
    }
    assert!(
        !r["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["step"].as_str().unwrap_or("").starts_with("undo #")),
        "an undo ran"
    );
}

pub fn failed_step(r: &Value) -> String {
    r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["status"] == "failed")
        .map(|s| s["name"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

/// `capstan run playbooks/PLAYBOOK.rhai -i INV --json --yes PARAMS..`, killed with SIGKILL at
/// its first action in step `step` whose description contains `action` (two minutes at most).
/// Returns the run's id.
pub fn kill_9_at(
    p: &Parity,
    playbook: &str,
    inv: &Path,
    params: &[String],
    (step, action): (&str, &str),
) -> String {
    use std::io::BufRead;
    let pb = repo().join(format!("playbooks/{playbook}.rhai"));
    let mut cmd = p.scratch.cmd(&[
        "run",
        pb.to_str().unwrap(),
        "-i",
        inv.to_str().unwrap(),
        "--json",
        "--yes",
    ]);
    cmd.args(params)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut run_id = String::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    for line in std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
    {
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if v["event"] == "run_started" {
            run_id = v["run_id"].as_str().unwrap().to_string();
        }
        if v["event"] == "action"
            && v["step"] == step
            && v["description"]
                .as_str()
                .is_some_and(|d| d.contains(action))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "`{action}` in `{step}` never came"
        );
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!run_id.is_empty(), "the run never started");
    run_id
}

/// `capstan resume RUN` in `p`'s scratch dir: it must succeed, and run no action in the steps
/// `done` (finished before the kill). Returns the report.
pub fn resume_skipping(p: &Parity, run_id: &str, done: &[&str]) -> Value {
    let out = p.scratch.capstan(&["resume", run_id, "--json", "--yes"]);
    let report = last_report(&out.stdout);
    ok_run(&out, &report);
    for a in report["actions"].as_array().unwrap() {
        if a["attempt"] == 2 {
            assert!(
                !done.iter().any(|d| a["step"] == *d),
                "`{}` was done before the kill and ran again",
                a["step"]
            );
        }
    }
    report
}

/// Stops a product double (`lab/PRODUCT/lab.py stop SPEC`), quietly: what a lab's `Drop` does.
pub fn lab_stop(product: &str, spec: &Path) {
    let _ = std::process::Command::new("python3")
        .arg(repo().join(format!("lab/{product}/lab.py")))
        .arg("stop")
        .arg(spec)
        .stdin(std::process::Stdio::null())
        .output();
}

/// `python3 lab/PRODUCT/lab.py ARGS..` (a product double's set-up script): its stdout, or a
/// panic with what it printed.
pub fn lab_py(product: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("python3")
        .arg(repo().join(format!("lab/{product}/lab.py")))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("python3 is missing: run scripts/test.sh");
    assert!(
        out.status.success(),
        "lab/{product}/lab.py {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Keeps one of each run of a repeated block of lines (a poll is a few actions: connect, ask
/// the leader, query), for blocks of up to 8 lines.
pub fn collapse_repeats(lines: &mut Vec<String>) {
    let mut changed = true;
    while changed {
        changed = false;
        for k in 1..=8 {
            let mut i = 0;
            while i + 2 * k <= lines.len() {
                if lines[i..i + k] == lines[i + k..i + 2 * k] {
                    lines.drain(i + k..i + 2 * k);
                    changed = true;
                } else {
                    i += 1;
                }
            }
        }
    }
}

/// Panics with the first difference, host by host.
pub fn compare(lab: &BTreeMap<String, Vec<String>>, sim: &BTreeMap<String, Vec<String>>) {
    assert_eq!(
        lab.keys().collect::<Vec<_>>(),
        sim.keys().collect::<Vec<_>>(),
        "different hosts acted on"
    );
    for (host, l) in lab {
        let s = &sim[host];
        for (i, (a, b)) in l.iter().zip(s).enumerate() {
            assert_eq!(a, b, "{host}: action {i} differs (lab, then simulation)");
        }
        assert_eq!(
            l.len(),
            s.len(),
            "{host}: the lab made {} actions, the simulation {}:\nlab: {:#?}\nsim: {:#?}",
            l.len(),
            s.len(),
            &l[s.len().min(l.len())..],
            &s[s.len().min(l.len())..]
        );
    }
}

/// The hello example, laid out by its own lab.sh under the scratch dir, with app3 already at
/// 1.1.0 (the playbook must skip it, on the lab and in the simulation).
fn hello_lab(p: &Parity) -> PathBuf {
    let root = p.dir().join("hello");
    let out = std::process::Command::new(repo().join("examples/hello/lab.sh"))
        .arg(&root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let app3 = root.join("app3");
    std::fs::write(app3.join("VERSION"), "1.1.0\n").unwrap();
    std::fs::write(app3.join("bin/VERSION"), "1.1.0\n").unwrap();
    // The apps run before the upgrade (the simulation's hello model: port 8080 open).
    for h in ["app1", "app2", "app3"] {
        let ctl = root.join(h).join("bin/app-ctl");
        assert!(std::process::Command::new(ctl)
            .arg("start")
            .status()
            .unwrap()
            .success());
    }
    root
}

fn hello_scenario(p: &Parity, root: &Path) -> PathBuf {
    let vars = |h: &str| format!("root = {}", toml_str(&root.join(h).display().to_string()));
    let trees: Vec<PathBuf> = ["app1", "app2", "app3", "release"]
        .iter()
        .map(|d| root.join(d))
        .collect();
    let trees: Vec<&Path> = trees.iter().map(PathBuf::as_path).collect();
    p.scenario_of(
        "\"app\"",
        vars,
        &trees,
        &[8080],
        "\n[[products]]\nmodel = \"hello\"\ngroup = \"app\"\n",
    )
}

fn run_both(p: &Parity, root: &Path, lab_args: &[&str], sim_args: &[&str]) -> (Value, Value) {
    let vars = |h: &str| format!("root = {}", toml_str(&root.join(h).display().to_string()));
    let inv = p.inventory("\"app\"", vars);
    let scenario = hello_scenario(p, root);
    let pb = repo().join("examples/hello/playbook.rhai");
    let release = format!("release={}", root.join("release").display());
    let mut a = vec![
        "run",
        pb.to_str().unwrap(),
        "-i",
        inv.to_str().unwrap(),
        "-p",
        &release,
        "--json",
        "--yes",
    ];
    a.extend_from_slice(lab_args);
    let lab = p.scratch.capstan(&a);
    let lab_report = last_report(&lab.stdout);
    let mut a = vec![
        "simulate",
        pb.to_str().unwrap(),
        "--scenario",
        scenario.to_str().unwrap(),
        "-p",
        &release,
        "--json",
    ];
    a.extend_from_slice(sim_args);
    let sim = p.scratch.capstan(&a);
    let sim_report = last_report(&sim.stdout);
    (lab_report, sim_report)
}

#[test]
fn the_readme_example_acts_alike_on_the_lab_and_in_simulation() {
    let p = Parity::new(&["app1", "app2", "app3"]);
    let root = hello_lab(&p);
    let (lab, sim) = run_both(&p, &root, &[], &[]);
    assert_eq!(
        lab["outcome"]["status"],
        "succeeded",
        "{}",
        outcome_error(&lab)
    );
    assert_eq!(
        sim["outcome"]["status"],
        "succeeded",
        "{}",
        outcome_error(&sim)
    );
    let (l, s) = (trace(&lab), trace(&sim));
    compare(&l, &s);
    // The branch on what the host answered: app3, already at 1.1.0, is only read.
    assert!(
        l["app3"].iter().all(|a| !a.contains("upgrade")),
        "{:#?}",
        l["app3"]
    );
    let skipped = |r: &Value| {
        r["steps"].as_array().unwrap().iter().any(|x| {
            x["name"] == "app3: upgrade to 1.1.0"
                && x["status"] == "skipped"
                && x["reason"] == "already at 1.1.0"
        })
    };
    assert!(skipped(&lab) && skipped(&sim));
}

#[test]
fn a_failure_rolls_back_the_same_way_on_the_lab_and_in_simulation() {
    let p = Parity::new(&["app1", "app2", "app3"]);
    let root = hello_lab(&p);
    // On the lab, the new app-ctl really fails to start on app2 (and only there).
    let ctl = root.join("release/bin/app-ctl");
    let script = std::fs::read_to_string(&ctl).unwrap().replace(
        "  start) date",
        "  start) case \"$here\" in */app2) echo 'simulated failure' >&2; exit 1 ;; esac; date",
    );
    std::fs::write(&ctl, script).unwrap();
    let before = std::fs::read_to_string(root.join("app2/VERSION")).unwrap();
    let (lab, sim) = run_both(
        &p,
        &root,
        &["--on-failure", "rollback"],
        &["--fail", "app2:app-ctl start", "--on-failure", "rollback"],
    );
    assert_eq!(lab["status"], "rolled_back", "{}", outcome_error(&lab));
    assert_eq!(sim["status"], "rolled_back", "{}", outcome_error(&sim));
    compare(&trace(&lab), &trace(&sim));
    // The printed rollback paths are the same: the undos, newest first, and what became of them.
    let undos = |r: &Value| -> Vec<String> {
        r["undos"]
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .map(|u| format!("#{} {} {}", u["id"], u["status"], u["description"]))
            .collect()
    };
    assert_eq!(undos(&lab), undos(&sim));
    assert_eq!(
        std::fs::read_to_string(root.join("app2/VERSION")).unwrap(),
        before
    );
    assert_eq!(
        sim["simulation"]["changed_after_rollback"],
        serde_json::json!([])
    );
}

/// The undos of a report, newest first as a rollback runs them: `#ID STATUS DESCRIPTION`, the
/// run id masked (the lab's run and the simulation's have their own).
pub fn undo_path(r: &Value) -> Vec<String> {
    let run = r["run_id"].as_str().unwrap_or("\u{0}");
    r["undos"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|u| format!("#{} {} {}", u["id"], u["status"], u["description"]).replace(run, "RUN"))
        .collect()
}
