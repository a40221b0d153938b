//! A report as one self-contained HTML file: a timeline per host, the availability band, steps, fault and rollback.

use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::{ActionRecord, Outcome, RunReport, StepStatus};
use crate::journal::UndoStatus;

fn secs(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

const CSS: &str = r#"
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1d2430; background: #fff; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 28px 0 8px; }
.meta { color: #5b6675; } .verdict { font-weight: 600; }
.ok { color: #1a7f37; } .bad { color: #c0262d; } .dim { color: #5b6675; }
table { border-collapse: collapse; } td, th { padding: 3px 10px 3px 0; text-align: left; vertical-align: top; }
th { color: #5b6675; font-weight: 500; }
svg { display: block; width: 100%; height: auto; }
svg text { font: 12px system-ui, sans-serif; fill: #1d2430; }
svg text.group { font-weight: 600; fill: #5b6675; }
.legend { margin: 4px 0; } .legend span { display: inline-block; margin-right: 14px; }
.sw { display: inline-block; width: 12px; height: 12px; vertical-align: -2px; margin-right: 4px; border-radius: 2px; }
code { font: 12px ui-monospace, monospace; background: #f3f4f6; padding: 1px 4px; border-radius: 3px; }
.argv code { margin-right: 3px; }
.broken { color: #c0262d; font-weight: 600; }
"#;

const COLOR_READ: &str = "#8fb3e8";
const COLOR_CHANGE: &str = "#2f6fd6";
const COLOR_FAILED: &str = "#d63a3a";
const COLOR_UNDO: &str = "#a15ad6";
const COLOR_UNDO_2: &str = "#c79be8";
const COLOR_SKIPPED: &str = "#c9ced6";
const COLOR_UP: &str = "#3fa45b";
const COLOR_DOWN: &str = "#e9a23b";
const COLOR_BROKEN: &str = "#d63a3a";

fn is_undo(a: &ActionRecord) -> bool {
    a.step.as_deref().is_some_and(|s| s.starts_with("undo #"))
}

fn color(a: &ActionRecord) -> &'static str {
    let nonzero = a.result.starts_with("exit ") && a.result != "exit 0";
    if !a.ok || nonzero {
        COLOR_FAILED
    } else if is_undo(a) {
        COLOR_UNDO
    } else if a.disposition == super::Disposition::Skipped {
        COLOR_SKIPPED
    } else if a.read_only {
        COLOR_READ
    } else {
        COLOR_CHANGE
    }
}

/// `text` cut to `max` characters, with `…` when cut.
fn clip(text: &str, max: usize) -> String {
    if text.chars().count() > max {
        let mut t: String = text.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    } else {
        text.to_string()
    }
}

/// An action as text: a command as its argv (each argument as the program gets it, in JSON
/// quoting), anything else as its description.
fn action_text(a: &ActionRecord) -> String {
    match &a.argv {
        // The description's lead (`run: `, `run in DIR: `, `as root: run: `), then the argv.
        Some(argv) => {
            let lead = a
                .description
                .find("run")
                .and_then(|i| a.description[i..].find(": ").map(|j| i + j + 2))
                .map_or("", |end| &a.description[..end]);
            format!("{lead}{}", serde_json::to_string(argv).unwrap_or_default())
        }
        None => a.description.to_string(),
    }
}

/// An action for a table cell: a command's arguments each in its own box.
fn action_cell(a: &ActionRecord) -> Markup {
    match &a.argv {
        Some(argv) => html! {
            span.argv title=(a.description) {
                @for arg in argv { code { (arg) } }
            }
        },
        None => html! { (a.description) },
    }
}

/// Renders the report as a self-contained page (no script, no network).
pub fn render_html(r: &RunReport) -> String {
    let failed = !matches!(r.outcome, Outcome::Succeeded);
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (r.playbook) " — capstan" }
                style { (PreEscaped(CSS)) }
            }
            body {
                h1 { (r.playbook) }
                div.meta {
                    span.verdict.bad[failed].ok[!failed] #verdict { (r.status.as_str()) }
                    " · " (secs(r.duration_ms)) " · " (format!("{:?}", r.mode))
                    " · run " (r.run_id) " · " (r.hosts.len()) " host(s)"
                }
                @if let Outcome::Failed { error, .. } | Outcome::Interrupted { error } = &r.outcome {
                    p.bad #error { (error.message.lines().next().unwrap_or("")) }
                }
                (timeline(r))
                (steps_table(r))
                @if let Some(sim) = &r.simulation {
                    @if !sim.faults.is_empty() {
                        h2 { "Faults that fired" }
                        table #faults {
                            tr { th { "at" } th { "host" } th { "fault" } th { "step" } th { "action" } }
                            @for f in &sim.faults {
                                tr {
                                    td { (secs(f.at_ms)) }
                                    td { (f.host) }
                                    td { (f.fault) }
                                    td { (f.step.as_deref().unwrap_or("-")) }
                                    td { code { (f.action) } }
                                }
                            }
                        }
                    }
                    @if failed {
                        (changes("State left when it stopped", "changed-at-stop", &sim.changed_at_stop))
                    }
                }
                (rollback(r))
            }
        }
    };
    let mut out = page.into_string();
    out.push('\n');
    out
}

/// Geometry of the timeline: a label column, then time across the rest.
struct Axis {
    end: u64,
}

impl Axis {
    const LABEL: f64 = 230.0;
    const WIDTH: f64 = 1200.0;
    const ROW: f64 = 22.0;
    /// Room at the right for the last tick's label.
    const PAD: f64 = 16.0;

    fn x(&self, ms: u64) -> f64 {
        Self::LABEL + (ms as f64 / self.end as f64) * (Self::WIDTH - Self::LABEL - Self::PAD)
    }

    fn w(&self, ms: u64) -> f64 {
        ((ms as f64 / self.end as f64) * (Self::WIDTH - Self::LABEL - Self::PAD)).max(2.0)
    }
}

/// One timeline row: its label at the left, then what `bars` draws at height `y`.
fn row(y: f64, indent: bool, label: &str, class: Option<&str>, full: &str, bars: Markup) -> Markup {
    html! {
        text x=(if indent { 16 } else { 4 }) y=(y + 14.0) class=[class] { title { (full) } (clip(label, 32)) }
        (bars)
    }
}

/// A bar from `from` to `to` at height `y`, with a tooltip and, when it fits, a label inside.
fn bar(
    ax: &Axis,
    y: f64,
    span: (u64, u64),
    fill: &str,
    class: &str,
    tip: &str,
    inside: Option<&str>,
) -> Markup {
    let (x, w) = (ax.x(span.0), ax.w(span.1.saturating_sub(span.0)));
    let fit = ((w - 8.0) / 7.0).max(0.0) as usize;
    html! {
        rect class=(class) x=(format!("{x:.1}")) y=(y) width=(format!("{w:.1}")) height=(Axis::ROW - 4.0) fill=(fill) {
            title { (tip) }
        }
        @if let Some(t) = inside.filter(|_| fit >= 4) {
            text x=(format!("{:.1}", x + 4.0)) y=(y + 13.0) font-size="11" fill="#fff" { (clip(t, fit)) }
        }
    }
}

/// Rows: each step, the rollback, the hosts (by zone or region when the report has them), then
/// the availability band; x is time, across the page's width.
fn timeline(r: &RunReport) -> Markup {
    let end = r
        .actions
        .iter()
        .map(|a| a.at_ms + a.duration_ms)
        .chain(std::iter::once(r.duration_ms))
        .max()
        .unwrap_or(0)
        .max(1);
    let ax = Axis { end };
    let band = r.simulation.as_ref().filter(|s| !s.components.is_empty());
    // The rollback: one bar per undo, from its first action to the end of its last.
    let mut undos: Vec<(String, u64, u64, String)> = Vec::new();
    let by_undo = r.actions_by_undo();
    let by_host = r.actions_by_host();
    for u in r.undos.iter().rev() {
        let mine = by_undo.get(&u.id).map_or(&[][..], Vec::as_slice);
        if let (Some(first), Some(last)) = (mine.first(), mine.last()) {
            undos.push((
                format!("#{}", u.id),
                first.at_ms,
                last.at_ms + last.duration_ms,
                u.description.clone(),
            ));
        }
    }
    // Host rows in group order, each group under a heading row.
    let mut host_rows: Vec<(Option<&str>, &str)> = Vec::new();
    let mut grouped: crate::FastSet<&str> = crate::FastSet::default();
    for g in &r.host_groups {
        host_rows.push((Some(&g.name), ""));
        for h in &g.hosts {
            host_rows.push((None, h));
            grouped.insert(h);
        }
    }
    let rest: Vec<&String> = r
        .hosts
        .iter()
        .filter(|h| !grouped.contains(&h.as_str()))
        .collect();
    if !r.host_groups.is_empty() && !rest.is_empty() {
        host_rows.push((Some("other hosts"), ""));
    }
    host_rows.extend(rest.into_iter().map(|h| (None, h.as_str())));
    let rows = r.steps.len()
        + usize::from(!undos.is_empty())
        + host_rows.len()
        + usize::from(band.is_some());
    let top = 24.0;
    let height = top + rows as f64 * Axis::ROW + 12.0;
    let steps_y = |i: usize| top + i as f64 * Axis::ROW;
    let rollback_y = steps_y(r.steps.len());
    let hosts_y = rollback_y + if undos.is_empty() { 0.0 } else { Axis::ROW };
    let band_y = hosts_y + host_rows.len() as f64 * Axis::ROW;
    html! {
        h2 { "Timeline" }
        div.legend {
            "actions: "
            @for (c, what) in [
                (COLOR_READ, "read"),
                (COLOR_CHANGE, "change"),
                (COLOR_SKIPPED, "skipped (check)"),
                (COLOR_FAILED, "failed"),
                (COLOR_UNDO, "undo (rollback)"),
            ] {
                span { i.sw style=(format!("background:{c}")) {} (what) }
            }
        }
        @if band.is_some() {
            div.legend #availability-legend {
                "availability: "
                @for (c, what) in [
                    (COLOR_UP, "every component up"),
                    (COLOR_DOWN, "some down (allowed)"),
                    (COLOR_BROKEN, "a rule broken: the cluster would not serve"),
                ] {
                    span { i.sw style=(format!("background:{c}")) {} (what) }
                }
            }
        }
        svg #timeline xmlns="http://www.w3.org/2000/svg" viewBox=(format!("0 0 {} {height}", Axis::WIDTH)) preserveAspectRatio="xMinYMin meet" {
            // The time axis: the first label starts at its tick, the last ends at it.
            @for i in 0..=5u64 {
                @let t = end * i / 5;
                @let anchor = match i { 0 => "start", 5 => "end", _ => "middle" };
                line x1=(format!("{:.1}", ax.x(t))) x2=(format!("{:.1}", ax.x(t))) y1="18" y2=(height - 6.0) stroke="#e5e7eb" {}
                text x=(format!("{:.1}", ax.x(t))) y="12" text-anchor=(anchor) { (secs(t)) }
            }
            @for (i, st) in r.steps.iter().enumerate() {
                @let fill = match st.status {
                    StepStatus::Failed => COLOR_FAILED,
                    StepStatus::Skipped => COLOR_SKIPPED,
                    _ => "#6d8fc7",
                };
                @let tip = match &st.reason {
                    Some(why) => format!("{}: not needed: {why}", st.name),
                    None => format!("{} (+{}, {})", st.name, secs(st.at_ms), secs(st.duration_ms)),
                };
                g.step-row data-step=(st.name) {
                    (row(steps_y(i), false, &format!("{}. {}", i + 1, st.name), None, &st.name,
                        bar(&ax, steps_y(i), (st.at_ms, st.at_ms + st.duration_ms), fill, "step", &tip, None)))
                }
            }
            @if !undos.is_empty() {
                g #rollback-row {
                    (row(rollback_y, false, "rollback (newest first)", Some("group"), "the undos, newest first",
                        html! {
                            // Two shades in turn: neighbouring undos stay apart.
                            @for (n, (id, from, to, what)) in undos.iter().enumerate() {
                                (bar(&ax, rollback_y, (*from, *to), if n % 2 == 0 { COLOR_UNDO } else { COLOR_UNDO_2 }, "undo", &format!("{id}: {what}"), Some(id)))
                            }
                        }))
                }
            }
            @for (i, (heading, host)) in host_rows.iter().enumerate() {
                @let y = hosts_y + i as f64 * Axis::ROW;
                @if let Some(name) = heading {
                    text.group x="4" y=(y + 14.0) { (name) }
                } @else {
                    g.host-row data-host=(host) {
                        (row(y, !r.host_groups.is_empty(), host, None, host,
                            html! {
                                @for a in by_host.get(host).into_iter().flatten() {
                                    (bar(&ax, y, (a.at_ms, a.at_ms + a.duration_ms), color(a), "action",
                                        &format!("+{} {} [{}]", secs(a.at_ms), action_text(a), a.result), None))
                                }
                            }))
                    }
                }
            }
            @if let Some(sim) = band {
                g #availability {
                    text x="4" y=(band_y + 14.0) { "availability" }
                    @for (at, to, fill, what) in band_bars(sim, end) {
                        (bar(&ax, band_y, (at, to), fill, "avail", &format!("+{}: {what}", secs(at)), None))
                    }
                }
            }
            @if let Some(sim) = &r.simulation {
                @for f in &sim.faults {
                    line.fault x1=(format!("{:.1}", ax.x(f.at_ms))) x2=(format!("{:.1}", ax.x(f.at_ms))) y1="18" y2=(height - 6.0) stroke="#c0262d" stroke-width="2" stroke-dasharray="4 3" {
                        title { "fault: " (f.fault) }
                    }
                }
            }
        }
    }
}

/// The availability band's bars: each sample's span, colour and what was down or broken.
fn band_bars(sim: &super::SimReport, end: u64) -> Vec<(u64, u64, &'static str, String)> {
    let mut bars = Vec::with_capacity(sim.availability.len());
    sim.down_states(|i, s, down| {
        let to = sim.availability.get(i + 1).map_or(end, |n| n.at_ms);
        let (fill, what) = if !s.violations.is_empty() {
            (
                COLOR_BROKEN,
                format!("RULE BROKEN: {}", s.violations.join("; ")),
            )
        } else if !down.is_empty() {
            let names: Vec<&str> = down.iter().map(|&d| sim.name_of(d)).collect();
            (COLOR_DOWN, format!("down: {}", names.join(" ")))
        } else {
            (COLOR_UP, "all up".to_string())
        };
        bars.push((s.at_ms, to, fill, what));
    });
    bars
}

fn steps_table(r: &RunReport) -> Markup {
    // Every step's availability from one replay of the samples.
    let avail = r
        .simulation
        .as_ref()
        .filter(|s| !s.components.is_empty())
        .map(|sim| {
            let windows: Vec<(u64, u64)> = r
                .steps
                .iter()
                .map(|st| (st.at_ms, st.at_ms + st.duration_ms))
                .collect();
            sim.during(&windows)
        });
    html! {
        h2 { "Steps" }
        table #steps {
            tr { th { "#" } th {} th { "step" } th { "at" } th { "took" } th { "hosts" } th { "availability" } }
            @for (i, st) in r.steps.iter().enumerate() {
                @let (mark, class) = match st.status {
                    StepStatus::Ok => ("ok", "ok"),
                    StepStatus::Failed => ("FAILED", "bad"),
                    StepStatus::Running => ("…", ""),
                    StepStatus::Skipped => ("skipped", "dim"),
                };
                tr {
                    td.dim { (i + 1) }
                    td class=(class) { (mark) }
                    td { (st.name) }
                    td { "+" (secs(st.at_ms)) }
                    td { (secs(st.duration_ms)) }
                    td {
                        @match &st.reason {
                            Some(why) => { "not needed: " (why) },
                            None => { (st.hosts.join(" ")) },
                        }
                    }
                    td {
                        @if let Some((down, broken)) = avail.as_ref().map(|a| &a[i]) {
                            @if down.is_empty() { "all up" } @else { "down: " (down.join(" ")) }
                            @for b in broken {
                                br;
                                span.broken { "RULE BROKEN: " (b) }
                            }
                        }
                    }
                }
                @if let Some(e) = &st.error {
                    tr { td {} td {} td.bad colspan="5" { (e.lines().next().unwrap_or("")) } }
                }
            }
        }
    }
}

fn changes(title: &str, id: &str, list: &[super::HostChange]) -> Markup {
    html! {
        h2 { (title) }
        table id=(id) {
            @if list.is_empty() {
                tr { td { "every host is as it was at the start" } }
            }
            @for c in list {
                tr { td { (c.host) } td { (c.change) } }
            }
        }
    }
}

fn rollback(r: &RunReport) -> Markup {
    if r.undos.is_empty() {
        return html! {};
    }
    let ran = r.undos.iter().any(|u| u.status != UndoStatus::Pending);
    let by_undo = r.actions_by_undo();
    html! {
        h2 {
            @if ran { "Rollback path (newest first)" }
            @else { "Undos registered (a rollback would run them newest first)" }
        }
        table #rollback {
            tr { th { "#" } th { "status" } th { "undo" } th { "actions" } }
            @for u in r.undos.iter().rev() {
                @let (status, class) = match u.status {
                    UndoStatus::Pending => ("pending", ""),
                    UndoStatus::Done => ("undone", ""),
                    UndoStatus::Failed => ("FAILED", "bad"),
                };
                tr {
                    td { (u.id) }
                    td class=(class) { (status) }
                    td { (u.description) }
                    td {
                        @for (n, a) in by_undo.get(&u.id).into_iter().flatten().enumerate() {
                            @if n > 0 { br; }
                            code { (a.host) } " " (action_cell(a))
                        }
                    }
                }
            }
        }
        @if let Some(after) = r.simulation.as_ref().and_then(|s| s.changed_after_rollback.as_ref()) {
            (changes("After the rollback", "changed-after-rollback", after))
        }
    }
}
