//! Text helpers for parsing command output: `trimmed`, `lines`, and versions in the vendors' forms.

use rhai::{Array, Dynamic, Engine};

use super::def;

pub(super) fn register(engine: &mut Engine) {
    def(
        engine,
        "version_compare",
        &["a: String", "b: String", "int"],
        r#"
-1, 0 or 1 as version `a` is older than, the same as or newer than `b`, in any of the forms the
vendors print: `v2.0.10`, `V3.00.1`, `2.00.7.4 2022.12.08` (the first version in the text),
`4.2.1.8_108000022024072217` (the build is left out), `4.2.1.2-ce` (an edition is left out),
`2.0.10-rc1` (a pre-release comes before `2.0.10`). Numbers compare as numbers; missing parts
count as 0. A text with no version in it is an error that quotes it. `version::compare` in the
`version` module is this function.

```rhai
if version_compare("v2.0.10", "2.0.9") != 1 { fail("version_compare is broken"); }
if version_compare("2.00.7.4 2022.12.08", "2.0.7.4") != 0 { fail("version_compare is broken"); }
if version_compare("2.0.10-rc1", "2.0.10") != -1 { fail("version_compare is broken"); }
```"#,
        |a: &str, b: &str| -> Result<i64, Box<rhai::EvalAltResult>> {
            crate::version::compare(a, b)
                .map(|o| o as i64)
                .map_err(super::bad_input)
        },
    );

    def(
        engine,
        "version_numbers",
        &["v: String", "Array"],
        r#"
The numbers of the first version in a text, as `version_compare` reads it: `[4, 2, 1, 8]` from
`4.2.1.8_108000022024072217`. `version::parse` in the `version` module is this function.

```rhai
if version_numbers("V3.00.1") != [3, 0, 1] { fail("version_numbers is broken"); }
```"#,
        |v: &str| -> Result<Array, Box<rhai::EvalAltResult>> {
            crate::version::parse(v)
                .map(|p| {
                    p.numbers
                        .into_iter()
                        .map(|n| Dynamic::from_int(n as i64))
                        .collect()
                })
                .map_err(super::bad_input)
        },
    );

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
