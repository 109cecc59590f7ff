//! The one way list commands print a table: every column as wide as its widest cell (header
//! included), so columns line up whatever the width of an id, a name or a timestamp.
//!
//! Not for `--json`, which prints the API's own JSON unchanged.

/// Two spaces between columns: a cell that fills its column never touches the next one.
const GAP: &str = "  ";

/// Renders `headers` and `rows` as aligned text, one line per row, each ending with a newline.
/// The last column is not padded (no trailing spaces). A row shorter than the headers is
/// padded with empty cells.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let columns = headers.len();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().take(columns).enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, width) in widths.iter().enumerate() {
            let cell = cells.next().unwrap_or("");
            if i + 1 == columns {
                text.push_str(cell);
            } else {
                text.push_str(cell);
                let pad = width - cell.chars().count();
                text.extend(std::iter::repeat_n(' ', pad));
                text.push_str(GAP);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// Prints [`render`] to stdout.
pub fn print(headers: &[&str], rows: &[Vec<String>]) {
    print!("{}", render(headers, rows));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where each column starts on a line, found from the header's column names.
    fn starts(line: &str, cells: &[&str]) -> Vec<usize> {
        let mut from = 0;
        cells
            .iter()
            .map(|c| {
                let at = from + line[from..].find(c).expect("cell on the line");
                from = at + c.len();
                at
            })
            .collect()
    }

    #[test]
    fn columns_start_at_the_same_offset_on_every_line_whatever_the_widths() {
        let rows = vec![
            vec!["7".into(), "a".into(), "queued".into()],
            vec![
                "123456789012".into(),
                "much-longer-name".into(),
                "ok".into(),
            ],
            vec!["42".into(), "é-accent".into(), "failed".into()],
        ];
        let text = render(&["ID", "EVENT", "STATUS"], &rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        let header = starts(lines[0], &["ID", "EVENT", "STATUS"]);
        for (line, row) in lines[1..].iter().zip(&rows) {
            let cells: Vec<&str> = row.iter().map(String::as_str).collect();
            // Offsets in characters, so that a non-ASCII name does not shift its line.
            let offsets: Vec<usize> = starts(line, &cells)
                .into_iter()
                .map(|b| line[..b].chars().count())
                .collect();
            assert_eq!(offsets, header, "misaligned:\n{text}");
        }
        assert!(text.lines().all(|l| !l.ends_with(' ')), "trailing spaces");
    }

    #[test]
    fn a_short_row_gets_empty_cells() {
        let text = render(&["A", "B"], &[vec!["x".into()]]);
        assert_eq!(text, "A  B\nx\n");
    }
}
