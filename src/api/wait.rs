//! Bounded waits: `wait::poll` and `wait::sleep`. Simulated time moves instead of sleeping.

use std::sync::Arc;
use std::time::Duration;

use rhai::{Dynamic, Engine, EvalAltResult, FnPtr, Map, Module, NativeCallContext};

use super::opts::{to_duration, Opts};
use super::{at, def_in, fault, RunCtx};
use crate::error::FaultKind;
use crate::report::Event;

type R<T> = Result<T, Box<EvalAltResult>>;

fn truthy(v: &Dynamic) -> bool {
    if let Ok(b) = v.as_bool() {
        return b;
    }
    !v.is_unit()
}

pub(super) fn register(engine: &mut Engine, run: &Arc<RunCtx>) {
    let mut m = Module::new();
    let r = run.clone();
    def_in(
        &mut m,
        "poll",
        &["options: Map", "condition: FnPtr", "?"],
        r#"
Calls `condition` until it returns `true` (or any value other than `false` and `()`), and returns
that value. Bounded: `timeout` (default 300 s) and `every` (default 2 s) are seconds or strings such
as "5m". `what` names the wait in the timeout error, which also shows the last value seen. An error
raised by the condition stops the wait unless `ignore_errors: true` (then it is shown on timeout).

```rhai
let h = cluster().host("web1");
wait::poll(#{ timeout: 60, every: 1, what: "web1 serving" }, || h.exists("/srv/app/VERSION"));
```"#,
        move |ctx: NativeCallContext, opts: Map, cond: FnPtr| -> R<Dynamic> {
            poll(&r, &ctx, opts, cond).map_err(|e| at(e, ctx.call_position()))
        },
    );

    let r = run.clone();
    def_in(
        &mut m,
        "sleep",
        &["duration: ?", "()"],
        r#"
Pauses the playbook (seconds, or a string such as "30s"). In simulation the clock moves instead.

```rhai
wait::sleep(1);
```"#,
        move |ctx: NativeCallContext, d: Dynamic| -> R<()> {
            let d = to_duration(&d).map_err(|m| {
                at(
                    super::bad_input(format!("wait::sleep: {m}")),
                    ctx.call_position(),
                )
            })?;
            r.exec
                .sleep(d)
                .map_err(|f| at(f.into(), ctx.call_position()))
        },
    );
    let r = run.clone();
    def_in(
        &mut m,
        "clock",
        &["float"],
        r#"
Seconds since the Unix epoch (a float): the wall clock, or in simulation the moment the run
started plus the simulated time. Read it twice to measure how long something took, e.g. how long
a setting was off; keep a value that must survive a resume as a step's result.

```rhai
let t1 = wait::clock();
wait::sleep(2);
if wait::clock() - t1 < 2.0 { fail("the clock went backwards"); }
```"#,
        move || -> f64 { r.exec.clock() },
    );
    super::sql::register_wait(&mut m, run);
    engine.register_static_module("wait", m.into());
}

/// How a bounded wait is paced: `timeout` in all, a try every `every` (options of the same names).
pub(super) struct Pace {
    pub timeout: Duration,
    pub every: Duration,
}

impl Pace {
    /// Reads `timeout` (default `timeout`) and `every` (default 2 s, at least 10 ms).
    pub fn from_opts(o: &Opts, timeout: Duration) -> R<Pace> {
        Ok(Pace {
            timeout: o.duration("timeout")?.unwrap_or(timeout),
            every: o
                .duration("every")?
                .unwrap_or(Duration::from_secs(2))
                .max(Duration::from_millis(10)),
        })
    }
}

/// Tries until `attempt` gives a value (`Ok(Ok(v))`) or the time is up: then the error
/// `timed_out` makes from what the last try saw (`Ok(Err(seen))`). An error stops the wait.
/// Waits move the simulated clock in simulation.
/// Each failed try is a `waiting` event (what, attempt, time left): the live progress line and
/// the heartbeat show it.
pub(super) fn until<T>(
    r: &RunCtx,
    pace: &Pace,
    what: &str,
    mut attempt: impl FnMut() -> R<Result<T, String>>,
    timed_out: impl FnOnce(String) -> Box<EvalAltResult>,
) -> R<T> {
    let start = r.exec.now();
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let last = match attempt()? {
            Ok(v) => return Ok(v),
            Err(seen) => seen,
        };
        let waited = r.exec.now().saturating_sub(start);
        if waited >= pace.timeout {
            return Err(timed_out(last));
        }
        let redact = |t: &str| r.exec.inventory().redactor.redact(t);
        r.events.emit(&Event::Waiting {
            step: crate::action::current_step(),
            what: redact(what),
            attempt: attempts,
            waited_ms: waited.as_millis() as u64,
            timeout_ms: pace.timeout.as_millis() as u64,
            every_ms: pace.every.as_millis() as u64,
            last: redact(&last.chars().take(200).collect::<String>()),
        });
        r.exec.sleep(pace.every.min(pace.timeout - waited))?;
    }
}

/// What a failed try shows on timeout, when errors are waited through (`ignore_errors`).
pub(super) fn seen_error(e: &EvalAltResult) -> String {
    format!("error: {}", crate::error::script_failure(e).1)
}

fn poll(r: &RunCtx, ctx: &NativeCallContext, opts: Map, cond: FnPtr) -> R<Dynamic> {
    let o = Opts::new(
        "wait::poll",
        opts,
        &["timeout", "every", "what", "ignore_errors"],
    )?;
    let pace = Pace::from_opts(&o, Duration::from_secs(300))?;
    let what = o.string("what")?.unwrap_or_else(|| "the condition".into());
    let ignore_errors = o.bool("ignore_errors")?.unwrap_or(false);
    until(
        r,
        &pace,
        &what,
        || match cond.call_within_context::<Dynamic>(ctx, ()) {
            Ok(v) if truthy(&v) => Ok(Ok(v)),
            Ok(v) => Ok(Err(format!("{v:?}"))),
            Err(e) if ignore_errors => Ok(Err(seen_error(&e))),
            Err(e) => Err(e),
        },
        |last| {
            fault(
                FaultKind::Timeout,
                None,
                format!(
                    "gave up waiting for {what} after {}s; last seen: {last}",
                    pace.timeout.as_secs_f64()
                ),
            )
        },
    )
}
