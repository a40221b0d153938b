//! A run's report, read back from the journal.

use super::*;

impl Journal {
    /// The whole run as a report: every attempt's steps, actions and logs, undos and guards.
    pub fn report(&self, id: &str) -> Result<RunReport> {
        let run = self.run(id)?;
        self.with(|c| {
            let head = c
                .one("SELECT outcome, duration_ms, result FROM runs WHERE id = ?", vals![id])?
                .unwrap_or(Row(Vec::new()));
            let outcome = head
                .opt_text(0)
                .and_then(|o| serde_json::from_str::<Outcome>(&o).ok())
                .map(|o| with_source_line(o, &run))
                .unwrap_or_else(|| Outcome::Interrupted {
                    error: Located::new(
                        "the run did not finish: it was killed, or is still running",
                        None,
                    ),
                });
            let steps = c
                .query(
                    "SELECT `key`, status, at_ms, duration_ms, hosts, actions, error, attempt, result
                     FROM steps WHERE run_id = ? ORDER BY seq",
                    vals![id],
                )?
                .iter()
                .map(|r| {
                    let status = parse_status(&r.text(1), StepStatus::Running);
                    // A skipped step's result is its reason (see `skip_step`).
                    let reason = (status == StepStatus::Skipped)
                        .then(|| r.opt_text(8))
                        .flatten()
                        .and_then(|t| serde_json::from_str::<String>(&t).ok());
                    StepRecord {
                        name: r.text(0),
                        status,
                        at_ms: r.u64(2),
                        duration_ms: r.u64(3),
                        hosts: serde_json::from_str(&r.text(4)).unwrap_or_default(),
                        actions: r.int(5) as usize,
                        error: r.opt_text(6),
                        attempt: r.u32(7),
                        reason,
                    }
                })
                .collect();
            let kept = self.kept_actions(id);
            let actions = match kept {
                Some(kept) => kept,
                None => c
                .query(
                    "SELECT attempt, seq, step, host, op, read_only, description, disposition,
                        at_ms, duration_ms, ok, result, argv FROM actions WHERE run_id = ?
                     ORDER BY attempt, seq",
                    vals![id],
                )?
                .iter()
                .map(|r| ActionRecord {
                    attempt: r.u32(0),
                    seq: r.u64(1),
                    step: r.opt_text(2).map(crate::report::SharedStr::from),
                    host: r.text(3).into(),
                    op: r.text(4).into(),
                    read_only: r.bool(5),
                    description: r.text(6).into(),
                    disposition: parse_status(&r.text(7), Disposition::Performed),
                    at_ms: r.u64(8),
                    duration_ms: r.u64(9),
                    ok: r.bool(10),
                    result: r.text(11).into(),
                    argv: r.opt_text(12).and_then(|t| serde_json::from_str(&t).ok()),
                })
                .collect::<Vec<_>>()
                .into(),
            };
            let logs = c
                .query(
                    "SELECT at_ms, level, step, message FROM logs WHERE run_id = ? ORDER BY rowid",
                    vals![id],
                )?
                .iter()
                .map(|r| LogLine {
                    at_ms: r.u64(0),
                    level: r.text(1),
                    step: r.opt_text(2),
                    message: r.text(3),
                })
                .collect();
            let undos = c
                .query(
                    "SELECT id, step, host, description, status, error, spec FROM undos
                     WHERE run_id = ? ORDER BY id",
                    vals![id],
                )?
                .iter()
                .map(|r| {
                    let saved = kept_copy(&r.text(6));
                    UndoRecord {
                        id: r.u64(0),
                        step: r.opt_text(1),
                        host: r.opt_text(2),
                        description: r.text(3),
                        saved,
                        status: parse_status(&r.text(4), UndoStatus::Pending),
                        error: r.opt_text(5),
                    }
                })
                .collect();
            let guards = c
                .query(
                    "SELECT name, step, status, rechecks, error FROM guards WHERE run_id = ?
                     ORDER BY rowid",
                    vals![id],
                )?
                .iter()
                .map(|r| GuardRecord {
                    name: r.text(0),
                    step: r.opt_text(1),
                    status: parse_status(&r.text(2), GuardStatus::Set),
                    rechecks: r.u32(3),
                    error: r.opt_text(4),
                })
                .collect();
            let backups = c
                .query(
                    "SELECT step, at_ms, host, kind, source, path, files, bytes, sha256, taken
                     FROM backups WHERE run_id = ? ORDER BY at_ms, rowid",
                    vals![id],
                )?
                .iter()
                .map(|r| BackupRecord {
                    step: r.opt_text(0),
                    at_ms: r.u64(1),
                    backup: crate::report::BackupInfo {
                        host: r.text(2),
                        kind: r.text(3),
                        source: r.text(4),
                        path: r.text(5),
                        files: r.u64(6),
                        bytes: r.u64(7),
                        sha256: r.text(8),
                        taken: r.bool(9),
                    },
                })
                .collect();
            Ok(RunReport {
                run_id: run.id.clone(),
                playbook: run.playbook.clone(),
                mode: run.mode,
                status: run.status,
                outcome,
                started_unix_ms: run.started_unix_ms,
                duration_ms: head.u64(1),
                attempts: run.attempts,
                hosts: run.hosts.clone(),
                params: run.params.clone(),
                steps,
                actions,
                undos,
                guards,
                backups,
                simulation: None,
                host_groups: Vec::new(),
                logs,
                result: head
                    .opt_text(2)
                    .and_then(|r| serde_json::from_str(&r).ok())
                    .unwrap_or(serde_json::Value::Null),
            })
        })
    }
}

/// The kept copy a restore of an undo puts back (`Action::Restore`'s `saved`), read from the
/// undo's spec without building the rest of it: a closure's captured values are skipped, not
/// turned into JSON trees (that was most of a large rehearsal's report).
fn kept_copy(spec: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Spec {
        kind: String,
        #[serde(default)]
        actions: Vec<Step>,
    }
    #[derive(serde::Deserialize)]
    struct Step {
        #[serde(default)]
        op: Option<serde_json::Value>,
        #[serde(default)]
        saved: Option<serde_json::Value>,
    }
    let spec: Spec = serde_json::from_str(spec).ok()?;
    if spec.kind != "actions" {
        return None;
    }
    spec.actions
        .into_iter()
        .find(|a| a.op.as_ref().is_some_and(|o| o == "restore"))
        .and_then(|a| a.saved?.as_str().map(str::to_string))
}

/// Puts the playbook's source line back on an error that points into it (the line is not stored).
fn with_source_line(o: Outcome, run: &RunRow) -> Outcome {
    let fix = |l: Located| match &l.pos {
        Some(p) if p.file == run.playbook => l.with_source_text(&run.playbook_source),
        _ => l,
    };
    match o {
        Outcome::Failed { kind, error } => Outcome::Failed {
            kind,
            error: fix(error),
        },
        Outcome::Interrupted { error } => Outcome::Interrupted { error: fix(error) },
        o => o,
    }
}

#[cfg(test)]
mod tests {
    use super::kept_copy;

    /// The report reads one thing of an undo's spec: a restore's kept copy. Specs as the
    /// executor and `api::persist` write them.
    #[test]
    fn the_kept_copy_is_read_from_a_restore_and_from_nothing_else() {
        let restore = r#"{"kind":"actions","host":"db1","actions":[
            {"op":"exists","path":"/etc/x"},
            {"op":"restore","target":"/etc/x","saved":"/etc/x.capstan-backup-1","extra":[1,2]}]}"#;
        assert_eq!(
            kept_copy(restore).as_deref(),
            Some("/etc/x.capstan-backup-1")
        );
        let none = r#"{"kind":"actions","host":"db1","actions":[{"op":"remove","path":"/tmp/a"}]}"#;
        assert_eq!(kept_copy(none), None);
        let closure = r#"{"kind":"closure","function":"anon$1","captured":[{"op":"restore","saved":"no"}],"not_restorable":null,"at":null}"#;
        assert_eq!(kept_copy(closure), None);
        assert_eq!(kept_copy(r#"{"kind":"barrier","reason":"r"}"#), None);
        assert_eq!(kept_copy("not json"), None);
    }
}
