//! The fence before a resume or rollback: commands of earlier attempts found by their markers on the hosts, waited for or killed.

use super::*;

impl Executor {
    /// Before a resume or rollback touches anything: looks on every host of the run for commands
    /// of earlier attempts (their markers), waits for or kills those still running, and
    /// remembers what each marker said for the report of the action in flight. Refuses when a
    /// command is still running after the wait.
    pub(crate) fn fence(&self, on_running: OnRunning, wait: Duration) -> Result<(), Fault> {
        let Some(j) = self.journal.get() else {
            return Ok(());
        };
        if j.attempt < 2 || self.mode != Mode::Run || self.backend.kind() != Kind::Hosts {
            return Ok(());
        }
        let rows = j.journal.replay_log(&j.run_id).unwrap_or_default();
        let what = |name: &str| -> String {
            rows.iter()
                .find(|r| format!("{}.{}.{}", j.run_id, r.attempt, r.seq) == name)
                .map_or_else(
                    || format!("a command ({name})"),
                    |r| format!("`{}` (attempt {})", r.description, r.attempt),
                )
        };
        let policy = match on_running {
            OnRunning::Wait => "wait",
            OnRunning::Kill => "kill",
        };
        let secs = wait.as_secs().to_string();
        let argv: Vec<String> = [
            "sh",
            "-c",
            transport::wrap::SCAN,
            "sh",
            &j.run_id,
            policy,
            &secs,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let cmd = Command::Argv(argv);
        let hosts: Vec<&HostEntry> = self.inventory.hosts.iter().collect();
        let mut found: Vec<(String, Result<ExecOutput, Fault>)> = super::per_host(&hosts, |h| {
            let t = self.transport(h);
            let r = self.exec_on(
                h,
                t.as_ref(),
                &cmd,
                &BTreeMap::new(),
                None,
                None,
                Some(wait + Duration::from_secs(60)),
                1 << 20,
                None,
                None,
            );
            (h.name.clone(), r)
        });
        found.sort_by(|a, b| a.0.cmp(&b.0));
        let mut markers = HashMap::new();
        let mut still = Vec::new();
        for (host, r) in found {
            let out = match r {
                Ok(o) if o.code == Some(0) => o,
                Ok(o) => {
                    self.log("warn", &format!("{host}: could not look for commands of earlier attempts still running: {}", last_lines(&o.stderr, 3)));
                    continue;
                }
                Err(f) => {
                    self.log("warn", &format!("{host}: could not look for commands of earlier attempts still running: {}", f.message));
                    continue;
                }
            };
            use transport::wrap::MarkerStatus as M;
            for m in transport::wrap::parse_scan(&String::from_utf8_lossy(&out.stdout)) {
                match &m.status {
                    M::Killed => self.log(
                        "warn",
                        &format!(
                            "{host}: {} was still running: killed it (--on-running kill)",
                            what(&m.name)
                        ),
                    ),
                    M::EndedWhileWaiting => self.log(
                        "warn",
                        &format!(
                            "{host}: {} was still running: waited until it ended",
                            what(&m.name)
                        ),
                    ),
                    M::Running { pid } => still.push(format!(
                        "{host}: {} is still running (pid {pid}) after waiting {}s",
                        what(&m.name),
                        wait.as_secs()
                    )),
                    M::Done | M::Gone => {}
                }
                markers.insert(m.name, m.status);
            }
        }
        let mut book = lock(&self.replay);
        book.set_markers(markers);
        for row in book.in_flight() {
            let note = replay::in_flight_note(book.marker(&j.run_id, row));
            self.log(
                "warn",
                &format!(
                    "{}: `{}` may have run: attempt {} was running it when it stopped ({note}); step `{}` runs it again",
                    row.host, row.description, row.attempt, row.step
                ),
            );
        }
        drop(book);
        if still.is_empty() {
            Ok(())
        } else {
            Err(Fault::new(
                FaultKind::Action,
                None,
                format!(
                    "commands of an earlier attempt of this run are still running; nothing was done:\n  {}\nwait and try again, allow a longer wait (--running-timeout), or end them (--on-running kill)",
                    still.join("\n  ")
                ),
            ))
        }
    }

    /// Removes this run's markers from the hosts this attempt left them on (the run ended:
    /// nothing will ask for them). Best effort.
    pub(crate) fn clear_markers(&self) {
        let Some(j) = self
            .journal
            .get()
            .filter(|_| self.backend.kind() == Kind::Hosts)
        else {
            return;
        };
        let hosts: Vec<String> = std::mem::take(&mut *lock(&self.marked))
            .into_iter()
            .collect();
        let argv: Vec<String> = ["sh", "-c", transport::wrap::CLEAR, "sh", &j.run_id]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let cmd = Command::Argv(argv);
        super::per_host(&hosts, |name| {
            if let Some(h) = self.inventory.host(name) {
                let t = self.transport(h);
                if let Err(e) = self.exec_brief(h, t.as_ref(), &cmd, 4096) {
                    tracing::debug!(host = %name, "markers not cleared: {e}");
                }
            }
        });
    }
}
