//! Rhai wiring: engine construction, explicit limits, the embedded stdlib resolver, error positions.

mod lint;
mod stdlib;

use std::path::Path;
use std::sync::Arc;

use rhai::module_resolvers::{FileModuleResolver, ModuleResolversCollection};
use rhai::{Engine, OptimizationLevel};

pub(crate) use crate::api::errors::{compile_error, eval_error, DESCRIBE_TOKEN, ROLLBACK_TOKEN};
pub(crate) use lint::lint;
pub use lint::{Diagnostic, Severity};
pub use stdlib::{stdlib_modules, StdlibModule, StdlibResolver};

use crate::api::RunCtx;

/// Engine limits. Set explicitly because Rhai's defaults differ between debug and release builds
/// (call levels 8 vs 64), and a playbook must behave the same in tests and in production.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Script operations per run (0 = unlimited). Playbooks are I/O bound; this stops runaway loops.
    pub max_operations: u64,
    pub max_call_levels: usize,
    pub max_expr_depth: usize,
    pub max_function_expr_depth: usize,
    /// Bytes per string, elements per array, entries per map (0 = unlimited, the default).
    /// Rhai enforces any of these by walking the whole value after every call and on every
    /// method's object, so `arr.push(x)` costs the size of `arr` and building an n-element
    /// result costs n² (80,000 pushes: 3.4 s; a 2,000-tablet rehearsal: minutes). capstan runs
    /// its operator's own playbooks, not untrusted code: the limits are off, `max_operations`
    /// still stops a runaway loop, command output is capped at 16 MiB per stream and a file read
    /// at 64 MiB. An embedder that runs scripts it does not trust can set them.
    pub max_string_size: usize,
    pub max_array_size: usize,
    pub max_map_size: usize,
    pub max_modules: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_operations: 50_000_000,
            max_call_levels: 64,
            max_expr_depth: 64,
            max_function_expr_depth: 32,
            max_string_size: 0,
            max_array_size: 0,
            max_map_size: 0,
            max_modules: 128,
        }
    }
}

/// Rhai names a closure `anon$<hash of its body>`; the journal keeps undo and guard closures by
/// that name, so another process (resume, `capstan rollback`) must compute the same hash. Rhai's
/// default hasher is seeded randomly per process, so capstan fixes the seed before the first
/// engine exists. An embedder that set a seed of its own keeps it (and must keep it the same
/// across processes for journaled closures to be found).
fn stable_hashing() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        const SEED: [u64; 4] = [
            0x6361_7073_7461_6e21,
            0x6a6f_7572_6e61_6c73,
            0x756e_646f_7321,
            0x6775_6172_6473,
        ];
        if let Err(Some(other)) = rhai::config::hashing::set_hashing_seed(Some(SEED)) {
            if other != SEED {
                tracing::debug!("rhai hashing seed already set by the embedder: {other:?}");
            }
        }
    });
}

/// An embedder's addition to every engine capstan builds (natives, modules, types).
pub type Extension = Arc<dyn Fn(&mut Engine) + Send + Sync>;

/// What an embedder adds to every engine: natives and types (`extensions`), and script modules
/// a playbook imports by name as it imports the stdlib's (`import "NAME" as x;`), resolved
/// after the stdlib's own and before files beside the playbook.
#[derive(Clone, Default)]
pub struct Additions {
    pub extensions: Vec<Extension>,
    pub modules: Vec<StdlibModule>,
}

/// Builds the engine for one run: limits, the script API bound to `run`, the embedder's
/// extensions, and module resolution (embedded stdlib first, then files beside the playbook).
pub(crate) fn build(
    run: &Arc<RunCtx>,
    limits: &Limits,
    playbook_dir: Option<&Path>,
    additions: &Additions,
) -> Engine {
    stable_hashing();
    let mut engine = Engine::new();
    engine
        .set_max_operations(limits.max_operations)
        .set_max_call_levels(limits.max_call_levels)
        .set_max_expr_depths(limits.max_expr_depth, limits.max_function_expr_depth)
        .set_max_string_size(limits.max_string_size)
        .set_max_array_size(limits.max_array_size)
        .set_max_map_size(limits.max_map_size)
        .set_max_modules(limits.max_modules)
        .set_strict_variables(true)
        // No interning of strings made at run time: once the interner is full (256), every new
        // short string (a host name, a path) made it scan the whole cache, three times, to
        // evict; a rehearsal makes hundreds of thousands of such strings.
        .set_max_strings_interned(0)
        // `Full` may evaluate natives with constant arguments at compile time: fatal for h.run.
        .set_optimization_level(OptimizationLevel::Simple);

    // A first Ctrl-C stops only outside steps (a step runs to its end); a second stops anywhere.
    let cancel = run.exec.cancel().clone();
    // Asked every 256 operations, not at each: a few microseconds late is still at once, and
    // the question was 1 % of a rehearsal's instructions.
    engine.on_progress(move |ops| {
        (ops % 256 == 0 && cancel.should_stop()).then(|| "interrupted".into())
    });
    let r = run.clone();
    engine.on_print(move |s| r.log("info", s));
    let r = run.clone();
    engine.on_debug(move |s, _src, _pos| r.log("debug", s));

    crate::api::register_all(&mut engine, run);
    for ext in &additions.extensions {
        ext(&mut engine);
    }

    let mut resolvers = ModuleResolversCollection::new();
    resolvers.push(StdlibResolver::with(additions.modules.clone()));
    let mut files = match playbook_dir {
        Some(d) => FileModuleResolver::new_with_path(d),
        None => FileModuleResolver::new(),
    };
    files.enable_cache(true);
    resolvers.push(files);
    engine.set_module_resolver(resolvers);
    engine
}
