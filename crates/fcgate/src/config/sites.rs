//! Sites: the top-level settings are the default site, and each `[[site]]` is another one with
//! its own `server_names`, root, index, routing settings and rules. This module checks a
//! site's settings (the same code for both, so a `[[site]]` accepts exactly what the top level
//! does) and its names, and picks the site for a request's host.
//!
//! Which site answers is nginx's `server_name` order: an exact name first, then the wildcard
//! with the longest matching suffix, then the default site, or 421 Misdirected Request with
//! `unknown_hosts = "reject"`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use super::raw::RawSite;
use super::ConfigError;
use super::{DirectoryWithoutIndex, FollowSymlinks, PhpSite, SiteConfig, SiteMode};
use crate::script_cache::ScriptCache;

/// `script_lookup_cache` when unset: opcache's `revalidate_freq`. Long enough that a hot script
/// costs one `statx` in tens of thousands of requests, short enough that a deleted script is
/// forgotten before anyone would notice (php-fpm answers 404 for it meanwhile).
const DEFAULT_SCRIPT_LOOKUP_CACHE: Duration = Duration::from_secs(2);

/// The longest `script_lookup_cache` taken: an hour is already far past any use (a deleted
/// script would reach php-fpm for that long), and a bound keeps the cache's time arithmetic
/// finite.
const MAX_SCRIPT_LOOKUP_CACHE: Duration = Duration::from_secs(3600);

/// The gateway's sites: the named ones and what a request for another host gets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sites {
    /// `[[site]]`, in order.
    pub named: Vec<NamedSite>,
    /// What a host no site names gets.
    pub unknown_hosts: UnknownHosts,
}

/// One `[[site]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedSite {
    /// The host names it answers.
    pub server_names: Vec<ServerName>,
    /// How it handles requests.
    pub site: SiteConfig,
}

/// A `server_names` entry, lowercase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerName {
    /// `wiki.example.com`
    Exact(String),
    /// `*.example.com`: any name ending in `.example.com` (the suffix kept with its dot).
    Wildcard(String),
}

/// `unknown_hosts`: the answer to a request whose host no `[[site]]` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownHosts {
    /// The top-level settings answer (nginx's `default_server`).
    #[default]
    DefaultSite,
    /// 421 Misdirected Request (RFC 9110 §15.5.20): this server does not serve that host.
    Reject,
}

impl Sites {
    /// The site for a request naming `host` (without its port, any case); `None`: 421.
    pub fn select<'a>(
        &'a self,
        default: &'a SiteConfig,
        host: Option<&[u8]>,
    ) -> Option<&'a SiteConfig> {
        if self.named.is_empty() {
            return Some(default);
        }
        let host = host.map(|host| String::from_utf8_lossy(host).to_ascii_lowercase());
        let host = host.as_deref().map(|host| host.trim_end_matches('.'));
        if let Some(host) = host {
            let exact = self.named.iter().find(|site| {
                site.server_names
                    .iter()
                    .any(|name| matches!(name, ServerName::Exact(exact) if exact == host))
            });
            if let Some(site) = exact {
                return Some(&site.site);
            }
            let mut best: Option<(usize, &SiteConfig)> = None;
            for site in &self.named {
                for name in &site.server_names {
                    if let ServerName::Wildcard(suffix) = name {
                        let longer = best.is_none_or(|(length, _)| suffix.len() > length);
                        if host.ends_with(suffix.as_str()) && host.len() > suffix.len() && longer {
                            best = Some((suffix.len(), &site.site));
                        }
                    }
                }
            }
            if let Some((_, site)) = best {
                return Some(site);
            }
        }
        match self.unknown_hosts {
            UnknownHosts::DefaultSite => Some(default),
            UnknownHosts::Reject => None,
        }
    }
}

/// Checks a site's settings (the top level's are a `RawSite` without `server_names`, checked
/// by [`validate_server_names`]); `underscores_in_headers` and `params` are the gateway's.
pub(super) fn validate_site(
    raw: RawSite,
    underscores_in_headers: bool,
    extra_params: Vec<(String, String)>,
    groups: &BTreeSet<String>,
) -> Result<SiteConfig, ConfigError> {
    let script_extensions = super::validate::validate_script_extensions(raw.script_extensions)?;
    let index = super::validate::validate_index(raw.index)?;
    let front_controller = raw.front_controller.unwrap_or(true);
    let directory_without_index = match raw.directory_without_index.as_deref() {
        None => DirectoryWithoutIndex::default(),
        Some(text) => DirectoryWithoutIndex::from_setting(text).ok_or_else(|| {
            ConfigError::invalid(
                "directory_without_index",
                format!("`{text}` is not \"forbidden\" or \"front_controller\""),
            )
        })?,
    };
    let follow_symlinks = match raw.follow_symlinks.as_deref() {
        None => FollowSymlinks::default(),
        Some(text) => FollowSymlinks::from_setting(text).ok_or_else(|| {
            ConfigError::invalid(
                "follow_symlinks",
                format!("`{text}` is not \"within_root\", \"never\", \"owner\" or \"always\""),
            )
        })?,
    };
    let script_lookup_cache = raw
        .script_lookup_cache
        .unwrap_or(DEFAULT_SCRIPT_LOOKUP_CACHE);
    if script_lookup_cache > MAX_SCRIPT_LOOKUP_CACHE {
        return Err(ConfigError::invalid(
            "script_lookup_cache",
            format!(
                "{} is longer than the most it takes, 1h",
                humantime::format_duration(script_lookup_cache)
            ),
        ));
    }
    let mode = match raw.root {
        None => SiteMode::App,
        Some(root) => {
            let site = PhpSite {
                root: super::validate::canonical_root(&root)?.into(),
                index,
                script_extensions,
                front_controller,
                directory_without_index,
                follow_symlinks,
                script_cache: Arc::new(ScriptCache::new(script_lookup_cache)),
            };
            super::validate::check_front_controller(&site)?;
            SiteMode::Php(site)
        }
    };
    let rules = super::rules::validate_rules(
        raw.rules,
        raw.default_rules,
        matches!(mode, SiteMode::Php(_)),
        groups,
    )?;
    if let Some(name) = &raw.upstream {
        super::rules::check_group("upstream", name, groups)?;
    }
    let error_pages = validate_error_pages(raw.error_pages.unwrap_or_default())?;
    Ok(SiteConfig {
        mode,
        underscores_in_headers,
        extra_params,
        rules,
        error_pages,
        upstream: raw.upstream,
    })
}

/// `error_pages = { 404 = "/errors/404.html", 502 = "/errors/50x.php" }`: statuses 400–599,
/// each to a path in the site (a query may follow).
fn validate_error_pages(
    raw: BTreeMap<String, String>,
) -> Result<BTreeMap<u16, String>, ConfigError> {
    let mut pages = BTreeMap::new();
    for (status, target) in raw {
        let key = format!("error_pages.{status}");
        let code = status
            .parse::<u16>()
            .ok()
            .filter(|code| (400..=599).contains(code))
            .ok_or_else(|| ConfigError::invalid(&key, "the key is an error status, 400 to 599"))?;
        let path = target
            .split_once('?')
            .map_or(target.as_str(), |(path, _)| path);
        if crate::request_path::RequestPath::parse(path).is_none() {
            return Err(ConfigError::invalid(
                &key,
                format!("`{target}` is not a path in the site, such as \"/errors/{code}.html\""),
            ));
        }
        pages.insert(code, target);
    }
    Ok(pages)
}

/// Checks `server_names`: each a host name or `*.` and one, lowercase, none named twice across
/// sites (`seen`).
pub(super) fn validate_server_names(
    raw: Option<Vec<String>>,
    seen: &mut BTreeSet<String>,
) -> Result<Vec<ServerName>, ConfigError> {
    let key = "server_names";
    let raw = raw.unwrap_or_default();
    if raw.is_empty() {
        return Err(ConfigError::invalid(
            key,
            "a [[site]] needs the host names it answers, e.g. [\"wiki.example.com\", \"*.example.org\"]",
        ));
    }
    let mut names = Vec::new();
    for text in raw {
        let lower = text.to_ascii_lowercase();
        let (name, bare) = match lower.strip_prefix("*.") {
            Some(rest) => (ServerName::Wildcard(format!(".{rest}")), rest.to_owned()),
            None => (ServerName::Exact(lower.clone()), lower.clone()),
        };
        let valid_label = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
        };
        if bare.is_empty() || bare.len() > 253 || !bare.split('.').all(valid_label) {
            return Err(ConfigError::invalid(
                key,
                format!("`{text}` is not a host name or `*.` followed by one"),
            ));
        }
        if !seen.insert(lower) {
            return Err(ConfigError::invalid(
                key,
                format!("`{text}` is named by two sites: which one answers it?"),
            ));
        }
        names.push(name);
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::rules::RuleSet;

    fn site(marker: &str) -> SiteConfig {
        SiteConfig {
            mode: SiteMode::App,
            underscores_in_headers: false,
            extra_params: vec![("SITE".into(), marker.into())],
            rules: RuleSet::default(),
            error_pages: Default::default(),
            upstream: None,
        }
    }

    fn marker(site: Option<&SiteConfig>) -> Option<&str> {
        site.map(|site| site.extra_params[0].1.as_str())
    }

    fn names(list: &[&str]) -> Vec<ServerName> {
        validate_server_names(
            Some(list.iter().map(|name| (*name).to_owned()).collect()),
            &mut BTreeSet::new(),
        )
        .unwrap()
    }

    #[test]
    fn exact_names_then_the_longest_wildcard_then_the_default() {
        let default = site("default");
        let mut sites = Sites {
            named: vec![
                NamedSite {
                    server_names: names(&["*.example.com"]),
                    site: site("any"),
                },
                NamedSite {
                    server_names: names(&["*.wiki.example.com", "Wiki.Example.com"]),
                    site: site("wiki"),
                },
                NamedSite {
                    server_names: names(&["www.example.com"]),
                    site: site("www"),
                },
            ],
            unknown_hosts: UnknownHosts::DefaultSite,
        };
        let pick = |sites: &Sites, host: Option<&str>| {
            marker(sites.select(&default, host.map(str::as_bytes))).map(str::to_owned)
        };
        assert_eq!(
            pick(&sites, Some("www.example.com")).as_deref(),
            Some("www")
        );
        assert_eq!(
            pick(&sites, Some("WWW.EXAMPLE.COM.")).as_deref(),
            Some("www")
        );
        assert_eq!(
            pick(&sites, Some("wiki.example.com")).as_deref(),
            Some("wiki")
        );
        assert_eq!(
            pick(&sites, Some("a.wiki.example.com")).as_deref(),
            Some("wiki")
        );
        assert_eq!(
            pick(&sites, Some("shop.example.com")).as_deref(),
            Some("any")
        );
        // `*.example.com` is not `example.com` itself.
        assert_eq!(
            pick(&sites, Some("example.com")).as_deref(),
            Some("default")
        );
        assert_eq!(pick(&sites, Some("other.org")).as_deref(), Some("default"));
        assert_eq!(pick(&sites, None).as_deref(), Some("default"));
        sites.unknown_hosts = UnknownHosts::Reject;
        assert_eq!(pick(&sites, Some("other.org")), None);
        assert_eq!(pick(&sites, None), None);
        assert_eq!(
            pick(&sites, Some("www.example.com")).as_deref(),
            Some("www")
        );
    }

    #[test]
    fn server_names_are_checked() {
        for bad in ["", "*.", "a..b", "exa mple.com", "*.*.example.com", "a/b"] {
            let error = validate_server_names(Some(vec![bad.into()]), &mut BTreeSet::new());
            assert!(error.is_err(), "{bad:?}");
        }
        assert!(validate_server_names(Some(vec![]), &mut BTreeSet::new()).is_err());
        let mut seen = BTreeSet::new();
        validate_server_names(Some(vec!["a.example".into()]), &mut seen).unwrap();
        let twice = validate_server_names(Some(vec!["A.example".into()]), &mut seen);
        assert!(twice.unwrap_err().to_string().contains("two sites"));
    }
}
