//! `capstan check`: what the compiler does not catch (unknown functions, wrong arguments to capstan's own, duplicate step names, undocumented params, value traps).

use std::collections::{BTreeMap, BTreeSet};

use rhai::{ASTNode, Engine, Expr, Stmt, AST};

use crate::error::{Located, SourcePos};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Error,
    Warning,
}

/// One finding of `capstan check`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    #[serde(flatten)]
    pub located: Located,
}

/// Calls Rhai resolves itself rather than through registered functions.
const BUILTINS: &[&str] = &[
    "print",
    "debug",
    "type_of",
    "Fn",
    "call",
    "curry",
    "is_shared",
    "is_def_fn",
    "is_def_var",
    "eval",
    "this",
];

/// Rhai string functions that change their object and return `()`.
const IN_PLACE: &[&str] = &["trim", "make_upper", "make_lower"];

/// Whether the method call at the end of `path` is used as a value (its result is read), not
/// run as a statement of its own.
fn used_as_value(path: &[ASTNode]) -> bool {
    // `x.trim()` is Dot(x, MethodCall); the statement form is Stmt::Expr(Dot(..)).
    let n = path.len();
    if n < 3 {
        return false;
    }
    match (&path[n - 2], &path[n - 3]) {
        (ASTNode::Expr(Expr::Dot(..)), ASTNode::Stmt(Stmt::Expr(..))) => false,
        (ASTNode::Expr(Expr::Dot(..)), _) => true,
        _ => false,
    }
}

fn pos(file: &str, p: rhai::Position) -> Option<SourcePos> {
    p.line().map(|line| SourcePos {
        file: file.to_string(),
        line,
        column: p.position().unwrap_or(1),
    })
}

/// One registered signature: `name(a: Type, b) -> Ret`, its parameter types (None: any).
#[derive(Debug, Clone)]
struct Sig {
    text: String,
    params: Vec<(String, Option<String>)>,
}

/// `ns::name(p: T, q) -> R` into (namespace, name, signature).
fn parse_sig(s: &str) -> Option<(String, String, Sig)> {
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let head = s[..open].trim();
    let (ns, name) = match head.rsplit_once("::") {
        Some((ns, n)) => (ns.to_string(), n.to_string()),
        None => (String::new(), head.to_string()),
    };
    let inner = s[open + 1..close].trim();
    let params = if inner.is_empty() {
        Vec::new()
    } else {
        inner
            .split(',')
            .map(|p| match p.split_once(':') {
                Some((n, t)) => (n.trim().to_string(), Some(t.trim().to_string())),
                None => (p.trim().to_string(), None),
            })
            .collect()
    };
    Some((
        ns,
        name,
        Sig {
            text: s.to_string(),
            params,
        },
    ))
}

/// What a literal argument is, for the message and the type check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lit {
    Str,
    Array,
    Map,
    Int,
    Float,
    Bool,
}

impl Lit {
    fn of(e: &Expr) -> Option<Lit> {
        Some(match e {
            Expr::StringConstant(..) | Expr::InterpolatedString(..) => Lit::Str,
            Expr::Array(..) => Lit::Array,
            Expr::Map(..) => Lit::Map,
            Expr::IntegerConstant(..) => Lit::Int,
            Expr::FloatConstant(..) => Lit::Float,
            Expr::BoolConstant(..) => Lit::Bool,
            Expr::DynamicConstant(d, _) => {
                if d.is_array() {
                    Lit::Array
                } else if d.is_map() {
                    Lit::Map
                } else if d.is_string() {
                    Lit::Str
                } else if d.is_int() {
                    Lit::Int
                } else if d.is_float() {
                    Lit::Float
                } else if d.is_bool() {
                    Lit::Bool
                } else {
                    return None;
                }
            }
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Lit::Str => "a string",
            Lit::Array => "an array",
            Lit::Map => "a map",
            Lit::Int => "an integer",
            Lit::Float => "a float",
            Lit::Bool => "a boolean",
        }
    }

    /// Whether a parameter declared as `ty` takes this literal. Types the check does not
    /// know (and untyped parameters) take anything: a lint must not refuse what runs.
    fn fits(self, ty: Option<&str>) -> bool {
        let Some(ty) = ty else { return true };
        let t = ty
            .trim_start_matches("&mut ")
            .trim_start_matches('&')
            .trim();
        let kind = match t {
            "String" | "string" | "str" | "ImmutableString" => Lit::Str,
            "array" | "Array" => Lit::Array,
            "map" | "Map" => Lit::Map,
            "int" | "INT" | "i64" | "i32" | "i16" | "i8" | "u64" | "u32" | "u16" | "u8"
            | "usize" => Lit::Int,
            "float" | "FLOAT" | "f64" | "f32" => Lit::Float,
            "bool" => Lit::Bool,
            // capstan's and Rhai's own object types: no literal is one of them.
            "Host" | "Cluster" | "Docker" | "SqlConn" | "DdbConn" | "Param" | "Fn" | "FnPtr"
            | "Instant" | "Blob" | "blob" | "char" | "range" | "Range" => return false,
            _ => return true,
        };
        kind == self
    }
}

/// Lints a compiled playbook. Calls into a module the script imports (`m::f`) are left to run
/// time (the module may be a file only the operator's machine has); calls into capstan's own
/// modules (`backup::`, `wait::`, ...) are checked like the others.
/// With `groups` (an inventory given to `check`), a literal `group("x")` it lacks is an error too.
pub(crate) fn lint(
    engine: &Engine,
    ast: &AST,
    file: &str,
    text: &str,
    groups: Option<(&str, &BTreeSet<String>)>,
) -> Vec<Diagnostic> {
    let sigs: Vec<(String, String, Sig)> = engine
        .gen_fn_signatures(true)
        .iter()
        .filter_map(|s| parse_sig(s))
        .collect();
    let mut known: BTreeSet<String> = sigs.iter().map(|(_, n, _)| n.clone()).collect();
    known.extend(BUILTINS.iter().map(|s| s.to_string()));
    let own: BTreeSet<String> = ast.iter_functions().map(|f| f.name.to_string()).collect();
    known.extend(own.iter().cloned());
    // Overloads by (namespace, name).
    let mut overloads: BTreeMap<(String, String), Vec<Sig>> = BTreeMap::new();
    for (ns, n, sig) in &sigs {
        overloads
            .entry((ns.clone(), n.clone()))
            .or_default()
            .push(sig.clone());
    }
    let modules: BTreeSet<String> = sigs
        .iter()
        .filter(|(ns, _, _)| !ns.is_empty())
        .map(|(ns, _, _)| ns.clone())
        .collect();
    // Aliases the script imports: their calls are the module's business.
    let mut imported: BTreeSet<String> = BTreeSet::new();
    ast.walk(&mut |path: &[ASTNode]| {
        if let Some(ASTNode::Stmt(Stmt::Import(x, _))) = path.last() {
            imported.insert(x.1.name.to_string());
        }
        true
    });

    let mut out = Vec::new();
    let mut steps: BTreeMap<String, SourcePos> = BTreeMap::new();
    let mut diag = |severity, message: String, p: Option<SourcePos>| {
        out.push(Diagnostic {
            severity,
            located: Located::new(message, p).with_source_text(text),
        });
    };
    ast.walk(&mut |path: &[ASTNode]| {
        let (call, at, method) = match path.last() {
            Some(ASTNode::Expr(Expr::FnCall(x, p))) | Some(ASTNode::Stmt(Stmt::FnCall(x, p))) => {
                (x, *p, false)
            }
            Some(ASTNode::Expr(Expr::MethodCall(x, p))) => (x, *p, true),
            _ => return true,
        };
        if call.op_token.is_some() {
            return true;
        }
        let name = call.name.as_str();
        if !name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
            return true;
        }
        let ns = call.namespace.to_string();
        if !ns.is_empty() {
            let root = call.namespace.root();
            if imported.contains(root) || !modules.contains(&ns) {
                return true;
            }
            if !overloads.contains_key(&(ns.clone(), name.to_string())) {
                let mut has: Vec<&str> = overloads
                    .keys()
                    .filter(|(m, _)| *m == ns)
                    .map(|(_, n)| n.as_str())
                    .collect();
                has.dedup();
                diag(
                    Severity::Error,
                    format!(
                        "unknown function `{ns}::{name}`; `{ns}` has {}",
                        has.join(", ")
                    ),
                    pos(file, at),
                );
                return true;
            }
        } else if !known.contains(name) {
            diag(Severity::Error, format!("unknown function `{name}`"), pos(file, at));
            return true;
        }
        // Arguments: the number, and the kind of each literal, against capstan's signatures
        // (a method call's object is its first argument). A function the script defines
        // itself may take anything.
        if ns.is_empty() && (own.contains(name) || BUILTINS.contains(&name)) {
            return true;
        }
        if let Some(cands) = overloads.get(&(ns.clone(), name.to_string())) {
            let mut cands = cands.clone();
            cands.sort_by(|a, b| a.text.cmp(&b.text));
            let n = call.args.len() + usize::from(method);
            let lits: Vec<Option<Lit>> = (0..usize::from(method))
                .map(|_| None)
                .chain(call.args.iter().map(Lit::of))
                .collect();
            let shown = if ns.is_empty() {
                if method {
                    format!(".{name}(..)")
                } else {
                    format!("{name}(..)")
                }
            } else {
                format!("{ns}::{name}(..)")
            };
            let sigs_text = cands
                .iter()
                .map(|s| s.text.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            let same_n: Vec<&Sig> = cands.iter().filter(|s| s.params.len() == n).collect();
            if same_n.is_empty() {
                diag(
                    Severity::Error,
                    format!(
                        "`{shown}` is given {} argument(s){}; it takes: {sigs_text}",
                        n,
                        if method { " (the object counts as the first)" } else { "" }
                    ),
                    pos(file, at),
                );
            } else if !same_n.iter().any(|s| {
                lits.iter()
                    .zip(&s.params)
                    .all(|(l, (_, ty))| l.is_none_or(|l| l.fits(ty.as_deref())))
            }) {
                // Name the first literal that no overload of this arity takes.
                let bad = (0..n).find(|&i| {
                    lits[i].is_some_and(|l| same_n.iter().all(|s| !l.fits(s.params[i].1.as_deref())))
                });
                let what = match bad {
                    Some(i) => {
                        // Every overload's parameter there (`run` is the host's and docker's).
                        let mut alts: Vec<String> = same_n
                            .iter()
                            .map(|s| {
                                let (pname, ty) = &s.params[i];
                                format!("`{pname}` as {}", ty.as_deref().unwrap_or("any value"))
                            })
                            .collect();
                        alts.sort();
                        alts.dedup();
                        format!(
                            "`{shown}` takes {}; got {}",
                            alts.join(" or "),
                            lits[i].map_or("another value", Lit::name)
                        )
                    }
                    None => format!("`{shown}`: no signature takes these arguments"),
                };
                diag(Severity::Error, format!("{what} (signatures: {sigs_text})"), pos(file, at));
            }
        }
        // `trim` (and the other in-place string functions) return nothing: as a value it is
        // `()`, which fails far from here.
        if method && ns.is_empty() && IN_PLACE.contains(&name) && used_as_value(path) {
            let fix = match name {
                "trim" => "trimmed()",
                "to_upper" | "make_upper" => "to_upper()",
                _ => "to_lower()",
            };
            diag(
                Severity::Warning,
                format!(
                    "`{name}()` changes the string in place and returns nothing; as a value use `{fix}`"
                ),
                pos(file, at),
            );
        }
        if let (Some((inv, groups)), true, "group") = (groups, method, name) {
            if let Some(Expr::StringConstant(g, gp)) = call.args.first() {
                if !groups.contains(g.as_str()) {
                    diag(
                        Severity::Error,
                        format!(
                            "no group `{g}` in the inventory {inv} (groups: {})",
                            groups.iter().cloned().collect::<Vec<_>>().join(", ")
                        ),
                        pos(file, *gp),
                    );
                }
            }
        }
        if name == "step" {
            if let Some(Expr::StringConstant(s, sp)) = call.args.first() {
                let here = pos(file, *sp);
                match (steps.get(s.as_str()), here) {
                    (Some(first), Some(h)) => diag(
                        Severity::Error,
                        format!("duplicate step name `{s}` (first at {first}); step names must be unique"),
                        Some(h),
                    ),
                    (None, Some(h)) => {
                        steps.insert(s.to_string(), h);
                    }
                    _ => {}
                }
            }
        }
        if name == "params" {
            if let Some(Expr::Map(m, _)) = call.args.first() {
                for (ident, value) in m.0.iter() {
                    let documented = matches!(value, Expr::FnCall(f, _) if f.namespace.root() == "param");
                    if !documented {
                        diag(
                            Severity::Warning,
                            format!(
                                "param `{}` has no doc line; write it as param::optional(value, \"what it is\") or param::required(\"what it is\")",
                                ident.name
                            ),
                            pos(file, ident.pos),
                        );
                    }
                }
            }
        }
        true
    });
    out
}
