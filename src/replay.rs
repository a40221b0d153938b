//! Action-level replay: a resumed step returns what its earlier attempt's finished actions returned.
//!
//! Rhai cannot snapshot a script, so a resume runs the interrupted step again from its start.
//! Every mutating action of a step is journaled before it runs and after it ends (with what it
//! returned). When the step runs again, each action it asks for is compared with the one the
//! earlier attempt asked for at the same place (same step, same host, same position): while they
//! match and the earlier one finished well, the recorded outcome is returned and nothing runs.
//! The first difference, a failed action, or the action that was in flight at the crash runs for
//! real, and so does everything after it on that host in that step.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::action::{Action, Outcome};
use crate::backup::BackupInfo;
use crate::ddb::DdbValue;
use crate::journal::{ReplayRow, ReplayState};
use crate::secret::Redactor;
use crate::sql::{SqlKind, SqlResult};
use crate::transport::wrap::MarkerStatus;
use crate::transport::ExecOutput;

/// Largest command output (both streams) kept for a replay. A bigger one is journaled without
/// its outcome, and the action runs again on resume.
const MAX_RECORDED: usize = 4 << 20;

/// What a mutating action returned, as the replay log keeps it (texts redacted).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Recorded {
    Exec {
        code: Option<i32>,
        signal: Option<String>,
        stdout: String,
        stderr: String,
        truncated: bool,
    },
    Bytes {
        text: String,
    },
    Bool {
        v: bool,
    },
    Int {
        v: i64,
    },
    Text {
        v: String,
    },
    Unit,
    Sql {
        v: SqlResult,
    },
    Ddb {
        v: DdbValue,
    },
    Backup {
        v: BackupInfo,
    },
}

impl Recorded {
    /// The journal's form of `o`, or `None` when it is too large to keep or has no such form.
    pub fn of(o: &Outcome, red: &Redactor) -> Option<Recorded> {
        let text = |b: &[u8]| red.redact(&String::from_utf8_lossy(b));
        Some(match o {
            Outcome::Exec(e) => {
                if e.stdout.len() + e.stderr.len() > MAX_RECORDED {
                    return None;
                }
                Recorded::Exec {
                    code: e.code,
                    signal: e.signal.clone(),
                    stdout: text(&e.stdout),
                    stderr: text(&e.stderr),
                    truncated: e.truncated,
                }
            }
            Outcome::Bytes(b) if b.len() <= MAX_RECORDED => Recorded::Bytes { text: text(b) },
            Outcome::Bytes(_) => return None,
            Outcome::Bool(v) => Recorded::Bool { v: *v },
            Outcome::Int(v) => Recorded::Int { v: *v },
            Outcome::Text(v) => Recorded::Text { v: red.redact(v) },
            Outcome::Unit => Recorded::Unit,
            Outcome::Sql(v) => Recorded::Sql { v: v.clone() },
            Outcome::Ddb(v) => Recorded::Ddb { v: v.clone() },
            Outcome::Backup(v) => Recorded::Backup { v: v.clone() },
            Outcome::Skipped => return None,
        })
    }

    pub fn into_outcome(self) -> Outcome {
        match self {
            Recorded::Exec {
                code,
                signal,
                stdout,
                stderr,
                truncated,
            } => Outcome::Exec(ExecOutput {
                code,
                signal,
                stdout: stdout.into_bytes(),
                stderr: stderr.into_bytes(),
                truncated,
            }),
            Recorded::Bytes { text } => Outcome::Bytes(text.into_bytes()),
            Recorded::Bool { v } => Outcome::Bool(v),
            Recorded::Int { v } => Outcome::Int(v),
            Recorded::Text { v } => Outcome::Text(v),
            Recorded::Unit => Outcome::Unit,
            Recorded::Sql { v } => Outcome::Sql(v),
            Recorded::Ddb { v } => Outcome::Ddb(v),
            Recorded::Backup { v } => Outcome::Backup(v),
        }
    }
}

/// Whether an action takes a place in replay. Reads do too: on resume, a replayed read returns
/// what it returned then, so the script takes the same path to the action that was in flight
/// (a primitive that looks before it changes asks for the same actions). Not replayed: opening
/// SQL and DolphinDB sessions and SQL transaction control (the session and the transaction
/// are the server's, so they always go to it), and waits for a port (cheap to do again).
pub fn takes_part(a: &Action) -> bool {
    !matches!(
        a,
        Action::Sql {
            kind: SqlKind::Connect | SqlKind::Begin | SqlKind::Commit | SqlKind::Rollback,
            ..
        } | Action::Ddb {
            kind: crate::ddb::DdbKind::Connect,
            ..
        } | Action::WaitPort { .. }
    )
}

/// A hash of what the action asks for. The name of the copy a primitive keeps for its undo
/// holds the attempt (`PATH.capstan-undo-RUN-ATTEMPT-N`); it is left out, so the same
/// `write_file` in a resumed attempt is the same action.
pub fn fingerprint(a: &Action, run: &str) -> String {
    use sha2::{Digest, Sha256};
    let json = serde_json::to_string(a).unwrap_or_default();
    let marker = format!("capstan-undo-{run}-");
    let mut out = String::with_capacity(json.len());
    let mut rest = json.as_str();
    while let Some(i) = rest.find(&marker) {
        out.push_str(&rest[..i + marker.len()]);
        rest = &rest[i + marker.len()..];
        // Skip `ATTEMPT-N`.
        let skip = rest
            .char_indices()
            .find(|(_, c)| !(c.is_ascii_digit() || *c == '-'))
            .map_or(rest.len(), |(k, _)| k);
        out.push('*');
        rest = &rest[skip..];
    }
    out.push_str(rest);
    let d = Sha256::digest(out.as_bytes());
    d.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// What to do with an action a step asks for.
#[derive(Debug)]
pub enum Decision {
    /// The earlier attempt finished this very action: return what it returned.
    Replay { outcome: Outcome, attempt: u32 },
    /// The earlier attempt was running this action when it stopped: it runs again, and the
    /// report says it may have run before.
    InFlight(ReplayRow),
    /// Nothing to replay: run it.
    Run,
}

/// The replay log of the earlier attempts, as one run's executor consults it.
#[derive(Debug, Default)]
pub struct ReplayBook {
    /// Per (step, host): the earlier attempt's actions by position, and whether replay ended.
    lanes: HashMap<(String, String), Lane>,
    /// Per (step, host): the next position in this attempt.
    positions: HashMap<(String, String), u32>,
    /// What the scan of the hosts found for markers of earlier attempts, by marker name.
    markers: HashMap<String, MarkerStatus>,
}

#[derive(Debug, Default)]
struct Lane {
    rows: Vec<ReplayRow>,
    ended: bool,
}

impl ReplayBook {
    /// Builds the book from a run's replay log: for each step, host and position, the row of the
    /// latest attempt before `attempt` that reached it (a later attempt replayed the earlier
    /// one's rows, so where its batched tail was lost the earlier rows still hold).
    /// `live(step)` says whether that step may run again (a step recorded as done never does;
    /// guard restores are not replayed).
    pub fn load(rows: Vec<ReplayRow>, attempt: u32, live: impl Fn(&str) -> bool) -> ReplayBook {
        let mut lanes: HashMap<(String, String), Lane> = HashMap::new();
        for r in rows {
            if r.attempt >= attempt || !live(&r.step) {
                continue;
            }
            let lane = lanes.entry((r.step.clone(), r.host.clone())).or_default();
            match lane.rows.iter_mut().find(|x| x.pos == r.pos) {
                Some(x) if x.attempt < r.attempt => *x = r,
                Some(_) => {}
                None => lane.rows.push(r),
            }
        }
        for lane in lanes.values_mut() {
            lane.rows.sort_by_key(|r| r.pos);
        }
        ReplayBook {
            lanes,
            ..Default::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.lanes.is_empty()
    }

    /// The rows of earlier attempts that never ended: the actions in flight at the stop.
    pub fn in_flight(&self) -> Vec<&ReplayRow> {
        self.lanes
            .values()
            .flat_map(|l| l.rows.iter())
            .filter(|r| r.state == ReplayState::Started)
            .collect()
    }

    pub fn set_markers(&mut self, m: HashMap<String, MarkerStatus>) {
        self.markers = m;
    }

    /// What the marker of an earlier attempt's action said, if the scan found it.
    pub fn marker(&self, run: &str, row: &ReplayRow) -> Option<&MarkerStatus> {
        self.markers
            .get(&format!("{run}.{}.{}", row.attempt, row.seq))
    }

    /// Takes the next position of (step, host) and decides about the action asked for there.
    pub fn next(&mut self, step: &str, host: &str, fingerprint: &str) -> (u32, Decision) {
        let key = (step.to_string(), host.to_string());
        let pos = {
            let p = self.positions.entry(key.clone()).or_insert(0);
            *p += 1;
            *p - 1
        };
        let Some(lane) = self.lanes.get_mut(&key) else {
            return (pos, Decision::Run);
        };
        if lane.ended {
            return (pos, Decision::Run);
        }
        let Some(row) = lane.rows.iter().find(|r| r.pos == pos) else {
            lane.ended = true;
            return (pos, Decision::Run);
        };
        if row.fingerprint != fingerprint {
            lane.ended = true;
            return (pos, Decision::Run);
        }
        let decision = match (row.state, &row.outcome) {
            (ReplayState::Done, Some(o)) => match serde_json::from_str::<Recorded>(o) {
                Ok(r) => {
                    return (
                        pos,
                        Decision::Replay {
                            outcome: r.into_outcome(),
                            attempt: row.attempt,
                        },
                    )
                }
                Err(_) => Decision::Run,
            },
            (ReplayState::Started, _) => Decision::InFlight(row.clone()),
            _ => Decision::Run,
        };
        lane.ended = true;
        (pos, decision)
    }
}

/// How an action in flight at the stop is described, from its marker.
pub fn in_flight_note(status: Option<&MarkerStatus>) -> String {
    match status {
        Some(MarkerStatus::Done) => {
            "its command had finished, but the journal did not record how".to_string()
        }
        Some(MarkerStatus::Gone) => {
            "its command was ended with its controller before it finished".to_string()
        }
        Some(MarkerStatus::Killed) => {
            "its command was still running and was killed before this attempt".to_string()
        }
        Some(MarkerStatus::EndedWhileWaiting) => {
            "its command was still running; this attempt waited until it ended".to_string()
        }
        Some(MarkerStatus::Running { pid }) => format!("its command is still running (pid {pid})"),
        None => "no marker tells whether it finished".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(attempt: u32, pos: u32, fp: &str, state: ReplayState) -> ReplayRow {
        ReplayRow {
            attempt,
            step: "s".into(),
            host: "h".into(),
            pos,
            seq: u64::from(pos),
            fingerprint: fp.into(),
            description: format!("action {pos}"),
            state,
            outcome: (state == ReplayState::Done)
                .then(|| serde_json::to_string(&Recorded::Int { v: i64::from(pos) }).unwrap()),
        }
    }

    #[test]
    fn finished_actions_replay_until_the_first_difference() {
        let rows = vec![
            row(1, 0, "a", ReplayState::Done),
            row(1, 1, "b", ReplayState::Done),
            row(1, 2, "c", ReplayState::Started),
        ];
        let mut b = ReplayBook::load(rows.clone(), 2, |_| true);
        assert!(matches!(
            b.next("s", "h", "a").1,
            Decision::Replay { attempt: 1, .. }
        ));
        assert!(matches!(b.next("s", "h", "b").1, Decision::Replay { .. }));
        assert!(matches!(b.next("s", "h", "c").1, Decision::InFlight(_)));
        assert!(matches!(b.next("s", "h", "d").1, Decision::Run));
        // Another host's lane is its own.
        assert!(matches!(b.next("s", "other", "a").1, Decision::Run));

        // A different action at position 1 ends replay there, for good.
        let mut b = ReplayBook::load(rows.clone(), 2, |_| true);
        assert!(matches!(b.next("s", "h", "a").1, Decision::Replay { .. }));
        assert!(matches!(b.next("s", "h", "x").1, Decision::Run));
        assert!(matches!(b.next("s", "h", "c").1, Decision::Run));

        // A step that may not run again (done) has no lane.
        let mut b = ReplayBook::load(rows.clone(), 2, |_| false);
        assert!(matches!(b.next("s", "h", "a").1, Decision::Run));

        // The latest earlier attempt wins, position by position: attempt 2 replayed a, ran b2
        // (which failed), then stopped.
        let mut later = rows;
        later.push(row(2, 0, "a", ReplayState::Done));
        later.push(row(2, 1, "b2", ReplayState::Failed));
        let mut b = ReplayBook::load(later, 3, |_| true);
        assert!(matches!(
            b.next("s", "h", "a").1,
            Decision::Replay { attempt: 2, .. }
        ));
        assert!(
            matches!(b.next("s", "h", "b2").1, Decision::Run),
            "a failed action runs again"
        );
    }

    #[test]
    fn the_attempt_in_an_undo_copys_name_is_not_part_of_the_action() {
        let w = |attempt: u32| Action::Copy {
            from: "/etc/app.conf".into(),
            to: format!("/etc/app.conf.capstan-undo-R1-{attempt}-3"),
        };
        assert_eq!(fingerprint(&w(1), "R1"), fingerprint(&w(2), "R1"));
        let other = Action::Copy {
            from: "/etc/other.conf".into(),
            to: "/etc/app.conf.capstan-undo-R1-1-3".into(),
        };
        assert_ne!(fingerprint(&w(1), "R1"), fingerprint(&other, "R1"));
    }
}
