//! The simulated world: faults from the scenario and `--fail`, availability and broken rules, the
//! state a failure leaves and the rollback path, the HTML report in a real browser.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::support::*;

fn hello() -> (String, String) {
    (
        repo()
            .join("examples/hello/playbook.rhai")
            .display()
            .to_string(),
        repo()
            .join("examples/hello/scenario.toml")
            .display()
            .to_string(),
    )
}

fn simulate_json(args: &[&str]) -> (Out, Value) {
    let mut a = vec!["simulate"];
    a.extend_from_slice(args);
    a.push("--json");
    let out = capstan(&a);
    let report = last_report(&out.stdout);
    (out, report)
}

#[test]
fn the_readme_example_without_and_with_a_fault() {
    let (pb, sc) = hello();
    // Without: app1 and app2 upgraded one at a time, app3 skipped; one host down at a time.
    let out = capstan(&["simulate", &pb, "--scenario", &sc]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("app1: upgrade 1.0.0 -> 1.1.0  down: hello@app1"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("preflight                     all up"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("RULE BROKEN"));

    // With app2's start failing: the run stops there, says what it left, and rolls back.
    let out = capstan(&[
        "simulate",
        &pb,
        "--scenario",
        &sc,
        "--fail",
        "app2:app-ctl start",
    ]);
    assert_eq!(out.code, 1);
    let t = &out.stdout;
    assert!(
        t.contains("faults that fired") && t.contains("fail: the first `*app-ctl start*` on app2"),
        "{t}"
    );
    assert!(
        t.contains("stopped in step \"app2: upgrade 1.0.0 -> 1.1.0\""),
        "{t}"
    );
    assert!(t.contains("app2         port 8080 closed"), "{t}");
    assert!(
        t.contains("app1         file /srv/hello/bin/VERSION changed"),
        "{t}"
    );
    let path = t
        .split("rollback path (undos run newest first)\n")
        .nth(1)
        .unwrap()
        .split("\n\n")
        .next()
        .unwrap();
    let order: Vec<&str> = path
        .lines()
        .filter(|l| l.trim_start().starts_with('#'))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(order, ["#7", "#6", "#5", "#4", "#3", "#2", "#1"]);
    assert!(
        path.contains("after the rollback every host is as it was at the start"),
        "{path}"
    );

    // The same in JSON.
    let (_, r) = simulate_json(&[&pb, "--scenario", &sc, "--fail", "app2:app-ctl start"]);
    assert_eq!(r["status"], "rolled_back");
    let sim = &r["simulation"];
    assert_eq!(sim["faults"][0]["host"], "app2");
    assert_eq!(sim["changed_after_rollback"], serde_json::json!([]));
    assert!(!sim["changed_at_stop"].as_array().unwrap().is_empty());

    // --on-failure stop shows the state left and no rollback.
    let (_, r) = simulate_json(&[
        &pb,
        "--scenario",
        &sc,
        "--fail",
        "app2:app-ctl start",
        "--on-failure",
        "stop",
    ]);
    assert_eq!(r["status"], "failed");
    assert_eq!(r["simulation"]["changed_after_rollback"], Value::Null);
}

#[test]
fn a_broken_availability_rule_is_flagged_loudly() {
    let (pb, sc) = hello();
    let dir = tempfile::tempdir().unwrap();
    let strict = std::fs::read_to_string(&sc)
        .unwrap()
        .replace("min_up = 2", "min_up = 3");
    let strict_path = dir.path().join("strict.toml");
    std::fs::write(&strict_path, strict).unwrap();
    let out = capstan(&["simulate", &pb, "--scenario", strict_path.to_str().unwrap()]);
    assert!(
        out.stdout
            .contains("!! RULE BROKEN: hello: 2 of 3 up, the rule needs at least 3"),
        "{}",
        out.stdout
    );
    assert!(out
        .stdout
        .contains("an availability rule was broken during this run"));
    let (_, r) = simulate_json(&[&pb, "--scenario", strict_path.to_str().unwrap()]);
    let broken: Vec<&Value> = r["simulation"]["availability"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| !a["violations"].as_array().unwrap().is_empty())
        .collect();
    assert_eq!(broken.len(), 2, "one window per upgraded host");
    // A sample holds the change: app1 went down where the first window starts.
    assert_eq!(broken[0]["went_down"], serde_json::json!(["hello@app1"]));
    // Replayed, the samples say what was down at each: never more than one host.
    let sim: capstan::report::SimReport = serde_json::from_value(r["simulation"].clone()).unwrap();
    let mut most = 0;
    sim.down_states(|_, _, down| most = most.max(down.len()));
    assert_eq!(most, 1);
}

const WORLD: &str = r#"
[inventory.defaults]
transport = "ssh"
groups = ["kv"]

[inventory.hosts.kv1]
address = "10.0.0.1"
[inventory.hosts.kv2]
address = "10.0.0.2"
[inventory.hosts.kv3]
address = "10.0.0.3"

[hosts.kv1]
ports = [7000]
[hosts.kv2]
ports = [7000]
[hosts.kv3]
ports = [7000]

[[products]]
model = "service"
name = "kv"
group = "kv"
port = 7000

[[rules]]
command = "kvctl stop"
close_ports = [7000]
[[rules]]
command = "kvctl start"
open_ports = [7000]
[[rules]]
command = "kvctl health"
stdout = "healthy\n"
"#;

const ROLL: &str = r#"
let out = [];
for h in cluster().group("kv") {
    step(`${h}: restart`, || {
        h.run(["kvctl", "stop"]);
        h.run(["kvctl", "start"]);
        h.wait_port(7000, #{ timeout: 30 });
        let health = h.read(["kvctl", "health"]).stdout.trimmed();
        if health != "healthy" { fail(`${h} is ${health}`) }
        out.push(health);
    });
}
out
"#;

#[test]
fn scenario_faults_fail_an_action_cut_a_host_keep_a_service_down_or_answer_unhealthy() {
    let with = |fault: &str| simulate(&format!("{WORLD}\n[[faults]]\n{fault}\n"), ROLL);

    let r = with("action = \"*kvctl start*\"\nnth = 2\nmessage = \"address already in use\"");
    let (_, e) = failure(&r);
    assert!(
        e.message.contains("address already in use") && e.message.contains("kv2"),
        "{}",
        e.message
    );

    let r = with("kind = \"unreachable\"\nhost = \"kv3\"\nfrom_step = 3");
    let (kind, e) = failure(&r);
    assert_eq!(kind, capstan::FaultKind::Unreachable);
    assert!(
        e.message.contains("kv3") && e.message.contains("unreachable"),
        "{}",
        e.message
    );
    assert_eq!(r.steps.iter().filter(|s| s.error.is_none()).count(), 2);

    // Cut off from the start: as a real run, the rehearsal stops before its first change.
    let r = with("kind = \"unreachable\"\nhost = \"kv3\"");
    let (kind, e) = failure(&r);
    assert_eq!(kind, capstan::FaultKind::Unreachable);
    assert!(
        e.message
            .contains("1 of 3 host(s) cannot be reached, so nothing was changed")
            && e.message.contains("kv3: "),
        "{}",
        e.message
    );
    let sim = r.simulation.as_ref().unwrap();
    assert!(sim.changed_at_stop.is_empty(), "{:?}", sim.changed_at_stop);
    assert!(sim.unfired.is_empty(), "{:?}", sim.unfired);

    let r = with("kind = \"stays_down\"\nhost = \"kv2\"\nport = 7000");
    let (kind, e) = failure(&r);
    assert_eq!(kind, capstan::FaultKind::Timeout);
    assert!(e.message.contains("port 7000"), "{}", e.message);
    let sim = r.simulation.as_ref().unwrap();
    assert_eq!(sim.down_at(sim.availability.len() - 1), ["kv@kv2"]);

    let r = with("kind = \"unhealthy\"\nhost = \"kv1\"\naction = \"*kvctl health*\"\nstdout = \"degraded\\n\"");
    let (_, e) = failure(&r);
    assert!(e.message.contains("kv1 is degraded"), "{}", e.message);
}

#[test]
fn scenario_errors_name_the_field_and_line() {
    let err = |extra: &str| {
        let text = format!("{WORLD}\n{extra}\n");
        capstan::Scenario::from_str_at(&text, "bad.toml", Path::new("."))
            .unwrap_err()
            .render()
    };
    let e = err("[[faults]]\nkind = \"unreachable\"\nhost = \"kv9\"");
    assert!(
        e.contains("faults[0]: host pattern `kv9` matches no host") && e.contains("bad.toml:"),
        "{e}"
    );
    let e = err("[[faults]]\naction = \"[oops\"");
    assert!(e.contains("faults[0]: bad action pattern"), "{e}");
    let e = err("[[faults]]\naction = \"x\"\nwhen = 3");
    assert!(e.contains("unknown field `when`"), "{e}");
    let e = err("[[products]]\nmodel = \"nosuch\"");
    assert!(
        e.contains("products[1]: unknown product model `nosuch`"),
        "{e}"
    );
    let e = err("[[products]]\nmodel = \"hello\"\nquorum = 2");
    assert!(
        e.contains("the `hello` model has no setting `quorum`"),
        "{e}"
    );
    let line = WORLD.lines().count() + 2;
    let e = err("[[faults]]\nkind = \"stays_down\"\nhost = \"kv1\"");
    assert!(
        e.contains(&format!("bad.toml:{line}:")),
        "want line {line}: {e}"
    );

    // --fail is checked against the inventory too.
    let (pb, sc) = hello();
    let out = capstan(&["simulate", &pb, "--scenario", &sc, "--fail", "app9:start"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("`app9` matches no host"),
        "{}",
        out.stderr
    );
    // `#N` counts from 1.
    for (n, want) in [("#0", "counted from 1"), ("#-2", "positive number")] {
        let out = capstan(&[
            "simulate",
            &pb,
            "--scenario",
            &sc,
            "--fail",
            &format!("app2:start{n}"),
        ]);
        assert_eq!(out.code, 2, "{n}: {}", out.stderr);
        assert!(out.stderr.contains(want), "{n}: {}", out.stderr);
    }
}

#[test]
fn a_fault_that_never_fires_makes_the_rehearsal_fail_and_is_named() {
    let (pb, sc) = hello();
    // The run itself succeeds: nothing matches the pattern.
    let (out, r) = simulate_json(&[&pb, "--scenario", &sc, "--fail", "app2:no-such-command"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(r["status"], "succeeded");
    assert_eq!(
        r["simulation"]["unfired"],
        serde_json::json!(["fail: the first `*no-such-command*` on app2"])
    );
    assert!(out.stderr.contains("never fired"), "{}", out.stderr);
    assert!(out.stderr.contains("*no-such-command*"), "{}", out.stderr);
    // A fault past the number of matches (the 99th start on app2) never fires either.
    let out = capstan(&[
        "simulate",
        &pb,
        "--scenario",
        &sc,
        "--fail",
        "app2:start#99",
    ]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stdout.contains("faults that never fired"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("match #99 of `*start*` on app2"),
        "{}",
        out.stdout
    );
    // One that fires is not listed.
    let (out, r) = simulate_json(&[&pb, "--scenario", &sc, "--fail", "app2:app-ctl start"]);
    assert_ne!(out.code, 0);
    assert!(r["simulation"].get("unfired").is_none(), "{r}");
}

#[test]
fn the_html_report_renders_the_timeline_in_a_browser() {
    let chromium = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| {
            Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {c}"))
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("chromium is not installed: run scripts/test.sh");
    let (pb, sc) = hello();
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("report.html");
    let out = capstan(&[
        "simulate",
        &pb,
        "--scenario",
        &sc,
        "--fail",
        "app2:app-ctl start",
        "--html",
        html.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let text = std::fs::read_to_string(&html).unwrap();
    // Self-contained: nothing to fetch (the SVG namespace is a name, not a request).
    assert!(!text.contains("<script") && !text.contains("<link") && !text.contains("src="));

    let url = format!("file://{}", html.display());
    let browser = |extra: &[&str]| {
        Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--window-size=1200,900",
            ])
            .args(extra)
            .arg(&url)
            .env("HOME", dir.path())
            .output()
            .unwrap()
    };
    // The DOM as the browser built it.
    let dom = String::from_utf8_lossy(&browser(&["--dump-dom"]).stdout).into_owned();
    assert!(
        dom.contains("<svg id=\"timeline\""),
        "no timeline in the rendered DOM"
    );
    for h in ["app1", "app2", "app3"] {
        assert!(
            dom.contains(&format!("data-host=\"{h}\"")),
            "no row for {h}"
        );
    }
    let actions = dom.matches("class=\"action\"").count();
    assert!(actions >= 30, "only {actions} action bars");
    assert!(dom.contains("id=\"availability\"") && dom.matches("class=\"avail\"").count() >= 4);
    assert!(dom.contains("class=\"fault\""));
    assert!(dom.contains("id=\"rollback\"") && dom.contains("Rollback path"));
    assert!(dom.contains("every host is as it was at the start"));
    // The timeline takes the page's width (a viewBox, no fixed size), every step has its own
    // labelled row, the rollback has one, and the availability colours have a legend.
    assert!(dom.contains("viewBox=\"0 0 1200 ") && !dom.contains("<svg id=\"timeline\" width="));
    assert!(dom.contains("svg { display: block; width: 100%;"));
    assert!(
        dom.contains("data-step=\"app2: upgrade 1.0.0 -&gt; 1.1.0\""),
        "no row for app2's step"
    );
    assert!(
        dom.contains(">2. preflight<") || dom.contains("2. preflight</text>"),
        "step rows are numbered"
    );
    assert!(dom.contains("id=\"rollback-row\"") && dom.matches("class=\"undo\"").count() >= 2);
    assert!(dom.contains("id=\"availability-legend\"") && dom.contains("a rule broken"));
    // Commands as argv: each argument in its own box, in the rollback's table.
    assert!(
        dom.contains("<code>/srv/hello/bin/app-ctl</code><code>start</code>")
            || dom.contains("<code>/srv/hello/bin/app-ctl</code> <code>start</code>"),
        "no argv in the rollback table"
    );
    // And a picture of it.
    let png = dir.path().join("shot.png");
    let shot = browser(&[&format!("--screenshot={}", png.display())]);
    assert!(png.exists(), "{}", String::from_utf8_lossy(&shot.stderr));
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[1..4], b"PNG");
    assert!(
        bytes.len() > 20_000,
        "the screenshot looks blank ({} bytes)",
        bytes.len()
    );
}

#[test]
fn a_simulated_server_keeps_what_the_playbook_writes() {
    let scenario = r#"
[inventory.hosts.db1]
transport = "ssh"
address = "10.0.0.3"

[sql_servers.db1]
init = [
    "CREATE TABLE oms_version (version TEXT PRIMARY KEY)",
    "INSERT INTO oms_version VALUES ('4.2.5-CE')",
]

[[sql]]
host = "db1"
statement = "SHOW *"
rows = [{ Variable_name = "version", Value = "5.7.25-OceanBase" }]
"#;
    let report = simulate(
        scenario,
        r#"
let db = sql::connect(#{ host: "db1", user: "root" });
let before = db.value("SELECT version FROM oms_version");
db.exec("REPLACE INTO oms_version (version) VALUES (?)", ["4.2.9-CE"]);
db.exec("DELETE FROM oms_version WHERE version = ?", [before]);
let rows = wait::sql(db, "SELECT version FROM oms_version", (), "4.2.9-CE", #{ timeout: 5 });
let shown = db.query("SHOW VARIABLES LIKE 'version'")[0].Value;
let code = 0;
try { db.query("SELEC nonsense"); } catch (e) { code = e.code; }
#{ before: before, after: rows[0].version, shown: shown, code: code }
"#,
    );
    ok(&report);
    let r = &report.result;
    assert_eq!(r["before"], "4.2.5-CE");
    assert_eq!(r["after"], "4.2.9-CE");
    assert_eq!(r["shown"], "5.7.25-OceanBase", "rules answer first");
    assert_eq!(r["code"], 1064);

    let e = capstan::Scenario::from_str_at(
        "[inventory.hosts.db1]\ntransport = \"local\"\n\n[sql_servers.db1]\ninit = [\"CREATE TABL x\"]\n",
        "s.toml",
        Path::new("."),
    )
    .unwrap_err()
    .render();
    assert!(
        e.contains("sql_servers.db1: init[0] `CREATE TABL x`") && e.contains("s.toml:4:"),
        "{e}"
    );
}

#[test]
fn simulated_processes_answer_pgrep_and_pkill() {
    let scenario = r#"
[inventory.hosts.t1]
transport = "ssh"
address = "10.0.0.1"

[hosts.t1]
processes = ["java -cp openmldb.jar com._4paradigm.openmldb.tablet", "sshd: /usr/sbin/sshd"]
"#;
    let report = simulate(
        scenario,
        r#"
let h = cluster().host("t1");
let before = h.read(["pgrep", "-f", "openmldb.tablet"]).stdout.trimmed();
h.run(["pkill", "-f", "openmldb.tablet"]);
let after = h.read(["pgrep", "-f", "openmldb.tablet"], #{ allow_fail: true }).code;
#{ before: before, after: after }
"#,
    );
    ok(&report);
    assert_eq!(report.result["before"], "1001");
    assert_eq!(report.result["after"], 1);
    let changed = &report.simulation.as_ref().unwrap().changed_at_stop;
    assert_eq!(
        changed
            .iter()
            .map(|c| c.change.as_str())
            .collect::<Vec<_>>(),
        ["process `java -cp openmldb.jar com._4paradigm.openmldb.tablet` gone"]
    );
}

#[test]
fn a_real_runs_report_renders_as_html_too() {
    let s = Scratch::new(false, "");
    let pb = s.write(
        "pb.rhai",
        "let h = cluster().host(\"localhost\");\nstep(\"say\", || h.run([\"echo\", \"hi\"]));\n",
    );
    let (out, report) = s.run(&pb, &[]);
    ok_run(&out, &report);
    let html = s.path("run.html");
    let r = s.capstan(&[
        "report",
        report["run_id"].as_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<svg id=\"timeline\"") && page.contains("data-host=\"localhost\""));
    assert!(
        page.contains("run: [&quot;echo&quot;,&quot;hi&quot;]"),
        "the action is on the timeline, as its argv"
    );
    assert!(
        !page.contains("id=\"availability\""),
        "no availability band outside simulation"
    );
}

#[test]
fn the_html_report_groups_hosts_by_zone_and_the_json_report_says_how() {
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("ob.html");
    let out = capstan(&[
        "simulate",
        "playbooks/oceanbase.rhai",
        "--scenario",
        "examples/oceanbase/scenario-3x2.toml",
        "--html",
        html.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report = crate::support::last_report(&out.stdout);
    let groups: Vec<(String, Vec<String>)> = report["host_groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["name"].as_str().unwrap().to_string(),
                serde_json::from_value(g["hosts"].clone()).unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, Vec<String>)> = [
        ("zone zone1", ["ob1", "ob2"]),
        ("zone zone2", ["ob3", "ob4"]),
        ("zone zone3", ["ob5", "ob6"]),
    ]
    .iter()
    .map(|(z, h)| (z.to_string(), h.iter().map(|x| x.to_string()).collect()))
    .collect();
    assert_eq!(groups, want);
    // In the timeline each zone's heading comes right before its servers' rows; obproxy, in no
    // zone, comes under "other hosts".
    let text = std::fs::read_to_string(&html).unwrap();
    let at = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("no {needle} in the page"))
    };
    assert!(at(">zone zone1<") < at("data-host=\"ob1\""));
    assert!(at("data-host=\"ob2\"") < at(">zone zone2<"));
    assert!(at(">zone zone2<") < at("data-host=\"ob3\""));
    assert!(at(">zone zone3<") < at("data-host=\"ob6\""));
    assert!(at(">other hosts<") < at("data-host=\"proxy\""));
}

/// Availability samples hold changes: OMS stops every container before the swap, and with the
/// samples listing everything down the report grew with the square of the nodes. Counted, not
/// timed: the names the samples hold, per node, are the same at 12 and at 48 nodes.
#[test]
fn availability_samples_grow_with_the_nodes_not_their_square() {
    let dir = tempfile::tempdir().unwrap();
    let mut per_node = Vec::new();
    for n in [12usize, 48] {
        let sc = scaled(dir.path(), "oms", n);
        let (out, r) = simulate_json(&["oms", "--scenario", sc.to_str().unwrap()]);
        assert_eq!(r["status"], "succeeded", "{}", out.stderr);
        let samples = r["simulation"]["availability"].as_array().unwrap();
        let names: usize = samples
            .iter()
            .map(|s| {
                ["went_down", "came_up"]
                    .iter()
                    .map(|k| s[k].as_array().map_or(0, |a| a.len()))
                    .sum::<usize>()
            })
            .sum();
        // Every node went down and came back at least once.
        let sim: capstan::report::SimReport =
            serde_json::from_value(r["simulation"].clone()).unwrap();
        let mut most = 0;
        sim.down_states(|_, _, down| most = most.max(down.len()));
        assert_eq!(most, n, "every node is down during the swap");
        per_node.push(names as f64 / n as f64);
    }
    assert_eq!(per_node[0], per_node[1], "names per node: {per_node:?}");
}

/// A scenario of `product` at `n` hosts, generated by the scaling benchmark's generator.
fn scaled(dir: &Path, product: &str, n: usize) -> std::path::PathBuf {
    let out_dir = dir.join(format!("{product}{n}"));
    let gen = Command::new("python3")
        .arg(repo().join("bench/scale.py"))
        .args([product, &n.to_string()])
        .arg(&out_dir)
        .output()
        .expect("python3 is missing: run scripts/test.sh");
    assert!(
        gen.status.success(),
        "{}",
        String::from_utf8_lossy(&gen.stderr)
    );
    out_dir.join("scenario.toml")
}

/// An undo keeps (and the journal writes) every value its closure captured. A shipped
/// playbook's per-host undo that captured a value holding every host (OpenMLDB's per-tablet undo
/// took the precheck's answer, every host's version, whole) made the journal and the memory of a
/// rehearsal grow with the square of the hosts. Counted: the bytes journaled for undos per host
/// do not grow from 12 to 48 hosts, for every shipped product (an undo made once per run may
/// hold a list of every server, as OceanBase's parameter backup does: that is linear).
#[test]
fn the_undos_journaled_per_host_do_not_grow_with_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    for product in ["oceanbase", "openmldb", "dolphindb", "oms"] {
        let mut per_host = Vec::new();
        for n in [12usize, 48] {
            let sc = capstan::Scenario::from_file(scaled(dir.path(), product, n)).unwrap();
            let params = sc.params.clone();
            let host = capstan::HostBuilder::new()
                .mode(capstan::Mode::Simulate)
                .scenario(sc)
                .build()
                .unwrap();
            let r = host
                .run(&capstan::Playbook::shipped(product).unwrap(), &params)
                .unwrap();
            assert!(
                matches!(r.outcome, capstan::report::Outcome::Succeeded),
                "{product} {n}: {:?}",
                r.outcome
            );
            let undos = host.journal().undos(&r.run_id).unwrap();
            assert!(undos.len() >= n, "{product} {n}: {} undos", undos.len());
            let bytes: usize = undos
                .iter()
                .map(|u| serde_json::to_string(&u.spec).unwrap().len())
                .sum();
            per_host.push(bytes as f64 / n as f64);
        }
        assert!(
            per_host[1] <= per_host[0] * 1.25,
            "{product}: undo bytes per host at 12 and at 48 hosts: {per_host:?}"
        );
    }
}

/// `parallel` in a rehearsal runs its items one after another, in item order: the same scenario
/// gives the same trace every time (threads interleaved the items' actions in an order that
/// changed from one rehearsal to the next).
#[test]
fn parallel_in_a_rehearsal_runs_its_items_in_order() {
    let mut scenario = String::new();
    for i in 1..=6 {
        scenario += &format!(
            "[inventory.hosts.h{i}]\ntransport = \"ssh\"\naddress = \"10.0.0.{i}\"\n\n[hosts.h{i}.files]\n\"/etc/app\" = \"v1\\n\"\n\n"
        );
    }
    let src = r#"
step("everywhere", || parallel(cluster().hosts(), |h| {
    let v = h.read_file("/etc/app").trimmed();
    h.exists("/etc/app");
    h.write_file("/etc/app", "v2\n");
    v
}))
"#;
    let trace = |r: &capstan::RunReport| -> Vec<String> {
        r.actions
            .iter()
            .map(|a| {
                // Undo copies are named by run id, the one thing two rehearsals do not share.
                let d = a.description.replace(&r.run_id, "RUN");
                format!("{} {} {d}", a.at_ms, a.host)
            })
            .collect()
    };
    let first = simulate(&scenario, src);
    ok(&first);
    let hosts: Vec<String> = first
        .actions
        .iter()
        .filter(|a| a.step.as_deref() == Some("everywhere"))
        .map(|a| a.host.to_string())
        .collect();
    let mut expected = Vec::new();
    for i in 1..=6 {
        expected.extend(std::iter::repeat_n(format!("h{i}"), hosts.len() / 6));
    }
    assert_eq!(
        hosts, expected,
        "each item's actions together, in item order"
    );
    for _ in 0..3 {
        assert_eq!(trace(&simulate(&scenario, src)), trace(&first));
    }
}

/// A rehearsal's `--json` lines are turned into JSON and written by a thread of their own, in
/// batches: every event arrives whole and in the order it happened, and all of them are out
/// before the report line (which the run's end prints on another thread). Over 2,000 events
/// here, so several batches.
#[test]
fn a_large_rehearsals_json_lines_arrive_whole_in_order_and_before_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let sc = scaled(dir.path(), "dolphindb", 40);
    let (out, _) = simulate_json(&["dolphindb", "--scenario", sc.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let kinds: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"run_started"));
    assert_eq!(&kinds[kinds.len() - 2..], ["run_finished", "report"]);
    let seqs: Vec<u64> = lines
        .iter()
        .filter(|l| l["event"] == "action")
        .map(|l| l["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.len() > 2_000, "{} actions", seqs.len());
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "action events out of order or missing"
    );
    let report = &lines[lines.len() - 1]["report"];
    let reported: Vec<u64> = report["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        reported, seqs,
        "the report's actions are the events' actions"
    );
}

/// The text report written in pieces (`write_text`, what the CLI prints) is the text
/// `render_text` makes, for a rehearsal whose report is many pieces long (a plan of every
/// action, a rollback path); a writer that fails part way ends the writing with its error.
#[test]
fn the_text_report_written_in_pieces_is_the_rendered_text() {
    let mut scenario = String::new();
    for i in 1..=150 {
        scenario += &format!(
            "[inventory.hosts.h{i:03}]\ntransport = \"ssh\"\naddress = \"10.0.{}.{}\"\n\n[hosts.h{i:03}.files]\n\"/etc/app\" = \"v1\\n\"\n\n",
            i / 200,
            i % 200 + 1
        );
    }
    scenario += "[[faults]]\naction = \"*write /etc/app*\"\nhost = \"h140\"\n";
    let src = r#"
for h in cluster().hosts() {
    step(`upgrade ${h}`, || {
        for i in 0..12 { h.exists(`/etc/app.${i}`); }
        h.write_file("/etc/app", "v2\n");
        undo(`${h}: v1 again`, || h.write_file("/etc/app", "v1\n"));
    });
}
"#;
    let r = rehearse_failing(&scenario, src);
    let text = capstan::report::render_text(&r, true);
    assert!(text.len() > 2 * 65_536, "{}", text.len());
    assert!(text.contains("rollback path"), "{text}");
    let mut written = Vec::new();
    capstan::report::write_text(&r, true, &mut written).unwrap();
    assert_eq!(String::from_utf8(written).unwrap(), text);

    /// Takes `room` bytes, then fails every write.
    struct Full {
        room: usize,
        got: Vec<u8>,
        writes: usize,
    }
    impl std::io::Write for Full {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.writes += 1;
            if self.got.len() >= self.room {
                return Err(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "gone"));
            }
            let n = b.len().min(self.room - self.got.len());
            self.got.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut full = Full {
        room: 70_000,
        got: Vec::new(),
        writes: 0,
    };
    let e = capstan::report::write_text(&r, true, &mut full).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe);
    assert_eq!(full.got, text.as_bytes()[..70_000]);
    // Nothing more was tried once the writer had failed.
    let tries = full.writes;
    assert!(tries <= 4, "{tries} writes");
}

/// The text report's per-host table counts each host's own actions, and the rollback path
/// lists under each undo the actions that undo took, on its host, and no other's (both are now
/// grouped in one pass over the actions).
#[test]
fn the_per_host_table_and_the_rollback_path_keep_each_hosts_and_each_undos_actions() {
    let mut scenario = String::new();
    for i in 1..=3 {
        scenario += &format!(
            "[inventory.hosts.h{i}]\ntransport = \"ssh\"\naddress = \"10.0.0.{i}\"\n\n[hosts.h{i}.files]\n\"/etc/app\" = \"v1\\n\"\n\n"
        );
    }
    scenario += "[[faults]]\naction = \"*write /etc/app*\"\nhost = \"h3\"\n";
    // h1 does 1 + 2 actions, h2 1 + 3, h3 1 + 4 (its last, the write, fails).
    let src = r#"
for (h, i) in cluster().hosts() {
    let n = i + 1;
    step(`upgrade ${h}`, || {
        for i in 0..n { h.exists(`/etc/app.${i}`); }
        undo(`${h}: mark it undone`, || h.write_file(`/etc/undone.${h}`, "x\n"));
        h.exists("/etc/app");
        h.write_file("/etc/app", "v2\n");
    });
}
"#;
    let r = rehearse_failing(&scenario, src);
    let text = capstan::report::render_text(&r, false);
    // Per host: its actions, including those its undos took in the rollback.
    let per_host: std::collections::BTreeMap<String, usize> = r
        .hosts
        .iter()
        .map(|h| (h.clone(), r.actions.iter().filter(|a| a.host == *h).count()))
        .collect();
    let table = text.split("\nper host\n").nth(1).unwrap();
    for (h, n) in &per_host {
        let line = table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(h))
            .unwrap();
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells[1], n.to_string(), "{h}: {line}");
    }
    assert!(
        per_host
            .values()
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            == 3,
        "{per_host:?}"
    );
    // The rollback path: each undo followed by its own actions, on its own host.
    let path = text
        .split("\nrollback path (undos run newest first)\n")
        .nth(1)
        .unwrap();
    let mut current: Option<String> = None;
    let mut listed = 0;
    for l in path
        .lines()
        .take_while(|l| !l.trim_start().starts_with("after the rollback"))
    {
        let t = l.trim_start();
        if t.starts_with('#') {
            // "#N   undone  hX: ..."
            current = t
                .split_whitespace()
                .nth(2)
                .map(|h| h.trim_end_matches(':').to_string());
        } else if l.starts_with("         ") && !t.is_empty() {
            let h = t.split_whitespace().next().unwrap();
            assert_eq!(Some(h), current.as_deref(), "{l}\n{path}");
            listed += 1;
        }
    }
    let undo_actions = r
        .actions
        .iter()
        .filter(|a| a.step.as_deref().is_some_and(|s| s.starts_with("undo #")))
        .count();
    assert!(undo_actions >= 3, "{undo_actions}");
    assert_eq!(listed, undo_actions, "{path}");
}

/// Rehearses `src` on `scenario` with rollback on failure; the run must fail.
fn rehearse_failing(scenario: &str, src: &str) -> capstan::RunReport {
    let sc = capstan::Scenario::from_str_at(scenario, "scenario.toml", Path::new(".")).unwrap();
    let host = capstan::HostBuilder::new()
        .scenario(sc)
        .on_failure(capstan::host::OnFailure::Rollback)
        .build()
        .unwrap();
    let r = host
        .run(
            &capstan::Playbook::from_source("test.rhai", src),
            &capstan::Params::new(),
        )
        .unwrap();
    let _ = failure(&r);
    r
}
