//! Faults a scenario (or `simulate --fail`) injects: failing actions, unreachable hosts, services that stay down.

use serde::Deserialize;

use crate::action::{Action, Outcome};
use crate::error::Fault;
use crate::error::FaultKind;
use crate::inventory::Inventory;
use crate::transport::ExecOutput;

/// What a fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultType {
    /// The matching action fails (a command exits with `code`, anything else errors).
    Fail,
    /// The matching read answers with `stdout` and `code` (a health check that says unhealthy).
    Unhealthy,
    /// Every action on the host fails as unreachable, from step `from_step` on.
    Unreachable,
    /// The host's `port` never opens again once closed: a service that does not come back.
    StaysDown,
}

/// `[[faults]]` in a scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FaultSpec {
    #[serde(default = "fail")]
    kind: FaultType,
    /// Host name pattern; every host when absent (required for `unreachable` and `stays_down`).
    host: Option<String>,
    /// Action pattern, matched against the action as plans show it (`*app-ctl start*`) or its
    /// operation (`docker_run`, `sql_exec`).
    action: Option<String>,
    /// The nth matching action (from 1) fails; default the first.
    nth: Option<u32>,
    /// Every matching action fails.
    #[serde(default)]
    always: bool,
    /// `unreachable`: from this step on (its number from 1, or a step name pattern).
    from_step: Option<StepRef>,
    /// `stays_down`: the port.
    port: Option<u16>,
    /// What a failing command exits with (default 1) or an unhealthy check exits with (default 0).
    code: Option<i32>,
    #[serde(default)]
    stdout: String,
    /// The failure's message (stderr of a command).
    message: Option<String>,
}

fn fail() -> FaultType {
    FaultType::Fail
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum StepRef {
    Number(u32),
    Name(String),
}

/// A fault ready to fire: its patterns compiled, its count of matches kept.
#[derive(Debug, Clone)]
pub(crate) struct ActiveFault {
    spec: FaultSpec,
    host: Option<glob::Pattern>,
    action: Option<glob::Pattern>,
    step: Option<glob::Pattern>,
    seen: u32,
    /// Set once `unreachable` took effect (it stays in effect).
    tripped: bool,
    /// Set once the fault took an action.
    fired: bool,
}

fn pattern(p: &str, what: &str) -> Result<glob::Pattern, String> {
    glob::Pattern::new(p).map_err(|e| format!("bad {what} pattern `{p}`: {e}"))
}

impl ActiveFault {
    pub(crate) fn new(spec: FaultSpec, inv: &Inventory) -> Result<ActiveFault, String> {
        let host = match &spec.host {
            Some(h) => {
                let p = pattern(h, "host")?;
                if !inv.hosts.iter().any(|x| p.matches(&x.name)) {
                    return Err(format!(
                        "host pattern `{h}` matches no host in the inventory (hosts: {})",
                        inv.host_names().join(", ")
                    ));
                }
                Some(p)
            }
            None => None,
        };
        let action = spec
            .action
            .as_deref()
            .map(|a| pattern(a, "action"))
            .transpose()?;
        match spec.kind {
            FaultType::Fail | FaultType::Unhealthy if action.is_none() => {
                return Err(format!(
                    "a `{}` fault needs `action` (a pattern such as \"*app-ctl start*\")",
                    kind_name(spec.kind)
                ))
            }
            FaultType::Unreachable | FaultType::StaysDown if host.is_none() => {
                return Err(format!("a `{}` fault needs `host`", kind_name(spec.kind)))
            }
            FaultType::StaysDown if spec.port.is_none() => {
                return Err("a `stays_down` fault needs `port`".into())
            }
            _ => {}
        }
        if spec.nth == Some(0) {
            return Err("`nth` counts from 1".into());
        }
        let step = match &spec.from_step {
            Some(StepRef::Name(n)) => Some(pattern(n, "step")?),
            _ => None,
        };
        Ok(ActiveFault {
            spec,
            host,
            action,
            step,
            seen: 0,
            tripped: false,
            fired: false,
        })
    }

    /// `--fail [HOST:]PATTERN[#N]`: the Nth (default first) action matching PATTERN on HOST
    /// fails. A pattern without wildcards matches anywhere in the action.
    pub(crate) fn from_cli(text: &str, inv: &Inventory) -> Result<ActiveFault, String> {
        let (body, nth) = match text.rsplit_once('#') {
            Some((b, n)) if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) => {
                let n = n
                    .parse::<u32>()
                    .map_err(|_| format!("`#{n}`: the match number is too large"))?;
                if n == 0 {
                    return Err("`#0`: matches are counted from 1 (`#1` is the first)".into());
                }
                (b, Some(n))
            }
            Some((_, n))
                if n.len() > 1
                    && n.starts_with(['-', '+'])
                    && n[1..].chars().all(|c| c.is_ascii_digit()) =>
            {
                return Err(format!(
                    "`#{n}`: the match number must be a positive number"
                ));
            }
            _ => (text, None),
        };
        let (host, action) = match body.split_once(':') {
            Some((h, a))
                if !h.is_empty()
                    && inv
                        .hosts
                        .iter()
                        .any(|x| glob::Pattern::new(h).is_ok_and(|p| p.matches(&x.name))) =>
            {
                (Some(h.to_string()), a)
            }
            Some((h, _)) if !h.contains(' ') && !h.contains('/') => {
                return Err(format!(
                    "`{h}` matches no host in the inventory (hosts: {})",
                    inv.host_names().join(", ")
                ))
            }
            _ => (None, body),
        };
        if action.trim().is_empty() {
            return Err("the action pattern is empty".into());
        }
        let action = if action.contains(['*', '?', '[']) {
            action.to_string()
        } else {
            format!("*{action}*")
        };
        ActiveFault::new(
            FaultSpec {
                kind: FaultType::Fail,
                host,
                action: Some(action),
                nth,
                always: false,
                from_step: None,
                port: None,
                code: None,
                stdout: String::new(),
                message: None,
            },
            inv,
        )
    }

    /// For an `unreachable` fault in effect from the start (no `from_step`): the message a
    /// connection to `host` gets, as `fire` would give it. Marks the fault as fired.
    pub(crate) fn unreachable_from_start(&mut self, host: &str) -> Option<String> {
        if self.spec.kind != FaultType::Unreachable
            || self.spec.from_step.is_some()
            || !self.host_matches(host)
        {
            return None;
        }
        self.tripped = true;
        self.fired = true;
        let msg = self.spec.message.clone().unwrap_or_else(|| {
            "cannot connect: Connection refused (simulated: the host is unreachable)".into()
        });
        Some(format!("{host}: {msg}"))
    }

    /// Whether the fault did what it is there for. `stays_down` is a state, not an event: it
    /// counts as in effect.
    pub(crate) fn took_effect(&self) -> bool {
        self.fired || self.spec.kind == FaultType::StaysDown
    }

    fn host_matches(&self, host: &str) -> bool {
        self.host.as_ref().is_none_or(|p| p.matches(host))
    }

    /// `stays_down`: the port this fault keeps closed on `host`.
    pub(crate) fn held_port(&self, host: &str) -> Option<u16> {
        (self.spec.kind == FaultType::StaysDown && self.host_matches(host))
            .then_some(self.spec.port)
            .flatten()
    }

    /// Whether this fault takes `action` on `host` in step number `step_no` (from 1) named
    /// `step`; if so, what the action answers instead.
    pub(crate) fn fire(
        &mut self,
        host: &str,
        action: &Action,
        step_no: usize,
        step: Option<&str>,
    ) -> Option<(Result<Outcome, Fault>, String)> {
        if !self.host_matches(host) {
            return None;
        }
        match self.spec.kind {
            FaultType::StaysDown => None,
            FaultType::Unreachable => {
                if !self.tripped {
                    let reached = match &self.spec.from_step {
                        None => true,
                        Some(StepRef::Number(n)) => step_no >= *n as usize,
                        Some(StepRef::Name(_)) => step
                            .zip(self.step.as_ref())
                            .is_some_and(|(s, p)| p.matches(s)),
                    };
                    if !reached {
                        return None;
                    }
                    self.tripped = true;
                    self.fired = true;
                }
                let msg = self.spec.message.clone().unwrap_or_else(|| {
                    "cannot connect: Connection refused (simulated: the host is unreachable)".into()
                });
                Some((
                    Err(Fault::new(
                        FaultKind::Unreachable,
                        Some(host),
                        format!("{host}: {msg}"),
                    )),
                    format!("{host} unreachable"),
                ))
            }
            FaultType::Fail | FaultType::Unhealthy => {
                let shown = action.describe();
                let matches = self
                    .action
                    .as_ref()
                    .is_some_and(|p| p.matches(&shown) || p.matches(action.op()));
                if !matches {
                    return None;
                }
                self.seen += 1;
                let nth = self.spec.nth.unwrap_or(1);
                if !(self.spec.always || self.seen == nth) {
                    return None;
                }
                self.fired = true;
                Some((self.answer(host, action), self.describe()))
            }
        }
    }

    fn answer(&self, host: &str, action: &Action) -> Result<Outcome, Fault> {
        let message = self
            .spec
            .message
            .clone()
            .unwrap_or_else(|| "simulated failure".into());
        let unhealthy = self.spec.kind == FaultType::Unhealthy;
        match action {
            Action::Exec { .. } | Action::Docker { .. } => {
                let code = self.spec.code.unwrap_or(if unhealthy { 0 } else { 1 });
                let out = ExecOutput {
                    code: Some(code),
                    signal: None,
                    stdout: self.spec.stdout.clone().into_bytes(),
                    stderr: if unhealthy {
                        Vec::new()
                    } else {
                        format!("{message}\n").into_bytes()
                    },
                    truncated: false,
                };
                match action {
                    // A docker call that fails is judged as the real CLI's answer would be.
                    Action::Docker { call, .. } => crate::docker::judge(host, call, out)
                        .map(|o| o.map_or(Outcome::Unit, Outcome::Exec)),
                    _ => Ok(Outcome::Exec(out)),
                }
            }
            Action::Sql { statement, .. } => {
                let mut f = Fault::new(
                    FaultKind::Action,
                    Some(host),
                    format!(
                        "{host}: sql: server error {}: {message}\n  statement: {}",
                        self.spec.code.unwrap_or(1105),
                        crate::sql::first_line(statement)
                    ),
                )
                .with_reason("server");
                f.code = Some(i64::from(self.spec.code.unwrap_or(1105)));
                Err(f)
            }
            other => Err(Fault::new(
                FaultKind::Action,
                Some(host),
                format!("{host}: {} failed: {message}", other.describe()),
            )),
        }
    }

    pub(crate) fn describe(&self) -> String {
        let what = match self.spec.kind {
            FaultType::Fail => "fail",
            FaultType::Unhealthy => "answer unhealthy",
            _ => kind_name(self.spec.kind),
        };
        let which = if self.spec.always {
            "every".to_string()
        } else {
            match self.spec.nth.unwrap_or(1) {
                1 => "the first".to_string(),
                n => format!("match #{n} of"),
            }
        };
        format!(
            "{what}: {which} `{}` on {}",
            self.spec.action.as_deref().unwrap_or("*"),
            self.spec.host.as_deref().unwrap_or("any host")
        )
    }
}

fn kind_name(k: FaultType) -> &'static str {
    match k {
        FaultType::Fail => "fail",
        FaultType::Unhealthy => "unhealthy",
        FaultType::Unreachable => "unreachable",
        FaultType::StaysDown => "stays_down",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv() -> Inventory {
        Inventory::from_str_at(
            "[hosts.tablet1]\ntransport = \"local\"\n[hosts.tablet2]\ntransport = \"local\"\n",
            "i.toml",
            std::path::Path::new("."),
        )
        .unwrap()
    }

    fn exec(cmd: &str) -> Action {
        Action::Exec {
            command: crate::transport::Command::Shell(cmd.into()),
            read_only: false,
            env: Default::default(),
            cwd: None,
            stdin: None,
            timeout: None,
            secret_files: Default::default(),
        }
    }

    #[test]
    fn cli_faults_name_a_host_and_a_pattern() {
        let mut f = ActiveFault::from_cli("tablet2:start", &inv()).unwrap();
        assert!(f.fire("tablet1", &exec("ctl start"), 1, None).is_none());
        let (r, _) = f.fire("tablet2", &exec("ctl start"), 1, None).unwrap();
        assert!(matches!(r, Ok(Outcome::Exec(o)) if o.code == Some(1)));
        assert!(
            f.fire("tablet2", &exec("ctl start"), 1, None).is_none(),
            "only the first"
        );
        let mut f = ActiveFault::from_cli("start#2", &inv()).unwrap();
        assert!(f.fire("tablet1", &exec("ctl start"), 1, None).is_none());
        assert!(f.fire("tablet2", &exec("ctl start"), 1, None).is_some());
        let e = ActiveFault::from_cli("tablet9:start", &inv()).unwrap_err();
        assert!(e.contains("matches no host"), "{e}");
    }

    #[test]
    fn unreachable_from_a_step_stays_unreachable() {
        let spec: FaultSpec =
            toml::from_str("kind = \"unreachable\"\nhost = \"tablet2\"\nfrom_step = 2\n").unwrap();
        let mut f = ActiveFault::new(spec, &inv()).unwrap();
        assert!(f.fire("tablet2", &exec("x"), 1, Some("a")).is_none());
        assert!(f.fire("tablet2", &exec("x"), 2, Some("b")).is_some());
        assert!(f.fire("tablet2", &exec("x"), 1, Some("undo")).is_some());
        let bad: FaultSpec = toml::from_str("kind = \"stays_down\"\nhost = \"tablet2\"\n").unwrap();
        assert!(ActiveFault::new(bad, &inv()).unwrap_err().contains("port"));
    }
}
