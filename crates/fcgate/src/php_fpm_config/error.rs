//! Why php-fpm's configuration gave no `pm.max_children`: every error names the file, and the
//! line when there is one, so the operator knows what to fix.

use std::path::PathBuf;

use super::{ConfigLine, MAX_INCLUDE_DEPTH};

/// Why php-fpm's configuration gave no `pm.max_children`.
#[derive(Debug, thiserror::Error)]
pub enum PhpFpmConfigError {
    /// A config file could not be read.
    #[error("cannot read php-fpm config {}{}: {source}", .path.display(), included(.included_from))]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The `include=` line that named it, if any.
        included_from: Option<ConfigLine>,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A line php-fpm's ini reader would not accept either.
    #[error("{at}: {message}")]
    Syntax {
        /// Where.
        at: ConfigLine,
        /// What is wrong.
        message: String,
    },
    /// A setting fcgate reads holds something that is not a number.
    #[error("{at}: {key} = `{value}` is not a whole number")]
    InvalidNumber {
        /// Where.
        at: ConfigLine,
        /// The setting.
        key: String,
        /// The value as decoded.
        value: String,
    },
    /// Includes nested deeper than php-fpm allows, or an include cycle.
    #[error("{at}: includes nest more than {MAX_INCLUDE_DEPTH} files deep (an include cycle?)")]
    IncludeTooDeep {
        /// The `include=` line that went one level too far.
        at: ConfigLine,
    },
    /// A directory an `include=` pattern walks through cannot be listed.
    #[error("{at}: cannot expand include pattern `{pattern}`: {source}")]
    Include {
        /// The `include=` line.
        at: ConfigLine,
        /// The pattern as resolved.
        pattern: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// No `[pool]` section anywhere.
    #[error("{} defines no php-fpm pool{}", .path.display(), unmatched(.unmatched_includes))]
    NoPools {
        /// The file given.
        path: PathBuf,
        /// `include=` patterns that matched no file.
        unmatched_includes: Vec<String>,
    },
    /// The pool named in fcgate's config does not exist.
    #[error("no php-fpm pool named `{name}`; pools: {}", list(.pools))]
    UnknownPool {
        /// The name asked for.
        name: String,
        /// Every pool, with its `listen`.
        pools: Vec<String>,
    },
    /// Several pools, none listening where fcgate connects.
    #[error("no php-fpm pool listens on {address}; name one of: {}", list(.pools))]
    NoMatchingPool {
        /// Where fcgate connects.
        address: String,
        /// Every pool, with its `listen`.
        pools: Vec<String>,
    },
    /// More than one pool listens where fcgate connects.
    #[error("several php-fpm pools listen on {address}, name one of: {}", list(.pools))]
    AmbiguousPool {
        /// Where fcgate connects.
        address: String,
        /// The pools that match, with their `listen`.
        pools: Vec<String>,
    },
    /// The pool sets no `pm.max_children` (php-fpm itself would refuse to start).
    #[error("php-fpm pool [{pool}] in {} sets no pm.max_children", .defined_in.display())]
    NoMaxChildren {
        /// The pool.
        pool: String,
        /// Its file.
        defined_in: PathBuf,
    },
    /// `pm.max_children = 0` (php-fpm itself would refuse to start).
    #[error("{at}: pm.max_children of pool [{pool}] is 0; php-fpm needs at least 1")]
    ZeroMaxChildren {
        /// The pool.
        pool: String,
        /// Where it is set.
        at: ConfigLine,
    },
}

fn included(from: &Option<ConfigLine>) -> String {
    from.as_ref()
        .map(|at| format!(" (included at {at})"))
        .unwrap_or_default()
}

fn unmatched(patterns: &[String]) -> String {
    if patterns.is_empty() {
        return String::new();
    }
    format!(
        " (include patterns matching no file: {})",
        patterns.join(", ")
    )
}

fn list(pools: &[String]) -> String {
    if pools.is_empty() {
        return "(none)".to_owned();
    }
    pools.join("; ")
}
