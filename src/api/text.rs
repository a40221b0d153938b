//! Text helpers for parsing command output: `trimmed`, `lines`, `words`, the tables tools print, and versions in the vendors' forms.

use rhai::{Array, Dynamic, Engine, ImmutableString, Map};

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

    def(
        engine,
        "words",
        &["text: String", "Array"],
        r#"
The words of a text: the pieces between runs of white space (spaces, tabs, newlines), none empty.
The way most tools' column output is read (Python's `str.split()`).

```rhai
if "  transactions  1    0   10.2.0.1:10921 \n".words() != ["transactions", "1", "0", "10.2.0.1:10921"] {
    fail("words() is broken");
}
```"#,
        |s: &str| -> Array {
            s.split_whitespace()
                .map(|w| Dynamic::from(w.to_string()))
                .collect()
        },
    );

    def(
        engine,
        "pipe_table",
        &["text: String", "Array"],
        r#"
The rows of a table drawn with `|` between cells (Python's prettytable, `mysql -t`, `obclient`):
every line that starts with `|` is a row, its cells trimmed; the first is the header. Each row
is a map from the header's names to its cells (a missing cell is ""). Other lines (the `+---+`
borders, messages) are ignored.

```rhai
let rows = pipe_table("+---+---+\n| a | b |\n+---+---+\n| 1 | x |\n| 2 |\n+---+---+\n");
if rows != [#{ a: "1", b: "x" }, #{ a: "2", b: "" }] { fail(`pipe_table is broken: ${rows}`); }
```"#,
        |s: &str| -> Array { pipe_table(s) },
    );

    def(
        engine,
        "column_table",
        &["text: String", "Array"],
        r#"
The rows of a table whose header is underlined by a rule of dashes and whose cells are separated
by white space (OpenMLDB's `ns_client`): the last line before the first line starting with `---`
names the columns; every non-empty line after it is a row, split into words. Each row is a map
from the column names to its words (a missing one is ""); words past the last column are
dropped. A text with no rule has no rows.

```rhai
let rows = column_table("  key  value\n------------\n  auto_failover  true\n  lonely\n");
if rows != [#{ key: "auto_failover", value: "true" }, #{ key: "lonely", value: "" }] {
    fail(`column_table is broken: ${rows}`);
}
```"#,
        |s: &str| -> Array { column_table(s) },
    );

    def(
        engine,
        "text_table",
        &["text: String", "Array"],
        r#"
The rows of a fixed-width table framed by rules of dash groups, as OpenMLDB's SQL client prints
a result (hybridse's TextTable): a rule, the header, a rule, the rows, a rule. Each cell is cut at
its header's column (so a cell may hold spaces) and trimmed. A line inside the rows whose first
cell is not a number continues the previous row's last cell (a multi-line `Warnings`), joined
with a newline. Lines after the closing rule (`N rows in set`) are ignored. Columns are counted
in characters, not bytes.

```rhai
let text = " ---- ------ ----------\n  id   name   Warnings\n ---- ------ ----------\n  6    t1     [pid=0] a b\n[pid=1] c\n ---- ------ ----------\n1 rows in set\n";
let rows = text_table(text);
if rows != [#{ id: "6", name: "t1", Warnings: "[pid=0] a b\n[pid=1] c" }] { fail(`text_table is broken: ${rows}`); }
```"#,
        |s: &str| -> Array { text_table(s) },
    );
}

/// A row as a map from `names` to `cells` (a missing cell is ""; a later duplicate name wins).
fn row<'a>(
    names: &[impl AsRef<str>],
    cells: impl IntoIterator<Item = &'a str>,
    texts: &mut Texts<'a>,
) -> Dynamic {
    let mut m = Map::new();
    let cells = cells.into_iter().chain(std::iter::repeat(""));
    for (n, v) in names.iter().zip(cells) {
        m.insert(n.as_ref().into(), Dynamic::from(texts.get(v)));
    }
    Dynamic::from_map(m)
}

/// One Rhai string per distinct cell text of a table: tables repeat their texts (a role, a
/// state, a table's name on each of its partitions), and sharing one is a count where a new
/// string is an allocation. Rhai strings are immutable, so a shared one cannot change under
/// another row.
#[derive(Default)]
struct Texts<'a>(crate::FastMap<&'a str, ImmutableString>);

impl<'a> Texts<'a> {
    fn get(&mut self, text: &'a str) -> ImmutableString {
        self.0
            .entry(text)
            .or_insert_with(|| ImmutableString::from(text))
            .clone()
    }
}

fn pipe_table(text: &str) -> Array {
    let mut header: Option<Vec<&str>> = None;
    let mut texts = Texts::default();
    let mut out = Array::new();
    for l in text.lines().map(str::trim).filter(|l| l.starts_with('|')) {
        let parts: Vec<&str> = l.split('|').collect();
        let cells = parts[1..parts.len() - 1].iter().map(|c| c.trim());
        match &header {
            None => header = Some(cells.collect()),
            Some(h) => out.push(row(h, cells, &mut texts)),
        }
    }
    out
}

fn column_table(text: &str) -> Array {
    let mut header: Vec<&str> = Vec::new();
    let mut ruled = false;
    let mut texts = Texts::default();
    let mut out = Array::new();
    for l in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if l.starts_with("---") {
            ruled = true;
        } else if ruled {
            out.push(row(&header, l.split_whitespace(), &mut texts));
        } else {
            header = l.split_whitespace().collect();
        }
    }
    out
}

/// A line of dashes and spaces only, starting with `---`.
fn is_rule(t: &str) -> bool {
    t.starts_with("---") && t.chars().all(|c| c == '-' || c == ' ')
}

fn text_table(text: &str) -> Array {
    let mut rules = 0;
    // Column names and where each starts (in characters of the header line).
    let mut names: Vec<String> = Vec::new();
    let mut starts: Vec<usize> = Vec::new();
    let mut rows: Vec<Vec<String>> = Vec::new();
    for l in text.split('\n') {
        let t = l.trim();
        if t.is_empty() {
            continue;
        }
        if is_rule(t) {
            rules += 1;
            continue;
        }
        let chars: Vec<char> = l.chars().collect();
        if rules == 1 && names.is_empty() {
            let mut at = 0;
            while at < chars.len() {
                if chars[at].is_whitespace() {
                    at += 1;
                    continue;
                }
                let end = (at..chars.len())
                    .find(|&i| chars[i].is_whitespace())
                    .unwrap_or(chars.len());
                names.push(chars[at..end].iter().collect());
                starts.push(at);
                at = end;
            }
            continue;
        }
        if rules != 2 || names.is_empty() {
            continue;
        }
        let cut = |i: usize| -> String {
            let from = starts[i].min(chars.len());
            let to = starts
                .get(i + 1)
                .map_or(chars.len(), |&e| e.min(chars.len()));
            chars[from..to.max(from)]
                .iter()
                .collect::<String>()
                .trim()
                .to_string()
        };
        let first = cut(0);
        if !first.is_empty() && first.chars().all(|c| c.is_ascii_digit()) {
            rows.push((0..names.len()).map(cut).collect());
        } else if let Some(last) = rows.last_mut().and_then(|r| r.last_mut()) {
            if !last.is_empty() {
                last.push('\n');
            }
            last.push_str(t);
        }
    }
    let mut texts = Texts::default();
    rows.iter()
        .map(|r| row(&names, r.iter().map(String::as_str), &mut texts))
        .collect()
}
