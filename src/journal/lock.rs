//! Run locks: a host is held by at most one running run of this journal; stale holders are found.

use serde::Serialize;

use super::store::{vals, Conn, Row, SResult};
use super::{controller, format_unix_ms, operator, unix_ms, Journal};
use crate::error::{Error, Result};

/// A host held by a run.
#[derive(Debug, Clone, Serialize)]
pub struct HostLock {
    /// The host's identity (`user@address:port`, or `local:NAME`).
    pub host: String,
    pub run_id: String,
    pub operator: String,
    pub controller: String,
    pub pid: u32,
    /// The holder's process start time (clock ticks since boot, Linux), so a pid reused by
    /// another process is not taken for the holder; 0 where it could not be read.
    pub pid_start: u64,
    pub started_unix_ms: u64,
    /// The holder's process is gone from this machine: the run was killed.
    pub stale: bool,
}

/// Why a run could not take its hosts: who holds them.
#[derive(Debug, Clone)]
pub struct LockConflict {
    pub held: Vec<HostLock>,
}

impl std::fmt::Display for LockConflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let first = &self.held[0];
        let hosts: Vec<&str> = self.held.iter().map(|l| l.host.as_str()).collect();
        write!(
            f,
            "refused: {} held by run {} (started {} by {} on {}, pid {})",
            hosts.join(", "),
            first.run_id,
            format_unix_ms(first.started_unix_ms),
            first.operator,
            first.controller,
            first.pid
        )?;
        if self.held.iter().all(|l| l.stale) {
            write!(
                f,
                "; that run's process is gone (killed?): resume it with `capstan resume {}` (it first waits for, or with --on-running kill ends, any command of that run still running on a host), or take its lock over with --take-over-lock",
                first.run_id
            )
        } else {
            write!(f, "; wait for it to finish, or stop it first")
        }
    }
}

/// A process's start time in clock ticks since boot (`/proc/PID/stat`, field 22), where the
/// system has it.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the process that was `pid`, started at `start` (0: unknown), still runs here. A pid
/// now held by a process that started at another time is a reused pid: the holder is gone.
pub fn holder_alive(pid: u32, start: u64) -> bool {
    if !process_alive(pid) {
        return false;
    }
    match (start, process_start_time(pid)) {
        (0, _) | (_, None) => true,
        (want, Some(now)) => want == now,
    }
}

/// Whether process `pid` still exists on this machine: kill(2) with no signal, where "not
/// permitted" (another user's process) still means it exists.
pub fn process_alive(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        Err(e) => e == rustix::io::Errno::PERM,
    }
}

impl Journal {
    /// Takes `hosts` for run `run`. A lock held by another run is refused with its holder; one
    /// whose process is gone from this machine is taken over only when `take_over` is set.
    /// A lock already held by `run` itself (resume after a kill) is simply taken back.
    pub fn acquire_locks(&self, run: &str, hosts: &[String], take_over: bool) -> Result<()> {
        let here = controller();
        let me = std::process::id();
        let me_start = process_start_time(me).unwrap_or(0);
        let conflict = self.with(|c| {
            // Two machines that both find a host free would both take it: one at a time.
            c.serialized("capstan-journal-locks", |c| {
                c.tx(true, |c| {
                    let mut held = Vec::new();
                    for h in hosts {
                        let row = c
                            .one(&format!("{LOCK_COLUMNS} WHERE host = ?"), vals![h])?
                            .map(|r| lock_row(c, &r, &here))
                            .transpose()?;
                        if let Some(l) = row.filter(|l| {
                            l.run_id != run || (!l.stale && l.controller == here && l.pid != me)
                        }) {
                            held.push(l);
                        }
                    }
                    let blocking: Vec<HostLock> = held
                        .iter()
                        .filter(|l| !(take_over && l.stale))
                        .cloned()
                        .collect();
                    if !blocking.is_empty() {
                        return Ok(Some(LockConflict { held: blocking }));
                    }
                    for h in hosts {
                        c.exec(
                        "INSERT INTO locks (host, run_id, operator, controller, pid, started_ms,
                            pid_start)
                         VALUES (?, ?, ?, ?, ?, ?, ?)
                         ON CONFLICT (host) DO UPDATE SET run_id = excluded.run_id,
                            operator = excluded.operator, controller = excluded.controller,
                            pid = excluded.pid, started_ms = excluded.started_ms,
                            pid_start = excluded.pid_start",
                        vals![h, run, operator(), &here, me, unix_ms(), me_start],
                    )?;
                    }
                    Ok(None)
                })
            })
        })?;
        match conflict {
            None => Ok(()),
            Some(c) => Err(Error::Locked(c.to_string())),
        }
    }

    /// Releases every lock of the run.
    pub fn release_locks(&self, run: &str) -> Result<()> {
        self.with(|c| c.exec("DELETE FROM locks WHERE run_id = ?", vals![run]))?;
        Ok(())
    }

    /// Every lock held, by host (for `capstan runs` and tests).
    pub fn locks(&self) -> Result<Vec<HostLock>> {
        let here = controller();
        self.with(|c| {
            let rows = c.query(&format!("{LOCK_COLUMNS} ORDER BY host"), &[])?;
            rows.iter().map(|r| lock_row(c, r, &here)).collect()
        })
    }
}

const LOCK_COLUMNS: &str =
    "SELECT host, run_id, operator, controller, pid, started_ms, pid_start FROM locks";

/// A lock row; stale when its holder is known dead: on a server, no session holds the run's
/// lock (see `Journal::hold_run`); on a file, the pid is gone from this machine (a holder on
/// another machine cannot be checked there, so it is never called stale).
fn lock_row(c: &mut Conn, r: &Row, here: &str) -> SResult<HostLock> {
    let controller = r.text(3);
    let (pid, pid_start) = (r.u32(4), r.u64(6));
    let run_id = r.text(1);
    let stale = match c.session_lock_used(&super::run_lock_name(&run_id))? {
        Some(used) => !used,
        None => controller == here && !holder_alive(pid, pid_start),
    };
    Ok(HostLock {
        host: r.text(0),
        run_id,
        operator: r.text(2),
        stale,
        controller,
        pid,
        pid_start,
        started_unix_ms: r.u64(5),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_run_is_refused_and_a_dead_holder_can_be_taken_over() {
        let j = Journal::in_memory();
        let hosts = vec!["root@127.0.0.1:22".to_string()];
        j.acquire_locks("run-a", &hosts, false).unwrap();
        let e = j
            .acquire_locks("run-b", &hosts, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("held by run run-a"), "{e}");
        // The same run takes its own lock back (resume).
        j.acquire_locks("run-a", &hosts, false).unwrap();
        // A holder whose process is gone is stale: refused without, taken with --take-over-lock.
        j.with(|c| c.exec("UPDATE locks SET pid = 999999999", &[]))
            .unwrap();
        let e = j
            .acquire_locks("run-b", &hosts, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("process is gone"), "{e}");
        j.acquire_locks("run-b", &hosts, true).unwrap();
        assert_eq!(j.locks().unwrap()[0].run_id, "run-b");
        // A pid reused by another process (this one, with another start time) is no holder.
        let me = std::process::id();
        j.with(|c| c.exec("UPDATE locks SET pid = ?, pid_start = 1", vals![me]))
            .unwrap();
        assert!(
            j.locks().unwrap()[0].stale,
            "a reused pid is reported as dead"
        );
        let e = j
            .acquire_locks("run-c", &hosts, false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("process is gone")
                && e.contains("capstan resume run-b")
                && e.contains("--take-over-lock"),
            "{e}"
        );
        // A live holder (pid 1, with its real start time) of run-b: a second process of the same
        // run is refused too, so two resumes of one run never overlap.
        let start = process_start_time(1).unwrap();
        j.with(|c| c.exec("UPDATE locks SET pid = 1, pid_start = ?", vals![start]))
            .unwrap();
        assert!(!j.locks().unwrap()[0].stale);
        let e = j
            .acquire_locks("run-b", &hosts, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("held by run run-b"), "{e}");
        j.release_locks("run-b").unwrap();
        assert!(j.locks().unwrap().is_empty());
    }
}
