//! `Simulated`: what the executor asks of a simulated world, so that it never names `sim::World`.

use std::time::Duration;

use super::{Action, Outcome};
use crate::error::Fault;
use crate::hostlock::Holder;

/// A world the executor performs actions in instead of on hosts (`capstan simulate`). The
/// executor knows it only through this trait; `sim::World` implements it.
pub trait Simulated: Send {
    /// Applies `action` on `host`, inside `step` (`None` outside every step), and answers as the
    /// host would, unless a fault of the scenario takes it. Moves the clock by its duration.
    fn apply(&mut self, host: &str, step: Option<&str>, action: &Action) -> Result<Outcome, Fault>;

    /// Simulated time since the run started.
    fn now(&self) -> Duration;

    /// Moves the clock (a wait, a sleep).
    fn advance(&mut self, d: Duration);

    /// The hosts cut off from the start, with what a connection to each gets: the simulated
    /// side of the reach check before the first change.
    fn unreachable_at_start(&mut self) -> Vec<(String, String)>;

    /// Another run's lock on `host`, and the host's clock now (unix seconds), if it has one.
    fn host_lock(&self, host: &str) -> Option<(Holder, u64)>;
}
