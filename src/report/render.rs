//! Text for people: the end-of-run report and the live one-line-per-step progress on stderr.

use std::io::Write;
use std::sync::Mutex;

use super::{ActionRecord, Disposition, Event, EventSink, Outcome, RunReport, StepStatus};
use crate::Mode;

fn secs(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

/// Renders a report. `plan` lists every action, grouped by step (simulate and check want it).
pub fn render_text(r: &RunReport, plan: bool) -> String {
    let mut s = String::new();
    let mode = match r.mode {
        Mode::Run => "run",
        Mode::Check => "check (reads real, writes skipped)",
        Mode::Simulate => "simulation (no network)",
    };
    let verdict = match &r.outcome {
        Outcome::Succeeded => "succeeded".to_string(),
        Outcome::Failed { .. } => "FAILED".to_string(),
        Outcome::Interrupted { .. } => "INTERRUPTED".to_string(),
    };
    s.push_str(&format!(
        "{} — {verdict} in {} — {mode}\n",
        r.playbook,
        secs(r.duration_ms)
    ));
    s.push_str(&format!("hosts: {}\n", r.hosts.join(", ")));

    if !r.steps.is_empty() {
        s.push_str("\nsteps\n");
        let width = r
            .steps
            .iter()
            .map(|st| st.name.chars().count())
            .max()
            .unwrap_or(0)
            .min(48);
        for st in &r.steps {
            let mark = match st.status {
                StepStatus::Ok => "ok  ",
                StepStatus::Failed => "FAIL",
                StepStatus::Running => "... ",
            };
            s.push_str(&format!(
                "  {mark} {:<width$}  {:>6}  {} action(s) on {}\n",
                st.name,
                secs(st.duration_ms),
                st.actions,
                if st.hosts.is_empty() {
                    "-".to_string()
                } else {
                    st.hosts.join(" ")
                },
            ));
            if let Some(e) = &st.error {
                s.push_str(&format!("       {}\n", e.lines().next().unwrap_or("")));
            }
        }
    }

    if plan && !r.actions.is_empty() {
        s.push_str("\nplan (every action, in order)\n");
        let mut current: Option<&Option<String>> = None;
        for a in &r.actions {
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
            for a in changes {
                s.push_str(&format!("  {:<12} {}\n", a.host, a.description));
            }
        }
    }

    if !r.logs.is_empty() {
        s.push_str("\nlog\n");
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
    s
}

fn action_line(a: &ActionRecord) -> String {
    let how = match a.disposition {
        Disposition::Skipped => "would".to_string(),
        _ if a.ok => a.result.clone(),
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
/// its hosts. Colour only on a terminal.
#[derive(Debug)]
pub struct ProgressPrinter {
    color: bool,
    verbose: bool,
    lock: Mutex<()>,
}

impl ProgressPrinter {
    pub fn new(color: bool, verbose: bool) -> Self {
        ProgressPrinter {
            color,
            verbose,
            lock: Mutex::new(()),
        }
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
        let line = match event {
            Event::RunStarted {
                playbook,
                mode,
                hosts,
            } => {
                format!(
                    "{} {playbook} ({mode:?}) on {} host(s)",
                    self.paint("1", "capstan"),
                    hosts.len()
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
                        format!(" on {}", hosts.join(", "))
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
        let _g = self.lock.lock();
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{line}");
    }
}
