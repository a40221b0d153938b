//! What the executor writes down: an action's replay-log row and its record in the journal and events.

use std::borrow::Cow;

use super::*;

impl Executor {
    /// Journals a replayed action, or a read, in this attempt's replay log (a later resume
    /// replays it too).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn replay_row(
        &self,
        j: &RunJournal,
        step: &str,
        host: &str,
        pos: u32,
        seq: u64,
        fp: &str,
        action: &Action,
        result: &Result<Outcome, Fault>,
    ) {
        let outcome = result
            .as_ref()
            .ok()
            .and_then(|o| Recorded::of(o, &self.inventory.redactor))
            .and_then(|r| serde_json::to_string(&r).ok());
        let row = ReplayRow {
            attempt: j.attempt,
            step: step.to_string(),
            host: host.to_string(),
            pos,
            seq,
            fingerprint: fp.to_string(),
            description: self.inventory.redactor.redact(&action.describe()),
            state: if result.is_ok() {
                ReplayState::Done
            } else {
                ReplayState::Failed
            },
            outcome,
        };
        // Batched: nothing depends on it before the next durable write, which writes it first.
        if let Err(e) = j.journal.replay_read(&j.run_id, &row) {
            self.journal_failed(&e);
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn record(
        &self,
        seq: u64,
        host: &str,
        action: &Action,
        disposition: Disposition,
        at: Duration,
        duration: Duration,
        result: &Result<Outcome, Fault>,
    ) {
        let red = &self.inventory.redactor;
        let summary: Cow<'static, str> = match result {
            Ok(Outcome::Exec(o)) => match (o.code, &o.signal) {
                (Some(0), _) => "exit 0".into(),
                (Some(c), _) => format!("exit {c}").into(),
                (None, Some(s)) => format!("killed by SIG{s}").into(),
                (None, None) => "ended".into(),
            },
            Ok(Outcome::Skipped) => "skipped (check mode)".into(),
            Ok(Outcome::Bool(true)) => "true".into(),
            Ok(Outcome::Bool(false)) => "false".into(),
            Ok(Outcome::Int(i)) => i.to_string().into(),
            Ok(Outcome::Text(t)) => t.clone().into(),
            Ok(Outcome::Bytes(b)) => format!("{} bytes", b.len()).into(),
            Ok(Outcome::Unit) => "ok".into(),
            Ok(Outcome::Sql(r)) if r.columns.is_empty() => {
                format!("{} affected", r.affected).into()
            }
            Ok(Outcome::Sql(r)) => format!("{} rows", r.rows.len()).into(),
            Ok(Outcome::Ddb(v)) => v.summary().into(),
            Ok(Outcome::Backup(b)) => format!(
                "{} files, {} bytes, sha256 {}",
                b.files,
                b.bytes,
                &b.sha256[..b.sha256.len().min(12)]
            )
            .into(),
            Err(f) => f.message.clone().into(),
        };
        let summary = if disposition == Disposition::Replayed {
            format!("{summary} (replayed: finished by an earlier attempt)").into()
        } else {
            summary
        };
        // Texts are interned only where the journal keeps the records (a rehearsal, an
        // in-memory journal): one that writes them to its table drops each record at once, and
        // the interner would keep up to `Interner::MAX` recent texts alive for nothing.
        let keeps = self
            .journal
            .get()
            .is_some_and(|j| j.journal.keeps_records());
        let share = |t: Cow<'static, str>| {
            if keeps {
                self.texts.shared(t)
            } else {
                SharedStr::from(t)
            }
        };
        let rec = ActionRecord {
            attempt: self.journal.get().map_or(1, |j| j.attempt),
            seq,
            host: self.names.get(host).cloned().unwrap_or_else(|| host.into()),
            step: current_step_shared().map(SharedStr::from),
            op: SharedStr::from_static(action.op()),
            read_only: action.is_read_only(),
            description: share(red.redact_cow(action.describe().into())),
            disposition,
            at_ms: at.as_millis() as u64,
            duration_ms: duration.as_millis() as u64,
            ok: result.is_ok(),
            result: share(red.redact_cow(summary)),
            argv: action.argv().map(|a| {
                a.into_iter()
                    .map(|x| share(red.redact_cow(x.into())))
                    .collect()
            }),
        };
        if let Some(step) = &rec.step {
            let mut per = crate::lock(&self.per_step);
            let t = per.entry(step.clone()).or_default();
            t.actions += 1;
            if t.seen.insert(rec.host.clone()) {
                t.hosts.push(rec.host.clone());
            }
        }
        // The journal keeps the records (reports are read from it); nothing else holds them,
        // so the event's record is the one it keeps.
        let event = Event::Action(rec);
        self.events.emit(&event);
        let Event::Action(rec) = event else {
            unreachable!("made above")
        };
        if let Some(j) = self.journal.get() {
            if let Err(e) = j.journal.record_action(&j.run_id, j.attempt, rec) {
                self.journal_failed(&e);
            }
        }
    }
}
