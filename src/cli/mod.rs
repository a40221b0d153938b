//! The `capstan` command line: clap parsing, then calls into the library and renders reports.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use capstan::engine::Severity;
use capstan::report::{render_text, EventSink, JsonLines, Outcome, ProgressPrinter};
use capstan::{Error, HostBuilder, Inventory, Mode, Params, Playbook, RunReport, Scenario};
use clap::{Parser, Subcommand};

const EXIT_CODES: &str = "\
Exit codes:
  0   done
  1   the playbook failed (a command, a check, a wait or fail())
  2   bad input: usage, inventory, scenario, params, or a playbook that does not compile
  3   interrupted (Ctrl-C)
  4   a confirmation was declined, or needed with no terminal and no --yes
  70  internal error (a bug in capstan)";

#[derive(Debug, Parser)]
#[command(name = "capstan", version, about = "Run, check and simulate Rhai playbooks that upgrade database clusters", after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Print every action as it happens, not only failures.
    #[arg(short, long, global = true)]
    verbose: bool,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run a playbook against the hosts of an inventory (or `--check`: reads real, writes skipped).
    Run {
        /// A playbook file, or the name of a shipped playbook (see `capstan list`).
        playbook: String,
        /// Inventory file (TOML). Without it the playbook runs on one `local` host named localhost.
        #[arg(short, long)]
        inventory: Option<PathBuf>,
        /// A param, `-p name=value`; repeat for more.
        #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// Perform read-only actions for real; record the others and report what would change.
        #[arg(long)]
        check: bool,
        /// How many hosts `parallel` works on at once.
        #[arg(long, default_value_t = 16)]
        parallelism: usize,
        /// Grant every confirm() without asking.
        #[arg(long)]
        yes: bool,
        /// JSON lines on stdout: one event per line, then the report.
        #[arg(long)]
        json: bool,
    },
    /// Run a playbook against a simulated world: no network. With no arguments, the README example.
    Simulate {
        /// A playbook file or shipped name; omit it (and --scenario) for the built-in example.
        playbook: Option<String>,
        /// Scenario file (TOML): inventory, params, starting state.
        #[arg(short, long)]
        scenario: Option<PathBuf>,
        #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        #[arg(long, default_value_t = 16)]
        parallelism: usize,
        #[arg(long)]
        json: bool,
    },
    /// Compile and lint a playbook; touches nothing.
    Check {
        playbook: String,
        #[arg(long)]
        json: bool,
    },
    /// The shipped playbooks.
    List {
        #[arg(long)]
        json: bool,
    },
    /// A playbook's header and params.
    Describe {
        playbook: String,
        #[arg(long)]
        json: bool,
    },
    /// The script API reference (Markdown), generated from the engine.
    Docs {
        /// Write to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Editor definitions (`.d.rhai`) for the Rhai language server.
    Defs {
        #[arg(long)]
        out: PathBuf,
    },
}

fn parse_params(raw: &[String]) -> Result<Params, Error> {
    let mut out = Params::new();
    for p in raw {
        let Some((k, v)) = p.split_once('=') else {
            return Err(Error::Usage(format!("-p {p}: expected NAME=VALUE")));
        };
        if k.is_empty() {
            return Err(Error::Usage(format!("-p {p}: the name is empty")));
        }
        out.insert(k.to_string(), serde_json::Value::String(v.to_string()));
    }
    Ok(out)
}

fn sink(json: bool, verbose: bool) -> Arc<dyn EventSink> {
    if json {
        Arc::new(JsonLines::default())
    } else {
        Arc::new(ProgressPrinter::new(
            std::io::stderr().is_terminal(),
            verbose,
        ))
    }
}

/// Runs the playbook on a blocking thread while this one answers Ctrl-C.
fn execute(host: capstan::Host, pb: Playbook, params: Params) -> Result<RunReport, Error> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the runtime: {e}")))?;
    let cancel = host.cancel_handle();
    rt.block_on(async move {
        let job = tokio::task::spawn_blocking(move || host.run(&pb, &params));
        tokio::pin!(job);
        loop {
            tokio::select! {
                r = &mut job => return r.map_err(|e| Error::Internal(format!("the run panicked: {e}")))?,
                _ = tokio::signal::ctrl_c() => {
                    let first = !cancel.is_stopping();
                    cancel.cancel();
                    if first {
                        eprintln!("capstan: stopping at the next safe point; press Ctrl-C again to abort running commands");
                    } else {
                        eprintln!("capstan: aborting running commands");
                    }
                }
            }
        }
    })
}

fn finish(report: &RunReport, json: bool, plan: bool) -> i32 {
    if json {
        let line = serde_json::json!({ "event": "report", "report": report });
        println!("{line}");
    } else {
        print!("{}", render_text(report, plan));
    }
    match &report.outcome {
        Outcome::Succeeded => 0,
        Outcome::Interrupted { .. } => 3,
        Outcome::Failed { kind, error } => Error::Script {
            kind: *kind,
            located: error.clone(),
        }
        .exit_code(),
    }
}

/// Runs the command; returns the exit code.
pub fn main(cli: Cli) -> Result<i32, Error> {
    let verbose = cli.verbose;
    match cli.cmd {
        Cmd::Run {
            playbook,
            inventory,
            params,
            check,
            parallelism,
            yes,
            json,
        } => {
            let params = parse_params(&params)?;
            let pb = Playbook::load(&playbook)?;
            let inv = match inventory {
                Some(p) => Inventory::from_file(p)?,
                None => Inventory::localhost(),
            };
            let host = HostBuilder::new()
                .inventory(inv)
                .mode(if check { Mode::Check } else { Mode::Run })
                .parallelism(parallelism)
                .yes(yes)
                .events(sink(json, verbose))
                .build()?;
            let report = execute(host, pb, params)?;
            Ok(finish(&report, json, check))
        }
        Cmd::Simulate {
            playbook,
            scenario,
            params,
            parallelism,
            json,
        } => {
            let params = parse_params(&params)?;
            let (pb, sc) = match (playbook, scenario) {
                (None, None) => (
                    Playbook::from_source("examples/hello/playbook.rhai", capstan::demo::PLAYBOOK),
                    Scenario::from_str_at(
                        capstan::demo::SCENARIO,
                        "examples/hello/scenario.toml",
                        std::path::Path::new("."),
                    )?,
                ),
                (Some(p), Some(s)) => (Playbook::load(&p)?, Scenario::from_file(s)?),
                (Some(_), None) => {
                    return Err(Error::Usage(
                        "simulate PLAYBOOK needs --scenario FILE".into(),
                    ))
                }
                (None, Some(_)) => return Err(Error::Usage("--scenario needs a PLAYBOOK".into())),
            };
            if !json {
                if let Some(d) = &sc.description {
                    eprintln!("scenario: {d}");
                }
            }
            let host = HostBuilder::new()
                .scenario(sc)
                .parallelism(parallelism)
                .events(sink(json, verbose))
                .build()?;
            let report = execute(host, pb, params)?;
            Ok(finish(&report, json, true))
        }
        Cmd::Check { playbook, json } => {
            let pb = Playbook::load(&playbook)?;
            let host = HostBuilder::new().build()?;
            let diags = host.check(&pb)?;
            let errors = diags
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .count();
            if json {
                println!("{}", serde_json::to_string(&diags).unwrap_or_default());
            } else {
                for d in &diags {
                    let label = match d.severity {
                        Severity::Error => "error",
                        Severity::Warning => "warning",
                    };
                    eprintln!("{label}: {}\n", d.located.render());
                }
                eprintln!(
                    "{}: {errors} error(s), {} warning(s)",
                    pb.name,
                    diags.len() - errors
                );
            }
            Ok(if errors > 0 { 2 } else { 0 })
        }
        Cmd::List { json } => {
            let list: Vec<(String, String)> = capstan::host::shipped_playbooks()
                .iter()
                .map(|(n, _)| {
                    let pb = Playbook::shipped(n).expect("listed as shipped");
                    let first = pb.header().lines().next().unwrap_or("").to_string();
                    (n.to_string(), first)
                })
                .collect();
            if json {
                let v: Vec<_> = list
                    .iter()
                    .map(|(n, s)| serde_json::json!({"name": n, "summary": s}))
                    .collect();
                println!("{}", serde_json::Value::Array(v));
            } else {
                for (n, s) in list {
                    println!("{n:<16} {s}");
                }
            }
            Ok(0)
        }
        Cmd::Describe { playbook, json } => {
            let pb = Playbook::load(&playbook)?;
            let info = HostBuilder::new().build()?.describe(&pb)?;
            if json {
                println!("{}", serde_json::to_string(&info).unwrap_or_default());
            } else {
                println!("{}\n\n{}\n\nparams:", info.name, info.header);
                for p in &info.params {
                    let d = match (&p.required, &p.default) {
                        (true, _) => "required".to_string(),
                        (false, Some(v)) => format!("default {v}"),
                        (false, None) => String::new(),
                    };
                    println!("  {:<16} {:<20} {}", p.name, d, p.doc);
                }
            }
            Ok(0)
        }
        Cmd::Docs { out } => {
            let host = HostBuilder::new().build()?;
            let md = capstan::host::reference_markdown(&host.reference_engine());
            match out {
                Some(p) => std::fs::write(&p, md).map_err(|e| Error::Io { path: p, source: e })?,
                None => print!("{md}"),
            }
            Ok(0)
        }
        Cmd::Defs { out } => {
            let host = HostBuilder::new().build()?;
            capstan::host::write_definitions(&host.reference_engine(), &out).map_err(|e| {
                Error::Io {
                    path: out.clone(),
                    source: e,
                }
            })?;
            eprintln!("wrote editor definitions to {}", out.display());
            Ok(0)
        }
    }
}
