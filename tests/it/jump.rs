//! Real networks: hosts behind one and two bastions (sshd in network namespaces this test
//! builds, each reachable only from the one before it), `~/.ssh/config` with aliases, `Include`,
//! `IdentityFile` and `ProxyJump`, ssh-agent, and a bastion lost in the middle of a command.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{binary_in, last_report, outcome_error, output_of, repo, report_or_null, Out};

/// lab/jump-lab.sh: b1 (reachable), b2 (only from b1), t (only from b2); stopped on drop.
struct JumpLab {
    dir: tempfile::TempDir,
    tag: u32,
}

impl JumpLab {
    fn start() -> JumpLab {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        // Apart from other test processes' labs (the pid) and this process's other tests.
        let tag = 1 + (std::process::id() * 7 + NEXT.fetch_add(1, Ordering::SeqCst)) % 250;
        let dir = tempfile::Builder::new()
            .prefix("capstan-jump")
            .tempdir()
            .unwrap();
        let out = Command::new(repo().join("lab/jump-lab.sh"))
            .arg("start")
            .arg(dir.path())
            .arg(tag.to_string())
            .output()
            .unwrap();
        let lab = JumpLab { dir, tag };
        assert!(
            out.status.success(),
            "jump-lab start failed (it needs root and iproute2: scripts/test.sh): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The hello example's apps, one per host (the namespaces share this file system).
        let hello = Command::new("sh")
            .arg(repo().join("examples/hello/lab.sh"))
            .arg(lab.path("hello"))
            .output()
            .unwrap();
        assert!(hello.status.success());
        lab
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn b1(&self) -> String {
        format!("10.250.{}.2", self.tag)
    }
    fn b2(&self) -> String {
        format!("10.251.{}.2", self.tag)
    }
    fn t(&self) -> String {
        format!("10.252.{}.2", self.tag)
    }

    /// Logins each instance accepted so far (its sshd logs at INFO).
    fn logins(&self, which: &str) -> usize {
        let port = if which == "b1" { 2222 } else { 22 };
        std::fs::read_to_string(self.path(&format!("{which}/h{port}/sshd.log")))
            .unwrap_or_default()
            .matches("Accepted publickey")
            .count()
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// The binary, hermetic: HOME is the lab's directory (no ~/.ssh of this machine), and the
    /// journal is the lab's.
    fn capstan(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        output_of(
            binary_in(self.dir.path())
                .env("HOME", self.path("home"))
                .env_remove("SSH_AUTH_SOCK")
                .envs(env.iter().copied())
                .args(args),
        )
    }

    fn hello(&self, inv: &Path, extra: &[&str], env: &[(&str, &str)]) -> (Out, Value) {
        let pb = repo().join("examples/hello/playbook.rhai");
        let release = format!("release={}", self.path("hello/release").display());
        let mut args = vec![
            "run",
            pb.to_str().unwrap(),
            "-i",
            inv.to_str().unwrap(),
            "-p",
            &release,
            "--json",
            "--yes",
        ];
        args.extend_from_slice(extra);
        let out = self.capstan(&args, env);
        let report = report_or_null(&out.stdout);
        (out, report)
    }

    fn version(&self, app: &str) -> String {
        std::fs::read_to_string(self.path(&format!("hello/{app}/VERSION")))
            .unwrap()
            .trim()
            .to_string()
    }
}

impl Drop for JumpLab {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("lab/jump-lab.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .arg(self.tag.to_string())
            .output();
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

/// app1 on b2 (one bastion), app2 and app3 on t (two), key auth from the inventory.
fn bastion_inventory(lab: &JumpLab, app2_jump: &str) -> String {
    format!(
        r#"[defaults]
transport = "ssh"
user = "root"
known_hosts = "{kh}"
auth = {{ key = "{key}" }}
groups = ["app"]
connect_timeout = "5s"

[hosts.app1]
address = "{b2}"
jump = "{b1}:2222"
vars = {{ root = "{hello}/app1" }}

[hosts.app2]
address = "{t}"
jump = {app2_jump}
vars = {{ root = "{hello}/app2" }}

[hosts.app3]
address = "{t}"
jump = ["{b1}:2222", "root@{b2}"]
vars = {{ root = "{hello}/app3" }}
"#,
        kh = lab.path("known_hosts").display(),
        key = lab.path("id_ed25519").display(),
        b1 = lab.b1(),
        b2 = lab.b2(),
        t = lab.t(),
        hello = lab.path("hello").display(),
    )
}

#[test]
fn hosts_behind_one_and_two_bastions_upgrade_with_one_session_per_bastion() {
    let lab = JumpLab::start();
    let two = format!("\"{}:2222,{}\"", lab.b1(), lab.b2());
    let inv = lab.write("inv.toml", &bastion_inventory(&lab, &two));

    // Nothing on this machine reaches b2 or t directly.
    let direct = lab.write(
        "direct.toml",
        &bastion_inventory(&lab, "\"none\"")
            .replace(&format!("jump = \"{}:2222\"\n", lab.b1()), ""),
    );
    let (out, report) = lab.hello(&direct, &[], &[]);
    assert_ne!(out.code, 0);
    let e = outcome_error(&report);
    // (The playbook's first action reads app1: that is where the run stops.)
    assert!(
        e.contains(&format!("app1: cannot connect to {}:22", lab.b2()))
            && e.contains("No route to host"),
        "{e}"
    );
    assert_eq!(lab.version("app1"), "1.0.0");

    // A host that is down behind working bastions is the host's failure, not theirs.
    let down = lab.write(
        "down.toml",
        &bastion_inventory(&lab, &two).replace(
            &format!("address = \"{}\"\njump = \"{}:2222\"", lab.b2(), lab.b1()),
            &format!("address = \"{}\"\nport = 2399\njump = {two}", lab.t()),
        ),
    );
    let (_, report) = lab.hello(&down, &[], &[]);
    let e = outcome_error(&report);
    assert!(
        e.contains(&format!(
            "app1: cannot connect to {t}:2399: through bastion root@{}:22: the bastion could not connect to {t}:2399",
            lab.b2(),
            t = lab.t()
        )),
        "{e}"
    );

    let (out, report) = lab.hello(&inv, &[], &[]);
    succeeded(&out, &report);
    for app in ["app1", "app2", "app3"] {
        assert_eq!(lab.version(app), "1.1.0", "{app}");
    }
    // One session to b1 for all three hosts; to b2 one for app1 and one that carries t's two.
    // (Plus the try with the host down: one login to each bastion.)
    assert_eq!(lab.logins("b1"), 1 + 1, "b1 logins");
    assert_eq!(lab.logins("b2"), 2 + 1, "b2 logins");
    assert_eq!(lab.logins("t"), 2, "t logins");

    // A shipped playbook's preflight through the same bastions.
    let out = lab.capstan(
        &["run", "preflight", "-i", inv.to_str().unwrap(), "--json"],
        &[],
    );
    succeeded(&out, &last_report(&out.stdout));
}

#[test]
fn a_wrong_or_unknown_bastion_host_key_is_refused_naming_the_bastion() {
    let lab = JumpLab::start();
    let two = format!("\"{}:2222,{}\"", lab.b1(), lab.b2());
    let text = bastion_inventory(&lab, &two);
    let known = std::fs::read_to_string(lab.path("known_hosts")).unwrap();
    let b1_line = known.lines().next().unwrap().to_string();
    let t_key: Vec<&str> = known
        .lines()
        .nth(2)
        .unwrap()
        .split_whitespace()
        .skip(1)
        .collect();
    let b1 = format!("root@{}:2222", lab.b1());

    // b1's line now holds another server's key: someone else answers as the bastion.
    let forged = known.replace(
        &b1_line,
        &format!("[{}]:2222 {}", lab.b1(), t_key.join(" ")),
    );
    lab.write("forged_known_hosts", &forged);
    let inv = lab.write(
        "forged.toml",
        &text.replace(
            lab.path("known_hosts").to_str().unwrap(),
            lab.path("forged_known_hosts").to_str().unwrap(),
        ),
    );
    let (out, report) = lab.hello(&inv, &[], &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let e = outcome_error(&report);
    assert!(
        e.contains(&format!("through bastion {b1}: HOST KEY MISMATCH")),
        "{e}"
    );
    assert_eq!(lab.version("app2"), "1.0.0");

    // b1's line is missing: unknown, refused (strict), with the fingerprint to check.
    lab.write(
        "partial_known_hosts",
        &known.replace(&format!("{b1_line}\n"), ""),
    );
    let inv = lab.write(
        "partial.toml",
        &text.replace(
            lab.path("known_hosts").to_str().unwrap(),
            lab.path("partial_known_hosts").to_str().unwrap(),
        ),
    );
    let (_, report) = lab.hello(&inv, &[], &[]);
    let e = outcome_error(&report);
    assert!(
        e.contains(&format!(
            "through bastion {b1}: host key of {}:2222 is not in",
            lab.b1()
        )) && e.contains("SHA256:"),
        "{e}"
    );
    assert_eq!(lab.logins("t"), 0, "nothing reached the hosts behind it");
}

#[test]
fn ssh_config_aliases_include_identityfile_and_proxyjump_are_honoured_and_the_inventory_wins() {
    let lab = JumpLab::start();
    let (kh, key) = (lab.path("known_hosts"), lab.path("id_ed25519"));
    std::fs::create_dir_all(lab.path("conf.d")).unwrap();
    lab.write(
        "conf.d/bastions",
        &format!(
            "Host bast1\n  HostName {b1}\n  Port 2222\n  User root\n\nHost bast1 10.251.*\n  IdentityFile {key}\n  UserKnownHostsFile {kh}\n",
            b1 = lab.b1(),
            key = key.display(),
            kh = kh.display()
        ),
    );
    let config = lab.write(
        "ssh_config",
        &format!(
            "Include {inc}/*\n\nHost app-far\n  HostName {t}\n  Port 22\n\nHost app-*\n  User root\n  Port 2200\n  ProxyJump bast1,{b2}\n  IdentityFile {key}\n  UserKnownHostsFile {kh}\n",
            inc = lab.path("conf.d").display(),
            t = lab.t(),
            b2 = lab.b2(),
            key = key.display(),
            kh = kh.display()
        ),
    );
    // app-far: everything from the file. app-near: the inventory's address, port and jump win.
    let inv_text = format!(
        "[defaults]\ngroups = [\"app\"]\n\n[hosts.app-far]\nvars = {{ root = \"{h}/app1\" }}\n\n[hosts.app-near]\naddress = \"{b2}\"\nport = 22\njump = \"bast1\"\nvars = {{ root = \"{h}/app2\" }}\n",
        h = lab.path("hello").display(),
        b2 = lab.b2()
    );
    let inv = lab.write("inv.toml", &inv_text);
    let cfg = config.to_str().unwrap();

    let out = lab.capstan(
        &[
            "-F",
            cfg,
            "inventory",
            "show",
            "-i",
            inv.to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let shown: Value = serde_json::from_str(&out.stdout).unwrap();
    let far = &shown["hosts"][0];
    assert_eq!(far["name"], "app-far");
    assert_eq!(far["address"], lab.t());
    assert_eq!(far["port"], 22);
    assert_eq!(far["user"], "root");
    assert_eq!(far["jump"][0]["address"], lab.b1());
    assert_eq!(far["jump"][0]["port"], 2222);
    assert_eq!(far["jump"][0]["spec"], "bast1");
    assert_eq!(far["jump"][1]["address"], lab.b2());
    assert_eq!(far["known_hosts"], kh.to_str().unwrap());
    for k in ["address", "port", "user", "jump", "known_hosts", "auth"] {
        assert!(
            far["origins"][k]
                .as_str()
                .unwrap()
                .starts_with("ssh_config "),
            "{k}: {}",
            far["origins"]
        );
    }
    let near = &shown["hosts"][1];
    assert_eq!(
        near["port"], 22,
        "the inventory's port wins over `Port 2200`"
    );
    assert_eq!(near["origins"]["port"], "hosts.app-near");
    assert_eq!(near["jump"].as_array().unwrap().len(), 1);
    assert_eq!(near["origins"]["jump"], "hosts.app-near");
    assert_eq!(near["origins"]["host_key_policy"], "built-in");
    // The text form says the same, one setting per line with its origin.
    let text = lab.capstan(
        &["-F", cfg, "inventory", "show", "-i", inv.to_str().unwrap()],
        &[],
    );
    let jump_line = format!("root@{}:2222 -> root@{}:22 ", lab.b1(), lab.b2());
    assert!(
        text.stdout.lines().any(|l| l.starts_with("  jump ")
            && l.contains(&jump_line)
            && l.ends_with(&format!("(ssh_config {cfg})"))),
        "{}",
        text.stdout
    );

    let (out, report) = lab.hello(&inv, &["-F", cfg], &[]);
    succeeded(&out, &report);
    assert_eq!(lab.version("app1"), "1.1.0");
    assert_eq!(lab.version("app2"), "1.1.0");

    // The inventory says "no bastion" for app-far: the file's ProxyJump is not used, and t is
    // out of reach.
    let direct = lab.write(
        "direct.toml",
        &inv_text.replace("[hosts.app-far]\n", "[hosts.app-far]\njump = \"none\"\n"),
    );
    let (out, report) = lab.hello(&direct, &["-F", cfg], &[]);
    assert_ne!(out.code, 0);
    let e = outcome_error(&report);
    assert!(
        e.contains(&format!("app-far: cannot connect to {}:22", lab.t())),
        "{e}"
    );
    // Without the file, `app-far` is only a name that does not resolve.
    let (_, report) = lab.hello(&inv, &["-F", "none"], &[]);
    let e = outcome_error(&report);
    assert!(e.contains("app-far: cannot resolve address app-far"), "{e}");
    // A file that is not there is an error naming it, before anything runs.
    let out = lab.capstan(
        &[
            "-F",
            "nope.conf",
            "inventory",
            "show",
            "-i",
            inv.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("nope.conf"), "{}", out.stderr);
}

/// A real ssh-agent holding the lab's key; killed on drop.
struct Agent {
    sock: PathBuf,
    pid: String,
}

impl Agent {
    fn start(dir: &Path, key: &Path) -> Agent {
        let sock = dir.join("agent.sock");
        let out = Command::new("ssh-agent")
            .arg("-a")
            .arg(&sock)
            .arg("-s")
            .output()
            .expect("ssh-agent (openssh-client)");
        let text = String::from_utf8_lossy(&out.stdout);
        let pid = text
            .split("SSH_AGENT_PID=")
            .nth(1)
            .and_then(|r| r.split(';').next())
            .expect("ssh-agent printed its pid")
            .to_string();
        let add = Command::new("ssh-add")
            .arg(key)
            .env("SSH_AUTH_SOCK", &sock)
            .output()
            .unwrap();
        assert!(
            add.status.success(),
            "{}",
            String::from_utf8_lossy(&add.stderr)
        );
        Agent { sock, pid }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(&self.pid).output();
    }
}

#[test]
fn ssh_agent_authenticates_the_bastions_and_the_hosts_with_no_key_file() {
    let lab = JumpLab::start();
    // The key moves into the agent and out of every place capstan could read it from.
    let key = lab.path("agent_key");
    std::fs::rename(lab.path("id_ed25519"), &key).unwrap();
    let agent = Agent::start(lab.dir.path(), &key);
    std::fs::remove_file(&key).unwrap();
    let two = format!("\"{}:2222,{}\"", lab.b1(), lab.b2());
    let text = bastion_inventory(&lab, &two);
    let no_auth: String = text
        .lines()
        .filter(|l| !l.starts_with("auth = "))
        .map(|l| format!("{l}\n"))
        .collect();
    let inv = lab.write("inv.toml", &no_auth);
    let sock = agent.sock.to_str().unwrap().to_string();

    // Without the agent nothing authenticates, and the error says what was tried.
    let (out, report) = lab.hello(&inv, &[], &[]);
    assert_ne!(out.code, 0);
    let e = outcome_error(&report);
    assert!(
        e.contains("authentication as root failed (default): no method worked (tried agent)"),
        "{e}"
    );
    let (out, report) = lab.hello(&inv, &[], &[("SSH_AUTH_SOCK", &sock)]);
    succeeded(&out, &report);
    assert_eq!(lab.version("app3"), "1.1.0");
}

#[test]
fn losing_the_bastion_mid_command_fails_the_hosts_behind_it_naming_the_bastion() {
    let lab = JumpLab::start();
    let two = format!("\"{}:2222,{}\"", lab.b1(), lab.b2());
    let inv = lab.write("inv.toml", &bastion_inventory(&lab, &two));
    let pb = lab.write(
        "long.rhai",
        "let hosts = cluster().hosts();\nstep(\"long\", || { parallel(hosts, |h| { h.shell(\"sleep 20\"); }); });\n",
    );
    let child = binary_in(lab.dir.path())
        .env("HOME", lab.path("home"))
        .args([
            "run",
            pb.to_str().unwrap(),
            "-i",
            inv.to_str().unwrap(),
            "--json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the three commands run (each host's session is up), then kill everything in
    // b1's namespace: its sshd and every session it carries.
    let start = Instant::now();
    while lab.logins("t") < 2 || lab.logins("b2") < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the hosts never logged in"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let killed = Instant::now();
    let pids = Command::new("ip")
        .args(["netns", "pids", &format!("capj{}-b1", lab.tag)])
        .output()
        .unwrap();
    for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
        let _ = Command::new("kill").args(["-9", pid]).output();
    }
    let out = child.wait_with_output().unwrap();
    let waited = killed.elapsed();
    let report = last_report(&String::from_utf8_lossy(&out.stdout));
    let e = outcome_error(&report);
    assert!(
        e.contains(&format!(
            "through bastion root@{}:2222: the connection to the bastion was lost",
            lab.b1()
        )),
        "{e}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        waited < Duration::from_secs(10),
        "the loss took {waited:?} to notice (the commands run 20 s)"
    );
}
