//! Where in the config file a refused value was written, so a value error reads like a parse
//! error: the file, line and column, the line itself and a caret under the value.
//!
//! Validation works on the parsed settings and names what it refuses by its key path
//! (`upstream.max_conns`, `upstream.servers[1]`, `site 2: root`, `site 1: rule 3`,
//! `upstreams.php.max_idle`). This module walks the same path through toml's spanned document
//! tree. A key that is not in the file (a default, or a flag) is placed at the deepest part of
//! its path that is, e.g. the `[upstream]` header; a key with no part in the file has no place.

use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// One step of a key path: a key of a table, or an element of an array (`[[site]]` 2 is
/// element 1).
#[derive(Debug, PartialEq, Eq)]
enum Step<'k> {
    Key(&'k str),
    Index(usize),
}

/// A place in the file, ready to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// 1-based, as editors count.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    /// The line and a caret under the value, in toml's own layout for its parse errors.
    pub excerpt: String,
}

/// The place of `key` (a path as validation names it) in `text`; `None` when the text does
/// not parse or holds no part of the path.
pub(crate) fn place_of(text: &str, key: &str) -> Option<Place> {
    let span = span_of(text, key)?;
    Some(render(text, span))
}

fn span_of(text: &str, key: &str) -> Option<Range<usize>> {
    let document = DeTable::parse(text).ok()?.into_inner();
    let root = DeValue::Table(document);
    let mut value = &root;
    let mut found: Option<Range<usize>> = None;
    for step in steps(key) {
        let next: Option<(&Spanned<DeValue<'_>>, Range<usize>)> = match (step, value) {
            (Step::Key(name), DeValue::Table(table)) => table
                .iter()
                .find(|(entry, _)| entry.get_ref().as_ref() == name)
                .map(|(entry, item)| (item, entry.span())),
            (Step::Index(index), DeValue::Array(items)) => {
                items.get(index).map(|item| (item, item.span()))
            }
            _ => None,
        };
        let Some((item, key_span)) = next else {
            break;
        };
        // A value on one line is shown itself; one over many lines (a `[table]`, a long
        // array) by its key.
        let value_span = item.span();
        let one_line = text
            .get(value_span.clone())
            .is_some_and(|value| !value.contains('\n'));
        found = Some(if one_line { value_span } else { key_span });
        value = item.get_ref();
    }
    found
}

/// `site 2: rule 3` → site, [1], rule, [2]; `upstream.servers[1]` → upstream, servers, [1];
/// `upstreams.php: max_idle` → upstreams, php, max_idle.
fn steps(key: &str) -> Vec<Step<'_>> {
    let mut steps = Vec::new();
    for part in key.split(": ") {
        if let Some((table, number)) = part.split_once(' ') {
            // "site 2", "rule 3": the Nth of an array of tables, counted from 1.
            if let Ok(number) = number.parse::<usize>() {
                steps.push(Step::Key(table));
                steps.push(Step::Index(number.saturating_sub(1)));
                continue;
            }
        }
        for segment in part.split('.') {
            match segment.split_once('[') {
                Some((name, index)) => {
                    steps.push(Step::Key(name));
                    if let Ok(index) = index.trim_end_matches(']').parse() {
                        steps.push(Step::Index(index));
                    }
                }
                None => steps.push(Step::Key(segment)),
            }
        }
    }
    steps
}

fn render(text: &str, span: Range<usize>) -> Place {
    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map_or(0, |newline| newline + 1);
    let line_end = text[start..]
        .find('\n')
        .map_or(text.len(), |offset| start + offset);
    let line_text = text[line_start..line_end].trim_end_matches('\r');
    let line = text[..line_start].matches('\n').count() + 1;
    let column = text[line_start..start].chars().count() + 1;
    let width = text[start..span.end.clamp(start, line_end)]
        .chars()
        .count()
        .max(1);
    let gutter = " ".repeat(line.to_string().len());
    let excerpt = format!(
        "{gutter} |\n{line} | {line_text}\n{gutter} | {}{}\n",
        " ".repeat(column - 1),
        "^".repeat(width)
    );
    Place {
        line,
        column,
        excerpt,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const FILE: &str = "\
listen = [\"127.0.0.1:8080\"]

[upstream]
servers = [\"127.0.0.1:9000\", \"nowhere\"]
max_conns = 0

[upstreams.php]
servers = [\"127.0.0.1:9001\"]
max_idle = 9

[[site]]
root = \"/srv/a\"

[[site]]
root = \"/srv/b\"

[[site.rule]]
prefix = \"/a\"

[[site.rule]]
regex = \"(\"
";

    fn place(key: &str) -> Option<(usize, usize)> {
        place_of(FILE, key).map(|place| (place.line, place.column))
    }

    #[test]
    fn a_value_is_placed_at_the_value() {
        assert_eq!(place("upstream.max_conns"), Some((5, 13)));
        assert_eq!(place("listen"), Some((1, 10)));
    }

    #[test]
    fn array_elements_groups_sites_and_rules_are_found() {
        assert_eq!(place("upstream.servers[1]"), Some((4, 30)));
        assert_eq!(place("upstreams.php.max_idle"), Some((9, 12)));
        assert_eq!(place("upstreams.php: max_idle"), Some((9, 12)));
        assert_eq!(place("site 2: root"), Some((15, 8)));
        // An element of an array of tables is placed at its first line.
        assert_eq!(place("site 2: rule 2"), Some((20, 1)));
    }

    #[test]
    fn a_key_not_in_the_file_is_placed_at_its_table_or_nowhere() {
        // Not written: placed at `[upstream]`'s key.
        assert_eq!(place("upstream.max_idle"), Some((3, 1)));
        assert_eq!(place("acme.domains"), None);
        assert_eq!(place_of("not toml = = =", "listen"), None);
    }

    #[test]
    fn the_excerpt_underlines_the_value() {
        let place = place_of(FILE, "upstream.servers[1]").unwrap();
        assert_eq!(
            place.excerpt,
            "  |\n4 | servers = [\"127.0.0.1:9000\", \"nowhere\"]\n  |                              ^^^^^^^^^\n"
        );
    }
}
