//! Docker against the machine's real engine, through the local transport and an SSH host: an
//! OMS-style two-version swap and its rollback, and docker's failures as clear errors.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

use crate::support::*;

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A name no other test (or earlier test process) uses.
fn unique(what: &str) -> String {
    format!(
        "capstan-it-{what}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    )
}

/// The three OMS bind mounts, with data in them.
struct Mounts {
    conf: PathBuf,
    logs: PathBuf,
    store: PathBuf,
}

impl Mounts {
    fn new(s: &Scratch) -> Mounts {
        let m = Mounts {
            conf: s.path("conf/config.yaml"),
            logs: s.path("oms_logs"),
            store: s.path("oms_store"),
        };
        std::fs::create_dir_all(s.path("conf")).unwrap();
        std::fs::create_dir_all(&m.logs).unwrap();
        std::fs::create_dir_all(&m.store).unwrap();
        std::fs::write(&m.conf, "drc_rm_db: oms_rm\n").unwrap();
        std::fs::write(m.store.join("data"), "migration task 42\n").unwrap();
        m
    }

    fn volumes(&self) -> Vec<String> {
        vec![
            format!("{}:/home/admin/conf/config.yaml", self.conf.display()),
            format!("{}:/home/admin/logs", self.logs.display()),
            format!("{}:/home/ds/store", self.store.display()),
        ]
    }
}

/// Starts the old version the way the vendor document does (`docker run -dit` with the mounts).
fn start_v1(name: &str, m: &Mounts) {
    let image = format!("{}:v1", docker_images());
    let mut args = vec!["run", "-dit", "--name", name, "--pids-limit", "-1"];
    args.extend([
        "--ulimit",
        "nproc=65535:65535",
        "-e",
        "OMS_HOST_IP=127.0.0.1",
    ]);
    let vols = m.volumes();
    for v in &vols {
        args.extend(["-v", v.as_str()]);
    }
    args.push(&image);
    docker(&args);
}

fn running(name: &str) -> bool {
    std::process::Command::new("docker")
        .args(["inspect", "-f", "{{.State.Running}}", name])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "true")
        .unwrap_or(false)
}

fn exists(name: &str) -> bool {
    std::process::Command::new("docker")
        .args(["inspect", name])
        .output()
        .is_ok_and(|o| o.status.success())
}

const SWAP: &str = r#"
let p = params(#{ fail_health: param::optional(false, "fail after the new version is up") });
let d = docker::on(cluster().host("HOST"));
step("precheck", || {
    d.check();
    if !d.running("OLD") { fail("OLD is not running") }
});
step("load the new image", || d.load("TAR"));
let spec = step("read the old container's spec", || d.spec_of("OLD"));
step("stop the old container", || d.stop("OLD", #{ timeout: 5 }));
step("start the new container", || {
    let s = spec;
    s.name = "NEW";
    s.image = "IMAGE";
    s.env.IS_UPGRADE = "true";
    d.run(s, #{ settle: "1s" })
});
step("initialise", || {
    let r = d.exec("NEW", ["sh", "/root/docker_init.sh"]);
    if !r.stdout.contains("init: ok") { fail(`init said: ${r.stdout}`) }
    d.wait_log("NEW", "OMS service start successfully", #{ timeout: 30, every: "200ms" })
});
step("health", || if p.fail_health { fail("the new version is not healthy") });
d.spec_of("NEW")
"#;

fn swap(host: &str) {
    swap_as(host, false)
}

fn swap_as(host: &str, sudo: bool) {
    let images = docker_images();
    let s = Scratch::new(host == "h1", "");
    if sudo {
        s.sudo_login();
    }
    let m = Mounts::new(&s);
    let (old, new) = (unique("oms-old"), unique("oms-new"));
    let v2 = format!("{images}:{}", unique("v2"));
    let mut junk = DockerJunk {
        containers: vec![old.clone(), new.clone()],
        images: vec![v2.clone()],
    };
    start_v1(&old, &m);
    let binds = |name: &str| {
        let mut b: Vec<String> = serde_json::from_str(&docker(&[
            "inspect",
            "-f",
            "{{json .HostConfig.Binds}}",
            name,
        ]))
        .unwrap();
        b.sort();
        b
    };
    let before = binds(&old);

    // The new version arrives as a tar: save it with capstan, then take it off the engine.
    docker(&["tag", &format!("{images}:v2"), &v2]);
    let tar = s.path("oms-v2.tar");
    let save = s.write(
        "save.rhai",
        &format!(
            r#"docker::on(cluster().host("{host}")).save("{v2}", "{}")"#,
            tar.display()
        ),
    );
    let (out, report) = s.run(&save, &[]);
    ok_run(&out, &report);
    assert!(std::fs::metadata(&tar).unwrap().len() > 1_000_000);
    docker(&["rmi", &v2]);

    let pb = s.write(
        "swap.rhai",
        &SWAP
            .replace("HOST", host)
            .replace("OLD", &old)
            .replace("NEW", &new)
            .replace("IMAGE", &v2)
            .replace("TAR", tar.to_str().unwrap()),
    );

    // The swap fails after the new version is up: the rollback removes it and starts the old one.
    let (out, report) = s.run(&pb, &["-p", "fail_health=true", "--on-failure", "rollback"]);
    assert_eq!(
        report["status"],
        "rolled_back",
        "{}\n{}",
        outcome_error(&report),
        out.stderr
    );
    assert!(!exists(&new), "the new container is still there");
    assert!(running(&old), "the old container is not running again");
    assert_eq!(binds(&old), before);
    assert_eq!(
        std::fs::read_to_string(m.store.join("data")).unwrap(),
        "migration task 42\n"
    );
    assert_eq!(
        std::fs::read_to_string(&m.conf).unwrap(),
        "drc_rm_db: oms_rm\n"
    );
    let boots = std::fs::read_to_string(m.store.join("boots")).unwrap();
    assert_eq!(
        boots, "v1\nv2\nv1\n",
        "v1, then v2 on the same store, then v1 again"
    );
    let undos: Vec<&str> = report["undos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["description"].as_str().unwrap())
        .collect();
    assert!(
        undos
            .iter()
            .any(|u| u.contains(&format!("remove container {new}"))),
        "{undos:?}"
    );
    assert!(
        undos
            .iter()
            .any(|u| u.contains(&format!("start container {old} again"))),
        "{undos:?}"
    );

    // And when it succeeds: the new container runs with the old one's mounts and settings, plus
    // the upgrade flag; the old one is stopped.
    let (out, report) = s.run(&pb, &[]);
    ok_run(&out, &report);
    assert!(running(&new) && !running(&old));
    let spec = &report["result"];
    assert_eq!(spec["image"], v2.as_str());
    // Docker keeps binds as a set: compare them as one.
    let mut got: Vec<String> = serde_json::from_value(spec["volumes"].clone()).unwrap();
    got.sort();
    let mut want = m.volumes();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(spec["env"]["IS_UPGRADE"], "true");
    assert_eq!(spec["env"]["OMS_HOST_IP"], "127.0.0.1");
    // Docker stores `--pids-limit -1` (unlimited) as no limit at all, which is what it means.
    assert_eq!(spec["pids_limit"], Value::Null);
    assert_eq!(spec["ulimits"]["nproc"], "65535:65535");
    assert_eq!(spec["tty"], true);
    assert_eq!(spec["interactive"], true);
    let logs = docker(&["logs", &new]);
    assert!(logs.contains("IS_UPGRADE=true") && logs.contains("OMS service start successfully"));
    junk.images.push(v2);
}

#[test]
fn an_oms_style_swap_and_its_rollback_on_the_local_host() {
    swap("localhost");
}

#[test]
fn an_oms_style_swap_and_its_rollback_over_ssh() {
    swap("h1");
}

/// The OMS guide runs `sudo docker stop`: the same swap by a login that is not in the docker
/// group and has no root, with `become`.
#[test]
fn an_oms_style_swap_and_its_rollback_over_ssh_by_a_login_with_sudo() {
    swap_as("h1", true);
}

#[test]
fn docker_failures_are_clear_and_change_nothing() {
    let images = docker_images();
    let s = Scratch::new(false, "");
    let m = Mounts::new(&s);
    let old = unique("fail-old");
    let crash = unique("fail-crash");
    let _junk = DockerJunk {
        containers: vec![old.clone(), crash.clone()],
        images: vec![],
    };
    start_v1(&old, &m);
    let pb = s.write(
        "fail.rhai",
        &r#"
fn attempt(f) {
    try { f.call(); return #{ reason: "none" }; }
    catch (e) { return #{ reason: e.reason, kind: e.kind, message: e.message, code: e.code }; }
}
let d = docker::on(cluster().host("localhost"));
#{
    missing_tar: attempt(|| d.load("SCRATCH/no-such.tar")),
    conflict: attempt(|| d.run(#{ image: "IMAGES:v1", name: "OLD" })),
    no_image: attempt(|| d.run(#{ image: "IMAGES:no-such-tag", name: "CRASH-x" })),
    crash: attempt(|| d.run(#{ image: "IMAGES:crash", name: "CRASH" }, #{ settle: "1s" })),
    no_container: attempt(|| d.stop("no-such-container-CRASH")),
    still: d.running("OLD"),
}
"#
        .replace("SCRATCH", s.dir.path().to_str().unwrap())
        .replace("IMAGES", images)
        .replace("OLD", &old)
        .replace("CRASH", &crash),
    );
    let (out, report) = s.run(&pb, &[]);
    ok_run(&out, &report);
    let r = &report["result"];
    assert_eq!(r["missing_tar"]["reason"], "no_such_file", "{r}");
    assert!(r["missing_tar"]["message"]
        .as_str()
        .unwrap()
        .contains("no-such.tar"));
    assert_eq!(r["conflict"]["reason"], "name_in_use", "{r}");
    assert!(r["conflict"]["message"].as_str().unwrap().contains(&old));
    assert_eq!(r["no_image"]["reason"], "no_such_image", "{r}");
    assert!(r["no_image"]["message"]
        .as_str()
        .unwrap()
        .contains("no-such-tag"));
    assert_eq!(r["crash"]["reason"], "exited", "{r}");
    assert_eq!(r["crash"]["code"], 3);
    let m = r["crash"]["message"].as_str().unwrap();
    assert!(
        m.contains("exit code 3") && m.contains("config.yaml is missing"),
        "{m}"
    );
    assert_eq!(r["no_container"]["reason"], "no_such_container", "{r}");
    assert_eq!(r["still"], true);

    // A precheck that fails (no daemon, no CLI) stops the run before anything changes.
    let guarded = s.write(
        "guarded.rhai",
        &r#"
let d = docker::on(cluster().host("localhost"));
step("precheck", || d.check());
step("stop", || d.stop("OLD"));
"#
        .replace("OLD", &old),
    );
    let mut no_daemon = s.cmd(&["run", guarded.to_str().unwrap(), "-i", "inv.toml", "--json"]);
    no_daemon.env(
        "DOCKER_HOST",
        format!("unix://{}", s.path("no-daemon.sock").display()),
    );
    let out = no_daemon.output().unwrap();
    let report = last_report(&String::from_utf8_lossy(&out.stdout));
    let e = outcome_error(&report);
    assert!(e.contains("Cannot connect to the Docker daemon"), "{e}");
    assert_eq!(report["outcome"]["kind"], "unreachable");
    let mut no_cli = s.cmd(&["run", guarded.to_str().unwrap(), "-i", "inv.toml", "--json"]);
    no_cli.env("PATH", s.path("empty-path"));
    let out = no_cli.output().unwrap();
    let report = last_report(&String::from_utf8_lossy(&out.stdout));
    let e = outcome_error(&report);
    assert!(
        e.contains("docker version") && e.contains("docker CLI is not installed"),
        "{e}"
    );
    assert!(running(&old), "a failed precheck must change nothing");
    let ops: Vec<&str> = report["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["op"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["docker_version"]);
}

#[test]
fn a_simulated_engine_answers_like_the_real_one() {
    let scenario = r#"
[inventory.hosts.oms1]
transport = "ssh"
address = "10.0.0.9"

[hosts.oms1]
files = { "/srv/oms-4.2.9.tar" = "oms:4.2.9\n" }

[[hosts.oms1.docker.containers]]
name = "oms"
image = "oms:4.2.5"
net = "host"
volumes = ["/data/oms/logs:/home/admin/logs", "/data/oms/store:/home/ds/store", "/data/oms/run:/home/ds/run"]
env = { OMS_HOST_IP = "10.0.0.9" }
privileged = true
pids_limit = -1

[[rules]]
command = "docker exec oms-new sh /root/docker_init.sh"
stdout = "init: ok\n"
log = ["OMS service start successfully"]
"#;
    let report = simulate(
        scenario,
        r#"
let d = docker::on(cluster().host("oms1"));
d.check();
let loaded = d.load("/srv/oms-4.2.9.tar");
let spec = d.spec_of("oms");
d.stop("oms");
spec.name = "oms-new";
spec.image = loaded[0];
spec.env.IS_UPGRADE = "true";
d.run(spec);
d.exec("oms-new", ["sh", "/root/docker_init.sh"]);
let line = d.wait_log("oms-new", "OMS service start successfully", #{ timeout: 60 });
let conflict = "";
try { d.run(spec) } catch (e) { conflict = e.reason; }
#{ loaded: loaded, line: line, spec: d.spec_of("oms-new"), old: d.running("oms"), conflict: conflict }
"#,
    );
    ok(&report);
    let r = &report.result;
    assert_eq!(r["loaded"], serde_json::json!(["oms:4.2.9"]));
    assert_eq!(r["line"], "OMS service start successfully");
    assert_eq!(r["old"], false);
    assert_eq!(r["conflict"], "name_in_use");
    let spec: &Value = &r["spec"];
    assert_eq!(spec["volumes"].as_array().unwrap().len(), 3);

    // A fault on a docker call fails it as the CLI would.
    let faulty = format!("{scenario}\n[[faults]]\naction = \"docker stop*\"\nmessage = \"Error response from daemon: cannot stop container: oms: permission denied\"\n");
    let report = simulate(
        &faulty,
        "let d = docker::on(cluster().host(\"oms1\"));\nd.stop(\"oms\");\n",
    );
    let (_, e) = failure(&report);
    assert!(
        e.message.contains("docker stop oms") && e.message.contains("permission denied"),
        "{}",
        e.message
    );
    assert_eq!(spec["env"]["IS_UPGRADE"], "true");
    assert_eq!(spec["net"], "host");
    assert_eq!(spec["privileged"], true);
}

#[test]
fn check_mode_reads_the_engine_and_changes_nothing() {
    let images = docker_images();
    let s = Scratch::new(false, "");
    let m = Mounts::new(&s);
    let old = unique("check-old");
    let _junk = DockerJunk {
        containers: vec![old.clone(), format!("{old}-new"), format!("{old}-renamed")],
        images: vec![],
    };
    start_v1(&old, &m);
    let pb = s.write(
        "check.rhai",
        &r#"
let d = docker::on(cluster().host("localhost"));
let spec = d.spec_of("OLD");
d.stop("OLD");
d.rename("OLD", "OLD-renamed");
spec.name = "OLD-new";
d.run(spec);
let r = d.exec("OLD-new", ["sh", "/root/docker_init.sh"]);
#{ image: spec.image, skipped: r.skipped, running: d.running("OLD") }
"#
        .replace("OLD", &old),
    );
    let (out, report) = s.run(&pb, &["--check"]);
    ok_run(&out, &report);
    assert_eq!(report["result"]["image"], format!("{images}:v1"));
    assert_eq!(report["result"]["skipped"], true);
    assert_eq!(
        report["result"]["running"], true,
        "a read under --check is real"
    );
    assert!(running(&old) && !exists(&format!("{old}-new")) && !exists(&format!("{old}-renamed")));
    let skipped: Vec<&str> = report["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["disposition"] == "skipped")
        .map(|a| a["op"].as_str().unwrap())
        .collect();
    assert_eq!(
        skipped,
        ["docker_stop", "docker_rename", "docker_run", "docker_exec"]
    );
}

#[test]
fn reads_copies_and_restarts_on_the_real_engine() {
    let images = docker_images();
    let s = Scratch::new(false, "");
    let m = Mounts::new(&s);
    let name = unique("reads");
    let _junk = DockerJunk {
        containers: vec![name.clone()],
        images: vec![],
    };
    start_v1(&name, &m);
    let pb = s.write(
        "reads.rhai",
        &r#"
let d = docker::on(cluster().host("localhost"));
d.wait_log("NAME", "app v1 started", #{ timeout: 20, every: "200ms" });
let listed = d.ps(#{ name: "NAME" });
let mounts = d.mounts("NAME");
let refs = d.images().map(|i| i.ref);
d.cp("NAME:/home/ds/store/boots", "SCRATCH/boots-copy");
d.restart("NAME");
d.wait_running("NAME", #{ timeout: 20, every: "200ms" });
d.wait_log("NAME", "app v1 stopping", #{ timeout: 20, every: "200ms" });
let inside = d.exec("NAME", ["cat", "/home/ds/store/data"], #{ read_only: true }).stdout;
let failed = d.exec("NAME", ["sh", "-c", "exit 7"], #{ allow_fail: true }).code;
#{
    listed: listed.map(|c| c.name), state: listed[0].state, mounts: mounts.map(|x| x.destination),
    has_v1: refs.contains("IMAGES:v1"), tail: d.logs("NAME", #{ tail: 1 }), inside: inside, failed: failed,
}
"#
        .replace("NAME", &name)
        .replace("IMAGES", images)
        .replace("SCRATCH", s.dir.path().to_str().unwrap()),
    );
    let (out, report) = s.run(&pb, &[]);
    ok_run(&out, &report);
    let r = &report["result"];
    assert_eq!(r["listed"], serde_json::json!([name]));
    assert_eq!(r["state"], "running");
    let mut mounts: Vec<String> = serde_json::from_value(r["mounts"].clone()).unwrap();
    mounts.sort();
    assert_eq!(
        mounts,
        [
            "/home/admin/conf/config.yaml",
            "/home/admin/logs",
            "/home/ds/store"
        ]
    );
    assert_eq!(r["has_v1"], true);
    assert_eq!(r["inside"], "migration task 42\n");
    assert_eq!(r["failed"], 7);
    assert!(r["tail"].as_str().unwrap().starts_with("app v1"), "{r}");
    assert_eq!(
        std::fs::read_to_string(s.path("boots-copy")).unwrap(),
        "v1\n"
    );
    assert_eq!(
        std::fs::read_to_string(m.store.join("boots")).unwrap(),
        "v1\nv1\n",
        "restarted once"
    );
}

#[test]
fn the_simulated_engine_copies_through_bind_mounts_and_keeps_one_shot_containers() {
    let scenario = r#"
[inventory.hosts.oms1]
transport = "ssh"
address = "10.0.0.9"

[hosts.oms1]
files = { "/data/oms/config.yaml" = "nginx_server_port: 8089\n" }
dirs = ["/data/oms/oms_logs", "/tmp", "/backup"]

[hosts.oms1.docker]
images = ["oms:4.2.3"]

[[hosts.oms1.docker.containers]]
name = "oms"
image = "oms:4.2.3"
volumes = ["/data/oms/config.yaml:/home/admin/conf/config.yaml", "/data/oms/oms_logs:/home/admin/logs"]
"#;
    let report = simulate(
        scenario,
        r#"
let h = cluster().host("oms1");
let d = docker::on(h);
// A file under a bind mount is the host's file; a path in the image has nothing to copy.
d.cp("oms:/home/admin/conf/config.yaml", "/tmp/config.yaml");
// Into a directory: under the file's own name.
d.cp("oms:/home/admin/conf/config.yaml", "/backup");
let missing = "";
try { d.cp("oms:/home/admin/logs/none.log", "/tmp/none.log"); } catch (e) { missing = `${e}`; }
// A one-shot container (`running: false`) is not waited on; `rm -f` of one that is gone is
// docker's exit 0.
d.run(#{ image: "oms:4.2.3", name: "tool", args: ["bash"] }, #{ running: false });
d.rm("tool", #{ force: true });
d.rm("tool", #{ force: true });
let refused = "";
try { d.rm("tool"); } catch (e) { refused = e.reason; }
#{ copied: h.read_file("/tmp/config.yaml"), into_dir: h.read_file("/backup/config.yaml"), missing: missing, refused: refused }
"#,
    );
    ok(&report);
    let r = &report.result;
    assert_eq!(r["copied"], "nginx_server_port: 8089\n");
    assert_eq!(r["into_dir"], "nginx_server_port: 8089\n");
    assert!(
        r["missing"]
            .as_str()
            .unwrap()
            .contains("Could not find the file /home/admin/logs/none.log in container oms"),
        "{r}"
    );
    assert_eq!(r["refused"], "no_such_container");
}
