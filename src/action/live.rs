//! A long command's output as `output` events, line by line, once it has run a second.

use super::*;

/// How long a command runs before its output is also sent as `output` events.
const LIVE_AFTER: Duration = Duration::from_secs(1);
/// The longest line one `output` event carries; longer lines are cut into pieces.
const LIVE_LINE_MAX: usize = 16 * 1024;

/// A command's output as `output` events, for long commands: lines seen in its first second are
/// held (short commands stay quiet; their output is in the script's result), then every complete
/// line is sent as it arrives. Whole lines only, so a secret split across two reads is still
/// redacted.
pub(super) struct LiveOutput {
    host: String,
    step: Option<String>,
    events: Arc<dyn EventSink>,
    redactor: crate::secret::Redactor,
    start: Instant,
    state: Mutex<LiveState>,
}

#[derive(Default)]
struct LiveState {
    /// The command has ended: a daemon it started may still hold its pipes; that is not its output.
    ended: bool,
    partial: [Vec<u8>; 2],
    held: Vec<(&'static str, String)>,
}

impl LiveOutput {
    pub(super) fn new(
        host: &str,
        events: Arc<dyn EventSink>,
        redactor: crate::secret::Redactor,
    ) -> Self {
        LiveOutput {
            host: host.to_string(),
            step: current_step(),
            events,
            redactor,
            start: Instant::now(),
            state: Mutex::new(LiveState::default()),
        }
    }

    pub(super) fn push(&self, stream: &'static str, bytes: &[u8]) {
        let mut st = crate::lock(&self.state);
        if st.ended {
            return;
        }
        let buf = &mut st.partial[usize::from(stream == "stderr")];
        buf.extend_from_slice(bytes);
        let mut lines = Vec::new();
        while let Some(i) = buf
            .iter()
            .position(|b| *b == b'\n')
            .or_else(|| (buf.len() >= LIVE_LINE_MAX).then_some(LIVE_LINE_MAX - 1))
        {
            let line: Vec<u8> = buf.drain(..=i).collect();
            lines.push((stream, String::from_utf8_lossy(&line).into_owned()));
        }
        st.held.extend(lines);
        if self.start.elapsed() >= LIVE_AFTER {
            let out = std::mem::take(&mut st.held);
            drop(st);
            self.send(out);
        }
    }

    /// The command ended: a long one sends what is left, a short one nothing.
    pub(super) fn finish(&self) {
        let mut st = crate::lock(&self.state);
        st.ended = true;
        if self.start.elapsed() < LIVE_AFTER {
            return;
        }
        let mut out = std::mem::take(&mut st.held);
        for (i, name) in ["stdout", "stderr"].into_iter().enumerate() {
            let rest = std::mem::take(&mut st.partial[i]);
            if !rest.is_empty() {
                out.push((name, String::from_utf8_lossy(&rest).into_owned()));
            }
        }
        drop(st);
        self.send(out);
    }

    fn send(&self, lines: Vec<(&'static str, String)>) {
        for (stream, text) in lines {
            self.events.emit(&Event::Output {
                host: self.host.clone(),
                step: self.step.clone(),
                stream: stream.to_string(),
                text: self.redactor.redact(&text),
            });
        }
    }
}
