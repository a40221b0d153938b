//! Script values to and from the journal's JSON: hosts and secrets by reference, never by value.

use crate::lock;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rhai::{Array, Dynamic, FnPtr, Map, NativeCallContext};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::shared::SharedList;

use super::sql::SqlConn;
use super::{HostHandle, RunCtx};
use crate::journal::ClosureSpec;

/// A value made fit for the journal. `lossy` says why it could not be kept exactly (a secret
/// inside a longer text, a value with no JSON form); such a value reads back different.
pub(crate) struct Persisted {
    pub value: Value,
    pub lossy: Option<String>,
}

/// Converts a script value for the journal: hosts become `{"$host": name}`, a `[secrets]` value
/// becomes `{"$secret": name}`, other text is redacted.
pub(crate) fn to_json(v: &Dynamic, run: &RunCtx) -> Persisted {
    let mut lossy = None;
    let value = convert(v, run, &mut lossy, &mut None);
    Persisted { value, lossy }
}

/// The shared lists (`shared_list`) that closures of one run captured. A cluster's machine list
/// is captured by an undo or two per machine: journaled whole each time, n machines make n² of
/// journal, and converting it each time n² of work. So a list is converted once (found again by
/// the identity of its array, which the cache keeps alive so the address is not reused), stored
/// once per run by the hash of its JSON, and an undo holds `{"$list": hash}`.
#[derive(Default)]
pub(crate) struct ListCache {
    /// Array address → what it was converted to.
    by_array: HashMap<usize, Known>,
    /// Hashes this process knows are in the journal.
    stored: HashSet<String>,
    /// Lists read back from the journal, by hash, so the undos that shared one share it again.
    read: HashMap<String, SharedList>,
}

/// A shared list converted for the journal.
struct Known {
    /// Kept alive so that its address, the key, is not reused by another array.
    _array: Arc<Array>,
    hash: String,
    json: Arc<str>,
    /// Why it reads back different, when it does (a secret inside a longer text).
    lossy: Option<String>,
}

impl ListCache {
    /// Records that the journal now holds these lists (after the write that carried them).
    pub(crate) fn stored(&mut self, lists: &[(String, String)]) {
        self.stored.extend(lists.iter().map(|(h, _)| h.clone()));
    }
}

/// A shared list as a closure's captured value: `{"$list": hash}`, with its JSON added to `new`
/// when the journal may not have it yet.
fn list_ref(
    l: &SharedList,
    run: &RunCtx,
    lossy: &mut Option<String>,
    new: &mut Vec<(String, String)>,
) -> Value {
    let key = Arc::as_ptr(&l.0) as usize;
    let known = lock(&run.lists)
        .by_array
        .get(&key)
        .map(|k| (k.hash.clone(), k.json.clone(), k.lossy.clone()));
    let (hash, text, why) = known.unwrap_or_else(|| {
        // Converted outside the lock; lists inside the list are kept inline.
        let mut why = None;
        let v = Value::Array(
            l.0.iter()
                .map(|x| convert(x, run, &mut why, &mut None))
                .collect(),
        );
        let text: Arc<str> = v.to_string().into();
        let hash = hex(&Sha256::digest(text.as_bytes()));
        let known = Known {
            _array: l.0.clone(),
            hash: hash.clone(),
            json: text.clone(),
            lossy: why.clone(),
        };
        lock(&run.lists).by_array.insert(key, known);
        (hash, text, why)
    });
    if let Some(why) = why {
        lossy.get_or_insert(why);
    }
    if !lock(&run.lists).stored.contains(&hash) && !new.iter().any(|(h, _)| *h == hash) {
        new.push((hash.clone(), text.to_string()));
    }
    json!({ "$list": hash })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads back a list a closure captured (`{"$list": hash}`) from the run's journal.
fn list_from_journal(hash: &str, run: &Arc<RunCtx>) -> Result<Dynamic, String> {
    if let Some(l) = lock(&run.lists).read.get(hash) {
        return Ok(Dynamic::from(l.clone()));
    }
    let j = run
        .exec
        .journal()
        .ok_or("it captured a list, and this run has no journal to read it from")?;
    let text = j
        .journal
        .captured_list(&j.run_id, hash)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("a list it captured ({hash}) is not in the journal"))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| format!("a list it captured ({hash}) cannot be read: {e}"))?;
    let Value::Array(items) = v else {
        return Err(format!("a list it captured ({hash}) is not a list"));
    };
    let items = items
        .iter()
        .map(|x| from_json(x, run))
        .collect::<Result<Array, _>>()?;
    let l = SharedList::new(items);
    let mut c = lock(&run.lists);
    // Later undos capturing this same list refer to the stored copy, not a new one.
    let known = Known {
        _array: l.0.clone(),
        hash: hash.to_string(),
        json: text.into(),
        lossy: None,
    };
    c.by_array.insert(Arc::as_ptr(&l.0) as usize, known);
    c.stored.insert(hash.to_string());
    c.read.insert(hash.to_string(), l.clone());
    Ok(Dynamic::from(l))
}

/// `lists`: where a closure's captured shared lists go (referenced by hash); `None` keeps them
/// inline (a step's result, a list inside a list).
fn convert(
    v: &Dynamic,
    run: &RunCtx,
    lossy: &mut Option<String>,
    lists: &mut Option<&mut Vec<(String, String)>>,
) -> Value {
    let v = if v.is_shared() {
        v.flatten_clone()
    } else {
        v.clone()
    };
    let inv = run.exec.inventory();
    if v.is_unit() {
        return Value::Null;
    }
    if let Ok(b) = v.as_bool() {
        return Value::Bool(b);
    }
    if let Ok(i) = v.as_int() {
        return json!(i);
    }
    if let Ok(f) = v.as_float() {
        return serde_json::Number::from_f64(f).map_or_else(
            || {
                lossy.get_or_insert_with(|| format!("the number {f} has no JSON form"));
                Value::Null
            },
            Value::Number,
        );
    }
    if let Ok(c) = v.as_char() {
        return Value::String(c.to_string());
    }
    if v.is_string() {
        let s = v.into_immutable_string().unwrap_or_default();
        if let Some(name) = inv.secret_name(&s) {
            return json!({ "$secret": name });
        }
        let red = inv.redactor.redact(&s);
        if red != s.as_str() {
            lossy.get_or_insert_with(|| "a text that contains a secret".into());
        }
        return Value::String(red);
    }
    if v.is_array() {
        let a = v.into_array().unwrap_or_default();
        return Value::Array(a.iter().map(|x| convert(x, run, lossy, lists)).collect());
    }
    if v.is_map() {
        let m = v.cast::<Map>();
        return Value::Object(
            m.iter()
                .map(|(k, x)| (k.to_string(), convert(x, run, lossy, lists)))
                .collect(),
        );
    }
    if let Some(l) = v.read_lock::<SharedList>() {
        if let Some(new) = lists {
            return list_ref(&l, run, lossy, new);
        }
        // Journaled as the array it reads as; a later process gets a plain array back.
        return Value::Array(
            l.0.iter()
                .map(|x| convert(x, run, lossy, &mut None))
                .collect(),
        );
    }
    if let Some(h) = v.read_lock::<HostHandle>() {
        return match &h.become_ {
            Some(u) => json!({ "$host": h.name.as_str(), "$become": u.as_str() }),
            None => json!({ "$host": h.name.as_str() }),
        };
    }
    if let Some(c) = v.read_lock::<SqlConn>() {
        if matches!(c.target.password, Some(crate::sql::Password::Inline(_))) {
            lossy.get_or_insert_with(|| {
                "a SQL connection whose password is not a secret of the inventory".into()
            });
        }
        // The password is kept by secret name only (SqlTarget never serializes an inline one).
        return json!({ "$sql": serde_json::to_value(&*c.target).unwrap_or(Value::Null) });
    }
    if let Some(c) = v.read_lock::<super::ddb::DdbConn>() {
        if matches!(c.target.password, Some(crate::sql::Password::Inline(_))) {
            lossy.get_or_insert_with(|| {
                "a DolphinDB connection whose password is not a secret of the inventory".into()
            });
        }
        return json!({ "$ddb": serde_json::to_value(&*c.target).unwrap_or(Value::Null) });
    }
    lossy.get_or_insert_with(|| format!("a value of type {} has no JSON form", v.type_name()));
    Value::String(inv.redactor.redact(&v.to_string()))
}

/// Reads a journaled value back: `{"$host": ..}` is a host of this run's inventory and
/// `{"$secret": ..}` the secret's current value.
pub(crate) fn from_json(v: &Value, run: &Arc<RunCtx>) -> Result<Dynamic, String> {
    Ok(match v {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => (*b).into(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Dynamic::from_int(i),
            None => Dynamic::from_float(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => s.clone().into(),
        Value::Array(a) => a
            .iter()
            .map(|x| from_json(x, run))
            .collect::<Result<rhai::Array, _>>()?
            .into(),
        Value::Object(o) => {
            let become_ = o.get("$become").and_then(Value::as_str);
            let keys = 1 + usize::from(become_.is_some());
            if let (true, Some(Value::String(name))) = (o.len() == keys, o.get("$host")) {
                if run.exec.inventory().host(name).is_none() {
                    return Err(format!("host `{name}` is no longer in the inventory"));
                }
                return Ok(Dynamic::from(HostHandle {
                    name: name.as_str().into(),
                    run: run.clone(),
                    become_: become_.map(Into::into),
                }));
            }
            if let (1, Some(spec)) = (o.len(), o.get("$sql")) {
                let mut target: crate::sql::SqlTarget = serde_json::from_value(spec.clone())
                    .map_err(|e| format!("a journaled SQL connection cannot be read: {e}"))?;
                if let Some(h) = &target.host {
                    if run.exec.inventory().host(h).is_none() {
                        return Err(format!("host `{h}` is no longer in the inventory"));
                    }
                }
                // A new session: the old process's session is gone.
                target.id = super::sql::new_session_id();
                return Ok(Dynamic::from(SqlConn {
                    target: Arc::new(target),
                    run: run.clone(),
                }));
            }
            if let (1, Some(spec)) = (o.len(), o.get("$ddb")) {
                let mut target: crate::ddb::DdbTarget = serde_json::from_value(spec.clone())
                    .map_err(|e| format!("a journaled DolphinDB connection cannot be read: {e}"))?;
                if let Some(h) = &target.host {
                    if run.exec.inventory().host(h).is_none() {
                        return Err(format!("host `{h}` is no longer in the inventory"));
                    }
                }
                target.id = super::sql::new_session_id();
                return Ok(Dynamic::from(super::ddb::DdbConn {
                    target: Arc::new(target),
                    run: run.clone(),
                }));
            }
            if let (1, Some(Value::String(hash))) = (o.len(), o.get("$list")) {
                return list_from_journal(hash, run);
            }
            if let (1, Some(Value::String(name))) = (o.len(), o.get("$secret")) {
                let s = run.exec.inventory().secrets.get(name).ok_or_else(|| {
                    format!("secret `{name}` is no longer in the inventory's [secrets]")
                })?;
                return Ok(s.expose().to_string().into());
            }
            let mut m = Map::new();
            for (k, x) in o {
                m.insert(k.as_str().into(), from_json(x, run)?);
            }
            m.into()
        }
    })
}

/// A closure as the journal keeps it: its name and the values it captured, taken now (an undo
/// sees captured variables as they were when it was registered, in this process and after a crash).
pub(crate) fn closure_spec(f: &FnPtr, run: &RunCtx, ctx: &NativeCallContext) -> ClosureSpec {
    let (mut lossy, mut lists) = (None, Vec::new());
    let captured = f
        .iter_curry()
        .map(|v| convert(v, run, &mut lossy, &mut Some(&mut lists)))
        .collect();
    let pos = ctx.call_position();
    ClosureSpec {
        function: f.fn_name().to_string(),
        captured,
        not_restorable: lossy.map(|why| format!("it captures {why}")),
        at: pos.line().map(|l| {
            format!(
                "{}:{l}:{}",
                ctx.call_source().unwrap_or("<playbook>"),
                pos.position().unwrap_or(1)
            )
        }),
        lists,
    }
}

/// Copies a closure's captured values so later changes to the variables do not reach it.
pub(crate) fn freeze(f: &FnPtr) -> FnPtr {
    let mut f = f.clone();
    for v in f.iter_curry_mut() {
        if v.is_shared() {
            *v = v.flatten_clone();
        }
    }
    f
}

/// Makes the closure `f` (called with `args` arguments beyond what it captured) callable through
/// `store` from another context: a closure made inside an imported module is found by name,
/// so that module joins the store's function libraries. False when it is nowhere.
#[allow(deprecated)] // NativeCallContextStore is volatile (rhai `internals`), not deprecated.
pub(crate) fn link_closure(
    store: &mut rhai::NativeCallContextStore,
    f: &FnPtr,
    args: usize,
) -> bool {
    let (name, n) = (f.fn_name(), f.curry().len() + args);
    if store
        .global
        .lib
        .iter()
        .any(|m| m.get_script_fn(name, n).is_some())
    {
        return true;
    }
    let found = store
        .global
        .iter_imports_raw()
        .find_map(|(_, m)| m.get_script_fn(name, n).is_some().then(|| m.clone()));
    match found {
        Some(module) => {
            store.global.lib.push(module);
            true
        }
        // A native function's pointer (`Fn("log")`) needs no library.
        None => true,
    }
}

/// Rebuilds a journaled closure: the same function of the same playbook (found in the script
/// context `store`: the playbook's own functions, then its imported modules), the same captured
/// values. A closure made inside an imported module (a stdlib function's undo) is called by
/// name, so that module joins the context's function libraries.
#[allow(deprecated)] // NativeCallContextStore is volatile (rhai `internals`), not deprecated.
pub(crate) fn closure_from_spec(
    spec: &ClosureSpec,
    run: &Arc<RunCtx>,
    store: &mut rhai::NativeCallContextStore,
) -> Result<FnPtr, String> {
    if let Some(why) = &spec.not_restorable {
        return Err(format!("it cannot be rebuilt from the journal: {why}"));
    }
    let n = spec.captured.len();
    let name = spec.function.as_str();
    let own = store
        .global
        .lib
        .iter()
        .rev()
        .find_map(|m| m.get_script_fn(name, n).cloned());
    let def = match own {
        Some(d) => d,
        None => {
            let (module, d) = store
                .global
                .iter_imports_raw()
                .find_map(|(_, m)| m.get_script_fn(name, n).cloned().map(|d| (m.clone(), d)))
                .ok_or_else(|| {
                    format!(
                        "its function ({}) is not in the playbook any more (was the playbook changed?)",
                        spec.at.as_deref().unwrap_or(name)
                    )
                })?;
            if !store.global.lib.iter().any(|m| Arc::ptr_eq(m, &module)) {
                store.global.lib.push(module);
            }
            d
        }
    };
    let mut f = FnPtr::from(def);
    let captured = spec
        .captured
        .iter()
        .map(|v| from_json(v, run))
        .collect::<Result<Vec<_>, _>>()?;
    f.set_curry(captured);
    Ok(f)
}
