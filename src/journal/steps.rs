//! What a run did: steps, actions and their replay log, log lines and backups.

use super::*;

/// A step's place in the run: its own if it ran before, else the next. `CAST(? AS TEXT)` as in
/// `undos::NEXT_UNDO_ID`.
pub(super) const STEP_SEQ: &str =
    "SELECT coalesce((SELECT seq FROM steps WHERE run_id = ? AND `key` = ?),
    (SELECT max(seq) + 1 FROM steps WHERE run_id = CAST(? AS TEXT)), 0)";

impl Journal {
    /// Records that a step started (or started again, on resume).
    pub fn step_started(&self, run: &str, key: &str, attempt: u32, at_ms: u64) -> Result<()> {
        self.with(|c| {
            let seq = c
                .one(STEP_SEQ, vals![run, key, run])?
                .map_or(0, |r| r.int(0));
            c.exec(
                "INSERT INTO steps (run_id, `key`, seq, attempt, status, at_ms, hosts)
                 VALUES (?, ?, ?, ?, 'running', ?, '[]')
                 ON CONFLICT (run_id, `key`) DO UPDATE SET attempt = excluded.attempt,
                    status = 'running', at_ms = excluded.at_ms, error = NULL, result = NULL",
                vals![run, key, seq, attempt, at_ms],
            )
        })?;
        Ok(())
    }

    /// Records how a step ended; its result is kept for resume.
    pub fn step_finished(
        &self,
        run: &str,
        rec: &StepRecord,
        result: Option<&serde_json::Value>,
    ) -> Result<()> {
        let hosts = serde_json::to_string(&rec.hosts).unwrap_or_default();
        self.with(|c| {
            c.exec(
                "UPDATE steps SET status = ?, duration_ms = ?, hosts = ?, actions = ?,
                    result = ?, error = ? WHERE run_id = ? AND `key` = ?",
                vals![
                    status_str(&rec.status),
                    rec.duration_ms,
                    hosts,
                    rec.actions,
                    result.map(|v| v.to_string()),
                    rec.error.clone(),
                    run,
                    &rec.name,
                ],
            )
        })?;
        Ok(())
    }

    /// A step of the run, if it was started.
    pub fn step(&self, run: &str, key: &str) -> Result<Option<StepRow>> {
        self.with(|c| {
            Ok(c.one(
                "SELECT `key`, status, attempt, result FROM steps WHERE run_id = ? AND `key` = ?",
                vals![run, key],
            )?
            .map(|r| StepRow {
                key: r.text(0),
                status: parse_status(&r.text(1), StepStatus::Running),
                attempt: r.u32(2),
                result: r.opt_text(3).and_then(|t| serde_json::from_str(&t).ok()),
            }))
        })
    }

    /// Records an action (batched: see `Db::pending`).
    pub fn record_action(&self, run: &str, attempt: u32, mut a: ActionRecord) -> Result<()> {
        if let Some(kept) = &self.kept {
            // As the table's INSERT OR REPLACE: one record per run, attempt and seq, whose
            // attempt is the one given.
            a.attempt = attempt;
            crate::lock(kept)
                .entry(run.to_string())
                .or_default()
                .new
                .push(a);
            return Ok(());
        }
        self.queue(Pending::Action(run.to_string(), attempt, a))
    }

    /// Journals, durably, that a mutating action is about to run (see `ReplayRow`).
    pub fn replay_started(&self, run: &str, row: &ReplayRow) -> Result<()> {
        self.durable(Pending::Replay(run.to_string(), row.clone()))
    }

    /// Journals a read a step made and what it returned (batched: a read is safe to repeat, and
    /// the next durable write, which any later change makes first, writes it out before it).
    pub fn replay_read(&self, run: &str, row: &ReplayRow) -> Result<()> {
        self.queue(Pending::Replay(run.to_string(), row.clone()))
    }

    /// Journals, durably, how a mutating action ended (and what it returned), before anything
    /// else sees it ended: a crash after a change finished must not leave it looking unfinished,
    /// or a resume would run it again.
    #[allow(clippy::too_many_arguments)]
    pub fn replay_ended(
        &self,
        run: &str,
        attempt: u32,
        step: &str,
        host: &str,
        pos: u32,
        state: ReplayState,
        outcome: Option<&str>,
    ) -> Result<()> {
        self.durable(Pending::ReplayEnd {
            run: run.to_string(),
            attempt,
            step: step.to_string(),
            host: host.to_string(),
            pos,
            state,
            outcome: outcome.map(str::to_string),
        })
    }

    /// The replay log of a run, by attempt, step, host and position.
    pub fn replay_log(&self, run: &str) -> Result<Vec<ReplayRow>> {
        self.with(|c| {
            Ok(c.query(
                "SELECT attempt, step, host, pos, seq, fingerprint, description, state, outcome
                 FROM replay WHERE run_id = ? ORDER BY attempt, step, host, pos",
                vals![run],
            )?
            .iter()
            .map(|r| ReplayRow {
                attempt: r.u32(0),
                step: r.text(1),
                host: r.text(2),
                pos: r.u32(3),
                seq: r.u64(4),
                fingerprint: r.text(5),
                description: r.text(6),
                state: parse_status(&r.text(7), ReplayState::Started),
                outcome: r.opt_text(8),
            })
            .collect())
        })
    }

    /// Records a log line (batched like actions).
    pub fn record_log(&self, run: &str, attempt: u32, l: &LogLine) -> Result<()> {
        self.queue(Pending::Log(run.to_string(), attempt, l.clone()))
    }

    /// Records a backup the run took or reused (one row per host and path). A reused backup
    /// keeps the row of the attempt that took it.
    pub fn record_backup(&self, run: &str, attempt: u32, b: &BackupRecord) -> Result<()> {
        let verb = if b.backup.taken {
            "INSERT OR REPLACE"
        } else {
            "INSERT OR IGNORE"
        };
        self.with(|c| {
            c.exec(
                &format!(
                    "{verb} INTO backups (run_id, attempt, step, at_ms, host, kind, source,
                        path, files, bytes, sha256, taken)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                ),
                vals![
                    run,
                    attempt,
                    b.step.clone(),
                    b.at_ms,
                    &b.backup.host,
                    &b.backup.kind,
                    &b.backup.source,
                    &b.backup.path,
                    b.backup.files,
                    b.backup.bytes,
                    &b.backup.sha256,
                    b.backup.taken,
                ],
            )
            .map(|_| ())
        })
    }

    /// Writes the rows that wait now (the end of a run does it too).
    pub fn flush(&self) -> Result<()> {
        self.with(|_| Ok(()))
    }
}
