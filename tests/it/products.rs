//! Registry-driven checks: every product of `sim::products` has its files, and they work together.

use capstan::engine::stdlib_modules;
use capstan::host::shipped_playbooks;
use capstan::sim::products::PRODUCTS;

use crate::support::*;

/// Each product's playbook is shipped and its stdlib module resolvable by its name, its
/// scenario names its model, and the generic lists only add to the registry.
#[test]
fn every_product_is_shipped_with_its_module_and_model() {
    assert!(PRODUCTS.len() >= 4);
    for p in PRODUCTS {
        let shipped = shipped_playbooks().iter().find(|(n, _)| *n == p.name);
        assert_eq!(
            shipped.map(|s| s.1),
            Some(p.playbook),
            "{}: playbook",
            p.name
        );
        let module = stdlib_modules().iter().find(|m| m.name == p.name);
        assert_eq!(
            module.map(|m| m.source),
            Some(p.stdlib),
            "{}: module",
            p.name
        );
        assert!(
            p.playbook.contains(&format!("import \"{}\"", p.name)),
            "{}: the playbook does not import its module",
            p.name
        );
    }
    use std::collections::BTreeSet;
    let shipped: BTreeSet<&str> = shipped_playbooks().iter().map(|(n, _)| *n).collect();
    let products: BTreeSet<&str> = PRODUCTS.iter().map(|p| p.name).collect();
    assert_eq!(
        shipped.difference(&products).copied().collect::<Vec<_>>(),
        ["preflight"],
        "a shipped playbook that is no product's"
    );
}

/// Every example scenario of every product simulates its playbook to success, with each of
/// the product's example scenarios naming the product's model.
#[test]
fn every_example_of_every_product_simulates_to_success() {
    for p in PRODUCTS {
        assert!(!p.examples.is_empty(), "{} has no example", p.name);
        for ex in p.examples {
            let text = std::fs::read_to_string(repo().join(ex)).unwrap();
            assert!(
                text.contains(&format!("model = \"{}\"", p.name)),
                "{ex} does not name the {} model",
                p.name
            );
            // As a user rehearses it: the shipped playbook by name, the scenario's params.
            let out = capstan(&["simulate", p.name, "--scenario", ex, "--json"]);
            assert_eq!(out.code, 0, "{ex}: {}", out.stderr);
            let report = last_report(&out.stdout);
            assert_eq!(report["status"], "succeeded", "{ex}: {}", report["outcome"]);
        }
    }
}

/// Every product has its guide, linked from the README, and a lab double with its README.
#[test]
fn every_product_has_a_guide_linked_from_the_readme_and_a_lab() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    for p in PRODUCTS {
        let guide = std::fs::read_to_string(repo().join(p.guide))
            .unwrap_or_else(|e| panic!("{}: {e}", p.guide));
        assert!(guide.starts_with("# "), "{} has no title", p.guide);
        assert!(
            readme.contains(&format!("]({})", p.guide)),
            "README.md does not link {}",
            p.guide
        );
        assert!(
            repo().join(p.lab).join("README.md").exists(),
            "{}: no lab README",
            p.lab
        );
    }
}

/// Each product's parity case: its shipped playbook run on its lab double over SSH and
/// simulated from the same starting state, the traces compared (`parity.rs`). Each is a test of
/// its own in the product's file; this list ties them to the registry.
macro_rules! case {
    ($product:literal, $module:ident :: $test:ident) => {
        ($product, stringify!($test), crate::$module::$test as fn())
    };
}

pub const PARITY: &[(&str, &str, fn())] = &[
    case!("dolphindb", dolphindb::dolphindb_upgrades_on_the_lab_with_writes_throughout_and_the_simulation_acts_alike),
    case!("oceanbase", oceanbase::oceanbase_upgrades_on_the_lab_with_the_release_scripts_and_the_simulation_acts_alike),
    case!("oms", oms::oms_upgrades_two_nodes_on_the_lab_and_the_simulation_acts_alike),
    case!("openmldb", openmldb::openmldb_upgrades_on_the_lab_and_the_simulation_acts_alike),
];

/// Every product of the registry has a parity case, and every case is a product's: a new
/// product without one fails here. Each case is a `#[test]` in its product's file, so it runs.
#[test]
fn every_product_has_a_parity_case_on_its_lab() {
    use std::collections::BTreeSet;
    let products: BTreeSet<&str> = PRODUCTS.iter().map(|p| p.name).collect();
    let cases: BTreeSet<&str> = PARITY.iter().map(|(n, _, _)| *n).collect();
    assert_eq!(
        products.difference(&cases).copied().collect::<Vec<_>>(),
        Vec::<&str>::new(),
        "products without a parity case in PARITY"
    );
    assert_eq!(
        cases.difference(&products).copied().collect::<Vec<_>>(),
        Vec::<&str>::new(),
        "parity cases of no product"
    );
    for (name, test, _) in PARITY {
        let text = std::fs::read_to_string(repo().join(format!("tests/it/{name}.rs"))).unwrap();
        assert!(
            text.contains(&format!("#[test]\npub(crate) fn {test}()")),
            "tests/it/{name}.rs: {test} is not a test"
        );
    }
}
