//! `shared_list(array)`: a list whose copies share one array (a reference count), for the big lists the stdlib passes to every call.
//!
//! Rhai copies a map or array passed to a script function whole, so a cluster description
//! holding every server, passed to the function behind every SQL statement, costs the cluster's
//! size per statement. A `SharedList` is copied by reference count; `push` copies the array only
//! when another copy still shares it (copy on write), so a copy never sees a later change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rhai::{Array, Dynamic, Engine, EvalAltResult, ImmutableString, Position};

use super::def;
use crate::lock;

/// An array shared by its copies, with the indexes `position_of` built on it (shared too: they
/// describe the array, and a `push` gives the copy that changed a new array and no index).
#[derive(Debug, Clone, Default)]
pub struct SharedList(pub Arc<Array>, Arc<Mutex<Indexes>>);

impl SharedList {
    pub fn new(items: Array) -> Self {
        SharedList(Arc::new(items), Arc::default())
    }

    /// The position of the first item that is a map whose `key` is `value`. A lookup by a field
    /// builds that field's index once (the items never change under it), so looking up every
    /// item of a list costs the list's size, not its square.
    pub fn position_of(&self, key: &str, value: &Dynamic) -> Option<usize> {
        let Some(wanted) = Plain::of(value) else {
            return self.scan(key, value);
        };
        let mut ix = lock(&self.1);
        let field = ix
            .entry(key.to_string())
            .or_insert_with(|| build_index(&self.0, key));
        match field {
            Some(positions) => positions.get(&wanted).copied(),
            // An item shared with a variable can change after the index is built.
            None => {
                drop(ix);
                self.scan(key, value)
            }
        }
    }

    fn scan(&self, key: &str, value: &Dynamic) -> Option<usize> {
        self.0.iter().position(|item| {
            item.read_lock::<rhai::Map>()
                .and_then(|m| m.get(key).map(|v| same(v, value)))
                .unwrap_or(false)
        })
    }
}

/// A field's index (value -> first position), or `None` when the list cannot be indexed.
type Indexes = HashMap<String, Option<HashMap<Plain, usize>>>;

/// A value `same` compares by equality, as an index key (floats are left to the scan: NaN).
#[derive(Debug, PartialEq, Eq, Hash)]
enum Plain {
    Str(ImmutableString),
    Int(i64),
    Bool(bool),
    Char(char),
}

impl Plain {
    fn of(v: &Dynamic) -> Option<Plain> {
        if v.is_shared() {
            return None;
        }
        if let Ok(s) = v.as_immutable_string_ref() {
            return Some(Plain::Str(s.clone()));
        }
        v.as_int()
            .map(Plain::Int)
            .or_else(|_| v.as_bool().map(Plain::Bool))
            .or_else(|_| v.as_char().map(Plain::Char))
            .ok()
    }
}

fn build_index(items: &Array, key: &str) -> Option<HashMap<Plain, usize>> {
    let mut positions = HashMap::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        if item.is_shared() {
            return None;
        }
        let Some(m) = item.read_lock::<rhai::Map>() else {
            continue;
        };
        let Some(v) = m.get(key) else { continue };
        if v.is_shared() || v.is_float() {
            return None;
        }
        if let Some(k) = Plain::of(v) {
            positions.entry(k).or_insert(i);
        }
    }
    Some(positions)
}

impl IntoIterator for SharedList {
    type Item = Dynamic;
    type IntoIter = std::vec::IntoIter<Dynamic>;

    fn into_iter(self) -> Self::IntoIter {
        Arc::unwrap_or_clone(self.0).into_iter()
    }
}

pub(super) fn register(engine: &mut Engine) {
    engine.register_type_with_name::<SharedList>("SharedList");
    engine.register_iterator::<SharedList>();
    // Registered with its parameters named, so the editor definitions show `?`, not the Rust
    // result type.
    rhai::FuncRegistration::new("index$get$")
        .with_params_info(["l: SharedList", "i: int", "?"])
        .register_into_engine(
            engine,
            |l: &mut SharedList, i: i64| -> Result<Dynamic, Box<EvalAltResult>> {
                let n = l.0.len();
                // Negative positions count from the end, as for arrays.
                let at = if i < 0 { n as i64 + i } else { i };
                usize::try_from(at)
                    .ok()
                    .and_then(|at| l.0.get(at))
                    .cloned()
                    .ok_or_else(|| EvalAltResult::ErrorArrayBounds(n, i, Position::NONE).into())
            },
        );
    engine.register_fn("to_string", |l: &mut SharedList| format!("{:?}", l.0));
    engine.register_fn("to_debug", |l: &mut SharedList| format!("{:?}", l.0));

    def(
        engine,
        "shared_list",
        &["items: Array", "SharedList"],
        r#"
A list of `items` whose copies share one array: passing it to a function, or `let b = a`, copies
a reference count, not the items. It reads like an array (`l.len()`, `l[i]`, `l[-1]`,
`for x in l`); `l.push(x)` copies the items first when another copy shares them, so no copy
sees the change. The stdlib keeps a cluster's servers in one (`ob::sessions`,
`dolphindb::cluster`), which every statement passes on. A closure's undo that captures one
journals it once per run and gets it back shared; a step's result holding one reads back as a
plain array.

```rhai
let a = shared_list([1, 2]);
let b = a;
b.push(3);
if a.len() != 2 || b.len() != 3 || b[-1] != 3 { fail("shared_list is broken"); }
let sum = 0;
for x in b { sum += x; }
if sum != 6 { fail("shared_list is broken"); }
```"#,
        |items: Array| SharedList::new(items),
    );
    def(
        engine,
        "len",
        &["l: SharedList", "int"],
        r#"
How many items the list holds.

```rhai
if shared_list([1, 2, 3]).len() != 3 { fail("len is broken"); }
```"#,
        |l: &mut SharedList| l.0.len() as i64,
    );
    def(
        engine,
        "is_empty",
        &["l: SharedList", "bool"],
        r#"
Whether the list holds no item.

```rhai
if !shared_list([]).is_empty() { fail("is_empty is broken"); }
```"#,
        |l: &mut SharedList| l.0.is_empty(),
    );
    def(
        engine,
        "push",
        &["l: SharedList", "item: ?", "()"],
        r#"
Adds `item` at the end (copying the items first if another copy shares them).

```rhai
let l = shared_list([]);
l.push("x");
if l[0] != "x" { fail("push is broken"); }
```"#,
        |l: &mut SharedList, item: Dynamic| {
            Arc::make_mut(&mut l.0).push(item);
            l.1 = Arc::default();
        },
    );
    def(
        engine,
        "position_of",
        &["l: SharedList", "key: String", "value: ?", "int"],
        r#"
The position of the first item that is a map whose `key` is `value` (a string, number or
bool), or -1. The search runs in Rust: looking an item up by a field in a script loop copies
each item it passes. The first search by a field indexes the list by it, so later ones take
constant time.

```rhai
let l = shared_list([#{ name: "a" }, #{ name: "b" }, #{ name: "b", n: 2 }]);
if l.position_of("name", "b") != 1 || l.position_of("name", "z") != -1 { fail("position_of is broken"); }
let m = l;
m.push(#{ name: "z" });
if m.position_of("name", "z") != 3 || l.position_of("name", "z") != -1 { fail("position_of is broken"); }
if m.position_of("n", 2) != 2 || m.position_of("n", "2") != -1 { fail("position_of is broken"); }
```"#,
        |l: &mut SharedList, key: &str, value: Dynamic| {
            l.position_of(key, &value).map_or(-1, |i| i as i64)
        },
    );
    def(
        engine,
        "to_array",
        &["l: SharedList", "Array"],
        r#"
The items as a plain array (a copy).

```rhai
if shared_list([1, 2]).to_array() != [1, 2] { fail("to_array is broken"); }
```"#,
        |l: &mut SharedList| (*l.0).clone(),
    );
}

/// Whether two plain values (strings, numbers, bools, chars) are equal; other types never are.
fn same(a: &Dynamic, b: &Dynamic) -> bool {
    if let (Ok(x), Ok(y)) = (a.as_immutable_string_ref(), b.as_immutable_string_ref()) {
        return *x == *y;
    }
    if let (Ok(x), Ok(y)) = (a.as_int(), b.as_int()) {
        return x == y;
    }
    if let (Ok(x), Ok(y)) = (a.as_float(), b.as_float()) {
        return x == y;
    }
    if let (Ok(x), Ok(y)) = (a.as_bool(), b.as_bool()) {
        return x == y;
    }
    matches!((a.as_char(), b.as_char()), (Ok(x), Ok(y)) if x == y)
}
