//! A journal on a real MariaDB server (lab/mariadb-lab.sh), shared by two control machines:
//! kill -9 at each step boundary and resume from the other machine, rollback from the other
//! machine, the server stopped mid-run, `journal copy`, and secrets kept out of its rows.

use std::time::{Duration, Instant};

use mysql::prelude::Queryable;

use crate::journal::{run_id, run_with_a_secret, step_event, Cluster, TOKEN};
use crate::support::MariaDb;

/// A control machine: its own name, home and state directory; the journal is the server.
struct Machine {
    name: &'static str,
    home: tempfile::TempDir,
}

impl Machine {
    fn new(name: &'static str) -> Machine {
        Machine {
            name,
            home: tempfile::tempdir().unwrap(),
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("CAPSTAN_CONTROLLER", self.name.to_string()),
            ("HOME", self.home.path().display().to_string()),
            (
                "XDG_STATE_HOME",
                self.home.path().join("state").display().to_string(),
            ),
        ]
    }
}

fn env_refs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, s)| (*k, s.as_str())).collect()
}

/// A guard over the three hosts, three changing steps (each appends to its per-host counter and
/// writes a file that rollback takes back), and a last step that checks the guard holds.
const GUARDED_STEPS: &str = r#"
let hosts = cluster().hosts();
step("guard", || {
    guard("maintenance",
        || { for h in hosts { h.write_file(h.path("guard"), "on"); } },
        || { for h in hosts { h.write_file(h.path("guard"), "off"); } });
});
step("step 1", || parallel(hosts, |h| {
    h.shell(`echo 1 >> ${h.path("count-1")}; sleep 0.3`);
    h.write_file(h.path("conf-1"), "new");
}));
step("step 2", || parallel(hosts, |h| {
    h.shell(`echo 2 >> ${h.path("count-2")}; sleep 0.3`);
    h.write_file(h.path("conf-2"), "new");
}));
step("step 3", || parallel(hosts, |h| {
    h.shell(`echo 3 >> ${h.path("count-3")}; sleep 0.3`);
    h.write_file(h.path("conf-3"), "new");
}));
step("check", || {
    for h in hosts { if h.read_file(h.path("guard")) != "on" { fail(`guard off on ${h}`); } }
});
"#;

const STEPS: [&str; 5] = ["guard", "step 1", "step 2", "step 3", "check"];

/// A cluster whose journal is a fresh database on the shared server, with a 2 s host-lock lease.
fn cluster(db: &str) -> (Cluster, String, String) {
    let mut c = Cluster::new();
    c.server_journal = Some(MariaDb::shared().journal_db(db));
    let inv = c.inventory("inv.toml", &[1, 2, 3], "");
    let text = std::fs::read_to_string(&inv).unwrap().replacen(
        "[defaults]\n",
        "[defaults]\nhost_lock_lease = \"2s\"\n",
        1,
    );
    std::fs::write(&inv, text).unwrap();
    let pb = c.write("guarded.rhai", GUARDED_STEPS);
    (c, inv.display().to_string(), pb.display().to_string())
}

/// Runs `args` from machine `m` with `--take-over-lock` added once the host lock a killed run
/// left has expired: first without it (refused, exit 5, naming the dead run's machine, when the
/// run had taken the lock), then with it.
fn from_other_machine(
    c: &Cluster,
    m: &Machine,
    args: &[&str],
    killed_on: &str,
) -> crate::support::Out {
    let env = m.env();
    let out = c.capstan_env(args, &env_refs(&env));
    if out.code != 5 {
        return out;
    }
    assert!(
        out.stdout.contains(&format!(" on {killed_on}")) || out.stderr.contains(killed_on),
        "the refusal names the machine of the killed run:\n{}\n{}",
        out.stdout,
        out.stderr
    );
    let started = Instant::now();
    loop {
        let mut with = args.to_vec();
        with.push("--take-over-lock");
        let out = c.capstan_env(&with, &env_refs(&env));
        // Refused while the killed run's lease has not run out yet (2 s).
        if out.code != 5 || started.elapsed() > Duration::from_secs(15) {
            return out;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn a_run_killed_at_each_step_boundary_is_resumed_from_another_machine_with_no_step_twice() {
    let (a, b) = (Machine::new("laptop-a"), Machine::new("laptop-b"));
    for (i, at) in ["run start", "guard", "step 1", "step 2", "step 3"]
        .into_iter()
        .enumerate()
    {
        let (c, inv, pb) = cluster(&format!("capstan_boundary_{i}"));
        let env = a.env();
        let mut r = c.spawn_env(&["run", &pb, "-i", &inv], &env_refs(&env));
        if at == "run start" {
            r.wait_for(at, |v| v["event"] == "run_started");
        } else {
            r.wait_for(at, |v| step_event(v, "step_finished", at));
        }
        let run = r.kill9();
        // The other machine sees the run, and that its process is gone (its server session
        // ended with it).
        let runs = c.capstan_env(&["runs", "--json"], &env_refs(&b.env()));
        let listed: serde_json::Value = serde_json::from_str(&runs.stdout).unwrap();
        let row = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == run.as_str())
            .unwrap_or_else(|| panic!("{at}: run {run} not listed from laptop-b: {listed}"));
        assert_eq!(row["controller"], "laptop-a", "{at}");
        assert_eq!(row["process_gone"], true, "{at}: {row}");
        let before = c.report(&run);
        let done: Vec<String> = before["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["status"] == "ok")
            .map(|s| s["name"].as_str().unwrap().to_string())
            .collect();

        let out = from_other_machine(&c, &b, &["resume", &run], "laptop-a");
        assert_eq!(out.code, 0, "{at}: {}\n{}", out.stdout, out.stderr);
        for (n, step) in STEPS.iter().enumerate().skip(1).take(3) {
            for h in ["h1", "h2", "h3"] {
                let ran = c.count(h, &format!("count-{n}"));
                if done.iter().any(|d| d == step) {
                    assert_eq!(ran, 1, "{at}: `{step}` was done and ran again on {h}");
                } else {
                    assert!(
                        (1..=2).contains(&ran),
                        "{at}: `{step}` ran {ran} times on {h}"
                    );
                }
                assert_eq!(c.read(h, &format!("conf-{n}")), "new", "{at}");
            }
        }
        // The guard was set again by the resume (the check step saw it) and restored at the end.
        for h in ["h1", "h2", "h3"] {
            assert_eq!(c.read(h, "guard"), "off", "{at}: guard on {h}");
        }
        let after = c.report(&run);
        assert_eq!(after["status"], "succeeded", "{at}");
        // Each refused try of laptop-b is an attempt too; the last one finished the run.
        assert!(after["attempts"].as_u64().unwrap() >= 2, "{at}");
        assert_eq!(after["guards"][0]["status"], "restored", "{at}");
        // The resumed attempt is journaled as laptop-b's.
        let runs = c.capstan_env(&["runs", "--json"], &env_refs(&a.env()));
        assert!(
            runs.stdout.contains(r#""controller":"laptop-b""#),
            "{at}: {}",
            runs.stdout
        );
    }
}

#[test]
fn a_run_killed_on_one_machine_is_rolled_back_from_another() {
    let (a, b) = (Machine::new("laptop-a"), Machine::new("laptop-b"));
    let (c, inv, pb) = cluster("capstan_rollback");
    let env = a.env();
    let mut r = c.spawn_env(&["run", &pb, "-i", &inv], &env_refs(&env));
    r.wait_for("step 2", |v| step_event(v, "step_finished", "step 2"));
    let run = r.kill9();
    for h in ["h1", "h2", "h3"] {
        assert_eq!(c.read(h, "guard"), "on");
        assert_eq!(c.read(h, "conf-2"), "new");
    }
    // The killed run's host lock still has its lease: laptop-b's rollback is refused before
    // any undo (exit 5), and every undo stays pending, the guard set.
    let out = c.capstan_env(&["rollback", &run, "--yes"], &env_refs(&b.env()));
    if out.code == 5 {
        let report = c.report(&run);
        let undos = report["undos"].as_array().unwrap();
        assert!(
            undos.len() == 9 && undos.iter().all(|u| u["status"] == "pending"),
            "{report:#}"
        );
        assert_eq!(report["guards"][0]["status"], "set");
    }
    // Here the process is gone, so the rollback goes ahead once the lease ran out.
    let out = from_other_machine(&c, &b, &["rollback", &run, "--yes"], "laptop-a");
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    for h in ["h1", "h2", "h3"] {
        for f in ["conf-1", "conf-2", "conf-3"] {
            assert!(!c.root(h).join(f).exists(), "{h}/{f} was not taken back");
        }
        assert_eq!(c.read(h, "guard"), "off", "{h}");
    }
    assert_eq!(c.report(&run)["status"], "rolled_back");

    // A run whose process lives on laptop-a is not resumed from laptop-b: the server says the
    // process holds the run.
    let mut r = c.spawn_env(&["run", &pb, "-i", &inv], &env_refs(&env));
    r.wait_for("step 1", |v| step_event(v, "step_started", "step 1"));
    let live = {
        let runs = c.capstan_env(&["runs", "--json"], &env_refs(&b.env()));
        let v: serde_json::Value = serde_json::from_str(&runs.stdout).unwrap();
        v[0]["id"].as_str().unwrap().to_string()
    };
    let out = c.capstan_env(&["resume", &live], &env_refs(&b.env()));
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("is still running") && out.stderr.contains("on laptop-a"),
        "{}",
        out.stderr
    );
    let (code, _, err) = r.finish();
    assert_eq!(code, 0, "{err}");
}

#[test]
fn the_journal_server_stopped_mid_run_stops_the_run_with_exit_6_and_resume_completes() {
    let db = MariaDb::start_own();
    let mut c = Cluster::new();
    c.server_journal = Some(db.journal_db("capstan_down"));
    let inv = c.inventory("inv.toml", &[1, 2, 3], "");
    let pb = c.write(
        "slow.rhai",
        r#"
let hosts = cluster().hosts();
step("one", || parallel(hosts, |h| h.shell(`echo 1 >> ${h.path("count-1")}`)));
step("two", || parallel(hosts, |h| h.shell(`echo 2 >> ${h.path("count-2")}; sleep 2`)));
step("three", || parallel(hosts, |h| h.shell(`echo 3 >> ${h.path("count-3")}`)));
"#,
    );
    let (inv, pb) = (inv.to_str().unwrap(), pb.to_str().unwrap());
    let env: [(&str, &str); 0] = [];
    let mut r = c.spawn_env(&["run", pb, "-i", inv], &env);
    r.wait_for("step two", |v| step_event(v, "step_started", "two"));
    std::thread::sleep(Duration::from_millis(300));
    db.kill();
    let run = r.run_id_seen();
    let (code, events, stderr) = r.finish();
    assert_eq!(code, 6, "{}\n{stderr}", events.join("\n"));
    let all = format!("{}\n{stderr}", events.join("\n"));
    let server = format!(
        "journal server mysql://capstan@127.0.0.1:{}/capstan_down",
        db.port
    );
    assert!(
        all.contains(&server),
        "the message names the server:\n{all}"
    );
    // Nothing after the failed write ran: step three never started.
    for h in ["h1", "h2", "h3"] {
        assert_eq!(c.count(h, "count-3"), 0, "{h}");
    }

    db.start_again();
    let out = c.capstan_env(&["resume", &run], &env);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    for h in ["h1", "h2", "h3"] {
        assert_eq!(c.count(h, "count-1"), 1, "step one ran again on {h}");
        assert_eq!(c.count(h, "count-3"), 1, "{h}");
    }
    assert_eq!(c.report(&run)["status"], "succeeded");
}

#[test]
fn journal_copy_moves_runs_between_a_file_and_the_server() {
    let mut c = Cluster::new();
    let inv = c.inventory("inv.toml", &[1], "");
    let pb = c.write(
        "two.rhai",
        r#"
let h = cluster().host("h1");
step("write", || h.write_file(h.path("conf"), "new"));
log("done writing");
step("break", || fail("stops here"));
"#,
    );
    let (inv, pb) = (inv.to_str().unwrap(), pb.to_str().unwrap());
    let env: [(&str, &str); 0] = [];
    // A run journaled to the local file, then copied to the server.
    let out = c.capstan(&["run", pb, "-i", inv]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let run = run_id(&out);
    let file_report = c.report(&run);
    let url = MariaDb::shared().journal_db("capstan_copy");
    let file = c.journal().display().to_string();
    let copy = |from: &str, to: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_capstan"))
            .envs(env)
            .args(["journal", "copy", from, to])
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, said, err) = copy(&file, &url);
    assert_eq!(code, 0, "{err}");
    assert!(said.contains(&format!("copied  {run}")), "{said}");
    // Again: the server has it already, and says so.
    let (code, said, _) = copy(&file, &url);
    assert_eq!(code, 0);
    assert!(
        said.contains(&format!("skipped {run}  already in the destination")),
        "{said}"
    );
    // The server's copy reports the same run, row for row.
    c.server_journal = Some(url.clone());
    let out = c.capstan_env(&["report", &run, "--json"], &env);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let server_report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    for part in [
        "steps", "actions", "undos", "logs", "status", "outcome", "params",
    ] {
        assert_eq!(server_report[part], file_report[part], "{part}");
    }
    // Rolled back from the server's copy: the undo the file journal recorded runs.
    let out = c.capstan_env(&["rollback", &run, "--yes"], &env);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(!c.root("h1").join("conf").exists());
    // And back to a new file.
    let back = c.dir.path().join("back.db").display().to_string();
    let (code, said, err) = copy(&url, &back);
    assert_eq!(code, 0, "{err}");
    assert!(said.contains("1 run(s) copied"), "{said}");
    c.server_journal = None;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_capstan"))
        .args(["report", &run, "--json", "--journal", &back])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "rolled_back");
}

#[test]
fn a_bad_journal_address_or_an_unreachable_server_is_exit_6_or_2_naming_it() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_capstan"))
        .args(["runs", "--journal", "mysql://capstan:pw@127.0.0.1/j"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("a password does not go in the address"));
    let port = crate::support::free_port();
    let url = format!("mysql://capstan@127.0.0.1:{port}/j");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_capstan"))
        .args(["runs", "--journal", &url])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(6));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("journal server {url}")), "{err}");
}

#[test]
fn a_secret_used_by_a_step_is_in_no_row_of_the_server_journal() {
    let mut c = Cluster::new();
    let url = MariaDb::shared().journal_db("capstan_secret");
    c.server_journal = Some(url);
    run_with_a_secret(&c);
    let mut conn = MariaDb::shared().conn();
    conn.query_drop("USE capstan_secret").unwrap();
    let tables: Vec<String> = conn.query("SHOW TABLES").unwrap();
    assert!(tables.len() >= 9, "{tables:?}");
    let mut rows = 0;
    for t in tables {
        let all: Vec<mysql::Row> = conn.query(format!("SELECT * FROM {t}")).unwrap();
        for r in all {
            rows += 1;
            for v in r.unwrap() {
                let bytes = match v {
                    mysql::Value::Bytes(b) => b,
                    other => other.as_sql(true).into_bytes(),
                };
                assert!(
                    !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
                    "the secret is in a row of {t}"
                );
            }
        }
    }
    assert!(rows > 10, "the run journaled only {rows} rows");
}

#[test]
fn a_journal_server_over_tls_is_verified_against_the_ca_given() {
    let db = MariaDb::shared();
    let url = db.journal_db("capstan_tls");
    let mut c = db.conn();
    // A user the server accepts over TLS only: a journal that connects as it is encrypted.
    c.query_drop(format!(
        "CREATE USER IF NOT EXISTS 'capstan_tls'@'%' IDENTIFIED BY '{}' REQUIRE SSL",
        crate::support::DB_PASSWORD
    ))
    .unwrap();
    c.query_drop("GRANT ALL ON capstan_tls.* TO 'capstan_tls'@'%'")
        .unwrap();
    let url = url.replacen("mysql://capstan@", "mysql://capstan_tls@", 1);
    let runs = |url: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_capstan"))
            .args(["runs", "--journal", url])
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = runs(&url);
    assert_eq!(code, 6, "without TLS the server refuses the user: {err}");
    let ca = db.dir.join("tls/ca.pem");
    let (code, err) = runs(&format!("{url}&tls_ca={}", ca.display()));
    assert_eq!(code, 0, "{err}");
    // The lab's CA is not among the system's roots: its certificate is refused.
    let (code, err) = runs(&format!("{url}&tls=true"));
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("journal server mysql://capstan_tls@"), "{err}");
}

#[test]
fn machines_taking_the_same_hosts_at_once_on_a_server_journal_get_them_once() {
    use capstan::journal::{Journal, ServerSpec};
    let url = MariaDb::shared().journal_db("capstan_race");
    let spec = ServerSpec::parse(&url).unwrap();
    let hosts = vec![
        "root@10.0.0.1:22".to_string(),
        "root@10.0.0.2:22".to_string(),
    ];
    // Eight "machines", each with its own connection, ask for the same two hosts together.
    let journals: Vec<Journal> = (0..8).map(|_| Journal::connect(&spec).unwrap()).collect();
    let start = std::sync::Barrier::new(journals.len());
    let results: Vec<Result<(), String>> = std::thread::scope(|s| {
        let handles: Vec<_> = journals
            .iter()
            .enumerate()
            .map(|(i, j)| {
                let (start, hosts) = (&start, &hosts);
                s.spawn(move || {
                    start.wait();
                    j.acquire_locks(&format!("run-{i}"), hosts, false)
                        .map_err(|e| e.to_string())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let won = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 1, "{results:#?}");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(r.contains("held by run run-"), "{r}");
    }
    let held = journals[0].locks().unwrap();
    assert_eq!(held.len(), 2);
    assert_eq!(held[0].run_id, held[1].run_id, "both hosts went to one run");
}
