//! Text helpers for parsing command output: `trimmed`, `lines`.

use rhai::{Array, Dynamic, Engine};

use super::def;

pub(super) fn register(engine: &mut Engine) {
    def(
        engine,
        "trimmed",
        &["text: String", "String"],
        r#"
The text without leading and trailing white space. (Rhai's own `trim` changes a variable in place
and returns nothing, so `h.read_file(p).trim()` would be `()`.)

```rhai
let v = cluster().host("web1").read_file("/srv/app/VERSION").trimmed();
```"#,
        |s: &str| s.trim().to_string(),
    );

    def(
        engine,
        "lines",
        &["text: String", "Array"],
        r#"
The non-empty lines of a text, each trimmed: the usual first step in parsing a tool's output.

```rhai
let names = "a\n\n b \n".lines();
if names != ["a", "b"] { fail("lines() is broken"); }
```"#,
        |s: &str| -> Array {
            s.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(|l| Dynamic::from(l.to_string()))
                .collect()
        },
    );
}
