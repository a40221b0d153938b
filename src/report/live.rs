//! What is running now: a redrawn status line on a terminal (indicatif), a heartbeat in logs.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::Event;

/// Hosts a parallel step lists on the terminal; more are counted.
const HOST_LINES: usize = 6;

/// The running step as the events describe it.
#[derive(Debug, Default)]
struct Now {
    /// Between a run's start and its end: the heartbeat is silent outside (an embedder's
    /// `Host` outlives its runs).
    running: bool,
    step: Option<(String, Instant)>,
    wait: Option<WaitNow>,
    /// Per host in first-touch order: actions finished in this step, and the last one.
    hosts: Vec<(String, usize, String)>,
    /// Where each host is in `hosts` (a step on thousands of hosts searched the list at each
    /// action).
    at: crate::FastMap<String, usize>,
}

#[derive(Debug)]
struct WaitNow {
    what: String,
    attempt: u32,
    /// When the wait gives up, on this machine's clock (simulated waits move no real time).
    gives_up: Instant,
    /// When its next try is due: actions before then are that try's.
    next_try: Instant,
}

/// Whole seconds, as people read them: `2m 10s`.
fn short(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

fn clip(text: &str, max: usize) -> String {
    let first = text.lines().next().unwrap_or("");
    if first.chars().count() > max {
        format!("{}…", first.chars().take(max).collect::<String>())
    } else {
        first.to_string()
    }
}

impl Now {
    /// Takes in an event; true when what is shown changed.
    fn observe(&mut self, event: &Event) -> bool {
        match event {
            Event::RunStarted { .. } | Event::StepFinished { .. } => {
                *self = Now {
                    running: true,
                    ..Now::default()
                }
            }
            Event::StepStarted { step, .. } => {
                *self = Now {
                    running: true,
                    step: Some((step.clone(), Instant::now())),
                    ..Now::default()
                };
            }
            Event::RunFinished { .. } => *self = Now::default(),
            Event::Waiting {
                what,
                attempt,
                waited_ms,
                timeout_ms,
                every_ms,
                ..
            } => {
                let left = Duration::from_millis(timeout_ms.saturating_sub(*waited_ms));
                self.wait = Some(WaitNow {
                    what: what.clone(),
                    attempt: *attempt,
                    gives_up: Instant::now() + left,
                    next_try: Instant::now() + Duration::from_millis(*every_ms),
                });
            }
            Event::Action(a) => {
                // An action well after the wait's next try was due: the wait is over (it
                // succeeded, or the step went on). The tries' own actions leave it shown.
                if self
                    .wait
                    .as_ref()
                    .is_some_and(|w| Instant::now() > w.next_try + Duration::from_secs(1))
                {
                    self.wait = None;
                }
                match self.at.get(&*a.host) {
                    Some(&i) => {
                        let entry = &mut self.hosts[i];
                        entry.1 += 1;
                        entry.2 = a.description.to_string();
                    }
                    None => {
                        self.at.insert(a.host.to_string(), self.hosts.len());
                        self.hosts
                            .push((a.host.to_string(), 1, a.description.to_string()));
                    }
                }
            }
            _ => return false,
        }
        true
    }

    fn wait_text(&self) -> Option<String> {
        self.wait.as_ref().map(|w| {
            format!(
                "waiting for {} (attempt {}, gives up in {})",
                w.what,
                w.attempt,
                short(w.gives_up.saturating_duration_since(Instant::now()))
            )
        })
    }

    /// The lines under the step's: the wait, then each host's progress when there are several.
    fn detail(&self) -> String {
        let mut s = String::new();
        if let Some(w) = self.wait_text() {
            s.push_str(&format!("\n    {w}"));
        }
        if self.hosts.len() > 1 {
            for (h, n, last) in self.hosts.iter().take(HOST_LINES) {
                s.push_str(&format!(
                    "\n    {h}: {n} action(s), last: {}",
                    clip(last, 60)
                ));
            }
            if self.hosts.len() > HOST_LINES {
                s.push_str(&format!(
                    "\n    … and {} more host(s)",
                    self.hosts.len() - HOST_LINES
                ));
            }
        }
        s
    }

    /// One line for a log: how long the step has run, and what it waits for or did last; none
    /// outside a run.
    fn heartbeat(&self) -> Option<String> {
        if !self.running {
            return None;
        }
        let Some((step, since)) = &self.step else {
            return Some("… still running (between steps)".to_string());
        };
        let doing = match (self.wait_text(), self.hosts.last()) {
            (Some(w), _) => w,
            (None, Some((h, _, last))) => {
                let n: usize = self.hosts.iter().map(|(_, n, _)| n).sum();
                format!("{n} action(s) so far, last on {h}: {}", clip(last, 80))
            }
            (None, None) => "no action finished yet".to_string(),
        };
        Some(format!(
            "… {} into step `{step}`: {doing}",
            short(since.elapsed())
        ))
    }
}

/// Redraws the running step on a terminal, or prints a heartbeat; prints the lines it is given
/// above the status line.
#[derive(Debug)]
pub(crate) struct Live {
    now: Arc<Mutex<Now>>,
    /// Serialises writes to stderr (the heartbeat thread writes too).
    out: Arc<Mutex<()>>,
    bar: Option<Mutex<Option<ProgressBar>>>,
    /// Dropped with `Live`: the heartbeat thread ends.
    _stop: Option<mpsc::Sender<()>>,
}

impl Live {
    /// Lines only: no status line, no heartbeat.
    pub(crate) fn plain() -> Self {
        Live {
            now: Arc::default(),
            out: Arc::default(),
            bar: None,
            _stop: None,
        }
    }

    /// A status line under the printed lines, redrawn a few times a second: the step, its
    /// elapsed time, the wait (what, attempt, time left) and, for several hosts, each one's.
    pub(crate) fn terminal() -> Self {
        Live {
            bar: Some(Mutex::new(None)),
            ..Live::plain()
        }
    }

    /// A line on stderr every `every` while the run lives, saying what runs.
    pub(crate) fn heartbeat(every: Duration) -> Self {
        let live = Live::plain();
        let (tx, rx) = mpsc::channel::<()>();
        let (now, out) = (live.now.clone(), live.out.clone());
        std::thread::spawn(move || loop {
            match rx.recv_timeout(every) {
                Err(RecvTimeoutError::Timeout) => {
                    let line = crate::lock(&now).heartbeat();
                    if let Some(line) = line {
                        let _g = crate::lock(&out);
                        eprintln!("{line}");
                    }
                }
                _ => return,
            }
        });
        Live {
            _stop: Some(tx),
            ..live
        }
    }

    /// Updates the state (and the status line) from an event.
    pub(crate) fn observe(&self, event: &Event) {
        let mut now = crate::lock(&self.now);
        if !now.observe(event) {
            return;
        }
        let Some(bar) = &self.bar else { return };
        let mut bar = crate::lock(bar);
        match (&now.step, bar.as_ref()) {
            (None, Some(b)) => {
                b.finish_and_clear();
                *bar = None;
            }
            (Some((step, _)), None) => {
                let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
                if let Ok(style) =
                    ProgressStyle::with_template("{spinner} {prefix}  {elapsed}{msg}")
                {
                    b.set_style(style);
                }
                b.set_prefix(clip(step, 70));
                b.set_message(now.detail());
                b.enable_steady_tick(Duration::from_millis(250));
                *bar = Some(b);
            }
            (Some(_), Some(b)) => b.set_message(now.detail()),
            (None, None) => {}
        }
    }

    /// Prints a line above the status line (or plainly, without one).
    pub(crate) fn print(&self, line: &str) {
        let _g = crate::lock(&self.out);
        if let Some(bar) = &self.bar {
            if let Some(b) = crate::lock(bar).as_ref() {
                b.suspend(|| eprintln!("{line}"));
                return;
            }
        }
        eprintln!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heartbeat_names_the_step_and_its_wait() {
        let mut n = Now::default();
        assert_eq!(n.heartbeat(), None, "no run, no heartbeat");
        n.observe(&Event::RunStarted {
            schema: 1,
            run_id: "r".into(),
            attempt: 1,
            playbook: "p".into(),
            mode: crate::Mode::Run,
            hosts: vec![],
        });
        assert_eq!(
            n.heartbeat().as_deref(),
            Some("… still running (between steps)")
        );
        n.observe(&Event::StepStarted {
            step: "zone1".into(),
            at_ms: 0,
        });
        assert!(n
            .heartbeat()
            .unwrap()
            .ends_with("into step `zone1`: no action finished yet"));
        n.observe(&Event::Waiting {
            step: Some("zone1".into()),
            what: "log sync".into(),
            attempt: 3,
            waited_ms: 4_000,
            timeout_ms: 604_000,
            every_ms: 2_000,
            last: "false".into(),
        });
        let line = n.heartbeat().unwrap();
        assert!(
            line.contains("waiting for log sync (attempt 3, gives up in 9m 59s)")
                || line.contains("waiting for log sync (attempt 3, gives up in 10m)"),
            "{line}"
        );
        n.observe(&Event::RunFinished {
            outcome: crate::report::Outcome::Succeeded,
            duration_ms: 1,
        });
        assert_eq!(n.heartbeat(), None, "the run ended");
    }
}
