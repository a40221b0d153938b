//! The way back: `undo`, `guard`, `restore_guard`, and the rollback and guard-restore runners.
//!
//! Every undo and guard is journaled the moment it is registered, as data (`UndoSpec`): actions
//! for primitives, a closure's name and captured values for scripts. In the process that
//! registered them the live closure runs in the script context it was made in; a later process
//! (resume, `capstan rollback`) rebuilds it from the journal and runs it in the context of the
//! replayed playbook's first `step` call, where the playbook's imports are in scope.
#![allow(deprecated)] // NativeCallContextStore is volatile (rhai `internals`), not deprecated.

use crate::lock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rhai::{Dynamic, Engine, EvalAltResult, FnPtr, NativeCallContext, NativeCallContextStore};

use super::persist::{closure_from_spec, closure_spec, freeze};
use super::{def, fault, RunCtx};
use crate::action::{current_step, set_current_step, Action};
use crate::error::FaultKind;
use crate::journal::{
    ClosureSpec, GuardStatus, NewUndo, RunJournal, UndoRow, UndoSpec, UndoStatus,
};
use crate::report::{Event, GuardPhase, RollbackPhase, UndoPhase};
use crate::Mode;

type R<T> = Result<T, Box<EvalAltResult>>;

/// A closure and the script context to call it in.
struct Live {
    f: FnPtr,
    ctx: NativeCallContextStore,
}

/// The live side of undos and guards for one process.
#[derive(Default)]
pub(crate) struct Recovery {
    undos: Mutex<HashMap<u64, Live>>,
    /// Each guard's restore closure (its `set` is needed again only by a resume, which rebuilds it).
    guards: Mutex<HashMap<String, Live>>,
    /// The context of the first `step` call of a resume or rollback: journaled closures are
    /// rebuilt and run in it.
    context: Mutex<Option<NativeCallContextStore>>,
    /// A resumed run sets the guards an earlier attempt left set again, once, at its first step.
    rechecked: AtomicBool,
    /// Numbers the copies primitives keep for their undos.
    keep_seq: AtomicU64,
    /// Set while undos or guard restores run: what they change registers no undo of its own
    /// (a second rollback must not undo the first).
    cleaning: AtomicBool,
}

/// Sets `Recovery::cleaning` for as long as it lives.
struct Cleaning<'a>(&'a AtomicBool);

impl<'a> Cleaning<'a> {
    fn start(flag: &'a AtomicBool) -> Self {
        flag.store(true, Ordering::SeqCst);
        Cleaning(flag)
    }
}

impl Drop for Cleaning<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// What a rollback did.
#[derive(Debug, Default, Clone)]
pub struct RollbackSummary {
    pub undone: usize,
    pub failed: usize,
    /// Why no undo could start (the hosts are locked by another run, the journal cannot be
    /// written): every undo stays pending for a later `capstan rollback`.
    pub refused: Option<crate::action::Fault>,
}

/// The store is how a script context outlives the call it was made in.
fn store(ctx: &NativeCallContext) -> NativeCallContextStore {
    ctx.store_data()
}

fn call(engine: &Engine, live: &Live) -> R<Dynamic> {
    let c = live.ctx.create_context(engine);
    live.f.call_within_context::<Dynamic>(&c, ())
}

/// The message of a script error, without Rhai's wrapping.
fn message(e: &EvalAltResult) -> String {
    crate::error::script_failure(e).1
}

impl Recovery {
    /// Remembers the context of the first `step` call (see the module doc).
    pub(crate) fn remember_context(&self, ctx: &NativeCallContext) {
        lock(&self.context).get_or_insert_with(|| store(ctx));
    }

    /// A journaled closure rebuilt and bound to the remembered context.
    fn rebuild(&self, spec: &ClosureSpec, run: &Arc<RunCtx>) -> Result<Live, String> {
        let mut ctx = lock(&self.context).clone().ok_or_else(|| {
            "no script context to run it in (the replayed playbook reached no step)".to_string()
        })?;
        let f = closure_from_spec(spec, run, &mut ctx)?;
        Ok(Live { f, ctx })
    }

    /// Runs `live`, the closure this process registered, or else the journaled `spec` rebuilt.
    fn run_closure(
        &self,
        engine: &Engine,
        run: &Arc<RunCtx>,
        live: Option<Live>,
        spec: &ClosureSpec,
    ) -> Result<(), String> {
        let live = match live {
            Some(l) => l,
            None => self.rebuild(spec, run)?,
        };
        call(engine, &live).map(|_| ()).map_err(|e| message(&e))
    }
}

impl RunCtx {
    /// Whether changes made now register undos: not under `--check` (nothing changes), not while
    /// undos or guard restores run, not without a journal.
    pub(crate) fn registers_undos(&self) -> bool {
        self.exec.mode() != Mode::Check
            && !self.recovery.cleaning.load(Ordering::SeqCst)
            && self.exec.journal().is_some()
    }

    /// Where a primitive keeps the old content of `path` for its undo: beside it, named by run,
    /// attempt and a counter. `None` when no undo is registered (see `registers_undos`).
    pub(crate) fn undo_keep_path(&self, path: &str) -> Option<String> {
        if !self.registers_undos() {
            return None;
        }
        let j = self.exec.journal()?;
        let n = self.recovery.keep_seq.fetch_add(1, Ordering::SeqCst);
        Some(format!(
            "{}.capstan-undo-{}-{}-{n}",
            path.trim_end_matches('/'),
            j.run_id,
            j.attempt
        ))
    }

    /// Journals an undo made of actions on one host. Mutating primitives call this before their
    /// change, with an undo that is safe whether or not the change then happens.
    pub(crate) fn register_action_undo(
        &self,
        host: &str,
        description: String,
        actions: Vec<Action>,
    ) {
        let spec = UndoSpec::Actions {
            host: host.to_string(),
            actions: actions
                .iter()
                .map(|a| serde_json::to_value(a).unwrap_or_default())
                .collect(),
        };
        self.journal_undo(Some(host), description, &spec);
    }

    fn journal_undo(
        &self,
        host: Option<&str>,
        description: String,
        spec: &UndoSpec,
    ) -> Option<u64> {
        if !self.registers_undos() {
            return None;
        }
        let j = self.exec.journal()?;
        let description = self.exec.inventory().redactor.redact(&description);
        let step = current_step();
        let at = self.exec.now().as_millis() as u64;
        match j.journal.add_undo(
            &j.run_id,
            j.attempt,
            &NewUndo {
                step: step.as_deref(),
                host,
                description: &description,
                spec,
                at_ms: at,
            },
        ) {
            Ok(id) => {
                if let UndoSpec::Closure(c) | UndoSpec::Gate(c) = spec {
                    lock(&self.lists).stored(&c.lists);
                }
                self.events.emit(&Event::Undo {
                    id,
                    phase: UndoPhase::Registered,
                    step,
                    host: host.map(str::to_string),
                    description,
                    error: None,
                });
                Some(id)
            }
            Err(e) => {
                self.exec.journal_failed(&e);
                None
            }
        }
    }

    /// Runs every pending undo of the run, newest first, across hosts; journals each. An undo
    /// that fails is reported and the rest still run.
    pub(crate) fn rollback(self: &Arc<Self>, engine: &Engine) -> RollbackSummary {
        let _cleaning = Cleaning::start(&self.recovery.cleaning);
        let mut sum = RollbackSummary::default();
        let Some(j) = self.exec.journal().cloned() else {
            return sum;
        };
        let undos = match j.journal.undos(&j.run_id) {
            Ok(u) => u,
            Err(e) => {
                self.exec.journal_failed(&e);
                return sum;
            }
        };
        // A barrier stops every rollback, the first and any later one; a gate checks every one.
        let (gates, pending): (Vec<_>, Vec<_>) = undos
            .into_iter()
            .filter(|u| {
                u.status == UndoStatus::Pending
                    || matches!(u.spec, UndoSpec::Barrier { .. } | UndoSpec::Gate(_))
            })
            .partition(|u| matches!(u.spec, UndoSpec::Gate(_)));
        self.events.emit(&Event::Rollback {
            phase: RollbackPhase::Started,
            undone: 0,
            failed: 0,
        });
        let work = pending
            .iter()
            .any(|u| !matches!(u.spec, UndoSpec::Barrier { .. }));
        if work && !self.gates_pass(engine, &j, &gates) {
            sum.failed += 1;
            self.events.emit(&Event::Rollback {
                phase: RollbackPhase::Finished,
                undone: 0,
                failed: sum.failed,
            });
            return sum;
        }
        // The hosts' locks are asked for before the first undo, as a run's first change does:
        // refused, every undo stays pending (each would otherwise fail on its own, and be
        // journaled as failed, which no later rollback retries).
        if work {
            if let Err(f) = self.exec.ready_to_change() {
                self.log(
                    "error",
                    &format!(
                        "the rollback did not start; every undo stays pending: {}",
                        f.message
                    ),
                );
                sum.refused = Some(f);
                self.events.emit(&Event::Rollback {
                    phase: RollbackPhase::Finished,
                    undone: 0,
                    failed: 0,
                });
                return sum;
            }
        }
        self.log(
            "warn",
            &format!("rolling back: {} undo(s), newest first", pending.len()),
        );
        for (k, u) in pending.iter().enumerate().rev() {
            if let UndoSpec::Barrier { reason } = &u.spec {
                sum.failed += 1;
                let m = format!(
                    "no way back past this point: {reason}; the rollback stops here and {k} older undo(s) stay pending"
                );
                self.log(
                    "error",
                    &format!("rollback stopped at #{} ({}): {m}", u.id, u.description),
                );
                self.undo_finished(&j, u, UndoStatus::Failed, UndoPhase::Failed, Some(m));
                break;
            }
            let prev = set_current_step(Some(format!("undo #{}: {}", u.id, u.description).into()));
            let result: Result<(), String> = match &u.spec {
                UndoSpec::Actions { host, actions } => actions.iter().try_for_each(|a| {
                    let a: Action = serde_json::from_value(a.clone())
                        .map_err(|e| format!("its action cannot be read from the journal: {e}"))?;
                    self.exec
                        .perform(host, a)
                        .map(|_| ())
                        .map_err(|f| f.message)
                }),
                UndoSpec::Closure(spec) => {
                    let live = lock(&self.recovery.undos).remove(&u.id);
                    self.recovery.run_closure(engine, self, live, spec)
                }
                UndoSpec::Barrier { .. } | UndoSpec::Gate(_) => Ok(()),
            };
            set_current_step(prev);
            let (status, phase, error) = match &result {
                Ok(()) => {
                    sum.undone += 1;
                    (UndoStatus::Done, UndoPhase::Done, None)
                }
                Err(m) => {
                    sum.failed += 1;
                    let m = self.exec.inventory().redactor.redact(m);
                    self.log(
                        "error",
                        &format!("could not undo #{} ({}): {m}", u.id, u.description),
                    );
                    (UndoStatus::Failed, UndoPhase::Failed, Some(m))
                }
            };
            self.undo_finished(&j, u, status, phase, error);
        }
        self.events.emit(&Event::Rollback {
            phase: RollbackPhase::Finished,
            undone: sum.undone,
            failed: sum.failed,
        });
        sum
    }

    /// Journals how undo (or gate) `u` ended and reports it.
    fn undo_finished(
        &self,
        j: &RunJournal,
        u: &UndoRow,
        status: UndoStatus,
        phase: UndoPhase,
        error: Option<String>,
    ) {
        if let Err(e) = j
            .journal
            .undo_finished(&j.run_id, u.id, status, error.as_deref())
        {
            self.exec.journal_failed(&e);
        }
        self.events.emit(&Event::Undo {
            id: u.id,
            phase,
            step: u.step.clone(),
            host: u.host.clone(),
            description: u.description.clone(),
            error,
        });
    }

    /// Runs every rollback gate, newest first; all of them, so that the refusal names every
    /// reason at once. False when one failed: then nothing may be undone.
    fn gates_pass(self: &Arc<Self>, engine: &Engine, j: &RunJournal, gates: &[UndoRow]) -> bool {
        let mut refused = Vec::new();
        for u in gates.iter().rev() {
            let UndoSpec::Gate(spec) = &u.spec else {
                continue;
            };
            let prev = set_current_step(Some(
                format!("before the rollback: {}", u.description).into(),
            ));
            let live = lock(&self.recovery.undos).remove(&u.id);
            let result = self.recovery.run_closure(engine, self, live, spec);
            set_current_step(prev);
            let (status, phase, error) = match result {
                Ok(()) => (UndoStatus::Done, UndoPhase::Done, None),
                Err(m) => {
                    let m = self.exec.inventory().redactor.redact(&m);
                    refused.push(format!("{} ({m})", u.description));
                    (UndoStatus::Failed, UndoPhase::Failed, Some(m))
                }
            };
            self.undo_finished(j, u, status, phase, error);
        }
        if refused.is_empty() {
            return true;
        }
        self.log(
            "error",
            &format!(
                "rollback refused before any undo ran: {}; nothing was undone and every undo stays pending: fix that, then `capstan rollback {}` checks again",
                refused.join("; "),
                j.run_id
            ),
        );
        false
    }

    /// Restores every guard still set, newest first. Returns how many could not be restored.
    pub(crate) fn restore_guards(self: &Arc<Self>, engine: &Engine) -> usize {
        let _cleaning = Cleaning::start(&self.recovery.cleaning);
        let Some(j) = self.exec.journal().cloned() else {
            return 0;
        };
        let guards = j.journal.guards(&j.run_id).unwrap_or_else(|e| {
            self.exec.journal_failed(&e);
            Vec::new()
        });
        let mut failed = 0;
        for g in guards.iter().rev().filter(|g| g.status.in_effect()) {
            if self
                .restore_one(engine, &g.name, &g.restore_fn, GuardStatus::Restored)
                .is_err()
            {
                failed += 1;
            }
        }
        failed
    }

    fn restore_one(
        self: &Arc<Self>,
        engine: &Engine,
        name: &str,
        spec: &ClosureSpec,
        done: GuardStatus,
    ) -> Result<(), String> {
        let live = lock(&self.recovery.guards).remove(name);
        let prev = set_current_step(Some(format!("guard restore: {name}").into()));
        let result = self.recovery.run_closure(engine, self, live, spec);
        set_current_step(prev);
        let (status, phase, error) = match &result {
            Ok(()) => (done, GuardPhase::Restored, None),
            Err(m) => {
                let m = self.exec.inventory().redactor.redact(m);
                self.log(
                    "error",
                    &format!("guard `{name}` could not be restored: {m}; it is still in effect"),
                );
                (
                    GuardStatus::RestoreFailed,
                    GuardPhase::RestoreFailed,
                    Some(m),
                )
            }
        };
        if let Some(j) = self.exec.journal() {
            if let Err(e) = j
                .journal
                .guard_finished(&j.run_id, name, status, error.as_deref())
            {
                self.exec.journal_failed(&e);
            }
        }
        self.events.emit(&Event::Guard {
            name: name.to_string(),
            phase,
            error,
        });
        result
    }

    /// On resume, at the first step: every guard an earlier attempt set (and did not release
    /// with `restore_guard`) is set again before anything else, whether that attempt was killed
    /// with it set (it may have been flipped back meanwhile) or restored it on its way out (the
    /// steps that set it are done and will not run again).
    pub(crate) fn recheck_guards(self: &Arc<Self>, ctx: &NativeCallContext) -> R<()> {
        if self.recovery.rechecked.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let Some(j) = self.exec.journal().cloned() else {
            return Ok(());
        };
        let guards = j
            .journal
            .guards(&j.run_id)
            .map_err(|e| fault(FaultKind::Action, None, e.to_string()))?;
        for g in guards.iter().filter(|g| g.status != GuardStatus::Released) {
            let mut here = store(ctx);
            let (set, restore) = match (
                closure_from_spec(&g.set_fn, self, &mut here),
                closure_from_spec(&g.restore_fn, self, &mut here),
            ) {
                (Ok(s), Ok(r)) => (s, r),
                (Err(m), _) | (_, Err(m)) => {
                    return Err(fault(
                        FaultKind::Script,
                        None,
                        format!(
                            "guard `{}` left set by an earlier attempt cannot be checked: {m}",
                            g.name
                        ),
                    ))
                }
            };
            if let Err(e) = j.journal.guard_set(
                &j.run_id,
                &g.name,
                g.step.as_deref(),
                &g.set_fn,
                &g.restore_fn,
            ) {
                self.exec.journal_failed(&e);
            }
            let _ = set.call_within_context::<Dynamic>(&here.create_context(ctx.engine()), ())?;
            lock(&self.recovery.guards).insert(
                g.name.clone(),
                Live {
                    f: restore,
                    ctx: here,
                },
            );
            if let Err(e) = j.journal.guard_rechecked(&j.run_id, &g.name) {
                self.exec.journal_failed(&e);
            }
            self.log(
                "info",
                &format!("guard `{}` (set by an earlier attempt) set again", g.name),
            );
            self.events.emit(&Event::Guard {
                name: g.name.clone(),
                phase: GuardPhase::Rechecked,
                error: None,
            });
        }
        Ok(())
    }
}

pub(super) fn register(engine: &mut Engine, run: &Arc<RunCtx>) {
    let r = run.clone();
    let undo_doc = r#"
Registers a way back for what the current step just changed. Rollback (`--on-failure rollback`,
`capstan rollback RUN`) runs every undo of the run, newest first, across all hosts. The closure is
journaled with the values it captured (as they are now), so a later process can still run it after
a crash; hosts and `secret(..)` values are kept by name. Undos must be safe to run twice. Only
inside a step; not registered under `--check`, where nothing changed.

```rhai
let h = cluster().host("web1");
step("stop web1", || {
    h.run(["app-ctl", "stop"]);
    undo(|| h.run(["app-ctl", "start"]));
});
```"#;
    def(
        engine,
        "undo",
        &["body: FnPtr", "()"],
        undo_doc,
        move |ctx: NativeCallContext, body: FnPtr| -> R<()> { register_undo(&r, &ctx, None, body) },
    );
    let r = run.clone();
    def(
        engine,
        "undo",
        &["description: String", "body: FnPtr", "()"],
        undo_doc,
        move |ctx: NativeCallContext, what: &str, body: FnPtr| -> R<()> {
            register_undo(&r, &ctx, Some(what), body)
        },
    );

    let r = run.clone();
    def(
        engine,
        "no_way_back",
        &["reason: String", "()"],
        r#"
Marks a point of no return: what the current step just did cannot be undone (OceanBase's `end
rolling upgrade` moves `min_observer_version`, after which no binary goes back). A rollback
runs the undos registered after this point, newest first, then stops here with `reason` (the
plan and the report say so), and the undos registered before it stay pending: undoing them now
would do harm. Only inside a step; not registered under `--check`.

```rhai
step("commit the upgrade", || {
    no_way_back("the cluster version moved to 4.2.1.8: restore from a backup or a standby instead");
});
```"#,
        move |reason: &str| -> R<()> {
            if current_step().is_none() {
                return Err(fault(
                    FaultKind::Script,
                    None,
                    "no_way_back() belongs inside a step: it marks what that step did",
                ));
            }
            if r.exec.mode() == Mode::Check {
                return Ok(());
            }
            r.journal_undo(
                None,
                format!("no way back: {reason}"),
                &UndoSpec::Barrier {
                    reason: reason.to_string(),
                },
            );
            Ok(())
        },
    );

    let r = run.clone();
    def(
        engine,
        "rollback_gate",
        &["description: String", "check: FnPtr", "()"],
        r#"
Registers a check that every rollback of this run makes before it undoes anything: when `check`
fails, the rollback refuses as a whole, naming `description` and the error, nothing is undone and
every undo stays pending (fix the cause, then `capstan rollback RUN` checks again). For a way back
that is safe only under a condition the vendor states (OMS: no project created on the new
version), decided before the first node is touched rather than after half of them. Gates run
only when there is something to undo, all of them (the refusal lists every reason). Journaled
like an undo; only inside a step; not registered under `--check`.

```rhai
let h = cluster().host("web1");
step("precheck", || {
    rollback_gate("no data written since the upgrade", || {
        if h.exists("/srv/app/new-data") { fail("data was written on the new version"); }
    });
});
```"#,
        move |ctx: NativeCallContext, what: &str, body: FnPtr| -> R<()> {
            if current_step().is_none() {
                return Err(fault(
                    FaultKind::Script,
                    None,
                    "rollback_gate() belongs inside a step",
                ));
            }
            if r.exec.mode() == Mode::Check {
                return Ok(());
            }
            let body = freeze(&body);
            let spec = closure_spec(&body, &r, &ctx);
            if let Some(why) = &spec.not_restorable {
                r.log(
                    "warn",
                    &format!(
                        "this rollback gate cannot be run by another process after a crash: {why}"
                    ),
                );
            }
            if let Some(id) = r.journal_undo(
                None,
                format!("rollback gate: {what}"),
                &UndoSpec::Gate(spec),
            ) {
                lock(&r.recovery.undos).insert(
                    id,
                    Live {
                        f: body,
                        ctx: store(&ctx),
                    },
                );
            }
            Ok(())
        },
    );

    let r = run.clone();
    def(
        engine,
        "guard",
        &["name: String", "set: FnPtr", "restore: FnPtr", "()"],
        r#"
Turns a dangerous toggle on for the rest of the run (`auto_failover` off, OMS HA off, OceanBase
upgrade mode) and promises it is turned back: `restore` runs when the run ends, whether it
succeeds, fails, rolls back or is stopped with Ctrl-C. Both closures are journaled. A resume calls
`set` again before its first step (the steps that set it are done, and after a `kill -9` the toggle
may have been flipped meanwhile), unless the script released it with `restore_guard`;
`capstan rollback` restores it. A guard still set is shown in red by `capstan runs`. Calling
`guard` again with the same name sets it again. Both closures must be safe to run twice.

```rhai
let h = cluster().host("web1");
step("maintenance on", || {
    guard("maintenance",
        || h.run(["app-ctl", "maintenance", "on"]),
        || h.run(["app-ctl", "maintenance", "off"]));
});
```"#,
        move |ctx: NativeCallContext, name: &str, set: FnPtr, restore: FnPtr| -> R<()> {
            if r.exec.mode() == Mode::Check {
                r.log(
                    "info",
                    &format!("guard `{name}`: would be set (check mode)"),
                );
                return Ok(());
            }
            let (set, restore) = (freeze(&set), freeze(&restore));
            let (s_spec, r_spec) = (
                closure_spec(&set, &r, &ctx),
                closure_spec(&restore, &r, &ctx),
            );
            if let Some(why) = s_spec
                .not_restorable
                .as_ref()
                .or(r_spec.not_restorable.as_ref())
            {
                r.log(
                    "warn",
                    &format!("guard `{name}` cannot be restored by another process: {why}"),
                );
            }
            // Journaled before `set` runs: a set that fails halfway is still restored.
            if let Some(j) = r.exec.journal() {
                if let Err(e) = j.journal.guard_set(
                    &j.run_id,
                    name,
                    current_step().as_deref(),
                    &s_spec,
                    &r_spec,
                ) {
                    r.exec.journal_failed(&e);
                    return Err(fault(FaultKind::Action, None, e.to_string()));
                }
                let mut lists = lock(&r.lists);
                lists.stored(&s_spec.lists);
                lists.stored(&r_spec.lists);
            }
            lock(&r.recovery.guards).insert(
                name.to_string(),
                Live {
                    f: restore,
                    ctx: store(&ctx),
                },
            );
            r.events.emit(&Event::Guard {
                name: name.to_string(),
                phase: GuardPhase::Set,
                error: None,
            });
            set.call_within_context::<Dynamic>(&ctx, ()).map(|_| ())
        },
    );

    let r = run.clone();
    def(
        engine,
        "restore_guard",
        &["name: String", "()"],
        r#"
Restores a guard now, before the run ends (for a toggle needed only by some steps).

```rhai
let h = cluster().host("web1");
step("maintenance window", || {
    guard("maintenance",
        || h.run(["app-ctl", "maintenance", "on"]),
        || h.run(["app-ctl", "maintenance", "off"]));
    h.run(["app-ctl", "reindex"]);
    restore_guard("maintenance");
});
```"#,
        move |ctx: NativeCallContext, name: &str| -> R<()> {
            if r.exec.mode() == Mode::Check {
                return Ok(());
            }
            let spec = r
                .exec
                .journal()
                .and_then(|j| j.journal.guards(&j.run_id).ok())
                .and_then(|g| {
                    g.into_iter()
                        .find(|g| g.name == name && g.status.in_effect())
                });
            let Some(g) = spec else {
                return Err(fault(
                    FaultKind::Script,
                    None,
                    format!("no guard `{name}` is set"),
                ));
            };
            r.restore_one(ctx.engine(), name, &g.restore_fn, GuardStatus::Released)
                .map_err(|m| fault(FaultKind::Action, None, format!("guard `{name}`: {m}")))
        },
    );
}

fn register_undo(
    r: &Arc<RunCtx>,
    ctx: &NativeCallContext,
    what: Option<&str>,
    body: FnPtr,
) -> R<()> {
    if current_step().is_none() {
        return Err(fault(
            FaultKind::Script,
            None,
            "undo() belongs inside a step: it undoes what that step changed",
        ));
    }
    if r.exec.mode() == Mode::Check {
        return Ok(());
    }
    let body = freeze(&body);
    let spec = closure_spec(&body, r, ctx);
    if let Some(why) = &spec.not_restorable {
        r.log(
            "warn",
            &format!("this undo cannot be run by another process after a crash: {why}"),
        );
    }
    let description = match (what, &spec.at) {
        (Some(w), _) => w.to_string(),
        (None, Some(at)) => format!("undo at {at}"),
        (None, None) => "undo".to_string(),
    };
    if let Some(id) = r.journal_undo(None, description, &UndoSpec::Closure(spec)) {
        lock(&r.recovery.undos).insert(
            id,
            Live {
                f: body,
                ctx: store(ctx),
            },
        );
    }
    Ok(())
}
