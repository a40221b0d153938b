//! `capstan journal copy`: runs moved between journals (a file and a server), row for row.

use super::store::{vals, Val};
use super::{Journal, RunStatus};
use crate::error::Result;

/// Each table a run has rows in: its name, the column naming the run, the columns copied (every
/// one but SQLite's implicit `rowid`, which the destination gives anew), and the order they are
/// written in (so logs, guards and backups keep their order).
const TABLES: &[(&str, &str, &str, &str)] = &[
    (
        "runs",
        "id",
        "id, playbook, playbook_path, playbook_hash, playbook_source, inventory_id,
         inventory_path, hosts, params, mode, operator, controller, pid, started_ms, ended_ms,
         duration_ms, status, outcome, attempts, result, pid_start",
        "id",
    ),
    (
        "steps",
        "run_id",
        "run_id, `key`, seq, attempt, status, at_ms, duration_ms, hosts, actions, result, error",
        "seq",
    ),
    (
        "actions",
        "run_id",
        "run_id, attempt, seq, step, host, op, read_only, description, disposition, at_ms,
         duration_ms, ok, result, argv",
        "attempt, seq",
    ),
    (
        "undos",
        "run_id",
        "run_id, id, attempt, step, host, description, spec, status, at_ms, error",
        "id",
    ),
    (
        "guards",
        "run_id",
        "run_id, name, step, set_fn, restore_fn, status, rechecks, error",
        "rowid",
    ),
    (
        "logs",
        "run_id",
        "run_id, attempt, at_ms, level, step, message",
        "rowid",
    ),
    (
        "backups",
        "run_id",
        "run_id, attempt, step, at_ms, host, kind, source, path, files, bytes, sha256, taken",
        "at_ms, rowid",
    ),
    (
        "replay",
        "run_id",
        "run_id, attempt, step, host, pos, seq, fingerprint, description, state, outcome",
        "attempt, step, host, pos",
    ),
    ("captured", "run_id", "run_id, hash, value", "hash"),
];

/// What a copy did.
#[derive(Debug, Default, serde::Serialize)]
pub struct CopySummary {
    /// Runs copied, oldest first, with the rows each took.
    pub copied: Vec<(String, usize)>,
    /// Runs left where they were, and why.
    pub skipped: Vec<(String, String)>,
}

impl Journal {
    /// Copies runs (all of them when `only` is empty) into `to`. A run `to` already has is left
    /// alone; so is one whose process still works on it (its journal would go on in `self`).
    /// Each run goes in one transaction: a copy that fails leaves no half run behind.
    pub fn copy_runs(&self, to: &Journal, only: &[String]) -> Result<CopySummary> {
        let mut ids: Vec<String> = if only.is_empty() {
            let mut all = self.runs(usize::MAX >> 1)?;
            all.reverse();
            all.into_iter().map(|r| r.id).collect()
        } else {
            only.to_vec()
        };
        ids.dedup();
        let mut out = CopySummary::default();
        for id in ids {
            let row = self.run(&id)?;
            if row.status == RunStatus::Running && self.run_process_alive(&row)? != Some(false) {
                out.skipped.push((
                    id,
                    format!(
                        "still running (pid {} on {}), or its process cannot be checked from here",
                        row.pid, row.controller
                    ),
                ));
                continue;
            }
            let there = to.with(|c| c.one("SELECT 1 FROM runs WHERE id = ?", vals![&id]))?;
            if there.is_some() {
                out.skipped.push((id, "already in the destination".into()));
                continue;
            }
            self.write_kept_actions(&id)?;
            let mut tables: Vec<(&str, &str, Vec<Vec<Val>>)> = Vec::new();
            self.with(|c| {
                for (table, key, cols, order) in TABLES {
                    let rows = c.query(
                        &format!("SELECT {cols} FROM {table} WHERE {key} = ? ORDER BY {order}"),
                        vals![&id],
                    )?;
                    tables.push((table, cols, rows.into_iter().map(|r| r.0).collect()));
                }
                Ok(())
            })?;
            let n: usize = tables.iter().map(|t| t.2.len()).sum();
            to.with(|c| {
                c.tx(true, |c| {
                    for (table, cols, rows) in &tables {
                        let marks = vec!["?"; cols.split(',').count()].join(", ");
                        let sql = format!("INSERT INTO {table} ({cols}) VALUES ({marks})");
                        for r in rows {
                            c.exec(&sql, r)?;
                        }
                    }
                    Ok(())
                })
            })?;
            out.copied.push((id, n));
        }
        Ok(out)
    }
}
