//! The file list an `include=` pattern names, as glob(3) builds it for php-fpm
//! (`fpm_conf_ini_parser_include`: `GLOB_ERR | GLOB_MARK`, directories skipped): `*`, `?` and
//! `[...]` within one path component, hidden names matched only by a pattern that starts with
//! `.`, the whole list sorted.

use std::io;
use std::path::{Component, Path, PathBuf};

/// The files (not directories) matching `pattern`, sorted. Nothing matching is not an error
/// (php-fpm only warns); a directory that exists but cannot be listed is, as with `GLOB_ERR`.
pub(super) fn matching_files(pattern: &Path) -> io::Result<Vec<PathBuf>> {
    let mut candidates = vec![PathBuf::new()];
    for component in pattern.components() {
        let Component::Normal(part) = component else {
            candidates.iter_mut().for_each(|path| path.push(component));
            continue;
        };
        let part = part.to_string_lossy();
        if !has_wildcards(&part) {
            candidates.iter_mut().for_each(|path| path.push(&*part));
            continue;
        }
        let mut expanded = Vec::new();
        for directory in &candidates {
            let listing = if directory.as_os_str().is_empty() {
                Path::new(".")
            } else {
                directory
            };
            let entries = match std::fs::read_dir(listing) {
                Ok(entries) => entries,
                Err(error) if is_absent(&error) => continue,
                Err(error) => return Err(error),
            };
            for entry in entries {
                let name = entry?.file_name();
                let name = name.to_string_lossy();
                if name.starts_with('.') && !part.starts_with('.') {
                    continue;
                }
                if wildcard_matches(&part, &name) {
                    expanded.push(directory.join(&*name));
                }
            }
        }
        candidates = expanded;
    }
    candidates.retain(|path| std::fs::metadata(path).is_ok_and(|found| !found.is_dir()));
    candidates.sort();
    Ok(candidates)
}

fn is_absent(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

fn has_wildcards(part: &str) -> bool {
    part.contains(['*', '?', '['])
}

/// fnmatch(3) without flags over one path component.
pub(super) fn wildcard_matches(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    matches_from(&pattern, &name)
}

fn matches_from(pattern: &[char], name: &[char]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some(('*', rest)) => (0..=name.len()).any(|skip| matches_from(rest, &name[skip..])),
        Some((&first, rest)) => {
            let Some((&c, name_rest)) = name.split_first() else {
                return false;
            };
            let (matched, rest) = match first {
                '?' => (true, rest),
                '[' => match bracket(rest, c) {
                    Some((matched, after)) => (matched, after),
                    // An unclosed `[` is an ordinary character.
                    None => (c == '[', rest),
                },
                '\\' => match rest.split_first() {
                    Some((&escaped, after)) => (c == escaped, after),
                    None => (c == '\\', rest),
                },
                literal => (c == literal, rest),
            };
            matched && matches_from(rest, name_rest)
        }
    }
}

/// Matches `c` against the bracket expression after a `[`; returns the result and the pattern
/// after the closing `]`, or `None` when there is no closing `]`.
fn bracket(pattern: &[char], c: char) -> Option<(bool, &[char])> {
    let (negated, mut at) = match pattern.first() {
        Some('!' | '^') => (true, 1),
        _ => (false, 0),
    };
    let mut matched = false;
    let mut first = true;
    loop {
        let &low = pattern.get(at)?;
        if low == ']' && !first {
            return Some((matched != negated, &pattern[at + 1..]));
        }
        first = false;
        match (pattern.get(at + 1), pattern.get(at + 2)) {
            (Some('-'), Some(&high)) if high != ']' => {
                matched |= (low..=high).contains(&c);
                at += 3;
            }
            _ => {
                matched |= low == c;
                at += 1;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_like_fnmatch() {
        for (pattern, name, expected) in [
            ("*.conf", "www.conf", true),
            ("*.conf", "www.conf.bak", false),
            ("*", "", true),
            ("w?w.conf", "www.conf", true),
            ("w?w.conf", "ww.conf", false),
            ("[a-c]*.conf", "b.conf", true),
            ("[a-c]*.conf", "d.conf", false),
            ("[!a-c]*.conf", "d.conf", true),
            ("[^a-c]*.conf", "a.conf", false),
            ("[]x].conf", "].conf", true),
            ("[ab", "[ab", true),
            (r"\*.conf", "*.conf", true),
            (r"\*.conf", "a.conf", false),
            ("*a*b*", "xxaxxbxx", true),
            ("*a*b*", "xxbxxaxx", false),
        ] {
            assert_eq!(
                wildcard_matches(pattern, name),
                expected,
                "{pattern} vs {name}"
            );
        }
    }

    #[test]
    fn files_come_sorted_without_directories_or_hidden_names() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b.conf", "a.conf", ".hidden.conf", "c.txt"] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        std::fs::create_dir(dir.path().join("d.conf")).unwrap();
        let found = matching_files(&dir.path().join("*.conf")).unwrap();
        assert_eq!(
            found,
            vec![dir.path().join("a.conf"), dir.path().join("b.conf")]
        );
        let hidden = matching_files(&dir.path().join(".*.conf")).unwrap();
        assert_eq!(hidden, vec![dir.path().join(".hidden.conf")]);
    }

    #[test]
    fn wildcards_in_directory_components_and_literal_paths() {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["pool-1", "pool-2", "other"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
            std::fs::write(dir.path().join(sub).join("www.conf"), "").unwrap();
        }
        let found = matching_files(&dir.path().join("pool-*/www.conf")).unwrap();
        assert_eq!(
            found,
            vec![
                dir.path().join("pool-1/www.conf"),
                dir.path().join("pool-2/www.conf")
            ]
        );
        let literal = matching_files(&dir.path().join("other/www.conf")).unwrap();
        assert_eq!(literal, vec![dir.path().join("other/www.conf")]);
        assert!(matching_files(&dir.path().join("missing/*.conf"))
            .unwrap()
            .is_empty());
        assert!(matching_files(&dir.path().join("other/www.conf/*"))
            .unwrap()
            .is_empty());
    }
}
