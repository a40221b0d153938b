//! Two control machines, one cluster: the maintenance lock on the hosts themselves.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::journal::Cluster;
use crate::support::{last_report, Out};

/// A control machine: its own home, state directory and journal.
struct Controller {
    home: tempfile::TempDir,
}

impl Controller {
    fn new() -> Controller {
        Controller {
            home: tempfile::tempdir().unwrap(),
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_capstan"));
        c.env("HOME", self.home.path())
            .env("XDG_STATE_HOME", self.home.path().join("state"))
            .env_remove("CAPSTAN_JOURNAL")
            .current_dir(self.home.path())
            .args(args);
        c
    }

    fn run(&self, args: &[&str]) -> Out {
        let out = self.cmd(args).output().unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Each host's `count` file gets a line; h1 then works for `secs`.
fn playbook(dir: &Path, name: &str, secs: u32) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(
        &p,
        format!(
            r#"let hosts = cluster().hosts();
step("work", || {{
    for h in hosts {{ h.shell(`echo x >> ${{h.hostvar("root")}}/count`); }}
    hosts[0].run(["sleep", "{secs}"]);
}});
"#
        ),
    )
    .unwrap();
    p
}

#[test]
fn a_second_controller_is_refused_by_the_host_lock_until_the_lease_of_a_killed_run_expires() {
    let c = Cluster::new();
    let inv = c.inventory("inv.toml", &[1, 2, 3], "");
    // A short lease, so the test sees it renewed and then run out.
    let text = std::fs::read_to_string(&inv).unwrap().replacen(
        "[defaults]\n",
        "[defaults]\nhost_lock_lease = \"4s\"\n",
        1,
    );
    std::fs::write(&inv, text).unwrap();
    let inv = inv.to_str().unwrap();
    let (a, b) = (Controller::new(), Controller::new());
    let long = playbook(a.home.path(), "long.rhai", 60);
    let short = playbook(b.home.path(), "short.rhai", 0);
    let (long, short) = (long.to_str().unwrap(), short.to_str().unwrap());

    let mut first = a
        .cmd(&["run", long, "-i", inv, "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // A's first change takes the locks: wait for its first action.
    let started = Instant::now();
    let lock_dir = c.lab.host_lock_dir();
    while !lock_dir.join("holder").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "A took no lock"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let holder = std::fs::read_to_string(lock_dir.join("holder")).unwrap();
    let run_a = holder
        .lines()
        .find_map(|l| l.strip_prefix("run="))
        .unwrap()
        .to_string();
    // Past the 4 s lease: A renews it while it lives.
    std::thread::sleep(Duration::from_secs(6));
    let out = b.run(&["run", short, "-i", inv]);
    assert_eq!(out.code, 5, "{}\n{}", out.stdout, out.stderr);
    let said = out.stdout.clone();
    let machine = gethostname();
    for want in [
        "3 of 3 host(s) are locked by another run, so nothing was changed".to_string(),
        format!("h1: held by run {run_a} ("),
        format!(" on {machine}, pid {})", first.id()),
        "left".to_string(),
        "--take-over-lock".to_string(),
    ] {
        assert!(said.contains(&want), "{want}\n{said}");
    }
    for h in ["h1", "h2", "h3"] {
        assert_eq!(c.count(h, "count"), 1, "B changed {h}");
    }
    // --check reads the locks and says a run would be refused, taking none.
    let out = b.run(&["run", short, "-i", inv, "--check"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains(&format!("host lock: h2: held by run {run_a}"))
            && out.stdout.contains("a real run would be refused (exit 5)"),
        "{}",
        out.stdout
    );

    // A is killed: its lock stays until the lease runs out, even for --take-over-lock.
    first.kill().unwrap();
    first.wait().unwrap();
    let killed = Instant::now();
    let out = b.run(&["run", short, "-i", inv, "--take-over-lock"]);
    assert_eq!(out.code, 5, "{}", out.stderr);
    assert!(out.stdout.contains("left"), "{}", out.stdout);
    while killed.elapsed() < Duration::from_secs(6) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = b.run(&["run", short, "-i", inv]);
    assert_eq!(
        out.code, 5,
        "an expired lock is not taken without --take-over-lock"
    );
    assert!(out.stdout.contains("lease expired"), "{}", out.stdout);
    let out = b.run(&["run", short, "-i", inv, "--take-over-lock", "--json"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    for h in ["h1", "h2", "h3"] {
        assert_eq!(c.count(h, "count"), 2, "{h}");
    }
    // The takeover is journaled: B's report names what it took and from whom.
    let report = last_report(&out.stdout);
    let run_b = report["run_id"].as_str().unwrap();
    let again = b.run(&["report", run_b, "--json"]);
    let logs = serde_json::from_str::<serde_json::Value>(&again.stdout).unwrap()["logs"].clone();
    assert!(
        logs.as_array().unwrap().iter().any(|l| {
            let m = l["message"].as_str().unwrap();
            // The three hosts share one lock (one machine): whichever asked first took it over.
            m.starts_with("--take-over-lock: took the expired host lock on h")
                && m.contains(&format!("(from run {run_a} ("))
        }),
        "{logs:#}"
    );
    // B's run ended: its lock is gone.
    assert!(!lock_dir.exists(), "the lock outlived its run");
}

#[test]
fn a_rehearsal_meets_the_lock_a_scenario_gives_a_host() {
    let d = tempfile::tempdir().unwrap();
    let scenario = d.path().join("s.toml");
    std::fs::write(
        &scenario,
        r#"
[inventory.hosts.db1]
transport = "ssh"
address = "10.0.0.1"

[inventory.hosts.db2]
transport = "ssh"
address = "10.0.0.2"

[hosts.db2.host_lock]
run = "20261201-010203-abcd"
operator = "bob"
controller = "ops-laptop"
lease_left = "4m"
"#,
    )
    .unwrap();
    let pb = d.path().join("p.rhai");
    std::fs::write(
        &pb,
        "step(\"touch\", || { for h in cluster().hosts() { h.write_file(\"/tmp/x\", \"y\"); } });\n",
    )
    .unwrap();
    let (pb, sc) = (pb.to_str().unwrap(), scenario.to_str().unwrap());
    let out = crate::support::capstan(&["simulate", pb, "--scenario", sc]);
    assert_eq!(out.code, 5, "{}\n{}", out.stdout, out.stderr);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(
        all.contains("db2: held by run 20261201-010203-abcd (bob on ops-laptop, pid ?)")
            && all.contains("lease 4m left"),
        "{all}"
    );
    // Expired, it can be taken over in the rehearsal as on the hosts.
    std::fs::write(
        &scenario,
        std::fs::read_to_string(&scenario)
            .unwrap()
            .replace("lease_left = \"4m\"", "expired = true"),
    )
    .unwrap();
    let out = crate::support::capstan(&["simulate", pb, "--scenario", sc]);
    assert_eq!(out.code, 5, "{}", out.stderr);
    let out = crate::support::capstan(&["simulate", pb, "--scenario", sc, "--take-over-lock"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(
            "--take-over-lock: took the expired host lock on db2 (from run 20261201-010203-abcd"
        ),
        "{}",
        out.stdout
    );
}

fn gethostname() -> String {
    let out = Command::new("hostname").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
