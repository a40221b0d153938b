//! The toy product of docs/architecture.md ("Adding a product"), run through the embedding API: its library, playbook, scenario and model work together, and the guide quotes them as they are.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use capstan::sim::model::{Component, ProductModel};
use capstan::sim::SimHost;
use capstan::transport::{Command, ExecOutput};
use capstan::{HostBuilder, Mode, Playbook, Scenario};

use crate::support::repo;

const LIBRARY: &str = include_str!("../toy/kv.rhai");
const PLAYBOOK: &str = include_str!("../toy/playbook.rhai");

/// How long a started member catches up before it serves (the model's "recovery takes time").
const CATCH_UP: Duration = Duration::from_secs(6);

/// The kv store's model: a member runs when started, serves once it has caught up, and runs the
/// version its `bin/kvctl` says; a majority of the members must serve.
#[derive(Debug, Clone)]
struct Kv {
    members: Vec<String>,
    /// Per member: when it was started (`None`: stopped). Running from the start.
    started: BTreeMap<String, Option<Duration>>,
}

impl Kv {
    fn new(members: Vec<String>) -> Self {
        let started = members
            .iter()
            .map(|m| (m.clone(), Some(Duration::ZERO)))
            .collect();
        Kv { members, started }
    }

    fn serving(&self, member: &str, now: Duration) -> bool {
        matches!(self.started.get(member), Some(Some(at)) if now >= *at + CATCH_UP || *at == Duration::ZERO)
    }
}

fn out(code: i32, stdout: &str) -> ExecOutput {
    ExecOutput {
        code: Some(code),
        signal: None,
        stdout: stdout.as_bytes().to_vec(),
        stderr: Vec::new(),
        truncated: false,
    }
}

impl ProductModel for Kv {
    fn name(&self) -> &str {
        "kv"
    }

    fn exec(&mut self, host: &str, command: &Command, state: &mut SimHost) -> Option<ExecOutput> {
        let Command::Argv(argv) = command else {
            return None;
        };
        let ctl = argv.first().filter(|c| c.ends_with("/bin/kvctl"))?;
        if !self.members.iter().any(|m| m == host) {
            return None;
        }
        // The binary says its version: "kv 1.1.0".
        let version = state.files.get(ctl.as_str()).map(|b| {
            String::from_utf8_lossy(b)
                .trim()
                .trim_start_matches("kv ")
                .to_string()
        })?;
        let now = state.now;
        Some(match argv.get(1).map(String::as_str) {
            Some("start") => {
                self.started.insert(host.to_string(), Some(now));
                // As the vendors' tools do: "started" as soon as the process is, not when it serves.
                out(0, "kvd started\n")
            }
            Some("stop") => {
                self.started.insert(host.to_string(), None);
                out(0, "kvd stopped\n")
            }
            Some("status") => match self.started.get(host) {
                Some(Some(_)) if self.serving(host, now) => out(0, &format!("serving {version}\n")),
                Some(Some(_)) => out(0, &format!("catching-up {version}\n")),
                _ => out(3, "stopped\n"),
            },
            _ => out(2, "usage: kvctl start|stop|status\n"),
        })
    }

    // A member counts as up while its process runs: the world samples availability after each
    // change, and catching up ends with time, not with an action (the playbook's wait sees it).
    fn components(&self, _: &BTreeMap<String, SimHost>) -> Vec<Component> {
        self.members
            .iter()
            .map(|m| Component {
                name: format!("kv/member@{m}"),
                host: m.clone(),
                up: matches!(self.started.get(m), Some(Some(_))),
            })
            .collect()
    }

    fn violations(&self, components: &[Component], down: &BTreeSet<usize>) -> Vec<String> {
        let serving = components.len() - down.len();
        let majority = components.len() / 2 + 1;
        if serving < majority {
            vec![format!(
                "kv: {serving} of {} members serve; a majority ({majority}) is needed",
                components.len()
            )]
        } else {
            Vec::new()
        }
    }

    fn box_clone(&self) -> Box<dyn ProductModel> {
        Box::new(self.clone())
    }
}

fn scenario(fail: Option<&str>) -> Scenario {
    let mut sc = Scenario::from_file(repo().join("tests/toy/scenario.toml")).unwrap();
    sc.add_model(Box::new(Kv::new(vec![
        "kv1".into(),
        "kv2".into(),
        "kv3".into(),
    ])));
    if let Some(f) = fail {
        sc.add_fault(f).unwrap();
    }
    sc
}

/// Simulates the toy playbook in `sc` with the scenario's params and `extra`, rolling back on
/// failure, as an embedder would: the library added by name, the model to the scenario.
fn simulate_in(sc: Scenario, extra: &[(&str, &str)]) -> capstan::RunReport {
    let mut params = sc.params.clone();
    for (k, v) in extra {
        params.insert(k.to_string(), (*v).into());
    }
    let host = HostBuilder::new()
        .mode(Mode::Simulate)
        .scenario(sc)
        .on_failure(capstan::host::OnFailure::Rollback)
        .stdlib_module("kv", LIBRARY)
        .unwrap()
        .build()
        .unwrap();
    host.run(&Playbook::from_source("kv", PLAYBOOK), &params)
        .unwrap()
}

fn simulate(fail: Option<&str>) -> capstan::RunReport {
    simulate_in(scenario(fail), &[])
}

#[test]
fn the_toy_product_upgrades_member_by_member_and_keeps_a_majority() {
    let r = simulate(None);
    assert_eq!(
        serde_json::to_value(r.status).unwrap(),
        "succeeded",
        "{:?}",
        r.outcome
    );
    let steps: Vec<&str> = r.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        steps,
        [
            "precheck",
            "kv1: upgrade 1.0.0 -> 1.1.0",
            "kv2: upgrade 1.0.0 -> 1.1.0",
            "kv3: upgrade 1.0.0 -> 1.1.0"
        ]
    );
    let sim = r.simulation.as_ref().unwrap();
    // Each member was down in turn, never two at once, and no rule broke.
    let mut states = Vec::new();
    sim.down_states(|_, _, down| {
        states.push(
            down.iter()
                .map(|&c| sim.name_of(c).to_string())
                .collect::<Vec<_>>(),
        )
    });
    for m in ["kv1", "kv2", "kv3"] {
        assert!(
            states.iter().any(|d| *d == [format!("kv/member@{m}")]),
            "{m} was never down alone: {states:?}"
        );
    }
    assert!(states.iter().all(|d| d.len() <= 1));
    assert!(sim.availability.iter().all(|s| s.violations.is_empty()));
    // The wait polled while the member caught up: the model's time passed.
    let polls = r
        .actions
        .iter()
        .filter(|a| a.host == "kv2" && a.description.contains("kvctl status"))
        .count();
    assert!(polls >= 3, "kv2 was asked {polls} times");
}

#[test]
fn a_member_that_fails_to_start_is_rolled_back_and_the_next_is_not_touched() {
    let r = simulate(Some("kv2:*kvctl start#1"));
    assert_eq!(serde_json::to_value(r.status).unwrap(), "rolled_back");
    assert!(r
        .actions
        .iter()
        .filter(|a| a.host == "kv3")
        .all(|a| a.read_only));
    let sim = r.simulation.as_ref().unwrap();
    assert_eq!(
        sim.changed_after_rollback.as_deref(),
        Some(&[][..]),
        "the rollback left changes"
    );
}

#[test]
fn the_precheck_names_every_problem_at_once() {
    // No member has this release: one failure naming all three, and nothing changed.
    let r = simulate_in(scenario(None), &[("release", "/srv/missing")]);
    let err = format!("{:?}", r.outcome);
    assert!(
        err.contains("precheck found 3 problem(s); nothing was changed"),
        "{err}"
    );
    for m in ["kv1", "kv2", "kv3"] {
        assert!(
            err.contains(&format!("{m}: /srv/missing/bin/kvctl is missing")),
            "{err}"
        );
    }
    assert!(r.actions.iter().all(|a| a.read_only));
}

#[test]
fn a_module_name_the_stdlib_has_is_refused() {
    let e = HostBuilder::new()
        .stdlib_module("rolling", LIBRARY)
        .err()
        .unwrap();
    assert!(e.to_string().contains("`rolling` exists already"), "{e}");
}

/// The walkthrough quotes the toy product's files as they are, so it cannot drift from what
/// the tests run.
#[test]
fn the_architecture_guide_quotes_the_toy_product_as_tested() {
    let guide = std::fs::read_to_string(repo().join("docs/architecture.md")).unwrap();
    for (file, text) in [
        ("tests/toy/kv.rhai", LIBRARY),
        ("tests/toy/playbook.rhai", PLAYBOOK),
    ] {
        assert!(
            guide.contains(&format!("```rhai\n{text}```")),
            "docs/architecture.md does not quote {file} as it is"
        );
    }
}
