//! The SSH transport against real sshd instances on 127.0.0.1.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use capstan::{FaultKind, Mode};

use crate::support::*;

fn run(inv: &str, source: &str) -> capstan::RunReport {
    run_playbook(inventory(inv), Mode::Run, source, &[])
}

#[test]
fn playbook_spans_three_ssh_hosts_and_local_and_parallel_overlaps_them() {
    let lab = Lab::start(3);
    let inv = lab.inventory("\n[hosts.l1]\ntransport = \"local\"\n");
    let r = run(
        &inv,
        r#"
        let spans = parallel(cluster().hosts(), |h| {
            // Long enough that a slow connection setup on a loaded machine still overlaps.
            let out = h.read(["sh", "-c", "date +%s.%N; sleep 3; date +%s.%N"]).stdout.lines();
            [h.name, parse_float(out[0]), parse_float(out[1])]
        });
        spans
        "#,
    );
    ok(&r);
    let spans = r.result.as_array().unwrap();
    assert_eq!(spans.len(), 4);
    let names: Vec<&str> = spans.iter().map(|s| s[0].as_str().unwrap()).collect();
    assert_eq!(names, ["h1", "h2", "h3", "l1"]);
    // Every host's command started before any host's command ended: they ran at the same time.
    let latest_start = spans
        .iter()
        .map(|s| s[1].as_f64().unwrap())
        .fold(f64::MIN, f64::max);
    let earliest_end = spans
        .iter()
        .map(|s| s[2].as_f64().unwrap())
        .fold(f64::MAX, f64::min);
    assert!(
        latest_start < earliest_end,
        "commands did not overlap: {spans:?}"
    );
    // Three SSH hosts and one local host each got their action.
    let hosts: std::collections::BTreeSet<&str> =
        r.actions.iter().map(|a| a.host.as_str()).collect();
    assert_eq!(hosts.len(), 4);
}

#[test]
fn unknown_host_key_is_refused_unless_accept_new_which_records_it() {
    let lab = Lab::start(1);
    let kh = lab.path("empty_known_hosts");
    std::fs::write(&kh, "").unwrap();
    let inv = lab.inventory("").replace(
        &lab.path("known_hosts").display().to_string(),
        &kh.display().to_string(),
    );
    let r = run(&inv, "cluster().host(\"h1\").read([\"true\"]);");
    let (kind, e) = failure(&r);
    assert_eq!(kind, FaultKind::Unreachable);
    let want = format!(
        "h1: host key of 127.0.0.1:{} is not in {}",
        lab.ports[0],
        kh.display()
    );
    assert!(e.message.starts_with(&want), "{}", e.message);
    assert!(e.message.contains("SHA256:"), "{}", e.message);

    let accept = inv.replace(
        "[defaults]\n",
        "[defaults]\nhost_key_policy = \"accept-new\"\n",
    );
    ok(&run(&accept, "cluster().host(\"h1\").read([\"true\"]);"));
    let recorded = std::fs::read_to_string(&kh).unwrap();
    assert_eq!(recorded.trim(), lab.host_key_line(0));
    // Now known: strict mode accepts it.
    ok(&run(&inv, "cluster().host(\"h1\").read([\"true\"]);"));
}

#[test]
fn changed_host_key_is_refused() {
    let lab = Lab::start(2);
    let kh = lab.path("wrong_known_hosts");
    // h1's port with h2's key: what a reinstalled host or an interceptor looks like.
    let wrong = lab
        .host_key_line(1)
        .replace(&format!(":{}", lab.ports[1]), &format!(":{}", lab.ports[0]));
    std::fs::write(&kh, format!("{wrong}\n")).unwrap();
    let inv = lab.inventory("").replace(
        &lab.path("known_hosts").display().to_string(),
        &kh.display().to_string(),
    );
    let accept = inv.replace(
        "[defaults]\n",
        "[defaults]\nhost_key_policy = \"accept-new\"\n",
    );
    for inv in [inv, accept] {
        let r = run(&inv, "cluster().host(\"h1\").read([\"true\"]);");
        let (kind, e) = failure(&r);
        assert_eq!(kind, FaultKind::Unreachable);
        assert!(
            e.message.starts_with(&format!(
                "h1: HOST KEY MISMATCH for 127.0.0.1:{}",
                lab.ports[0]
            )),
            "{}",
            e.message
        );
    }
}

#[test]
fn wrong_key_is_refused_with_the_user_and_method() {
    let lab = Lab::start(1);
    let other = lab.path("other_key");
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    assert!(st.success());
    let inv = lab.inventory("").replace(
        &lab.path("id_ed25519").display().to_string(),
        &other.display().to_string(),
    );
    let (kind, e) = failure(&run(&inv, "cluster().host(\"h1\").read([\"true\"]);"));
    assert_eq!(kind, FaultKind::Unreachable);
    assert!(
        e.message
            .starts_with("h1: authentication as root failed (key):"),
        "{}",
        e.message
    );

    let missing = lab.inventory("").replace(
        &lab.path("id_ed25519").display().to_string(),
        "/nonexistent/key",
    );
    let (_, e) = failure(&run(&missing, "cluster().host(\"h1\").read([\"true\"]);"));
    assert_eq!(
        e.message,
        "h1: authentication as root failed (key): key file /nonexistent/key not found"
    );
}

#[test]
fn password_auth_from_a_secret_file() {
    let lab = Lab::start(1);
    assert!(
        std::process::Command::new("id")
            .arg("capstan-test")
            .status()
            .unwrap()
            .success(),
        "user capstan-test is missing: run scripts/test.sh (it creates it)"
    );
    let pw = lab.path("pw");
    let inv = |password: &str| {
        std::fs::write(&pw, format!("{password}\n")).unwrap();
        lab.inventory("")
            .replace("user = \"root\"", "user = \"capstan-test\"")
            .replace(
                &format!(
                    "auth = {{ key = \"{}\" }}",
                    lab.path("id_ed25519").display()
                ),
                &format!("auth = {{ password = {{ file = \"{}\" }} }}", pw.display()),
            )
    };
    let (kind, e) = failure(&run(
        &inv("not-the-password"),
        "cluster().host(\"h1\").read([\"true\"]);",
    ));
    assert_eq!(kind, FaultKind::Unreachable);
    assert!(
        e.message
            .starts_with("h1: authentication as capstan-test failed (password)"),
        "{}",
        e.message
    );
    assert!(!e.message.contains("not-the-password"));
    let r = run(
        &inv("capstan-test-pw"),
        "cluster().host(\"h1\").read([\"id\", \"-un\"]).stdout.trimmed()",
    );
    ok(&r);
    assert_eq!(r.result, "capstan-test");
}

#[test]
fn closed_port_is_a_clear_error() {
    let port = free_port();
    let inv =
        format!("[hosts.h1]\naddress = \"127.0.0.1\"\nport = {port}\nconnect_timeout = \"3s\"\n");
    let (kind, e) = failure(&run(&inv, "cluster().host(\"h1\").read([\"true\"]);"));
    assert_eq!(kind, FaultKind::Unreachable);
    assert_eq!(
        e.message,
        format!("h1: connection refused by 127.0.0.1:{port}")
    );
}

#[test]
fn host_that_accepts_but_never_speaks_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = Arc::new(Mutex::new(Vec::new()));
    let h2 = held.clone();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            h2.lock().unwrap().push(s);
        }
    });
    let inv =
        format!("[hosts.h1]\naddress = \"127.0.0.1\"\nport = {port}\nconnect_timeout = \"2s\"\n");
    let start = Instant::now();
    let (kind, e) = failure(&run(&inv, "cluster().host(\"h1\").read([\"true\"]);"));
    assert_eq!(kind, FaultKind::Unreachable);
    assert_eq!(
        e.message,
        format!("h1: SSH handshake with 127.0.0.1:{port} failed: no SSH answer within 2s")
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
}

/// A TCP proxy in front of one sshd that the test can freeze (stop forwarding) or cut.
struct Proxy {
    port: u16,
    frozen: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn new(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (f, c) = (frozen.clone(), conns.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let server = TcpStream::connect(("127.0.0.1", upstream)).unwrap();
                c.lock().unwrap().push(client.try_clone().unwrap());
                c.lock().unwrap().push(server.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server.try_clone().unwrap(), client.try_clone().unwrap()),
                ] {
                    let f = f.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        loop {
                            while f.load(Ordering::SeqCst) {
                                std::thread::sleep(Duration::from_millis(20));
                            }
                            match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    while f.load(Ordering::SeqCst) {
                                        std::thread::sleep(Duration::from_millis(20));
                                    }
                                    if to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Proxy {
            port,
            frozen,
            conns,
        }
    }
    fn cut(&self) {
        for c in self.conns.lock().unwrap().iter() {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn proxied_inventory(lab: &Lab, proxy: &Proxy) -> String {
    let kh = lab.path("proxy_known_hosts");
    let line = lab
        .host_key_line(0)
        .replace(&format!(":{}", lab.ports[0]), &format!(":{}", proxy.port));
    std::fs::write(&kh, format!("{line}\n")).unwrap();
    format!(
        "[hosts.h1]\n{}port = {}\nkeepalive = \"1s\"\n",
        lab.defaults().replace(
            &lab.path("known_hosts").display().to_string(),
            &kh.display().to_string()
        ),
        proxy.port
    )
}

/// Runs `src` with a native `hook()` that calls `f`: the test's way to act at a chosen point.
fn run_with_hook(inv: &str, f: impl Fn() + Send + Sync + 'static, src: &str) -> capstan::RunReport {
    let f = Arc::new(f);
    let host = capstan::HostBuilder::new()
        .inventory(inventory(inv))
        .register(move |e| {
            let f = f.clone();
            e.register_fn("hook", move || f());
        })
        .build()
        .unwrap();
    host.run(
        &capstan::Playbook::from_source("t.rhai", src),
        &Default::default(),
    )
    .unwrap()
}

#[test]
fn host_that_stops_answering_mid_session_is_detected() {
    let lab = Lab::start(1);
    let proxy = Proxy::new(lab.ports[0]);
    let inv = proxied_inventory(&lab, &proxy);
    let frozen = proxy.frozen.clone();
    let start = Instant::now();
    // The path freezes once the first command has answered: the second finds a silent peer.
    // The first is a change, so the check that every host answers before the first change has
    // passed before the freeze, and the stall is met mid-session.
    let r = run_with_hook(
        &inv,
        move || frozen.store(true, Ordering::SeqCst),
        "let h = cluster().host(\"h1\");\nh.run([\"true\"]);\nhook();\nh.run([\"sleep\", \"60\"]);\n",
    );
    let (kind, e) = failure(&r);
    assert_eq!(kind, FaultKind::Unreachable);
    assert!(
        e.message
            .starts_with("h1: host stopped answering: nothing received for"),
        "{}",
        e.message
    );
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "took {:?}",
        start.elapsed()
    );
    proxy.frozen.store(false, Ordering::SeqCst);
}

#[test]
fn connection_cut_mid_command_is_reported_as_dropped() {
    let lab = Lab::start(1);
    let proxy = Arc::new(Proxy::new(lab.ports[0]));
    let inv = proxied_inventory(&lab, &proxy);
    let p = proxy.clone();
    let start = Instant::now();
    let r = run_with_hook(
        &inv,
        move || {
            let p = p.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(500));
                p.cut();
            });
        },
        "let h = cluster().host(\"h1\");\nh.read([\"true\"]);\nhook();\nh.run([\"sleep\", \"30\"]);\n",
    );
    let (kind, e) = failure(&r);
    assert_eq!(kind, FaultKind::Unreachable);
    assert!(
        e.message.starts_with("h1: connection dropped:"),
        "{}",
        e.message
    );
    assert!(start.elapsed() < Duration::from_secs(20));
}

/// A session that sat idle longer than its keepalive may have been dropped on the way without a
/// word, where a command written to the lock's script would be lost or not: the next command
/// gets a channel of its own, whose opening proves the session (and would replace it), and the
/// one after is served again. Counted in sshd's log: the lock's session and that one.
#[test]
fn after_an_idle_while_a_command_proves_the_session_on_a_channel_of_its_own() {
    let lab = Lab::start_logged(1);
    let r = run(
        &lab.inventory("keepalive = \"1s\"\n"),
        "let h = cluster().host(\"h1\");\nh.run([\"true\"]);\nwait::sleep(1.5);\nh.run([\"true\"]);\nh.run([\"true\"]);\n",
    );
    ok(&r);
    let log = std::fs::read_to_string(lab.path(&format!("h{}/sshd.log", lab.ports[0]))).unwrap();
    assert_eq!(log.matches("Starting session:").count(), 2, "{log}");
}

/// What a served command prints and how it ends are what a session of its own gives: output
/// without a last newline, output on both streams, ten megabytes, a directory and environment,
/// the login shell's text, exit codes and a signal; and a process it leaves holding its stdout
/// keeps neither it nor the lock's release waiting. Each is compared with the same command run
/// where no lock is held (every command a session of its own).
#[test]
fn a_served_command_gives_what_a_session_of_its_own_gives() {
    let lab = Lab::start_logged(1);
    let src = r#"
        let h = cluster().host("h1");
        let out = [];
        for c in [
            ["printf", "no newline"],
            ["sh", "-c", "echo out; echo err >&2; echo out2; exit 3"],
            ["sh", "-c", "head -c 10485760 /dev/zero | tr '\\0' e; echo; echo done >&2"],
            ["sh", "-c", "kill -TERM $$"],
            ["sh", "-c", "sleep 3 & echo started"],
        ] {
            let r = h.run(c, #{ allow_fail: true });
            out.push([r.stdout.len(), if r.stdout.len() < 100 { r.stdout } else { "" }, r.stderr, r.code, r.signal]);
        }
        let r = h.run(["sh", "-c", "pwd; echo $CAPSTAN_T"], #{ cwd: "/tmp", env: #{ CAPSTAN_T: "it's a \"value\"" } });
        out.push(r.stdout);
        out.push(h.shell("echo $0 | wc -l").stdout);
        out
    "#;
    let served = run(&lab.inventory(""), src);
    ok(&served);
    let log = std::fs::read_to_string(lab.path(&format!("h{}/sshd.log", lab.ports[0]))).unwrap();
    assert_eq!(log.matches("Starting session:").count(), 1, "served: {log}");
    let alone = run(&lab.inventory("host_lock = false\n"), src);
    ok(&alone);
    assert_eq!(served.result, alone.result);
    assert_eq!(
        served.result[0],
        serde_json::json!([10, "no newline", "", 0, null])
    );
    assert_eq!(
        served.result[3],
        serde_json::json!([0, "", "", null, "TERM"])
    );
    assert_eq!(
        served.result[4],
        serde_json::json!([8, "started\n", "", 0, null])
    );
}

#[test]
fn one_session_per_host_serves_every_command() {
    let lab = Lab::start(1);
    let proxy = Proxy::new(lab.ports[0]);
    let inv = proxied_inventory(&lab, &proxy);
    let target = lab.path("one-session");
    let r = run(
        &inv,
        &format!(
            r#"
        let h = cluster().host("h1");
        for i in 0..10 {{ h.read(["true"]); }}
        h.write_file("{}", "x");
        parallel([h, h, h], |x| x.read(["echo", "hi"]).stdout)
        "#,
            target.display()
        ),
    );
    ok(&r);
    // 10 reads, write_file (after its undo's probe: does the file exist? no), 3 parallel reads.
    assert_eq!(r.actions.len(), 15);
    // The proxy keeps both ends of every connection it carried.
    assert_eq!(
        proxy.conns.lock().unwrap().len(),
        2,
        "more than one TCP connection was opened"
    );
}

#[test]
fn ten_megabytes_on_stderr_complete() {
    let lab = Lab::start(1);
    let r = run(
        &lab.inventory(""),
        r#"
        let r = cluster().host("h1").run(["sh", "-c", "head -c 10485760 /dev/zero | tr '\\0' e >&2; echo done"]);
        [r.stdout, r.stderr.len(), r.code]
        "#,
    );
    ok(&r);
    assert_eq!(r.result, serde_json::json!(["done\n", 10485760, 0]));
}

#[test]
fn exit_codes_and_signals_are_reported() {
    let lab = Lab::start(1);
    let inv = lab.inventory("\n[hosts.l1]\ntransport = \"local\"\n");
    for host in ["h1", "l1"] {
        let r = run(
            &inv,
            &format!(
                r#"
                let h = cluster().host("{host}");
                let a = h.run(["sh", "-c", "exit 7"], #{{ allow_fail: true }});
                let b = h.run(["sh", "-c", "kill -TERM $$"], #{{ allow_fail: true }});
                let c = h.run(["sh", "-c", "exit 3"], #{{ ok_codes: [0, 3] }});
                [a.code, a.ok, b.code, b.signal, c.ok]
                "#
            ),
        );
        ok(&r);
        assert_eq!(
            r.result,
            serde_json::json!([7, false, null, "TERM", true]),
            "on {host}"
        );
        let (kind, e) = failure(&run(
            &inv,
            &format!(
                "cluster().host(\"{host}\").run([\"sh\", \"-c\", \"echo oops >&2; exit 7\"]);"
            ),
        ));
        assert_eq!(kind, FaultKind::Action);
        assert_eq!(
            e.message,
            format!("{host}: `sh -c 'echo oops >&2; exit 7'` exited with code 7\nstderr: oops")
        );
        assert_eq!(
            e.pos.as_ref().map(|p| (p.line, p.column)),
            Some((1, 22)),
            "points at `run`"
        );
    }
}

#[test]
fn argv_reaches_the_remote_program_unchanged() {
    let lab = Lab::start(1);
    let tricky = [
        "two words",
        "it's",
        "say \"hi\"",
        "a;b",
        "$(touch /tmp/capstan-injected)",
        "`id`",
        "*",
        "",
        "tab\there",
        "ünï",
    ];
    let arr = serde_json::to_string(&tricky).unwrap();
    let r = run(
        &lab.inventory(""),
        &format!(
            r#"
            let args = {arr};
            let r = cluster().host("h1").run(["sh", "-c", "for a in \"$@\"; do printf '<%s>\\n' \"$a\"; done", "sh"] + args);
            r.stdout
            "#
        ),
    );
    ok(&r);
    let want: String = tricky.iter().map(|a| format!("<{a}>\n")).collect();
    assert_eq!(r.result.as_str().unwrap(), want);
    assert!(!std::path::Path::new("/tmp/capstan-injected").exists());
}

#[test]
fn upload_and_write_file_over_sftp_and_over_scp() {
    let lab = Lab::start_with(&["", "nosftp"]);
    // h2 really has no SFTP subsystem, so its upload and writes can only go through scp.
    let h2_config =
        std::fs::read_to_string(lab.path(&format!("h{}/sshd_config", lab.ports[1]))).unwrap();
    assert!(!h2_config.contains("Subsystem"), "{h2_config}");
    let h1_config =
        std::fs::read_to_string(lab.path(&format!("h{}/sshd_config", lab.ports[0]))).unwrap();
    assert!(h1_config.contains("Subsystem sftp"), "{h1_config}");
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("blob");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&local, &data).unwrap();
    let remote = tempfile::tempdir().unwrap();
    let rp = remote.path().display().to_string();
    let r = run(
        &lab.inventory(""),
        &format!(
            r#"
            parallel(cluster().hosts(), |h| {{
                h.upload("{local}", `{rp}/${{h.name}}.bin`, #{{ mode: 0o600 }});
                h.write_file(`{rp}/${{h.name}}.txt`, "hello\n");
                h.write_file(`{rp}/${{h.name}}.txt`, "hello again\n");
                [h.checksum(`{rp}/${{h.name}}.bin`), h.read_file(`{rp}/${{h.name}}.txt`)]
            }})
            "#,
            local = local.display()
        ),
    );
    ok(&r);
    use sha2::Digest;
    let want = format!("{:x}", sha2::Sha256::digest(&data));
    for host in r.result.as_array().unwrap() {
        assert_eq!(host[0], want.as_str());
        assert_eq!(host[1], "hello again\n");
    }
    use std::os::unix::fs::PermissionsExt;
    for h in ["h1", "h2"] {
        let meta = std::fs::metadata(remote.path().join(format!("{h}.bin"))).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{h}");
    }
    // No temporary files are left behind (only the copies kept for the undos of overwrites).
    let names: Vec<String> = std::fs::read_dir(remote.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.contains(".capstan-undo-"))
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
}

#[test]
fn a_session_dropped_while_idle_is_replaced_before_the_next_command() {
    // The connection is cut between two commands, as an idle-timeout firewall would.
    let (_lab, r) = run_across_a_cut(
        "let h = cluster().host(\"h1\");\nh.read([\"true\"]);\nhook();\nh.read([\"echo\", \"still here\"]).stdout\n",
        |_| {},
    );
    assert_eq!(r.result, "still here\n");
}

/// Runs `src` on one host through a proxy whose connection `hook()` cuts, calling `around` with
/// the host lock's directory just before and after the cut; the run must succeed with exactly one
/// reconnection.
fn run_across_a_cut(
    src: &str,
    around: impl Fn(&std::path::Path) + Send + Sync + 'static,
) -> (Lab, capstan::RunReport) {
    let lab = Lab::start(1);
    let proxy = Arc::new(Proxy::new(lab.ports[0]));
    let inv = proxied_inventory(&lab, &proxy);
    let (p, lock) = (proxy.clone(), lab.host_lock_dir());
    let r = run_with_hook(
        &inv,
        move || {
            around(&lock);
            p.cut();
            std::thread::sleep(Duration::from_millis(300));
            around(&lock);
        },
        src,
    );
    ok(&r);
    assert_eq!(
        proxy.conns.lock().unwrap().len(),
        4,
        "expected exactly one reconnection"
    );
    (lab, r)
}

/// The script that took the host lock holds it on the run's session; when that session is lost
/// (the connection cut mid-run), the lock stays, as a killed run's does, and the run's end
/// releases it over the session that replaced it.
#[test]
fn a_lock_whose_session_was_lost_is_released_over_the_next() {
    let (lab, r) = run_across_a_cut(
        "let h = cluster().host(\"h1\");\nh.run([\"true\"]);\nhook();\nh.run([\"echo\", \"on\"]).stdout\n",
        |lock| assert!(lock.join("holder").exists(), "the lock is taken, and stays over the cut"),
    );
    assert_eq!(r.result, "on\n");
    assert!(!lab.host_lock_dir().exists(), "the lock outlived its run");
}

/// An sshd that allows one session per connection (`MaxSessions 1`) cannot keep the lock's
/// script beside the run's commands: the run goes on, and the lock is still released at its end.
#[test]
fn a_host_that_allows_one_session_at_a_time_still_runs_and_releases_its_lock() {
    let lab = Lab::start_configured(1, "MaxSessions 1");
    let dir = tempfile::tempdir().unwrap();
    let out = run_cli_on(
        &lab,
        dir.path(),
        "step(\"one\", || { let h = cluster().host(\"h1\"); h.run([\"true\"]); h.run([\"true\"]); });\n",
    );
    assert!(out.stdout.contains("\"status\":\"ok\""), "{}", out.stdout);
    assert!(!lab.host_lock_dir().exists(), "the lock outlived its run");
}

/// `capstan run --json` of playbook `source` over every instance of `lab` (files in `dir`);
/// the run must succeed.
fn run_cli_on(lab: &Lab, dir: &std::path::Path, source: &str) -> Out {
    let inv = dir.join("inv.toml");
    std::fs::write(&inv, lab.inventory("")).unwrap();
    let pb = dir.join("playbook.rhai");
    std::fs::write(&pb, source).unwrap();
    let out = capstan(&[
        "run",
        pb.to_str().unwrap(),
        "-i",
        inv.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    out
}

/// A run asks each locked SSH host for one session in all: the lock taken (which also proves
/// the login's shell, so the reach check before it only connects), whose script stays on its
/// channel, serves the run's commands there and, at the end, releases the lock together with the
/// run's command markers. One connection per host. Counted in sshd's own log.
#[test]
fn a_run_asks_each_locked_host_for_one_session_whose_script_serves_its_commands() {
    let lab = Lab::start_logged(2);
    let dir = tempfile::tempdir().unwrap();
    let out = run_cli_on(
        &lab,
        dir.path(),
        "step(\"two\", || parallel(cluster().hosts(), |h| { h.run([\"true\"]); h.run([\"true\"]); }));\n",
    );
    let run_id = last_report(&out.stdout)["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    for p in &lab.ports {
        let log = std::fs::read_to_string(lab.path(&format!("h{p}/sshd.log"))).unwrap();
        assert_eq!(log.matches("Accepted publickey").count(), 1, "{log}");
        assert_eq!(log.matches("Starting session:").count(), 1, "{log}");
    }
    assert!(!lab.host_lock_dir().exists(), "the lock was not released");
    // Both instances are this machine, as root: the markers of both went with the locks. (The
    // run's commands made the directory: its absence would be a failure too.)
    let left: Vec<String> = std::fs::read_dir("/root/.capstan/markers")
        .expect("the run's commands write markers there")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&format!("{run_id}.")))
        .collect();
    assert!(left.is_empty(), "markers left: {left:?}");
}

/// capstan's own brief commands reach the host bare, the playbook's under the wrapper: the lock
/// taken and released, the reach check and `exists` start no watcher process beside them (the
/// login shell runs the lock script and answers `test -e` itself), where an `h.run` that needs a
/// session of its own (one with input: the lock's script serves the others) gets the wrapper
/// that ends it with its controller. Seen from the host: an sshd `ForceCommand` logs every
/// command line it is sent, then runs it.
#[test]
fn capstans_own_brief_commands_reach_the_host_without_the_wrapper() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("commands.log");
    let logger = dir.path().join("log-command.sh");
    std::fs::write(
        &logger,
        format!(
            "#!/bin/sh\nprintf '%s\\n--end--\\n' \"$SSH_ORIGINAL_COMMAND\" >> '{}'\nexec /bin/sh -c \"$SSH_ORIGINAL_COMMAND\"\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&logger, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let lab = Lab::start_configured(1, &format!("ForceCommand {}", logger.display()));
    run_cli_on(
        &lab,
        dir.path(),
        "step(\"one\", || { let h = cluster().host(\"h1\"); if !h.exists(\"/\") { fail(\"no /\"); } h.run([\"true\"]); h.run([\"true\"], #{ stdin: \"x\" }); });\n",
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text
        .split("\n--end--\n")
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    let wrapped = |l: &str| l.contains("__cwatch");
    let locks: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains("capstan-host-lock:"))
        .collect();
    assert_eq!(
        locks.len(),
        1,
        "the lock taken, then released by the same script: {lines:#?}"
    );
    let prelude = capstan::transport::wrap::POSIX_PRELUDE;
    for l in &locks {
        // The login shell runs the script itself: its arguments set, then the script.
        let l = l
            .strip_prefix(prelude)
            .unwrap_or_else(|| panic!("zsh would run it unprepared: {l}"));
        assert!(
            l.starts_with("set -- take ") && l.lines().next().unwrap().ends_with(" hold"),
            "the lock script bare, holding the lock: {l}"
        );
        assert!(!wrapped(l), "{l}");
    }
    assert!(
        lines.contains(&"test -e /"),
        "`exists` is the login shell's test: {lines:#?}"
    );
    let runs: Vec<&&str> = lines.iter().filter(|l| wrapped(l)).collect();
    assert_eq!(
        runs.len(),
        1,
        "only the playbook's command is wrapped: {lines:#?}"
    );
    assert!(
        runs[0]
            .strip_prefix(prelude)
            .and_then(|r| r.lines().next())
            .is_some_and(|l| l.starts_with("set -- ") && l.ends_with(" true")),
        "{}",
        runs[0]
    );
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(!lab.host_lock_dir().exists(), "the lock was not released");
}
