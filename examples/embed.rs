//! A program that embeds capstan: its own primitives next to the built-in ones.
//!
//! It adds `change_ticket(summary)` (a call into the embedder's own systems) and a method
//! `h.uptime_secs()` that acts on a host through the run's executor, so it obeys the mode like
//! every built-in primitive: it is a read, so it runs even under check mode. The playbook runs in
//! check mode on this machine, so the one write it asks for is reported and not made.
//!
//! Run it with `cargo run --example embed`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use capstan::action::{Action, Outcome};
use capstan::api::HostHandle;
use capstan::transport::Command;
use capstan::{HostBuilder, Inventory, Mode, Params, Playbook};
use rhai::EvalAltResult;

const PLAYBOOK: &str = r#"
let ticket = change_ticket("upgrade web tier");
log(`change ticket ${ticket} opened: upgrade web tier`);
let h = cluster().host("localhost");
log(`localhost uptime: ${h.uptime_secs()} s`);
h.write_file("/tmp/capstan-embed-note", `${ticket}\n`);
"#;

/// Seconds since boot, read from /proc/uptime through the executor.
fn uptime_secs(h: &mut HostHandle) -> Result<i64, Box<EvalAltResult>> {
    let out = h.perform(Action::Exec {
        command: Command::Argv(vec!["cat".into(), "/proc/uptime".into()]),
        read_only: true,
        env: Default::default(),
        cwd: None,
        stdin: None,
        timeout: None,
        secret_files: Default::default(),
    })?;
    let Outcome::Exec(o) = out else {
        return Err("uptime: the executor skipped a read".into());
    };
    let text = String::from_utf8_lossy(&o.stdout);
    let secs: f64 = text
        .split_whitespace()
        .next()
        .and_then(|t| t.parse().ok())
        .ok_or("uptime: unexpected /proc/uptime")?;
    Ok(secs as i64)
}

fn main() {
    let tickets = Arc::new(AtomicU32::new(1000));
    let host = HostBuilder::new()
        .inventory(Inventory::localhost())
        .mode(Mode::Check)
        .register(move |engine| {
            let t = tickets.clone();
            engine.register_fn("change_ticket", move |_summary: &str| {
                format!("CHG-{}", t.fetch_add(1, Ordering::SeqCst) + 1)
            });
            engine.register_fn("uptime_secs", uptime_secs);
        })
        .build()
        .expect("a valid host");
    let report = match host.run(
        &Playbook::from_source("embedded.rhai", PLAYBOOK),
        &Params::new(),
    ) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {}", e.render());
            std::process::exit(e.exit_code());
        }
    };
    print!("{}", capstan::report::render_text(&report, false));
    std::process::exit(if report.succeeded() { 0 } else { 1 });
}
