//! The `capstan` binary: parse arguments, run the library, map the outcome to an exit code.

mod cli;

use clap::Parser;

fn main() {
    // RUST_LOG decides what tracing prints (to stderr); progress and reports are separate.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
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
