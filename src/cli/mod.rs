//! The `capstan` command line: clap parsing, then calls into the library and renders reports.

use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::sync::Arc;

use capstan::engine::Severity;
use capstan::host::OnFailure;
use capstan::inventory::SshConfigSource;
use capstan::journal::{format_unix_ms, Journal, JournalAt, RunRow, RunStatus};
use capstan::report::{write_text, EventSink, JsonLines, Outcome, ProgressPrinter};
use capstan::{Error, HostBuilder, Inventory, Mode, Params, Playbook, RunReport, Scenario};
use clap::{Args, Parser, Subcommand, ValueEnum};
use clap_complete::engine::{ArgValueCompleter, CompletionCandidate};

mod fds;
mod inv;

const EXIT_CODES: &str = "\
Exit codes:
  0   done
  1   the playbook failed (a command, a check, a wait or fail())
  2   bad input: usage, inventory, scenario, params, or a playbook that does not compile
  3   interrupted (Ctrl-C): resumable with `capstan resume RUN`
  4   a confirmation was declined, or needed with no terminal and no --yes
  5   refused: another run holds some of the hosts (the message names it)
  6   the run journal cannot be opened or written
  70  internal error (a bug in capstan)";

#[derive(Debug, Parser)]
#[command(name = "capstan", version, about = "Run, check and simulate Rhai playbooks that upgrade database clusters", after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Print every action as it happens, not only failures.
    #[arg(short, long, global = true)]
    verbose: bool,
    /// The run journal: a SQLite FILE, or a server shared by control machines,
    /// mysql://USER@HOST:PORT/DB (MariaDB, MySQL, OceanBase; password in
    /// CAPSTAN_JOURNAL_PASSWORD, or ?password_env=NAME / ?password_file=PATH; TLS with ?tls=true
    /// or ?tls_ca=PEM). Default: $XDG_STATE_HOME/capstan/journal.db, else
    /// ~/.local/state/capstan/journal.db.
    #[arg(long, global = true, env = "CAPSTAN_JOURNAL", value_name = "FILE|URL")]
    journal: Option<std::ffi::OsString>,
    /// The OpenSSH client configuration for SSH hosts, as `ssh -F`: a FILE, or `none`. Default:
    /// the inventory's `ssh_config`, else ~/.ssh/config then /etc/ssh/ssh_config. The
    /// inventory's own settings win over the file's.
    #[arg(short = 'F', long = "ssh-config", global = true, value_name = "FILE")]
    ssh_config: Option<PathBuf>,
    /// When stderr is not a terminal (a log, `nohup`, systemd): a line every SECS saying which
    /// step runs and what it waits for; 0 turns it off. On a terminal a status line is redrawn
    /// instead.
    #[arg(
        long,
        global = true,
        env = "CAPSTAN_HEARTBEAT",
        value_name = "SECS",
        default_value_t = 30
    )]
    heartbeat: u64,
}

/// How progress is shown on stderr.
#[derive(Debug, Clone, Copy)]
struct Shown {
    verbose: bool,
    /// 0: no heartbeat.
    heartbeat_secs: u64,
}

/// `-F FILE` or `-F none`.
fn ssh_config_source(f: Option<PathBuf>) -> Option<SshConfigSource> {
    f.map(|p| {
        if p.as_os_str() == "none" {
            SshConfigSource::None
        } else {
            SshConfigSource::File(p)
        }
    })
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OnFailureArg {
    /// Leave the changes; resume or roll back later.
    Stop,
    /// Run every undo the run registered, newest first.
    Rollback,
    /// Ask on the terminal (`--yes` grants it).
    Ask,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OnRunningArg {
    /// Wait for it to end (up to --running-timeout), then go on.
    Wait,
    /// Kill its process group, then go on.
    Kill,
}

/// What a resume or rollback does with commands the run's earlier attempt left running.
#[derive(Debug, Args)]
struct FenceOpts {
    /// A command of the run's earlier attempt still running on a host (its capstan was killed):
    /// wait for it or kill it, before anything else touches the hosts.
    #[arg(long, value_enum, default_value = "wait")]
    on_running: OnRunningArg,
    /// Seconds to wait for such a command before refusing (exit 5).
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    running_timeout: u64,
}

/// `--parallelism`: 0 would run nothing.
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Options shared by the commands that act on real hosts.
#[derive(Debug, Args)]
struct RealOpts {
    /// How many hosts `parallel` works on at once.
    #[arg(long, default_value_t = 16, value_parser = at_least_one)]
    parallelism: usize,
    /// Grant every confirm() without asking.
    #[arg(long)]
    yes: bool,
    /// JSON lines on stdout: one event per line, then the report.
    #[arg(long)]
    json: bool,
    /// What a failure does with the changes made so far.
    #[arg(long, value_enum, default_value = "stop")]
    on_failure: OnFailureArg,
    /// Take over locks left by a run whose process is gone (killed): the journal's, and a
    /// host's maintenance lock once its lease has expired.
    #[arg(long)]
    take_over_lock: bool,
    #[command(flatten)]
    fence: FenceOpts,
    /// Do not connect to every SSH host before the first change (for a playbook that adds
    /// hosts as it goes, or hosts known to be down that the run will not touch).
    #[arg(long)]
    no_reach_check: bool,
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
        /// Continue this stopped run: steps it finished are skipped.
        #[arg(long, value_name = "RUN", add = ArgValueCompleter::new(run_ids))]
        resume: Option<String>,
        /// With --resume: go on even though the playbook or inventory changed.
        #[arg(long, requires = "resume")]
        force: bool,
        #[command(flatten)]
        opts: RealOpts,
    },
    /// Continue a stopped run (killed, interrupted or failed) from the step that stopped it.
    Resume {
        /// The run's id (`capstan runs`).
        #[arg(add = ArgValueCompleter::new(run_ids))]
        run: String,
        /// The playbook, if not the file the run recorded.
        #[arg(long)]
        playbook: Option<String>,
        /// The inventory, if not the file the run recorded.
        #[arg(short, long)]
        inventory: Option<PathBuf>,
        /// Params to change; the others are the ones the run recorded.
        #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// Go on even though the playbook or inventory changed (the differences are shown without it).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        opts: RealOpts,
    },
    /// Undo what a stopped run changed: its undos, newest first, then its guards.
    Rollback {
        /// The run's id (`capstan runs`).
        #[arg(add = ArgValueCompleter::new(run_ids))]
        run: String,
        /// The inventory, if not the file the run recorded.
        #[arg(short, long)]
        inventory: Option<PathBuf>,
        /// Params to change (one that held a secret must be given again).
        #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        #[arg(long)]
        json: bool,
        /// Take over host locks left by another run whose process is gone (killed).
        #[arg(long)]
        take_over_lock: bool,
        #[command(flatten)]
        fence: FenceOpts,
    },
    /// Past runs from the journal, newest first; guards still set are shown in red.
    Runs {
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// One run from the journal: steps, actions per host, undos, guards, errors.
    Report {
        /// The run's id (`capstan runs`).
        #[arg(add = ArgValueCompleter::new(run_ids))]
        run: String,
        /// List every action, in order, grouped by step.
        #[arg(long)]
        plan: bool,
        #[arg(long)]
        json: bool,
        /// Also write the run as a self-contained HTML page (timeline per host, steps, undos).
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
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
        #[arg(long, default_value_t = 16, value_parser = at_least_one)]
        parallelism: usize,
        #[arg(long)]
        json: bool,
        /// Make an action fail: `[HOST:]PATTERN[#N]`, the Nth (default first) action on HOST
        /// whose plan line matches PATTERN (`tablet2:start`, `app2:*app-ctl start*`). Repeatable;
        /// adds to the scenario's [[faults]].
        #[arg(long = "fail", value_name = "[HOST:]PATTERN[#N]")]
        fail: Vec<String>,
        /// What a failure does: rehearse the rollback (default) or stop and show the state left.
        #[arg(long, value_enum, default_value = "rollback")]
        on_failure: OnFailureArg,
        /// Also write a self-contained HTML report (timeline per host, availability, fault and
        /// rollback) to this file.
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
        /// Take host locks (a scenario's `host_lock`) whose lease has expired, as a run would.
        #[arg(long)]
        take_over_lock: bool,
    },
    /// Compile and lint a playbook; touches nothing.
    Check {
        playbook: String,
        /// Also check the playbook against this inventory: a `group("x")` it lacks is an error.
        #[arg(short, long)]
        inventory: Option<PathBuf>,
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
    /// Journals: `copy` moves runs between a file and a server.
    Journal {
        #[command(subcommand)]
        cmd: JournalCmd,
    },
    /// Inventories: `show` prints how each host is reached, and where each setting came from.
    Inventory {
        #[command(subcommand)]
        cmd: InventoryCmd,
    },
    /// The shell completion script: `source <(capstan completions bash)`. It completes
    /// subcommands, options and the run ids of `resume`, `rollback` and `report` (read from the
    /// journal, `CAPSTAN_JOURNAL` or the default, at each completion).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: String,
    },
    /// The manual page (roff), generated from these commands' help: `capstan man | man -l -`.
    Man {
        /// Write every page instead (capstan.1 and one per subcommand, capstan-run.1, ...) into
        /// this directory, e.g. /usr/local/share/man/man1.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum JournalCmd {
    /// Copies runs from one journal to another, row for row: a laptop's file to the team's
    /// server before another machine resumes a run, or a server's runs to a file to keep. A run
    /// the destination has is left alone, and so is one still running; each run is copied in
    /// one transaction. FROM and TO are file paths or mysql:// addresses, as --journal.
    Copy {
        #[arg(value_name = "FROM")]
        from: std::ffi::OsString,
        #[arg(value_name = "TO")]
        to: std::ffi::OsString,
        /// Only this run (repeatable); default every run.
        #[arg(long = "run", value_name = "RUN")]
        runs: Vec<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum InventoryCmd {
    /// Every host as capstan will reach it, ~/.ssh/config applied: address, port, user,
    /// bastions, authentication, host key checking, timeouts, and where each value came from
    /// (the host, a group, [defaults], an ssh_config file, or built in). Connects to nothing.
    Show {
        /// Inventory file (TOML).
        #[arg(short, long)]
        inventory: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// An Ansible inventory (INI `.ini` or YAML `.yml`/`.yaml`) as capstan TOML: hosts, groups
    /// (children flattened), ranges expanded, connection variables mapped, vars resolved per
    /// host with Ansible's precedence. What capstan cannot map is listed on stderr and in the
    /// file's header, by name. (`-i hosts.ini` also works directly wherever an inventory goes.)
    Convert {
        /// The Ansible inventory.
        #[arg(short, long)]
        inventory: PathBuf,
        /// Write the TOML here instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

/// Exit 0 once a text went to stdout, also when its reader stopped early (`capstan man | head`).
fn stdout_written(r: std::io::Result<()>) -> Result<i32, Error> {
    match r {
        Ok(()) => Ok(0),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        Err(e) => Err(Error::Usage(format!("cannot write to stdout: {e}"))),
    }
}

/// The runs of the journal whose id starts with what was typed, newest first, each with its
/// playbook and status: the shells' completion of a run id. The journal is only read: a
/// completion never creates one.
fn run_ids(typed: &std::ffi::OsStr) -> Vec<CompletionCandidate> {
    let typed = typed.to_string_lossy();
    let journal = match JournalAt::from_option(None) {
        Ok(JournalAt::File(path)) if path.exists() => Journal::open(path),
        Ok(at @ JournalAt::Server(_)) => Journal::open_at(&at),
        _ => return Vec::new(),
    };
    let Ok(journal) = journal else {
        return Vec::new();
    };
    journal
        .runs(200)
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.id.starts_with(typed.as_ref()))
        .map(|r| {
            CompletionCandidate::new(r.id)
                .help(Some(format!("{} {}", r.playbook, r.status.as_str()).into()))
        })
        .collect()
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

/// Whether to colour a stream: only a terminal, and not when `NO_COLOR` is set to anything
/// (no-color.org). Logs, pipes and CI get plain text.
pub fn colour(is_terminal: bool) -> bool {
    is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn sink(json: bool, shown: Shown) -> Arc<dyn EventSink> {
    if json {
        return Arc::new(JsonLines::default());
    }
    sink_text(shown)
}

/// A simulation's events: batched as JSON (nothing follows a rehearsal live, and it sends them
/// by the hundred thousand), as text as a run's.
fn simulation_sink(json: bool, shown: Shown) -> Arc<dyn EventSink> {
    if json {
        return Arc::new(JsonLines::batched());
    }
    sink_text(shown)
}

fn sink_text(shown: Shown) -> Arc<dyn EventSink> {
    // The redrawn status line is cursor control: only where colour is welcome too (a terminal,
    // no NO_COLOR); elsewhere the heartbeat says the run is alive.
    let styled = colour(std::io::stderr().is_terminal());
    let p = ProgressPrinter::new(styled, shown.verbose);
    Arc::new(match (styled, shown.heartbeat_secs) {
        (true, _) => p.on_terminal(),
        (false, 0) => p,
        (false, secs) => p.heartbeat(std::time::Duration::from_secs(secs)),
    })
}

fn open_journal(given: Option<std::ffi::OsString>) -> Result<Arc<Journal>, Error> {
    let at = JournalAt::from_option(given.as_deref())?;
    Ok(Arc::new(Journal::open_at(&at)?))
}

fn on_failure(a: OnFailureArg) -> OnFailure {
    match a {
        OnFailureArg::Stop => OnFailure::Stop,
        OnFailureArg::Rollback => OnFailure::Rollback,
        OnFailureArg::Ask => OnFailure::Ask,
    }
}

fn real_host(
    mut inv: Inventory,
    mode: Mode,
    o: &RealOpts,
    ssh_config: Option<&SshConfigSource>,
    journal: Arc<Journal>,
    shown: Shown,
) -> Result<capstan::Host, Error> {
    inv.apply_ssh_config(ssh_config)?;
    // A session per SSH host for the whole run, and pipes per command running: as many files
    // as the hard limit allows, and no more hosts at once than fit (a host past the limit
    // would fail with "too many open files" in the middle of the run).
    let ssh_hosts = inv
        .hosts
        .iter()
        .filter(|h| h.transport == capstan::inventory::TransportKind::Ssh)
        .count();
    let parallelism = match fds::fit(o.parallelism, ssh_hosts, fds::raise()) {
        fds::Fit::Asked => o.parallelism,
        fds::Fit::Fewer(n, why) => {
            eprintln!("capstan: {why}");
            n
        }
        // The reach check connects to every host before any change: refuse now, nothing done.
        fds::Fit::NoRoom(why) if !o.no_reach_check => return Err(Error::Usage(why)),
        fds::Fit::NoRoom(why) => {
            eprintln!("capstan: {why}");
            1
        }
    };
    HostBuilder::new()
        .inventory(inv)
        .mode(mode)
        .parallelism(parallelism)
        .yes(o.yes)
        .on_failure(on_failure(o.on_failure))
        .take_over_lock(o.take_over_lock)
        .on_running(match o.fence.on_running {
            OnRunningArg::Wait => capstan::host::OnRunning::Wait,
            OnRunningArg::Kill => capstan::host::OnRunning::Kill,
        })
        .running_timeout(std::time::Duration::from_secs(o.fence.running_timeout))
        .reach_check(!o.no_reach_check)
        .journal(journal)
        .events(sink(o.json, shown))
        .build()
}

/// The inventory a journaled run used: `-i`, else the file it recorded.
fn run_inventory(given: Option<PathBuf>, row: &RunRow) -> Result<Inventory, Error> {
    match (given, &row.inventory_path) {
        (Some(p), _) => Inventory::from_file(p),
        (None, Some(p)) => Inventory::from_file(p),
        (None, None) if row.inventory_id == Inventory::localhost().identity() => {
            Ok(Inventory::localhost())
        }
        (None, None) => Err(Error::Usage(format!(
            "run {} recorded no inventory file; give it with -i",
            row.id
        ))),
    }
}

/// Runs the playbook on a blocking thread while this one answers Ctrl-C.
fn write_html(path: &std::path::Path, report: &RunReport) -> Result<(), Error> {
    std::fs::write(path, capstan::report::render_html(report))
        .map_err(|e| Error::Usage(format!("cannot write {}: {e}", path.display())))?;
    eprintln!("capstan: HTML report written to {}", path.display());
    Ok(())
}

fn execute(host: capstan::Host, pb: Playbook, params: Params) -> Result<RunReport, Error> {
    in_background(move |h: &capstan::Host| h.run(&pb, &params), host)
}

/// Runs `job` on a blocking thread while this one answers Ctrl-C: the first stops at the next
/// step boundary, the second aborts running commands.
fn in_background(
    job: impl FnOnce(&capstan::Host) -> Result<RunReport, Error> + Send + 'static,
    host: capstan::Host,
) -> Result<RunReport, Error> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the runtime: {e}")))?;
    let cancel = host.cancel_handle();
    rt.block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        // SIGTERM (systemd, `timeout`, CI) and SIGHUP (the operator's SSH session dropped) count
        // as Ctrl-C: the first stops at the next step boundary, the second kills running
        // commands. Messages go out without panicking on a terminal that hung up.
        let mut term = signal(SignalKind::terminate())
            .map_err(|e| Error::Internal(format!("cannot watch SIGTERM: {e}")))?;
        let mut hup = signal(SignalKind::hangup())
            .map_err(|e| Error::Internal(format!("cannot watch SIGHUP: {e}")))?;
        let job = tokio::task::spawn_blocking(move || job(&host));
        tokio::pin!(job);
        loop {
            let what = tokio::select! {
                r = &mut job => return r.map_err(|e| Error::Internal(format!("the run panicked: {e}")))?,
                _ = tokio::signal::ctrl_c() => "Ctrl-C",
                _ = term.recv() => "SIGTERM",
                _ = hup.recv() => "SIGHUP",
            };
            let first = !cancel.is_stopping();
            cancel.cancel();
            let mut err = std::io::stderr().lock();
            let _ = if first {
                writeln!(err, "capstan: {what}: stopping after the current step (guards are restored); a second signal (or Ctrl-C) aborts running commands")
            } else {
                writeln!(err, "capstan: {what}: aborting running commands")
            };
        }
    })
}

fn finish(report: &RunReport, json: bool, plan: bool) -> i32 {
    if json {
        // Streamed, not built as a `serde_json::Value` first: a report of a large run is big.
        #[derive(serde::Serialize)]
        struct Line<'a> {
            event: &'static str,
            report: &'a RunReport,
        }
        // Buffered: stdout is line-buffered, and serde writes a report in thousands of small
        // pieces (each a lock and a search for a newline).
        let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
        let line = Line {
            event: "report",
            report,
        };
        if serde_json::to_writer(&mut out, &line).is_ok() {
            use std::io::Write;
            let _ = writeln!(out);
            let _ = out.flush();
        }
    } else {
        // Not `print!`: after a hang-up (SIGHUP) the terminal is gone and print! would panic.
        // Written as it is made: a large rehearsal's report is never one string.
        let _ = write_text(report, plan, &mut std::io::stdout().lock());
    }
    match &report.outcome {
        Outcome::Succeeded if report.status == RunStatus::RollbackIncomplete => 1,
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
    let shown = Shown {
        verbose: cli.verbose,
        heartbeat_secs: cli.heartbeat,
    };
    let journal_path = cli.journal;
    let ssh_config = ssh_config_source(cli.ssh_config);
    let ssh_config = ssh_config.as_ref();
    match cli.cmd {
        Cmd::Run {
            playbook,
            inventory,
            params,
            check,
            resume,
            force,
            opts,
        } => {
            let params = parse_params(&params)?;
            let pb = Playbook::load(&playbook)?;
            let inv = match inventory {
                Some(p) => Inventory::from_file(p)?,
                None => Inventory::localhost(),
            };
            let mode = if check { Mode::Check } else { Mode::Run };
            let host = real_host(
                inv,
                mode,
                &opts,
                ssh_config,
                open_journal(journal_path)?,
                shown,
            )?;
            let report = match resume {
                Some(id) => in_background(move |h| h.resume(&id, &pb, &params, force), host)?,
                None => execute(host, pb, params)?,
            };
            Ok(finish(&report, opts.json, check))
        }
        Cmd::Resume {
            run,
            playbook,
            inventory,
            params,
            force,
            opts,
        } => {
            let params = parse_params(&params)?;
            let journal = open_journal(journal_path)?;
            let row = journal.run(&run)?;
            let pb = match playbook {
                Some(p) => Playbook::load(&p)?,
                None => Playbook::reload(&row)?,
            };
            let inv = run_inventory(inventory, &row)?;
            let host = real_host(inv, row.mode, &opts, ssh_config, journal, shown)?;
            let report = in_background(move |h| h.resume(&run, &pb, &params, force), host)?;
            Ok(finish(&report, opts.json, false))
        }
        Cmd::Rollback {
            run,
            inventory,
            params,
            yes,
            json,
            take_over_lock,
            fence,
        } => {
            let journal = open_journal(journal_path)?;
            let row = journal.run(&run)?;
            let question = format!(
                "Roll back run {run} ({}, {}): {} undo(s) pending, guards set: {}?",
                row.playbook,
                row.status.as_str(),
                row.undos_pending,
                if row.guards_set.is_empty() {
                    "none".to_string()
                } else {
                    row.guards_set.join(", ")
                }
            );
            if !yes && !ask(&question)? {
                return Ok(4);
            }
            let inv = run_inventory(inventory, &row)?;
            let opts = RealOpts {
                parallelism: 1,
                yes: true,
                json,
                on_failure: OnFailureArg::Stop,
                take_over_lock,
                fence,
                no_reach_check: true,
            };
            let params = parse_params(&params)?;
            let host = real_host(inv, Mode::Run, &opts, ssh_config, journal, shown)?;
            let report = in_background(move |h| h.rollback(&run, &params), host)?;
            Ok(finish(&report, json, true))
        }
        Cmd::Runs { limit, json } => {
            let journal = open_journal(journal_path)?;
            let runs = journal.runs(limit)?;
            if json {
                println!("{}", serde_json::to_string(&runs).unwrap_or_default());
            } else {
                print!(
                    "{}",
                    render_runs(&runs, colour(std::io::stdout().is_terminal()))
                );
            }
            Ok(0)
        }
        Cmd::Report {
            run,
            plan,
            json,
            html,
        } => {
            let journal = open_journal(journal_path)?;
            let report = journal.report(&run)?;
            if let Some(path) = html {
                write_html(&path, &report)?;
            }
            if json {
                println!("{}", serde_json::to_string(&report).unwrap_or_default());
            } else {
                let _ = write_text(&report, plan, &mut std::io::stdout().lock());
            }
            Ok(0)
        }
        Cmd::Simulate {
            playbook,
            scenario,
            params,
            parallelism,
            json,
            fail,
            on_failure: fail_mode,
            html,
            take_over_lock,
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
            let mut sc = sc;
            for f in &fail {
                sc.add_fault(f)?;
            }
            if !json {
                if let Some(d) = &sc.description {
                    eprintln!("scenario: {d}");
                }
            }
            // A simulation is a rehearsal: it is journaled in memory only.
            let host = HostBuilder::new()
                .scenario(sc)
                .parallelism(parallelism)
                .on_failure(on_failure(fail_mode))
                .take_over_lock(take_over_lock)
                .yes(true)
                .events(simulation_sink(json, shown))
                .build()?;
            let report = execute(host, pb, params)?;
            if let Some(path) = html {
                write_html(&path, &report)?;
            }
            let code = finish(&report, json, true);
            // A fault asked for that never fired: the rehearsal did not rehearse it.
            let unfired = report
                .simulation
                .as_ref()
                .map_or(&[][..], |s| s.unfired.as_slice());
            if !unfired.is_empty() {
                let _ = writeln!(
                    std::io::stderr().lock(),
                    "capstan: {} fault(s) never fired, so this simulation did not rehearse them:\n  {}",
                    unfired.len(),
                    unfired.join("\n  ")
                );
                return Ok(if code == 0 { 1 } else { code });
            }
            Ok(code)
        }
        Cmd::Journal {
            cmd:
                JournalCmd::Copy {
                    from,
                    to,
                    runs,
                    json,
                },
        } => {
            let from = Journal::open_at(&JournalAt::parse(&from)?)?;
            let to = Journal::open_at(&JournalAt::parse(&to)?)?;
            let done = from.copy_runs(&to, &runs)?;
            if json {
                println!("{}", serde_json::to_string(&done).unwrap_or_default());
            } else {
                for (id, rows) in &done.copied {
                    println!("copied  {id}  ({rows} rows)");
                }
                for (id, why) in &done.skipped {
                    println!("skipped {id}  {why}");
                }
                println!(
                    "{} run(s) copied from {} to {}",
                    done.copied.len(),
                    from.location(),
                    to.location()
                );
            }
            Ok(0)
        }
        Cmd::Inventory {
            cmd: InventoryCmd::Show { inventory, json },
        } => {
            let mut inv = Inventory::from_file(inventory)?;
            inv.apply_ssh_config(ssh_config)?;
            let text = if json {
                format!("{}\n", inv::show_json(&inv))
            } else {
                inv::show_text(&inv)
            };
            stdout_written(std::io::stdout().lock().write_all(text.as_bytes()))
        }
        Cmd::Inventory {
            cmd: InventoryCmd::Convert { inventory, out },
        } => {
            let Some(format) = capstan::inventory::ansible_format(&inventory) else {
                return Err(Error::Usage(format!(
                    "{}: not an Ansible inventory by its name (.ini, .yml or .yaml)",
                    inventory.display()
                )));
            };
            let text = std::fs::read_to_string(&inventory)
                .map_err(|e| Error::Usage(format!("cannot read {}: {e}", inventory.display())))?;
            let c = capstan::inventory::convert_ansible(
                &text,
                &inventory.display().to_string(),
                format,
            )?;
            // Checked as capstan reads it, so a file that converts also loads.
            Inventory::from_str_at(
                &c.toml,
                &format!("{} (as converted)", inventory.display()),
                inventory.parent().unwrap_or(std::path::Path::new(".")),
            )?;
            for u in &c.unmapped {
                eprintln!("capstan: not mapped: {u}");
            }
            match out {
                Some(p) => {
                    std::fs::write(&p, &c.toml)
                        .map_err(|e| Error::Usage(format!("cannot write {}: {e}", p.display())))?;
                    eprintln!("capstan: wrote {}", p.display());
                    Ok(0)
                }
                None => stdout_written(std::io::stdout().lock().write_all(c.toml.as_bytes())),
            }
        }
        Cmd::Check {
            playbook,
            inventory,
            json,
        } => {
            let pb = Playbook::load(&playbook)?;
            let diags = match inventory {
                Some(i) => HostBuilder::new()
                    .inventory(Inventory::from_file(i)?)
                    .build()?
                    .check_with_inventory(&pb)?,
                None => HostBuilder::new().build()?.check(&pb)?,
            };
            let errors = diags
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .count();
            if json {
                // JSON lines like the other commands: a line per diagnostic, then the verdict.
                for d in &diags {
                    let mut line = serde_json::json!({ "event": "diagnostic" });
                    if let (Some(o), Ok(serde_json::Value::Object(fields))) =
                        (line.as_object_mut(), serde_json::to_value(d))
                    {
                        o.extend(fields);
                    }
                    println!("{line}");
                }
                println!(
                    "{}",
                    serde_json::json!({
                        "event": "check",
                        "schema": capstan::report::EVENT_SCHEMA,
                        "playbook": pb.name,
                        "errors": errors,
                        "warnings": diags.len() - errors,
                    })
                );
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
        Cmd::Completions { shell } => {
            let shells = clap_complete::env::Shells::builtins();
            let Some(completer) = shells.completer(&shell) else {
                return Err(Error::Usage(format!(
                    "completions {shell}: unknown shell; one of {}",
                    shells.names().collect::<Vec<_>>().join(", ")
                )));
            };
            // The script calls capstan back with COMPLETE=SHELL to complete each word.
            let mut out = std::io::stdout().lock();
            let written = completer
                .write_registration("COMPLETE", "capstan", "capstan", "capstan", &mut out)
                .and_then(|()| out.flush());
            stdout_written(written)
        }
        Cmd::Man { out_dir: Some(dir) } => {
            std::fs::create_dir_all(&dir)
                .and_then(|()| {
                    clap_mangen::generate_to(<Cli as clap::CommandFactory>::command(), &dir)
                })
                .map_err(|e| Error::Usage(format!("cannot write {}: {e}", dir.display())))?;
            Ok(0)
        }
        Cmd::Man { out_dir: None } => {
            let mut out = std::io::stdout().lock();
            let written = clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
                .render(&mut out)
                .and_then(|()| out.flush());
            stdout_written(written)
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

/// Asks a yes/no question on the terminal; `Err` when there is none to ask.
fn ask(question: &str) -> Result<bool, Error> {
    capstan::api::ask_terminal(question).ok_or_else(|| Error::Script {
        kind: capstan::FaultKind::Declined,
        located: capstan::Located::new(
            format!("confirmation needed: {question} (no terminal to ask; rerun with --yes)"),
            None,
        ),
    })
}

/// `capstan runs`: one line a run; a guard still set is the loudest thing on it.
fn render_runs(runs: &[RunRow], color: bool) -> String {
    let paint = |code: &str, t: &str| {
        if color {
            format!("\x1b[{code}m{t}\x1b[0m")
        } else {
            t.to_string()
        }
    };
    if runs.is_empty() {
        return "no runs in the journal\n".into();
    }
    let mut s = format!(
        "{:<21} {:<20} {:<10} {:<19} {:>3}  {}\n",
        "RUN", "STARTED", "OPERATOR", "STATUS", "TRY", "PLAYBOOK"
    );
    for r in runs {
        let mut status = if r.process_gone {
            "killed (pid gone)".to_string()
        } else {
            r.status.as_str().to_string()
        };
        if r.mode != Mode::Run {
            status = format!(
                "{status} ({})",
                if r.mode == Mode::Check {
                    "check"
                } else {
                    "sim"
                }
            );
        }
        s.push_str(&format!(
            "{:<21} {:<20} {:<10} {:<19} {:>3}  {}",
            r.id,
            format_unix_ms(r.started_unix_ms),
            r.operator,
            status,
            r.attempts,
            r.playbook
        ));
        if !r.guards_set.is_empty() {
            s.push_str(&format!(
                "  {}",
                paint(
                    "1;31",
                    &format!("GUARD STILL SET: {}", r.guards_set.join(", "))
                )
            ));
        }
        if r.undos_pending > 0 && r.status != RunStatus::Succeeded {
            s.push_str(&format!("  ({} undo(s) pending)", r.undos_pending));
        }
        s.push('\n');
    }
    s
}
