//! Crash consistency against real sshd hosts and local ones, through the binary: a command dies
//! with its capstan, a resume or rollback right after a `kill -9` never runs a command beside the
//! one still running, a resumed step does not repeat what its earlier attempt finished, a second
//! Ctrl-C ends the remote command, and secrets stay out of the host's process table.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::journal::{run_id, step_event, Cluster};

/// One step doing five things per host, in order; the second is a long command that logs its
/// begin and end with its pid. Every line a command appends is a count of how often it ran.
const LONG_STEP: &str = r#"
let hosts = cluster().hosts();
step("upgrade", || {
    for h in hosts {
        h.shell(`echo a >> ${h.path("count-a")}`);
        h.shell(`echo "begin $$" >> ${h.path("log")}; sleep 0.8; echo "end $$" >> ${h.path("log")}`);
        h.shell(`echo b >> ${h.path("count-b")}`);
        h.write_file(h.path("conf"), "new\n");
        h.shell(`echo c >> ${h.path("count-c")}; sleep 0.3`);
    }
});
step("after", || { for h in hosts { h.shell(`echo d >> ${h.path("count-d")}`); } });
"#;

/// Delays spread over the step's length, in a fixed pseudo-random order (reproducible).
fn moments(n: usize, span_ms: u64) -> Vec<Duration> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // One per slice of the span, at a random place in it: every part of the step is hit.
            let slice = span_ms / n as u64;
            Duration::from_millis(i as u64 * slice + x % slice)
        })
        .collect()
}

/// An inventory of local hosts l1, l2 (each with its own root), plus SSH h1..h3 as `Cluster` has.
fn local_inventory(c: &Cluster) -> std::path::PathBuf {
    let mut s = String::new();
    for h in ["l1", "l2"] {
        let root = c.root(h);
        std::fs::create_dir_all(&root).unwrap();
        s.push_str(&format!(
            "[hosts.{h}]\ntransport = \"local\"\nvars = {{ root = \"{}\" }}\n\n",
            root.display()
        ));
    }
    c.write("local.toml", &s)
}

fn wipe(c: &Cluster, hosts: &[&str]) {
    for h in hosts {
        let r = c.root(h);
        let _ = std::fs::remove_dir_all(&r);
        std::fs::create_dir_all(&r).unwrap();
    }
}

/// The log has no two runs of the long command at once: every `end P` right after `begin P`.
fn assert_no_overlap(log: &str, what: &str) {
    let lines: Vec<&str> = log.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        if let Some(pid) = l.strip_prefix("end ") {
            assert!(
                i > 0 && lines[i - 1] == format!("begin {pid}"),
                "{what}: two runs of one command overlapped:\n{log}"
            );
        }
    }
}

/// The report's "may have run" lines.
fn may_have_run(report: &Value) -> Vec<String> {
    report["logs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["message"].as_str())
        .filter(|m| m.contains("may have run"))
        .map(str::to_string)
        .collect()
}

/// Each counter ran once, or twice when it is the one action the report says may have run.
fn assert_counted_once(c: &Cluster, hosts: &[&str], files: &[&str], named: &[String], what: &str) {
    for h in hosts {
        for f in files {
            let n = c.count(h, f);
            let in_flight = named
                .iter()
                .any(|m| m.starts_with(&format!("{h}:")) && m.contains(&format!("/{f}")));
            match n {
                1 => {}
                2 if in_flight => {}
                n => panic!(
                    "{what}: `{f}` on {h} ran {n} times; may have run: {named:?}\nlog:\n{}",
                    c.read(h, "log")
                ),
            }
        }
    }
}

fn kill_then_resume(c: &Cluster, inv: &Path, hosts: &[&str], delay: Duration) {
    let what = format!("{} after {delay:?}", hosts[0]);
    wipe(c, hosts);
    let pb = c.write("long.rhai", LONG_STEP);
    let mut r = c.spawn(&["run", pb.to_str().unwrap(), "-i", inv.to_str().unwrap()]);
    r.wait_for("the step's start", |v| {
        step_event(v, "step_started", "upgrade")
    });
    std::thread::sleep(delay);
    let run = r.kill9();
    if c.report(&run)["status"] == "succeeded" {
        // The kill came after the run's end: nothing may have run twice.
        for h in hosts {
            for f in ["count-a", "count-b", "count-c", "count-d"] {
                assert_eq!(c.count(h, f), 1, "{what}: {f} on {h}");
            }
        }
        return;
    }
    // At once: the command the killed run started may still be running.
    let out = c.capstan(&["resume", &run]);
    assert_eq!(out.code, 0, "{what}: {}\n{}", out.stdout, out.stderr);
    let report = c.report(&run);
    assert_eq!(report["status"], "succeeded", "{what}");
    let named = may_have_run(&report);
    assert!(
        named.len() <= 1,
        "{what}: more than one action in flight: {named:?}"
    );
    for h in hosts {
        assert_no_overlap(&c.read(h, "log"), &what);
        let begins = c.read(h, "log").matches("begin").count();
        assert!(
            (1..=2).contains(&begins),
            "{what}: {h} ran the long command {begins} times"
        );
        if begins == 2 {
            assert!(
                named
                    .iter()
                    .any(|m| m.starts_with(&format!("{h}:")) && m.contains("sleep 0.8")),
                "{what}: the long command ran twice on {h} but is not reported: {named:?}"
            );
        }
        assert_eq!(c.read(h, "conf"), "new\n", "{what}");
    }
    // The last moments can fall in the step after (how long the step takes depends on the
    // machine): its command in flight is the one that may run twice there.
    assert_counted_once(
        c,
        hosts,
        &["count-a", "count-b", "count-c", "count-d"],
        &named,
        &what,
    );
    // The kill can come after the long step ended (in the step after it): a resume skips a
    // finished step whole, so none of its actions belong to the second attempt.
    let upgrade = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "upgrade")
        .expect("the upgrade step is in the report");
    if upgrade["attempt"] == 1 {
        assert_eq!(upgrade["status"], "ok", "{what}");
        let again = report["actions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["attempt"] == 2 && a["step"] == "upgrade")
            .count();
        assert_eq!(again, 0, "{what}: a finished step ran again");
        return;
    }
    // What the first attempt finished before the kill was replayed, not run again.
    let replayed = report["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["attempt"] == 2 && a["disposition"] == "replayed")
        .count();
    let first_done = report["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["attempt"] == 1 && a["step"] == "upgrade" && a["op"] != "read")
        .count();
    assert!(
        replayed + 1 >= first_done.min(10),
        "{what}: attempt 1 finished {first_done} actions, attempt 2 replayed {replayed}"
    );
}

#[test]
fn kill_9_at_twenty_moments_of_a_long_step_then_an_immediate_resume_never_overlaps_or_repeats() {
    let c = Cluster::new();
    let ssh = c.inventory("inv.toml", &[1, 2], "");
    let local = local_inventory(&c);
    // The step takes about 2.6 s for two hosts; ten moments each, over SSH and locally.
    for d in moments(10, 2800) {
        kill_then_resume(&c, &ssh, &["h1", "h2"], d);
    }
    // Locally the step is shorter (no SSH round trips).
    for d in moments(10, 2300) {
        kill_then_resume(&c, &local, &["l1", "l2"], d);
    }
}

/// A change per host whose undo does three things, the second long; then a failure.
const UNDOS: &str = r#"
let hosts = cluster().hosts();
step("change", || {
    for h in hosts {
        h.shell(`echo x >> ${h.path("changed")}`);
        undo(`undo on ${h.name}`, || {
            h.shell(`echo u1 >> ${h.path("count-u1")}`);
            h.shell(`echo "begin $$" >> ${h.path("log")}; sleep 0.8; echo "end $$" >> ${h.path("log")}`);
            h.shell(`echo u2 >> ${h.path("count-u2")}; sleep 0.2`);
        });
    }
});
step("break", || fail("broken on purpose"));
"#;

#[test]
fn a_rollback_killed_mid_way_and_run_again_at_once_repeats_no_finished_undo_action() {
    let c = Cluster::new();
    let inv = c.inventory("inv.toml", &[1, 2], "");
    let hosts = ["h1", "h2"];
    // Two undos of about 1.1 s each.
    for d in moments(6, 2200) {
        let what = format!("rollback killed after {d:?}");
        wipe(&c, &hosts);
        let pb = c.write("undos.rhai", UNDOS);
        let out = c.capstan(&["run", pb.to_str().unwrap(), "-i", inv.to_str().unwrap()]);
        assert_eq!(out.code, 1, "{what}: {}", out.stderr);
        let run = run_id(&out);
        let mut r = c.spawn(&["rollback", &run, "--yes"]);
        r.wait_for("the first undo's first action", |v| {
            v["event"] == "action" && v["step"].as_str().is_some_and(|s| s.starts_with("undo #"))
        });
        std::thread::sleep(d);
        r.kill9();
        if c.report(&run)["status"] == "rolled_back" {
            // The kill came after the rollback's end (the last moments are near it, and how
            // long the undos take depends on the machine): nothing may have run twice.
            for h in hosts {
                assert_no_overlap(&c.read(h, "log"), &what);
                for f in ["count-u1", "count-u2"] {
                    assert_eq!(c.count(h, f), 1, "{what}: {f} on {h}");
                }
            }
            continue;
        }
        let out = c.capstan(&["rollback", &run, "--yes"]);
        assert_eq!(out.code, 0, "{what}: {}\n{}", out.stdout, out.stderr);
        let report = c.report(&run);
        assert_eq!(report["status"], "rolled_back", "{what}");
        let named = may_have_run(&report);
        assert!(named.len() <= 1, "{what}: {named:?}");
        for h in hosts {
            assert_no_overlap(&c.read(h, "log"), &what);
            let begins = c.read(h, "log").matches("begin").count();
            assert!((1..=2).contains(&begins), "{what}: {h}: {begins}");
        }
        assert_counted_once(&c, &hosts, &["count-u1", "count-u2"], &named, &what);
    }
}

/// Processes on this machine (the sshd hosts' too) whose command line holds `needle`.
pub(crate) fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.chars().all(|c| c.is_ascii_digit()) || name == std::process::id().to_string() {
            continue;
        }
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) && !cmd.contains("cargo") {
                found.push(format!("{name}: {cmd}"));
            }
        }
    }
    found
}

/// Starts a one-step run of `sleep SECS` on h1 over SSH, sends `sig` twice, and checks that the
/// remote command is gone from the process table within a second of the second one.
fn a_second_signal_ends_the_remote_command(sig: &str, secs: &str) {
    let c = Cluster::new();
    let inv = c.inventory("inv.toml", &[1], "");
    let pb = c.write(
        "long.rhai",
        &format!(r#"step("long", || cluster().host("h1").run(["sleep", "{secs}"]));"#),
    );
    let needle = format!("sleep {secs}");
    let mut r = c.spawn(&["run", pb.to_str().unwrap(), "-i", inv.to_str().unwrap()]);
    r.wait_for("the step's start", |v| {
        step_event(v, "step_started", "long")
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes_with(&needle).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the remote command never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    r.signal(sig);
    std::thread::sleep(Duration::from_millis(200));
    r.signal(sig);
    let second = Instant::now();
    while !processes_with(&needle).is_empty() {
        assert!(
            second.elapsed() < Duration::from_secs(1),
            "the remote command outlived the second SIG{sig} by a second: {:?}",
            processes_with(&needle)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, _, err) = r.finish();
    assert_eq!(code, 3, "{err}");
}

/// A command the host lock's script serves (no session of its own, so no watcher beside it)
/// dies with its capstan all the same: after a `kill -9` mid-command the script's stdin ends, and
/// it kills the command with the process the command started, marks the marker orphaned, and
/// leaves the lock, as a killed run leaves it.
#[test]
fn a_served_command_and_what_it_started_die_with_a_killed_capstan() {
    let c = Cluster::new();
    let inv = c.inventory("inv.toml", &[1], "");
    let pb = c.write(
        "served.rhai",
        r#"step("long", || cluster().host("h1").run(["sh", "-c", "sleep 71.25 & sleep 71.5"]));"#,
    );
    let mut r = c.spawn(&["run", pb.to_str().unwrap(), "-i", inv.to_str().unwrap()]);
    r.wait_for("the step's start", |v| {
        step_event(v, "step_started", "long")
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes_with("sleep 71.5").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the remote command never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let run = r.kill9();
    let killed = Instant::now();
    loop {
        let left = [processes_with("sleep 71.25"), processes_with("sleep 71.5")].concat();
        if left.is_empty() {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(3),
            "outlived capstan: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let dir = Path::new("/root/.capstan/markers");
    let markers: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{run}.")))
        })
        .collect();
    assert_eq!(markers.len(), 1, "{markers:?}");
    let text = std::fs::read_to_string(&markers[0]).unwrap();
    // Served: the command's own pid and start time, and no process group of its own.
    assert!(
        text.starts_with("pid=") && text.contains("\nstart="),
        "{text}"
    );
    assert!(!text.contains("pgid="), "not served: {text}");
    assert_eq!(text.lines().last(), Some("state=orphaned"), "{text}");
    let _ = std::fs::remove_file(&markers[0]);
    let lock = c.lab.host_lock_dir();
    assert!(
        lock.join("holder").exists(),
        "the lock stays, as a killed run leaves it"
    );
    let _ = std::fs::remove_dir_all(lock);
}

#[test]
fn a_second_ctrl_c_over_ssh_ends_the_remote_command_within_a_second() {
    a_second_signal_ends_the_remote_command("INT", "61.25");
}

const SECRET: &str = "Zebra-S3cr3t-9431";

/// Every process on this machine whose argv or environment holds the secret, with its argv.
fn secret_holders() -> Vec<(String, &'static str, String)> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd_text = String::from_utf8_lossy(&cmd).replace('\0', " ");
        for file in ["cmdline", "environ"] {
            let bytes = std::fs::read(e.path().join(file)).unwrap_or_default();
            if bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()) {
                found.push((name.clone(), file, cmd_text.clone()));
            }
        }
    }
    found
}

#[test]
fn secrets_stay_out_of_the_process_table_and_the_journal_is_private() {
    let c = Cluster::new();
    let inv = c.inventory(
        "inv.toml",
        &[1],
        "\n[secrets]\npw = { env = \"CAPSTAN_IT_PW\" }\n",
    );
    let pb = c.write(
        "secrets.rhai",
        r#"
let h = cluster().host("h1");
step("hidden", || {
    h.run(["sh", "-c", `sleep 1.5; cat "$PWF" > ${h.path("from-file")}; cat > ${h.path("from-stdin")}`],
        #{ secret_files: #{ PWF: secret("pw") }, stdin: secret("pw") });
});
step("visible to the command only", || {
    h.run(["sh", "-c", `sleep 1.5; printf '%s' "$TOKEN" > ${h.path("from-env")}; printf '%s' "$1" > ${h.path("from-arg")}`,
        "sh", secret("pw")], #{ env: #{ TOKEN: secret("pw") } });
});
"#,
    );
    let r = c.spawn_env(
        &["run", pb.to_str().unwrap(), "-i", inv.to_str().unwrap()],
        &[("CAPSTAN_IT_PW", SECRET)],
    );
    // Sample the process table while the commands run. capstan itself holds the secret (the
    // operator gave it in its environment); on the host, only the second command was given it,
    // in its argv and environment, by the script: that process may hold it, and its children
    // (`sleep`) in their environment. Nothing else, and nothing of the first command.
    let capstan = r.pid().to_string();
    let second = |cmd: &str| cmd.starts_with("sh -c sleep 1.5; printf");
    // `None` when the process has ended since the scan (its parent cannot be told then: an
    // empty ppid would read /proc/cmdline, the kernel's).
    let parent_cmd = |pid: &str| -> Option<String> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))?
            .to_string();
        let cmd = std::fs::read(format!("/proc/{ppid}/cmdline")).ok()?;
        Some(String::from_utf8_lossy(&cmd).replace('\0', " "))
    };
    let mut leaks = Vec::new();
    let mut saw_second = false;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(8) {
        for (pid, file, cmd) in secret_holders() {
            if pid == capstan {
                continue;
            }
            let parent = parent_cmd(&pid);
            if parent.is_none() && file == "environ" && !second(&cmd) {
                // It ended between the scan and now: the next sample judges its siblings.
                continue;
            }
            let parent = parent.unwrap_or_default();
            let allowed = second(&cmd) || (file == "environ" && second(&parent));
            saw_second |= allowed;
            if !allowed {
                leaks.push(format!("{pid} {file}: {cmd} (parent: {parent})"));
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, _, err) = r.finish();
    assert_eq!(code, 0, "{err}");
    assert!(
        leaks.is_empty(),
        "a secret reached a process it was not given to: {leaks:#?}"
    );
    assert!(saw_second, "the sampler never saw the second command");
    for f in ["from-file", "from-stdin", "from-env", "from-arg"] {
        assert_eq!(c.read("h1", f), SECRET, "{f}");
    }
    // Nothing of it is left on the host: no spec file in the home, no secret file.
    let home = std::env::var("HOME").unwrap();
    let left: Vec<String> = std::fs::read_dir(&home)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".capstan-spec") || n.contains(".capstan-spec"))
        .collect();
    assert!(left.is_empty(), "spec files left in {home}: {left:?}");
    let secret_dirs: Vec<String> = std::fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("capstan-secret.")
        })
        .filter(|p| p.join("PWF").exists())
        .map(|p| p.display().to_string())
        .collect();
    assert!(secret_dirs.is_empty(), "secret files left: {secret_dirs:?}");
    // The journal and its WAL are readable by their owner only.
    for suffix in ["", "-wal", "-shm"] {
        let p = format!("{}{suffix}", c.journal().display());
        if let Ok(m) = std::fs::metadata(&p) {
            assert_eq!(m.permissions().mode() & 0o777, 0o600, "{p}");
        } else {
            assert!(!suffix.is_empty(), "no journal at {p}");
        }
    }
}

/// SIGTERM and SIGHUP are the first Ctrl-C: the running step finishes, the run stops before the
/// next one, the guard is restored, nothing it started is left running, and resume completes.
#[test]
fn sigterm_and_sighup_stop_at_the_step_boundary_and_the_run_resumes() {
    let c = Cluster::new();
    let inv = c.inventory("inv.toml", &[1], "");
    let pb = c.write(
        "guarded.rhai",
        r#"
let h = cluster().host("h1");
let flag = h.path("guard");
step("step 1", || guard("maintenance", || h.write_file(flag, "on"), || h.write_file(flag, "off")));
step("step 2", || h.run(["sleep", "1.55"]));
step("step 3", || if h.read_file(flag) != "on" { fail("the guard is not in effect"); });
"#,
    );
    let (inv, pb) = (inv.to_str().unwrap(), pb.to_str().unwrap());
    for sig in ["TERM", "HUP"] {
        let mut r = c.spawn(&["run", pb, "-i", inv]);
        r.wait_for("step 2", |v| step_event(v, "step_started", "step 2"));
        std::thread::sleep(Duration::from_millis(300));
        r.signal(sig);
        let run = {
            let (code, events, err) = r.finish();
            assert_eq!(code, 3, "SIG{sig}: {err}\n{events:?}");
            let all = events.join("\n");
            assert!(
                all.contains(r#""event":"step_finished","step":"step 2","ok":true"#),
                "SIG{sig}: {all}"
            );
            assert!(!all.contains(r#""step":"step 3""#), "SIG{sig}: {all}");
            assert!(err.contains(&format!("SIG{sig}")), "SIG{sig}: {err}");
            events
                .iter()
                .find_map(|l| {
                    let v: Value = serde_json::from_str(l).ok()?;
                    (v["event"] == "run_started").then(|| v["run_id"].as_str().unwrap().to_string())
                })
                .unwrap()
        };
        assert_eq!(
            c.read("h1", "guard"),
            "off",
            "SIG{sig}: the guard was restored"
        );
        // The command ended with its step; its wrapper's watcher (whose command line holds
        // the command's) notices within a poll (0.25 s) and exits: allow it a loaded machine's
        // second or two, not more.
        let ended = Instant::now();
        while !processes_with("sleep 1.55").is_empty() {
            assert!(
                ended.elapsed() < Duration::from_secs(2),
                "SIG{sig}: left running: {:?}",
                processes_with("sleep 1.55")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(c.report(&run)["status"], "interrupted");
        let out = c.capstan(&["resume", &run]);
        assert_eq!(out.code, 0, "SIG{sig}: {}\n{}", out.stdout, out.stderr);
        assert_eq!(c.report(&run)["status"], "succeeded");
    }

    // A second SIGTERM kills the running command, on the host too.
    a_second_signal_ends_the_remote_command("TERM", "61.5");
}

/// A run whose process was killed shows as killed in `capstan runs`, not as running.
#[test]
fn runs_shows_a_killed_run_as_killed() {
    let c = Cluster::new();
    let inv = c.inventory("inv.toml", &[1], "");
    let pb = c.write(
        "slow.rhai",
        r#"step("long", || cluster().host("h1").run(["sleep", "3"]));"#,
    );
    let mut r = c.spawn(&["run", pb.to_str().unwrap(), "-i", inv.to_str().unwrap()]);
    r.wait_for("the step's start", |v| {
        step_event(v, "step_started", "long")
    });
    let run = r.kill9();
    let out = c.capstan(&["runs"]);
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with(&run))
        .unwrap_or_else(|| panic!("{}", out.stdout));
    assert!(line.contains("killed (pid gone)"), "{line}");
    let out = c.capstan(&["runs", "--json"]);
    let runs: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(runs[0]["process_gone"], true, "{runs}");
    assert_eq!(runs[0]["status"], "running");
}

/// A run killed after its last step, before its end: its resume changes nothing (so takes no
/// host lock of its own), yet releases the locks the killed attempt held, and the next run on
/// those hosts is not refused.
#[test]
fn a_resume_that_changes_nothing_releases_the_host_locks_of_the_attempt_it_resumes() {
    let c = Cluster::new();
    let inv = c.inventory("inv.toml", &[1, 2], "");
    wipe(&c, &["h1", "h2"]);
    let gate = c.root("h1").join("gate");
    std::fs::write(&gate, "").unwrap();
    let pb = c.write(
        "gated.rhai",
        r#"let hosts = cluster().hosts();
step("work", || {
    for h in hosts { h.shell(`echo x >> ${h.path("count")}`); }
});
// After the last step, outside every step: waits while the test's gate file is there.
while hosts[0].exists(hosts[0].path("gate")) { wait::sleep(0.2); }
"#,
    );
    let (pb, inv) = (pb.to_str().unwrap(), inv.to_str().unwrap());
    let mut r = c.spawn(&["run", pb, "-i", inv]);
    r.wait_for("the step's end", |v| step_event(v, "step_finished", "work"));
    let run = r.kill9();
    assert_ne!(c.report(&run)["status"], "succeeded");
    std::fs::remove_file(&gate).unwrap();
    let out = c.capstan(&["resume", &run]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(c.report(&run)["status"], "succeeded");
    let out = c.capstan(&["run", pb, "-i", inv]);
    assert_eq!(out.code, 0, "the next run was refused: {}", out.stderr);
    for h in ["h1", "h2"] {
        assert_eq!(c.count(h, "count"), 2, "{h}");
    }
}
