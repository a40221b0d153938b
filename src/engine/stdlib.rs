//! The stdlib: Rhai modules embedded in the binary, resolved before files beside the playbook.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rhai::{Engine, EvalAltResult, Module, ModuleResolver, Position, Scope};

/// What a resolver hands back (`rhai::Shared<Module>` is an `Arc` under the `sync` feature).
type SharedModule = Arc<Module>;

/// One embedded module: `import "<name>" as x;` finds it.
#[derive(Debug, Clone, Copy)]
pub struct StdlibModule {
    pub name: &'static str,
    pub source: &'static str,
}

impl StdlibModule {
    /// The name errors and docs use for this module's file.
    pub fn file(&self) -> String {
        format!("stdlib/{}.rhai", self.name)
    }
}

/// The modules that are no product's (each product's is in the registry, `sim::products`).
const GENERIC: &[StdlibModule] = &[
    StdlibModule {
        name: "process",
        source: include_str!("../../stdlib/process.rhai"),
    },
    StdlibModule {
        name: "rolling",
        source: include_str!("../../stdlib/rolling.rhai"),
    },
    StdlibModule {
        name: "version",
        source: include_str!("../../stdlib/version.rhai"),
    },
];

/// Every module of the stdlib, by name: every product's, and the generic ones.
pub fn stdlib_modules() -> &'static [StdlibModule] {
    static ALL: std::sync::OnceLock<Vec<StdlibModule>> = std::sync::OnceLock::new();
    ALL.get_or_init(|| {
        let mut all: Vec<StdlibModule> = crate::sim::products::PRODUCTS
            .iter()
            .map(|p| StdlibModule {
                name: p.name,
                source: p.stdlib,
            })
            .chain(GENERIC.iter().copied())
            .collect();
        all.sort_by_key(|m| m.name);
        all
    })
}

/// The text of a stdlib file by its error name (`stdlib/rolling.rhai`).
pub(crate) fn stdlib_source(file: &str) -> Option<&'static str> {
    stdlib_modules()
        .iter()
        .find(|m| m.file() == file)
        .map(|m| m.source)
}

/// Resolves stdlib imports, compiling each module once per engine with that engine (stdlib
/// functions call the engine's natives).
#[derive(Debug, Default)]
pub struct StdlibResolver {
    cache: Mutex<HashMap<String, SharedModule>>,
}

impl StdlibResolver {
    /// Compiles a stdlib module into a `Module`.
    pub fn load(
        engine: &Engine,
        m: &StdlibModule,
        pos: Position,
    ) -> Result<SharedModule, Box<EvalAltResult>> {
        let in_module =
            |e: Box<EvalAltResult>| Box::new(EvalAltResult::ErrorInModule(m.name.into(), e, pos));
        let mut ast = engine.compile(m.source).map_err(|e| in_module(e.into()))?;
        ast.set_source(m.file());
        let module = Module::eval_ast_as_new(Scope::new(), &ast, engine).map_err(in_module)?;
        Ok(Arc::new(module))
    }
}

impl ModuleResolver for StdlibResolver {
    fn resolve(
        &self,
        engine: &Engine,
        _source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<SharedModule, Box<EvalAltResult>> {
        let Some(m) = stdlib_modules().iter().find(|m| m.name == path) else {
            return Err(Box::new(EvalAltResult::ErrorModuleNotFound(
                path.into(),
                pos,
            )));
        };
        if let Some(found) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
        {
            return Ok(found.clone());
        }
        let module = Self::load(engine, m, pos)?;
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.to_string(), module.clone());
        Ok(module)
    }
}
