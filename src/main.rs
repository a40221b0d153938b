//! The `capstan` binary: parse arguments, run the library, map the outcome to an exit code.

mod cli;

use clap::Parser;

fn main() {
    // RUST_LOG decides what tracing prints (to stderr); progress and reports are separate.
    // A playbook's own warnings reach tracing (target `playbook`) for embedders that have no
    // progress printer; the CLI prints them in its progress already, so by default it leaves
    // them out of tracing's lines rather than print each twice. Escapes only on a terminal: a
    // log file or a pipe gets plain text.
    use std::io::IsTerminal as _;
    // `COMPLETE=bash capstan -- capstan resume 2026` is the completion script calling back
    // (`capstan completions`): answer it and exit before anything else.
    clap_complete::CompleteEnv::with_factory(<cli::Cli as clap::CommandFactory>::command)
        .complete();
    tracing_subscriber::fmt()
        .with_ansi(cli::colour(std::io::stderr().is_terminal()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,playbook=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let code = match cli::main(cli::Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            // Not `eprintln!`: it panics when the terminal has hung up (SIGHUP).
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr().lock(), "error: {}", e.render());
            e.exit_code()
        }
    };
    std::process::exit(code);
}
