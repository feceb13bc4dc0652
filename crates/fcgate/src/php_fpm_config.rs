//! Reads php-fpm's own configuration to learn `pm.max_children` of the pool fcgate talks to.
//!
//! php-fpm answers FCGI_GET_VALUES with `FCGI_MPXS_CONNS` only, so its worker count has to come
//! from its config: php-fpm.conf with its `include=` files, or one pool file. The rules follow
//! php-src `sapi/fpm/fpm/fpm_conf.c`: later settings win, a `[name]` seen again reopens that pool
//! (names compare case-insensitively), the current section carries on into included files, and
//! `$pool` in `listen` is the pool's name. This module reads files and decides; wiring the
//! figure into the upstream cap and logging it belong to the config loader.

mod error;
mod include_glob;
mod ini_line;
mod listen;

use std::fmt;
use std::path::{Path, PathBuf};

use fcgi::net::Address;

pub use self::error::PhpFpmConfigError;
use self::ini_line::{Environment, IniLine};

/// php-fpm refuses a chain of more than 5 files (`ini_recursion` in `fpm_conf_load_ini_file`);
/// the same limit stops an include cycle.
const MAX_INCLUDE_DEPTH: usize = 5;

/// One `[pool]` section of php-fpm's configuration, with the settings fcgate cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FpmPool {
    /// The section name, as first written.
    pub name: String,
    /// `listen`, with `$pool` and `${VAR}` expanded; a relative unix path is joined to the
    /// pool's `prefix` when that is absolute, as php-fpm does.
    pub listen: Option<String>,
    /// `pm`, lowercased: `static`, `dynamic` or `ondemand`.
    pub pm: Option<String>,
    /// `pm.max_children`: how many workers, hence connections, the pool can serve at once.
    pub max_children: Option<u32>,
    /// `pm.max_requests`: requests a worker serves before it exits (0: no limit).
    pub max_requests: Option<u64>,
    /// `pm.process_idle_timeout` as written (`10s`, `2m`).
    pub process_idle_timeout: Option<String>,
    /// The file holding the pool's first `[name]` header.
    pub defined_in: PathBuf,
    /// Where the `pm.max_children` in effect was set; it may be another file than
    /// `defined_in` (an override file that reopens the section).
    pub max_children_source: Option<ConfigLine>,
}

/// A line in a config file, shown as `path:line`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigLine {
    /// The file.
    pub path: PathBuf,
    /// 1-based line number.
    pub line: usize,
}

impl fmt::Display for ConfigLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.path.display(), self.line)
    }
}

/// Reads a php-fpm config file: either php-fpm.conf (follows `include=` globs, relative to the
/// including file's directory or the prefix, as php-fpm does) or a single pool file. Later
/// definitions of a key in the same pool override earlier ones, as in php-fpm.
///
/// php-fpm resolves a relative include against its prefix (`-p`, else the build's, e.g.
/// `/usr/local` in the Docker images' `include=etc/php-fpm.d/*.conf`). The prefix is not in the
/// files, so the pattern is tried against the including file's directory, then each directory
/// above it; the first that matches a file wins.
pub fn read_pools(path: &Path) -> Result<Vec<FpmPool>, PhpFpmConfigError> {
    read_pools_with_env(path, &|name| std::env::var(name).ok())
}

fn read_pools_with_env(
    path: &Path,
    env: Environment<'_>,
) -> Result<Vec<FpmPool>, PhpFpmConfigError> {
    let mut reader = Reader {
        env,
        pools: Vec::new(),
        current: None,
        unmatched_includes: Vec::new(),
    };
    reader.read_file(path, None, 0)?;
    if reader.pools.is_empty() {
        return Err(PhpFpmConfigError::NoPools {
            path: path.to_owned(),
            unmatched_includes: reader.unmatched_includes,
        });
    }
    Ok(reader.pools.into_iter().map(PoolDraft::finish).collect())
}

/// The pool serving `address`: the one named `pool` if given, else the one whose `listen`
/// matches the address (unix path equal; TCP: `127.0.0.1:9000`, `9000` (= all addresses),
/// `[::1]:9000`, `0.0.0.0:9000` all match a connect to 127.0.0.1:9000 / localhost:9000 on the
/// same port), else the only pool if there is exactly one.
///
/// Loopback families are kept apart: `listen = [::1]:9000` does not match a connect to
/// `127.0.0.1:9000` (that socket cannot take it), though both match `localhost:9000`.
pub fn pool_for<'a>(
    pools: &'a [FpmPool],
    address: &Address,
    pool: Option<&str>,
) -> Result<&'a FpmPool, PhpFpmConfigError> {
    if let Some(name) = pool {
        return pools
            .iter()
            .find(|candidate| candidate.name.eq_ignore_ascii_case(name))
            .ok_or_else(|| PhpFpmConfigError::UnknownPool {
                name: name.to_owned(),
                pools: pools.iter().map(summary).collect(),
            });
    }
    let matching: Vec<&FpmPool> = pools.iter().filter(|p| listens_on(p, address)).collect();
    match (matching.as_slice(), pools) {
        ([found], _) => Ok(found),
        // The only pool, even if its `listen` reads differently: behind a container's port
        // mapping or a socket mounted elsewhere, what php-fpm binds and what fcgate dials differ.
        ([], [only]) => Ok(only),
        ([], _) => Err(PhpFpmConfigError::NoMatchingPool {
            address: address.to_string(),
            pools: pools.iter().map(summary).collect(),
        }),
        (several, _) => Err(PhpFpmConfigError::AmbiguousPool {
            address: address.to_string(),
            pools: several.iter().map(|pool| summary(pool)).collect(),
        }),
    }
}

/// Convenience: the pm.max_children of the pool serving `address`, with a description for the
/// log such as "pm.max_children = 5 in /etc/php/8.2/fpm/pool.d/www.conf:113 [www]".
pub fn max_children_for(
    path: &Path,
    address: &Address,
    pool: Option<&str>,
) -> Result<(u32, String), PhpFpmConfigError> {
    limits_for(path, address, pool).map(|limits| (limits.max_children, limits.description))
}

/// What fcgate takes from the php-fpm pool serving a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FpmLimits {
    /// `pm.max_children`: the connection cap.
    pub max_children: u32,
    /// Where it came from, for the log.
    pub description: String,
    /// `pm.max_requests` when set and not 0: requests a worker serves before it exits.
    pub max_requests: Option<u64>,
}

/// The limits of the php-fpm pool serving `address` (see [`pool_for`]).
pub fn limits_for(
    path: &Path,
    address: &Address,
    pool: Option<&str>,
) -> Result<FpmLimits, PhpFpmConfigError> {
    let pools = read_pools(path)?;
    let found = pool_for(&pools, address, pool)?;
    let (Some(max_children), Some(source)) = (found.max_children, &found.max_children_source)
    else {
        return Err(PhpFpmConfigError::NoMaxChildren {
            pool: found.name.clone(),
            defined_in: found.defined_in.clone(),
        });
    };
    if max_children == 0 {
        return Err(PhpFpmConfigError::ZeroMaxChildren {
            pool: found.name.clone(),
            at: source.clone(),
        });
    }
    let mut description = format!(
        "pm.max_children = {max_children} in {source} [{}]",
        found.name
    );
    if pool.is_none() && !listens_on(found, address) {
        let listen = found.listen.as_deref().unwrap_or("unset");
        description.push_str(&format!(
            " (the only pool; its listen = {listen} does not name {address})"
        ));
    }
    Ok(FpmLimits {
        max_children,
        description,
        max_requests: found.max_requests.filter(|requests| *requests > 0),
    })
}

fn listens_on(pool: &FpmPool, address: &Address) -> bool {
    pool.listen
        .as_deref()
        .is_some_and(|listen| listen::serves(listen, address))
}

fn summary(pool: &FpmPool) -> String {
    format!(
        "[{}] listen = {} ({})",
        pool.name,
        pool.listen.as_deref().unwrap_or("unset"),
        pool.defined_in.display()
    )
}

/// A pool being read, with what is needed only to finish it.
struct PoolDraft {
    pool: FpmPool,
    prefix: Option<String>,
}

impl PoolDraft {
    /// What `fpm_conf_process_all_pools` does to `listen`: a relative unix path hangs off the
    /// pool's prefix. A relative prefix hangs off php-fpm's own, which is unknown here.
    fn finish(mut self) -> FpmPool {
        let prefix = self.prefix.as_deref().map(Path::new);
        if let (Some(listen), Some(prefix)) = (&self.pool.listen, prefix) {
            let is_tcp = listen.contains(':') || listen.bytes().all(|b| b.is_ascii_digit());
            if !is_tcp && Path::new(listen).is_relative() && prefix.is_absolute() {
                self.pool.listen = Some(prefix.join(listen).display().to_string());
            }
        }
        self.pool
    }
}

/// php-fpm's reading state, which (as in `fpm_conf.c`) spans included files.
struct Reader<'e> {
    env: Environment<'e>,
    pools: Vec<PoolDraft>,
    /// Index into `pools` of the section being read; `None` in `[global]`.
    current: Option<usize>,
    unmatched_includes: Vec<String>,
}

impl Reader<'_> {
    fn read_file(
        &mut self,
        path: &Path,
        included_from: Option<&ConfigLine>,
        depth: usize,
    ) -> Result<(), PhpFpmConfigError> {
        let bytes = std::fs::read(path).map_err(|source| PhpFpmConfigError::Unreadable {
            path: path.to_owned(),
            included_from: included_from.cloned(),
            source,
        })?;
        let text = String::from_utf8_lossy(&bytes);
        for (index, line) in text.lines().enumerate() {
            let at = ConfigLine {
                path: path.to_owned(),
                line: index + 1,
            };
            match ini_line::parse_line(line, self.env) {
                Ok(IniLine::Nothing) => {}
                Ok(IniLine::Section(name)) => self.enter_section(name, path),
                // Case-sensitive, unlike every other key (`fpm_conf_ini_parser_entry`).
                Ok(IniLine::Entry {
                    key: "include",
                    value,
                }) => self.include(&value, &at, depth)?,
                Ok(IniLine::Entry { key, value }) => self.set(key, value, at)?,
                Err(message) => return Err(PhpFpmConfigError::Syntax { at, message }),
            }
        }
        Ok(())
    }

    fn enter_section(&mut self, name: String, path: &Path) {
        if name.eq_ignore_ascii_case("global") {
            self.current = None;
            return;
        }
        let existing = self
            .pools
            .iter()
            .position(|draft| draft.pool.name.eq_ignore_ascii_case(&name));
        self.current = Some(existing.unwrap_or_else(|| {
            self.pools.push(PoolDraft {
                pool: FpmPool {
                    name,
                    listen: None,
                    pm: None,
                    max_children: None,
                    max_requests: None,
                    process_idle_timeout: None,
                    defined_in: path.to_owned(),
                    max_children_source: None,
                },
                prefix: None,
            });
            self.pools.len() - 1
        }));
    }

    fn include(
        &mut self,
        pattern: &str,
        at: &ConfigLine,
        depth: usize,
    ) -> Result<(), PhpFpmConfigError> {
        if depth + 1 >= MAX_INCLUDE_DEPTH {
            return Err(PhpFpmConfigError::IncludeTooDeep { at: at.clone() });
        }
        let files = self.include_files(pattern, at)?;
        if files.is_empty() {
            self.unmatched_includes.push(format!("{pattern} ({at})"));
        }
        for file in files {
            self.read_file(&file, Some(at), depth + 1)?;
        }
        Ok(())
    }

    fn include_files(
        &self,
        pattern: &str,
        at: &ConfigLine,
    ) -> Result<Vec<PathBuf>, PhpFpmConfigError> {
        let pattern_path = Path::new(pattern);
        let bases: Vec<PathBuf> = if pattern_path.is_absolute() {
            vec![PathBuf::new()]
        } else {
            let directory = match at.path.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent,
                _ => Path::new("."),
            };
            let directory =
                std::fs::canonicalize(directory).unwrap_or_else(|_| directory.to_owned());
            directory.ancestors().map(Path::to_path_buf).collect()
        };
        for (index, base) in bases.iter().enumerate() {
            let resolved = base.join(pattern_path);
            match include_glob::matching_files(&resolved) {
                Ok(files) if !files.is_empty() => return Ok(files),
                Ok(_) => {}
                // Only the first place is certain; a guessed prefix that cannot be listed is
                // just not the prefix.
                Err(source) if index == 0 => {
                    return Err(PhpFpmConfigError::Include {
                        at: at.clone(),
                        pattern: resolved.display().to_string(),
                        source,
                    })
                }
                Err(_) => {}
            }
        }
        Ok(Vec::new())
    }

    fn set(&mut self, key: &str, value: String, at: ConfigLine) -> Result<(), PhpFpmConfigError> {
        let Some(index) = self.current else {
            return Ok(());
        };
        let draft = &mut self.pools[index];
        let pool = &mut draft.pool;
        // php-fpm compares keys with strcasecmp; unknown keys are none of our business.
        match key.to_ascii_lowercase().as_str() {
            "listen" => pool.listen = Some(value.replace("$pool", &pool.name)),
            "prefix" => draft.prefix = Some(value.replace("$pool", &pool.name)),
            "pm" => pool.pm = Some(value.to_ascii_lowercase()),
            "pm.max_children" => {
                pool.max_children = Some(number(key, value, &at)?);
                pool.max_children_source = Some(at);
            }
            "pm.max_requests" => pool.max_requests = Some(number(key, value, &at)?),
            "pm.process_idle_timeout" => pool.process_idle_timeout = Some(value),
            _ => {}
        }
        Ok(())
    }
}

fn number<T: std::str::FromStr>(
    key: &str,
    value: String,
    at: &ConfigLine,
) -> Result<T, PhpFpmConfigError> {
    value
        .trim()
        .parse()
        .map_err(|_| PhpFpmConfigError::InvalidNumber {
            at: at.clone(),
            key: key.to_owned(),
            value,
        })
}

#[cfg(test)]
mod tests;
