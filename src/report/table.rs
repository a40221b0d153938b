//! Borderless text tables padded by display width (a CJK character takes two columns).

use comfy_table::{presets::NOTHING, CellAlignment, ContentArrangement, Table};

/// Rows of cells laid out in columns, each line indented by two spaces. Columns are separated by
/// two spaces; those in `right` are right-aligned (numbers, durations). Widths come from
/// comfy-table, which measures cells by their display width, so `升级 h1` lines up with `h1`.
/// Lines are never wrapped: a long cell widens its column, as `{:<width$}` did. A last column
/// that is left-aligned is appended to each line as it is, not laid out: padding it would make
/// every line as wide as its widest cell (one step's list of every component down during a
/// rollback made each of a large rehearsal's thousand lines that wide).
pub(crate) fn layout(rows: &[Vec<String>], right: &[usize]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    // A cell of several lines makes comfy-table print a row on several lines: then the last
    // column cannot be appended line by line, and is laid out with the others.
    let last_free = columns > 1
        && !right.contains(&(columns - 1))
        && rows.iter().flatten().all(|c| !c.contains('\n'));
    let laid = if last_free { columns - 1 } else { columns };
    let mut t = Table::new();
    t.load_style(NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled);
    for row in rows {
        t.add_row(row.iter().take(laid).cloned().collect::<Vec<_>>());
    }
    for (i, col) in t.column_iter_mut().enumerate() {
        col.set_padding((0, if i + 1 < columns { 2 } else { 0 }));
        if right.contains(&i) {
            col.set_cell_alignment(CellAlignment::Right);
        }
    }
    let mut out = String::new();
    for (line, row) in t.lines().zip(rows) {
        out.push_str("  ");
        match row.get(laid).filter(|_| last_free) {
            Some(last) => {
                let start = out.len();
                out.push_str(&line);
                out.push_str(last);
                let kept = out[start..].trim_end().len();
                out.truncate(start + kept);
            }
            None => out.push_str(line.trim_end()),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::layout;

    fn row(cells: &[&str]) -> Vec<String> {
        cells.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn wide_characters_take_two_columns() {
        let t = layout(
            &[
                row(&["ok", "升级 app1", "1.0s", "x"]),
                row(&["ok", "upgrade app2", "12.5s", "y"]),
            ],
            &[2],
        );
        let lines: Vec<&str> = t.lines().collect();
        // `升级 app1` is 9 columns wide, `upgrade app2` 12: the next column starts at the same
        // display column on both lines.
        assert_eq!(lines[0], "  ok  升级 app1      1.0s  x");
        assert_eq!(lines[1], "  ok  upgrade app2  12.5s  y");
    }

    /// The last column is not padded to its widest cell, and the columns before it line up as
    /// when it was laid out with them; a row without a last cell ends where its cells end.
    #[test]
    fn a_wide_last_cell_widens_its_own_line_only() {
        let wide = "x".repeat(10_000);
        let t = layout(
            &[
                row(&["a", "1", &wide]),
                row(&["bbb", "22", "y"]),
                row(&["c"]),
                row(&["", "", ""]),
            ],
            &[1],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], format!("  a     1  {wide}"));
        assert_eq!(lines[1], "  bbb  22  y");
        assert_eq!(lines[2], "  c");
        assert_eq!(lines[3], "  ");
        assert!(t.len() < 10_100, "{}", t.len());
        // A right-aligned last column is laid out with the others.
        let r = layout(&[row(&["a", "1"]), row(&["bb", "22"])], &[1]);
        assert_eq!(r, "  a    1\n  bb  22\n");
    }
}
