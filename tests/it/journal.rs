//! Steps that survive: kill -9 and resume, rollback on failure and after a kill, guards, the run
//! lock, and secrets kept out of every output — against real sshd hosts, through the binary.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

/// Three lab hosts h1..h3, each with its own `root` directory under a scratch dir.
pub(crate) struct Cluster {
    pub(crate) lab: Lab,
    pub(crate) dir: tempfile::TempDir,
    /// A journal server's address (`mysql://..`) to use instead of the file `journal()`.
    pub(crate) server_journal: Option<String>,
}

impl Cluster {
    pub(crate) fn new() -> Cluster {
        Cluster {
            lab: Lab::start(3),
            dir: tempfile::tempdir().unwrap(),
            server_journal: None,
        }
    }

    pub(crate) fn root(&self, host: &str) -> PathBuf {
        self.dir.path().join(host)
    }

    /// Writes `inv.toml` for `hosts` (names h1..h3) with `extra` appended; returns its path.
    pub(crate) fn inventory(&self, name: &str, hosts: &[usize], extra: &str) -> PathBuf {
        let mut s = format!("[defaults]\n{}", self.lab.defaults());
        for &i in hosts {
            let root = self.root(&format!("h{i}"));
            std::fs::create_dir_all(&root).unwrap();
            s.push_str(&format!(
                "\n[hosts.h{i}]\nport = {}\nvars = {{ root = \"{}\" }}\n",
                self.lab.ports[i - 1],
                root.display()
            ));
        }
        s.push_str(extra);
        let p = self.dir.path().join(name);
        std::fs::write(&p, s).unwrap();
        p
    }

    pub(crate) fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    pub(crate) fn journal(&self) -> PathBuf {
        self.dir.path().join("journal.db")
    }

    pub(crate) fn read(&self, host: &str, file: &str) -> String {
        std::fs::read_to_string(self.root(host).join(file)).unwrap_or_default()
    }

    /// How many times the playbook appended to `file` on `host` (one line per run of a step).
    pub(crate) fn count(&self, host: &str, file: &str) -> usize {
        self.read(host, file).lines().count()
    }

    /// What `--journal` is given: the server's address, else the file.
    pub(crate) fn journal_arg(&self) -> std::ffi::OsString {
        match &self.server_journal {
            Some(url) => url.into(),
            None => self.journal().into(),
        }
    }

    /// `capstan ARGS --journal J` to the end.
    pub(crate) fn capstan(&self, args: &[&str]) -> Out {
        self.capstan_env(args, &[])
    }

    /// `capstan ARGS --journal J` to the end, with `env` added to its environment.
    pub(crate) fn capstan_env(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let out = Command::new(env!("CARGO_BIN_EXE_capstan"))
            .envs(env.iter().copied())
            .current_dir(self.dir.path())
            .args(args)
            .arg("--journal")
            .arg(self.journal_arg())
            .output()
            .unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `capstan ARGS --journal J --json` in the background, its events read as they come.
    pub(crate) fn spawn(&self, args: &[&str]) -> Running {
        self.spawn_env(args, &[])
    }

    pub(crate) fn spawn_env(&self, args: &[&str], env: &[(&str, &str)]) -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_capstan"))
            .envs(env.iter().copied())
            .current_dir(self.dir.path())
            .args(args)
            .arg("--journal")
            .arg(self.journal_arg())
            .arg("--json")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                if tx.send((line, v)).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            events: rx,
            seen: Vec::new(),
            run_id: String::new(),
        }
    }

    pub(crate) fn report(&self, run: &str) -> Value {
        let out = self.capstan(&["report", run, "--json"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        serde_json::from_str(&out.stdout).unwrap()
    }
}

pub(crate) struct Running {
    child: Child,
    events: mpsc::Receiver<(String, Value)>,
    seen: Vec<String>,
    run_id: String,
}

impl Running {
    /// Waits for the first event matching `pred` (20 s at most) and returns it.
    pub(crate) fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok((line, v)) => {
                    self.seen.push(line);
                    if v["event"] == "run_started" {
                        self.run_id = v["run_id"].as_str().unwrap_or_default().to_string();
                    }
                    if pred(&v) {
                        return v;
                    }
                }
                Err(_) => {
                    // Say why: whether capstan exited (and with what) or hangs, and its stderr.
                    let state = match self.child.try_wait() {
                        Ok(Some(st)) => format!("capstan exited: {st}"),
                        _ => {
                            let _ = self.child.kill();
                            let _ = self.child.wait();
                            "capstan still running (killed now)".to_string()
                        }
                    };
                    let mut err = String::new();
                    if let Some(mut e) = self.child.stderr.take() {
                        use std::io::Read;
                        let _ = e.read_to_string(&mut err);
                    }
                    panic!(
                        "no {what} event; {state}; saw:\n{}\nstderr:\n{err}",
                        self.seen.join("\n")
                    )
                }
            }
        }
    }

    /// The run id the run announced (once `wait_for` saw `run_started`).
    pub(crate) fn run_id_seen(&self) -> String {
        self.run_id.clone()
    }

    pub(crate) fn kill9(mut self) -> String {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
        self.run_id
    }

    /// The capstan process's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn sigint(&self) {
        self.signal("INT");
    }

    /// Sends the signal `name` (`INT`, `TERM`, `HUP`) to the capstan process.
    pub(crate) fn signal(&self, name: &str) {
        let st = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// Waits for the exit; returns the code, every event line and stderr.
    pub(crate) fn finish(mut self) -> (i32, Vec<String>, String) {
        let status = self.child.wait().unwrap();
        while let Ok((line, _)) = self.events.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        (status.code().unwrap_or(-1), self.seen, err)
    }
}

pub(crate) fn step_event(v: &Value, kind: &str, step: &str) -> bool {
    v["event"] == kind && v["step"] == step
}

/// Five steps over three hosts; each appends a line to `count-N` on every host (the side-effect
/// counter), step 3 runs a long command, and step 5 writes what step 1 returned.
const FIVE_STEPS: &str = r#"
let hosts = cluster().hosts();
let first = step("step 1", || {
    parallel(hosts, |h| h.shell(`echo 1 >> ${h.path("count-1")}`));
    "result of step 1"
});
step("step 2", || parallel(hosts, |h| h.shell(`echo 2 >> ${h.path("count-2")}; sleep 0.2`)));
step("step 3", || parallel(hosts, |h| h.shell(`echo 3 >> ${h.path("count-3")}; sleep 1.5`)));
step("step 4", || parallel(hosts, |h| h.shell(`echo 4 >> ${h.path("count-4")}; sleep 0.2`)));
step("step 5", || {
    for h in hosts {
        h.shell(`echo 5 >> ${h.path("count-5")}`);
        h.write_file(h.path("final"), first);
    }
});
"#;

/// Kills the run at one point, resumes it, and checks that no step the journal recorded as done
/// ran again, that every step ran, and that the end state is right.
fn kill_and_resume(at: &str, pred: impl Fn(&Value) -> bool) {
    let c = Cluster::new();
    let inv = c.inventory("inv.toml", &[1, 2, 3], "");
    let pb = c.write("five.rhai", FIVE_STEPS);
    let (inv, pb) = (inv.to_str().unwrap(), pb.to_str().unwrap());
    let mut r = c.spawn(&["run", pb, "-i", inv]);
    r.wait_for(at, &pred);
    let run = r.kill9();
    assert!(!run.is_empty());

    let before = c.report(&run);
    let done: Vec<String> = before["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "ok")
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    if before["status"] == "succeeded" {
        // The kill landed after the last step's journal write: there is nothing to resume,
        // and nothing may run again.
        let out = c.capstan(&["resume", &run]);
        assert_eq!(out.code, 2, "{at}: {}", out.stderr);
        assert!(
            out.stderr.contains("already succeeded"),
            "{at}: {}",
            out.stderr
        );
        for i in 1..=5 {
            for h in ["h1", "h2", "h3"] {
                assert_eq!(c.count(h, &format!("count-{i}")), 1, "{at}");
            }
        }
        return;
    }
    assert_eq!(before["status"], "running", "{at}: {before}");

    // The killed run's lock is stale; its own resume takes it back.
    let out = c.capstan(&["resume", &run]);
    assert_eq!(out.code, 0, "{at}: {}\n{}", out.stdout, out.stderr);
    for i in 1..=5 {
        let step = format!("step {i}");
        for h in ["h1", "h2", "h3"] {
            let n = c.count(h, &format!("count-{i}"));
            if done.contains(&step) {
                assert_eq!(
                    n, 1,
                    "{at}: `{step}` was done before the kill and ran again on {h}"
                );
            } else {
                assert!((1..=2).contains(&n), "{at}: `{step}` ran {n} times on {h}");
            }
        }
    }
    for h in ["h1", "h2", "h3"] {
        assert_eq!(c.read(h, "final"), "result of step 1", "{at}");
    }
    let after = c.report(&run);
    assert_eq!(after["status"], "succeeded", "{at}");
    assert_eq!(after["attempts"], 2, "{at}");
    for s in after["steps"].as_array().unwrap() {
        let expect = if done.contains(&s["name"].as_str().unwrap().to_string()) {
            1
        } else {
            2
        };
        assert_eq!(s["attempt"], expect, "{at}: {s}");
    }
    // The resumed attempt says which steps it skipped.
    assert!(
        out.stderr.contains("skipped") || done.is_empty(),
        "{}",
        out.stderr
    );
}

#[test]
fn kill_9_at_every_step_boundary_then_resume_runs_no_done_step_twice() {
    kill_and_resume("run start", |v| v["event"] == "run_started");
    for i in 1..=5 {
        kill_and_resume(&format!("after step {i}"), move |v| {
            step_event(v, "step_finished", &format!("step {i}"))
        });
    }
}

#[test]
fn kill_9_in_the_middle_of_a_long_command_then_resume() {
    // Step 3 runs `sleep 1.5` on every host; the kill lands while it runs.
    kill_and_resume("inside step 3", |v| {
        if step_event(v, "step_started", "step 3") {
            std::thread::sleep(Duration::from_millis(500));
            true
        } else {
            false
        }
    });
}

/// Each host: a config file and a `bin` directory the step replaces, a directory it creates, and
/// a script undo that logs its host. h2 fails after its changes.
const CHANGE_EACH_HOST: &str = r#"
let log_file = params(#{ log: param::required("shared log of undos") }).log;
for h in cluster().hosts() {
    step(`change ${h}`, || {
        h.write_file(h.path("conf"), "new\n");
        h.replace_dir(h.path("bin"), h.path("release/bin"));
        h.mkdir(h.path("newdir"));
        undo(`log undo of ${h}`, || h.shell(`echo undo-${h.name} >> ${log_file}`));
        if h.name == "h2" { fail("h2 broke after its changes"); }
        h.run(["sleep", "30"]);
    });
}
"#;

/// The run id a run printed (`run: ID`).
pub(crate) fn run_id(out: &Out) -> String {
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix("run: "))
        .unwrap_or_else(|| panic!("no run id in {}", out.stdout))
        .to_string()
}

fn seed_hosts(c: &Cluster) {
    for h in ["h1", "h2", "h3"] {
        let r = c.root(h);
        std::fs::create_dir_all(r.join("bin")).unwrap();
        std::fs::create_dir_all(r.join("release/bin")).unwrap();
        std::fs::write(r.join("conf"), "old\n").unwrap();
        std::fs::write(r.join("bin/app"), "v1").unwrap();
        std::fs::write(r.join("release/bin/app"), "v2").unwrap();
    }
}

fn assert_untouched(c: &Cluster, h: &str) {
    let r = c.root(h);
    assert_eq!(c.read(h, "conf"), "old\n", "{h}: conf");
    assert_eq!(c.read(h, "bin/app"), "v1", "{h}: bin");
    assert!(!r.join("newdir").exists(), "{h}: newdir is still there");
    let left: Vec<String> = std::fs::read_dir(&r)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("capstan"))
        .collect();
    assert!(left.is_empty(), "{h}: left behind: {left:?}");
}

#[test]
fn a_failure_on_host_2_of_3_rolls_back_every_change_in_reverse_order() {
    let c = Cluster::new();
    seed_hosts(&c);
    let inv = c.inventory("inv.toml", &[1, 2, 3], "");
    // h1's step would run a long command: make it quick here.
    let pb = c.write("change.rhai", &CHANGE_EACH_HOST.replace("\"30\"", "\"0\""));
    let log = c.dir.path().join("undo.log");
    let out = c.capstan(&[
        "run",
        pb.to_str().unwrap(),
        "-i",
        inv.to_str().unwrap(),
        "-p",
        &format!("log={}", log.display()),
        "--on-failure",
        "rollback",
    ]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("FAILED, ROLLED BACK"), "{}", out.stdout);
    assert!(
        out.stdout.contains("h2 broke after its changes"),
        "{}",
        out.stdout
    );
    for h in ["h1", "h2", "h3"] {
        assert_untouched(&c, h);
    }
    // Newest first: h2's script undo before h1's.
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "undo-h2\nundo-h1\n");
    // The report lists every undo, all undone; the rollback's actions ran newest undo first.
    let run = run_id(&out);
    let rep = c.report(&run);
    assert_eq!(rep["status"], "rolled_back");
    let undos = rep["undos"].as_array().unwrap();
    assert_eq!(undos.len(), 8, "{undos:?}"); // 4 per changed host (h1, h2)
    assert!(undos.iter().all(|u| u["status"] == "done"), "{undos:?}");
    let order: Vec<u64> = rep["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| {
            a["step"]
                .as_str()?
                .strip_prefix("undo #")?
                .split(':')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    let mut sorted = order.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    sorted.dedup();
    let mut seen = order.clone();
    seen.dedup();
    assert_eq!(seen, sorted, "undos did not run newest first: {order:?}");
    let text = c.capstan(&["report", &run]);
    assert!(
        text.stdout.contains("undone  h1: undo write"),
        "{}",
        text.stdout
    );
}

#[test]
fn capstan_rollback_undoes_what_a_killed_run_changed() {
    let c = Cluster::new();
    seed_hosts(&c);
    let inv = c.inventory("inv.toml", &[1, 2, 3], "");
    // No failure this time: h1's step blocks in `sleep 30` and is killed there.
    let pb = c.write(
        "change.rhai",
        &CHANGE_EACH_HOST.replace("h.name == \"h2\"", "false"),
    );
    let log = c.dir.path().join("undo.log");
    let mut r = c.spawn(&[
        "run",
        pb.to_str().unwrap(),
        "-i",
        inv.to_str().unwrap(),
        "-p",
        &format!("log={}", log.display()),
    ]);
    r.wait_for("h1's long command", |v| {
        v["event"] == "undo" && v["phase"] == "registered" && v["description"] == "log undo of h1"
    });
    std::thread::sleep(Duration::from_millis(300));
    let run = r.kill9();
    assert_eq!(c.read("h1", "conf"), "new\n", "the killed run changed h1");

    let out = c.capstan(&["rollback", &run, "--yes"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("— ROLLED BACK in"), "{}", out.stdout);
    for h in ["h1", "h2", "h3"] {
        assert_untouched(&c, h);
    }
    // The script undo was rebuilt from the journal by the new process and ran.
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "undo-h1\n");
    let rep = c.report(&run);
    assert_eq!(rep["status"], "rolled_back");
    // A rolled-back run is not rolled back (or resumed) twice.
    let again = c.capstan(&["rollback", &run, "--yes"]);
    assert_eq!(again.code, 2, "{}", again.stderr);
    assert!(
        again.stderr.contains("was rolled back already"),
        "{}",
        again.stderr
    );
}

/// Step 1 registers a rollback gate (no `blocker` file on h1) and changes h1's conf with an
/// undo; step 2 fails.
const GATED: &str = r#"
let h = cluster().host("h1");
step("change", || {
    rollback_gate("no blocker on h1", || {
        if h.exists(h.path("blocker")) { fail("h1 has a blocker"); }
    });
    let before = h.read_file(h.path("conf"));
    h.write_file(h.path("conf"), "new\n");
    undo("conf back", || h.write_file(h.path("conf"), before));
});
step("break", || fail("step 2 breaks"));
"#;

#[test]
fn a_rollback_gate_refuses_the_whole_rollback_before_any_undo_and_checks_again_later() {
    let c = Cluster::new();
    seed_hosts(&c);
    let inv = c.inventory("inv.toml", &[1], "");
    let pb = c.write("gated.rhai", GATED);
    std::fs::write(c.root("h1").join("blocker"), "x").unwrap();
    let out = c.capstan(&[
        "run",
        pb.to_str().unwrap(),
        "-i",
        inv.to_str().unwrap(),
        "--on-failure",
        "rollback",
    ]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(
        all.contains("rollback refused before any undo ran: rollback gate: no blocker on h1 (")
            && all.contains("h1 has a blocker"),
        "{all}"
    );
    assert!(out.stdout.contains("ROLLBACK INCOMPLETE"), "{}", out.stdout);
    // Nothing was undone: the change is still there and its undo pending.
    assert_eq!(c.read("h1", "conf"), "new\n");
    let run = run_id(&out);
    let rep = c.report(&run);
    assert_eq!(rep["status"], "rollback_incomplete");
    let undos = rep["undos"].as_array().unwrap();
    let conf = undos
        .iter()
        .find(|u| u["description"] == "conf back")
        .unwrap();
    assert_eq!(conf["status"], "pending", "{undos:?}");

    // Once the cause is gone, `capstan rollback` checks again and undoes.
    std::fs::remove_file(c.root("h1").join("blocker")).unwrap();
    let again = c.capstan(&["rollback", &run, "--yes"]);
    assert_eq!(again.code, 0, "{}\n{}", again.stdout, again.stderr);
    assert_eq!(c.read("h1", "conf"), "old\n");
    assert_eq!(c.report(&run)["status"], "rolled_back");
}

/// Step 1 sets a guard (the `guard` file says `on`), step 2 takes a while, step 3 checks the guard
/// is in effect, then fails when the `fail3` file exists.
const GUARDED: &str = r#"
let h = cluster().host("h1");
let flag = h.path("guard");
step("step 1", || {
    guard("maintenance",
        || h.write_file(flag, "on"),
        || h.write_file(flag, "off"));
});
step("step 2", || h.run(["sleep", "1.5"]));
step("step 3", || {
    if h.read_file(flag) != "on" { fail("the guard is not in effect"); }
    if h.exists(h.path("fail3")) { fail("step 3 fails"); }
});
"#;

#[test]
fn a_guard_is_restored_after_a_failure_after_ctrl_c_and_on_resume_after_kill_9() {
    let c = Cluster::new();
    let inv = c.inventory("inv.toml", &[1], "");
    let pb = c.write("guarded.rhai", GUARDED);
    let (inv, pb) = (inv.to_str().unwrap(), pb.to_str().unwrap());

    // A failure in step 3.
    std::fs::write(c.root("h1").join("fail3"), "").unwrap();
    let out = c.capstan(&["run", pb, "-i", inv]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stdout.contains("step 3 fails"), "{}", out.stdout);
    assert_eq!(c.read("h1", "guard"), "off");
    let run = run_id(&out);
    assert_eq!(c.report(&run)["guards"][0]["status"], "restored");
    std::fs::remove_file(c.root("h1").join("fail3")).unwrap();

    // Ctrl-C during step 2: the step finishes, the run stops before step 3, the guard is restored.
    let mut r = c.spawn(&["run", pb, "-i", inv]);
    r.wait_for("step 2", |v| step_event(v, "step_started", "step 2"));
    std::thread::sleep(Duration::from_millis(300));
    r.sigint();
    let (code, events, _) = r.finish();
    assert_eq!(code, 3, "{events:?}");
    let all = events.join("\n");
    assert!(
        all.contains(r#""event":"step_finished","step":"step 2","ok":true"#),
        "{all}"
    );
    assert!(!all.contains(r#""step":"step 3""#), "{all}");
    assert_eq!(c.read("h1", "guard"), "off");

    // kill -9 during step 2 leaves the guard set; someone flips it back meanwhile; the resume
    // sets it again before going on (step 3 checks) and restores it at the end.
    let mut r = c.spawn(&["run", pb, "-i", inv]);
    r.wait_for("step 2", |v| step_event(v, "step_started", "step 2"));
    let run = r.kill9();
    assert_eq!(c.read("h1", "guard"), "on");
    let runs = c.capstan(&["runs"]);
    assert!(
        runs.stdout.contains("GUARD STILL SET: maintenance"),
        "{}",
        runs.stdout
    );
    std::fs::write(c.root("h1").join("guard"), "off").unwrap();
    let out = c.capstan(&["resume", &run]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(c.read("h1", "guard"), "off");
    assert!(
        out.stdout.contains("set again by 1 resume(s)"),
        "{}",
        out.stdout
    );
    let runs = c.capstan(&["runs"]);
    assert!(!runs.stdout.contains("GUARD STILL SET"), "{}", runs.stdout);
}

#[test]
fn a_second_run_on_overlapping_hosts_is_refused_with_the_first_runs_id() {
    let c = Cluster::new();
    let inv_a = c.inventory("a.toml", &[1, 2], "");
    let inv_b = c.inventory("b.toml", &[2, 3], "");
    let pb = c.write(
        "slow.rhai",
        "step(\"wait\", || cluster().host(\"h2\").run([\"sleep\", \"4\"]));\n",
    );
    let mut a = c.spawn(&["run", pb.to_str().unwrap(), "-i", inv_a.to_str().unwrap()]);
    a.wait_for("step start", |v| v["event"] == "step_started");
    let first = a.run_id.clone();
    let b = c.capstan(&["run", pb.to_str().unwrap(), "-i", inv_b.to_str().unwrap()]);
    assert_eq!(b.code, 5, "{}\n{}", b.stdout, b.stderr);
    assert!(
        b.stderr.contains(&format!("held by run {first}")),
        "{}",
        b.stderr
    );
    assert!(b.stderr.contains("started "), "{}", b.stderr);
    let (code, _, _) = a.finish();
    assert_eq!(code, 0);
    // The refused run left nothing in the journal; once A is done, B runs.
    assert_eq!(
        c.capstan(&["runs", "--json"])
            .stdout
            .matches("\"id\"")
            .count(),
        1
    );
    let b = c.capstan(&["run", pb.to_str().unwrap(), "-i", inv_b.to_str().unwrap()]);
    assert_eq!(b.code, 0, "{}", b.stderr);
}

pub(crate) const TOKEN: &str = "tok-5up3r-53cr3t-v4lue";

#[test]
fn a_secret_used_by_a_step_appears_in_no_output_journal_or_report() {
    let c = Cluster::new();
    run_with_a_secret(&c);
    for f in std::fs::read_dir(c.dir.path()).unwrap() {
        let p = f.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("journal.db")
        {
            let bytes = std::fs::read(&p).unwrap();
            assert!(
                !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
                "the secret is in {}",
                p.display()
            );
        }
    }
}

/// A run that uses the secret [`TOKEN`] in a step, a log line, command output and an undo, and
/// fails; checks that the events, stderr and reports do not show it (the caller searches the
/// journal's own bytes).
pub(crate) fn run_with_a_secret(c: &Cluster) {
    let inv = c.inventory(
        "inv.toml",
        &[1],
        "\n[secrets]\ntoken = { env = \"CAPSTAN_IT_TOKEN\" }\n",
    );
    let pb = c.write(
        "secret.rhai",
        r#"
let h = cluster().host("h1");
let t = step("use the token", || {
    let t = secret("token");
    h.run(["sh", "-c", "printf %s \"$1\" > \"$2\"", "sh", t, h.path("used")]);
    log(`logged ${t}`);
    h.run(["sh", "-c", "echo first; sleep 1.2; echo \"then $1\"; printf last", "sh", t]);
    undo(|| h.run(["sh", "-c", "printf %s \"$1\" > \"$2\"", "sh", t, h.path("undone")]));
    t
});
step("fail with it", || h.run(["sh", "-c", "echo \"$1\" >&2; echo \"$1\"; exit 3", "sh", t]));
"#,
    );
    let mut r = c.spawn_env(
        &[
            "run",
            pb.to_str().unwrap(),
            "-i",
            inv.to_str().unwrap(),
            "--on-failure",
            "rollback",
            "-v",
        ],
        &[("CAPSTAN_IT_TOKEN", TOKEN)],
    );
    r.wait_for("the end", |v| v["event"] == "report");
    let run = r.run_id.clone();
    let (code, events, stderr) = r.finish();
    assert_eq!(code, 1, "{events:?}");
    // The secret was used for real, by the step and by its undo (run from the journal's form).
    assert_eq!(c.read("h1", "used"), TOKEN);
    assert_eq!(c.read("h1", "undone"), TOKEN);
    let events = events.join("\n");
    assert!(events.contains("logged ***"), "{events}");
    // A long command's output arrives as events while the step runs, whole lines, redacted.
    let first = events
        .find(r#""stream":"stdout","text":"first\n""#)
        .expect("no output event");
    let then = events
        .find(r#""text":"then ***\n""#)
        .expect("no redacted output line");
    let last = events
        .find(r#""text":"last""#)
        .expect("no final partial line");
    let done = events
        .find(r#""event":"step_finished","step":"use the token""#)
        .unwrap();
    assert!(first < then && then < last && last < done, "{events}");
    let text = c.capstan(&["report", &run, "--plan"]);
    let json = c.capstan(&["report", &run, "--json"]);
    let runs = c.capstan(&["runs", "--json"]);
    for (what, text) in [
        ("events", events.as_str()),
        ("stderr", stderr.as_str()),
        ("report", text.stdout.as_str()),
        ("report --json", json.stdout.as_str()),
        ("runs", runs.stdout.as_str()),
    ] {
        assert!(
            !text.contains(TOKEN),
            "the secret is in the {what}:\n{text}"
        );
    }
}

/// In-process: what the journal refuses, without hosts.
mod refusals {
    use capstan::{HostBuilder, Journal, Mode, Params, Playbook};
    use std::sync::Arc;

    fn host(j: &Arc<Journal>) -> capstan::Host {
        HostBuilder::new()
            .mode(Mode::Run)
            .journal(j.clone())
            .yes(true)
            .build()
            .unwrap()
    }

    #[test]
    fn a_changed_playbook_is_refused_on_resume_with_the_diff_unless_forced() {
        let d = tempfile::tempdir().unwrap();
        let j = Arc::new(Journal::open(d.path().join("j.db")).unwrap());
        let f = d.path().join("x");
        let src = format!(
            "step(\"one\", || 1);\nstep(\"two\", || {{ if !cluster().host(\"localhost\").exists(\"{}\") {{ fail(\"not yet\"); }} }});\n",
            f.display()
        );
        let r = host(&j)
            .run(&Playbook::from_source("p.rhai", &src), &Params::new())
            .unwrap();
        assert!(!r.succeeded());
        let changed = src.replace("step(\"one\", || 1);", "step(\"one\", || 2);");
        let resume = |force: bool| {
            host(&j).resume(
                &r.run_id,
                &Playbook::from_source("p.rhai", &changed),
                &Params::new(),
                force,
            )
        };
        let e = resume(false).unwrap_err();
        let msg = e.to_string();
        assert_eq!(e.exit_code(), 2);
        assert!(
            msg.contains("-step(\"one\", || 1);\n+step(\"one\", || 2);"),
            "{msg}"
        );
        std::fs::write(&f, "").unwrap();
        let r2 = resume(true).unwrap();
        assert!(r2.succeeded(), "{:?}", r2.outcome);
        assert_eq!(r2.attempts, 2);
        let e = resume(false).unwrap_err();
        assert!(e.to_string().contains("already succeeded"), "{e}");
    }

    #[test]
    fn undo_outside_a_step_is_an_error_and_check_mode_registers_nothing() {
        let j = Arc::new(Journal::in_memory());
        let r = host(&j)
            .run(
                &Playbook::from_source("p.rhai", "undo(|| 1);\n"),
                &Params::new(),
            )
            .unwrap();
        let (_, e) = crate::support::failure(&r);
        assert!(
            e.message.contains("undo() belongs inside a step"),
            "{}",
            e.message
        );
        let d = tempfile::tempdir().unwrap();
        let src = format!(
            "step(\"w\", || {{ cluster().host(\"localhost\").write_file(\"{}/f\", \"x\"); undo(|| 1); }});\n",
            d.path().display()
        );
        let check = HostBuilder::new()
            .mode(Mode::Check)
            .journal(j.clone())
            .build()
            .unwrap();
        let r = check
            .run(&Playbook::from_source("p.rhai", &src), &Params::new())
            .unwrap();
        assert!(r.succeeded());
        assert!(r.undos.is_empty(), "{:?}", r.undos);
        assert!(!d.path().join("f").exists());
    }

    #[test]
    fn what_an_undo_changes_registers_no_undo_of_its_own() {
        // Otherwise a second rollback would undo the first.
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        let src = format!(
            "let h = cluster().host(\"localhost\");\nstep(\"s\", || {{\n    undo(|| h.write_file(\"{f}\", \"undone\"));\n    fail(\"boom\");\n}});\n",
            f = f.display()
        );
        let j = Arc::new(Journal::in_memory());
        let h = HostBuilder::new()
            .journal(j.clone())
            .on_failure(capstan::host::OnFailure::Rollback)
            .build()
            .unwrap();
        let r = h
            .run(&Playbook::from_source("p.rhai", &src), &Params::new())
            .unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "undone");
        assert_eq!(r.status, capstan::journal::RunStatus::RolledBack);
        assert_eq!(r.undos.len(), 1, "{:?}", r.undos);
        assert_eq!(j.run(&r.run_id).unwrap().undos_pending, 0);
        let files = std::fs::read_dir(d.path()).unwrap().count();
        assert_eq!(files, 1, "the undo's write kept a copy it will never use");
    }
}
