//! One executor, three modes: run, check (nothing changes), simulate; and the README example on each.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use capstan::report::Disposition;
use capstan::{FaultKind, Mode};

use crate::support::*;

/// Every file and directory under `root`: path → (mode, contents).
fn snapshot(root: &Path) -> BTreeMap<String, (u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap() {
            let e = e.unwrap();
            let path = e.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let key = path.strip_prefix(root).unwrap().display().to_string();
            if meta.is_dir() {
                out.insert(key, (meta.permissions().mode(), Vec::new()));
                stack.push(path);
            } else {
                out.insert(
                    key,
                    (meta.permissions().mode(), std::fs::read(&path).unwrap()),
                );
            }
        }
    }
    out
}

const CHANGES: &str = r#"
let found = parallel(cluster().hosts(), |h| {
    let root = h.hostvar("root");
    let before = h.read_file(`${root}/conf/app.conf`);
    let found = [before, h.exists(`${root}/old`), h.checksum(`${root}/data.txt`).len()];
    h.write_file(`${root}/conf/app.conf`, "changed\n");
    h.write_file(`${root}/new.txt`, "new\n");
    h.remove(`${root}/old`);
    h.mkdir(`${root}/made/here`);
    h.copy(`${root}/conf`, `${root}/conf.bak`);
    h.move(`${root}/data.txt`, `${root}/data.moved`);
    h.replace_dir(`${root}/bin`, `${root}/release/bin`);
    h.run(["touch", `${root}/touched`]);
    h.shell(`rm -f ${root}/conf/app.conf`);
    found
});
found
"#;

fn lay_out(root: &Path) {
    for d in ["conf", "old/deep", "bin", "release/bin"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("conf/app.conf"), "original\n").unwrap();
    std::fs::write(root.join("old/deep/x"), "x").unwrap();
    std::fs::write(root.join("data.txt"), "data").unwrap();
    std::fs::write(root.join("bin/app"), "v1").unwrap();
    std::fs::write(root.join("release/bin/app"), "v2").unwrap();
    std::fs::set_permissions(root.join("bin/app"), std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn check_mode_reads_for_real_and_changes_nothing_on_ssh_and_local_hosts() {
    let lab = Lab::start(3);
    let roots = tempfile::tempdir().unwrap();
    for name in ["h1", "h2", "h3", "l1"] {
        lay_out(&roots.path().join(name));
    }
    let mut inv = lab.inventory("");
    for (i, name) in ["h1", "h2", "h3"].iter().enumerate() {
        inv = inv.replace(
            &format!("[hosts.{name}]\nport = {}\n", lab.ports[i]),
            &format!(
                "[hosts.{name}]\nport = {}\nvars = {{ root = \"{}\" }}\n",
                lab.ports[i],
                roots.path().join(name).display()
            ),
        );
    }
    inv.push_str(&format!(
        "\n[hosts.l1]\ntransport = \"local\"\nvars = {{ root = \"{}\" }}\n",
        roots.path().join("l1").display()
    ));
    let before = snapshot(roots.path());
    let report = run_playbook(inventory(&inv), Mode::Check, CHANGES, &[]);
    ok(&report);
    assert_eq!(snapshot(roots.path()), before, "check mode changed a file");
    // Reads ran for real.
    for host in report.result.as_array().unwrap() {
        assert_eq!(host, &serde_json::json!(["original\n", true, 64]));
    }
    // Each host lists every change it would have made, in order.
    for name in ["h1", "h2", "h3", "l1"] {
        let root = roots.path().join(name).display().to_string();
        let would: Vec<String> = report
            .would_change()
            .filter(|a| a.host == name)
            .map(|a| a.description.replace(&root, "R"))
            .collect();
        assert_eq!(
            would,
            [
                "write R/conf/app.conf (8 bytes, mode 644)",
                "write R/new.txt (4 bytes, mode 644)",
                "remove R/old",
                "mkdir -p R/made/here",
                "copy R/conf -> R/conf.bak",
                "move R/data.txt -> R/data.moved",
                "replace dir R/bin with a copy of R/release/bin",
                "run: touch R/touched",
                "run: rm -f R/conf/app.conf",
            ],
            "{name}"
        );
        let reads = report
            .actions
            .iter()
            .filter(|a| a.host == name && a.disposition == Disposition::Performed)
            .count();
        assert_eq!(
            reads, 3,
            "{name}: read_file, exists and checksum run for real"
        );
    }
    // The same playbook in run mode does change the files: the check above is not vacuous.
    let report = run_playbook(inventory(&inv), Mode::Run, CHANGES, &[]);
    ok(&report);
    let after = snapshot(roots.path());
    assert_ne!(after, before);
    assert_eq!(after["h2/bin/app"].1, b"v2");
    assert!(!after.contains_key("l1/old"));
}

#[test]
fn check_mode_text_report_lists_what_would_change() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("f");
    std::fs::write(&f, "keep").unwrap();
    std::fs::write(
        d.path().join("p.rhai"),
        format!(
            "cluster().host(\"localhost\").remove(\"{}\");\n",
            f.display()
        ),
    )
    .unwrap();
    let out = capstan_in(d.path(), &["run", "p.rhai", "--check"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains(&format!(
            "would change (1 action(s); none of them was performed)\n  localhost  remove {}\n",
            f.display()
        )),
        "{}",
        out.stdout
    );
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "keep");
}

fn hello_lab(dir: &Path) {
    let st = std::process::Command::new(repo().join("examples/hello/lab.sh"))
        .arg(dir)
        .output()
        .unwrap();
    assert!(st.status.success());
}

/// The hello lab in `dir`, and the local inventory and release path that point at it.
fn hello_local(dir: &Path) -> (String, String) {
    hello_lab(dir);
    let inv = std::fs::read_to_string(repo().join("examples/hello/inventory-local.toml"))
        .unwrap()
        .replace("/tmp/capstan-hello", &dir.display().to_string());
    (inv, dir.join("release").display().to_string())
}

fn versions(dir: &Path) -> Vec<String> {
    ["app1", "app2", "app3"]
        .iter()
        .map(|a| {
            std::fs::read_to_string(dir.join(a).join("VERSION"))
                .unwrap()
                .trim()
                .to_string()
        })
        .collect()
}

#[test]
fn readme_example_runs_on_local_hosts_and_a_second_run_skips_them() {
    let d = tempfile::tempdir().unwrap();
    let (inv, release) = hello_local(d.path());
    let r = run_playbook(
        inventory(&inv),
        Mode::Run,
        capstan::demo::PLAYBOOK,
        &[("release", &release)],
    );
    ok(&r);
    assert_eq!(versions(d.path()), ["1.1.0"; 3]);
    let kept: Vec<String> = std::fs::read_dir(d.path().join("app2"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("bin.capstan-undo-"))
        .collect();
    assert_eq!(kept.len(), 1, "the old bin/ is kept for the undo");
    assert!(
        d.path().join("app2/running").exists(),
        "the app was started"
    );
    let steps: Vec<&str> = r.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        steps,
        [
            "read the target version",
            "preflight",
            "app1: upgrade 1.0.0 -> 1.1.0",
            "app2: upgrade 1.0.0 -> 1.1.0",
            "app3: upgrade 1.0.0 -> 1.1.0"
        ]
    );
    let again = run_playbook(
        inventory(&inv),
        Mode::Run,
        capstan::demo::PLAYBOOK,
        &[("release", &release)],
    );
    ok(&again);
    // Hosts at the target run nothing, and the steps table says so for each.
    let skipped: Vec<(&str, Option<&str>)> = again
        .steps
        .iter()
        .filter(|s| s.status == capstan::report::StepStatus::Skipped)
        .map(|s| (s.name.as_str(), s.reason.as_deref()))
        .collect();
    assert_eq!(
        skipped,
        ["app1", "app2", "app3"]
            .map(|h| (format!("{h}: upgrade to 1.1.0"), "already at 1.1.0"))
            .iter()
            .map(|(n, r)| (n.as_str(), Some(*r)))
            .collect::<Vec<_>>()
    );
    assert_eq!(again.steps.len(), 5, "{:?}", again.steps);
    assert!(again
        .actions
        .iter()
        .all(|a| a.read_only || a.step.as_deref().is_some_and(|s| !s.contains("upgrade"))));
}

#[test]
fn readme_example_runs_over_ssh_and_matches_its_simulation_per_host() {
    let lab = Lab::start(3);
    let d = tempfile::tempdir().unwrap();
    hello_lab(d.path());
    let root = d.path().display().to_string();
    let mut inv = format!("[defaults]\n{}groups = [\"app\"]\n", lab.defaults());
    for (i, p) in lab.ports.iter().enumerate() {
        inv.push_str(&format!(
            "\n[hosts.app{}]\nport = {p}\nvars = {{ root = \"{root}/app{}\" }}\n",
            i + 1,
            i + 1
        ));
    }
    let release = format!("{root}/release");
    let real = run_playbook(
        inventory(&inv),
        Mode::Run,
        capstan::demo::PLAYBOOK,
        &[("release", &release)],
    );
    ok(&real);
    assert_eq!(versions(d.path()), ["1.1.0"; 3]);

    // The same starting state as a scenario: the simulation takes the same steps and actions.
    let mut sc = format!(
        "[params]\nrelease = \"{release}\"\n\n[inventory]\n{}",
        inv.replace("[defaults]", "[inventory.defaults]")
            .replace("[hosts.", "[inventory.hosts.")
    );
    for a in ["app1", "app2", "app3"] {
        sc.push_str(&format!(
            "\n[hosts.{a}]\nfiles = {{ \"{root}/{a}/VERSION\" = \"1.0.0\\n\", \"{root}/{a}/bin/app-ctl\" = \"x\", \"{release}/VERSION\" = \"1.1.0\\n\", \"{release}/bin/app-ctl\" = \"y\" }}\n"
        ));
    }
    sc.push_str("\n[[rules]]\ncommand = \"*/bin/app-ctl version\"\nstdout = \"1.1.0\\n\"\n");
    let sim = simulate(&sc, capstan::demo::PLAYBOOK);
    ok(&sim);
    let per_host = |r: &capstan::RunReport, h: &str| -> Vec<(Option<String>, String)> {
        r.actions
            .iter()
            .filter(|a| a.host == h)
            .map(|a| {
                (
                    a.step.as_ref().map(|s| s.to_string()),
                    without_run_id(&a.description),
                )
            })
            .collect()
    };
    for h in ["app1", "app2", "app3"] {
        assert_eq!(
            per_host(&real, h),
            per_host(&sim, h),
            "trace differs on {h}"
        );
    }
    assert_eq!(
        real.steps.iter().map(|s| &s.name).collect::<Vec<_>>(),
        sim.steps.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
}

#[test]
fn local_command_timeout_kills_the_process_group() {
    let d = tempfile::tempdir().unwrap();
    let marker = d.path().join("survived");
    let start = Instant::now();
    let r = run_playbook(
        inventory("[hosts.l]\ntransport = \"local\"\n"),
        Mode::Run,
        &format!("cluster().host(\"l\").run([\"sh\", \"-c\", \"(sleep 3; touch {}) & sleep 30\"], #{{ timeout: 1 }});", marker.display()),
        &[],
    );
    let (kind, e) = failure(&r);
    assert_eq!(kind, FaultKind::Timeout);
    assert_eq!(e.message, "l: command timed out after 1s");
    assert!(start.elapsed() < Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !marker.exists(),
        "a child of the timed-out command kept running"
    );
}

#[test]
fn a_daemon_holding_stdout_does_not_hang_the_command() {
    let start = Instant::now();
    let r = run_playbook(
        inventory("[hosts.l]\ntransport = \"local\"\n"),
        Mode::Run,
        "cluster().host(\"l\").run([\"sh\", \"-c\", \"sleep 20 & echo started\"]).stdout",
        &[],
    );
    ok(&r);
    assert_eq!(r.result, "started\n");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "waited for the daemon's pipe: {:?}",
        start.elapsed()
    );
}

#[test]
fn confirm_without_a_terminal_or_yes_is_declined() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("p.rhai"),
        "confirm(\"Stop the primary now?\");\nlog(\"went on\");\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_capstan"))
        .args(["run", "p.rhai"])
        .current_dir(d.path())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("error: confirmation needed: Stop the primary now? (no terminal to ask; rerun with --yes to grant it)"), "{stdout}");
    assert!(!stdout.contains("went on"));
    let out = capstan_in(d.path(), &["run", "p.rhai", "--yes"]);
    assert_eq!(out.code, 0);
    assert!(out.stdout.contains("went on"));
}

#[test]
fn wait_poll_is_bounded_and_says_what_it_saw() {
    let r = run_playbook(
        inventory("[hosts.l]\ntransport = \"local\"\n"),
        Mode::Run,
        "let n = 0;\nwait::poll(#{ timeout: 0.3, every: 0.1, what: \"n to reach 100\" }, || { n += 1; n >= 100 });\n",
        &[],
    );
    let (kind, e) = failure(&r);
    assert_eq!(kind, FaultKind::Timeout);
    assert_eq!(
        e.message,
        "gave up waiting for n to reach 100 after 0.3s; last seen: false"
    );
    assert_eq!(e.pos.map(|p| p.line), Some(2));
    let sc = "[inventory.hosts.a]\n[hosts.a]\nports = []\n";
    let sim = simulate(
        sc,
        "wait::poll(#{ timeout: \"2h\", every: \"10m\" }, || false);",
    );
    let (kind, _) = failure(&sim);
    assert_eq!(kind, FaultKind::Timeout);
    assert!(
        sim.duration_ms >= 7_200_000,
        "simulated time moves: {}",
        sim.duration_ms
    );
}

#[test]
fn unreachable_host_names_host_and_cause_in_the_cli() {
    let port = free_port();
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("inv.toml"),
        format!("[hosts.db7]\naddress = \"127.0.0.1\"\nport = {port}\n"),
    )
    .unwrap();
    let out = capstan_in(d.path(), &["run", "preflight", "-i", "inv.toml"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stdout.contains(&format!(
            "error: db7: connection refused by 127.0.0.1:{port}"
        )),
        "{}",
        out.stdout
    );
}

#[test]
fn parallel_is_bounded_by_parallelism() {
    let host = capstan::HostBuilder::new()
        .inventory(inventory("[hosts.l]\ntransport = \"local\"\n"))
        .parallelism(2)
        .build()
        .unwrap();
    let src = r#"
        let h = cluster().host("l");
        parallel([1, 2, 3, 4, 5, 6], |i| {
            let out = h.read(["sh", "-c", "date +%s.%N; sleep 0.3; date +%s.%N"]).stdout.lines();
            [parse_float(out[0]), parse_float(out[1])]
        })
    "#;
    let r = host
        .run(
            &capstan::Playbook::from_source("p.rhai", src),
            &Default::default(),
        )
        .unwrap();
    ok(&r);
    let spans: Vec<(f64, f64)> = r
        .result
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s[0].as_f64().unwrap(), s[1].as_f64().unwrap()))
        .collect();
    // How many commands were running when each one started.
    let most = spans
        .iter()
        .map(|(start, _)| {
            spans
                .iter()
                .filter(|(s, e)| s <= start && start < e)
                .count()
        })
        .max()
        .unwrap();
    assert_eq!(most, 2, "{spans:?}");
}

/// Regression: closures capturing a host and a map raced ("Data race detected") when `parallel`
/// called them from several threads at once.
#[test]
fn captured_values_in_parallel_bodies_do_not_race() {
    let r = run_playbook(
        inventory("[hosts.l]\ntransport = \"local\"\n"),
        Mode::Run,
        r#"
        let h = cluster().host("l");
        let p = #{ word: "ok", n: 3 };
        let items = [];
        for i in 0..64 { items.push(i); }
        let out = parallel(items, |i| {
            h.read(["true"]);
            `${p.word}${p.n}`
        });
        out.len()
        "#,
        &[],
    );
    ok(&r);
    assert_eq!(r.result, 64);
}

/// Undo copies are named by run id (`x.capstan-undo-<run id>-1-3`); two runs differ only there.
fn without_run_id(text: &str) -> String {
    const MARK: &str = "capstan-undo-";
    match text.find(MARK) {
        Some(i) => {
            let id_len = "20261122-215334-3c8f".len();
            let rest = &text[i + MARK.len()..];
            format!(
                "{}{MARK}RUN{}",
                &text[..i],
                without_run_id(rest.get(id_len..).unwrap_or(""))
            )
        }
        None => text.to_string(),
    }
}

#[test]
fn readme_example_rolls_back_on_local_hosts_from_the_journal() {
    let d = tempfile::tempdir().unwrap();
    let (inv, release) = hello_local(d.path());
    let journal = std::sync::Arc::new(capstan::Journal::open(d.path().join("j.db")).unwrap());
    let host = || {
        capstan::HostBuilder::new()
            .inventory(inventory(&inv))
            .journal(journal.clone())
            .yes(true)
            .build()
            .unwrap()
    };
    let mut params = capstan::Params::new();
    params.insert("release".into(), release.into());
    let pb = capstan::Playbook::from_source("hello.rhai", capstan::demo::PLAYBOOK);
    let r = host().run(&pb, &params).unwrap();
    ok(&r);
    assert_eq!(versions(d.path()), ["1.1.0"; 3]);
    // A later process (a new Host on the same journal) regrets the upgrade.
    let back = host().rollback(&r.run_id, &capstan::Params::new()).unwrap();
    assert_eq!(back.status, capstan::journal::RunStatus::RolledBack);
    assert_eq!(versions(d.path()), ["1.0.0"; 3]);
    for a in ["app1", "app2", "app3"] {
        let app = d.path().join(a);
        // The old app-ctl is back, and the script's undos restarted the old version.
        let ctl = std::process::Command::new(app.join("bin/app-ctl"))
            .arg("version")
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&ctl.stdout).trim(), "1.0.0");
        assert!(app.join("running").exists(), "{a} was not started again");
        let left: Vec<_> = std::fs::read_dir(&app)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("capstan"))
            .collect();
        assert!(left.is_empty(), "{a}: {left:?}");
    }
    let done = back
        .undos
        .iter()
        .filter(|u| u.status == capstan::journal::UndoStatus::Done);
    assert_eq!(done.count(), 12); // per host: start old, bin, VERSION, stop new
}
