//! SQL and backups against a real MariaDB server (lab/mariadb-lab.sh), through the local transport
//! and an SSH host of the lab, through the binary: types, injection, distinct errors, `--check`,
//! mysqldump + rollback, snapshots, free space, resume.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;
use serde_json::Value;

use crate::support::*;

/// A scratch directory (local `localhost`, and `h1` over SSH when asked) whose inventory has the
/// server's password as the secret `db_pw`, and the shared server.
struct Env {
    scratch: Scratch,
    db: &'static MariaDb,
}

impl Env {
    fn new(with_ssh: bool) -> Env {
        let scratch = Scratch::new(with_ssh, "\n[secrets]\ndb_pw = { file = \"db_pw\" }\n");
        scratch.write("db_pw", &format!("{DB_PASSWORD}\n"));
        Env {
            scratch,
            db: MariaDb::shared(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.scratch.path(name)
    }

    /// A fresh database on the shared server, named after the test.
    fn database(&self, name: &str) -> String {
        let db = format!("it_{name}_{}", std::process::id());
        let mut c = self.db.conn();
        c.query_drop(format!("DROP DATABASE IF EXISTS `{db}`"))
            .unwrap();
        c.query_drop(format!("CREATE DATABASE `{db}`")).unwrap();
        db
    }

    /// The playbook with `PORT`, `DBNAME` and `SCRATCH` replaced, written to `name`.
    fn playbook(&self, name: &str, db: &str, text: &str) -> PathBuf {
        self.scratch.write(
            name,
            &text
                .replace("PORT", &self.db.port.to_string())
                .replace("DBNAME", db)
                .replace("SCRATCH", &self.scratch.dir.path().display().to_string()),
        )
    }

    fn cmd(&self, args: &[&str]) -> Command {
        self.scratch.cmd(args)
    }

    fn capstan(&self, args: &[&str]) -> Out {
        self.scratch.capstan(args)
    }

    fn run(&self, playbook: &Path, args: &[&str]) -> (Out, Value) {
        self.scratch.run(playbook, args)
    }

    /// The checksums of these tables, as the server computes them (NULL for a missing table).
    fn checksums(&self, db: &str, tables: &[&str]) -> Vec<Option<i64>> {
        let mut c = self.db.conn();
        tables
            .iter()
            .map(|t| {
                let exists: Option<i64> = c
                    .exec_first(
                        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
                        (db, t),
                    )
                    .unwrap();
                if exists == Some(0) {
                    return None;
                }
                let row: Option<(String, Option<i64>)> = c
                    .query_first(format!("CHECKSUM TABLE `{db}`.`{t}`"))
                    .unwrap();
                row.and_then(|r| r.1)
            })
            .collect()
    }
}

const CONNECT: &str = r#"let db = sql::connect(#{ host: "127.0.0.1", port: PORT, user: "capstan", password: secret("db_pw"), db: "DBNAME" });"#;

#[test]
fn values_round_trip_with_their_types() {
    let env = Env::new(false);
    let db = env.database("types");
    let pb = env.playbook(
        "types.rhai",
        &db,
        &format!(
            r#"{CONNECT}
db.exec(`CREATE TABLE t (id INT PRIMARY KEY, n BIGINT NULL, neg BIGINT, big BIGINT UNSIGNED,
    d DECIMAL(30,10), dt DATE, ts DATETIME(6), tm TIME, txt VARCHAR(100) CHARACTER SET utf8mb4,
    bin VARBINARY(16), f DOUBLE)`);
let b = blob(3, 0);
b[1] = 255;
b[2] = 10;
let n = db.exec("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    [1, (), -9223372036854775807 - 1, "18446744073709551615", "12345678901234567890.0123456789",
     "2026-11-22", "2026-11-22 23:59:58.123456", "-838:59:59", "héllo ✓ 日本", b, 1.5]);
let r = db.query("SELECT * FROM t WHERE id = ?", [1])[0];
let named = db.value("SELECT txt FROM t WHERE id = :id AND f > :f", #{{ id: 1, f: 1.0 }});
#{{ inserted: n, n: type_of(r.n), neg: r.neg, big: r.big, big_type: type_of(r.big), d: r.d,
   dt: r.dt, ts: r.ts, tm: r.tm, txt: r.txt, named: named, bin_type: type_of(r.bin),
   bin: [r.bin[0], r.bin[1], r.bin[2]], f: r.f, none: db.value("SELECT id FROM t WHERE id = 2") }}
"#
        ),
    );
    let (out, report) = env.run(&pb, &[]);
    ok_run(&out, &report);
    let r = &report["result"];
    assert_eq!(r["inserted"], 1);
    assert_eq!(r["n"], "()");
    assert_eq!(r["neg"], i64::MIN);
    assert_eq!(r["big"], "18446744073709551615");
    assert_eq!(r["big_type"], "string");
    assert_eq!(r["d"], "12345678901234567890.0123456789");
    assert_eq!(r["dt"], "2026-11-22");
    assert_eq!(r["ts"], "2026-11-22 23:59:58.123456");
    assert_eq!(r["tm"], "-838:59:59");
    assert_eq!(r["txt"], "héllo ✓ 日本");
    assert_eq!(r["named"], "héllo ✓ 日本");
    assert_eq!(r["bin_type"], "blob");
    assert_eq!(r["bin"], serde_json::json!([0, 255, 10]));
    assert_eq!(r["f"], 1.5);
    assert_eq!(r["none"], Value::Null);
}

#[test]
fn a_parameter_stays_data_and_identifiers_are_checked() {
    let env = Env::new(false);
    let db = env.database("inject");
    let pb = env.playbook(
        "inject.rhai",
        &db,
        &format!(
            r#"{CONNECT}
db.exec("CREATE TABLE t (s VARCHAR(100))");
let evil = "'; DROP TABLE t; --";
db.exec("INSERT INTO t (s) VALUES (?)", [evil]);
let back = db.value("SELECT s FROM t WHERE s = ?", [evil]);
let refused = false;
try {{ sql::ident(evil); }} catch (e) {{ refused = e.kind == "bad_input"; }}
#{{ back: back, refused: refused, quoted: sql::ident("t") }}
"#
        ),
    );
    let (out, report) = env.run(&pb, &[]);
    ok_run(&out, &report);
    assert_eq!(report["result"]["back"], "'; DROP TABLE t; --");
    assert_eq!(report["result"]["refused"], true);
    assert_eq!(report["result"]["quoted"], "`t`");
    assert!(env.checksums(&db, &["t"])[0].is_some(), "the table is gone");
}

#[test]
fn connect_auth_timeout_and_server_errors_are_distinct() {
    let env = Env::new(false);
    let db = env.database("errors");
    let closed = free_port();
    let pb = env.playbook(
        "errors.rhai",
        &db,
        &format!(
            r#"
fn attempt(f) {{
    try {{ f.call(); return #{{ reason: "none" }}; }}
    catch (e) {{ return #{{ reason: e.reason, kind: e.kind, code: e.code, message: e.message }}; }}
}}
let auth = attempt(|| sql::connect(#{{ host: "127.0.0.1", port: PORT, user: "capstan", password: "wrong-password" }}));
let refused = attempt(|| sql::connect(#{{ host: "127.0.0.1", port: {closed}, user: "capstan", timeout: 3 }}));
let slow = attempt(|| {{
    let db = sql::connect(#{{ host: "127.0.0.1", port: PORT, user: "capstan", password: secret("db_pw"), timeout: 1 }});
    db.value("SELECT SLEEP(5)")
}});
{CONNECT}
let server = attempt(|| db.query("SELECT * FROM no_such_table\nWHERE x = 1"));
let after = db.value("SELECT 41 + 1");
#{{ auth: auth, refused: refused, slow: slow, server: server, after: after }}
"#
        ),
    );
    let (out, report) = env.run(&pb, &[]);
    ok_run(&out, &report);
    let r = &report["result"];
    let server = format!("capstan@127.0.0.1:{}", env.db.port);
    assert_eq!(r["auth"]["reason"], "auth", "{r}");
    assert_eq!(r["auth"]["code"], 1045);
    assert!(r["auth"]["message"].as_str().unwrap().contains(&server));
    assert_eq!(r["refused"]["reason"], "connect", "{r}");
    assert_eq!(r["refused"]["kind"], "unreachable");
    assert!(r["refused"]["message"]
        .as_str()
        .unwrap()
        .contains(&format!("127.0.0.1:{closed}")));
    assert_eq!(r["slow"]["reason"], "timeout", "{r}");
    assert_eq!(r["slow"]["kind"], "timeout");
    assert!(r["slow"]["message"]
        .as_str()
        .unwrap()
        .contains("SELECT SLEEP(5)"));
    assert_eq!(r["server"]["reason"], "server", "{r}");
    assert_eq!(r["server"]["code"], 1146);
    let m = r["server"]["message"].as_str().unwrap();
    assert!(
        m.contains("statement: SELECT * FROM no_such_table") && !m.contains("WHERE"),
        "{m}"
    );
    assert!(m.contains(&format!("{server}/{db}")), "{m}");
    assert_eq!(r["after"], 42, "the session is usable after a server error");
    // The wrong password is no secret, but the right one never shows.
    assert!(!out.stdout.contains(DB_PASSWORD) && !out.stderr.contains(DB_PASSWORD));
}

#[test]
fn a_server_that_dies_mid_query_is_a_lost_connection() {
    let env = Env::new(false);
    let own = MariaDb::start_own();
    let pb = env.playbook(
        "lost.rhai",
        "mysql",
        &r#"
let db = sql::connect(#{ host: "127.0.0.1", port: OWNPORT, user: "capstan", password: secret("db_pw") });
let r = #{ reason: "none" };
try { db.value("SELECT SLEEP(60)"); }
catch (e) { r = #{ reason: e.reason, kind: e.kind, message: e.message }; }
r
"#
        .replace("OWNPORT", &own.port.to_string()),
    );
    let child = env
        .cmd(&["run", pb.to_str().unwrap(), "-i", "inv.toml", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the server only once the statement is running on it.
    let mut c = own.conn();
    let start = Instant::now();
    loop {
        let n: Option<i64> = c
            .query_first("SELECT COUNT(*) FROM information_schema.processlist WHERE info LIKE 'SELECT SLEEP(60)%'")
            .unwrap();
        if n == Some(1) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the statement never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(c);
    own.kill();
    let out = child.wait_with_output().unwrap();
    let report = last_report(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(report["result"]["reason"], "lost", "{}", report["result"]);
    assert_eq!(report["result"]["kind"], "unreachable");
    assert!(report["result"]["message"]
        .as_str()
        .unwrap()
        .contains("SELECT SLEEP(60)"));
}

#[test]
fn check_mode_reads_for_real_and_changes_nothing() {
    let env = Env::new(false);
    let db = env.database("check");
    {
        let mut c = env.db.conn();
        c.query_drop(format!(
            "CREATE TABLE `{db}`.t (id INT PRIMARY KEY, v VARCHAR(10))"
        ))
        .unwrap();
        c.query_drop(format!(
            "INSERT INTO `{db}`.t VALUES (1, 'a'), (2, 'b'), (3, 'c')"
        ))
        .unwrap();
    }
    let before = env.checksums(&db, &["t"]);
    let pb = env.playbook(
        "check.rhai",
        &db,
        &format!(
            r#"{CONNECT}
let n = db.value("SELECT COUNT(*) FROM t");
step("wipe", || {{
    sql::transaction(db, || {{
        db.exec("DELETE FROM t WHERE id > ?", [1]);
        db.exec("UPDATE t SET v = ? WHERE id = 1", ["zzz"]);
    }});
    db.exec("DROP TABLE t");
    db.exec("SET @pw = ?", [secret("db_pw")]);
}});
n
"#
        ),
    );
    let (out, report) = env.run(&pb, &["--check"]);
    ok_run(&out, &report);
    assert_eq!(report["result"], 3, "a read under --check is real");
    assert_eq!(env.checksums(&db, &["t"]), before);
    let skipped: Vec<&str> = report["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["disposition"] == "skipped")
        .map(|a| a["description"].as_str().unwrap())
        .collect();
    assert!(
        skipped
            .iter()
            .any(|d| d.contains("DELETE FROM t WHERE id > ? [1]")),
        "{skipped:?}"
    );
    assert!(
        skipped.iter().any(|d| d.contains("DROP TABLE t")),
        "{skipped:?}"
    );
    assert!(
        skipped.iter().any(|d| d.contains("START TRANSACTION")),
        "{skipped:?}"
    );
}

#[test]
fn wait_sql_polls_until_the_answer_and_transactions_roll_back() {
    let env = Env::new(false);
    let db = env.database("wait");
    {
        let mut c = env.db.conn();
        c.query_drop(format!(
            "CREATE TABLE `{db}`.zones (name VARCHAR(10), status VARCHAR(10))"
        ))
        .unwrap();
        c.query_drop(format!(
            "INSERT INTO `{db}`.zones VALUES ('z1', 'SYNCING'), ('z2', 'ACTIVE')"
        ))
        .unwrap();
    }
    let pb = env.playbook(
        "wait.rhai",
        &db,
        &format!(
            r#"{CONNECT}
let rows = wait::sql(db, "SELECT name, status FROM zones", (), #{{ status: "ACTIVE" }}, #{{ timeout: 30, every: "100ms" }});
let failed = false;
try {{
    sql::transaction(db, || {{
        db.exec("INSERT INTO zones VALUES (?, ?)", ["z3", "NEW"]);
        fail("half way");
    }});
}} catch (e) {{ failed = true; }}
let timed_out = "";
try {{
    wait::sql(db, "SELECT COUNT(*) FROM zones WHERE status != ?", ["ACTIVE"], 99, #{{ timeout: 1, every: "200ms", what: "zones" }});
}} catch (e) {{ timed_out = e.message; }}
#{{ rows: rows.len(), failed: failed, count: db.value("SELECT COUNT(*) FROM zones"), timed_out: timed_out }}
"#
        ),
    );
    let port = env.db.port;
    let dbname = db.clone();
    let flip = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        let mut c = mysql::Conn::new(
            mysql::OptsBuilder::new()
                .ip_or_hostname(Some("127.0.0.1"))
                .tcp_port(port)
                .user(Some("capstan"))
                .pass(Some(DB_PASSWORD))
                .prefer_socket(false),
        )
        .unwrap();
        c.query_drop(format!("UPDATE `{dbname}`.zones SET status = 'ACTIVE'"))
            .unwrap();
    });
    let (out, report) = env.run(&pb, &[]);
    flip.join().unwrap();
    ok_run(&out, &report);
    let r = &report["result"];
    assert_eq!(r["rows"], 2);
    assert_eq!(r["failed"], true);
    assert_eq!(r["count"], 2, "the failed transaction was rolled back");
    let t = r["timed_out"].as_str().unwrap();
    assert!(
        t.contains("gave up waiting for zones") && t.contains("last result"),
        "{t}"
    );
}

/// Seeds a small shop database; returns the tables.
fn seed_shop(env: &Env, db: &str, rows: usize) -> [&'static str; 3] {
    let mut c = env.db.conn();
    c.query_drop(format!("USE `{db}`")).unwrap();
    c.query_drop(
        "CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(50) CHARACTER SET utf8mb4)",
    )
    .unwrap();
    c.query_drop(
        "CREATE TABLE orders (id INT PRIMARY KEY, customer INT, total DECIMAL(12,2), at DATETIME)",
    )
    .unwrap();
    c.query_drop("CREATE TABLE items (id INT PRIMARY KEY, price DOUBLE, data VARBINARY(32))")
        .unwrap();
    c.exec_batch(
        "INSERT INTO customers VALUES (?, ?)",
        (0..50).map(|i| (i, format!("cüstomer {i}"))),
    )
    .unwrap();
    c.exec_batch(
        "INSERT INTO orders VALUES (?, ?, ?, '2026-11-22 10:00:00')",
        (0..rows).map(|i| (i, i % 50, format!("{}.{:02}", i * 3, i % 100))),
    )
    .unwrap();
    c.exec_batch(
        "INSERT INTO items VALUES (?, ?, ?)",
        (0..20).map(|i| (i, i as f64 * 1.25, vec![i as u8, 0, 255])),
    )
    .unwrap();
    ["customers", "orders", "items"]
}

/// Every process's command line now.
fn ps() -> String {
    let out = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn mysqldump_then_destruction_then_rollback_restores_every_table() {
    let env = Env::new(true);
    let db = env.database("shop");
    let tables = seed_shop(&env, &db, 2000);
    let before = env.checksums(&db, &tables);
    let dump = env.path("shop.sql");
    let pb = env.playbook(
        "dump.rhai",
        &db,
        &format!(
            r#"{CONNECT}
let h = cluster().host("h1");
step("dump", || backup::mysqldump(h, db, "DBNAME", "SCRATCH/shop.sql", #{{ flags: ["--single-transaction", "--triggers=false"] }}));
step("destroy", || {{
    db.exec("DELETE FROM orders WHERE id > ?", [10]);
    db.exec("DROP TABLE customers");
    db.exec("UPDATE items SET price = 0, data = NULL");
}});
step("upgrade", || fail("the upgrade went wrong"));
"#
        ),
    );
    // Hold a write lock so the dump waits where the test can look at `ps`.
    let mut lock = env.db.conn();
    lock.query_drop(format!("LOCK TABLES `{db}`.orders WRITE"))
        .unwrap();
    let child = env
        .cmd(&[
            "run",
            pb.to_str().unwrap(),
            "-i",
            "inv.toml",
            "--json",
            "--on-failure",
            "rollback",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut seen = String::new();
    loop {
        let now = ps();
        if now.lines().any(|l| l.starts_with("mysqldump")) {
            seen = now;
            break;
        }
        if start.elapsed() > Duration::from_secs(30) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    lock.query_drop("UNLOCK TABLES").unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !seen.is_empty(),
        "mysqldump never showed in ps; stderr: {stderr}"
    );
    assert!(seen.contains("defaults-extra-file"), "{seen}");
    assert!(
        !seen.contains(DB_PASSWORD),
        "the password is in ps:\n{seen}"
    );

    let report = last_report(&stdout);
    assert_eq!(report["outcome"]["status"], "failed", "{stderr}");
    assert_eq!(report["status"], "rolled_back", "{}", report["undos"]);
    assert_eq!(
        env.checksums(&db, &tables),
        before,
        "rollback did not restore the tables"
    );

    // The report lists the dump: where, how big, its checksum.
    let run = report["run_id"].as_str().unwrap();
    let text = env.capstan(&["report", run]);
    let size = std::fs::metadata(&dump).unwrap().len();
    let sha = sha256_file(&dump);
    assert!(
        text.stdout.contains(dump.to_str().unwrap()),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains(&sha), "{}", text.stdout);
    let json = env.capstan(&["report", run, "--json"]);
    let r: Value = serde_json::from_str(&json.stdout).unwrap();
    let b = &r["backups"][0];
    assert_eq!(b["kind"], "mysqldump");
    assert_eq!(b["host"], "h1");
    assert_eq!(b["bytes"], size);
    assert_eq!(b["sha256"], sha);
    assert!(
        std::fs::read_to_string(dump.with_extension("sql.manifest.json"))
            .unwrap()
            .contains(&sha)
    );

    // The password is in no output, report or journal byte.
    for (what, text) in [
        ("stdout", &stdout),
        ("stderr", &stderr),
        ("report", &text.stdout),
        ("report --json", &json.stdout),
    ] {
        assert!(!text.contains(DB_PASSWORD), "the password is in {what}");
    }
    for f in ["journal.db", "journal.db-wal"] {
        if let Ok(bytes) = std::fs::read(env.path(f)) {
            assert!(
                !bytes
                    .windows(DB_PASSWORD.len())
                    .any(|w| w == DB_PASSWORD.as_bytes()),
                "the password is in {f}"
            );
        }
    }
    // No option file is left behind.
    let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("capstan-my."))
        .collect();
    assert!(left.is_empty(), "option files left: {left:?}");
}

fn sha256_file(p: &Path) -> String {
    let out = Command::new("sha256sum").arg(p).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn a_damaged_or_failed_dump_is_never_taken_for_a_backup() {
    let env = Env::new(false);
    let db = env.database("damaged");
    seed_shop(&env, &db, 100);
    let pb = env.playbook(
        "dump.rhai",
        &db,
        &format!(
            r#"{CONNECT}
let h = cluster().host("localhost");
backup::mysqldump(h, db, "DBNAME", "SCRATCH/d.sql")
"#
        ),
    );
    let (out, report) = env.run(&pb, &[]);
    ok_run(&out, &report);
    assert!(report["result"]["sha256"].as_str().unwrap().len() == 64);

    // Cut the end off: verification names the problem.
    let dump = env.path("d.sql");
    let len = std::fs::metadata(&dump).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&dump).unwrap();
    f.set_len(len - 40).unwrap();
    let verify = env.playbook(
        "verify.rhai",
        &db,
        r#"backup::verify(cluster().host("localhost"), "SCRATCH/d.sql")"#,
    );
    let (_, report) = env.run(&verify, &[]);
    let e = outcome_error(&report);
    assert!(e.contains("does not match its manifest"), "{e}");
    assert!(e.contains("completion line"), "{e}");

    // A dump that fails (no such database) leaves no file behind, and says why.
    let bad = env.playbook(
        "bad.rhai",
        &db,
        &format!(
            r#"{CONNECT}
backup::mysqldump(cluster().host("localhost"), db, "no_such_db", "SCRATCH/bad.sql")
"#
        ),
    );
    let (_, report) = env.run(&bad, &[]);
    let e = outcome_error(&report);
    assert!(
        e.contains("mysqldump of no_such_db") && e.contains("Unknown database"),
        "{e}"
    );
    assert!(!env.path("bad.sql").exists() && !env.path("bad.sql.capstan-partial").exists());

    // Flags that would drop the completion line are refused before anything runs.
    let flags = env.playbook(
        "flags.rhai",
        &db,
        &format!(
            r#"{CONNECT}
backup::mysqldump(cluster().host("localhost"), db, "DBNAME", "SCRATCH/f.sql", #{{ flags: ["--compact"] }})
"#
        ),
    );
    let (out, report) = env.run(&flags, &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(outcome_error(&report).contains("--compact"));
}

/// Every file under `root` with its bytes and mode, for byte-identical comparisons.
fn tree(root: &Path) -> Vec<(String, Vec<u8>, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                out.push((format!("{rel}/"), Vec::new(), meta.permissions().mode()));
                stack.push(p);
            } else if meta.file_type().is_symlink() {
                let t = std::fs::read_link(&p).unwrap();
                out.push((format!("{rel}@"), t.display().to_string().into_bytes(), 0));
            } else {
                out.push((rel, std::fs::read(&p).unwrap(), meta.permissions().mode()));
            }
        }
    }
    out.sort();
    out
}

fn make_tree(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("conf/sub dir")).unwrap();
    std::fs::write(
        root.join("bin/server"),
        (0..=255u8).cycle().take(70_000).collect::<Vec<_>>(),
    )
    .unwrap();
    std::fs::set_permissions(
        root.join("bin/server"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(root.join("conf/app.conf"), "port = 1\n").unwrap();
    std::fs::write(root.join("conf/sub dir/it's.txt"), "quoted name\n").unwrap();
    std::fs::write(root.join("empty"), "").unwrap();
    std::os::unix::fs::symlink("bin/server", root.join("current")).unwrap();
}

#[test]
fn a_directory_snapshot_is_restored_byte_identical_by_rollback() {
    let env = Env::new(true);
    let data = env.path("app");
    make_tree(&data);
    let before = tree(&data);
    let pb = env.playbook(
        "snap.rhai",
        "",
        r#"
let h = cluster().host("h1");
step("snapshot", || backup::dir(h, "SCRATCH/app"));
step("change", || {
    h.shell("echo broken > SCRATCH/app/conf/app.conf; rm -rf SCRATCH/app/bin; mkdir SCRATCH/app/new");
});
step("upgrade", || fail("the new version does not start"));
"#,
    );
    let (out, report) = env.run(&pb, &["--on-failure", "rollback"]);
    assert_eq!(
        report["status"], "rolled_back",
        "{}\n{}",
        out.stderr, report["undos"]
    );
    assert_eq!(tree(&data), before, "the directory is not as it was");
    let snap = format!(
        "{}.capstan-backup-{}",
        data.display(),
        report["run_id"].as_str().unwrap()
    );
    assert!(
        Path::new(&snap).is_dir(),
        "the snapshot stays for another restore"
    );

    // The snapshot verifies; damaged, it names the file.
    std::fs::write(format!("{snap}/conf/app.conf"), "tampered\n").unwrap();
    let v = env.playbook(
        "verify.rhai",
        "",
        &format!(r#"backup::verify(cluster().host("h1"), "{snap}")"#),
    );
    let (_, report) = env.run(&v, &[]);
    let e = outcome_error(&report);
    assert!(
        e.contains("./conf/app.conf has a different checksum"),
        "{e}"
    );
}

#[test]
fn a_snapshot_that_does_not_fit_is_refused_before_anything_changes() {
    let env = Env::new(false);
    let small = env.path("small");
    std::fs::create_dir_all(&small).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(
        mounted.success(),
        "mounting a tmpfs needs root (the test harness runs as root)"
    );
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(small.clone());
    let data = env.path("big");
    std::fs::create_dir_all(&data).unwrap();
    // 3 MiB that does not compress or dedupe.
    let bytes: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(data.join("blob"), bytes).unwrap();
    let pb = env.playbook(
        "snap.rhai",
        "",
        r#"backup::dir(cluster().host("localhost"), "SCRATCH/big", #{ to: "SCRATCH/small/snap" })"#,
    );
    for mode in [&[][..], &["--check"][..]] {
        let (_, report) = env.run(&pb, mode);
        let e = outcome_error(&report);
        assert!(e.contains("not enough free space"), "{mode:?}: {e}");
        assert_eq!(report["outcome"]["kind"], "action");
        assert_eq!(
            std::fs::read_dir(&small).unwrap().count(),
            0,
            "{mode:?}: something was written"
        );
    }
}

#[test]
fn a_resumed_run_reuses_its_verified_snapshot() {
    let env = Env::new(false);
    let data = env.path("app");
    make_tree(&data);
    let before = tree(&data);
    let pb = env.playbook(
        "resume.rhai",
        "",
        r#"
let h = cluster().host("localhost");
step("upgrade", || {
    backup::dir(h, "SCRATCH/app");
    h.write_file("SCRATCH/app/conf/app.conf", "port = 2\n");
    if !h.exists("SCRATCH/go") { fail("not yet") }
});
"#,
    );
    let (_, report) = env.run(&pb, &[]);
    assert_eq!(report["outcome"]["status"], "failed");
    let run = report["run_id"].as_str().unwrap().to_string();
    std::fs::write(env.path("go"), "").unwrap();
    let out = env.capstan(&["resume", &run, "--json"]);
    let report = last_report(&out.stdout);
    assert_eq!(report["outcome"]["status"], "succeeded", "{}", out.stderr);
    let snapshots: Vec<&Value> = report["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["op"] == "snapshot")
        .collect();
    assert_eq!(
        snapshots.len(),
        1,
        "the snapshot was taken again: {snapshots:?}"
    );
    assert!(report["logs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["message"]
            .as_str()
            .unwrap()
            .contains("reusing the verified snapshot")));
    // The kept snapshot is the directory as it was before the first attempt changed it.
    let snap = PathBuf::from(format!("{}.capstan-backup-{run}", data.display()));
    assert_eq!(tree(&snap), before);
    assert_eq!(report["backups"].as_array().unwrap().len(), 1);
    assert_eq!(report["backups"][0]["taken"], true);
}

#[test]
fn simulated_servers_answer_from_the_scenario() {
    let scenario = r#"
[inventory.hosts.db1]
transport = "ssh"
address = "10.0.0.3"

[hosts.db1]
files = { "/data/conf/a" = "1" }

[[sql]]
host = "db1"
statement = "SELECT status FROM zones*"
rows = [{ status = "ACTIVE" }, { status = "ACTIVE" }]

[[sql]]
statement = "DELETE FROM*"
affected = 7

[[sql]]
statement = "DROP TABLE*"
error_code = 1051
error_message = "Unknown table 'x'"
"#;
    let report = simulate(
        scenario,
        r#"
let h = cluster().host("db1");
let db = sql::connect(#{ host: h, user: "root" });
let rows = wait::sql(db, "SELECT status FROM zones", (), #{ status: "ACTIVE" }, #{ timeout: 10 });
let n = db.exec("DELETE FROM t WHERE id < ?", [5]);
let code = 0;
try { db.exec("DROP TABLE x"); } catch (e) { code = e.code; }
let b = backup::dir(h, "/data/conf");
let d = backup::mysqldump(h, db, "oms_rm", "/backup/oms_rm.sql");
backup::verify(h, d.path);
#{ rows: rows.len(), n: n, code: code, files: b.files }
"#,
    );
    ok(&report);
    assert_eq!(report.result["rows"], 2);
    assert_eq!(report.result["n"], 7);
    assert_eq!(report.result["code"], 1051);
    assert_eq!(report.result["files"], 1);
    let ops: Vec<&str> = report.actions.iter().map(|a| a.op.as_str()).collect();
    assert!(
        ops.contains(&"snapshot") && ops.contains(&"mysqldump"),
        "{ops:?}"
    );
}

#[test]
fn tls_on_request_verified_against_a_ca_and_a_server_named_by_an_inventory_host() {
    let env = Env::new(true);
    let ca = env.db.dir.join("tls/ca.pem");
    let pb = env.playbook(
        "tls.rhai",
        "mysql",
        &format!(
            r#"
let h = cluster().host("h1");
let db = sql::connect(#{{ host: h, port: PORT, user: "capstan", password: secret("db_pw"), tls_ca: "{}" }});
let cipher = db.query("SHOW SESSION STATUS LIKE 'Ssl_cipher'")[0].Value;
let plain = sql::connect(#{{ host: h, port: PORT, user: "capstan", password: secret("db_pw") }});
let none = plain.query("SHOW SESSION STATUS LIKE 'Ssl_cipher'")[0].Value;
let unverified = "";
try {{
    sql::connect(#{{ host: h, port: PORT, user: "capstan", password: secret("db_pw"), tls: true }});
}} catch (e) {{ unverified = e.reason; }}
#{{ cipher: cipher, none: none, unverified: unverified }}
"#,
            ca.display()
        ),
    );
    let (out, report) = env.run(&pb, &[]);
    ok_run(&out, &report);
    let r = &report["result"];
    assert!(!r["cipher"].as_str().unwrap().is_empty(), "{r}");
    assert_eq!(r["none"], "", "{r}");
    assert_eq!(
        r["unverified"], "connect",
        "a certificate from an unknown CA is refused"
    );
    // Statements are recorded under the inventory host that named the server.
    let hosts: Vec<&str> = report["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["op"] == "sql_query")
        .map(|a| a["host"].as_str().unwrap())
        .collect();
    assert_eq!(hosts, ["h1", "h1"]);
}

#[test]
fn a_directory_written_to_while_it_is_copied_is_not_taken_for_a_snapshot() {
    let env = Env::new(false);
    let data = env.path("live");
    make_tree(&data);
    // A "service" still appending to its log while the snapshot runs.
    let mut writer = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "while :; do echo line >> '{}/conf/app.log'; done",
            data.display()
        ))
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let pb = env.playbook(
        "live.rhai",
        "",
        r#"backup::dir(cluster().host("localhost"), "SCRATCH/live")"#,
    );
    let (_, report) = env.run(&pb, &[]);
    let _ = writer.kill();
    let _ = writer.wait();
    let e = outcome_error(&report);
    assert!(
        e.contains("changed while it was copied") && e.contains("app.log"),
        "{e}"
    );
    let left: Vec<String> = std::fs::read_dir(env.path(""))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("live.capstan"))
        .collect();
    assert!(left.is_empty(), "a partial copy was left: {left:?}");
}

/// The documented pattern (docs/sql-and-backups.md): the snapshot taken while the service runs,
/// its restore registered after the stop's undo.
const RESTORE_UNDER_A_STOPPED_SERVICE: &str = r#"
let h = cluster().host("localhost");
let ctl = "SCRATCH/app-ctl";
step("upgrade", || {
    let b = backup::dir(h, "SCRATCH/data", #{ undo: "later" });
    h.run([ctl, "stop"]);
    undo("start the service", || h.run([ctl, "start"]));
    backup::undo_restore(h, b);
    h.write_file("SCRATCH/data/app.db", "v2\n");
    h.run([ctl, "start"]);
    undo("stop the service", || h.run([ctl, "stop"]));
    fail("the new version does not answer");
});
"#;

#[test]
fn the_documented_backup_pattern_restores_with_the_service_stopped() {
    let env = Env::new(false);
    let data = env.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("app.db"), "v1\n").unwrap();
    // A service that, when started, reads its data (the log shows what it started on) and that
    // records in the log any restore of its directory while it runs.
    let ctl = env.path("app-ctl");
    let (running, log) = (env.path("running"), env.path("log"));
    std::fs::write(
        &ctl,
        format!(
            "#!/bin/sh\ncase $1 in\nstop) rm -f {r}; echo stop >> {l} ;;\nstart) touch {r}; echo \"start on $(cat {d}/app.db)\" >> {l} ;;\nesac\n",
            r = running.display(),
            l = log.display(),
            d = data.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&ctl, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(&running, "").unwrap();
    let pb = env.playbook("pattern.rhai", "", RESTORE_UNDER_A_STOPPED_SERVICE);
    let (_, report) = env.run(&pb, &["--on-failure", "rollback"]);
    assert_eq!(report["status"], "rolled_back", "{report:#}");
    // The trace of the rollback: the service stops, the directory comes back, then it starts.
    let undo_ops: Vec<String> = report["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["step"].as_str().is_some_and(|s| s.starts_with("undo #")))
        .map(|a| {
            let d = a["description"].as_str().unwrap();
            if d.contains("app-ctl stop") {
                "stop".into()
            } else if d.contains("app-ctl start") {
                "start".into()
            } else {
                a["op"].as_str().unwrap().to_string()
            }
        })
        .collect();
    let at = |what: &str| {
        undo_ops
            .iter()
            .position(|o| o == what)
            .unwrap_or_else(|| panic!("no {what} in {undo_ops:?}"))
    };
    let restore = undo_ops
        .iter()
        .position(|o| o.contains("restore"))
        .unwrap_or_else(|| panic!("no restore in {undo_ops:?}"));
    assert!(
        at("stop") < restore && restore < at("start"),
        "{undo_ops:?}"
    );
    assert_eq!(
        std::fs::read_to_string(data.join("app.db")).unwrap(),
        "v1\n"
    );
    // The run started the new version on v2; the rollback started the old one on v1.
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "stop\nstart on v2\nstop\nstart on v1\n"
    );
}

#[test]
fn undo_restore_refuses_what_is_not_a_snapshot_of_its_host() {
    let env = Env::new(false);
    std::fs::create_dir_all(env.path("data")).unwrap();
    for (body, want) in [
        (
            r#"backup::undo_restore(h, #{ kind: "mysqldump", host: "localhost", path: "/x.sql", source: "db" })"#,
            "is not a directory snapshot",
        ),
        (
            r#"backup::undo_restore(h, #{ kind: "dir", host: "web9", path: "/x", source: "/y" })"#,
            "is on web9, not on localhost",
        ),
        (r#"backup::undo_restore(h, #{})"#, "has no `kind`"),
        (
            r#"backup::dir(h, "SCRATCH/data", #{ undo: "afterwards" })"#,
            "option `undo` must be true, false or \"later\", got \"afterwards\"",
        ),
    ] {
        let pb = env.playbook(
            "bad.rhai",
            "",
            &format!("let h = cluster().host(\"localhost\");\nstep(\"s\", || {{ {body}; }});\n"),
        );
        let (_, report) = env.run(&pb, &[]);
        assert_eq!(report["outcome"]["status"], "failed", "{body}");
        let said = report["outcome"]["error"]["message"].as_str().unwrap();
        assert!(said.contains(want), "{body}: {said}");
    }
}
