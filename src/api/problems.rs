//! `problems(name)`: a precheck's collector, which gathers every problem found and fails once with the whole list.

use rhai::{Array, Dynamic, Engine, EvalAltResult};

use super::{def, fault};
use crate::error::{Fault, FaultKind};

/// The problems a check found so far, and what the check is called in its failure.
#[derive(Debug, Clone, Default)]
pub struct Problems {
    name: String,
    found: Vec<String>,
}

impl Problems {
    /// The failure that names every problem, or `None` when there is none.
    fn failure(&self) -> Option<String> {
        if self.found.is_empty() {
            return None;
        }
        let mut msg = format!(
            "{} found {} problem(s); nothing was changed:",
            self.name,
            self.found.len()
        );
        for p in &self.found {
            msg.push_str("\n  - ");
            msg.push_str(p);
        }
        Some(msg)
    }
}

pub(super) fn register(engine: &mut Engine) {
    engine.register_type_with_name::<Problems>("Problems");
    engine.register_fn("to_string", |p: &mut Problems| format!("{:?}", p.found));
    engine.register_fn("to_debug", |p: &mut Problems| format!("{:?}", p.found));

    def(
        engine,
        "problems",
        &["name: String", "Problems"],
        r#"
A collector for a precheck: each problem found is added (`add`, `check`), and `fail_if_any` stops
the playbook once, naming every one, so that the operator fixes them all before the next try
instead of one per run. Call `fail_if_any` before the first change: its message says nothing was
changed.

```rhai
let found = problems("precheck");
found.check(1 + 1 == 2, "arithmetic is broken");
found.add("web2 runs 1.0.0, not 1.1.0");
found.add("web3 is down");
if found.len() != 2 { fail("problems is broken"); }
let said = "";
try { found.fail_if_any(); } catch (e) { said = `${e}`; }
if !said.contains("precheck found 2 problem(s); nothing was changed:") { fail(said); }
if !said.contains("\n  - web3 is down") { fail(said); }
```"#,
        |name: &str| Problems {
            name: name.to_string(),
            found: Vec::new(),
        },
    );
    def(
        engine,
        "add",
        &["p: Problems", "problem: ?", "()"],
        r#"
Adds a problem (a message, or an error caught with `try`/`catch`: its text).

```rhai
let found = problems("precheck");
try { throw "no quorum"; } catch (e) { found.add(e); }
if found.list() != ["no quorum"] { fail("add is broken"); }
```"#,
        |p: &mut Problems, problem: Dynamic| {
            // A caught action failure is a `Fault`: its message, as `${e}` would print it.
            let text = match problem.read_lock::<Fault>() {
                Some(f) => f.message.clone(),
                None => problem.to_string(),
            };
            p.found.push(text)
        },
    );
    def(
        engine,
        "check",
        &["p: Problems", "ok: bool", "problem: String", "bool"],
        r#"
Adds `problem` unless `ok`; returns `ok`, for checks that depend on this one.

```rhai
let found = problems("precheck");
let controllers = 2;
if found.check(controllers >= 3, `${controllers} controller(s): Raft needs at least 3`) {
    fail("check is broken");
}
if found.len() != 1 { fail("check is broken"); }
```"#,
        |p: &mut Problems, ok: bool, problem: &str| {
            if !ok {
                p.found.push(problem.to_string());
            }
            ok
        },
    );
    def(
        engine,
        "len",
        &["p: Problems", "int"],
        r#"
How many problems were found.

```rhai
if problems("precheck").len() != 0 { fail("len is broken"); }
```"#,
        |p: &mut Problems| p.found.len() as i64,
    );
    def(
        engine,
        "list",
        &["p: Problems", "Array"],
        r#"
The problems found, in the order they were added.

```rhai
let found = problems("precheck");
found.add("a");
if found.list() != ["a"] { fail("list is broken"); }
```"#,
        |p: &mut Problems| -> Array { p.found.iter().cloned().map(Dynamic::from).collect() },
    );
    def(
        engine,
        "fail_if_any",
        &["p: Problems", "()"],
        r#"
Stops the playbook when a problem was found, with one message naming all of them, one per line:
`precheck found 2 problem(s); nothing was changed:` and then `  - ` before each. Does nothing
when none was.

```rhai
let found = problems("precheck");
found.check(true, "never added");
found.fail_if_any();
```"#,
        |p: &mut Problems| -> Result<(), Box<EvalAltResult>> {
            match p.failure() {
                Some(msg) => Err(fault(FaultKind::Script, None, msg)),
                None => Ok(()),
            }
        },
    );
}
