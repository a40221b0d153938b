//! The embedding API: `HostBuilder` → `Host` → `run` / `describe` / `check` → `RunReport`.

mod docs;
mod playbook;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use rhai::{Dynamic, Engine, EvalAltResult, Module, Scope, AST};

pub use docs::{doc_examples, reference_markdown, write_definitions, DocExample};
pub use playbook::{shipped_playbooks, Playbook, PlaybookInfo};

use crate::action::{Cancel, Executor};
use crate::api::{ConfirmPolicy, RunCtx};
use crate::engine::{self, Diagnostic, Extension, Limits, DESCRIBE_TOKEN};
use crate::error::{Error, FaultKind, Result};
use crate::inventory::Inventory;
use crate::report::{Event, EventSink, NoEvents, Outcome, RunReport};
use crate::sim::Scenario;
use crate::Mode;

/// Params given to a run: strings from `-p k=v`, or any JSON value.
pub type Params = BTreeMap<String, serde_json::Value>;

/// Builds a [`Host`]. Everything is checked in `build`, before any host is touched.
pub struct HostBuilder {
    inventory: Option<Inventory>,
    scenario: Option<Scenario>,
    mode: Mode,
    limits: Limits,
    parallelism: usize,
    confirm: ConfirmPolicy,
    events: Arc<dyn EventSink>,
    extensions: Vec<Extension>,
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
            extensions: Vec::new(),
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
    /// Adds natives, types or modules to every engine this host builds.
    pub fn register(mut self, f: impl Fn(&mut Engine) + Send + Sync + 'static) -> Self {
        self.extensions.push(Arc::new(f));
        self
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
            extensions: self.extensions,
            cancel: Arc::new(Cancel::default()),
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
    extensions: Vec<Extension>,
    cancel: Arc<Cancel>,
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
    ) -> Result<Prepared> {
        let mut ctx = RunCtx::new(
            exec,
            self.events.clone(),
            params,
            self.parallelism,
            self.confirm,
        );
        ctx.describe_only = describe;
        let run = Arc::new(ctx);
        let engine = engine::build(&run, &self.limits, pb.dir.as_deref(), &self.extensions);
        let ast = compile(&engine, pb)?;
        Ok(Prepared { engine, run, ast })
    }

    /// Runs a playbook in this host's mode. `Err` only when it cannot start (compile error);
    /// a playbook that fails still yields a report, with the failure as its outcome.
    pub fn run(&self, pb: &Playbook, params: &Params) -> Result<RunReport> {
        let world = self
            .scenario
            .as_ref()
            .map(|s| Arc::new(Mutex::new(s.world())));
        let exec = Executor::new(
            self.mode,
            self.inventory.clone(),
            world,
            self.cancel.clone(),
            self.events.clone(),
        );
        let mut given = self
            .scenario
            .as_ref()
            .map(|s| s.params.clone())
            .unwrap_or_default();
        given.extend(params.clone());
        let p = self.prepare(pb, exec, given, false)?;
        let started_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.events.emit(&Event::RunStarted {
            playbook: pb.name.clone(),
            mode: self.mode,
            hosts: self.inventory.host_names(),
        });
        let result = p
            .engine
            .eval_ast_with_scope::<Dynamic>(&mut Scope::new(), &p.ast);
        let outcome = match &result {
            Ok(_) => Outcome::Succeeded,
            Err(e) => {
                let (kind, mut located) = engine::eval_error(e, &pb.name, &pb.source);
                located.message = self.inventory.redactor.redact(&located.message);
                match kind {
                    FaultKind::Interrupted => Outcome::Interrupted { error: located },
                    kind => Outcome::Failed {
                        kind,
                        error: located,
                    },
                }
            }
        };
        let run = &p.run;
        let duration_ms = run.exec.now().as_millis() as u64;
        self.events.emit(&Event::RunFinished {
            outcome: outcome.clone(),
            duration_ms,
        });
        let value = result.ok().map_or(serde_json::Value::Null, |v| {
            rhai::serde::from_dynamic::<serde_json::Value>(&v)
                .unwrap_or_else(|_| serde_json::Value::String(v.to_string()))
        });
        let report = RunReport {
            playbook: pb.name.clone(),
            mode: self.mode,
            outcome,
            started_unix_ms,
            duration_ms,
            hosts: self.inventory.host_names(),
            params: run
                .params_out
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .unwrap_or_default(),
            steps: run
                .steps
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .records
                .clone(),
            actions: run.exec.records(),
            logs: run.logs.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            result: value,
        };
        Ok(report)
    }

    /// The playbook's header and params, found by running it up to `params()` with no host access.
    pub fn describe(&self, pb: &Playbook) -> Result<PlaybookInfo> {
        let exec = Executor::inert(self.inventory.clone());
        let p = self.prepare(pb, exec, Params::new(), true)?;
        let result = p
            .engine
            .eval_ast_with_scope::<Dynamic>(&mut Scope::new(), &p.ast);
        let params = p
            .run
            .params_spec
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
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
        let p = self.prepare(pb, exec, Params::new(), true)?;
        Ok(engine::lint(&p.engine, &p.ast, &pb.name, &pb.source))
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
        let mut e = engine::build(&run, &self.limits, None, &self.extensions);
        for m in engine::stdlib_modules() {
            if let Ok(module) = engine::StdlibResolver::load(&e, m, rhai::Position::NONE) {
                e.register_static_module(m.name, module);
            }
        }
        e
    }
}

fn is_describe_stop(e: &EvalAltResult) -> bool {
    matches!(e.unwrap_inner(), EvalAltResult::ErrorTerminated(t, _) if t.to_string() == DESCRIBE_TOKEN)
}

fn compile(engine: &Engine, pb: &Playbook) -> Result<AST> {
    let mut ast = engine
        .compile(&pb.source)
        .map_err(|e| Error::Compile(engine::compile_error(&e, &pb.name, &pb.source)))?;
    ast.set_source(pb.name.as_str());
    Ok(ast)
}
