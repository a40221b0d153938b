//! Test support: sshd labs on 127.0.0.1, the capstan binary, and in-process runs.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use capstan::{HostBuilder, Inventory, Mode, Params, Playbook, RunReport, Scenario};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A port of 127.0.0.1 that nothing listens on, for a test's server to bind later. Taken below
/// the kernel's ephemeral range (32768 and up by default), in order, never twice in a test
/// process: a port the kernel picks for `:0` can also go to an outgoing connection's source, or
/// to another test, in the moment before the first test's server binds it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Each process starts somewhere else in the span, so two test processes rarely overlap.
    let _ = NEXT.compare_exchange(
        0,
        1 + (std::process::id() * 997) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let port = (LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Real sshd instances on 127.0.0.1 (lab/sshd-lab.sh), each with its own host key; stopped on drop.
pub struct Lab {
    pub dir: tempfile::TempDir,
    pub ports: Vec<u16>,
}

impl Lab {
    pub fn start(n: usize) -> Lab {
        Self::start_with(&vec![""; n])
    }

    /// As `start`, with sshd logging at VERBOSE to `h<port>/sshd.log` (a session per line
    /// `Starting session:`), for tests that count what a run asks of the hosts.
    pub fn start_logged(n: usize) -> Lab {
        Self::start_env(&vec![""; n], &[("LAB_SSHD_LOGLEVEL", "VERBOSE")])
    }

    /// As `start`, with `config` appended to every instance's sshd_config.
    pub fn start_configured(n: usize, config: &str) -> Lab {
        Self::start_env(&vec![""; n], &[("LAB_SSHD_EXTRA", config)])
    }

    /// One instance per flag: "" for a normal one, "nosftp" for one without the SFTP subsystem.
    pub fn start_with(flags: &[&str]) -> Lab {
        Self::start_env(flags, &[])
    }

    fn start_env(flags: &[&str], env: &[(&str, &str)]) -> Lab {
        assert!(
            Path::new("/usr/sbin/sshd").exists() || which("sshd"),
            "sshd is not installed: run scripts/test.sh (it installs openssh-server)"
        );
        let dir = tempfile::Builder::new()
            .prefix("capstan-lab")
            .tempdir()
            .unwrap();
        let ports: Vec<u16> = flags.iter().map(|_| free_port()).collect();
        let specs: Vec<String> = ports
            .iter()
            .zip(flags)
            .map(|(p, f)| {
                if f.is_empty() {
                    p.to_string()
                } else {
                    format!("{p}:{f}")
                }
            })
            .collect();
        let out = Command::new(repo().join("lab/sshd-lab.sh"))
            .arg("start")
            .arg(dir.path())
            .args(&specs)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "sshd-lab start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lab = Lab { dir, ports };
        for p in &lab.ports {
            wait_listening(*p);
        }
        lab
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The host lock's directory on the lab's hosts (lab/sshd-lab.sh sets it with sshd's
    /// `SetEnv CAPSTAN_HOST_LOCK`).
    pub fn host_lock_dir(&self) -> PathBuf {
        PathBuf::from(format!(
            "/tmp/capstan-host-lock{}",
            self.dir.path().display().to_string().replace('/', ".")
        ))
    }

    /// The host key line of instance `i` as known_hosts writes it.
    pub fn host_key_line(&self, i: usize) -> String {
        let k = std::fs::read_to_string(self.path(&format!("h{}/host_key.pub", self.ports[i])))
            .unwrap();
        let parts: Vec<&str> = k.split_whitespace().take(2).collect();
        format!("[127.0.0.1]:{} {}", self.ports[i], parts.join(" "))
    }

    /// `[defaults]` lines for these instances: key auth with the lab's client key, strict known_hosts.
    pub fn defaults(&self) -> String {
        format!(
            "transport = \"ssh\"\naddress = \"127.0.0.1\"\nuser = \"root\"\nknown_hosts = \"{}\"\nauth = {{ key = \"{}\" }}\nconnect_timeout = \"5s\"\n",
            self.path("known_hosts").display(),
            self.path("id_ed25519").display()
        )
    }

    /// An inventory of hosts h1..hN on the lab's instances, plus `extra` TOML appended.
    pub fn inventory(&self, extra: &str) -> String {
        let mut s = format!("[defaults]\n{}", self.defaults());
        for (i, p) in self.ports.iter().enumerate() {
            s.push_str(&format!("\n[hosts.h{}]\nport = {p}\n", i + 1));
        }
        s.push_str(extra);
        s
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("lab/sshd-lab.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

fn which(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

pub fn wait_listening(port: u16) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "nothing listens on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn inventory(text: &str) -> Inventory {
    Inventory::from_str_at(text, "inventory.toml", Path::new(".")).unwrap()
}

/// Runs a playbook in-process (parallelism 8, confirmations granted) and returns the report.
pub fn run_playbook(
    inv: Inventory,
    mode: Mode,
    source: &str,
    params: &[(&str, &str)],
) -> RunReport {
    let host = HostBuilder::new()
        .inventory(inv)
        .mode(mode)
        .parallelism(8)
        .yes(true)
        .build()
        .unwrap();
    let params: Params = params
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
        .collect();
    host.run(&Playbook::from_source("test.rhai", source), &params)
        .unwrap()
}

pub fn simulate(scenario: &str, source: &str) -> RunReport {
    let sc = Scenario::from_str_at(scenario, "scenario.toml", Path::new(".")).unwrap();
    let host = HostBuilder::new().scenario(sc).build().unwrap();
    host.run(&Playbook::from_source("test.rhai", source), &Params::new())
        .unwrap()
}

/// The error message of a failed run, or a panic naming the unexpected success.
pub fn failure(r: &RunReport) -> (capstan::FaultKind, capstan::Located) {
    match &r.outcome {
        capstan::report::Outcome::Failed { kind, error } => (*kind, error.clone()),
        o => panic!("expected a failure, got {o:?}"),
    }
}

pub fn ok(r: &RunReport) {
    if let capstan::report::Outcome::Failed { error, .. }
    | capstan::report::Outcome::Interrupted { error } = &r.outcome
    {
        panic!("run failed: {}", error.render());
    }
}

/// The result of running the capstan binary.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// The binary run in `dir`, journaling to `dir/journal.db`, with nothing on stdin.
pub fn binary_in(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_capstan"));
    c.current_dir(dir)
        .arg("--journal")
        .arg(dir.join("journal.db"))
        .stdin(std::process::Stdio::null());
    c
}

/// Runs a command to its end: its exit code and output.
pub fn output_of(c: &mut Command) -> Out {
    let out = c.output().unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn capstan(args: &[&str]) -> Out {
    capstan_in(&repo(), args)
}

/// The capstan binary with a journal of its own (tests run in parallel: a shared journal would
/// make their runs on `localhost` hold each other's lock). Tests that read the journal back
/// pass `--journal` themselves.
pub fn capstan_cmd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_capstan"));
    let dir = std::env::temp_dir().join(format!("capstan-it-journals-{}", std::process::id()));
    let n = JOURNALS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    c.env("CAPSTAN_JOURNAL", dir.join(format!("j{n}.db")));
    c
}

static JOURNALS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

pub fn capstan_in(dir: &Path, args: &[&str]) -> Out {
    let out = capstan_cmd().current_dir(dir).args(args).output().unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A private MariaDB server on 127.0.0.1 (lab/mariadb-lab.sh): user `capstan`, password
/// [`DB_PASSWORD`], every privilege.
pub struct MariaDb {
    pub dir: PathBuf,
    pub port: u16,
    owned: bool,
}

pub const DB_PASSWORD: &str = "capstan-db-pw";

impl MariaDb {
    /// The server the whole test process shares; it stops when the process ends.
    pub fn shared() -> &'static MariaDb {
        static SHARED: std::sync::OnceLock<MariaDb> = std::sync::OnceLock::new();
        SHARED.get_or_init(|| {
            let dir =
                std::env::temp_dir().join(format!("capstan-it-mariadb-{}", std::process::id()));
            MariaDb::start_at(dir, false)
        })
    }

    /// A server of the caller's own (one it may stop or kill), stopped on drop.
    pub fn start_own() -> MariaDb {
        let dir = tempfile::Builder::new()
            .prefix("capstan-mariadb")
            .tempdir()
            .unwrap()
            .keep();
        MariaDb::start_at(dir, true)
    }

    fn start_at(dir: PathBuf, owned: bool) -> MariaDb {
        let db = MariaDb {
            dir,
            port: free_port(),
            owned,
        };
        db.start_again();
        db
    }

    /// A session as `capstan` over TCP, for the tests' own setup and checks.
    pub fn conn(&self) -> mysql::Conn {
        let opts = mysql::OptsBuilder::new()
            .ip_or_hostname(Some("127.0.0.1"))
            .tcp_port(self.port)
            .user(Some("capstan"))
            .pass(Some(DB_PASSWORD))
            .prefer_socket(false);
        mysql::Conn::new(opts).unwrap()
    }

    /// Starts the server on its data directory and port (the first time, or after `kill`).
    pub fn start_again(&self) {
        let out = Command::new(repo().join("lab/mariadb-lab.sh"))
            .arg("start")
            .arg(&self.dir)
            .arg(self.port.to_string())
            .arg(std::process::id().to_string())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mariadb-lab start failed (scripts/test.sh installs mariadb-server): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A new empty database; returns the journal address for it, its password read from a
    /// file in the server's directory.
    pub fn journal_db(&self, name: &str) -> String {
        use mysql::prelude::Queryable;
        let mut c = self.conn();
        c.query_drop(format!("DROP DATABASE IF EXISTS {name}"))
            .unwrap();
        c.query_drop(format!("CREATE DATABASE {name}")).unwrap();
        let pw = self.dir.join("journal-password");
        std::fs::write(&pw, format!("{DB_PASSWORD}\n")).unwrap();
        format!(
            "mysql://capstan@127.0.0.1:{}/{name}?password_file={}",
            self.port,
            pw.display()
        )
    }

    /// Kills the server at once (SIGKILL).
    pub fn kill(&self) {
        let _ = Command::new(repo().join("lab/mariadb-lab.sh"))
            .arg("kill")
            .arg(&self.dir)
            .output();
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        if self.owned {
            let _ = Command::new(repo().join("lab/mariadb-lab.sh"))
                .arg("stop")
                .arg(&self.dir)
                .output();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The test images, built once per test process with `docker import` from a root made of Debian's
/// static busybox (no registry is reachable): `capstan-it/app:v1` and `:v2` (an OMS-like pair: v2
/// has `/root/docker_init.sh`, which prints "init: ok" and puts the success line in the container
/// log) and `:crash` (exits at once, saying why).
pub fn docker_images() -> &'static str {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        assert!(
            Path::new("/bin/busybox").exists(),
            "busybox-static is not installed: run scripts/test.sh"
        );
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        for d in [
            "bin", "proc", "dev", "sys", "tmp", "etc", "root", "home/admin/conf",
            "home/admin/logs", "home/ds/store", "home/ds/run",
        ] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", r.join("bin/busybox")).unwrap();
        let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" {
                let _ = std::os::unix::fs::symlink("busybox", r.join("bin").join(applet));
            }
        }
        std::fs::write(r.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        let images = [
            (
                "v1",
                "trap 'echo app v1 stopping; exit 0' TERM\necho \"app v1 starting\"\necho v1 >> /home/ds/store/boots\necho \"app v1 started\"\nwhile :; do sleep 1; done\n",
            ),
            (
                "v2",
                "trap 'echo app v2 stopping; exit 0' TERM\necho \"app v2 starting, IS_UPGRADE=$IS_UPGRADE\"\necho v2 >> /home/ds/store/boots\nwhile :; do sleep 1; done\n",
            ),
            ("crash", "echo 'fatal: /home/admin/conf/config.yaml is missing' >&2\nexit 3\n"),
        ];
        std::fs::write(
            r.join("root/docker_init.sh"),
            "set -e\necho \"init: reading config\"\ncat /home/admin/conf/config.yaml\n[ -f /home/ds/store/data ] || { echo 'init: no data in the store' >&2; exit 1; }\necho 'init: ok'\necho 'OMS service start successfully' > /proc/1/fd/1\n",
        )
        .unwrap();
        for (tag, script) in images {
            std::fs::write(r.join("start.sh"), script).unwrap();
            let tar = Command::new("tar")
                .arg("-C")
                .arg(r)
                .args(["-cf", "-", "."])
                .output()
                .unwrap();
            assert!(tar.status.success());
            let mut import = Command::new("docker")
                .args([
                    "import",
                    "--change",
                    "ENV PATH=/bin",
                    "--change",
                    r#"ENTRYPOINT ["/bin/sh", "/start.sh"]"#,
                    "-",
                    &format!("capstan-it/app:{tag}"),
                ])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("the docker CLI is missing (scripts/test.sh checks for it)");
            {
                use std::io::Write;
                import.stdin.take().unwrap().write_all(&tar.stdout).unwrap();
            }
            assert!(import.wait().unwrap().success(), "docker import failed: is the daemon running?");
        }
    });
    "capstan-it/app"
}

/// Runs the docker CLI here and returns its stdout (panics with stderr on failure).
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Containers and images a test made, removed on drop.
#[derive(Default)]
pub struct DockerJunk {
    pub containers: Vec<String>,
    pub images: Vec<String>,
}

impl Drop for DockerJunk {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = Command::new("docker").args(["rm", "-f", c]).output();
        }
        for i in &self.images {
            let _ = Command::new("docker").args(["rmi", "-f", i]).output();
        }
    }
}

/// A scratch directory with `inv.toml` (host `localhost` on the local transport, and `h1` on an
/// sshd of the lab when asked, then `extra`) and its own journal, for runs of the binary.
pub struct Scratch {
    pub dir: tempfile::TempDir,
    /// Kept for the sshd's lifetime.
    _lab: Option<Lab>,
}

impl Scratch {
    pub fn new(with_ssh: bool, extra: &str) -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        let lab = with_ssh.then(|| Lab::start(1));
        let mut inv = String::from("[hosts.localhost]\ntransport = \"local\"\n");
        if let Some(lab) = &lab {
            inv.push_str(&format!(
                "\n[hosts.h1]\n{}port = {}\n",
                lab.defaults(),
                lab.ports[0]
            ));
        }
        inv.push_str(extra);
        std::fs::write(dir.path().join("inv.toml"), inv).unwrap();
        Scratch { dir, _lab: lab }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Makes `h1` a login without root that runs everything through sudo (`become = true`; the
    /// user scripts/test.sh makes). sshd reads the login's authorized keys as the login.
    pub fn sudo_login(&self) {
        use std::os::unix::fs::PermissionsExt;
        let lab = self._lab.as_ref().expect("a scratch with an sshd host");
        std::fs::set_permissions(lab.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let inv = std::fs::read_to_string(self.path("inv.toml")).unwrap();
        let changed = inv.replacen(
            "user = \"root\"\n",
            "user = \"capstan-sudo\"\nbecome = true\n",
            1,
        );
        assert_ne!(changed, inv);
        std::fs::write(self.path("inv.toml"), changed).unwrap();
    }

    /// Writes a file of the scratch directory and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// The binary in the scratch directory with its journal.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_capstan"));
        c.current_dir(self.dir.path())
            .args(args)
            .arg("--journal")
            .arg(self.path("journal.db"))
            .stdin(std::process::Stdio::null());
        c
    }

    pub fn capstan(&self, args: &[&str]) -> Out {
        let out = self.cmd(args).output().unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `run PLAYBOOK -i inv.toml --json --yes ARGS`: the output and the final report.
    pub fn run(&self, playbook: &Path, args: &[&str]) -> (Out, serde_json::Value) {
        let mut a = vec![
            "run",
            playbook.to_str().unwrap(),
            "-i",
            "inv.toml",
            "--json",
            "--yes",
        ];
        a.extend_from_slice(args);
        let out = self.capstan(&a);
        assert!(
            out.stdout.contains("\"event\":\"report\""),
            "no report; stderr:\n{}",
            out.stderr
        );
        let report = last_report(&out.stdout);
        (out, report)
    }
}

/// The report at the end of `--json` output.
pub fn last_report(stdout: &str) -> serde_json::Value {
    stdout
        .lines()
        .rev()
        .find_map(|l| {
            let v = serde_json::from_str::<serde_json::Value>(l).ok()?;
            (v["event"] == "report").then(|| v["report"].clone())
        })
        .unwrap_or_else(|| panic!("no report in the output:\n{stdout}"))
}

/// The report at the end of `--json` output, or null when the run ended before one (bad input).
pub fn report_or_null(stdout: &str) -> serde_json::Value {
    if stdout.contains("\"event\":\"report\"") {
        last_report(stdout)
    } else {
        serde_json::Value::Null
    }
}

/// The error message of a failed run's report.
pub fn outcome_error(report: &serde_json::Value) -> String {
    report["outcome"]["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Panics with the error and stderr unless the run succeeded.
pub fn ok_run(out: &Out, report: &serde_json::Value) {
    assert_eq!(
        report["outcome"]["status"],
        "succeeded",
        "run failed:\n{}\nstderr: {}",
        outcome_error(report),
        out.stderr
    );
}

/// `capstan simulate` of shipped playbook `product` on a copy of its example scenario
/// (`examples/PRODUCT/SCENARIO`, with the example's inventory beside it) in which `from` is
/// replaced by `to` (`from` must occur), with `extra` arguments: the JSON report.
pub fn simulate_edited_example(
    product: &str,
    scenario: &str,
    (from, to): (&str, &str),
    extra: &[&str],
) -> serde_json::Value {
    let examples = repo().join("examples").join(product);
    let text = std::fs::read_to_string(examples.join(scenario)).unwrap();
    let edited = text.replacen(from, to, 1);
    assert_ne!(
        edited, text,
        "`{from}` is not in examples/{product}/{scenario}"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(scenario), edited).unwrap();
    std::fs::copy(
        examples.join("inventory.toml"),
        dir.path().join("inventory.toml"),
    )
    .unwrap();
    let pb = repo().join(format!("playbooks/{product}.rhai"));
    let sc = dir.path().join(scenario);
    let mut args = vec![
        "simulate",
        pb.to_str().unwrap(),
        "--scenario",
        sc.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    last_report(&capstan(&args).stdout)
}

/// Every availability rule the simulation saw broken, at any step.
pub fn violations(r: &serde_json::Value) -> Vec<String> {
    r["simulation"]["availability"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|a| a["violations"].as_array().unwrap().iter())
        .map(|v| v.to_string())
        .collect()
}

/// The names of a report's steps, in order.
pub fn step_names(r: &serde_json::Value) -> Vec<&str> {
    r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect()
}
