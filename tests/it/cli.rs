//! The binary: exact error messages with positions, exit codes, and the informational commands.

use crate::support::*;

fn write(dir: &std::path::Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[test]
fn malformed_playbook_names_file_line_and_column() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "bad.rhai", "let p = params(#{});\nlet x = 1 +;\n");
    let out = capstan_in(d.path(), &["check", "bad.rhai"]);
    assert_eq!(out.code, 2);
    assert_eq!(
        out.stderr,
        "error: Unexpected ';'\n  --> bad.rhai:2:12\n   |\n 2 | let x = 1 +;\n   |            ^\n"
    );
    // `run` refuses it the same way, before touching anything.
    let out = capstan_in(d.path(), &["run", "bad.rhai"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .starts_with("error: Unexpected ';'\n  --> bad.rhai:2:12\n"),
        "{}",
        out.stderr
    );
}

#[test]
fn undefined_variable_is_a_compile_error() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "undef.rhai", "let a = 1;\nlog(b);\n");
    let out = capstan_in(d.path(), &["check", "undef.rhai"]);
    assert_eq!(out.code, 2);
    assert_eq!(
        out.stderr,
        "error: Undefined variable: b\n  --> undef.rhai:2:5\n   |\n 2 | log(b);\n   |     ^\n"
    );
}

#[test]
fn malformed_inventory_names_the_field_and_line() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "p.rhai", "1");
    write(
        d.path(),
        "inv.toml",
        "[hosts.web1]\nadress = \"10.0.0.1\"\n",
    );
    let out = capstan_in(d.path(), &["run", "p.rhai", "-i", "inv.toml"]);
    assert_eq!(out.code, 2);
    assert_eq!(
        out.stderr,
        "error: hosts.web1.adress: unknown field `adress`, expected one of `address`, `port`, `user`, `transport`, `auth`, `known_hosts`, `host_key_policy`, `connect_timeout`, `command_timeout`, `keepalive`, `jump`, `become`, `become_password`, `host_lock`, `host_lock_lease`, `groups`, `vars`\n  --> inv.toml:2:1\n   |\n 2 | adress = \"10.0.0.1\"\n   | ^\n"
    );
    write(d.path(), "inv2.toml", "[hosts.web1]\nport = \"ssh\"\n");
    let out = capstan_in(d.path(), &["run", "p.rhai", "-i", "inv2.toml"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.starts_with("error: hosts.web1.port: invalid type: string \"ssh\", expected u16\n  --> inv2.toml:2:8\n"), "{}", out.stderr);
    write(
        d.path(),
        "inv3.toml",
        "[hosts.web1]\nauth = { password = \"hunter2\" }\n",
    );
    let out = capstan_in(d.path(), &["run", "p.rhai", "-i", "inv3.toml"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.starts_with("error: hosts.web1.auth: inline secrets are not allowed; use { env = \"NAME\" } or { file = \"PATH\" }\n  --> inv3.toml:2:21\n"),
        "{}",
        out.stderr
    );
}

#[test]
fn bad_params_are_positioned_at_the_params_call() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "p.rhai",
        "let p = params(#{ n: param::optional(1, \"how many\"), r: param::required(\"release dir\") });\np\n",
    );
    let cases: &[(&[&str], &str)] = &[
        (
            &["-p", "n=abc", "-p", "r=x"],
            "error: param `n` must be an integer, got \"abc\"",
        ),
        (
            &["-p", "n=2"],
            "error: missing required param(s): r (release dir); give them with -p NAME=VALUE",
        ),
        (
            &["-p", "r=1", "-p", "q=3"],
            "error: unknown param `q`; this playbook takes: n, r",
        ),
    ];
    for (args, msg) in cases {
        let mut a = vec!["run", "p.rhai"];
        a.extend_from_slice(args);
        let out = capstan_in(d.path(), &a);
        assert_eq!(out.code, 2, "{args:?}");
        assert!(
            out.stdout.contains(&format!("{msg}\n  --> p.rhai:1:9\n")),
            "{args:?}: {}",
            out.stdout
        );
    }
    let out = capstan_in(d.path(), &["run", "p.rhai", "-p", "novalue"]);
    assert_eq!(
        (out.code, out.stderr.as_str()),
        (2, "error: -p novalue: expected NAME=VALUE\n")
    );
    let out = capstan_in(
        d.path(),
        &["run", "p.rhai", "-p", "r=rel", "-p", "n=5", "--json"],
    );
    assert_eq!(out.code, 0);
    let last: serde_json::Value = serde_json::from_str(out.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(
        last["report"]["result"],
        serde_json::json!({"n": 5, "r": "rel"})
    );
}

#[test]
fn errors_inside_closures_and_functions_point_at_the_inner_line() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "helper.rhai",
        "fn stop(h) {\n    h.run([\"sh\", \"-c\", \"exit 4\"]);\n}\n",
    );
    write(
        d.path(),
        "main.rhai",
        "import \"helper\" as helper;\nlet h = cluster().host(\"localhost\");\nstep(\"stop it\", || {\n    helper::stop(h);\n});\n",
    );
    let out = capstan_in(d.path(), &["run", "main.rhai"]);
    assert_eq!(out.code, 1);
    let want = "error: localhost: `sh -c 'exit 4'` exited with code 4\n  --> ";
    assert!(out.stdout.contains(want), "{}", out.stdout);
    assert!(
        out.stdout.contains(
            "helper.rhai:2:7\n   |\n 2 |     h.run([\"sh\", \"-c\", \"exit 4\"]);\n   |       ^\n"
        ),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("  = called from main.rhai:4:13\n"),
        "{}",
        out.stdout
    );
}

/// What issue 24 asked `check` to catch, each with its position and the expected signatures;
/// `run` refuses the same before anything starts (exit 2, nothing journaled).
const MISTAKES: &str = r#"import "version" as version;
let h = cluster().host("localhost");
step("one", || {
    backup::dri(h, "/tmp/x");
    h.run("x");
    h.replace_dir("/tmp/a");
    h.write_file("/tmp/x", 3);
    let v = h.read(["cat", "/etc/hostname"]).stdout.trim();
    let w = h.read(["cat", "/etc/hostname"]).stdout;
    w.trim();
    log(v + w + version::compare("1.0", "1.1"));
    docker::on(h).run(#{ image: "x", name: "y" });
});
"#;

#[test]
fn check_and_run_refuse_unknown_module_functions_and_arguments_no_signature_takes() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "m.rhai", MISTAKES);
    let out = capstan_in(d.path(), &["check", "m.rhai"]);
    assert_eq!(out.code, 2);
    for want in [
        "error: unknown function `backup::dri`; `backup` has dir, mysqldump, restore, undo_restore, verify\n  --> m.rhai:4:13\n",
        "error: `.run(..)` takes `argv` as array or `spec` as map; got a string (signatures: run(docker: Docker, spec: map) -> String; ",
        "  --> m.rhai:5:7\n",
        "error: `.replace_dir(..)` is given 2 argument(s) (the object counts as the first); it takes: replace_dir(host: Host, target: String, source: String)\n  --> m.rhai:6:7\n",
        "error: `.write_file(..)` takes `content` as String; got an integer",
        "warning: `trim()` changes the string in place and returns nothing; as a value use `trimmed()`\n  --> m.rhai:8:53\n",
        "m.rhai: 4 error(s), 1 warning(s)\n",
    ] {
        assert!(out.stderr.contains(want), "{want}\n---\n{}", out.stderr);
    }
    // `w.trim();` as a statement, an imported module's function and docker's own `run` are
    // not findings.
    assert!(!out.stderr.contains("m.rhai:10:"), "{}", out.stderr);
    assert!(!out.stderr.contains("m.rhai:11:"), "{}", out.stderr);
    assert!(!out.stderr.contains("m.rhai:12:"), "{}", out.stderr);

    let journal = d.path().join("j.db");
    let j = journal.to_str().unwrap();
    let out = capstan_in(d.path(), &["--journal", j, "run", "m.rhai"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("error: unknown function `backup::dri`")
            && out
                .stderr
                .contains("(and 3 more: `capstan check m.rhai` lists them)"),
        "{}",
        out.stderr
    );
    let runs = capstan_in(d.path(), &["--journal", j, "runs", "--json"]);
    assert_eq!(runs.stdout.trim(), "[]", "nothing was journaled");

    // With an inventory, a group it lacks is an error too; without one, nobody can tell.
    write(
        d.path(),
        "inv.toml",
        "[groups.app]\nhosts = [\"a1\"]\n[hosts.a1]\ntransport = \"local\"\n",
    );
    write(
        d.path(),
        "g.rhai",
        "for h in cluster().group(\"app\") { log(h.name); }\nfor h in cluster().group(\"tablet\") { log(h.name); }\n",
    );
    let out = capstan_in(d.path(), &["check", "g.rhai", "-i", "inv.toml"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "error: no group `tablet` in the inventory inv.toml (groups: app)\n  --> g.rhai:2:26\n"
        ),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("g.rhai:1:"), "{}", out.stderr);
    let out = capstan_in(d.path(), &["check", "g.rhai"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn check_lints_unknown_functions_duplicate_steps_and_undocumented_params() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "lint.rhai",
        "let p = params(#{ a: 1, b: param::optional(2, \"documented\") });\nstep(\"x\", || 1);\nstep(\"x\", || 2);\nlgo(\"typo\");\n",
    );
    let out = capstan_in(d.path(), &["check", "lint.rhai"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("warning: param `a` has no doc line"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("  --> lint.rhai:1:19\n"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("error: duplicate step name `x` (first at lint.rhai:2:6); step names must be unique\n  --> lint.rhai:3:6\n"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("error: unknown function `lgo`\n  --> lint.rhai:4:1\n"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .ends_with("lint.rhai: 2 error(s), 1 warning(s)\n"),
        "{}",
        out.stderr
    );
    // --json: a line per diagnostic, then the verdict with the event schema's version.
    let out = capstan_in(d.path(), &["check", "lint.rhai", "--json"]);
    assert_eq!(out.code, 2);
    let lines: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{}", out.stdout);
    assert!(lines[..3].iter().all(|l| l["event"] == "diagnostic"));
    let typo = lines
        .iter()
        .find(|l| l["message"] == "unknown function `lgo`")
        .unwrap_or_else(|| panic!("{}", out.stdout));
    assert_eq!(typo["severity"], "error", "{typo}");
    assert_eq!(lines[3]["event"], "check");
    assert_eq!(lines[3]["schema"], 1);
    assert_eq!(
        (lines[3]["errors"].as_u64(), lines[3]["warnings"].as_u64()),
        (Some(2), Some(1))
    );
    let ok = capstan(&["check", "examples/hello/playbook.rhai"]);
    assert_eq!(
        (ok.code, ok.stderr.as_str()),
        (
            0,
            "examples/hello/playbook.rhai: 0 error(s), 0 warning(s)\n"
        )
    );
}

#[test]
fn duplicate_step_at_run_time_names_both_places() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "dup.rhai",
        "for i in 0..2 {\n    step(\"same\", || i);\n}\n",
    );
    let out = capstan_in(d.path(), &["run", "dup.rhai"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stdout.contains("error: duplicate step name `same` (first used at dup.rhai:2:5); step names must be unique\n  --> dup.rhai:2:5"),
        "{}",
        out.stdout
    );
}

#[test]
fn malformed_scenario_is_positioned() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "p.rhai", "1");
    write(
        d.path(),
        "s.toml",
        "[inventory.hosts.a]\ntransport = \"local\"\n\n[hosts.b]\nports = [1]\n",
    );
    let out = capstan_in(d.path(), &["simulate", "p.rhai", "--scenario", "s.toml"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.starts_with(
            "error: hosts.b: unknown host `b` (the inventory has: a)\n  --> s.toml:4:1\n"
        ),
        "{}",
        out.stderr
    );
    write(
        d.path(),
        "s2.toml",
        "[inventory.hosts.a]\n[[rules]]\ncommand = \"x\"\nexit = 3\n",
    );
    let out = capstan_in(d.path(), &["simulate", "p.rhai", "--scenario", "s2.toml"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .starts_with("error: rules.exit: unknown field `exit`"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("--> s2.toml:4:1"), "{}", out.stderr);
}

#[test]
fn simulate_with_no_arguments_runs_the_readme_example() {
    let out = capstan(&["simulate"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .starts_with("examples/hello/playbook.rhai — succeeded"),
        "{}",
        out.stdout
    );
    for line in [
        "  [app1: upgrade 1.0.0 -> 1.1.0]",
        "app1         replace dir /srv/hello/bin with a copy of /srv/releases/hello-1.1.0/bin (old kept at /srv/hello/bin.capstan-undo-",
    ] {
        assert!(out.stdout.contains(line), "missing {line:?} in\n{}", out.stdout);
    }
    assert!(!out.stdout.contains("app3: upgrade 1"));
    // app3, at the target already, is in the steps table as not needed.
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("  skip  app3: upgrade to 1.1.0  ")
                && l.ends_with("  not needed: already at 1.1.0")),
        "{}",
        out.stdout
    );
}

#[test]
fn simulate_needs_no_network() {
    // A fresh network namespace has no interfaces up, not even loopback.
    let probe = std::process::Command::new("unshare")
        .args(["-n", "true"])
        .status()
        .unwrap();
    assert!(
        probe.success(),
        "unshare -n is needed for this test (root, util-linux)"
    );
    let out = std::process::Command::new("unshare")
        .args([
            "-n",
            env!("CARGO_BIN_EXE_capstan"),
            "simulate",
            "examples/hello/playbook.rhai",
            "--scenario",
            "examples/hello/scenario.toml",
            "--json",
        ])
        .current_dir(repo())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "report");
    assert_eq!(last["report"]["outcome"]["status"], "succeeded");
    assert_eq!(last["report"]["result"], "1.1.0");
    assert!(stdout
        .lines()
        .any(|l| l.contains("\"event\":\"step_finished\"")));
}

#[test]
fn list_describe_docs_and_defs() {
    let out = capstan(&["list"]);
    assert_eq!(out.code, 0);
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("preflight        preflight: a read-only look at every host")),
        "{}",
        out.stdout
    );
    for shipped in [
        "oms              oms: upgrade OceanBase Migration Service",
        "dolphindb        dolphindb: grayscale (rolling) upgrade of a DolphinDB HA cluster",
        "openmldb         openmldb: upgrade an OpenMLDB cluster in place, component by component",
        "oceanbase        oceanbase: rolling (zone by zone) upgrade of an OceanBase 4.x cluster",
    ] {
        assert!(
            out.stdout.lines().any(|l| l.starts_with(shipped)),
            "{}",
            out.stdout
        );
    }

    let out = capstan(&["describe", "preflight", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let info: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(info["params"][0]["name"], "min_free_mb");
    assert_eq!(info["params"][0]["default"], 1024);
    assert!(info["header"].as_str().unwrap().contains("Follows:"));

    let out = capstan(&["describe", "examples/hello/playbook.rhai"]);
    assert!(
        out.stdout.contains(
            "  release          required             directory of the unpacked new release"
        ),
        "{}",
        out.stdout
    );

    let out = capstan(&["describe", "nosuch"]);
    assert_eq!((out.code, out.stderr.as_str()), (2, "error: no playbook file `nosuch` and no shipped playbook of that name (shipped: dolphindb, oceanbase, oms, openmldb, preflight)\n"));

    let out = capstan(&["docs"]);
    assert_eq!(out.code, 0);
    for s in [
        "### `run(host: Host, argv: Array) -> Map`",
        "### `wait::poll(options: Map, condition: FnPtr)",
        "## Module `rolling`",
        "### `step(name: String, body: FnPtr)",
    ] {
        assert!(out.stdout.contains(s), "docs lack {s:?}");
    }

    let d = tempfile::tempdir().unwrap();
    let out = capstan(&["defs", "--out", d.path().to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let all: String = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(
        all.contains("fn run(host: Host, argv: array) -> map;"),
        "{all}"
    );
    assert!(!all.contains("-> ;"), "{all}");
    assert!(
        all.contains("fn poll(options: map, condition: Fn)"),
        "{all}"
    );
    assert!(
        !all.contains("EvalAltResult"),
        "raw Rust types leaked into definitions"
    );
}

#[test]
fn help_documents_the_exit_codes() {
    let out = capstan(&["--help"]);
    assert!(
        out.stdout
            .contains("Exit codes:\n  0   done\n  1   the playbook failed"),
        "{}",
        out.stdout
    );
}

/// Starts `capstan run p.rhai` in `dir`, waits for `marker` (written by the playbook), then
/// sends SIGINT `times` times, 300 ms apart. Returns the exit code and stdout.
fn interrupt(
    dir: &std::path::Path,
    marker: &std::path::Path,
    times: usize,
) -> (Option<i32>, String) {
    use std::time::{Duration, Instant};
    let child = capstan_cmd()
        .args(["run", "p.rhai"])
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !marker.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the playbook never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..times {
        let st = std::process::Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "did not stop promptly: {:?}",
        start.elapsed()
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn ctrl_c_stops_a_wait_and_exits_interrupted() {
    let d = tempfile::tempdir().unwrap();
    let marker = d.path().join("started");
    write(
        d.path(),
        "p.rhai",
        &format!("cluster().host(\"localhost\").write_file(\"{}\", \"x\");\nwait::sleep(60);\nlog(\"went on\");\n", marker.display()),
    );
    let (code, stdout) = interrupt(d.path(), &marker, 1);
    assert_eq!(code, Some(3), "{stdout}");
    assert!(stdout.contains("— INTERRUPTED in"), "{stdout}");
    assert!(!stdout.contains("went on"));
}

#[test]
fn second_ctrl_c_kills_the_running_command() {
    let d = tempfile::tempdir().unwrap();
    let marker = d.path().join("started");
    write(
        d.path(),
        "p.rhai",
        &format!(
            "let h = cluster().host(\"localhost\");\nh.write_file(\"{}\", \"x\");\nh.run([\"sleep\", \"61.25\"]);\nlog(\"went on\");\n",
            marker.display()
        ),
    );
    let (code, stdout) = interrupt(d.path(), &marker, 2);
    assert_eq!(code, Some(3), "{stdout}");
    assert!(stdout.contains("stopped by a second interrupt"), "{stdout}");
    let left = std::process::Command::new("pgrep")
        .args(["-f", "sleep 61.25"])
        .output()
        .unwrap();
    assert!(left.stdout.is_empty(), "the command survived the abort");
}

#[test]
fn stdlib_modules_win_over_files_beside_the_playbook() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "version.rhai",
        "fn at_least(a, b) { \"shadowed\" }\n",
    );
    write(d.path(), "mine.rhai", "fn twice(x) { x * 2 }\n");
    write(d.path(), "p.rhai", "import \"version\" as v;\nimport \"mine\" as m;\n[v::at_least(\"1.2\", \"1.1\"), m::twice(21)]\n");
    let out = capstan_in(d.path(), &["run", "p.rhai", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let last: serde_json::Value = serde_json::from_str(out.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["report"]["result"], serde_json::json!([true, 42]));
}

#[test]
fn journal_commands_name_what_is_wrong() {
    let d = tempfile::tempdir().unwrap();
    let j = d.path().join("j.db");
    let j = j.to_str().unwrap();
    let out = capstan(&["runs", "--journal", j]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "no runs in the journal\n")
    );
    let out = capstan(&["report", "nosuch", "--journal", j]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains(&format!(
            "error: no run `nosuch` in the journal {j} (see `capstan runs`)"
        )),
        "{}",
        out.stderr
    );
    let out = capstan(&["resume", "nosuch", "--journal", j]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    // A journal that cannot be written: exit 6, before anything runs.
    std::fs::write(d.path().join("file"), "").unwrap();
    let bad = d.path().join("file/j.db");
    let out = capstan(&[
        "run",
        "examples/hello/playbook.rhai",
        "--journal",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 6, "{}", out.stderr);
    assert!(
        out.stderr.starts_with("error: journal: cannot create "),
        "{}",
        out.stderr
    );
    // Rolling back asks first; with no terminal and no --yes it refuses (exit 4).
    write(d.path(), "p.rhai", "step(\"s\", || 1);\n");
    let out = capstan_in(d.path(), &["run", "p.rhai", "--journal", j]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let run = crate::journal::run_id(&out);
    let out = capstan(&["rollback", &run, "--journal", j]);
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert!(out.stderr.contains("rerun with --yes"), "{}", out.stderr);
    let out = capstan(&["runs", "--journal", j]);
    assert!(out.stdout.contains(&format!("{run}  ")), "{}", out.stdout);
    assert!(out.stdout.contains(" succeeded "), "{}", out.stdout);
}

#[test]
fn on_failure_ask_rolls_back_with_yes_and_stops_with_no_one_to_ask() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("conf");
    std::fs::write(&f, "old").unwrap();
    write(
        d.path(),
        "p.rhai",
        &format!(
            "step(\"change\", || {{\n    cluster().host(\"localhost\").write_file(\"{}\", \"new\");\n    fail(\"boom\");\n}});\n",
            f.display()
        ),
    );
    let out = capstan_in(d.path(), &["run", "p.rhai", "--on-failure", "ask"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "new");
    assert!(
        out.stdout
            .contains("--on-failure ask: no terminal to ask; not rolling back"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("next: `capstan resume "),
        "{}",
        out.stdout
    );
    std::fs::write(&f, "old").unwrap();
    let out = capstan_in(d.path(), &["run", "p.rhai", "--on-failure", "ask", "--yes"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stdout.contains("FAILED, ROLLED BACK"), "{}", out.stdout);
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "old");
}

/// Values that cannot work are refused at load time, naming the field, before any host is touched.
#[test]
fn values_that_cannot_work_exit_2_naming_the_field() {
    let d = tempfile::tempdir().unwrap();
    // The playbook would leave a trace on the local host if it ran.
    let touched = d.path().join("touched");
    write(
        d.path(),
        "p.rhai",
        &format!(
            "let p = params(#{{ release: param::required(\"the new release\") }});\nstep(\"touch\", || cluster().hosts()[0].shell(\"touch {}\"));\n",
            touched.display()
        ),
    );
    write(d.path(), "ok.toml", "[hosts.a]\ntransport = \"local\"\n");
    let cases: [(&str, &[&str], &str); 6] = [
        ("addr.toml", &[], "hosts.a.address: is empty"),
        ("port.toml", &[], "hosts.a.port: 0 is not a port"),
        (
            "timeout.toml",
            &[],
            "defaults.command_timeout (for host a): must be more than 0s",
        ),
        (
            "connect.toml",
            &[],
            "hosts.a.connect_timeout: must be more than 0s",
        ),
        (
            "ok.toml",
            &["-p", "release="],
            "param `release` is required and was given empty",
        ),
        (
            "ok.toml",
            &["--parallelism", "0", "-p", "release=x"],
            "--parallelism",
        ),
    ];
    write(d.path(), "addr.toml", "[hosts.a]\naddress = \"\"\n");
    write(
        d.path(),
        "port.toml",
        "[hosts.a]\naddress = \"127.0.0.1\"\nport = 0\n",
    );
    write(
        d.path(),
        "timeout.toml",
        "[defaults]\ncommand_timeout = \"0s\"\n[hosts.a]\ntransport = \"local\"\n",
    );
    write(d.path(), "connect.toml", "[hosts.a]\nconnect_timeout = 0\n");
    for (inv, extra, want) in cases {
        let mut args = vec!["run", "p.rhai", "-i", inv, "--journal", "j.db"];
        args.extend_from_slice(extra);
        let out = capstan_in(d.path(), &args);
        let said = format!("{}{}", out.stdout, out.stderr);
        assert_eq!(out.code, 2, "{inv} {extra:?}: {said}");
        assert!(said.contains(want), "{inv} {extra:?}: {said}");
        assert!(!touched.exists(), "{inv} {extra:?}: the playbook ran");
        // Nothing changed: no hint to resume or roll back.
        assert!(
            !said.contains("capstan rollback"),
            "{inv} {extra:?}: {said}"
        );
    }
    let out = capstan_in(
        d.path(),
        &[
            "run",
            "p.rhai",
            "-i",
            "ok.toml",
            "--journal",
            "j.db",
            "-p",
            "release=x",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(touched.exists());
}

/// Under a low limit on open files, a run over many SSH hosts is refused before it connects
/// (a session per host would not fit), and a parallelism that does not fit is lowered, saying so.
#[test]
fn a_run_that_would_exceed_the_open_file_limit_says_so_before_connecting() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "p.rhai", "log(\"nothing to do\");\n");
    let inventory = |n: usize| {
        let mut t =
            String::from("[defaults]\ntransport = \"ssh\"\naddress = \"127.0.0.1\"\nport = 1\n");
        for i in 0..n {
            t.push_str(&format!("\n[hosts.h{i}]\n"));
        }
        t
    };
    write(d.path(), "many.toml", &inventory(300));
    write(d.path(), "some.toml", &inventory(60));
    let run = |args: &[&str]| {
        let c = capstan_cmd();
        let bin = c.get_program().to_owned();
        let envs: Vec<_> = c
            .get_envs()
            .map(|(k, v)| (k.to_owned(), v.map(|v| v.to_owned())))
            .collect();
        let mut sh = std::process::Command::new("/bin/sh");
        sh.current_dir(d.path())
            .arg("-c")
            .arg("ulimit -n 256 && exec \"$0\" \"$@\"")
            .arg(bin)
            .args(args);
        for (k, v) in envs {
            if let Some(v) = v {
                sh.env(k, v);
            }
        }
        let out = sh.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["run", "p.rhai", "-i", "many.toml", "--yes"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("300 SSH hosts") && err.contains("may open 256") && err.contains("ulimit -n"),
        "{err}"
    );
    // 60 sessions hold 184 files: 72 are left, 24 commands at once.
    let (code, err) = run(&[
        "run",
        "p.rhai",
        "-i",
        "some.toml",
        "--yes",
        "--parallelism",
        "50",
        "--no-reach-check",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("--parallelism 50 over 60 SSH hosts")
            && err.contains("at most 24 hosts at once"),
        "{err}"
    );
}

/// Colour only on a terminal, and never with `NO_COLOR` set: a log file or a pipe gets plain
/// text, tracing's own lines included (they carried escapes into logs before). A playbook's
/// warning is printed once.
#[test]
fn escapes_only_on_a_terminal_and_never_with_no_color() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "p.rhai",
        r#"step("careful", || { warn("mind the gap"); log("done"); });"#,
    );
    let out = capstan_cmd()
        .current_dir(d.path())
        .args(["run", "p.rhai"])
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // Once: the progress has it; tracing's copy of a playbook's warning is left out.
    assert_eq!(err.matches("mind the gap").count(), 1, "{err}");
    assert!(!err.contains('\u{1b}'), "escapes in a pipe: {err:?}");
    // On a terminal (script(1) gives the command a pseudo-terminal): colour, unless NO_COLOR.
    let on_tty = |no_color: Option<&str>| {
        let mut c = std::process::Command::new("script");
        c.current_dir(d.path())
            .args([
                "-qec",
                &format!("{} run p.rhai", env!("CARGO_BIN_EXE_capstan")),
                "/dev/null",
            ])
            .env(
                "CAPSTAN_JOURNAL",
                d.path().join(format!("j-{}.db", no_color.is_some())),
            );
        match no_color {
            Some(v) => c.env("NO_COLOR", v),
            None => c.env_remove("NO_COLOR"),
        };
        let out = c
            .output()
            .expect("script(1) (util-linux) is needed for this test");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let coloured = on_tty(None);
    assert!(coloured.contains("mind the gap"), "{coloured}");
    assert!(
        coloured.contains('\u{1b}'),
        "no colour on a terminal: {coloured:?}"
    );
    let plain = on_tty(Some("1"));
    assert!(plain.contains("mind the gap"), "{plain}");
    assert!(
        !plain.contains('\u{1b}'),
        "escapes despite NO_COLOR: {plain:?}"
    );
}

/// `capstan completions SHELL` prints a script the shell accepts, which calls capstan back to
/// complete each word; a run id is completed from the journal, with its playbook and status.
/// `capstan man` prints the manual page.
#[test]
fn completions_know_the_journals_run_ids_and_the_man_page_lists_every_command() {
    let d = tempfile::tempdir().unwrap();
    let journal = d.path().join("j.db");
    write(d.path(), "p.rhai", r#"step("one", || log("hi"));"#);
    let out = capstan_cmd()
        .current_dir(d.path())
        .env("CAPSTAN_JOURNAL", &journal)
        .args(["run", "p.rhai"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let run_id = |out: &std::process::Output| {
        String::from_utf8_lossy(&out.stderr)
            .split("run ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .map(str::to_string)
            .unwrap()
    };
    let id = run_id(&out);

    // bash accepts the script and registers the function for capstan.
    let script = capstan(&["completions", "bash"]);
    assert_eq!(script.code, 0, "{}", script.stderr);
    let reg = std::process::Command::new("bash")
        .args(["-c", "source /dev/stdin; complete -p capstan"])
        .stdin({
            let f = d.path().join("completion.bash");
            std::fs::write(&f, &script.stdout).unwrap();
            std::fs::File::open(f).unwrap()
        })
        .output()
        .unwrap();
    assert!(reg.status.success(), "{reg:?}");
    assert!(
        String::from_utf8_lossy(&reg.stdout).contains("-F _clap_complete_capstan capstan"),
        "{reg:?}"
    );
    // What the script asks when the operator types `capstan resume 2026<TAB>`.
    let complete = |shell: &str, words: &[&str]| {
        let out = capstan_cmd()
            .env("CAPSTAN_JOURNAL", &journal)
            .env("COMPLETE", shell)
            .env("_CLAP_COMPLETE_INDEX", (words.len() - 1).to_string())
            .env("_CLAP_COMPLETE_COMP_TYPE", "9")
            .env("_CLAP_COMPLETE_SPACE", "true")
            .env("_CLAP_IFS", "\n")
            .arg("--")
            .args(words)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for cmd in ["resume", "rollback", "report"] {
        let got = complete("bash", &["capstan", cmd, &id[..6]]);
        assert_eq!(got.trim(), id, "{cmd}: {got:?}");
    }
    assert_eq!(complete("bash", &["capstan", "resume", "1999"]).trim(), "");
    let fish = complete("fish", &["capstan", "report", ""]);
    assert_eq!(
        fish.lines().next(),
        Some(format!("{id}\tp.rhai succeeded").as_str()),
        "{fish:?}"
    );
    let subcommands = complete("bash", &["capstan", "roll"]);
    assert_eq!(subcommands.trim(), "rollback", "{subcommands:?}");
    // An unknown shell names the known ones.
    let bad = capstan(&["completions", "tcsh"]);
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("bash, elvish, fish, powershell, zsh"),
        "{}",
        bad.stderr
    );

    let man = capstan(&["man"]);
    assert_eq!(man.code, 0, "{}", man.stderr);
    assert!(man.stdout.contains(".TH capstan 1"), "{}", man.stdout);
    // Every page the main one refers to is written with --out-dir.
    let pages = d.path().join("man1");
    let out = capstan(&["man", "--out-dir", pages.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for cmd in [
        "run",
        "resume",
        "rollback",
        "runs",
        "report",
        "simulate",
        "check",
        "completions",
    ] {
        assert!(
            man.stdout.contains(&format!("capstan\\-{cmd}(1)")),
            "{cmd} missing from the man page"
        );
        let page = std::fs::read_to_string(pages.join(format!("capstan-{cmd}.1"))).unwrap();
        assert!(page.contains(".TH capstan-"), "{page}");
    }
}

#[test]
fn a_cjk_step_name_lines_up_in_the_text_report() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "p.rhai",
        "let h = cluster().hosts()[0];\nstep(\"升级 数据库\", || h.read([\"true\"]));\nstep(\"upgrade the database\", || h.read([\"true\"]));\nskip_step(\"升级 备份\", \"已完成\");\n",
    );
    write(d.path(), "inv.toml", "[hosts.db1]\ntransport = \"local\"\n");
    let out = capstan_in(d.path(), &["run", "p.rhai", "-i", "inv.toml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    let row = |name: &str| {
        *lines
            .iter()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("no row for {name} in\n{}", out.stdout))
    };
    // Display columns: a CJK character takes two (what a terminal shows).
    let column_of = |line: &str, needle: &str| {
        let at = line.find(needle).unwrap();
        unicode_width::UnicodeWidthStr::width(&line[..at])
    };
    let wide = row("升级 数据库");
    let narrow = row("upgrade the database");
    // The name column is as wide as its widest name, 20 columns, plus two: the duration starts
    // at the same place on both rows, and so does the action count.
    assert_eq!(
        column_of(wide, "action(s)"),
        column_of(narrow, "action(s)"),
        "\n{wide}\n{narrow}"
    );
    assert_eq!(column_of(wide, "s  1"), column_of(narrow, "s  1"));
    let skipped = row("升级 备份");
    assert_eq!(
        column_of(skipped, "not needed: 已完成"),
        column_of(narrow, "1 action(s)"),
        "\n{skipped}\n{narrow}"
    );
    assert!(narrow.ends_with("1 action(s) on db1"), "{narrow}");
}

#[test]
fn inventory_show_names_each_hosts_lock_and_where_it_came_from() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "inv.toml",
        "[defaults]\nhost_lock_lease = \"2m\"\n[hosts.a]\naddress = \"10.0.0.1\"\n[hosts.b]\naddress = \"10.0.0.2\"\nhost_lock = \"/srv/locks/capstan\"\n[hosts.c]\naddress = \"10.0.0.3\"\nhost_lock = false\n",
    );
    let out = capstan_in(
        d.path(),
        &["-F", "none", "inventory", "show", "-i", "inv.toml"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let line = |host: &str, key: &str| -> String {
        let block = out
            .stdout
            .split("\n\n")
            .find(|b| b.starts_with(&format!("{host}  ")))
            .unwrap_or_else(|| panic!("no {host} in\n{}", out.stdout));
        let l = block
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{key} ")))
            .unwrap_or_else(|| panic!("no {key} for {host} in\n{block}"));
        l.split_whitespace().collect::<Vec<_>>().join(" ")
    };
    assert_eq!(
        line("a", "host_lock"),
        "host_lock the host's $CAPSTAN_HOST_LOCK, else /var/tmp/capstan-host-lock (built-in)"
    );
    assert_eq!(
        line("a", "host_lock_lease"),
        "host_lock_lease 2m (defaults)"
    );
    assert_eq!(
        line("b", "host_lock"),
        "host_lock /srv/locks/capstan (hosts.b)"
    );
    assert_eq!(line("c", "host_lock"), "host_lock off (hosts.c)");
    let json = capstan_in(
        d.path(),
        &[
            "-F",
            "none",
            "inventory",
            "show",
            "-i",
            "inv.toml",
            "--json",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let hosts = v["hosts"].as_array().unwrap();
    assert_eq!(hosts[0]["host_lock"], "");
    assert_eq!(hosts[1]["host_lock"], "/srv/locks/capstan");
    assert!(hosts[2]["host_lock"].is_null());
    assert_eq!(hosts[0]["host_lock_lease_s"], 120.0);
    // A lock directory must be an absolute path.
    write(d.path(), "bad.toml", "[hosts.a]\nhost_lock = \"locks\"\n");
    let out = capstan_in(
        d.path(),
        &["-F", "none", "inventory", "show", "-i", "bad.toml"],
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("hosts.a.host_lock: expected true (the default place), false, or the absolute path of the lock directory"),
        "{}",
        out.stderr
    );
}

/// A list many undos capture (`shared_list`, as a cluster's machines) is journaled once per run
/// and referenced from each undo; a rollback by another process reads it back from there.
#[test]
fn a_shared_list_captured_by_many_undos_is_journaled_once_and_read_back_by_a_rollback() {
    let d = tempfile::tempdir().unwrap();
    let j = d.path().join("j.db");
    let files: Vec<String> = (0..4)
        .map(|i| d.path().join(format!("undone{i}")).display().to_string())
        .collect();
    write(
        d.path(),
        "p.rhai",
        &format!(
            r#"let h = cluster().host("localhost");
let c = #{{ files: shared_list({files:?}) }};
for i in 0..4 {{
    step(`machine ${{i}}`, || {{
        undo(`mark ${{i}}`, || {{ h.run(["touch", c.files[i]]); }});
    }});
}}
step("boom", || fail("boom"));
"#
        ),
    );
    let out = capstan_in(
        d.path(),
        &[
            "run",
            "p.rhai",
            "--on-failure",
            "stop",
            "--journal",
            j.to_str().unwrap(),
        ],
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    let run = crate::journal::run_id(&out);
    {
        let db = rusqlite::Connection::open(&j).unwrap();
        let stored: Vec<String> = db
            .prepare("SELECT value FROM captured WHERE run_id = ?")
            .unwrap()
            .query_map([&run], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(stored.len(), 1, "{stored:?}");
        assert!(stored[0].contains(&files[3]), "{stored:?}");
        let specs: Vec<String> = db
            .prepare("SELECT spec FROM undos WHERE run_id = ?")
            .unwrap()
            .query_map([&run], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(specs.len(), 4);
        for s in &specs {
            assert!(s.contains(r#"{"$list":""#), "{s}");
            assert!(
                !s.contains("undone"),
                "the list is copied into an undo: {s}"
            );
        }
    }
    assert!(files.iter().all(|f| !std::path::Path::new(f).exists()));
    let out = capstan_in(
        d.path(),
        &["rollback", &run, "--yes", "--journal", j.to_str().unwrap()],
    );
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    for f in &files {
        assert!(
            std::path::Path::new(f).exists(),
            "{f} not made by the rollback: {}",
            out.stdout
        );
    }
}
