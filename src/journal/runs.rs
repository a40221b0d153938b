//! Runs: begun, reopened, finished, listed, and whether the process working on one lives.

use super::*;

impl Journal {
    /// Marks this process as the one working on `run` (a server session lock; nothing on a
    /// file, where the pid and the machine tell). Called when a run begins or is reopened.
    pub fn hold_run(&self, run: &str) -> Result<()> {
        self.with(|c| c.session_lock(&run_lock_name(run)).map(|_| ()))
    }

    /// Whether the process that works on `run` lives: on a server, whether some session holds
    /// the run's lock (`None` when the server cannot tell); on a file, whether `pid` lives on
    /// this machine (`None` for another machine's run).
    pub fn run_process_alive(&self, row: &RunRow) -> Result<Option<bool>> {
        if self.on_server() {
            return self.with(|c| c.session_lock_used(&run_lock_name(&row.id)));
        }
        Ok((row.controller == controller()).then(|| lock::holder_alive(row.pid, row.pid_start)))
    }

    /// Records a new run and returns its id.
    pub fn begin_run(&self, s: &RunStart) -> Result<String> {
        let id = new_run_id();
        let hosts = serde_json::to_string(&s.hosts).unwrap_or_default();
        let mode = status_str(&s.mode);
        self.with(|c| {
            c.exec(
                "INSERT INTO runs (id, playbook, playbook_path, playbook_hash, playbook_source,
                    inventory_id, inventory_path, hosts, params, mode, operator, controller, pid,
                    started_ms, status, pid_start)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'running', ?)",
                vals![
                    &id,
                    &s.playbook,
                    s.playbook_path.clone(),
                    source_hash(&s.source),
                    &s.source,
                    &s.inventory_id,
                    s.inventory_path.clone(),
                    hosts,
                    s.params.to_string(),
                    mode,
                    operator(),
                    controller(),
                    std::process::id(),
                    unix_ms(),
                    my_start_time(),
                ],
            )
        })?;
        self.hold_run(&id)?;
        Ok(id)
    }

    /// Marks a stopped run as running again (resume or rollback) and returns the new attempt number.
    pub fn reopen_run(&self, id: &str, source: Option<&str>) -> Result<u32> {
        self.hold_run(id)?;
        self.with(|c| {
            c.tx(true, |c| {
                c.exec(
                    "UPDATE runs SET status = 'running', attempts = attempts + 1, pid = ?,
                        operator = ?, controller = ?, ended_ms = NULL, pid_start = ? WHERE id = ?",
                    vals![
                        std::process::id(),
                        operator(),
                        controller(),
                        my_start_time(),
                        id
                    ],
                )?;
                if let Some(src) = source {
                    c.exec(
                        "UPDATE runs SET playbook_source = ?, playbook_hash = ? WHERE id = ?",
                        vals![src, source_hash(src), id],
                    )?;
                }
                Ok(c.one("SELECT attempts FROM runs WHERE id = ?", vals![id])?
                    .map_or(1, |r| r.u32(0)))
            })
        })
    }

    /// Records how the run (this attempt) ended.
    pub fn finish_run(
        &self,
        id: &str,
        status: RunStatus,
        outcome: &Outcome,
        duration_ms: u64,
        result: &serde_json::Value,
    ) -> Result<()> {
        let outcome = serde_json::to_string(outcome).unwrap_or_default();
        self.with(|c| {
            c.exec(
                "UPDATE runs SET status = ?, outcome = ?, ended_ms = ?,
                    duration_ms = duration_ms + ?, result = ? WHERE id = ?",
                vals![
                    status.as_str(),
                    outcome,
                    unix_ms(),
                    duration_ms,
                    result.to_string(),
                    id
                ],
            )?;
            c.session_unlock(&run_lock_name(id))
        })?;
        Ok(())
    }

    /// Replaces the recorded params (once `params()` has applied defaults; already redacted).
    pub fn set_params(&self, id: &str, params: &serde_json::Value) -> Result<()> {
        self.with(|c| {
            c.exec(
                "UPDATE runs SET params = ? WHERE id = ?",
                vals![params.to_string(), id],
            )
        })?;
        Ok(())
    }

    /// Deletes a run that never started (its hosts were locked by another run).
    pub fn forget_run(&self, id: &str) -> Result<()> {
        self.with(|c| {
            c.exec("DELETE FROM runs WHERE id = ?", vals![id])?;
            c.session_unlock(&run_lock_name(id))
        })?;
        Ok(())
    }

    /// Sets only the status (after a rollback of a finished run).
    pub fn set_status(&self, id: &str, status: RunStatus) -> Result<()> {
        self.with(|c| {
            c.exec(
                "UPDATE runs SET status = ?, ended_ms = ? WHERE id = ?",
                vals![status.as_str(), unix_ms(), id],
            )
        })?;
        Ok(())
    }

    pub(super) fn run_row(r: &Row) -> RunRow {
        RunRow {
            id: r.text(0),
            playbook: r.text(1),
            playbook_path: r.opt_text(2),
            playbook_hash: r.text(3),
            playbook_source: r.text(4),
            inventory_id: r.text(5),
            inventory_path: r.opt_text(6),
            hosts: serde_json::from_str(&r.text(7)).unwrap_or_default(),
            params: serde_json::from_str(&r.text(8)).unwrap_or_default(),
            mode: parse_status(&r.text(9), Mode::Run),
            operator: r.text(10),
            controller: r.text(11),
            pid: r.u32(12),
            pid_start: r.u64(13),
            process_gone: false,
            started_unix_ms: r.u64(14),
            ended_unix_ms: r.opt_int(15).map(|v| v as u64),
            status: RunStatus::parse(&r.text(16)),
            attempts: r.u32(17),
            guards_set: Vec::new(),
            undos_pending: 0,
        }
    }

    pub(super) fn decorate(&self, c: &mut Conn, row: &mut RunRow) -> SResult<()> {
        row.process_gone = row.status == RunStatus::Running
            && match c.session_lock_used(&run_lock_name(&row.id))? {
                Some(used) => !used,
                None => {
                    row.controller == controller() && !lock::holder_alive(row.pid, row.pid_start)
                }
            };
        row.guards_set = c
            .query(
                "SELECT name FROM guards WHERE run_id = ? AND status IN ('set', 'restore_failed') ORDER BY rowid",
                vals![&row.id],
            )?
            .iter()
            .map(|r| r.text(0))
            .collect();
        row.undos_pending = c
            .one(
                "SELECT count(*) FROM undos WHERE run_id = ? AND status = 'pending'",
                vals![&row.id],
            )?
            .map_or(0, |r| r.int(0)) as usize;
        Ok(())
    }

    /// One run, or an error that says the id is unknown.
    pub fn run(&self, id: &str) -> Result<RunRow> {
        let row = self.with(|c| {
            let mut row = c
                .one(&format!("{RUN_COLUMNS} WHERE id = ?"), vals![id])?
                .map(|r| Self::run_row(&r));
            if let Some(r) = row.as_mut() {
                self.decorate(c, r)?;
            }
            Ok(row)
        })?;
        row.ok_or_else(|| {
            Error::Usage(format!(
                "no run `{id}` in the journal{} (see `capstan runs`)",
                match &self.at {
                    Where::Memory => String::new(),
                    other => format!(" {other}"),
                }
            ))
        })
    }

    /// The newest runs first.
    pub fn runs(&self, limit: usize) -> Result<Vec<RunRow>> {
        self.with(|c| {
            let mut rows: Vec<RunRow> = c
                .query(
                    &format!("{RUN_COLUMNS} ORDER BY started_ms DESC, rowid DESC LIMIT ?"),
                    vals![limit],
                )?
                .iter()
                .map(Self::run_row)
                .collect();
            for r in rows.iter_mut() {
                self.decorate(c, r)?;
            }
            Ok(rows)
        })
    }
}

/// The columns of `runs` that `Journal::run_row` reads, in its order.
const RUN_COLUMNS: &str = "SELECT id, playbook, playbook_path, playbook_hash, playbook_source,
    inventory_id, inventory_path, hosts, params, mode, operator, controller, pid, pid_start,
    started_ms, ended_ms, status, attempts FROM runs";
