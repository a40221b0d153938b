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
        .skip(1)
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
