//! Every ```rhai example in the generated reference runs, in simulation, against docs/examples-world.toml.

use capstan::{HostBuilder, Params, Playbook, Scenario};

use crate::support::*;

#[test]
fn every_reference_example_runs() {
    let engine = HostBuilder::new().build().unwrap().reference_engine();
    let examples = capstan::host::doc_examples(&engine);
    assert!(
        examples.len() >= 40,
        "only {} examples found",
        examples.len()
    );
    let world = Scenario::from_file(repo().join("docs/examples-world.toml")).unwrap();
    let mut failures = Vec::new();
    for ex in &examples {
        let host = HostBuilder::new().scenario(world.clone()).build().unwrap();
        // An example of a required param needs a value, as the operator would give with -p.
        let mut params = Params::new();
        if ex.code.contains("param::required(") {
            params.insert("release".into(), "/srv/app/releases/1.1.0".into());
        }
        let report = host
            .run(
                &Playbook::from_source(&format!("example of {}", ex.function), &ex.code),
                &params,
            )
            .unwrap();
        if let capstan::report::Outcome::Failed { error, .. } = &report.outcome {
            failures.push(format!("{}:\n{}\n{}", ex.function, ex.code, error.render()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} example(s) failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn every_script_function_is_documented_with_an_example() {
    let engine = HostBuilder::new().build().unwrap().reference_engine();
    let md = capstan::host::reference_markdown(&engine);
    for section in md.split("\n### ").skip(1) {
        let title = section.lines().next().unwrap();
        assert!(section.contains("```rhai"), "{title} has no example");
    }
}

#[test]
fn shipped_playbooks_and_examples_compile_and_lint_clean() {
    let host = HostBuilder::new().build().unwrap();
    for (name, _) in capstan::host::shipped_playbooks() {
        let pb = Playbook::shipped(name).unwrap();
        let diags = host.check(&pb).unwrap();
        assert!(diags.is_empty(), "{name}: {diags:?}");
        let info = host.describe(&pb).unwrap();
        for key in ["Purpose:", "Params:", "Privilege:", "Follows:"] {
            assert!(info.header.contains(key), "{name}'s header lacks {key}");
        }
        assert!(
            info.params.iter().all(|p| !p.doc.is_empty()),
            "{name} has an undocumented param"
        );
    }
    let pb = Playbook::from_file(repo().join("examples/hello/playbook.rhai")).unwrap();
    assert!(host.check(&pb).unwrap().is_empty());
}

#[test]
fn shipped_preflight_runs_in_simulation_and_on_this_machine() {
    let world = Scenario::from_file(repo().join("docs/examples-world.toml")).unwrap();
    let pb = Playbook::shipped("preflight").unwrap();
    let report = HostBuilder::new()
        .scenario(world)
        .build()
        .unwrap()
        .run(&pb, &Params::new())
        .unwrap();
    ok(&report);
    assert_eq!(report.steps.len(), 3);
    let report = HostBuilder::new()
        .build()
        .unwrap()
        .run(&pb, &Params::new())
        .unwrap();
    ok(&report);
    let low = [("min_free_mb", serde_json::json!("999999999"))]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let report = HostBuilder::new().build().unwrap().run(&pb, &low).unwrap();
    let (_, e) = failure(&report);
    assert!(
        e.message.starts_with("localhost: ") && e.message.contains("MiB free at /, need 999999999"),
        "{}",
        e.message
    );
}

#[test]
fn committed_reference_is_up_to_date() {
    let engine = HostBuilder::new().build().unwrap().reference_engine();
    let fresh = capstan::host::reference_markdown(&engine);
    let committed = std::fs::read_to_string(repo().join("docs/reference.md")).unwrap();
    assert!(
        fresh == committed,
        "docs/reference.md is stale: run `capstan docs --out docs/reference.md`"
    );
}
