//! Flow: `step`, `skip_step`, `parallel`, `confirm`, `fail`, `log`, `warn`.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rhai::{Array, Dynamic, Engine, EvalAltResult, FnPtr, NativeCallContext};

use super::errors::ROLLBACK_TOKEN;
use super::persist::{from_json, to_json};
use super::{def, fault, finish_step, ConfirmPolicy, Replay, RunCtx};
use crate::action::set_current_step;
use crate::error::{FaultKind, SourcePos};
use crate::report::{Event, StepRecord, StepStatus};
use crate::Mode;

type R<T> = Result<T, Box<EvalAltResult>>;

fn call_pos(ctx: &NativeCallContext) -> Option<SourcePos> {
    let p = ctx.call_position();
    p.line().map(|line| SourcePos {
        file: ctx.call_source().unwrap_or("<playbook>").to_string(),
        line,
        column: p.position().unwrap_or(1),
    })
}

pub(super) fn register(engine: &mut Engine, run: &Arc<RunCtx>) {
    let r = run.clone();
    def(
        engine,
        "step",
        &["name: String", "body: FnPtr", "?"],
        r#"
Runs `body` as a named step: the unit of progress. Its start, end and result are journaled before
the playbook moves on; a resumed run skips steps the journal records as done and returns their
recorded result instead. Step names are the journal's keys: unique and deterministic (include the
host in names inside loops; no times or random values); a duplicate is an error naming both
places. Bodies must be safe to run twice: the step a crash interrupted runs again on resume.
A first Ctrl-C lets the running step finish and stops before the next one.

```rhai
let h = cluster().host("web1");
let v = step("read version on web1", || h.read_file("/srv/app/VERSION").trimmed());
step("log it", || log(`web1 runs ${v}`));
```"#,
        move |ctx: NativeCallContext, name: &str, body: FnPtr| -> R<Dynamic> {
            run_step(&r, &ctx, name, body)
        },
    );

    let r = run.clone();
    def(
        engine,
        "skip_step",
        &["name: String", "reason: String", "()"],
        r#"
Records step `name` as not needed, with `reason`, without running anything: a host or zone found
at the target already. It appears in the steps table (`skip`), in the journal and in `--json` as
a `step_not_needed` event, so a report shows every unit the playbook looked at, not only those it
changed. Names follow `step`'s rules (unique; a duplicate is an error naming both places).

```rhai
let h = cluster().host("web1");
let v = h.read_file("/srv/app/VERSION").trimmed();
if v == "1.1.0" {
    skip_step(`${h}: upgrade to 1.1.0`, `already at ${v}`);
} else {
    step(`${h}: upgrade to 1.1.0`, || h.run(["/srv/app/bin/upgrade", "1.1.0"]));
}
```"#,
        move |ctx: NativeCallContext, name: &str, reason: &str| -> R<()> {
            skip_step(&r, &ctx, name, reason)
        },
    );

    let r = run.clone();
    def(
        engine,
        "parallel",
        &["items: Array", "body: FnPtr", "Array"],
        r#"
Calls `body` once per item (usually hosts), at most `--parallelism` at a time, and returns the
results in item order. Every item runs even when one fails; then the first failure (in item order)
is raised and the others are logged. Return values from the body rather than changing captured
variables: bodies run on several threads. In simulation the items run one after another, in item
order, so that two rehearsals of one scenario give the same trace (the simulated clock adds up
every action either way).

```rhai
let versions = parallel(cluster().group("web"), |h| h.read_file("/srv/app/VERSION").trimmed());
log(`versions: ${versions}`);
```"#,
        move |ctx: NativeCallContext, items: Array, body: FnPtr| -> R<Array> {
            let n = items.len();
            if n == 0 {
                return Ok(Array::new());
            }
            // Simulation: one worker. The world is one lock and one clock, so threads would only
            // interleave the items' actions in an order that changes from one rehearsal to the next.
            let workers = if r.exec.mode() == Mode::Simulate {
                1
            } else {
                r.parallelism.min(n)
            };
            let engine = ctx.engine();
            // Volatile (not deprecated) API: the context store lets other threads call the closure.
            #[allow(deprecated)]
            let store = ctx.store_data();
            let parent_step = crate::action::current_step_shared();
            let next = AtomicUsize::new(0);
            let results: Vec<Mutex<Option<R<Dynamic>>>> =
                (0..n).map(|_| Mutex::new(None)).collect();
            std::thread::scope(|s| {
                for _ in 0..workers {
                    s.spawn(|| {
                        set_current_step(parent_step.clone());
                        // Captured variables are shared cells, and Rhai write-locks one for every
                        // method call on it: two threads calling `h.read(..)` on a captured `h`
                        // collide ("Data race detected"). Each worker gets its own copies, so
                        // bodies read captured values freely; changes to them stay in the worker
                        // (documented: return values instead).
                        let mut body = body.clone();
                        for v in body.iter_curry_mut() {
                            if v.is_shared() {
                                *v = v.flatten_clone();
                            }
                        }
                        loop {
                            let i = next.fetch_add(1, Ordering::SeqCst);
                            if i >= n {
                                break;
                            }
                            #[allow(deprecated)]
                            let c = store.create_context(engine);
                            let out = body.call_within_context::<Dynamic>(&c, (items[i].clone(),));
                            *crate::lock(&results[i]) = Some(out);
                        }
                    });
                }
            });
            let mut out = Array::with_capacity(n);
            let mut first_err = None;
            let mut failures = Vec::new();
            for (i, slot) in results.into_iter().enumerate() {
                match slot.into_inner().unwrap_or_else(|e| e.into_inner()) {
                    Some(Ok(v)) => out.push(v),
                    Some(Err(e)) => {
                        let (_, located) = super::errors::eval_error(&e, "", "");
                        failures.push(format!("item {i} ({}): {}", items[i], located.message));
                        first_err.get_or_insert(e);
                        out.push(Dynamic::UNIT);
                    }
                    None => out.push(Dynamic::UNIT),
                }
            }
            match first_err {
                None => Ok(out),
                Some(e) => {
                    if failures.len() > 1 {
                        r.log(
                            "error",
                            &format!(
                                "parallel: {} of {n} failed:\n  {}",
                                failures.len(),
                                failures.join("\n  ")
                            ),
                        );
                    }
                    Err(e)
                }
            }
        },
    );

    let r = run.clone();
    def(
        engine,
        "confirm",
        &["question: String", "bool"],
        r#"
Asks the operator before going on. Granted by `--yes`; in simulation and `--check` it is logged
and granted; with no terminal to ask and no `--yes` the run stops with a "declined" error.

```rhai
confirm("Stop the primary now?");
```"#,
        move |q: &str| -> R<bool> {
            if r.exec.mode() != Mode::Run {
                r.log(
                    "info",
                    &format!("confirm: {q} (granted: {:?} mode)", r.exec.mode()),
                );
                return Ok(true);
            }
            if r.confirm == ConfirmPolicy::Yes {
                r.log("info", &format!("confirm: {q} (granted by --yes)"));
                return Ok(true);
            }
            match ask_terminal(q) {
                None => Err(fault(
                    FaultKind::Declined,
                    None,
                    format!("confirmation needed: {q} (no terminal to ask; rerun with --yes to grant it)"),
                )),
                Some(true) => {
                    r.log("info", &format!("confirm: {q} (granted by the operator)"));
                    Ok(true)
                }
                Some(false) => Err(fault(FaultKind::Declined, None, format!("declined: {q}"))),
            }
        },
    );

    let r = run.clone();
    def(
        engine,
        "checking",
        &["bool"],
        r#"
Whether this is a `--check` run: reads are real, changes are recorded and skipped. What a step
verifies about its own changes (the version a restarted service reports, a wait for a parameter
it just set) is not there to read then; skip those checks and waits when `checking()`. False in
`run` and in `simulate` (where every change is applied to the simulated world).

```rhai
let h = cluster().host("web1");
step("restart web1", || {
    h.run(["app-ctl", "restart"]);
    if !checking() { h.wait_port(8080, #{ timeout: 60 }); }
});
```"#,
        move || r.exec.mode() == Mode::Check,
    );

    def(
        engine,
        "fail",
        &["message: String", "()"],
        r#"
Stops the playbook with an error at this line.

```rhai
let v = cluster().host("web1").read_file("/srv/app/VERSION").trimmed();
if v == "" { fail("web1 has an empty VERSION file"); }
```"#,
        |m: &str| -> R<()> { Err(fault(FaultKind::Script, None, m)) },
    );

    let r = run.clone();
    def(
        engine,
        "log",
        &["message: ?", "()"],
        r#"
Adds a line to the run's log (report, events, progress). Secrets are redacted.

```rhai
log("starting the web tier");
```"#,
        move |m: Dynamic| r.log("info", &m.to_string()),
    );

    let r = run.clone();
    def(
        engine,
        "warn",
        &["message: ?", "()"],
        r#"
Adds a warning to the run's log.

```rhai
warn("web2 has less than 10% free space");
```"#,
        move |m: Dynamic| r.log("warn", &m.to_string()),
    );
}

/// Asks `question [y/N]` on the terminal: `None` when there is no terminal to ask.
pub fn ask_terminal(question: &str) -> Option<bool> {
    if !std::io::stdin().is_terminal() {
        return None;
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    Some(matches!(line.trim(), "y" | "Y" | "yes"))
}

/// Takes `name` for this run's step book: a second use is an error naming the first place.
fn claim_name(r: &RunCtx, name: &str, here: Option<SourcePos>) -> R<()> {
    let mut book = crate::lock(&r.steps);
    if let Some(first) = book.keys.get(name) {
        let first = first
            .as_ref()
            .map_or("an earlier call".to_string(), |p| p.to_string());
        return Err(fault(
            FaultKind::Script,
            None,
            format!(
                "duplicate step name `{name}` (first used at {first}); step names must be unique"
            ),
        ));
    }
    book.keys.insert(name.to_string(), here);
    Ok(())
}

/// A journal write that failed: no action runs after it, and the script sees why.
fn journal_fault(r: &RunCtx, e: crate::Error) -> Box<EvalAltResult> {
    r.exec.journal_failed(&e);
    fault(FaultKind::Journal, None, e.to_string())
}

/// `skip_step(name, reason)`: a step record that ran nothing, journaled like any other.
fn skip_step(r: &Arc<RunCtx>, ctx: &NativeCallContext, name: &str, reason: &str) -> R<()> {
    if r.replay == Replay::Rollback {
        // A rollback replays the top-level code only up to its first step, and records nothing.
        return Ok(());
    }
    claim_name(r, name, call_pos(ctx))?;
    let at_ms = r.exec.now().as_millis() as u64;
    let journal = r.exec.journal().cloned();
    let rec = StepRecord {
        name: name.to_string(),
        status: StepStatus::Skipped,
        at_ms,
        duration_ms: 0,
        hosts: Vec::new(),
        actions: 0,
        error: None,
        attempt: journal.as_ref().map_or(1, |j| j.attempt),
        reason: Some(r.exec.inventory().redactor.redact(reason)),
    };
    if let Some(j) = &journal {
        // Its reason is kept as the step's result (a skipped step has no other).
        let reason = serde_json::Value::String(rec.reason.clone().unwrap_or_default());
        j.journal
            .step_started(&j.run_id, name, j.attempt, at_ms)
            .and_then(|()| j.journal.step_finished(&j.run_id, &rec, Some(&reason)))
            .map_err(|e| journal_fault(r, e))?;
    }
    r.events.emit(&Event::StepNotNeeded {
        step: name.to_string(),
        reason: rec.reason.clone().unwrap_or_default(),
    });
    crate::lock(&r.steps).records.push(rec);
    Ok(())
}

/// `step(name, body)`: journal lookup (resume), the stop check, the body, the journal write.
fn run_step(r: &Arc<RunCtx>, ctx: &NativeCallContext, name: &str, body: FnPtr) -> R<Dynamic> {
    let here = call_pos(ctx);
    // A resume or a rollback rebuilds journaled closures and runs them in the context of the
    // replayed playbook's first step (its top-level imports are in scope there). A fresh run
    // holds its closures live, each with its own context, and needs none.
    if r.replay != Replay::Fresh {
        r.recovery.remember_context(ctx);
    }
    if r.replay == Replay::Rollback {
        // `capstan rollback`: the top-level code has run up to here; the rollback takes over.
        return Err(Box::new(EvalAltResult::ErrorTerminated(
            ROLLBACK_TOKEN.into(),
            ctx.call_position(),
        )));
    }
    claim_name(r, name, here)?;
    if r.exec.cancel().is_stopping() {
        let id = r.exec.journal().map_or(String::new(), |j| j.run_id.clone());
        return Err(fault(
            FaultKind::Interrupted,
            None,
            format!(
                "stopped before step `{name}` (Ctrl-C); `capstan resume {id}` goes on from here"
            ),
        ));
    }
    if r.replay == Replay::Resume {
        r.recheck_guards(ctx)?;
    }
    let journal = r.exec.journal().cloned();
    if let (Replay::Resume, Some(j)) = (r.replay, &journal) {
        let done = j
            .journal
            .step(&j.run_id, name)
            .map_err(|e| fault(FaultKind::Action, None, e.to_string()))?
            .filter(|s| s.status == StepStatus::Ok);
        if let Some(s) = done {
            r.events.emit(&Event::StepSkipped {
                step: name.to_string(),
                done_in_attempt: s.attempt,
            });
            let value = s.result.unwrap_or(serde_json::Value::Null);
            return from_json(&value, r).map_err(|m| {
                fault(
                    FaultKind::Script,
                    None,
                    format!(
                        "step `{name}` is done, but its journaled result cannot be read back: {m}"
                    ),
                )
            });
        }
    }
    let at_ms = r.exec.now().as_millis() as u64;
    let index = {
        let mut book = crate::lock(&r.steps);
        book.records.push(StepRecord {
            name: name.to_string(),
            status: StepStatus::Running,
            at_ms,
            duration_ms: 0,
            hosts: Vec::new(),
            actions: 0,
            error: None,
            attempt: journal.as_ref().map_or(1, |j| j.attempt),
            reason: None,
        });
        book.records.len() - 1
    };
    if let Some(j) = &journal {
        // Journaled before the body runs: a crash inside it leaves the step marked running.
        j.journal
            .step_started(&j.run_id, name, j.attempt, at_ms)
            .map_err(|e| journal_fault(r, e))?;
    }
    r.events.emit(&Event::StepStarted {
        step: name.to_string(),
        at_ms,
    });
    let prev = set_current_step(Some(name.into()));
    let result = body.call_within_context::<Dynamic>(ctx, ());
    set_current_step(prev);
    match &result {
        Ok(v) => {
            let p = to_json(v, r);
            if let Some(why) = &p.lossy {
                r.log(
                    "warn",
                    &format!("step `{name}`: its result is journaled inexactly ({why}); a resume reads back that form"),
                );
            }
            finish_step(r, index, None, Some(&p.value));
        }
        Err(e) => {
            let (_, located) = super::errors::eval_error(e, "", "");
            finish_step(r, index, Some(located.message), None);
        }
    }
    result
}
