//! One line of php-fpm's ini dialect, decoded: a section header, a `key = value` entry or
//! nothing. php-fpm hands its files to the Zend ini scanner one line at a time
//! (`fpm_conf_load_ini_file` in php-src `sapi/fpm/fpm/fpm_conf.c`), so no value spans lines and a
//! line can be decoded alone. What the entries mean is left to the caller.

/// What one line holds.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum IniLine<'a> {
    /// Blank, or only a comment.
    Nothing,
    /// `[name]`, with quotes and `${VAR}` already decoded.
    Section(String),
    /// `key = value`; the key trimmed as written (`php_value[x]` included), the value decoded.
    Entry { key: &'a str, value: String },
}

/// Looks up an environment variable for `${VAR}`; `None` when it is unset.
pub(super) type Environment<'e> = &'e dyn Fn(&str) -> Option<String>;

/// Decodes one line. The error is a message for the caller to place at `path:line`.
pub(super) fn parse_line<'a>(text: &'a str, env: Environment<'_>) -> Result<IniLine<'a>, String> {
    let text = text.trim();
    // `#` comments were dropped from PHP's ini scanner in 7.0 (php-fpm 8 refuses them), but a
    // reader that only looks for one number has no reason to be stricter than that.
    if text.is_empty() || text.starts_with(';') || text.starts_with('#') {
        return Ok(IniLine::Nothing);
    }
    if let Some(header) = text.strip_prefix('[') {
        let (name, rest) = decode(header, Some(']'), env)?;
        let Some(rest) = rest else {
            return Err(format!("section header `{text}` has no closing `]`"));
        };
        let rest = rest.trim_start();
        if !rest.is_empty() && !rest.starts_with(';') {
            return Err(format!("unexpected `{rest}` after the section header"));
        }
        if name.is_empty() {
            return Err("empty section name `[]`".to_owned());
        }
        return Ok(IniLine::Section(name));
    }
    let Some((key, value)) = text.split_once('=') else {
        return Err(format!(
            "expected `key = value`, `[section]` or a `;` comment, found `{text}`"
        ));
    };
    let key = key.trim();
    if key.is_empty() {
        return Err(format!("no key before `=` in `{text}`"));
    }
    let (value, _) = decode(value, None, env)?;
    Ok(IniLine::Entry { key, value })
}

/// Decodes a value the way the scanner's normal mode does: `"double"` quotes (with `\"` and `\\`
/// escapes and `${VAR}`), `'single'` quotes (literal), bare text (with `${VAR}`, trimmed), all
/// concatenated; an unquoted `;` starts a comment. With `stop`, decoding ends at the first
/// unquoted `stop` and the text after it is returned too.
fn decode<'t>(
    text: &'t str,
    stop: Option<char>,
    env: Environment<'_>,
) -> Result<(String, Option<&'t str>), String> {
    let mut value = String::new();
    // Where unquoted trailing whitespace starts in `value`, to trim it at the end.
    let mut trailing_space: Option<usize> = None;
    let text = text.trim_start();
    let mut chars = text.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            c if Some(c) == stop => {
                value.truncate(trailing_space.unwrap_or(value.len()));
                return Ok((value, Some(&text[at + c.len_utf8()..])));
            }
            ';' => break,
            '"' => {
                read_double_quoted(&mut chars, &mut value, env)?;
                trailing_space = None;
            }
            '\'' => {
                let rest = &text[at + 1..];
                let end = rest
                    .find('\'')
                    .ok_or_else(|| format!("unterminated single quote in `{text}`"))?;
                value.push_str(&rest[..end]);
                // Skip the quoted text and the closing quote.
                chars.nth(rest[..end].chars().count());
                trailing_space = None;
            }
            '$' if text[at + 1..].starts_with('{') => {
                chars.next();
                expand_variable(&mut chars, &mut value, env)?;
                trailing_space = None;
            }
            c if c.is_whitespace() => {
                trailing_space.get_or_insert(value.len());
                value.push(c);
            }
            c => {
                value.push(c);
                trailing_space = None;
            }
        }
    }
    value.truncate(trailing_space.unwrap_or(value.len()));
    Ok((value, None))
}

fn read_double_quoted(
    chars: &mut std::str::CharIndices<'_>,
    value: &mut String,
    env: Environment<'_>,
) -> Result<(), String> {
    let mut dollar = false;
    while let Some((_, c)) = chars.next() {
        match c {
            '"' => return Ok(()),
            '\\' => match chars.next() {
                Some((_, escaped @ ('"' | '\\'))) => value.push(escaped),
                Some((_, other)) => {
                    value.push('\\');
                    value.push(other);
                }
                None => break,
            },
            '{' if dollar => {
                value.pop();
                expand_variable(chars, value, env)?;
            }
            c => value.push(c),
        }
        dollar = c == '$';
    }
    Err("unterminated double quote".to_owned())
}

/// Expands `${NAME}` or PHP 8.3's `${NAME:-default}`; `chars` is just past the `{`. An unset
/// variable expands to nothing, as in PHP.
fn expand_variable(
    chars: &mut std::str::CharIndices<'_>,
    value: &mut String,
    env: Environment<'_>,
) -> Result<(), String> {
    let mut inner = String::new();
    for (_, c) in chars.by_ref() {
        if c == '}' {
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name.trim(), Some(default)),
                None => (inner.trim(), None),
            };
            let found = env(name).filter(|found| !found.is_empty() || default.is_none());
            value.push_str(found.as_deref().or(default).unwrap_or(""));
            return Ok(());
        }
        inner.push(c);
    }
    Err(format!("`${{{inner}` has no closing `}}`"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "RUN" => Some("/run/php".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn value(line: &str) -> String {
        match parse_line(line, &env) {
            Ok(IniLine::Entry { value, .. }) => value,
            other => panic!("`{line}` gave {other:?}"),
        }
    }

    #[test]
    fn comments_and_blank_lines_hold_nothing() {
        for line in [
            "",
            "   ",
            "; a comment",
            "  ;indented",
            "# hash comment",
            "\t",
        ] {
            assert_eq!(parse_line(line, &env), Ok(IniLine::Nothing), "{line:?}");
        }
    }

    #[test]
    fn sections_decode_quotes_and_allow_a_trailing_comment() {
        assert_eq!(
            parse_line("[www]", &env),
            Ok(IniLine::Section("www".into()))
        );
        assert_eq!(
            parse_line(" [ \"my pool\" ] ; x", &env),
            Ok(IniLine::Section("my pool".into()))
        );
        assert_eq!(
            parse_line("[${RUN}]", &env),
            Ok(IniLine::Section("/run/php".into()))
        );
    }

    #[test]
    fn entries_keep_the_key_as_written_and_trim_the_value() {
        assert_eq!(
            parse_line("  php_value[memory_limit]  =  32M  ", &env),
            Ok(IniLine::Entry {
                key: "php_value[memory_limit]",
                value: "32M".into()
            })
        );
        assert_eq!(value("access.format = %R - %u %t"), "%R - %u %t");
        assert_eq!(value("listen ="), "");
    }

    #[test]
    fn unquoted_semicolon_starts_a_comment_but_quoted_one_does_not() {
        assert_eq!(value("pm.max_children = 5 ; five workers"), "5");
        assert_eq!(value("pm.max_children = 5;"), "5");
        assert_eq!(value(r#"ping.response = "a;b" ; c"#), "a;b");
        assert_eq!(value("ping.response = 'a;b'"), "a;b");
    }

    #[test]
    fn variables_expand_outside_single_quotes() {
        assert_eq!(value("listen = ${RUN}/$pool.sock"), "/run/php/$pool.sock");
        assert_eq!(value(r#"listen = "${RUN}/x.sock""#), "/run/php/x.sock");
        assert_eq!(value("listen = '${RUN}/x.sock'"), "${RUN}/x.sock");
        assert_eq!(value("listen = ${UNSET}/x.sock"), "/x.sock");
        assert_eq!(value("listen = ${UNSET:-/tmp}/x.sock"), "/tmp/x.sock");
        assert_eq!(value("listen = ${EMPTY:-/tmp}/x.sock"), "/tmp/x.sock");
        assert_eq!(value("listen = ${RUN:-/tmp}/x.sock"), "/run/php/x.sock");
    }

    #[test]
    fn quoted_parts_concatenate_and_unescape() {
        assert_eq!(value(r#"a = "x" 'y' z"#), "x y z");
        assert_eq!(value(r#"a = "say \"hi\" \\ \n""#), r#"say "hi" \ \n"#);
        assert_eq!(value(r#"a = "  padded  ""#), "  padded  ");
    }

    #[test]
    fn malformed_lines_are_refused_with_a_reason() {
        for (line, reason) in [
            ("just words", "expected `key = value`"),
            ("= 5", "no key"),
            ("[www", "no closing `]`"),
            ("[www ; ]", "no closing `]`"),
            ("[www] extra", "unexpected `extra`"),
            ("[]", "empty section"),
            (r#"a = "open"#, "unterminated double quote"),
            ("a = 'open", "unterminated single quote"),
            ("a = ${OPEN", "no closing `}`"),
        ] {
            let error = parse_line(line, &env).unwrap_err();
            assert!(error.contains(reason), "{line:?}: {error}");
        }
    }
}
