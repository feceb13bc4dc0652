//! The replacement text of `rewrite` and of `return`'s `location`: literal text with `$1`–`$9`,
//! `${name}` and `${10}` captures of the rule's regex (`$0`, the whole match, for every rule),
//! `$$` for a dollar sign, and nginx's query convention: a `?` starts a new query string, to
//! which the request's own is appended unless the replacement ends in `?`; without a `?` the
//! request's query is kept as it was.
//!
//! Captures come from the decoded path. Where they land decides their escaping: a rewritten
//! path stays decoded (it is routed again as such, never decoded twice), a redirect's path and
//! any query string get them percent-encoded, so a capture can neither end the path early nor
//! add a query parameter (`/a%3Fadmin=1` must not become `?admin=1`).

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// A parsed replacement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    path: Vec<Piece>,
    /// The part after the first `?`, without the trailing `?` that drops the request's query.
    query: Option<Vec<Piece>>,
    /// Whether the request's query string follows (after `&` when there is a new one).
    keep_query: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Group(usize),
    Named(String),
}

/// How the path part is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathForm {
    /// Decoded: a rewrite's result, routed again without a second decoding.
    Decoded,
    /// Percent-encoded: a `Location` URL.
    Encoded,
}

/// The groups a template may name, from its rule's regex.
pub trait Groups {
    /// The text of group `index` (0: the whole match); `None` when it did not take part.
    fn group(&self, index: usize) -> Option<&str>;
    /// The text of the group called `name`.
    fn named(&self, name: &str) -> Option<&str>;
}

/// The result: a path or URL, and what becomes of the query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expanded {
    /// The path (or absolute URL) part.
    pub path: String,
    /// The new query string; `None`: the request's own, unchanged.
    pub query: Option<String>,
}

impl Template {
    /// Parses `text`; the error says what is wrong. `group_count` (the regex's groups plus the
    /// whole match) and `has_name` say which references exist, so a typo is a config error
    /// rather than an empty string at run time.
    pub fn parse(
        text: &str,
        group_count: usize,
        has_name: &dyn Fn(&str) -> bool,
    ) -> Result<Template, String> {
        // A final `?` drops the request's query; the first `?` before it starts a new one.
        let (text, keep_query) = match text.strip_suffix('?') {
            Some(text) => (text, false),
            None => (text, true),
        };
        let (path, query) = match text.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None if keep_query => (text, None),
            None => (text, Some("")),
        };
        let pieces = |part: &str| parse_pieces(part, group_count, has_name);
        Ok(Template {
            path: pieces(path)?,
            query: query.map(pieces).transpose()?,
            keep_query,
        })
    }

    /// Fills in the captures. `request_query` is the query string in force (the request's, or
    /// an earlier rewrite's).
    pub fn expand(
        &self,
        groups: &dyn Groups,
        path_form: PathForm,
        request_query: Option<&str>,
    ) -> Expanded {
        let mut path = String::new();
        for piece in &self.path {
            match (piece.resolve(groups), path_form) {
                (Resolved::Literal(text), _) | (Resolved::Capture(text), PathForm::Decoded) => {
                    path.push_str(text)
                }
                (Resolved::Capture(text), PathForm::Encoded) => {
                    path.extend(utf8_percent_encode(text, PATH_CAPTURE_ESCAPES))
                }
            }
        }
        let request_query = request_query.filter(|query| !query.is_empty());
        let query = match &self.query {
            None => None,
            Some(pieces) => {
                let mut query = String::new();
                for piece in pieces {
                    match piece.resolve(groups) {
                        Resolved::Literal(text) => query.push_str(text),
                        Resolved::Capture(text) => {
                            query.extend(utf8_percent_encode(text, QUERY_CAPTURE_ESCAPES))
                        }
                    }
                }
                if let (true, Some(original)) = (self.keep_query, request_query) {
                    if !query.is_empty() {
                        query.push('&');
                    }
                    query.push_str(original);
                }
                Some(query)
            }
        };
        Expanded { path, query }
    }

    /// Whether the template refers to any capture (so the regex must report them).
    pub fn uses_captures(&self) -> bool {
        self.path
            .iter()
            .chain(self.query.iter().flatten())
            .any(|piece| !matches!(piece, Piece::Literal(_)))
    }
}

enum Resolved<'a> {
    Literal(&'a str),
    Capture(&'a str),
}

impl Piece {
    fn resolve<'a>(&'a self, groups: &'a dyn Groups) -> Resolved<'a> {
        match self {
            Piece::Literal(text) => Resolved::Literal(text),
            // A group that did not take part in the match is empty, as in nginx and PCRE.
            Piece::Group(index) => Resolved::Capture(groups.group(*index).unwrap_or("")),
            Piece::Named(name) => Resolved::Capture(groups.named(name).unwrap_or("")),
        }
    }
}

fn parse_pieces(
    text: &str,
    group_count: usize,
    has_name: &dyn Fn(&str) -> bool,
) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        literal.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        let (piece, consumed) = if let Some(braced) = after.strip_prefix('{') {
            let Some((name, _)) = braced.split_once('}') else {
                return Err(format!("`${{` without its `}}` in `{text}`"));
            };
            let piece = match name.parse::<usize>() {
                Ok(index) => Piece::Group(index),
                Err(_) => Piece::Named(name.to_owned()),
            };
            (Some(piece), name.len() + 2)
        } else {
            match after.chars().next() {
                Some('$') => {
                    literal.push('$');
                    (None, 1)
                }
                Some(digit @ '0'..='9') => (Some(Piece::Group(usize::from(digit as u8 - b'0'))), 1),
                _ => {
                    return Err(format!(
                        "`$` must be followed by a group number, `{{name}}` or another `$` \
                         (for a literal `$`) in `{text}`"
                    ))
                }
            }
        };
        if let Some(piece) = piece {
            match &piece {
                Piece::Group(index) if *index >= group_count => {
                    return Err(format!(
                        "`${index}` in `{text}`: the regex has {} group(s)",
                        group_count.saturating_sub(1)
                    ))
                }
                Piece::Named(name) if !has_name(name) => {
                    return Err(format!(
                        "`${{{name}}}` in `{text}`: the regex has no such group"
                    ))
                }
                _ => {}
            }
            if !literal.is_empty() {
                pieces.push(Piece::Literal(std::mem::take(&mut literal)));
            }
            pieces.push(piece);
        }
        rest = &after[consumed..];
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        pieces.push(Piece::Literal(literal));
    }
    Ok(pieces)
}

/// A capture in a redirect's path: everything but unreserved characters, `/` and a few safe
/// sub-delimiters is escaped; `?` and `#` above all.
const PATH_CAPTURE_ESCAPES: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/')
    .remove(b'!')
    .remove(b'*')
    .remove(b'(')
    .remove(b')')
    .remove(b':')
    .remove(b'@')
    .remove(b',');

/// A capture in a query string: `&`, `=`, `+`, `#` and `%` escaped, so it stays one value.
const QUERY_CAPTURE_ESCAPES: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/')
    .remove(b':')
    .remove(b'@')
    .remove(b',');

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    struct Fixed(Vec<Option<&'static str>>);

    impl Groups for Fixed {
        fn group(&self, index: usize) -> Option<&str> {
            self.0.get(index).copied().flatten()
        }
        fn named(&self, name: &str) -> Option<&str> {
            (name == "page").then_some("Start Page")
        }
    }

    fn parse(text: &str) -> Template {
        Template::parse(text, 3, &|name| name == "page").unwrap()
    }

    fn expand(text: &str, form: PathForm, query: Option<&str>) -> Expanded {
        let groups = Fixed(vec![Some("/_media/a b.png"), Some("a b.png"), None]);
        parse(text).expand(&groups, form, query)
    }

    #[test]
    fn without_a_question_mark_the_query_is_kept() {
        let expanded = expand("/lib/exe/fetch.php/$1", PathForm::Decoded, Some("w=5"));
        assert_eq!(expanded.path, "/lib/exe/fetch.php/a b.png");
        assert_eq!(expanded.query, None);
    }

    #[test]
    fn a_new_query_gets_the_old_one_appended_unless_it_ends_in_a_question_mark() {
        let expanded = expand("/fetch.php?media=$1", PathForm::Decoded, Some("w=5"));
        assert_eq!(expanded.path, "/fetch.php");
        assert_eq!(expanded.query.as_deref(), Some("media=a%20b.png&w=5"));
        let expanded = expand("/fetch.php?media=$1?", PathForm::Decoded, Some("w=5"));
        assert_eq!(expanded.query.as_deref(), Some("media=a%20b.png"));
        let expanded = expand("/fetch.php?", PathForm::Decoded, Some("w=5"));
        assert_eq!(expanded.query.as_deref(), Some(""));
        let expanded = expand("/fetch.php?id=${page}", PathForm::Decoded, None);
        assert_eq!(expanded.query.as_deref(), Some("id=Start%20Page"));
    }

    #[test]
    fn captures_cannot_add_query_parameters_or_end_a_url() {
        let groups = Fixed(vec![Some("x"), Some("a&admin=1?#"), None]);
        let expanded = parse("/new/$1?q=$1").expand(&groups, PathForm::Encoded, None);
        assert_eq!(expanded.path, "/new/a%26admin%3D1%3F%23");
        assert_eq!(expanded.query.as_deref(), Some("q=a%26admin%3D1%3F%23"));
    }

    #[test]
    fn unmatched_groups_are_empty_and_dollars_escape() {
        let expanded = expand("/p/$2/$$/${0}", PathForm::Decoded, None);
        assert_eq!(expanded.path, "/p//$//_media/a b.png");
    }

    #[test]
    fn references_that_cannot_exist_are_refused() {
        let has_page = |name: &str| name == "page";
        for text in ["/a/$3", "/a/${9}", "/a/${nope}", "/a/$x", "/a/$", "/a/${1"] {
            assert!(Template::parse(text, 3, &has_page).is_err(), "{text}");
        }
        assert!(!parse("/plain").uses_captures());
        assert!(parse("/a/$1").uses_captures());
    }
}
