//! capstan: a Rust host for Rhai playbooks that upgrade database clusters safely.
//!
//! Embed it with [`HostBuilder`]: give it an inventory (or a simulation scenario), build a
//! [`Host`], and run a [`Playbook`] to get a [`RunReport`]. Every effect a script asks for is an
//! [`action::Action`] handed to the run's [`action::Executor`], which performs it (run), performs
//! only reads (check), or applies it to a simulated world (simulate).
//!
//! ```no_run
//! use capstan::{HostBuilder, Inventory, Playbook, Params};
//! let host = HostBuilder::new()
//!     .inventory(Inventory::from_file("inventory.toml")?)
//!     .register(|engine| { engine.register_fn("ticket", || "CHG-42".to_string()); })
//!     .build()?;
//! let report = host.run(&Playbook::from_file("upgrade.rhai")?, &Params::new())?;
//! println!("{}", capstan::report::render_text(&report, false));
//! # Ok::<(), capstan::Error>(())
//! ```

pub mod action;
pub mod api;
pub mod backup;
pub mod ddb;
pub mod docker;
pub mod engine;
pub mod error;
pub mod host;
pub mod hostlock;
pub mod inventory;
pub mod journal;
pub mod replay;
pub mod report;
pub mod secret;
pub mod sim;
pub mod sql;
pub mod transport;
pub mod version;

pub use error::{Error, FaultKind, Located, Result, SourcePos};
pub use host::{Host, HostBuilder, Params, Playbook, PlaybookInfo};
pub use inventory::Inventory;
pub use journal::Journal;
pub use report::RunReport;
pub use sim::Scenario;

/// Hash maps and sets keyed by the run's own names and texts (hosts, steps, descriptions), looked
/// up at every action of a rehearsal: std's SipHash was ~3 % of its time. foldhash is seeded per
/// process and is not meant to resist chosen keys, which these are not (they come from the
/// inventory, the scenario and the playbook).
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub(crate) type FastSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;

/// Locks a mutex, taking it over from a thread that panicked while holding it: every mutex of
/// the crate guards state that stays consistent between statements (a panic is reported as the
/// run's failure, and the cleanup that follows must still reach the journal and the hosts).
pub(crate) fn lock<T: ?Sized>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How a run treats actions (DESIGN.md principle 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Perform every action.
    Run,
    /// Perform read-only actions; record mutating ones without performing them.
    Check,
    /// Apply every action to a simulated world; no network.
    Simulate,
}

/// The example `capstan simulate` runs with no arguments: README's quick start.
pub mod demo {
    /// The example playbook (examples/hello/playbook.rhai).
    pub const PLAYBOOK: &str = include_str!("../examples/hello/playbook.rhai");
    /// Its scenario, with the inventory inline (examples/hello/scenario.toml).
    pub const SCENARIO: &str = include_str!("../examples/hello/scenario.toml");
}
