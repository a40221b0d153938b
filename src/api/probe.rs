//! `probe::start`: a writer in the background for the length of an upgrade, and what it saw (failed writes, gaps, ids).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rhai::{Array, Dynamic, Engine, EvalAltResult, FnPtr, Map, Module, NativeCallContext};

use super::opts::Opts;
use super::{at, bad_input, def, def_in, RunCtx};
use crate::action::set_current_step;

type R<T> = Result<T, Box<EvalAltResult>>;

/// Kept for the report: the first few distinct errors, enough to say why writes failed.
const KEEP_ERRORS: usize = 5;

#[derive(Debug, Default)]
struct Stats {
    attempted: u64,
    failed: u64,
    next_id: i64,
    /// When the last write succeeded (run time), or when the probe started.
    last_ok: Duration,
    longest_gap: Duration,
    errors: Vec<String>,
    /// Simulation: when the next write is due.
    next_due: Duration,
}

/// One running probe. The writer runs on a thread of its own with an engine of its own (built
/// like the run's), calling the script's closure through the context it was started from.
pub(crate) struct ProbeState {
    name: String,
    /// The step its writes are recorded in (`probe NAME`).
    step: Arc<str>,
    every: Duration,
    write: FnPtr,
    check: Option<FnPtr>,
    #[allow(deprecated)]
    store: rhai::NativeCallContextStore,
    run: Arc<RunCtx>,
    first_id: i64,
    started: Duration,
    stats: Mutex<Stats>,
    stopping: AtomicBool,
    stopped: Mutex<Option<Map>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Simulation: the engine the ticks call the closure with (built once).
    engine: Mutex<Option<Engine>>,
    skipped: bool,
}

impl std::fmt::Debug for ProbeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Probe({})", self.name)
    }
}

/// The handle scripts hold (`probe::start` → `p.stop()`).
#[derive(Clone, Debug)]
pub struct Probe(Arc<ProbeState>);

/// Captured variables are shared cells that Rhai locks per call: the probe gets cells of its
/// own (copies of the values), so the script's own use of them never collides with its thread,
/// and what a write keeps in them (an open session) is there for the next write.
fn detached(f: &FnPtr) -> FnPtr {
    let mut f = f.clone();
    for v in f.iter_curry_mut() {
        if v.is_shared() {
            *v = v.flatten_clone().into_shared();
        }
    }
    f
}

fn message(e: &EvalAltResult) -> String {
    let (_, located) = super::errors::eval_error(e, "", "");
    located.message
}

impl ProbeState {
    fn step(&self) -> Arc<str> {
        self.step.clone()
    }

    fn call<T: rhai::Variant + Clone>(
        &self,
        engine: &Engine,
        f: &FnPtr,
        args: impl rhai::FuncArgs,
    ) -> R<T> {
        #[allow(deprecated)]
        let ctx = self.store.create_context(engine);
        f.call_within_context::<T>(&ctx, args)
    }

    /// One write with the next id; a failed id is tried again at the next tick, as an HA
    /// client retries a row it could not write.
    fn write_once(&self, engine: &Engine) {
        let id = crate::lock(&self.stats).next_id;
        let outer = set_current_step(Some(self.step()));
        let r = self.call::<Dynamic>(engine, &self.write, (Dynamic::from_int(id),));
        set_current_step(outer);
        let now = self.run.exec.now();
        let mut s = crate::lock(&self.stats);
        s.attempted += 1;
        match r {
            Ok(_) => {
                s.next_id += 1;
                s.longest_gap = s.longest_gap.max(now.saturating_sub(s.last_ok));
                s.last_ok = now;
            }
            Err(e) => {
                s.failed += 1;
                let m = message(&e);
                if s.errors.len() < KEEP_ERRORS && !s.errors.contains(&m) {
                    s.errors.push(m);
                }
            }
        }
    }

    fn thread_body(self: Arc<Self>) {
        let Some(engine) = self.run.build_engine() else {
            return;
        };
        let mut due = std::time::Instant::now();
        while !self.stopping.load(Ordering::SeqCst) {
            if std::time::Instant::now() >= due {
                self.write_once(&engine);
                due = std::time::Instant::now() + self.every;
            }
            std::thread::sleep(Duration::from_millis(20).min(self.every));
        }
    }

    /// Simulation: called after each action of the run; writes when a tick is due. The world
    /// does not change between two actions, so one write per interval between actions says
    /// what every write in it would have met.
    pub(crate) fn tick(&self) {
        if self.stopping.load(Ordering::SeqCst) {
            return;
        }
        let now = self.run.exec.now();
        {
            let s = crate::lock(&self.stats);
            if now < s.next_due {
                return;
            }
        }
        let mut slot = crate::lock(&self.engine);
        if slot.is_none() {
            *slot = self.run.build_engine();
        }
        if let Some(engine) = slot.as_ref() {
            self.write_once(engine);
        }
        let mut s = crate::lock(&self.stats);
        s.next_due = self.run.exec.now() + self.every;
    }

    /// Stops the writer (once), checks the ids when the probe has a `check`, and reports.
    pub(crate) fn stop(&self) -> Map {
        if let Some(m) = crate::lock(&self.stopped).clone() {
            return m;
        }
        self.stopping.store(true, Ordering::SeqCst);
        if let Some(t) = crate::lock(&self.thread).take() {
            let _ = t.join();
        }
        let now = self.run.exec.now();
        let (attempted, failed, next_id, gap, errors) = {
            let s = crate::lock(&self.stats);
            let gap = s.longest_gap.max(now.saturating_sub(s.last_ok));
            (s.attempted, s.failed, s.next_id, gap, s.errors.clone())
        };
        let written = next_id - self.first_id;
        let mut m = Map::new();
        m.insert("name".into(), self.name.clone().into());
        m.insert("skipped".into(), self.skipped.into());
        m.insert("attempted".into(), Dynamic::from_int(attempted as i64));
        m.insert("failed".into(), Dynamic::from_int(failed as i64));
        m.insert("written".into(), Dynamic::from_int(written));
        m.insert("first_id".into(), Dynamic::from_int(self.first_id));
        m.insert("last_id".into(), Dynamic::from_int(next_id - 1));
        m.insert(
            "longest_gap_ms".into(),
            Dynamic::from_int(gap.as_millis() as i64),
        );
        m.insert(
            "every_ms".into(),
            Dynamic::from_int(self.every.as_millis() as i64),
        );
        m.insert(
            "duration_ms".into(),
            Dynamic::from_int(now.saturating_sub(self.started).as_millis() as i64),
        );
        m.insert(
            "errors".into(),
            Dynamic::from_array(errors.into_iter().map(Dynamic::from).collect()),
        );
        let mut consecutive = Dynamic::UNIT;
        let mut missing = Array::new();
        let mut extra = 0i64;
        if let (Some(check), false) = (&self.check, self.skipped) {
            let ids = self.run.build_engine().map(|e| {
                let outer = set_current_step(Some(self.step()));
                let r = self.call::<Dynamic>(&e, check, ());
                set_current_step(outer);
                r
            });
            match ids {
                Some(Ok(v)) => match ids_of(&v) {
                    Ok(ids) => {
                        let (miss, dup) = sequence_gaps(&ids, self.first_id, next_id);
                        consecutive = (miss.is_empty() && dup == 0).into();
                        missing = miss.into_iter().take(20).map(Dynamic::from_int).collect();
                        extra = dup;
                    }
                    Err(e) => {
                        m.insert("check_error".into(), e.into());
                    }
                },
                Some(Err(e)) => {
                    m.insert("check_error".into(), message(&e).into());
                }
                None => {}
            }
        }
        m.insert("consecutive".into(), consecutive);
        m.insert("missing".into(), Dynamic::from_array(missing));
        m.insert("unexpected".into(), Dynamic::from_int(extra));
        *crate::lock(&self.stopped) = Some(m.clone());
        self.run.log("info", &summary(&m));
        m
    }
}

fn ids_of(v: &Dynamic) -> Result<Vec<i64>, String> {
    let a = v.read_lock::<Array>().ok_or_else(|| {
        format!(
            "the probe's check must return an array of ids, not {}",
            v.type_name()
        )
    })?;
    a.iter()
        .map(|x| {
            x.as_int()
                .map_err(|t| format!("the probe's check returned a {t} among the ids"))
        })
        .collect()
}

/// The ids the probe wrote (`first..next`) that the store does not hold exactly once: missing
/// ones, and how many others (duplicates, ids it never wrote) are there.
fn sequence_gaps(ids: &[i64], first: i64, next: i64) -> (Vec<i64>, i64) {
    let mut seen = std::collections::BTreeMap::<i64, i64>::new();
    for &i in ids.iter().filter(|&&i| i >= first) {
        *seen.entry(i).or_default() += 1;
    }
    let missing = (first..next).filter(|i| !seen.contains_key(i)).collect();
    let extra = seen
        .iter()
        .map(|(i, n)| if (first..next).contains(i) { n - 1 } else { *n })
        .sum();
    (missing, extra)
}

fn summary(m: &Map) -> String {
    let get = |k: &str| m.get(k).map(|v| v.to_string()).unwrap_or_default();
    if m.get("skipped").and_then(|v| v.as_bool().ok()) == Some(true) {
        return format!("probe {}: check mode, nothing was written", get("name"));
    }
    let ids = match m.get("consecutive").and_then(|v| v.as_bool().ok()) {
        Some(true) => "ids consecutive".to_string(),
        Some(false) => format!(
            "ids NOT consecutive (missing {}, unexpected {})",
            get("missing"),
            get("unexpected")
        ),
        None => "ids not checked".to_string(),
    };
    format!(
        "probe {}: {} writes attempted, {} failed, longest gap {} ms, {ids}",
        get("name"),
        get("attempted"),
        get("failed"),
        get("longest_gap_ms")
    )
}

const START_OPTS: &[&str] = &["every", "write", "check", "name"];

fn start(run: &Arc<RunCtx>, ctx: &NativeCallContext, opts: Map) -> R<Probe> {
    let o = Opts::new("probe::start", opts, START_OPTS)?;
    let every = o.duration("every")?.unwrap_or(Duration::from_secs(1));
    if every.is_zero() {
        return Err(bad_input("probe::start: `every` must be more than 0"));
    }
    let fnptr = |k: &str| -> R<Option<FnPtr>> {
        match o.raw(k) {
            None => Ok(None),
            Some(v) => v
                .read_lock::<FnPtr>()
                .map(|f| Some(f.clone()))
                .ok_or_else(|| {
                    bad_input(format!(
                        "probe::start: `{k}` must be a closure, not {}",
                        v.type_name()
                    ))
                }),
        }
    };
    let write = fnptr("write")?.ok_or_else(|| {
        bad_input("probe::start: option `write` (a closure |id| ...) is required")
    })?;
    let check = fnptr("check")?;
    let name = o.string("name")?.unwrap_or_else(|| "writes".into());
    let skipped = run.exec.mode() == crate::Mode::Check;
    #[allow(deprecated)]
    let mut store = ctx.store_data();
    super::persist::link_closure(&mut store, &write, 1);
    if let Some(c) = &check {
        super::persist::link_closure(&mut store, c, 0);
    }
    // Ids continue after what the store holds already (a resumed run starts a new probe).
    let first_id = match (&check, skipped) {
        (Some(c), false) => {
            let outer = set_current_step(Some(format!("probe {name}").into()));
            #[allow(deprecated)]
            let linked = store.create_context(ctx.engine());
            let ids = c.call_within_context::<Dynamic>(&linked, ());
            set_current_step(outer);
            ids_of(&ids?)
                .map_err(bad_input)?
                .into_iter()
                .max()
                .unwrap_or(0)
                + 1
        }
        _ => 1,
    };
    let now = run.exec.now();
    let state = Arc::new(ProbeState {
        step: format!("probe {name}").into(),
        name,
        every,
        write: detached(&write),
        check: check.as_ref().map(detached),
        store,
        run: run.clone(),
        first_id,
        started: now,
        stats: Mutex::new(Stats {
            next_id: first_id,
            last_ok: now,
            next_due: now,
            ..Stats::default()
        }),
        stopping: AtomicBool::new(false),
        stopped: Mutex::new(None),
        thread: Mutex::new(None),
        engine: Mutex::new(None),
        skipped,
    });
    if skipped {
        run.log(
            "info",
            &format!("probe {}: check mode, the probe writes nothing", state.name),
        );
    } else if run.exec.is_simulated() {
        let s = state.clone();
        run.exec.add_ticker(Arc::new(move || s.tick()));
    } else {
        let s = state.clone();
        let t = std::thread::Builder::new()
            .name("capstan-probe".into())
            .spawn(move || s.thread_body())
            .map_err(|e| bad_input(format!("probe::start: cannot start its thread: {e}")))?;
        *crate::lock(&state.thread) = Some(t);
    }
    crate::lock(&run.probes).push(state.clone());
    run.log(
        "info",
        &format!(
            "probe {}: writing every {} from id {first_id}",
            state.name,
            humantime::format_duration(every)
        ),
    );
    Ok(Probe(state))
}

pub(super) fn register(engine: &mut Engine, run: &Arc<RunCtx>) {
    engine.register_type_with_name::<Probe>("Probe");
    engine.register_fn("to_string", |p: &mut Probe| format!("probe {}", p.0.name));
    engine.register_fn("to_debug", |p: &mut Probe| format!("Probe({})", p.0.name));
    let mut m = Module::new();
    let r = run.clone();
    def_in(
        &mut m,
        "start",
        &["options: Map", "Probe"],
        r#"
Starts a writer in the background, for the length of an upgrade: every `every` (default 1 s) it
calls `write` with the next id (1, 2, ... or, when `check` is given, one more than the highest id
`check` returns, so a resumed run continues the sequence). A write that throws counts as failed
and its id is tried again at the next tick, as an HA client retries a row. `check` (optional, a
closure returning the array of ids the store holds) is called again by `stop` to prove the ids
consecutive. Write against any live node, as an HA client would (`dolphindb::probe` builds such a
pair). `name` names it in the log. Under `--check` nothing is written. In simulation the writer
runs between the run's actions on the simulated clock. A probe still running when the playbook
ends (or fails, before any rollback) is stopped and its report logged.

```rhai
let p = probe::start(#{ every: "500ms", write: |id| log(`row ${id}`) });
let r = p.stop();
log(`${r.attempted} attempted, ${r.failed} failed`);
```"#,
        move |ctx: NativeCallContext, opts: Map| -> R<Probe> {
            start(&r, &ctx, opts).map_err(|e| at(e, ctx.call_position()))
        },
    );
    engine.register_static_module("probe", m.into());
    def(
        engine,
        "stop",
        &["probe: Probe", "Map"],
        r#"
Stops the probe and reports what it saw: `attempted`, `failed` and `written` writes, `errors` (the
first few distinct ones), `longest_gap_ms` (the longest time without a successful write),
`every_ms` (its interval),
`first_id` and `last_id`, and when the probe has a `check`: `consecutive` (every id it wrote is in
the store exactly once), `missing` (the first ids that are not) and `unexpected` (other rows
beyond its first id). `consecutive` is `()` without a check. Stopping twice returns the same report.

```rhai
let p = probe::start(#{ write: |id| () });
let r = p.stop();
if r.failed > 0 { warn(`${r.failed} writes failed: ${r.errors}`); }
```"#,
        |p: Probe| -> Map { p.0.stop() },
    );
}

/// Stops every probe still running (the playbook ended), before rollback and guards run.
pub(crate) fn stop_all(run: &RunCtx) {
    let probes: Vec<_> = std::mem::take(&mut *crate::lock(&run.probes));
    for p in probes {
        p.stop();
    }
    run.exec.clear_tickers();
}

#[cfg(test)]
mod tests {
    use super::sequence_gaps;

    #[test]
    fn gaps_in_the_sequence() {
        assert_eq!(sequence_gaps(&[1, 2, 3], 1, 4), (vec![], 0));
        assert_eq!(sequence_gaps(&[1, 3], 1, 4), (vec![2], 0));
        assert_eq!(sequence_gaps(&[1, 2, 2, 3, 9], 1, 4), (vec![], 2));
        // Rows from before the probe started are not its business.
        assert_eq!(sequence_gaps(&[1, 2, 5, 6], 5, 7), (vec![], 0));
    }
}
