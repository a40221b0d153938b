//! The stdlib: Rhai modules embedded in the binary, resolved before files beside the playbook.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rhai::{Engine, EvalAltResult, Module, ModuleResolver, Position, Scope};

/// What a resolver hands back (`rhai::Shared<Module>` is an `Arc` under the `sync` feature).
type SharedModule = Arc<Module>;

// The modules themselves (name and source) are listed with the product registry, which the
// layers below the engine read too (error positions name a module's file).
pub use crate::sim::products::{stdlib_modules, StdlibModule};

/// Resolves stdlib imports, compiling each module once per engine with that engine (stdlib
/// functions call the engine's natives).
#[derive(Debug, Default)]
pub struct StdlibResolver {
    cache: Mutex<HashMap<String, SharedModule>>,
    /// An embedder's modules (`HostBuilder::stdlib_module`), after the stdlib's own.
    extra: Vec<StdlibModule>,
}

impl StdlibResolver {
    /// Resolves the stdlib's modules, then `extra`.
    pub fn with(extra: Vec<StdlibModule>) -> Self {
        StdlibResolver {
            cache: Mutex::default(),
            extra,
        }
    }

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
        let found = stdlib_modules().iter().chain(&self.extra);
        let Some(m) = found.clone().find(|m| m.name == path) else {
            return Err(Box::new(EvalAltResult::ErrorModuleNotFound(
                path.into(),
                pos,
            )));
        };
        if let Some(found) = crate::lock(&self.cache).get(path) {
            return Ok(found.clone());
        }
        let module = Self::load(engine, m, pos)?;
        crate::lock(&self.cache).insert(path.to_string(), module.clone());
        Ok(module)
    }
}
