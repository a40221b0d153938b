//! Borderless text tables padded by display width (a CJK character takes two columns).

use comfy_table::{presets::NOTHING, CellAlignment, ContentArrangement, Table};

/// Rows of cells laid out in columns, each line indented by two spaces. Columns are separated by
/// two spaces; those in `right` are right-aligned (numbers, durations). Widths come from
/// comfy-table, which measures cells by their display width, so `升级 h1` lines up with `h1`.
/// Lines are never wrapped: a long cell widens its column, as `{:<width$}` did.
pub(crate) fn layout(rows: &[Vec<String>], right: &[usize]) -> String {
    let mut t = Table::new();
    t.load_style(NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled);
    for row in rows {
        t.add_row(row.clone());
    }
    let columns = t.column_count();
    for (i, col) in t.column_iter_mut().enumerate() {
        col.set_padding((0, if i + 1 < columns { 2 } else { 0 }));
        if right.contains(&i) {
            col.set_cell_alignment(CellAlignment::Right);
        }
    }
    let mut out = String::new();
    for line in t.lines() {
        out.push_str("  ");
        out.push_str(line.trim_end());
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
}
