//! `[[rule]]` tables checked and compiled into a [`RuleSet`]: one selector, at most one action
//! that ends the request, regexes compiled, templates checked against their regex's groups,
//! header names and values valid, htpasswd files read. Every error names the rule by its number
//! (1-based, as `fcgate` logs it) and says what would be right. In PHP mode the built-in rule
//! (dotfiles refused, `/.well-known/` served) comes first unless `default_rules = false`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use http::{HeaderName, HeaderValue, StatusCode};

use super::raw::{RawReturn, RawRule};
use super::ConfigError;
use crate::auth_basic::AuthBasic;
use crate::rules::{Ending, HeaderAction, Matcher, Pattern, Rule, RuleSet, Template};

/// The built-in rule, as a user would write it (docs/configuration.md shows this text): no
/// path with a segment starting with `.` (`.env`, `.git/`, `.htaccess`), except under
/// `/.well-known/` (RFC 8615: ACME, security.txt), and not `/.well-known/.git` either.
pub const DEFAULT_RULES: &str = r#"
[[rule]]
regex = '/\.'
unless = '^/\.well-known(/[^./][^/]*)*/?$'
deny = 404
"#;

/// Validates the `[[rule]]` list; `php_mode` says whether there is a root (some actions
/// need one) and whether the built-in rules apply.
pub(super) fn validate_rules(
    raw: Vec<RawRule>,
    default_rules: Option<bool>,
    php_mode: bool,
    groups: &BTreeSet<String>,
) -> Result<RuleSet, ConfigError> {
    let built_in = if php_mode && default_rules.unwrap_or(true) {
        built_in()?
    } else {
        Vec::new()
    };
    let mut written = Vec::new();
    // Numbered as the user wrote them: "rule 3" is the third `[[rule]]` in the file.
    for (index, rule) in raw.into_iter().enumerate() {
        let key = format!("rule {}", index + 1);
        written.push(
            validate_rule(rule, php_mode, groups)
                .map_err(|message| ConfigError::invalid(key, message))?,
        );
    }
    Ok(RuleSet::with_built_in(built_in, written))
}

fn built_in() -> Result<Vec<Rule>, ConfigError> {
    #[derive(serde::Deserialize)]
    struct Rules {
        rule: Vec<RawRule>,
    }
    let parsed: Rules = toml::from_str(DEFAULT_RULES)
        .map_err(|error| ConfigError::invalid("default_rules", error.to_string()))?;
    parsed
        .rule
        .into_iter()
        .map(|rule| {
            validate_rule(rule, true, &BTreeSet::new())
                .map_err(|message| ConfigError::invalid("default_rules", message))
        })
        .collect()
}

fn validate_rule(raw: RawRule, php_mode: bool, groups: &BTreeSet<String>) -> Result<Rule, String> {
    let matcher = match (raw.prefix, raw.exact, raw.regex) {
        (Some(prefix), None, None) => Matcher::Prefix(path_selector("prefix", prefix)?),
        (None, Some(exact), None) => Matcher::Exact(path_selector("exact", exact)?),
        (None, None, Some(regex)) => Matcher::Regex(pattern("regex", &regex)?),
        (None, None, None) => {
            return Err("says which paths it applies to with `prefix`, `exact` or `regex`".into())
        }
        _ => return Err("takes one of `prefix`, `exact` and `regex`, not several".into()),
    };
    let unless = raw
        .unless
        .as_deref()
        .map(|text| pattern("unless", text))
        .transpose()?;
    let (group_count, names) = match &matcher {
        Matcher::Regex(pattern) => pattern.groups(),
        _ => (1, Vec::new()),
    };
    let has_name = |name: &str| names.iter().any(|known| known == name);
    let endings = [
        raw.deny.is_some(),
        raw.fixed_answer.is_some(),
        raw.rewrite.is_some(),
    ];
    if endings.iter().filter(|set| **set).count() > 1 {
        return Err("takes at most one of `deny`, `return` and `rewrite`".into());
    }
    let ending = if let Some(status) = raw.deny {
        match status {
            403 | 404 => Some(Ending::Deny(status_code(status)?)),
            _ => return Err(format!("`deny = {status}`: deny answers 403 or 404")),
        }
    } else if let Some(answer) = raw.fixed_answer {
        Some(fixed_answer(answer, group_count, &has_name)?)
    } else if let Some(replacement) = raw.rewrite {
        if !replacement.starts_with('/') {
            return Err(format!(
                "`rewrite = \"{replacement}\"`: a rewrite names a path starting with `/`; \
                 use `return` to redirect elsewhere"
            ));
        }
        Some(Ending::Rewrite(
            Template::parse(&replacement, group_count, &has_name)
                .map_err(|error| format!("rewrite: {error}"))?,
        ))
    } else {
        None
    };
    let static_only = raw.static_only.unwrap_or(false);
    let if_missing = raw.if_missing.unwrap_or(false);
    if !php_mode && (static_only || if_missing) {
        return Err("`static` and `if_missing` need a `root` (PHP mode)".into());
    }
    // `expires` first: an explicit `Cache-Control` in `headers` overrides its max-age.
    let mut headers: Vec<HeaderAction> =
        raw.expires.map(HeaderAction::Expires).into_iter().collect();
    headers.extend(header_actions("headers", raw.headers, false)?);
    headers.extend(header_actions("add_headers", raw.add_headers, true)?);
    let auth = match (raw.auth_basic, raw.auth_basic_user_file) {
        (Some(realm), Some(file)) => Some(Arc::new(
            AuthBasic::load(&realm, &file)
                .map_err(|error| format!("auth_basic_user_file: {error}"))?,
        )),
        (None, None) => None,
        _ => return Err("`auth_basic` (the realm) and `auth_basic_user_file` go together".into()),
    };
    let internal = raw.internal.unwrap_or(false);
    if let Some(name) = &raw.upstream {
        check_group("upstream", name, groups).map_err(|error| error.to_string())?;
    }
    let upstream = raw.upstream;
    let rule = Rule {
        matcher,
        unless,
        ending,
        static_only,
        headers,
        auth,
        internal,
        if_missing,
        upstream,
    };
    let does_something = rule.ending.is_some()
        || rule.static_only
        || !rule.headers.is_empty()
        || rule.auth.is_some()
        || rule.internal
        || rule.upstream.is_some();
    if !does_something {
        return Err(
            "does nothing: give it `deny`, `return`, `rewrite`, `static`, `headers`, \
                    `add_headers`, `auth_basic` or `internal`"
                .into(),
        );
    }
    Ok(rule)
}

/// A group named by `upstream` must be an `[upstreams.NAME]`.
pub(super) fn check_group(
    key: &str,
    name: &str,
    groups: &BTreeSet<String>,
) -> Result<(), ConfigError> {
    if groups.contains(name) {
        return Ok(());
    }
    let known: Vec<&str> = groups.iter().map(String::as_str).collect();
    let known = if known.is_empty() {
        "there is none".to_owned()
    } else {
        format!("there are: {}", known.join(", "))
    };
    Err(ConfigError::invalid(
        key,
        format!("`{name}` is not an [upstreams.{name}] group ({known})"),
    ))
}

fn path_selector(key: &str, text: String) -> Result<String, String> {
    if text.starts_with('/') {
        Ok(text)
    } else {
        Err(format!("`{key} = \"{text}\"` must start with `/`"))
    }
}

fn pattern(key: &str, text: &str) -> Result<Pattern, String> {
    Pattern::new(text).map_err(|error| format!("`{key}`: {error}"))
}

fn status_code(status: u16) -> Result<StatusCode, String> {
    StatusCode::from_u16(status).map_err(|_| format!("{status} is not an HTTP status"))
}

fn fixed_answer(
    raw: RawReturn,
    group_count: usize,
    has_name: &dyn Fn(&str) -> bool,
) -> Result<Ending, String> {
    let (status, location, body) = match raw {
        RawReturn::Status(status) => (status, None, None),
        RawReturn::Full(table) => (table.status, table.location, table.body),
    };
    if !(200..=599).contains(&status) {
        return Err(format!(
            "`return` status {status} is not between 200 and 599"
        ));
    }
    let redirect = matches!(status, 301 | 302 | 303 | 307 | 308);
    let location = match (redirect, location) {
        (true, Some(location)) => Some(
            Template::parse(&location, group_count, has_name)
                .map_err(|error| format!("return location: {error}"))?,
        ),
        (true, None) => return Err(format!("`return` {status} redirects: give it a `location`")),
        (false, Some(_)) => {
            return Err(format!(
                "`return` {status} is not a redirect (301, 302, 303, 307, 308): drop `location`"
            ))
        }
        (false, None) => None,
    };
    Ok(Ending::Return {
        status: status_code(status)?,
        location,
        body,
    })
}

/// Headers that describe the message's framing or the connection are fcgate's to write.
const FRAMING_HEADERS: [&str; 7] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "trailer",
    "proxy-connection",
];

fn header_actions(
    key: &str,
    raw: Option<BTreeMap<String, String>>,
    append: bool,
) -> Result<Vec<HeaderAction>, String> {
    let mut actions = Vec::new();
    for (name, value) in raw.unwrap_or_default() {
        let name = HeaderName::try_from(name.as_str())
            .map_err(|_| format!("{key}: `{name}` is not a header name"))?;
        if FRAMING_HEADERS.contains(&name.as_str()) {
            return Err(format!(
                "{key}: `{name}` is fcgate's to write, not a rule's"
            ));
        }
        let value = HeaderValue::try_from(value.as_str())
            .map_err(|_| format!("{key}: the value of `{name}` cannot go in a header"))?;
        actions.push(if append {
            HeaderAction::Add(name, value)
        } else {
            HeaderAction::Set(name, value)
        });
    }
    Ok(actions)
}
