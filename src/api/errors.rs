//! Rhai errors to `Located` errors: the innermost position (inside closures and modules) and the call chain.

use rhai::{EvalAltResult, ParseError, Position};

use crate::error::{script_failure, FaultKind, Located, SourcePos};

/// `params()` in describe mode stops the script with this token once it has the param spec.
pub(crate) const DESCRIBE_TOKEN: &str = "capstan:describe";
/// Ends a rollback's replay of the playbook at its first `step` (see `api::recovery`).
pub(crate) const ROLLBACK_TOKEN: &str = "capstan:rollback";

fn pos_in(file: &str, pos: Position) -> Option<SourcePos> {
    match (pos.line(), pos.position()) {
        (Some(line), col) => Some(SourcePos {
            file: file.to_string(),
            line,
            column: col.unwrap_or(1),
        }),
        _ => None,
    }
}

/// The file a Rhai source name stands for. Rhai names a file module by its import path
/// (`helper`), so that is looked up beside the playbook; stdlib modules are `stdlib/<name>.rhai`.
fn file_of(src: &str, main_dir: Option<&std::path::Path>) -> String {
    if crate::sim::products::stdlib_modules()
        .iter()
        .any(|m| m.name == src)
    {
        return format!("stdlib/{src}.rhai");
    }
    if let Some(dir) = main_dir {
        let candidate = dir.join(format!("{src}.rhai"));
        if !src.ends_with(".rhai") && candidate.exists() {
            return candidate.display().to_string();
        }
    }
    src.to_string()
}

/// Text of a source file for the caret line: the main playbook, a stdlib module, or a file on disk.
fn source_text(file: &str, main_file: &str, main_text: &str) -> Option<String> {
    if file == main_file {
        return Some(main_text.to_string());
    }
    if let Some(s) = crate::sim::products::stdlib_source(file) {
        return Some(s.to_string());
    }
    std::fs::read_to_string(file).ok()
}

/// A compile error of the playbook `file`.
pub(crate) fn compile_error(e: &ParseError, file: &str, text: &str) -> Located {
    Located::new(e.err_type().to_string(), pos_in(file, e.position())).with_source_text(text)
}

/// Converts a script failure into its kind and a located message. Closures and imported modules
/// wrap errors; the innermost one has the real position, the wrappers give the call chain.
pub(crate) fn eval_error(
    err: &EvalAltResult,
    main_file: &str,
    main_text: &str,
) -> (FaultKind, Located) {
    let main_dir = std::path::Path::new(main_file)
        .parent()
        .filter(|_| !main_file.is_empty());
    let mut file = main_file.to_string();
    let mut chain = Vec::new();
    let mut e = err;
    loop {
        match e {
            EvalAltResult::ErrorInFunctionCall(_, src, inner, pos) => {
                chain.extend(pos_in(&file, *pos));
                if !src.is_empty() && src != main_file {
                    file = file_of(src, main_dir);
                }
                e = inner;
            }
            EvalAltResult::ErrorInModule(path, inner, pos) => {
                chain.extend(pos_in(&file, *pos));
                file = if crate::sim::products::stdlib_modules()
                    .iter()
                    .any(|m| m.name == path)
                {
                    format!("stdlib/{path}.rhai")
                } else {
                    path.clone()
                };
                e = inner;
            }
            _ => break,
        }
    }
    let (kind, message) = script_failure(e);
    let mut located = Located::new(message, pos_in(&file, e.position()));
    if let Some(text) = source_text(&file, main_file, main_text) {
        located = located.with_source_text(&text);
    }
    // Wrappers of a call into the same place add nothing.
    chain.dedup();
    if let Some(p) = &located.pos {
        chain.retain(|c| c != p);
    }
    located.called_from = chain;
    (kind, located)
}
