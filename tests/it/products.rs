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
