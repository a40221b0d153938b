//! The embedding API: `HostBuilder` → `Host` → `run` / `describe` / `check` → `RunReport`.

mod docs;
mod playbook;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rhai::{Dynamic, Engine, EvalAltResult, Module, Scope, AST};

pub use docs::{doc_examples, reference_markdown, write_definitions, DocExample};
pub use playbook::{shipped_playbooks, Playbook, PlaybookInfo};

pub use crate::action::OnRunning;
use crate::action::{Cancel, Executor};
use crate::api::{ConfirmPolicy, Replay, RunCtx};
use crate::engine::{self, Diagnostic, Limits, Severity, DESCRIBE_TOKEN, ROLLBACK_TOKEN};
use crate::error::{Error, FaultKind, Located, Result};
use crate::inventory::{HostEntry, Inventory, TransportKind};
use crate::journal::{self, Journal, RunJournal, RunRow, RunStart, RunStatus};
use crate::report::{Event, EventSink, NoEvents, Outcome, RunReport};
use crate::secret::Redactor;
use crate::sim::Scenario;
use crate::Mode;

/// What a failed run does with the changes it made (`--on-failure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFailure {
    /// Leave everything as it is; `capstan resume` or `capstan rollback` decide later.
    #[default]
    Stop,
    /// Run every registered undo of the run, newest first.
    Rollback,
    /// Ask on the terminal (granted by `--yes`); with no one to ask, stop.
    Ask,
}

/// How a stopped run is taken up again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Continue {
    Resume,
    Rollback,
}

/// Params given to a run: strings from `-p k=v`, or any JSON value.
pub type Params = BTreeMap<String, serde_json::Value>;

/// Builds a [`Host`]. Everything is checked in `build`, before any host is touched.
/// How long a resume or rollback waits, by default, for a command of the earlier attempt that
/// is still running on a host.
pub const DEFAULT_RUNNING_TIMEOUT: Duration = Duration::from_secs(300);

pub struct HostBuilder {
    inventory: Option<Inventory>,
    scenario: Option<Scenario>,
    mode: Mode,
    limits: Limits,
    parallelism: usize,
    confirm: ConfirmPolicy,
    events: Arc<dyn EventSink>,
    additions: engine::Additions,
    journal: Option<Arc<Journal>>,
    on_failure: OnFailure,
    take_over_lock: bool,
    on_running: OnRunning,
    running_timeout: Duration,
    reach_check: bool,
}

impl Default for HostBuilder {
    fn default() -> Self {
        HostBuilder {
            inventory: None,
            scenario: None,
            mode: Mode::Run,
            limits: Limits::default(),
            parallelism: 16,
            confirm: ConfirmPolicy::Ask,
            events: Arc::new(NoEvents),
            additions: engine::Additions::default(),
            journal: None,
            on_failure: OnFailure::Stop,
            take_over_lock: false,
            on_running: OnRunning::Wait,
            running_timeout: DEFAULT_RUNNING_TIMEOUT,
            reach_check: true,
        }
    }
}

impl std::fmt::Debug for HostBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HostBuilder({:?})", self.mode)
    }
}

impl HostBuilder {
    pub fn new() -> Self {
        Self::default()
    }
    /// The hosts to act on (run and check modes).
    pub fn inventory(mut self, inv: Inventory) -> Self {
        self.inventory = Some(inv);
        self
    }
    /// Simulate against this scenario's world; its inventory is used.
    pub fn scenario(mut self, s: Scenario) -> Self {
        self.scenario = Some(s);
        self.mode = Mode::Simulate;
        self
    }
    pub fn mode(mut self, m: Mode) -> Self {
        self.mode = m;
        self
    }
    pub fn limits(mut self, l: Limits) -> Self {
        self.limits = l;
        self
    }
    /// How many items `parallel` runs at once (at least 1).
    pub fn parallelism(mut self, n: usize) -> Self {
        self.parallelism = n.max(1);
        self
    }
    /// Grant every `confirm(..)` (the CLI's `--yes`).
    pub fn yes(mut self, yes: bool) -> Self {
        self.confirm = if yes {
            ConfirmPolicy::Yes
        } else {
            ConfirmPolicy::Ask
        };
        self
    }
    pub fn events(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.events = sink;
        self
    }
    /// Where runs are journaled. Without one, a journal in memory: resume and rollback then
    /// work only within this process (the CLI always gives a file, see `Journal::default_path`).
    pub fn journal(mut self, j: Arc<Journal>) -> Self {
        self.journal = Some(j);
        self
    }
    /// What a failed run does with the changes it made.
    pub fn on_failure(mut self, f: OnFailure) -> Self {
        self.on_failure = f;
        self
    }
    /// Take over host locks whose holder's process is gone (a killed run).
    /// What a resume or rollback does with a command of the run's earlier attempt still
    /// running on a host: wait for it (the default) or kill it.
    pub fn on_running(mut self, policy: OnRunning) -> Self {
        self.on_running = policy;
        self
    }

    /// How long a resume or rollback waits for such a command before it refuses (default 5 min).
    pub fn running_timeout(mut self, d: Duration) -> Self {
        self.running_timeout = d;
        self
    }

    /// Before the first change, connect to every SSH host of the inventory and refuse the
    /// change if some cannot be reached (on by default). Turn it off for a playbook that adds
    /// hosts as it goes or runs with some hosts known to be down.
    pub fn reach_check(mut self, on: bool) -> Self {
        self.reach_check = on;
        self
    }

    pub fn take_over_lock(mut self, yes: bool) -> Self {
        self.take_over_lock = yes;
        self
    }
    /// Adds natives, types or modules to every engine this host builds.
    pub fn register(mut self, f: impl Fn(&mut Engine) + Send + Sync + 'static) -> Self {
        self.additions.extensions.push(Arc::new(f));
        self
    }
    /// Adds a script module that playbooks import by name as they import the stdlib's
    /// (`import "NAME" as x;`): an embedder's own product library, compiled into its binary. A
    /// name the stdlib has already is refused.
    pub fn stdlib_module(mut self, name: &'static str, source: &'static str) -> Result<Self> {
        if engine::stdlib_modules()
            .iter()
            .chain(&self.additions.modules)
            .any(|m| m.name == name)
        {
            return Err(Error::Usage(format!(
                "a module named `{name}` exists already: give yours another name"
            )));
        }
        self.additions
            .modules
            .push(engine::StdlibModule { name, source });
        Ok(self)
    }
    /// Adds a static module scripts call as `name::f(..)`.
    pub fn module(self, name: &str, module: Module) -> Self {
        let name = name.to_string();
        let module = Arc::new(module);
        self.register(move |e: &mut Engine| {
            e.register_static_module(name.as_str(), module.clone());
        })
    }

    pub fn build(self) -> Result<Host> {
        if self.mode == Mode::Simulate && self.scenario.is_none() {
            return Err(Error::Usage(
                "simulation needs a scenario (--scenario FILE)".into(),
            ));
        }
        let inventory = match (&self.scenario, self.inventory) {
            (Some(s), _) => s.inventory.clone(),
            (None, Some(i)) => i,
            (None, None) => Inventory::localhost(),
        };
        Ok(Host {
            inventory: Arc::new(inventory),
            scenario: self.scenario,
            mode: self.mode,
            limits: self.limits,
            parallelism: self.parallelism,
            confirm: self.confirm,
            events: self.events,
            additions: self.additions,
            cancel: Arc::new(Cancel::default()),
            journal: self
                .journal
                .unwrap_or_else(|| Arc::new(Journal::in_memory())),
            on_failure: self.on_failure,
            take_over_lock: self.take_over_lock,
            on_running: self.on_running,
            running_timeout: self.running_timeout,
            reach_check: self.reach_check,
        })
    }
}

/// Runs playbooks. One `Host` may run several playbooks, one after another.
pub struct Host {
    inventory: Arc<Inventory>,
    scenario: Option<Scenario>,
    mode: Mode,
    limits: Limits,
    parallelism: usize,
    confirm: ConfirmPolicy,
    events: Arc<dyn EventSink>,
    additions: engine::Additions,
    cancel: Arc<Cancel>,
    journal: Arc<Journal>,
    on_failure: OnFailure,
    take_over_lock: bool,
    on_running: OnRunning,
    running_timeout: Duration,
    reach_check: bool,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Host({:?}, {} hosts)",
            self.mode,
            self.inventory.hosts.len()
        )
    }
}

/// An engine and the run context it is bound to. Dropping it drops the engine first.
struct Prepared {
    engine: Engine,
    run: Arc<RunCtx>,
    ast: AST,
}

impl Host {
    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    /// Stops the run: the first call at the next safe point, the second aborts running commands.
    pub fn cancel_handle(&self) -> Arc<Cancel> {
        self.cancel.clone()
    }

    fn prepare(
        &self,
        pb: &Playbook,
        exec: Executor,
        params: Params,
        describe: bool,
        replay: Replay,
    ) -> Result<Prepared> {
        let mut ctx = RunCtx::new(
            exec,
            self.events.clone(),
            params,
            self.parallelism,
            self.confirm,
        );
        ctx.describe_only = describe;
        ctx.replay = replay;
        let run = Arc::new(ctx);
        let engine = engine::build(&run, &self.limits, pb.dir.as_deref(), &self.additions);
        let ast = compile(&engine, pb)?;
        // Weak: the run context must not keep itself alive through its own factory.
        let weak = Arc::downgrade(&run);
        let (limits, dir, additions) = (self.limits, pb.dir.clone(), self.additions.clone());
        let _ = run.engine_factory.set(Box::new(move || {
            weak.upgrade()
                .map(|r| engine::build(&r, &limits, dir.as_deref(), &additions))
        }));
        Ok(Prepared { engine, run, ast })
    }

    /// The journal this host records runs in.
    pub fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }

    /// Runs a playbook in this host's mode. `Err` only when it cannot start (compile error,
    /// hosts locked by another run, journal unusable); a playbook that fails still yields a
    /// report, with the failure as its outcome.
    pub fn run(&self, pb: &Playbook, params: &Params) -> Result<RunReport> {
        self.execute(pb, params.clone(), Replay::Fresh, None, false)
    }

    /// Continues a stopped run: the script runs again from the top, steps the journal records
    /// as done are skipped (their recorded result is returned), the interrupted step runs again.
    /// A playbook or inventory that changed since is refused unless `force`, with the changes.
    /// `params` override the ones the run recorded.
    pub fn resume(
        &self,
        run_id: &str,
        pb: &Playbook,
        params: &Params,
        force: bool,
    ) -> Result<RunReport> {
        let row = self.journal.run(run_id)?;
        self.check_continuable(&row, Continue::Resume)?;
        if row.mode != self.mode {
            return Err(Error::Usage(format!(
                "run {run_id} was a {:?} run; it cannot be resumed as {:?}",
                row.mode, self.mode
            )));
        }
        if row.mode == Mode::Check {
            return Err(Error::Usage(format!(
                "run {run_id} was a --check run: it changed nothing; run it again instead"
            )));
        }
        let mut problems = Vec::new();
        if row.inventory_id != self.inventory.identity() {
            problems.push(format!(
                "the inventory's hosts changed:\n  then: {}\n  now:  {}",
                row.inventory_id,
                self.inventory.identity()
            ));
        }
        let changed = journal::source_hash(&pb.source) != row.playbook_hash;
        if changed {
            problems.push(format!(
                "the playbook changed since run {run_id} started:\n{}",
                source_diff(&row.playbook_source, &pb.source)
            ));
        }
        if !problems.is_empty() && !force {
            return Err(Error::Changed(format!(
                "refusing to resume run {run_id}: {}\n(--force resumes anyway; steps already done are still skipped)",
                problems.join("\n")
            )));
        }
        let params = recorded_params(&row, params)?;
        self.execute(pb, params, Replay::Resume, Some(row), changed)
    }

    /// Runs the undos a stopped run registered, newest first, and restores its guards. The
    /// playbook is the one the run journaled; its top-level code runs again with writes held,
    /// up to its first `step`, so closures run with the playbook's imports in scope. `params`
    /// override the ones the run recorded (one that held a secret must be given again).
    pub fn rollback(&self, run_id: &str, params: &Params) -> Result<RunReport> {
        let row = self.journal.run(run_id)?;
        self.check_continuable(&row, Continue::Rollback)?;
        if row.mode == Mode::Check {
            return Err(Error::Usage(format!(
                "run {run_id} was a --check run: it changed nothing to roll back"
            )));
        }
        let pb = Playbook::from_journal(&row);
        let params = recorded_params(&row, params)?;
        self.execute(&pb, params, Replay::Rollback, Some(row), false)
    }

    /// Refuses to go on with a run that is finished for that purpose, or still running here.
    fn check_continuable(&self, row: &RunRow, how: Continue) -> Result<()> {
        let id = &row.id;
        match row.status {
            // A run that succeeded can still be regretted (rolled back), not resumed.
            RunStatus::Succeeded if how == Continue::Resume => Err(Error::Usage(format!(
                "run {id} already succeeded: nothing to resume"
            ))),
            RunStatus::RolledBack => Err(Error::Usage(format!("run {id} was rolled back already"))),
            // Alive as far as this machine can tell: its pid here, or, with a journal on a
            // server, the run's session lock (held by a process on any machine).
            RunStatus::Running
                if !(row.controller == journal::controller() && row.pid == std::process::id())
                    && self.journal.run_process_alive(row)? == Some(true) =>
            {
                Err(Error::Usage(format!(
                    "run {id} is still running (pid {} on {}); stop it first",
                    row.pid, row.controller
                )))
            }
            _ => Ok(()),
        }
    }

    fn execute(
        &self,
        pb: &Playbook,
        params: Params,
        replay: Replay,
        existing: Option<RunRow>,
        new_source: bool,
    ) -> Result<RunReport> {
        let world = self
            .scenario
            .as_ref()
            .map(|s| Arc::new(Mutex::new(s.world())));
        let exec = Executor::new(
            self.mode,
            self.inventory.clone(),
            world
                .clone()
                .map(|w| w as Arc<Mutex<dyn crate::action::Simulated>>),
            self.cancel.clone(),
            self.events.clone(),
        );
        exec.set_reach_check(self.reach_check);
        exec.set_take_over_host_locks(self.take_over_lock);
        let mut given = self
            .scenario
            .as_ref()
            .map(|s| s.params.clone())
            .unwrap_or_default();
        given.extend(params);
        let redactor = &self.inventory.redactor;
        let recorded_params =
            redact_json(&serde_json::to_value(&given).unwrap_or_default(), redactor);
        let p = self.prepare(pb, exec, given, false, replay)?;
        // What `capstan check` knows to be wrong (an unknown function, arguments no signature
        // takes) would fail mid-run, after earlier hosts changed: refuse it before the run
        // starts, so it is not journaled as a run that failed.
        let errors: Vec<Diagnostic> = engine::lint(&p.engine, &p.ast, &pb.name, &pb.source, None)
            .into_iter()
            .filter(|d| d.severity == Severity::Error)
            .collect();
        if let Some(first) = errors.first() {
            let mut located = first.located.clone();
            if errors.len() > 1 {
                located.message = format!(
                    "{} (and {} more: `capstan check {}` lists them)",
                    located.message,
                    errors.len() - 1,
                    pb.name
                );
            }
            return Err(Error::Compile(located));
        }
        let keys: Vec<String> = self.inventory.hosts.iter().map(lock_key).collect();
        let lock = |id: &str| -> Result<()> {
            if self.mode == Mode::Run {
                self.journal.acquire_locks(id, &keys, self.take_over_lock)?;
            }
            Ok(())
        };
        let (run_id, attempt) = match &existing {
            None => {
                let id = self.journal.begin_run(&RunStart {
                    playbook: pb.name.clone(),
                    playbook_path: pb.path.as_ref().map(|p| p.display().to_string()),
                    source: pb.source.clone(),
                    inventory_id: self.inventory.identity(),
                    inventory_path: self
                        .inventory
                        .path
                        .as_ref()
                        .map(|p| p.display().to_string()),
                    hosts: self.inventory.host_names(),
                    params: recorded_params,
                    mode: self.mode,
                })?;
                if let Err(e) = lock(&id) {
                    // Refused before it started: it leaves nothing in the journal.
                    self.journal.forget_run(&id)?;
                    return Err(e);
                }
                (id, 1)
            }
            Some(row) => {
                lock(&row.id)?;
                let a = self
                    .journal
                    .reopen_run(&row.id, new_source.then_some(pb.source.as_str()))?;
                (row.id.clone(), a)
            }
        };
        let run = p.run.clone();
        run.exec.attach_journal(RunJournal {
            journal: self.journal.clone(),
            run_id: run_id.clone(),
            attempt,
        })?;
        self.events.emit(&Event::RunStarted {
            schema: crate::report::EVENT_SCHEMA,
            run_id: run_id.clone(),
            attempt,
            playbook: pb.name.clone(),
            mode: self.mode,
            hosts: self.inventory.host_names(),
        });
        // A resume or rollback first deals with commands the earlier attempt left running.
        if let Err(f) = run.exec.fence(self.on_running, self.running_timeout) {
            let prev = existing
                .as_ref()
                .map_or(RunStatus::Interrupted, |r| r.status);
            self.journal.set_status(&run_id, prev)?;
            if self.mode == Mode::Run {
                self.journal.release_locks(&run_id)?;
            }
            return Err(Error::Fence(f.message));
        }
        run.exec.hold_writes(replay == Replay::Rollback);
        let result = p
            .engine
            .eval_ast_with_scope::<Dynamic>(&mut Scope::new(), &p.ast);
        run.exec.hold_writes(false);
        // A probe writes for the length of the upgrade: not during a rollback.
        crate::api::probe::stop_all(&run);

        let replay_stop = matches!(&result, Err(e) if is_token(e, ROLLBACK_TOKEN));
        let mut outcome = match &result {
            Ok(_) => Outcome::Succeeded,
            Err(_) if replay_stop => Outcome::Succeeded,
            Err(e) => {
                let (kind, mut located) = engine::eval_error(e, &pb.name, &pb.source);
                located.message = redactor.redact(&located.message);
                match kind {
                    FaultKind::Interrupted => Outcome::Interrupted { error: located },
                    kind => Outcome::Failed {
                        kind,
                        error: located,
                    },
                }
            }
        };
        if replay == Replay::Rollback && !replay_stop && !matches!(outcome, Outcome::Succeeded) {
            run.log(
                "warn",
                "the playbook failed before its first step while replaying it for the rollback: closure undos cannot run, action undos still do",
            );
        }

        // A simulation tells what the run left changed before anything is put back.
        let lock_world = |w: &Arc<Mutex<crate::sim::World>>| crate::lock(w).changes();
        let changed_at_stop = world.as_ref().map(lock_world).unwrap_or_default();

        // Cleanup: a first Ctrl-C does not stop it; a second one does.
        self.cancel.set_cleanup(true);
        let rollback = match (&outcome, replay) {
            (_, Replay::Rollback) => Some(run.rollback(&p.engine)),
            (Outcome::Failed { .. }, _) if self.mode != Mode::Check => {
                if self.wants_rollback(&run) {
                    Some(run.rollback(&p.engine))
                } else {
                    None
                }
            }
            _ => None,
        };
        // Refused by another run's host lock, guards stay set too (journaled as set: the
        // rollback that later runs restores them).
        let guards_left = if rollback.as_ref().is_some_and(|r| r.refused.is_some()) {
            0
        } else {
            run.restore_guards(&p.engine)
        };
        self.cancel.set_cleanup(false);
        let simulation = world.as_ref().map(|w| {
            let mut r = crate::lock(w).report();
            r.changed_after_rollback = rollback.as_ref().map(|_| lock_world(w));
            r.changed_at_stop = changed_at_stop;
            r
        });

        if guards_left > 0 && matches!(outcome, Outcome::Succeeded) && replay != Replay::Rollback {
            outcome = Outcome::Failed {
                kind: FaultKind::Action,
                error: Located::new(
                    format!("{guards_left} guard(s) could not be restored and are still in effect (see the log)"),
                    None,
                ),
            };
        }
        // A rollback that could not start (the hosts are locked by another run) leaves the run
        // as it was before, with every undo pending; the refusal is the outcome (exit 5).
        if let Some(f) = rollback.as_ref().and_then(|r| r.refused.clone()) {
            outcome = Outcome::Failed {
                kind: f.kind,
                error: Located::new(f.message, None),
            };
        }
        let status = match (&outcome, rollback) {
            (_, Some(r)) if r.refused.is_some() => RunStatus::Failed,
            (_, Some(r)) if r.failed > 0 => RunStatus::RollbackIncomplete,
            (_, Some(_)) => RunStatus::RolledBack,
            (Outcome::Succeeded, None) => RunStatus::Succeeded,
            (Outcome::Failed { .. }, None) => RunStatus::Failed,
            (Outcome::Interrupted { .. }, None) => RunStatus::Interrupted,
        };
        let duration_ms = run.exec.now().as_millis() as u64;
        self.events.emit(&Event::RunFinished {
            outcome: outcome.clone(),
            duration_ms,
        });
        // `to_json` redacts as it converts.
        let value = match &result {
            Ok(v) => crate::api::persist::to_json(v, &run).value,
            Err(_) => serde_json::Value::Null,
        };
        if let Some(params_out) = crate::lock(&run.params_out).clone() {
            self.journal
                .set_params(&run_id, &redact_json(&params_out, redactor))?;
        }
        // The host locks go before the run is journaled as ended: a run killed in between is
        // still `running` and its resume takes them back, while a run journaled as ended
        // holds none (the next run on these hosts is not refused by it).
        // A locked host's markers go with its lock (one command); the others' after the end.
        run.exec.release_host_locks();
        self.journal
            .finish_run(&run_id, status, &outcome, duration_ms, &value)?;
        run.exec.clear_markers();
        if self.mode == Mode::Run {
            self.journal.release_locks(&run_id)?;
        }
        let mut report = self.journal.report(&run_id)?;
        // The error as this process saw it: with the source line, also inside imported modules.
        report.outcome = outcome;
        report.simulation = simulation;
        report.host_groups = host_groups(&self.inventory, &report.hosts);
        Ok(report)
    }

    /// `--on-failure`: whether this failure rolls back.
    fn wants_rollback(&self, run: &RunCtx) -> bool {
        match self.on_failure {
            OnFailure::Stop => false,
            OnFailure::Rollback => true,
            OnFailure::Ask if self.confirm == ConfirmPolicy::Yes || self.mode == Mode::Simulate => {
                true
            }
            OnFailure::Ask => {
                let answer = crate::api::ask_terminal(
                    "capstan: the run failed. Roll back every change it made?",
                );
                if answer.is_none() {
                    run.log("warn", "--on-failure ask: no terminal to ask; not rolling back (`capstan rollback RUN` does it later)");
                }
                answer == Some(true)
            }
        }
    }

    /// The playbook's header and params, found by running it up to `params()` with no host access.
    pub fn describe(&self, pb: &Playbook) -> Result<PlaybookInfo> {
        let exec = Executor::inert(self.inventory.clone());
        let p = self.prepare(pb, exec, Params::new(), true, Replay::Fresh)?;
        let result = p
            .engine
            .eval_ast_with_scope::<Dynamic>(&mut Scope::new(), &p.ast);
        let params = crate::lock(&p.run.params_spec).clone();
        // Stopping at params() is the point; any other failure matters only if it came first.
        if let Err(e) = &result {
            if params.is_none() && !is_describe_stop(e) {
                let (_, located) = engine::eval_error(e, &pb.name, &pb.source);
                return Err(Error::Script {
                    kind: FaultKind::Script,
                    located,
                });
            }
        }
        Ok(PlaybookInfo {
            name: pb.name.clone(),
            header: pb.header(),
            params: params.unwrap_or_default(),
        })
    }

    /// Compiles and lints a playbook; touches no host.
    pub fn check(&self, pb: &Playbook) -> Result<Vec<Diagnostic>> {
        let exec = Executor::inert(self.inventory.clone());
        let p = self.prepare(pb, exec, Params::new(), true, Replay::Fresh)?;
        Ok(engine::lint(&p.engine, &p.ast, &pb.name, &pb.source, None))
    }

    /// `check` against this host's inventory: also a `group("x")` the inventory lacks.
    pub fn check_with_inventory(&self, pb: &Playbook) -> Result<Vec<Diagnostic>> {
        let exec = Executor::inert(self.inventory.clone());
        let p = self.prepare(pb, exec, Params::new(), true, Replay::Fresh)?;
        let groups: std::collections::BTreeSet<String> =
            self.inventory.groups.keys().cloned().collect();
        Ok(engine::lint(
            &p.engine,
            &p.ast,
            &pb.name,
            &pb.source,
            Some((&self.inventory.source, &groups)),
        ))
    }

    /// An engine with the whole script API and the stdlib as static modules, bound to nothing:
    /// for docs and editor definitions.
    pub fn reference_engine(&self) -> Engine {
        let exec = Executor::inert(self.inventory.clone());
        let run = Arc::new(RunCtx::new(
            exec,
            self.events.clone(),
            Params::new(),
            1,
            ConfirmPolicy::Ask,
        ));
        let mut e = engine::build(&run, &self.limits, None, &self.additions);
        for m in engine::stdlib_modules()
            .iter()
            .chain(&self.additions.modules)
        {
            if let Ok(module) = engine::StdlibResolver::load(&e, m, rhai::Position::NONE) {
                e.register_static_module(m.name, module);
            }
        }
        e
    }
}

fn is_describe_stop(e: &EvalAltResult) -> bool {
    is_token(e, DESCRIBE_TOKEN)
}

fn is_token(e: &EvalAltResult, token: &str) -> bool {
    matches!(e.unwrap_inner(), EvalAltResult::ErrorTerminated(t, _) if t.to_string() == token)
}

/// How a host is named in locks: the same machine under two inventory names is one lock.
fn lock_key(h: &HostEntry) -> String {
    match h.transport {
        TransportKind::Local => format!("local:{}", h.name),
        TransportKind::Ssh => format!("{}@{}:{}", h.user, h.address, h.port),
    }
}

/// Every string in `v` with secrets replaced.
fn redact_json(v: &serde_json::Value, r: &Redactor) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        J::String(s) => J::String(r.redact(s)),
        J::Array(a) => J::Array(a.iter().map(|x| redact_json(x, r)).collect()),
        J::Object(o) => J::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), redact_json(x, r)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The params a run recorded, with `given` on top. A recorded value that held a secret
/// (`***`) must be given again.
fn recorded_params(row: &RunRow, given: &Params) -> Result<Params> {
    let mut out = Params::new();
    if let serde_json::Value::Object(o) = &row.params {
        for (k, v) in o {
            out.insert(k.clone(), v.clone());
        }
    }
    for (k, v) in given {
        out.insert(k.clone(), v.clone());
    }
    for (k, v) in &out {
        if v.to_string().contains("***") && !given.contains_key(k) {
            return Err(Error::Usage(format!(
                "param `{k}` held a secret when run {} started and was not journaled; give it again with -p {k}=...",
                row.id
            )));
        }
    }
    Ok(out)
}

/// A unified diff of two playbook versions, for `--resume` of a changed playbook.
fn source_diff(old: &str, new: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(2)
        .header("journaled", "now")
        .to_string()
}

fn compile(engine: &Engine, pb: &Playbook) -> Result<AST> {
    let mut ast = engine
        .compile(&pb.source)
        .map_err(|e| Error::Compile(engine::compile_error(&e, &pb.name, &pb.source)))?;
    ast.set_source(pb.name.as_str());
    Ok(ast)
}

/// The run's hosts by the first of the vars `zone`, `region` and `machine` that any of them has
/// (OceanBase zones, OMS regions): the HTML report groups its rows by them. Empty when none has.
fn host_groups(inv: &Inventory, hosts: &[String]) -> Vec<crate::report::HostGroup> {
    for key in ["zone", "region", "machine"] {
        let mut groups: Vec<crate::report::HostGroup> = Vec::new();
        for h in hosts {
            let Some(v) = inv.host(h).and_then(|e| e.vars.get(key)) else {
                continue;
            };
            let name = format!("{key} {}", v.as_str().map_or(v.to_string(), str::to_string));
            match groups.iter_mut().find(|g| g.name == name) {
                Some(g) => g.hosts.push(h.clone()),
                None => groups.push(crate::report::HostGroup {
                    name,
                    hosts: vec![h.clone()],
                }),
            }
        }
        if !groups.is_empty() {
            return groups;
        }
    }
    Vec::new()
}
