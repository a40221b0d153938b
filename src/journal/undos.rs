//! Undos and guards, and the lists their closures captured, kept once per run.

use super::*;

/// The id of a run's next undo. `CAST(? AS TEXT)`, not `?`: SQLite prepares a `max()` over
/// an index range bound to a bare parameter again at every call (see `store::to_mysql`).
pub(super) const NEXT_UNDO_ID: &str =
    "SELECT coalesce(max(id), 0) + 1 FROM undos WHERE run_id = CAST(? AS TEXT)";

impl Journal {
    /// Registers an undo and returns its id (ids grow: rollback runs them from the highest down).
    pub fn add_undo(&self, run: &str, attempt: u32, u: &NewUndo<'_>) -> Result<u64> {
        let NewUndo {
            step,
            host,
            description,
            spec,
            at_ms,
        } = *u;
        let lists = match spec {
            UndoSpec::Closure(c) | UndoSpec::Gate(c) => c.lists.as_slice(),
            _ => &[],
        };
        let spec = serde_json::to_string(spec).unwrap_or_default();
        self.with(|c| {
            c.tx(true, |c| {
                put_lists(c, run, lists)?;
                let id = c
                    .one(
                        NEXT_UNDO_ID,
                        vals![run],
                    )?
                    .map_or(1, |r| r.int(0));
                c.exec(
                    "INSERT INTO undos (run_id, id, attempt, step, host, description, spec, status, at_ms)
                     VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?)",
                    vals![run, id, attempt, step, host, description, spec, at_ms],
                )?;
                Ok(id as u64)
            })
        })
    }

    pub fn undo_finished(
        &self,
        run: &str,
        id: u64,
        status: UndoStatus,
        error: Option<&str>,
    ) -> Result<()> {
        self.with(|c| {
            c.exec(
                "UPDATE undos SET status = ?, error = ? WHERE run_id = ? AND id = ?",
                vals![status_str(&status), error, run, id],
            )
        })?;
        Ok(())
    }

    /// Every undo of the run, oldest first.
    pub fn undos(&self, run: &str) -> Result<Vec<UndoRow>> {
        self.with(|c| {
            Ok(c.query(
                "SELECT id, step, host, description, spec, status FROM undos
                 WHERE run_id = ? ORDER BY id",
                vals![run],
            )?
            .iter()
            .map(|r| UndoRow {
                id: r.u64(0),
                step: r.opt_text(1),
                host: r.opt_text(2),
                description: r.text(3),
                spec: serde_json::from_str(&r.text(4)).unwrap_or(UndoSpec::Closure(ClosureSpec {
                    function: String::new(),
                    captured: Vec::new(),
                    not_restorable: Some("the journal entry is unreadable".into()),
                    at: None,
                    lists: Vec::new(),
                })),
                status: parse_status(&r.text(5), UndoStatus::Pending),
            })
            .collect())
        })
    }

    /// Records a guard that was just set (or re-set on resume: the count of re-checks grows).
    pub fn guard_set(
        &self,
        run: &str,
        name: &str,
        step: Option<&str>,
        set_fn: &ClosureSpec,
        restore_fn: &ClosureSpec,
    ) -> Result<()> {
        let (s, r) = (
            serde_json::to_string(set_fn).unwrap_or_default(),
            serde_json::to_string(restore_fn).unwrap_or_default(),
        );
        self.with(|c| {
            c.tx(true, |c| {
                put_lists(c, run, &set_fn.lists)?;
                put_lists(c, run, &restore_fn.lists)?;
                c.exec(
                    "INSERT INTO guards (run_id, name, step, set_fn, restore_fn, status)
                 VALUES (?, ?, ?, ?, ?, 'set')
                 ON CONFLICT (run_id, name) DO UPDATE SET status = 'set', error = NULL,
                    set_fn = excluded.set_fn, restore_fn = excluded.restore_fn",
                    vals![run, name, step, s, r],
                )
            })
        })?;
        Ok(())
    }

    /// The JSON of a list that closures of `run` captured (see `SCHEMA_V5`).
    pub fn captured_list(&self, run: &str, hash: &str) -> Result<Option<String>> {
        self.with(|c| {
            Ok(c.one(
                "SELECT value FROM captured WHERE run_id = ? AND hash = ?",
                vals![run, hash],
            )?
            .map(|r| r.text(0)))
        })
    }

    pub fn guard_rechecked(&self, run: &str, name: &str) -> Result<()> {
        self.with(|c| {
            c.exec(
                "UPDATE guards SET rechecks = rechecks + 1 WHERE run_id = ? AND name = ?",
                vals![run, name],
            )
        })?;
        Ok(())
    }

    pub fn guard_finished(
        &self,
        run: &str,
        name: &str,
        status: GuardStatus,
        error: Option<&str>,
    ) -> Result<()> {
        self.with(|c| {
            c.exec(
                "UPDATE guards SET status = ?, error = ? WHERE run_id = ? AND name = ?",
                vals![status_str(&status), error, run, name],
            )
        })?;
        Ok(())
    }

    /// Every guard of the run, in the order they were first set.
    pub fn guards(&self, run: &str) -> Result<Vec<GuardRow>> {
        self.with(|c| {
            Ok(c.query(
                "SELECT name, step, set_fn, restore_fn, status FROM guards WHERE run_id = ? ORDER BY rowid",
                vals![run],
            )?
            .iter()
            .filter_map(|r| {
                Some(GuardRow {
                    name: r.text(0),
                    step: r.opt_text(1),
                    set_fn: serde_json::from_str(&r.text(2)).ok()?,
                    restore_fn: serde_json::from_str(&r.text(3)).ok()?,
                    status: parse_status(&r.text(4), GuardStatus::Set),
                })
            })
            .collect())
        })
    }
}

/// Stores the lists a closure spec brings, once per run and content (inside the caller's
/// transaction).
fn put_lists(c: &mut Conn, run: &str, lists: &[(String, String)]) -> SResult<()> {
    for (hash, value) in lists {
        c.exec(
            "INSERT OR IGNORE INTO captured (run_id, hash, value) VALUES (?, ?, ?)",
            vals![run, hash, value],
        )?;
    }
    Ok(())
}
