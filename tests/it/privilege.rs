//! `become`: a login without root runs privileged commands and writes through sudo, with no
//! password or with one from a secret that shows up nowhere; sudo refusing fails fast and says
//! why; a command under sudo still dies with its capstan.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{
    binary_in, last_report, outcome_error, output_of, repo, report_or_null, Lab, Out,
};

const PASSWORD: &str = "capstan-sudo-pw";

/// The users scripts/test.sh makes: with sudo and no password, with a password, without sudo.
fn users_exist() {
    for u in ["capstan-sudo", "capstan-sudopw", "capstan-nosudo"] {
        let ok = Command::new("id").arg(u).output().unwrap().status.success();
        assert!(
            ok,
            "user {u} is missing: run scripts/test.sh (it makes the become test users)"
        );
    }
}

struct Case {
    lab: Lab,
    dir: tempfile::TempDir,
}

impl Drop for Case {
    /// A killed run's host lock outlives it (its lease): the case's own goes with the case.
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(format!(
            "/tmp/capstan-host-lock.{}",
            self.dir.path().file_name().unwrap().to_string_lossy()
        ));
    }
}

impl Case {
    fn new() -> Case {
        users_exist();
        let lab = Lab::start(1);
        // The lab's files must be readable by the logins (tempdirs are 0700, root's).
        for p in [lab.dir.path().to_path_buf(), lab.path("id_ed25519")] {
            let mode = if p.is_dir() { 0o755 } else { 0o644 };
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .unwrap();
        }
        let dir = tempfile::Builder::new()
            .prefix("capstan-become")
            .tempdir()
            .unwrap();
        // Root's, world-readable: a login may read the apps but change nothing without sudo.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let out = Command::new("sh")
            .arg(repo().join("examples/hello/lab.sh"))
            .arg(dir.path().join("hello"))
            .output()
            .unwrap();
        assert!(out.status.success());
        Case { lab, dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn inventory(&self, login: &str, extra: &str) -> PathBuf {
        // sudo resets the environment: the lab's CAPSTAN_HOST_LOCK does not reach a lock taken
        // through `become`, so each case names its own.
        let lock = format!(
            "/tmp/capstan-host-lock.{}",
            self.dir.path().file_name().unwrap().to_string_lossy()
        );
        let text = format!(
            "[defaults]\ntransport = \"ssh\"\naddress = \"127.0.0.1\"\nport = {port}\nuser = \"{login}\"\nknown_hosts = \"{kh}\"\nauth = {{ key = \"{key}\" }}\nconnect_timeout = \"5s\"\ngroups = [\"app\"]\nhost_lock = \"{lock}\"\n{extra}\n[hosts.app1]\nvars = {{ root = \"{hello}/app1\" }}\n",
            port = self.lab.ports[0],
            kh = self.lab.path("known_hosts").display(),
            key = self.lab.path("id_ed25519").display(),
            hello = self.path("hello").display(),
        );
        let p = self.path(&format!("inv-{login}.toml"));
        std::fs::write(&p, text).unwrap();
        p
    }

    fn capstan(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        output_of(
            binary_in(self.dir.path())
                .envs(env.iter().copied())
                .args(args),
        )
    }

    fn run(&self, pb: &Path, inv: &Path, extra: &[&str], env: &[(&str, &str)]) -> (Out, Value) {
        let mut args = vec![
            "run",
            pb.to_str().unwrap(),
            "-i",
            inv.to_str().unwrap(),
            "--json",
            "--yes",
        ];
        args.extend_from_slice(extra);
        let out = self.capstan(&args, env);
        let report = report_or_null(&out.stdout);
        (out, report)
    }

    fn hello(&self, inv: &Path, env: &[(&str, &str)]) -> (Out, Value) {
        let release = format!("release={}", self.path("hello/release").display());
        self.run(
            &repo().join("examples/hello/playbook.rhai"),
            inv,
            &["-p", &release],
            env,
        )
    }
}

fn succeeded(out: &Out, report: &Value) {
    assert_eq!(
        report["outcome"]["status"],
        "succeeded",
        "exit {}: {}\nstderr: {}",
        out.code,
        outcome_error(report),
        out.stderr
    );
}

/// The last stdout of a step's commands, by the report's action results.
fn outputs(report: &Value) -> Vec<String> {
    report["logs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["message"].as_str())
        .map(str::to_string)
        .collect()
}

const WHO: &str = r#"
let h = cluster().host("app1");
step("who", || {
    log(`id ${h.run(["id", "-un"]).stdout.trimmed()}`);
    log(`stdin ${h.run(["cat"], #{ stdin: "piped" }).stdout}`);
    log(`cwd ${h.run(["pwd"], #{ cwd: "/" }).stdout.trimmed()} env ${h.shell("echo $CAPSTAN_X", #{ env: #{ CAPSTAN_X: "y" } }).stdout.trimmed()}`);
    h.write_file(h.hostvar("root") + "/owned", "new\n", #{ mode: 0o640 });
    h.write_file(h.hostvar("root") + "/fresh", "new\n");
});
"#;

#[test]
fn a_login_without_root_upgrades_and_writes_as_root_through_sudo() {
    let c = Case::new();
    let app1 = c.path("hello/app1");
    // A file of another user's, which a write through sudo replaces and must leave theirs.
    std::fs::write(app1.join("owned"), "old\n").unwrap();
    let nosudo = uid_of("capstan-nosudo");
    std::os::unix::fs::chown(app1.join("owned"), Some(nosudo), Some(nosudo)).unwrap();

    // Without become the login cannot change root's files: the run fails.
    let (out, report) = c.hello(&c.inventory("capstan-sudo", ""), &[]);
    assert_ne!(out.code, 0);
    assert!(
        outcome_error(&report).contains("ermission denied"),
        "{}",
        outcome_error(&report)
    );
    assert_eq!(
        std::fs::read_to_string(app1.join("VERSION")).unwrap(),
        "1.0.0\n"
    );

    let inv = c.inventory("capstan-sudo", "become = true\n");
    let (out, report) = c.hello(&inv, &[]);
    succeeded(&out, &report);
    assert_eq!(
        std::fs::read_to_string(app1.join("VERSION")).unwrap(),
        "1.1.0\n"
    );
    // A shipped playbook, unchanged, by the same login.
    let out = c.capstan(
        &["run", "preflight", "-i", inv.to_str().unwrap(), "--json"],
        &[],
    );
    assert_eq!(
        last_report(&out.stdout)["outcome"]["status"],
        "succeeded",
        "{}",
        out.stderr
    );
    // The undos run with the same privilege: a rollback of this run puts 1.0.0 back.
    let run = report["run_id"].as_str().unwrap().to_string();
    let out = c.capstan(&["rollback", &run, "--yes", "--json"], &[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(
        std::fs::read_to_string(app1.join("VERSION")).unwrap(),
        "1.0.0\n"
    );

    let pb = c.path("who.rhai");
    std::fs::write(&pb, WHO).unwrap();
    let (out, report) = c.run(&pb, &inv, &[], &[]);
    succeeded(&out, &report);
    let logs = outputs(&report);
    assert!(logs.contains(&"id root".to_string()), "{logs:?}");
    assert!(logs.contains(&"stdin piped".to_string()), "{logs:?}");
    assert!(logs.contains(&"cwd / env y".to_string()), "{logs:?}");
    let owned = std::fs::metadata(app1.join("owned")).unwrap();
    assert_eq!(
        std::fs::read_to_string(app1.join("owned")).unwrap(),
        "new\n"
    );
    assert_eq!(owned.uid(), nosudo, "a replaced file keeps its owner");
    assert_eq!(owned.mode() & 0o777, 0o640, "and takes the mode asked");
    let fresh = std::fs::metadata(app1.join("fresh")).unwrap();
    assert_eq!(fresh.uid(), 0, "a new file is the become user's");
    assert_eq!(fresh.mode() & 0o777, 0o644);
    // No staged copy is left in the login's home.
    let home = std::fs::read_dir("/home/capstan-sudo").unwrap();
    let staged: Vec<_> = home
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".capstan-upload")
        })
        .collect();
    assert!(staged.is_empty(), "{staged:?}");

    // Another user than root.
    let inv = c.inventory("capstan-sudo", "become = \"capstan-nosudo\"\n");
    let pb = c.path("who2.rhai");
    std::fs::write(
        &pb,
        "let h = cluster().host(\"app1\");\nstep(\"who\", || log(`id ${h.run([\"id\", \"-un\"]).stdout.trimmed()}`));\n",
    )
    .unwrap();
    let (out, report) = c.run(&pb, &inv, &[], &[]);
    succeeded(&out, &report);
    assert!(outputs(&report).contains(&"id capstan-nosudo".to_string()));
}

fn uid_of(user: &str) -> u32 {
    let out = Command::new("id").args(["-u", user]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn a_sudo_password_from_a_secret_works_and_appears_nowhere() {
    let c = Case::new();
    let inv = c.inventory(
        "capstan-sudopw",
        "become = true\nbecome_password = { env = \"CAPSTAN_TEST_SUDO_PW\" }\n",
    );
    let pb = c.path("who.rhai");
    std::fs::write(&pb, WHO).unwrap();
    let (out, report) = c.run(&pb, &inv, &[], &[("CAPSTAN_TEST_SUDO_PW", PASSWORD)]);
    succeeded(&out, &report);
    let logs = outputs(&report);
    assert!(logs.contains(&"id root".to_string()), "{logs:?}");
    assert!(
        logs.contains(&"stdin piped".to_string()),
        "the command's stdin comes after the password line: {logs:?}"
    );
    // `inventory show` says how the host is reached, not the password.
    let shown = c.capstan(
        &[
            "inventory",
            "show",
            "-i",
            inv.to_str().unwrap(),
            "--json",
            "-F",
            "none",
        ],
        &[("CAPSTAN_TEST_SUDO_PW", PASSWORD)],
    );
    let v: Value = serde_json::from_str(&shown.stdout).unwrap();
    assert_eq!(v["hosts"][0]["become"]["user"], "root");
    assert_eq!(v["hosts"][0]["become"]["password"], true);
    assert_eq!(v["hosts"][0]["origins"]["become"], "defaults");
    assert!(!shown.stdout.contains(PASSWORD));
    let (out2, report2) = c.hello(&inv, &[("CAPSTAN_TEST_SUDO_PW", PASSWORD)]);
    succeeded(&out2, &report2);
    // Byte search: output, events, report, journal, the hosts' home.
    let run = report["run_id"].as_str().unwrap();
    let shown = c.capstan(&["report", run, "--json"], &[]);
    let journal = std::fs::read(c.path("journal.db")).unwrap();
    for (what, text) in [
        ("stdout", out.stdout.as_bytes()),
        ("stderr", out.stderr.as_bytes()),
        ("hello stdout", out2.stdout.as_bytes()),
        ("report", shown.stdout.as_bytes()),
        ("journal", &journal[..]),
    ] {
        assert!(
            !text
                .windows(PASSWORD.len())
                .any(|w| w == PASSWORD.as_bytes()),
            "the password is in the {what}"
        );
    }
}

#[test]
fn sudo_refusing_fails_fast_naming_host_login_and_reason_before_any_change() {
    let c = Case::new();
    let release = c.path("hello/app1/VERSION");
    for (login, extra, env, want) in [
        (
            "capstan-sudopw",
            "become = true\n",
            None,
            ": sudo: a password is required (set become_password in the inventory, or allow NOPASSWD)",
        ),
        (
            "capstan-sudopw",
            "become = true\nbecome_password = { env = \"CAPSTAN_TEST_SUDO_PW\" }\n",
            Some("not-the-password-42"),
            "(the become_password is wrong)",
        ),
        (
            "capstan-nosudo",
            "become = true\n",
            None,
            "sudo as root (login capstan-nosudo) refused",
        ),
    ] {
        let inv = c.inventory(login, extra);
        let env: Vec<(&str, &str)> = env
            .map(|v| vec![("CAPSTAN_TEST_SUDO_PW", v)])
            .unwrap_or_default();
        let start = Instant::now();
        let (out, report) = c.hello(&inv, &env);
        assert_ne!(out.code, 0);
        let e = outcome_error(&report);
        assert!(
            e.contains("app1: ") && e.contains(want),
            "{login}: {e}\nstderr: {}",
            out.stderr
        );
        assert!(start.elapsed() < Duration::from_secs(20), "{login}: slow");
        assert_eq!(std::fs::read_to_string(&release).unwrap(), "1.0.0\n");
    }
}

#[test]
fn a_command_under_sudo_still_dies_with_its_capstan() {
    let c = Case::new();
    let inv = c.inventory("capstan-sudo", "become = true\n");
    let pb = c.path("long.rhai");
    std::fs::write(
        &pb,
        "let h = cluster().host(\"app1\");\nstep(\"long\", || { h.shell(\"sleep 41.5\"); });\n",
    )
    .unwrap();
    let mut child = binary_in(c.dir.path())
        .args([
            "run",
            pb.to_str().unwrap(),
            "-i",
            inv.to_str().unwrap(),
            "--json",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let running = || {
        Command::new("pgrep")
            .args(["-u", "root", "-f", "^sleep 41.5"])
            .output()
            .unwrap()
            .status
            .success()
    };
    let start = Instant::now();
    while !running() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the command never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    let _ = child.wait();
    let killed = Instant::now();
    while running() {
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "the command under sudo outlived its capstan"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `h.become()` for some calls only: the login's own commands stay its own, the privileged ones
/// and their undos go through sudo, also in a rollback run by a later process.
const PER_CALL: &str = r#"
let h = cluster().host("app1");
let root = h.hostvar("root");
step("change", || {
    log(`login ${h.read(["id", "-un"]).stdout.trimmed()}`);
    log(`as ${h.become().read(["id", "-un"]).stdout.trimmed()}`);
    log(`as ${h.become("capstan-nosudo").read(["id", "-un"]).stdout.trimmed()}`);
    log(`option ${h.read(["id", "-un"], #{ become: true }).stdout.trimmed()}`);
    h.become().write_file(`${root}/VERSION`, "9.9.9\n");
    h.become().replace_dir(`${root}/bin`, `${root}/../release/bin`);
    let r = h.run(["sh", "-c", `echo x > ${root}/by-login`], #{ allow_fail: true });
    log(`login write refused ${r.code != 0}`);
});
step("break", || fail("broken on purpose"));
"#;

#[test]
fn become_for_some_calls_runs_them_and_their_undos_through_sudo() {
    let c = Case::new();
    let inv = c.inventory("capstan-sudo", "");
    let pb = c.path("per-call.rhai");
    std::fs::write(&pb, PER_CALL).unwrap();
    let app1 = c.path("hello/app1");
    let (out, report) = c.run(&pb, &inv, &[], &[]);
    assert_eq!(out.code, 1, "{}\n{}", outcome_error(&report), out.stderr);
    let logs = outputs(&report);
    for want in [
        "login capstan-sudo",
        "as root",
        "as capstan-nosudo",
        "option root",
        "login write refused true",
    ] {
        assert!(logs.contains(&want.to_string()), "{want}: {logs:?}");
    }
    assert_eq!(
        std::fs::read_to_string(app1.join("VERSION")).unwrap(),
        "9.9.9\n"
    );
    assert_eq!(
        std::fs::read_to_string(app1.join("bin/VERSION")).unwrap(),
        "1.1.0\n"
    );
    let plan: Vec<String> = report["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["description"].as_str().unwrap().to_string())
        .collect();
    assert!(
        plan.iter().any(|d| d.starts_with("as root: write ")),
        "the plan says which actions run as whom: {plan:?}"
    );
    // The rollback, another process, undoes the root-owned changes as root.
    let run = report["run_id"].as_str().unwrap().to_string();
    let out = c.capstan(&["rollback", &run, "--yes", "--json"], &[]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(
        std::fs::read_to_string(app1.join("VERSION")).unwrap(),
        "1.0.0\n"
    );
    assert_eq!(
        std::fs::read_to_string(app1.join("bin/VERSION")).unwrap(),
        "1.0.0\n"
    );
}
