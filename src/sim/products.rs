//! The product registry: for each shipped product, its playbook, stdlib module, simulation model, examples, lab double and guide.
//!
//! A product is these files (`src/README.md` has the table); this is the one list naming them.
//! The shipped playbooks (`capstan list`, `Playbook::shipped`), the stdlib resolver, the model a
//! scenario names in `[[products]]` and the registry-driven tests read it. It sits beside the
//! models because it names their constructors; the layers above read it.

use super::model::ProductModel;
use crate::inventory::Inventory;

/// Builds a product's simulation model over `hosts` with a scenario's settings.
pub type ModelBuilder =
    fn(Vec<String>, &toml::Table, &Inventory) -> Result<Box<dyn ProductModel>, String>;

/// One shipped product.
pub struct Product {
    /// The name of its playbook (`capstan run NAME`), stdlib module (`import "NAME"`) and model
    /// (`model = "NAME"` in a scenario).
    pub name: &'static str,
    /// `playbooks/NAME.rhai`.
    pub playbook: &'static str,
    /// `stdlib/NAME.rhai`.
    pub stdlib: &'static str,
    pub model: ModelBuilder,
    /// Example scenarios, from the repository's root; each simulates its playbook to success.
    pub examples: &'static [&'static str],
    /// The lab double's directory, from the repository's root.
    pub lab: &'static str,
    /// The guide, from the repository's root.
    pub guide: &'static str,
}

macro_rules! product {
    ($name:literal, $model:expr, examples: [$($ex:literal),* $(,)?]) => {
        Product {
            name: $name,
            playbook: include_str!(concat!("../../playbooks/", $name, ".rhai")),
            stdlib: include_str!(concat!("../../stdlib/", $name, ".rhai")),
            model: |hosts, settings, inventory| {
                Ok(Box::new($model(hosts, settings, inventory)?))
            },
            examples: &[$(concat!("examples/", $name, "/", $ex)),*],
            lab: concat!("lab/", $name),
            guide: concat!("docs/", $name, ".md"),
        }
    };
}

/// The shipped products, by name.
pub const PRODUCTS: &[Product] = &[
    product!("dolphindb", super::dolphindb::DolphinDb::from_settings, examples: ["scenario.toml"]),
    product!("oceanbase", super::oceanbase::ObModel::from_settings, examples: ["scenario.toml", "scenario-3x2.toml"]),
    product!("oms", super::oms::OmsModel::from_settings, examples: ["scenario.toml", "scenario-4.1.0.toml"]),
    product!("openmldb", super::openmldb::OpenMldb::from_settings, examples: ["scenario.toml"]),
];

/// The product named `name`.
pub fn product(name: &str) -> Option<&'static Product> {
    PRODUCTS.iter().find(|p| p.name == name)
}

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

/// The stdlib modules that are no product's.
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
        let mut all: Vec<StdlibModule> = PRODUCTS
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
