//! `Backend`: where an action takes effect (the hosts, a simulated world, or nowhere) and whose clock a run reads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{lock, Action, Cancel, Executor, Outcome, Simulated};
use crate::ddb::DdbClient;
use crate::error::{Fault, FaultKind};
use crate::hostlock::{Op, State};
use crate::inventory::HostEntry;
use crate::sql::SqlClient;
use crate::transport::{self, Transport};

/// What a backend is, for the executor's few decisions that depend on it: only a run on hosts
/// is journaled for replay and fenced; only a world's clock ticks the probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Hosts,
    World,
    Nowhere,
}

/// Where one action goes: the host's name, its inventory entry (none for a SQL server named by
/// address), the step it belongs to and, in a journaled run, the marker its command leaves.
pub(crate) struct Target<'a> {
    pub name: &'a str,
    pub entry: Option<&'a HostEntry>,
    pub step: Option<&'a str>,
    pub marker: Option<&'a str>,
}

/// The executor holds one of these and never asks which: it performs actions, tells the time,
/// waits, and answers the two checks made before the first change (reach and host locks).
pub(crate) trait Backend: Send + Sync {
    fn kind(&self) -> Kind;

    /// Performs `action` at `to` and answers as the host (or the world) did.
    fn perform(&self, x: &Executor, to: Target<'_>, action: &Action) -> Result<Outcome, Fault>;

    /// Time since `started`, the executor's start.
    fn now(&self, started: Instant) -> Duration;

    /// Waits `d` (a world moves its clock instead); wakes early for a stop request.
    fn sleep(&self, d: Duration, cancel: &Cancel) -> Result<(), Fault>;

    /// Of `hosts`, those that cannot be reached, with why.
    fn unreachable(&self, x: &Executor, hosts: &[&HostEntry]) -> Vec<(String, String)>;

    /// Runs lock operation `op` for run `run` on each of `hosts`: what each lock said, or why
    /// it could not be asked.
    fn lock_states(
        &self,
        x: &Executor,
        hosts: &[&HostEntry],
        op: Op,
        run: &str,
    ) -> Vec<(String, Result<State, String>)>;

    /// The connections to real hosts, for what only a run on them does (markers, held locks).
    fn hosts(&self) -> Option<&Hosts> {
        None
    }
}

/// The real backend: the hosts' transports (SSH sessions, shared bastions, local processes),
/// and the SQL and DolphinDB clients.
#[derive(Default)]
pub(crate) struct Hosts {
    transports: Mutex<HashMap<String, Arc<dyn Transport>>>,
    /// Sessions to bastions, shared by every host behind them.
    jumps: Arc<transport::JumpPool>,
    sql: SqlClient,
    // Boxed: its runtime slot is large.
    ddb: Box<DdbClient>,
}

impl Hosts {
    /// The transport of `host` (as `key`), opened at first use and kept.
    pub(crate) fn transport(&self, key: &str, host: &HostEntry) -> Arc<dyn Transport> {
        lock(&self.transports)
            .entry(key.to_string())
            .or_insert_with(|| transport::open(host, &self.jumps))
            .clone()
    }

    /// A transport of its own for `host`, not shared with its commands (a lock's renewal).
    pub(crate) fn separate(&self, host: &HostEntry) -> Arc<dyn Transport> {
        transport::open(host, &self.jumps)
    }
}

impl Backend for Hosts {
    fn kind(&self) -> Kind {
        Kind::Hosts
    }

    fn perform(&self, x: &Executor, to: Target<'_>, action: &Action) -> Result<Outcome, Fault> {
        match (action, to.entry) {
            (
                Action::Sql {
                    target,
                    kind,
                    statement,
                    params,
                },
                _,
            ) => self
                .sql
                .perform(x.inventory(), target, *kind, statement, params)
                .map(Outcome::Sql)
                .map_err(|f| x.redacted(f)),
            (
                Action::Ddb {
                    target,
                    kind,
                    script,
                },
                _,
            ) => self
                .ddb
                .perform(x.inventory(), target, *kind, script)
                .map(Outcome::Ddb)
                .map_err(|f| x.redacted(f)),
            (_, Some(entry)) => x.perform_real(entry, action, to.marker),
            (_, None) => unreachable!("only SQL actions run without an inventory host"),
        }
    }

    fn now(&self, started: Instant) -> Duration {
        started.elapsed()
    }

    fn sleep(&self, d: Duration, cancel: &Cancel) -> Result<(), Fault> {
        let end = Instant::now() + d;
        while Instant::now() < end {
            if cancel.should_stop() {
                return Err(Fault::new(FaultKind::Interrupted, None, "interrupted"));
            }
            std::thread::sleep((end - Instant::now()).min(Duration::from_millis(100)));
        }
        Ok(())
    }

    fn unreachable(&self, x: &Executor, hosts: &[&HostEntry]) -> Vec<(String, String)> {
        super::per_host(hosts, |h| {
            let t = self.transport(&h.name, h);
            // Bare, the login shell's builtin answers: nothing started on the host. Under
            // `become` the text would go to the become user's shell (maybe nologin).
            let cmd = if h.become_.is_none() {
                transport::Command::Shell("true".into())
            } else {
                transport::Command::Argv(vec!["true".into()])
            };
            // A host whose lock is taken next (a command, before any change) needs only its
            // session here; under `become` the command also proves that sudo works.
            let r = if h.host_lock.is_some() && h.become_.is_none() && x.journal().is_some() {
                t.reach().map_err(|e| x.transport_fault(h, e))
            } else {
                x.exec_brief(h, t.as_ref(), &cmd, 4096).map(|_| ())
            };
            match r {
                Err(f) if f.kind == FaultKind::Unreachable => Some((h.name.clone(), f.message)),
                _ => None,
            }
        })
        .into_iter()
        .flatten()
        .collect()
    }

    fn lock_states(
        &self,
        _: &Executor,
        hosts: &[&HostEntry],
        op: Op,
        run: &str,
    ) -> Vec<(String, Result<State, String>)> {
        super::per_host(hosts, |h| {
            let t = self.transport(&h.name, h);
            (
                h.name.clone(),
                super::host_lock::run_op(t.as_ref(), op, h, run),
            )
        })
    }

    fn hosts(&self) -> Option<&Hosts> {
        Some(self)
    }
}

/// A simulated world, known only through `Simulated`: it answers for the hosts and keeps the
/// clock.
pub(crate) struct World(pub Arc<Mutex<dyn Simulated>>);

impl Backend for World {
    fn kind(&self) -> Kind {
        Kind::World
    }

    fn perform(&self, _: &Executor, to: Target<'_>, action: &Action) -> Result<Outcome, Fault> {
        lock(&self.0).apply(to.name, to.step, action)
    }

    fn now(&self, _: Instant) -> Duration {
        lock(&self.0).now()
    }

    fn sleep(&self, d: Duration, _: &Cancel) -> Result<(), Fault> {
        lock(&self.0).advance(d);
        Ok(())
    }

    // The rehearsal meets the same check: hosts a scenario cuts off from the start.
    fn unreachable(&self, _: &Executor, _: &[&HostEntry]) -> Vec<(String, String)> {
        lock(&self.0).unreachable_at_start()
    }

    // A rehearsal meets the locks its scenario gives the hosts as a run would.
    fn lock_states(
        &self,
        _: &Executor,
        hosts: &[&HostEntry],
        op: Op,
        _: &str,
    ) -> Vec<(String, Result<State, String>)> {
        let world = lock(&self.0);
        hosts
            .iter()
            .map(|h| {
                let state = match world.host_lock(&h.name) {
                    None => State::Taken,
                    Some((holder, now)) if op == Op::TakeOver && holder.lease_until < now => {
                        State::TakenOver { was: holder }
                    }
                    Some((holder, now)) => State::Held { holder, now },
                };
                (h.name.clone(), Ok(state))
            })
            .collect()
    }
}

/// `describe`: a playbook is evaluated only up to `params()`; any action is a mistake.
pub(crate) struct Nowhere;

impl Backend for Nowhere {
    fn kind(&self) -> Kind {
        Kind::Nowhere
    }

    fn perform(&self, _: &Executor, to: Target<'_>, _: &Action) -> Result<Outcome, Fault> {
        Err(Fault::new(
            FaultKind::Script,
            Some(to.name),
            "this playbook acts on hosts before calling params(); call params() first",
        ))
    }

    fn now(&self, started: Instant) -> Duration {
        started.elapsed()
    }

    fn sleep(&self, _: Duration, _: &Cancel) -> Result<(), Fault> {
        Ok(())
    }

    fn unreachable(&self, _: &Executor, _: &[&HostEntry]) -> Vec<(String, String)> {
        Vec::new()
    }

    fn lock_states(
        &self,
        _: &Executor,
        _: &[&HostEntry],
        _: Op,
        _: &str,
    ) -> Vec<(String, Result<State, String>)> {
        Vec::new()
    }
}
