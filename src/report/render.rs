//! Text for people: the end-of-run report and the live one-line-per-step progress on stderr.

use std::time::Duration;

use super::live::Live;
use super::table::layout;
use super::{
    ActionRecord, Disposition, Event, EventSink, GuardPhase, Outcome, RollbackPhase, RunReport,
    SharedStr, StepStatus, UndoPhase,
};
use crate::journal::{GuardStatus, RunStatus, UndoStatus};
use crate::Mode;

fn secs(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

/// Renders a report. `plan` lists every action, grouped by step (simulate and check want it).
pub fn render_text(r: &RunReport, plan: bool) -> String {
    let mut out = Out {
        buf: String::new(),
        sink: None,
    };
    render_into(r, plan, &mut out);
    out.buf
}

/// Writes the report `render_text` makes to `w`, in pieces as it is made: the text of a large
/// rehearsal (every action in the plan, every undo's actions on the rollback path) is never
/// one string. After a failed write it stops writing and returns that error.
pub fn write_text(r: &RunReport, plan: bool, w: &mut dyn std::io::Write) -> std::io::Result<()> {
    let mut out = Out {
        buf: String::new(),
        sink: Some((w, Ok(()))),
    };
    render_into(r, plan, &mut out);
    out.spill(0);
    match out.sink {
        Some((w, Ok(()))) => w.flush(),
        Some((_, err)) => err,
        None => Ok(()),
    }
}

/// Where the text goes: kept in `buf`, or handed to the writer each time `buf` holds 64 KiB.
struct Out<'w> {
    buf: String,
    /// The writer and the first error it gave (no more is written after one).
    sink: Option<(&'w mut dyn std::io::Write, std::io::Result<()>)>,
}

impl Out<'_> {
    fn push_str(&mut self, text: &str) {
        self.buf.push_str(text);
        self.spill(1 << 16);
    }

    fn push(&mut self, c: char) {
        self.buf.push(c);
    }

    /// Hands the text to the writer once `buf` holds at least `at` bytes.
    fn spill(&mut self, at: usize) {
        let Some((w, state)) = self.sink.as_mut() else {
            return;
        };
        if self.buf.len() < at.max(1) {
            return;
        }
        if state.is_ok() {
            *state = w.write_all(self.buf.as_bytes());
        }
        self.buf.clear();
    }
}

fn render_into(r: &RunReport, plan: bool, s: &mut Out<'_>) {
    let mode = match r.mode {
        Mode::Run => "run",
        Mode::Check => "check (reads real, writes skipped)",
        Mode::Simulate => "simulation (no network)",
    };
    let verdict = match (r.status, &r.outcome) {
        (RunStatus::RolledBack, Outcome::Failed { .. }) => "FAILED, ROLLED BACK",
        (RunStatus::RolledBack, _) => "ROLLED BACK",
        (RunStatus::RollbackIncomplete, Outcome::Failed { .. }) => "FAILED, ROLLBACK INCOMPLETE",
        (RunStatus::RollbackIncomplete, _) => "ROLLBACK INCOMPLETE",
        (RunStatus::Running, _) => "NOT FINISHED (killed, or still running)",
        (_, Outcome::Succeeded) => "succeeded",
        (_, Outcome::Failed { .. }) => "FAILED",
        (_, Outcome::Interrupted { .. }) => "INTERRUPTED",
    };
    s.push_str(&format!(
        "{} — {verdict} in {} — {mode}\n",
        r.playbook,
        secs(r.duration_ms)
    ));
    s.push_str(&format!("run: {}", r.run_id));
    if r.attempts > 1 {
        s.push_str(&format!(" ({} attempts)", r.attempts));
    }
    s.push_str(&format!("\nhosts: {}\n", host_list(&r.hosts, ", ")));

    if !r.steps.is_empty() {
        s.push_str("\nsteps\n");
        let names: Vec<String> = r
            .steps
            .iter()
            .map(|st| {
                if r.attempts > 1 {
                    format!("{} (attempt {})", st.name, st.attempt)
                } else {
                    st.name.clone()
                }
            })
            .collect();
        let rows: Vec<Vec<String>> = r
            .steps
            .iter()
            .zip(&names)
            .map(|(st, name)| {
                let mark = match st.status {
                    StepStatus::Ok => "ok",
                    StepStatus::Failed => "FAIL",
                    StepStatus::Running => "...",
                    StepStatus::Skipped => "skip",
                };
                let what = if st.status == StepStatus::Skipped {
                    format!("not needed: {}", st.reason.as_deref().unwrap_or(""))
                } else {
                    format!(
                        "{} action(s) on {}",
                        st.actions,
                        if st.hosts.is_empty() {
                            "-".to_string()
                        } else {
                            host_list(&st.hosts, " ")
                        }
                    )
                };
                let took = if st.status == StepStatus::Skipped {
                    String::new()
                } else {
                    secs(st.duration_ms)
                };
                vec![mark.to_string(), one_line(name), took, one_line(&what)]
            })
            .collect();
        for (line, st) in layout(&rows, &[2]).lines().zip(&r.steps) {
            s.push_str(line);
            s.push('\n');
            if let Some(e) = &st.error {
                s.push_str(&format!("        {}\n", e.lines().next().unwrap_or("")));
            }
        }
    }

    if r.hosts.len() > 1 && !r.actions.is_empty() {
        s.push_str("\nper host\n");
        let mut rows = vec![vec![
            "host".to_string(),
            "actions".to_string(),
            "changes".to_string(),
            "failed".to_string(),
        ]];
        // Counted in one pass over the actions (a pass per host was hosts × actions).
        let mut counts: crate::FastMap<&str, (usize, usize, usize)> = crate::FastMap::default();
        for a in r.actions.iter() {
            let c = counts.entry(&a.host).or_default();
            c.0 += 1;
            c.1 += usize::from(!a.read_only && a.disposition != Disposition::Skipped);
            // A command that exited non-zero (or was killed) failed, even where the script
            // allowed it: the table counts what happened on the host.
            let exit_code = a
                .result
                .strip_prefix("exit ")
                .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse::<i64>().ok());
            let command_failed =
                a.result.starts_with("killed by") || exit_code.is_some_and(|c| c != 0);
            c.2 += usize::from(!a.ok || command_failed);
        }
        for h in &r.hosts {
            let (n, changes, failed) = counts.get(h.as_str()).copied().unwrap_or_default();
            rows.push(vec![
                one_line(h),
                n.to_string(),
                changes.to_string(),
                failed.to_string(),
            ]);
        }
        s.push_str(&layout(&rows, &[1, 2, 3]));
    }

    if plan && !r.actions.is_empty() {
        s.push_str("\nplan (every action, in order)\n");
        let mut current: Option<&Option<SharedStr>> = None;
        for a in r.actions.iter() {
            if current != Some(&a.step) {
                s.push_str(&format!(
                    "  [{}]\n",
                    a.step.as_deref().unwrap_or("(outside any step)")
                ));
                current = Some(&a.step);
            }
            s.push_str(&action_line(a));
        }
    }

    let changes: Vec<&ActionRecord> = r.would_change().collect();
    if r.mode == Mode::Check {
        if changes.is_empty() {
            s.push_str("\nwould change: nothing\n");
        } else {
            s.push_str(&format!(
                "\nwould change ({} action(s); none of them was performed)\n",
                changes.len()
            ));
            let rows: Vec<Vec<String>> = changes
                .iter()
                .map(|a| vec![one_line(&a.host), one_line(&a.description)])
                .collect();
            s.push_str(&layout(&rows, &[]));
        }
    }

    if let Some(sim) = &r.simulation {
        render_simulation(r, sim, s);
    }

    if !r.undos.is_empty() {
        if r.status == RunStatus::Succeeded {
            s.push_str(&format!(
                "\nundos (kept for `capstan rollback {}`, which runs them newest first)\n",
                r.run_id
            ));
        } else {
            s.push_str("\nundos (registered oldest first; a rollback runs them newest first)\n");
        }
        let rows: Vec<Vec<String>> = r
            .undos
            .iter()
            .map(|u| {
                let mark = match u.status {
                    // A run that succeeded keeps its undos for a later `capstan rollback`.
                    UndoStatus::Pending if r.status == RunStatus::Succeeded => "kept",
                    UndoStatus::Pending => "pending",
                    UndoStatus::Done => "undone",
                    UndoStatus::Failed => "FAILED",
                };
                vec![
                    format!("#{}", u.id),
                    mark.to_string(),
                    one_line(&u.description),
                    format!("[{}]", one_line(u.step.as_deref().unwrap_or("-"))),
                ]
            })
            .collect();
        for (line, u) in layout(&rows, &[]).lines().zip(&r.undos) {
            s.push_str(line);
            s.push('\n');
            if let Some(e) = &u.error {
                s.push_str(&format!("        {}\n", e.lines().next().unwrap_or("")));
            }
        }
    }

    if !r.backups.is_empty() {
        s.push_str(
            "\nbackups (verify with backup::verify; each has PATH.manifest.json beside it)\n",
        );
        for b in &r.backups {
            let b2 = &b.backup;
            s.push_str(&format!(
                "  {:<12} {:<9} {}  <- {}\n               {} file(s), {}, sha256 {}{}\n",
                b2.host,
                b2.kind,
                b2.path,
                b2.source,
                b2.files,
                human_bytes(b2.bytes),
                b2.sha256,
                if b2.taken {
                    ""
                } else {
                    "  (existing backup, verified and reused)"
                }
            ));
        }
    }

    let backups: Vec<_> = r
        .undos
        .iter()
        .filter_map(|u| Some((u.host.as_deref()?, u.saved.as_deref()?, u.status)))
        .collect();
    if !backups.is_empty() {
        s.push_str("\nkept copies (old content kept on the host for the undos)\n");
        for (h, saved, status) in backups {
            let note = if status == UndoStatus::Done {
                "  (put back by the rollback)"
            } else {
                ""
            };
            s.push_str(&format!("  {h:<12} {saved}{note}\n"));
        }
    }

    if !r.guards.is_empty() {
        s.push_str("\nguards\n");
        let mut rows = Vec::new();
        for g in &r.guards {
            let state = match g.status {
                GuardStatus::Restored => "restored".to_string(),
                GuardStatus::Released => "released by the script".to_string(),
                GuardStatus::Set => "STILL SET".to_string(),
                GuardStatus::RestoreFailed => format!(
                    "STILL SET (restore failed: {})",
                    g.error.as_deref().unwrap_or("")
                ),
            };
            let again = if g.rechecks > 0 {
                format!(", set again by {} resume(s)", g.rechecks)
            } else {
                String::new()
            };
            rows.push(vec![
                one_line(&g.name),
                one_line(&format!("{state}{again}")),
            ]);
        }
        s.push_str(&layout(&rows, &[]));
    }

    if !r.logs.is_empty() {
        s.push_str("\nlog\n");
        // Only the last column is free text (and may hold several lines): fixed widths suffice.
        for l in &r.logs {
            s.push_str(&format!(
                "  +{:<7} {:<5} {}\n",
                secs(l.at_ms),
                l.level,
                l.message
            ));
        }
    }

    match &r.outcome {
        Outcome::Succeeded => {}
        Outcome::Failed { error, .. } | Outcome::Interrupted { error } => {
            s.push_str(&format!("\nerror: {}\n", error.render()));
        }
    }
    if r.mode == Mode::Run {
        match r.status {
            RunStatus::Failed | RunStatus::Interrupted | RunStatus::Running => {
                // Only a run that changed something has anything to resume or roll back.
                let changed = !r.undos.is_empty()
                    || r.actions.iter().any(|a| {
                        !a.read_only
                            && matches!(a.disposition, Disposition::Performed | Disposition::Replayed)
                    });
                if changed {
                    s.push_str(&format!(
                        "\nnext: `capstan resume {id}` goes on from the step that stopped; `capstan rollback {id}` undoes what the run changed\n",
                        id = r.run_id
                    ))
                } else {
                    s.push_str("\nnothing was changed: fix the cause and run again\n")
                }
            }
            RunStatus::RollbackIncomplete => s.push_str(&format!(
                "\nnext: fix what the failed undos name, then `capstan rollback {}` runs the ones still pending\n",
                r.run_id
            )),
            _ => {}
        }
    }
}

/// Hosts named on one line: all of them up to `HOSTS_NAMED`; past that the first few, the
/// last and how many (a step of a 10,000-machine rehearsal is not a 10,000-name line; the
/// per-host table and `--json` name every one).
fn host_list(hosts: &[String], sep: &str) -> String {
    const HOSTS_NAMED: usize = 8;
    match hosts {
        [] => String::new(),
        _ if hosts.len() <= HOSTS_NAMED => hosts.join(sep),
        [.., last] => format!(
            "{}{sep}…{sep}{last} ({} hosts)",
            hosts[..3].join(sep),
            hosts.len()
        ),
    }
}

/// A cell's text on one line (a table row is one line; later lines of a message are dropped).
fn one_line(text: &str) -> String {
    text.lines().next().unwrap_or("").to_string()
}

fn action_line(a: &ActionRecord) -> String {
    let how = match a.disposition {
        Disposition::Skipped => "would".to_string(),
        _ if a.ok => a.result.to_string(),
        _ => format!("FAILED: {}", a.result.lines().next().unwrap_or("")),
    };
    format!(
        "    +{:<7} {:<12} {}  [{how}]\n",
        secs(a.at_ms),
        a.host,
        a.description
    )
}

/// Live progress on stderr: one line when a step starts and one per step when it ends, naming
/// its hosts. Colour only on a terminal. On a terminal (`on_terminal`) a status line under them
/// shows the running step's elapsed time and wait; in a log (`heartbeat`) a line every interval
/// says the run is alive and what it does.
#[derive(Debug)]
pub struct ProgressPrinter {
    color: bool,
    verbose: bool,
    live: Live,
}

impl ProgressPrinter {
    pub fn new(color: bool, verbose: bool) -> Self {
        ProgressPrinter {
            color,
            verbose,
            live: Live::plain(),
        }
    }

    /// Redraws a status line for the running step (stderr must be a terminal).
    pub fn on_terminal(mut self) -> Self {
        self.live = Live::terminal();
        self
    }

    /// Prints a line every `every` while the run lives (for stderr that is not a terminal).
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.live = Live::heartbeat(every);
        self
    }
    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

impl EventSink for ProgressPrinter {
    fn emit(&self, event: &Event) {
        self.live.observe(event);
        let line = match event {
            Event::RunStarted {
                run_id,
                attempt,
                playbook,
                mode,
                hosts,
                ..
            } => {
                let again = if *attempt > 1 {
                    format!(", attempt {attempt}")
                } else {
                    String::new()
                };
                format!(
                    "{} {playbook} ({mode:?}) on {} host(s) — run {run_id}{again}",
                    self.paint("1", "capstan"),
                    hosts.len()
                )
            }
            Event::StepSkipped {
                step,
                done_in_attempt,
            } => format!(
                "{} {step} (done in attempt {done_in_attempt}; skipped)",
                self.paint("2", "↷")
            ),
            Event::StepNotNeeded { step, reason } => {
                format!("{} {step} (not needed: {reason})", self.paint("2", "↷"))
            }
            Event::Undo {
                id,
                phase,
                description,
                error,
                ..
            } => match phase {
                UndoPhase::Registered if !self.verbose => return,
                UndoPhase::Registered => format!("    undo #{id} registered: {description}"),
                UndoPhase::Done => format!("  {} undo #{id}: {description}", self.paint("33", "↶")),
                UndoPhase::Failed => format!(
                    "  {} undo #{id}: {description}: {}",
                    self.paint("31", "✗"),
                    error.as_deref().unwrap_or("")
                ),
            },
            Event::Guard { name, phase, error } => match phase {
                GuardPhase::Set => format!("  guard `{name}` set"),
                GuardPhase::Rechecked => {
                    format!("  guard `{name}` set again (left set by an earlier attempt)")
                }
                GuardPhase::Restored => format!("  guard `{name}` restored"),
                GuardPhase::RestoreFailed => self.paint(
                    "31",
                    &format!(
                        "  guard `{name}` NOT restored: {}",
                        error.as_deref().unwrap_or("")
                    ),
                ),
            },
            Event::Rollback {
                phase,
                undone,
                failed,
            } => match phase {
                RollbackPhase::Started => format!("{} rolling back", self.paint("33", "↶")),
                RollbackPhase::Finished if *failed == 0 => {
                    format!(
                        "{} rolled back: {undone} undo(s) ran",
                        self.paint("33", "↶")
                    )
                }
                RollbackPhase::Finished => self.paint(
                    "31",
                    &format!("rollback incomplete: {undone} undone, {failed} FAILED"),
                ),
            },
            Event::Output { host, text, .. } if self.verbose => {
                let t = text.trim_end();
                format!(
                    "    {host}| {}",
                    t.replace('\n', &format!("\n    {host}| "))
                )
            }
            Event::StepStarted { step, .. } => format!("{} {step}", self.paint("36", "▶")),
            Event::StepFinished {
                step,
                ok,
                duration_ms,
                hosts,
                actions,
                error,
            } => {
                let mark = if *ok {
                    self.paint("32", "✓")
                } else {
                    self.paint("31", "✗")
                };
                let mut l = format!(
                    "{mark} {step} ({}, {actions} action(s){})",
                    secs(*duration_ms),
                    if hosts.is_empty() {
                        String::new()
                    } else {
                        format!(" on {}", host_list(hosts, ", "))
                    }
                );
                if let Some(e) = error {
                    l.push_str(&format!(
                        "\n    {}",
                        self.paint("31", e.lines().next().unwrap_or(""))
                    ));
                }
                l
            }
            Event::Action(a) if self.verbose || !a.ok => {
                let how = match a.disposition {
                    Disposition::Skipped => "would".to_string(),
                    _ => a.result.lines().next().unwrap_or("").to_string(),
                };
                format!("    {}: {} [{how}]", a.host, a.description)
            }
            Event::Log(l) => format!("  {} {}", self.paint("2", &l.level), l.message),
            Event::RunFinished {
                outcome,
                duration_ms,
            } => match outcome {
                Outcome::Succeeded => {
                    format!("{} in {}", self.paint("32", "done"), secs(*duration_ms))
                }
                Outcome::Failed { .. } => format!(
                    "{} after {}",
                    self.paint("31", "failed"),
                    secs(*duration_ms)
                ),
                Outcome::Interrupted { .. } => {
                    format!(
                        "{} after {}",
                        self.paint("33", "interrupted"),
                        secs(*duration_ms)
                    )
                }
            },
            _ => return,
        };
        self.live.print(&line);
    }
}

/// Bytes for people: `512 B`, `1.5 KiB`, `3.2 GiB` (bytesize's binary units).
fn human_bytes(b: u64) -> String {
    bytesize::ByteSize::b(b).display().iec().to_string()
}

fn render_simulation(r: &RunReport, sim: &super::SimReport, s: &mut Out<'_>) {
    if !sim.components.is_empty() {
        s.push_str(&format!(
            "\navailability ({} component(s): {})\n",
            sim.components.len(),
            sim.components.join(" ")
        ));
        // Windows to report: every step that ran, then the rollback (from its first undo action).
        let mut windows: Vec<(&str, u64, u64)> = r
            .steps
            .iter()
            .filter(|st| st.status != StepStatus::Skipped)
            .map(|st| (st.name.as_str(), st.at_ms, st.at_ms + st.duration_ms))
            .collect();
        if let Some(a) = r
            .actions
            .iter()
            .find(|a| a.step.as_deref().is_some_and(|s| s.starts_with("undo #")))
        {
            windows.push(("(rollback)", a.at_ms, r.duration_ms));
        }
        let mut any_broken = false;
        let mut rows = Vec::new();
        let spans: Vec<(u64, u64)> = windows.iter().map(|&(_, from, to)| (from, to)).collect();
        for ((name, _, _), (down, broken)) in windows.into_iter().zip(sim.during(&spans)) {
            let what = if down.is_empty() {
                "all up".to_string()
            } else {
                format!("down: {}", down.join(" "))
            };
            rows.push(vec![one_line(name), what]);
            for b in broken {
                any_broken = true;
                rows.push(vec![
                    String::new(),
                    format!("!! RULE BROKEN: {}", one_line(&b)),
                ]);
            }
        }
        s.push_str(&layout(&rows, &[]));
        let at_end = sim.down_at(sim.availability.len().saturating_sub(1));
        if !at_end.is_empty() {
            s.push_str(&format!("  at the end: down: {}\n", at_end.join(" ")));
        }
        if any_broken {
            s.push_str("  !! an availability rule was broken during this run: the cluster would not have served\n");
        }
    }
    if !sim.faults.is_empty() {
        s.push_str("\nfaults that fired\n");
        for f in &sim.faults {
            s.push_str(&format!(
                "  +{:<7} {:<12} {}  [{}]\n          took: {}\n",
                secs(f.at_ms),
                f.host,
                f.fault,
                f.step.as_deref().unwrap_or("-"),
                f.action
            ));
        }
    }
    if !sim.unfired.is_empty() {
        s.push_str("\n!! faults that never fired: this rehearsal did not rehearse them\n");
        for f in &sim.unfired {
            s.push_str(&format!("  {f}\n"));
        }
    }
    if let Outcome::Failed { error, .. } | Outcome::Interrupted { error } = &r.outcome {
        let step = r
            .steps
            .iter()
            .rev()
            .find(|st| st.status != StepStatus::Ok)
            .map_or("(outside any step)".to_string(), |st| {
                format!("step \"{}\"", st.name)
            });
        s.push_str(&format!(
            "\nstopped in {step}: {}\n",
            error.message.lines().next().unwrap_or("")
        ));
        if sim.changed_at_stop.is_empty() {
            s.push_str("  nothing had changed yet\n");
        } else {
            s.push_str("  changed from the starting state when it stopped:\n");
            for c in &sim.changed_at_stop {
                s.push_str(&format!("    {:<12} {}\n", c.host, c.change));
            }
        }
    }
    if let Some(after) = &sim.changed_after_rollback {
        s.push_str("\nrollback path (undos run newest first)\n");
        let by_undo = r.actions_by_undo();
        let mut ran: Vec<&super::UndoRecord> = r.undos.iter().collect();
        ran.reverse();
        for u in ran {
            let mark = match u.status {
                UndoStatus::Pending => "not run",
                UndoStatus::Done => "undone ",
                UndoStatus::Failed => "FAILED ",
            };
            s.push_str(&format!("  #{:<3} {mark} {}\n", u.id, u.description));
            for a in by_undo.get(&u.id).into_iter().flatten() {
                s.push_str(&format!("         {:<12} {}\n", a.host, a.description));
            }
        }
        if after.is_empty() {
            s.push_str("  after the rollback every host is as it was at the start\n");
        } else {
            s.push_str("  still different from the starting state after the rollback:\n");
            for c in after {
                s.push_str(&format!("    {:<12} {}\n", c.host, c.change));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_host_lists_name_the_first_the_last_and_how_many() {
        let hosts = |n: usize| -> Vec<String> { (1..=n).map(|i| format!("h{i}")).collect() };
        assert_eq!(super::host_list(&hosts(1), ", "), "h1");
        assert_eq!(super::host_list(&hosts(8), " "), "h1 h2 h3 h4 h5 h6 h7 h8");
        assert_eq!(
            super::host_list(&hosts(10_000), ", "),
            "h1, h2, h3, …, h10000 (10000 hosts)"
        );
    }

    #[test]
    fn byte_sizes_read_as_people_write_them() {
        for (b, want) in [
            (0, "0 B"),
            (512, "512 B"),
            (1536, "1.5 KiB"),
            (5_000_000, "4.8 MiB"),
            (3_435_973_837, "3.2 GiB"),
        ] {
            assert_eq!(super::human_bytes(b), want);
        }
    }
}
