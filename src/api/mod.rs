//! What scripts call: the per-run context natives share, and registration of every script module.

mod backup;
mod ddb;
mod docker;
pub(crate) mod errors;
mod flow;
mod host;
mod opts;
mod params;
pub(crate) mod persist;
pub(crate) mod probe;
mod problems;
pub(crate) mod recovery;
mod secrets;
mod shared;
mod sql;
mod text;
mod wait;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use rhai::{Dynamic, Engine, EvalAltResult, FuncRegistration, Position, RhaiNativeFunc, Variant};

pub use ddb::DdbConn;
pub use docker::DockerHandle;
pub use flow::ask_terminal;
pub use host::{ClusterHandle, HostHandle};
pub use params::{ParamInfo, ParamSpec};
pub use sql::SqlConn;

use crate::action::{Executor, Fault};
use crate::error::{FaultKind, SourcePos};
use crate::report::{Event, EventSink, LogLine, StepRecord, StepStatus};

/// How `confirm(..)` gets its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfirmPolicy {
    /// `--yes`: every confirmation is granted (and logged).
    Yes,
    /// Ask on the terminal; refuse when there is none.
    Ask,
}

/// Why the playbook is being evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// A new run.
    Fresh,
    /// `--resume`: steps the journal records as done return their recorded result.
    Resume,
    /// `capstan rollback`: the top-level code runs (writes held) up to the first `step`, whose
    /// script context then runs the journaled undos.
    Rollback,
}

/// Step bookkeeping: records in order, and where each key was first used (keys must be unique).
#[derive(Debug, Default)]
pub(crate) struct StepBook {
    pub records: Vec<StepRecord>,
    pub keys: BTreeMap<String, Option<SourcePos>>,
}

/// The state one run's natives share. Built by `Host`, dropped with the engine after the run.
pub struct RunCtx {
    pub(crate) exec: Executor,
    pub(crate) events: Arc<dyn EventSink>,
    pub(crate) params_in: BTreeMap<String, serde_json::Value>,
    pub(crate) params_spec: Mutex<Option<Vec<ParamInfo>>>,
    pub(crate) params_out: Mutex<Option<serde_json::Value>>,
    pub(crate) steps: Mutex<StepBook>,
    pub(crate) parallelism: usize,
    pub(crate) confirm: ConfirmPolicy,
    pub(crate) describe_only: bool,
    pub(crate) replay: Replay,
    pub(crate) recovery: recovery::Recovery,
    /// Probes started by the script (stopped when the playbook ends).
    pub(crate) probes: Mutex<Vec<Arc<probe::ProbeState>>>,
    /// Builds another engine bound to this run, like the one the script runs in: for work on
    /// threads that outlive a native call (a probe's writer).
    pub(crate) engine_factory: std::sync::OnceLock<EngineFactory>,
    /// The shared lists closures of this run captured, by identity and by hash (see
    /// `persist::ListCache`).
    pub(crate) lists: Mutex<persist::ListCache>,
}

/// See `RunCtx::engine_factory`.
pub(crate) type EngineFactory = Box<dyn Fn() -> Option<Engine> + Send + Sync>;

impl std::fmt::Debug for RunCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RunCtx({:?})", self.exec)
    }
}

impl RunCtx {
    pub(crate) fn new(
        exec: Executor,
        events: Arc<dyn EventSink>,
        params_in: BTreeMap<String, serde_json::Value>,
        parallelism: usize,
        confirm: ConfirmPolicy,
    ) -> Self {
        RunCtx {
            exec,
            events,
            params_in,
            params_spec: Mutex::new(None),
            params_out: Mutex::new(None),
            steps: Mutex::new(StepBook::default()),
            parallelism: parallelism.max(1),
            confirm,
            describe_only: false,
            replay: Replay::Fresh,
            recovery: recovery::Recovery::default(),
            probes: Mutex::new(Vec::new()),
            engine_factory: std::sync::OnceLock::new(),
            lists: Mutex::new(persist::ListCache::default()),
        }
    }

    /// Another engine for this run (see `engine_factory`); `None` once the run is over.
    pub(crate) fn build_engine(&self) -> Option<Engine> {
        self.engine_factory.get().and_then(|f| f())
    }

    /// The executor: the only way from a script function to a host.
    pub fn executor(&self) -> &Executor {
        &self.exec
    }

    /// Adds a line to the run's log (report and events), redacted.
    pub fn log(&self, level: &str, message: &str) {
        let line = LogLine {
            at_ms: self.exec.now().as_millis() as u64,
            level: level.to_string(),
            step: crate::action::current_step(),
            message: self.exec.inventory().redactor.redact(message),
        };
        match level {
            "warn" | "error" => tracing::warn!(target: "playbook", "{}", line.message),
            "debug" => tracing::debug!(target: "playbook", "{}", line.message),
            _ => tracing::info!(target: "playbook", "{}", line.message),
        }
        if let Some(j) = self.exec.journal() {
            if let Err(e) = j.journal.record_log(&j.run_id, j.attempt, &line) {
                self.exec.journal_failed(&e);
            }
        }
        // The journal keeps the lines (reports are read from it).
        self.events.emit(&Event::Log(line));
    }
}

/// A script error carrying a `Fault` (kind, host, message); `catch (e)` sees the `Fault`.
pub(crate) fn fault(
    kind: FaultKind,
    host: Option<&str>,
    message: impl Into<String>,
) -> Box<EvalAltResult> {
    Fault::new(kind, host, message).into()
}

impl From<Fault> for Box<EvalAltResult> {
    fn from(f: Fault) -> Self {
        Box::new(EvalAltResult::ErrorRuntime(
            Dynamic::from(f),
            Position::NONE,
        ))
    }
}

/// Gives an error the call's position when it has none (natives in modules are not given one).
pub(crate) fn at(mut e: Box<EvalAltResult>, pos: Position) -> Box<EvalAltResult> {
    if e.position().is_none() {
        e.set_position(pos);
    }
    e
}

pub(crate) fn bad_input(message: impl Into<String>) -> Box<EvalAltResult> {
    fault(FaultKind::BadInput, None, message)
}

/// `///` doc lines from a plain doc text, as Rhai's metadata wants them.
pub(crate) fn doc_lines(doc: &str) -> String {
    doc.trim_matches('\n')
        .lines()
        .map(|l| {
            if l.is_empty() {
                "///".to_string()
            } else {
                format!("/// {l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The registration every script function gets: parameter names and types then the return type
/// (for docs and `.d.rhai`), the doc comment, and volatility.
fn documented(name: &str, params: &[&str], doc: &str) -> FuncRegistration {
    FuncRegistration::new(name)
        .with_params_info(params)
        .with_comments([doc_lines(doc)])
        // Natives act on hosts: never let the optimizer call them at compile time.
        .with_volatility(true)
}

/// Registers a documented global function (or a method, when the first parameter is `&mut T`).
pub(crate) fn def<A: 'static, const N: usize, const X: bool, R: Variant + Clone, const F: bool>(
    engine: &mut Engine,
    name: &str,
    params: &[&str],
    doc: &str,
    f: impl RhaiNativeFunc<A, N, X, R, F> + Send + Sync + 'static,
) {
    documented(name, params, doc).register_into_engine(engine, f);
}

/// Registers a documented function into a script module (`wait::poll`, `param::required`).
pub(crate) fn def_in<
    A: 'static,
    const N: usize,
    const X: bool,
    R: Variant + Clone,
    const F: bool,
>(
    module: &mut rhai::Module,
    name: &str,
    params: &[&str],
    doc: &str,
    f: impl RhaiNativeFunc<A, N, X, R, F> + Send + Sync + 'static,
) {
    documented(name, params, doc).set_into_module(module, f);
}

/// Registers the whole script API for one run.
pub(crate) fn register_all(engine: &mut Engine, run: &Arc<RunCtx>) {
    engine.register_type_with_name::<Fault>("Fault");
    engine.register_fn("to_string", |f: &mut Fault| f.message.clone());
    engine.register_fn("to_debug", |f: &mut Fault| {
        format!("Fault({:?}: {})", f.kind, f.message)
    });
    engine.register_get("message", |f: &mut Fault| f.message.clone());
    engine.register_get("kind", |f: &mut Fault| {
        serde_json::to_value(f.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    });
    engine.register_get("host", |f: &mut Fault| match &f.host {
        Some(h) => Dynamic::from(h.clone()),
        None => Dynamic::UNIT,
    });
    engine.register_get("reason", |f: &mut Fault| match &f.reason {
        Some(r) => Dynamic::from(r.clone()),
        None => Dynamic::UNIT,
    });
    engine.register_get("code", |f: &mut Fault| match f.code {
        Some(c) => Dynamic::from_int(c),
        None => Dynamic::UNIT,
    });
    host::register(engine, run);
    backup::register(engine);
    ddb::register(engine, run);
    probe::register(engine, run);
    docker::register(engine);
    flow::register(engine, run);
    params::register(engine, run);
    recovery::register(engine, run);
    secrets::register(engine, run);
    sql::register(engine, run);
    wait::register(engine, run);
    text::register(engine);
    shared::register(engine);
    problems::register(engine);
}

/// Marks a step finished, journals it (with its result, for resume) and emits its event.
pub(crate) fn finish_step(
    run: &RunCtx,
    index: usize,
    error: Option<String>,
    result: Option<&serde_json::Value>,
) {
    let mut book = crate::lock(&run.steps);
    let rec = &mut book.records[index];
    let (hosts, count) = run.exec.step_summary(&rec.name);
    let now = run.exec.now().as_millis() as u64;
    rec.duration_ms = now.saturating_sub(rec.at_ms);
    rec.status = if error.is_some() {
        StepStatus::Failed
    } else {
        StepStatus::Ok
    };
    rec.hosts = hosts.clone();
    rec.actions = count;
    rec.error = error
        .clone()
        .map(|e| run.exec.inventory().redactor.redact(&e));
    if let Some(j) = run.exec.journal() {
        if let Err(e) = j.journal.step_finished(&j.run_id, rec, result) {
            run.exec.journal_failed(&e);
        }
    }
    let ev = Event::StepFinished {
        step: rec.name.clone(),
        ok: error.is_none(),
        duration_ms: rec.duration_ms,
        hosts,
        actions: count,
        error: rec.error.clone(),
    };
    drop(book);
    run.events.emit(&ev);
}
