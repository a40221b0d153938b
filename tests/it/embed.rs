//! examples/embed.rs: a program that embeds capstan and adds a primitive of its own.

use crate::support::repo;

#[test]
fn embedding_example_builds_and_runs() {
    // `cargo test` builds the examples next to the test binaries.
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_capstan"))
        .parent()
        .unwrap()
        .join("examples/embed");
    assert!(
        exe.exists(),
        "examples/embed was not built at {}",
        exe.display()
    );
    let out = std::process::Command::new(&exe)
        .current_dir(repo())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("change ticket CHG-1001 opened: upgrade web tier"),
        "{stdout}"
    );
    assert!(stdout.contains("localhost uptime:"), "{stdout}");
    assert!(stdout.contains("would change (1 action(s)"), "{stdout}");
}
