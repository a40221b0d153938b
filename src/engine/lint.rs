//! `capstan check`: what the compiler does not catch (unknown functions, duplicate step names, undocumented params).

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

fn pos(file: &str, p: rhai::Position) -> Option<SourcePos> {
    p.line().map(|line| SourcePos {
        file: file.to_string(),
        line,
        column: p.position().unwrap_or(1),
    })
}

/// Lints a compiled playbook. Namespaced calls (`m::f`) are left to run time: their modules
/// may be files that only exist on the operator's machine.
pub(crate) fn lint(engine: &Engine, ast: &AST, file: &str, text: &str) -> Vec<Diagnostic> {
    let mut known: BTreeSet<String> = engine
        .gen_fn_signatures(true)
        .iter()
        .filter_map(|s| s.split('(').next())
        .map(|s| s.rsplit("::").next().unwrap_or(s).trim().to_string())
        .collect();
    known.extend(BUILTINS.iter().map(|s| s.to_string()));
    known.extend(ast.iter_functions().map(|f| f.name.to_string()));

    let mut out = Vec::new();
    let mut steps: BTreeMap<String, SourcePos> = BTreeMap::new();
    let mut diag = |severity, message: String, p: Option<SourcePos>| {
        out.push(Diagnostic {
            severity,
            located: Located::new(message, p).with_source_text(text),
        });
    };
    ast.walk(&mut |path: &[ASTNode]| {
        let (call, at) = match path.last() {
            Some(ASTNode::Expr(Expr::FnCall(x, p)))
            | Some(ASTNode::Expr(Expr::MethodCall(x, p)))
            | Some(ASTNode::Stmt(Stmt::FnCall(x, p))) => (x, *p),
            _ => return true,
        };
        if call.op_token.is_some() || !call.namespace.is_empty() {
            return true;
        }
        let name = call.name.as_str();
        if !name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
            return true;
        }
        if !known.contains(name) {
            diag(Severity::Error, format!("unknown function `{name}`"), pos(file, at));
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
