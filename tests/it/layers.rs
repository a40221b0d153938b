//! The layer table of docs/architecture.md, checked on the code: a module may use the modules
//! of its own layer and of the layers below it; an import of a layer above is an error unless it
//! is one of the known ones, which issue 28 removes (the list may only shrink).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::support::repo;

/// The layers, lowest first, as docs/architecture.md draws them (`main` and `cli` are the binary).
const LAYERS: &[(&str, &[&str])] = &[
    (
        "leaves",
        &[
            "journal",
            "inventory",
            "secret",
            "report",
            "error",
            "version",
            "hostlock",
            "root",
        ],
    ),
    (
        "transport",
        &["transport", "sql", "ddb", "backup", "docker"],
    ),
    ("action", &["action", "replay"]),
    ("sim", &["sim"]),
    ("api", &["api"]),
    ("engine", &["engine"]),
    ("host", &["host"]),
    ("cli", &["cli", "main"]),
];

/// Upward imports tolerated, `module -> module it uses`: none since issue 28 took the last out.
/// An entry that no longer occurs must be deleted here, so that it cannot come back unnoticed.
const KNOWN_UPWARD: &[&str] = &[];

/// Items of `lib.rs` by the module that defines them (`crate::Host` is the host layer's).
fn reexport(item: &str) -> &str {
    match item {
        "Error" | "FaultKind" | "Located" | "Result" | "SourcePos" => "error",
        "Host" | "HostBuilder" | "Params" | "Playbook" | "PlaybookInfo" => "host",
        "Inventory" => "inventory",
        "Journal" => "journal",
        "RunReport" => "report",
        "Scenario" => "sim",
        _ => "root",
    }
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, ms)| ms.contains(&module))
}

/// The modules a file's code names as `crate::NAME`, including `use crate::{a, b::c}`; comments
/// are left out.
fn crate_refs(text: &str) -> BTreeSet<String> {
    let code: String = text
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue; // `capstan_crate::`, or a macro's `$crate::`
        }
        if let Some(group) = rest.strip_prefix('{') {
            // The names at the top level of the braces.
            let (mut depth, mut name, mut names) = (0, String::new(), Vec::new());
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => names.push(std::mem::take(&mut name)),
                    _ => name.push(c),
                }
            }
            names.push(name);
            for n in names {
                let head: String = n
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !head.is_empty() && head != "self" {
                    out.insert(head);
                }
            }
        } else {
            let head: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.insert(head);
        }
    }
    out.into_iter()
        .map(|h| {
            let src = repo().join("src");
            if h.chars().next().is_some_and(char::is_uppercase) {
                reexport(&h).to_string()
            } else if !src.join(format!("{h}.rs")).exists() && !src.join(&h).is_dir() {
                // A function of lib.rs itself (`crate::lock`): the root, a leaf.
                "root".to_string()
            } else {
                h
            }
        })
        .collect()
}

/// Every `module -> module` edge that goes up a layer, with a file that has it.
fn upward_edges() -> BTreeMap<String, String> {
    let src = repo().join("src");
    let mut files = Vec::new();
    fn walk(d: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    walk(&src, &mut files);
    let mut edges = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" {
            continue;
        }
        let from = layer_of(&module)
            .unwrap_or_else(|| panic!("src/{module} is in no layer of the table here"));
        let text = std::fs::read_to_string(&f).unwrap();
        // Tests inside a module may reach up (they build whole runs); the code may not.
        let text = text.split("#[cfg(test)]").next().unwrap_or("");
        for target in crate_refs(text) {
            let Some(to) = layer_of(&target) else {
                panic!(
                    "{}: crate::{target} is in no layer of the table here",
                    rel.display()
                );
            };
            if to > from && target != module {
                edges
                    .entry(format!("{module} -> {target}"))
                    .or_insert_with(|| rel.display().to_string());
            }
        }
    }
    edges
}

#[test]
fn no_module_imports_a_layer_above_it_beyond_the_known_ones() {
    let edges = upward_edges();
    let new: Vec<String> = edges
        .iter()
        .filter(|(e, _)| !KNOWN_UPWARD.contains(&e.as_str()))
        .map(|(e, f)| format!("{e} (src/{f})"))
        .collect();
    assert!(
        new.is_empty(),
        "imports of a layer above (docs/architecture.md): {new:#?}"
    );
    let gone: Vec<&&str> = KNOWN_UPWARD
        .iter()
        .filter(|k| !edges.contains_key(**k))
        .collect();
    assert!(
        gone.is_empty(),
        "these upward imports are gone: delete them from KNOWN_UPWARD: {gone:?}"
    );
}

#[test]
fn the_check_sees_an_upward_import_in_every_form() {
    let refs = crate_refs(
        "use crate::action::{Action, Fault};\nuse crate::{host::Host, report};\n// crate::engine\nlet x = crate::Host::new();\n$crate::sim::x();",
    );
    assert_eq!(
        refs.into_iter().collect::<Vec<_>>(),
        ["action", "host", "report"]
    );
}
