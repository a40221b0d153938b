//! A report as one self-contained HTML file: a timeline per host, the availability band, steps, fault and rollback.

use std::fmt::Write;

use super::{ActionRecord, Outcome, RunReport, StepStatus};
use crate::journal::UndoStatus;

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn secs(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

const CSS: &str = r#"
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1d2430; background: #fff; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 28px 0 8px; }
.meta { color: #5b6675; } .verdict { font-weight: 600; }
.ok { color: #1a7f37; } .bad { color: #c0262d; }
table { border-collapse: collapse; } td, th { padding: 3px 10px 3px 0; text-align: left; vertical-align: top; }
th { color: #5b6675; font-weight: 500; }
svg text { font: 12px system-ui, sans-serif; fill: #1d2430; }
.legend span { display: inline-block; margin-right: 14px; }
.sw { display: inline-block; width: 12px; height: 12px; vertical-align: -2px; margin-right: 4px; border-radius: 2px; }
code { font: 12px ui-monospace, monospace; background: #f3f4f6; padding: 1px 4px; border-radius: 3px; }
.broken { color: #c0262d; font-weight: 600; }
"#;

const COLOR_READ: &str = "#8fb3e8";
const COLOR_CHANGE: &str = "#2f6fd6";
const COLOR_FAILED: &str = "#d63a3a";
const COLOR_UNDO: &str = "#a15ad6";
const COLOR_SKIPPED: &str = "#c9ced6";

fn color(a: &ActionRecord) -> &'static str {
    let nonzero = a.result.starts_with("exit ") && a.result != "exit 0";
    if !a.ok || nonzero {
        COLOR_FAILED
    } else if a.step.as_deref().is_some_and(|s| s.starts_with("undo #")) {
        COLOR_UNDO
    } else if a.disposition == super::Disposition::Skipped {
        COLOR_SKIPPED
    } else if a.read_only {
        COLOR_READ
    } else {
        COLOR_CHANGE
    }
}

/// Renders the report as a self-contained page (no script, no network).
pub fn render_html(r: &RunReport) -> String {
    let mut h = String::new();
    let failed = !matches!(r.outcome, Outcome::Succeeded);
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} — capstan</title><style>{CSS}</style></head><body>",
        esc(&r.playbook)
    );
    let _ = write!(
        h,
        "<h1>{}</h1><div class=\"meta\"><span class=\"verdict {}\" id=\"verdict\">{}</span> · {} · {:?} · run {} · {} host(s)</div>",
        esc(&r.playbook),
        if failed { "bad" } else { "ok" },
        esc(r.status.as_str()),
        secs(r.duration_ms),
        r.mode,
        esc(&r.run_id),
        r.hosts.len()
    );
    if let Outcome::Failed { error, .. } | Outcome::Interrupted { error } = &r.outcome {
        let _ = write!(
            h,
            "<p class=\"bad\" id=\"error\">{}</p>",
            esc(error.message.lines().next().unwrap_or(""))
        );
    }
    timeline(&mut h, r);
    steps_table(&mut h, r);
    if let Some(sim) = &r.simulation {
        if !sim.faults.is_empty() {
            h.push_str("<h2>Faults that fired</h2><table id=\"faults\"><tr><th>at</th><th>host</th><th>fault</th><th>step</th><th>action</th></tr>");
            for f in &sim.faults {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                    secs(f.at_ms),
                    esc(&f.host),
                    esc(&f.fault),
                    esc(f.step.as_deref().unwrap_or("-")),
                    esc(&f.action)
                );
            }
            h.push_str("</table>");
        }
        if failed {
            changes(
                &mut h,
                "State left when it stopped",
                "changed-at-stop",
                &sim.changed_at_stop,
            );
        }
    }
    rollback(&mut h, r);
    h.push_str("</body></html>\n");
    h
}

/// Rows: the steps, then one per host, then the availability band; x is time.
fn timeline(h: &mut String, r: &RunReport) {
    const LABEL: f64 = 170.0;
    const WIDTH: f64 = 1100.0;
    const ROW: f64 = 22.0;
    let end = r
        .actions
        .iter()
        .map(|a| a.at_ms + a.duration_ms)
        .chain(std::iter::once(r.duration_ms))
        .max()
        .unwrap_or(0)
        .max(1);
    let x = |ms: u64| LABEL + (ms as f64 / end as f64) * (WIDTH - LABEL - 10.0);
    let w = |ms: u64| ((ms as f64 / end as f64) * (WIDTH - LABEL - 10.0)).max(2.0);
    let band = r.simulation.as_ref().filter(|s| !s.components.is_empty());
    let rows = 1 + r.hosts.len() + usize::from(band.is_some());
    let height = 30.0 + rows as f64 * ROW + 10.0;
    h.push_str("<h2>Timeline</h2><div class=\"legend\">");
    for (c, what) in [
        (COLOR_READ, "read"),
        (COLOR_CHANGE, "change"),
        (COLOR_SKIPPED, "skipped (check)"),
        (COLOR_FAILED, "failed"),
        (COLOR_UNDO, "undo (rollback)"),
    ] {
        let _ = write!(
            h,
            "<span><i class=\"sw\" style=\"background:{c}\"></i>{what}</span>"
        );
    }
    h.push_str("</div>");
    let _ = write!(
        h,
        "<svg id=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\">"
    );
    // Time axis.
    for i in 0..=5 {
        let t = end * i / 5;
        let _ = write!(
            h,
            "<line x1=\"{0}\" x2=\"{0}\" y1=\"18\" y2=\"{1}\" stroke=\"#e5e7eb\"/><text x=\"{0}\" y=\"12\" text-anchor=\"middle\">{2}</text>",
            x(t),
            height - 6.0,
            secs(t)
        );
    }
    let mut y = 24.0;
    // Steps.
    let _ = write!(h, "<text x=\"4\" y=\"{}\">steps</text>", y + 14.0);
    for (i, st) in r.steps.iter().enumerate() {
        let fill = match st.status {
            StepStatus::Failed => "#f4c7c9",
            _ if i % 2 == 0 => "#e3ebf7",
            _ => "#eef2f8",
        };
        let _ = write!(
            h,
            "<rect class=\"step\" x=\"{:.1}\" y=\"{y}\" width=\"{:.1}\" height=\"{}\" fill=\"{fill}\"><title>{} ({})</title></rect>",
            x(st.at_ms),
            w(st.duration_ms),
            ROW - 4.0,
            esc(&st.name),
            secs(st.duration_ms)
        );
        // The name inside the step when it fits (about 7 px a character).
        let room = w(st.duration_ms) - 8.0;
        if room > 40.0 {
            let fit = (room / 7.0) as usize;
            let name: String = if st.name.chars().count() > fit {
                let mut n: String = st.name.chars().take(fit.saturating_sub(1)).collect();
                n.push('…');
                n
            } else {
                st.name.clone()
            };
            let _ = write!(
                h,
                "<text x=\"{:.1}\" y=\"{}\" font-size=\"11\">{}</text>",
                x(st.at_ms) + 4.0,
                y + 13.0,
                esc(&name)
            );
        }
    }
    y += ROW;
    // Hosts.
    for host in &r.hosts {
        let _ = write!(
            h,
            "<g class=\"host-row\" data-host=\"{}\"><text x=\"4\" y=\"{}\">{}</text>",
            esc(host),
            y + 14.0,
            esc(host)
        );
        for a in r.actions.iter().filter(|a| &a.host == host) {
            let _ = write!(
                h,
                "<rect class=\"action\" x=\"{:.1}\" y=\"{y}\" width=\"{:.1}\" height=\"{}\" fill=\"{}\"><title>+{} {} [{}]</title></rect>",
                x(a.at_ms),
                w(a.duration_ms),
                ROW - 4.0,
                color(a),
                secs(a.at_ms),
                esc(&a.description),
                esc(&a.result)
            );
        }
        h.push_str("</g>");
        y += ROW;
    }
    // Availability.
    if let Some(sim) = band {
        let _ = write!(
            h,
            "<g id=\"availability\"><text x=\"4\" y=\"{}\">availability</text>",
            y + 14.0
        );
        for (i, s) in sim.availability.iter().enumerate() {
            let to = sim.availability.get(i + 1).map_or(end, |n| n.at_ms);
            let (fill, what) = if !s.violations.is_empty() {
                (
                    "#d63a3a",
                    format!("RULE BROKEN: {}", s.violations.join("; ")),
                )
            } else if !s.down.is_empty() {
                ("#e9a23b", format!("down: {}", s.down.join(" ")))
            } else {
                ("#3fa45b", "all up".to_string())
            };
            let _ = write!(
                h,
                "<rect class=\"avail\" x=\"{:.1}\" y=\"{y}\" width=\"{:.1}\" height=\"{}\" fill=\"{fill}\"><title>+{}: {}</title></rect>",
                x(s.at_ms),
                w(to.saturating_sub(s.at_ms)),
                ROW - 4.0,
                secs(s.at_ms),
                esc(&what)
            );
        }
        h.push_str("</g>");
    }
    // Faults.
    if let Some(sim) = &r.simulation {
        for f in &sim.faults {
            let _ = write!(
                h,
                "<line class=\"fault\" x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"18\" y2=\"{1}\" stroke=\"#c0262d\" stroke-width=\"2\" stroke-dasharray=\"4 3\"><title>fault: {2}</title></line>",
                x(f.at_ms),
                height - 6.0,
                esc(&f.fault)
            );
        }
    }
    h.push_str("</svg>");
}

fn steps_table(h: &mut String, r: &RunReport) {
    h.push_str("<h2>Steps</h2><table id=\"steps\"><tr><th></th><th>step</th><th>at</th><th>took</th><th>hosts</th><th>availability</th></tr>");
    for st in &r.steps {
        let (mark, class) = match st.status {
            StepStatus::Ok => ("ok", "ok"),
            StepStatus::Failed => ("FAILED", "bad"),
            StepStatus::Running => ("…", ""),
            StepStatus::Skipped => ("skipped", ""),
        };
        let avail = match &r.simulation {
            Some(sim) if !sim.components.is_empty() => {
                let (down, broken) =
                    super::render::availability_during(sim, st.at_ms, st.at_ms + st.duration_ms);
                let mut t = if down.is_empty() {
                    "all up".to_string()
                } else {
                    format!("down: {}", esc(&down.join(" ")))
                };
                for b in broken {
                    let _ = write!(
                        t,
                        "<br><span class=\"broken\">RULE BROKEN: {}</span>",
                        esc(&b)
                    );
                }
                t
            }
            _ => String::new(),
        };
        let _ = write!(
            h,
            "<tr><td class=\"{class}\">{mark}</td><td>{}</td><td>+{}</td><td>{}</td><td>{}</td><td>{avail}</td></tr>",
            esc(&st.name),
            secs(st.at_ms),
            secs(st.duration_ms),
            match &st.reason {
                Some(why) => esc(&format!("not needed: {why}")),
                None => esc(&st.hosts.join(" ")),
            }
        );
        if let Some(e) = &st.error {
            let _ = write!(
                h,
                "<tr><td></td><td colspan=\"5\" class=\"bad\">{}</td></tr>",
                esc(e.lines().next().unwrap_or(""))
            );
        }
    }
    h.push_str("</table>");
}

fn changes(h: &mut String, title: &str, id: &str, list: &[super::HostChange]) {
    let _ = write!(h, "<h2>{title}</h2><table id=\"{id}\">");
    if list.is_empty() {
        h.push_str("<tr><td>every host is as it was at the start</td></tr>");
    }
    for c in list {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td></tr>",
            esc(&c.host),
            esc(&c.change)
        );
    }
    h.push_str("</table>");
}

fn rollback(h: &mut String, r: &RunReport) {
    if r.undos.is_empty() {
        return;
    }
    let ran = r.undos.iter().any(|u| u.status != UndoStatus::Pending);
    let _ = write!(
        h,
        "<h2>{}</h2><table id=\"rollback\"><tr><th>#</th><th>status</th><th>undo</th><th>actions</th></tr>",
        if ran {
            "Rollback path (newest first)"
        } else {
            "Undos registered (a rollback would run them newest first)"
        }
    );
    for u in r.undos.iter().rev() {
        let status = match u.status {
            UndoStatus::Pending => "pending",
            UndoStatus::Done => "undone",
            UndoStatus::Failed => "FAILED",
        };
        let prefix = format!("undo #{}: ", u.id);
        let acts: Vec<String> = r
            .actions
            .iter()
            .filter(|a| a.step.as_deref().is_some_and(|s| s.starts_with(&prefix)))
            .map(|a| format!("<code>{}</code> {}", esc(&a.host), esc(&a.description)))
            .collect();
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"{}\">{status}</td><td>{}</td><td>{}</td></tr>",
            u.id,
            if u.status == UndoStatus::Failed {
                "bad"
            } else {
                ""
            },
            esc(&u.description),
            acts.join("<br>")
        );
    }
    h.push_str("</table>");
    if let Some(after) = r
        .simulation
        .as_ref()
        .and_then(|s| s.changed_after_rollback.as_ref())
    {
        changes(h, "After the rollback", "changed-after-rollback", after);
    }
}
