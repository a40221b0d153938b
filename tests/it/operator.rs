//! What an operator meets in a maintenance window: a host down among several is found before
//! anything changes, in a run and under `--check`.

use crate::journal::Cluster;
use crate::support::free_port;

/// Every file under `root`, with its content: what a host's tree looks like.
fn tree(root: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((
                    p.display().to_string(),
                    std::fs::read(&p).unwrap_or_default(),
                ));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_host_down_among_three_stops_the_run_before_any_change() {
    let c = Cluster::new();
    // h3's port has nothing listening.
    let down = free_port();
    let inv = c.inventory(
        "inv.toml",
        &[1, 2],
        &format!(
            "\n[hosts.h3]\nport = {down}\nconnect_timeout = \"3s\"\nvars = {{ root = \"{}\" }}\n",
            c.root("h3").display()
        ),
    );
    let pb = c.write(
        "each.rhai",
        r#"
for h in cluster().hosts() {
    step(`change ${h.name}`, || h.write_file(h.path("changed"), "yes"));
}
"#,
    );
    let (inv, pb) = (inv.to_str().unwrap(), pb.to_str().unwrap());
    std::fs::create_dir_all(c.root("h3")).unwrap();
    for h in ["h1", "h2"] {
        std::fs::write(c.root(h).join("conf"), "old").unwrap();
    }
    let before: Vec<_> = ["h1", "h2"].iter().map(|h| tree(&c.root(h))).collect();

    for mode in [&[][..], &["--check"][..]] {
        let mut args = vec!["run", pb, "-i", inv];
        args.extend_from_slice(mode);
        let out = c.capstan(&args);
        let said = format!("{}{}", out.stdout, out.stderr);
        assert_eq!(out.code, 1, "{mode:?}: {said}");
        assert!(
            said.contains("1 of 3 host(s) cannot be reached, so nothing was changed"),
            "{mode:?}: {said}"
        );
        assert!(
            said.contains(&format!("h3: connection refused by 127.0.0.1:{down}")),
            "{mode:?}: {said}"
        );
        let after: Vec<_> = ["h1", "h2"].iter().map(|h| tree(&c.root(h))).collect();
        assert_eq!(before, after, "{mode:?}: a host was changed");
    }

    // Turned off, the run changes h1 and h2 and fails at h3, as before.
    let out = c.capstan(&["run", pb, "-i", inv, "--no-reach-check"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert_eq!(c.read("h1", "changed"), "yes");
    assert_eq!(c.read("h2", "changed"), "yes");
}

/// The text report counts a command that failed as failed, even one the script allowed, and a
/// run that succeeded keeps its undos for `capstan rollback` rather than leaving them "pending".
#[test]
fn the_text_report_counts_failed_commands_and_keeps_undos_of_a_success() {
    let d = tempfile::tempdir().unwrap();
    let inv = d.path().join("inv.toml");
    std::fs::write(
        &inv,
        "[hosts.a]\ntransport = \"local\"\n[hosts.b]\ntransport = \"local\"\n",
    )
    .unwrap();
    let pb = d.path().join("p.rhai");
    std::fs::write(
        &pb,
        format!(
            r#"
step("probe", || {{
    cluster().host("a").shell("exit 3", #{{ allow_fail: true }});
    cluster().host("b").shell("true");
    cluster().host("b").write_file("{}", "x");
}});
"#,
            d.path().join("f").display()
        ),
    )
    .unwrap();
    let out = crate::support::capstan_in(
        d.path(),
        &[
            "run",
            pb.to_str().unwrap(),
            "-i",
            inv.to_str().unwrap(),
            "--journal",
            "j.db",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let table: Vec<&str> = out
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("per host"))
        .skip(2) // the title, then the header row
        .take(2)
        .collect();
    let cols = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    assert_eq!(cols(table[0]), ["a", "1", "1", "1"], "{}", out.stdout);
    assert_eq!(cols(table[1])[3], "0", "{}", out.stdout);
    assert!(
        out.stdout.contains("undos (kept for `capstan rollback"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains(" pending "), "{}", out.stdout);
}

/// A one-step playbook whose wait polls for `FLAG` every second.
const WAIT_FOR_A_FLAG: &str = r#"
let h = cluster().hosts()[0];
step("wait for the flag", || {
    wait::poll(#{ timeout: 60, every: 1, what: "the flag file" }, || h.exists("FLAG"));
});
"#;

/// Writes the playbook and sets the flag after `after`; returns the playbook's path.
fn flag_playbook(dir: &std::path::Path, after: std::time::Duration) -> std::path::PathBuf {
    let flag = dir.join("flag");
    let pb = dir.join("wait.rhai");
    std::fs::write(&pb, WAIT_FOR_A_FLAG.replace("FLAG", flag.to_str().unwrap())).unwrap();
    std::thread::spawn(move || {
        std::thread::sleep(after);
        std::fs::write(flag, "").unwrap();
    });
    pb
}

#[test]
fn on_a_terminal_the_running_wait_shows_its_elapsed_time_changing() {
    let d = tempfile::tempdir().unwrap();
    let pb = flag_playbook(d.path(), std::time::Duration::from_millis(3500));
    // `script` gives capstan a pseudo-terminal and copies what it draws to our pipe.
    let cmd = format!(
        "CAPSTAN_JOURNAL={} {} run {}",
        d.path().join("j.db").display(),
        env!("CARGO_BIN_EXE_capstan"),
        pb.display()
    );
    let out = std::process::Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .env("TERM", "xterm")
        .env_remove("NO_COLOR")
        .output()
        .expect("script(1) from util-linux");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{screen}");
    // The status line is redrawn in place: its elapsed time goes 0s, 1s, 2s, 3s.
    let mut shown: Vec<u32> = screen
        .match_indices("wait for the flag  ")
        .filter_map(|(i, m)| {
            let rest = &screen[i + m.len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            rest[digits.len()..]
                .starts_with('s')
                .then(|| digits.parse().ok())
                .flatten()
        })
        .collect();
    shown.dedup();
    assert!(shown.len() >= 3, "elapsed times drawn: {shown:?}\n{screen}");
    assert!(shown.windows(2).all(|w| w[0] < w[1]), "{shown:?}");
    // Under it, what the step waits for: the wait's name, its attempt and the time left.
    assert!(
        screen.contains("waiting for the flag file (attempt 2, gives up in 5"),
        "{screen}"
    );
    // The lines printed above it stay: the step's start and end, and the report.
    assert!(screen.contains("▶\x1b[0m wait for the flag"), "{screen}");
    assert!(screen.contains("✓\x1b[0m wait for the flag ("), "{screen}");
    assert!(
        screen.contains("steps\r\n  ok  wait for the flag"),
        "{screen}"
    );
}

#[test]
fn in_a_log_a_heartbeat_line_says_what_the_run_waits_for() {
    let d = tempfile::tempdir().unwrap();
    let pb = flag_playbook(d.path(), std::time::Duration::from_millis(3500));
    let out =
        crate::support::capstan_in(d.path(), &["run", pb.to_str().unwrap(), "--heartbeat", "1"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let beats: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("… ") && l.contains("into step `wait for the flag`"))
        .collect();
    assert!(beats.len() >= 2, "{}", out.stderr);
    assert!(
        beats
            .iter()
            .any(|l| l.contains(": waiting for the flag file (attempt ")),
        "{beats:?}"
    );
    // No terminal: no status line, no escape sequences.
    assert!(!out.stderr.contains('\x1b'), "{}", out.stderr);
    // A wait for a port is shown too: its first try, then every 2 s.
    let port = free_port();
    let pb = d.path().join("port.rhai");
    std::fs::write(
        &pb,
        format!(
            "step(\"wait for the port\", || cluster().hosts()[0].wait_port({port}, #{{ timeout: 3 }}));\n"
        ),
    )
    .unwrap();
    let out =
        crate::support::capstan_in(d.path(), &["run", pb.to_str().unwrap(), "--heartbeat", "1"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.lines().any(|l| l.starts_with("… ")
            && l.contains(&format!(
                "into step `wait for the port`: waiting for port {port} on localhost"
            ))),
        "{}",
        out.stderr
    );
    // 0 turns it off.
    let pb = flag_playbook(d.path(), std::time::Duration::from_millis(1500));
    std::fs::remove_file(d.path().join("flag")).ok();
    let out =
        crate::support::capstan_in(d.path(), &["run", pb.to_str().unwrap(), "--heartbeat", "0"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stderr.contains("… "), "{}", out.stderr);
}
