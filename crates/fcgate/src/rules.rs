//! Per-path rules (`[[rule]]`): what nginx users write as `location` blocks holding `deny`,
//! `return`, `rewrite`, `add_header`, `auth_basic` and `internal`, evaluated here in the order
//! written against the request path once decoded and normalised (`request_path.rs`), so no
//! spelling of a path (`%2e`, `//`, `/./`) reaches a file a rule denies.
//!
//! A rule marked `if_missing` applies only where no file or directory exists (nginx's
//! `try_files` fallback), the one question the evaluation asks outside itself.
//!
//! Every rule that matches contributes what it sets (`static`, `headers`, `auth_basic`); the
//! first matching rule that ends the request (`deny`, `return`) decides it, and a `rewrite`
//! starts the evaluation again from the first rule with the new path, at most
//! [`MAX_REWRITES`] times. What an earlier pass required still holds after a rewrite: a
//! rewrite out of an `auth_basic` location cannot shed the password (nginx, which re-selects
//! the location, can); the headers and the `upstream` are those of the final path's rules. A
//! location marked `internal` is a 404 for a client's own request and
//! reachable through a rewrite or `X-Accel-Redirect`. Pure: no I/O, no clock; the gateway
//! (`proxy.rs`) acts on the [`Evaluation`].
//!
//! Hand-written: the matching and the order are the product's own routing, and no crate
//! offers nginx's semantics; the regexes are the `regex` crate's, linear-time whatever the
//! input.

mod template;

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, StatusCode};
use regex::Regex;

use crate::auth_basic::AuthBasic;
use crate::request_path::RequestPath;
pub use template::{Groups, PathForm, Template};

/// Rewrites one request may go through before it is answered 500, as nginx's 10 cycles.
pub const MAX_REWRITES: usize = 10;

/// The rules of a site, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleSet {
    rules: Vec<Rule>,
    /// How many of `rules`, at the start, are the built-in ones.
    built_in: usize,
}

/// One `[[rule]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Which paths it applies to.
    pub matcher: Matcher,
    /// A path this also matches is left alone.
    pub unless: Option<Pattern>,
    /// What ends the request here, if anything.
    pub ending: Option<Ending>,
    /// Scripts never run under it (an uploads folder).
    pub static_only: bool,
    /// Response headers set or added.
    pub headers: Vec<HeaderAction>,
    /// Credentials required.
    pub auth: Option<Arc<AuthBasic>>,
    /// Only reachable through a rewrite or `X-Accel-Redirect`.
    pub internal: bool,
    /// Applies only when no file or directory exists at the path (nginx's `try_files $uri
    /// $uri/ @fallback`): a catch-all rewrite to the front controller, which must not rewrite
    /// the front controller itself or the app's assets.
    pub if_missing: bool,
    /// The `[upstreams.NAME]` scripts under it go to.
    pub upstream: Option<String>,
}

/// How a rule selects paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    /// Paths starting with this (`location /data/`).
    Prefix(String),
    /// This path only (`location = /xmlrpc.php`).
    Exact(String),
    /// Paths the regex finds a match in (`location ~ \.php$`; `(?i)` for `~*`).
    Regex(Pattern),
}

/// A compiled regex, compared by its text (configurations are compared on reload).
#[derive(Debug, Clone)]
pub struct Pattern(Regex);

impl Pattern {
    /// Compiles `text`, within a size bound so a huge pattern is a config error.
    pub fn new(text: &str) -> Result<Pattern, regex::Error> {
        regex::RegexBuilder::new(text)
            .size_limit(1 << 20)
            .build()
            .map(Pattern)
    }

    /// The compiled regex.
    pub fn regex(&self) -> &Regex {
        &self.0
    }

    /// What a template may refer to: the number of groups, the whole match included, and the
    /// names of the named ones.
    pub fn groups(&self) -> (usize, Vec<String>) {
        let names = self
            .0
            .capture_names()
            .flatten()
            .map(str::to_owned)
            .collect();
        (self.0.captures_len(), names)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Eq for Pattern {}

/// What ends a request at a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// 403 or 404 (`deny`).
    Deny(StatusCode),
    /// A fixed answer (`return`): a redirect to `location`, or a status with an optional body.
    Return {
        /// The status.
        status: StatusCode,
        /// Where a redirect goes.
        location: Option<Template>,
        /// A short text body.
        body: Option<String>,
    },
    /// Route again with this path (`rewrite`).
    Rewrite(Template),
}

/// What a rule writes into the response's headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderAction {
    /// Replaces the app's values (`headers`).
    Set(HeaderName, HeaderValue),
    /// Goes beside the app's values (`add_headers`).
    Add(HeaderName, HeaderValue),
    /// `Expires` this long after the response, and `Cache-Control: max-age` (`expires`).
    Expires(Duration),
}

impl HeaderAction {
    /// The header it writes first.
    pub fn name(&self) -> &HeaderName {
        match self {
            HeaderAction::Set(name, _) | HeaderAction::Add(name, _) => name,
            HeaderAction::Expires(_) => &http::header::EXPIRES,
        }
    }
}

/// Whether scripts may run where a request is routed: a `static` rule (an uploads folder)
/// says no, and then a script there is neither run nor shown, and nothing falls through to the
/// front controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scripts {
    /// Scripts run, the front controller answers what matches nothing.
    Run,
    /// Files only.
    Never,
}

/// Where a request comes from: rules marked `internal` answer only the gateway itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The client's own request line.
    Client,
    /// An app's `X-Accel-Redirect`.
    Internal,
}

/// What the rules made of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// Where it goes next.
    pub verdict: Verdict,
    /// Headers for the response, in rule order.
    pub headers: Vec<HeaderAction>,
    /// Credentials the request must carry.
    pub auth: Option<Arc<AuthBasic>>,
    /// The `[upstreams.NAME]` the rules of the final path send scripts to.
    pub upstream: Option<String>,
}

/// The outcome of the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Route this path.
    Route {
        /// The path, rewritten or as requested.
        path: RequestPath,
        /// The query string a rewrite made; `None`: the request's own.
        query: Option<String>,
        /// Whether a rewrite changed the path.
        rewritten: bool,
        /// Whether scripts may run there.
        scripts: Scripts,
        /// Whether it lies in an `internal` location.
        internal: bool,
    },
    /// Answer with this status (`deny`), by rule number (1-based, as a person counts).
    Deny {
        /// 403 or 404.
        status: StatusCode,
        /// The rule.
        rule: usize,
    },
    /// A fixed answer (`return`).
    Return {
        /// The status.
        status: StatusCode,
        /// The redirect target, captures filled in; a path is made absolute by the gateway.
        location: Option<String>,
        /// The body.
        body: Option<String>,
        /// The rule.
        rule: usize,
    },
    /// A client asked for an `internal` location itself: 404.
    Internal {
        /// The rule.
        rule: usize,
    },
    /// More than [`MAX_REWRITES`] rewrites: 500, a configuration mistake.
    RewriteLoop,
    /// A rewrite produced a path that cannot be routed (`..` above the root, no leading `/`):
    /// 500, a configuration mistake.
    BadRewrite {
        /// The rule.
        rule: usize,
        /// What it produced.
        produced: String,
    },
}

impl RuleSet {
    /// Rules in the order they are evaluated.
    pub fn new(rules: Vec<Rule>) -> RuleSet {
        RuleSet { rules, built_in: 0 }
    }

    /// The built-in rules, then the ones written in the configuration.
    pub fn with_built_in(built_in: Vec<Rule>, written: Vec<Rule>) -> RuleSet {
        let count = built_in.len();
        let mut rules = built_in;
        rules.extend(written);
        RuleSet {
            rules,
            built_in: count,
        }
    }

    /// How a person finds rule `number` (as in a [`Verdict`]): `rule 3` is the third
    /// `[[rule]]` of the file, whatever built-in ones come first.
    pub fn label(&self, number: usize) -> String {
        if number <= self.built_in {
            format!("built-in rule {number}")
        } else {
            format!("rule {}", number - self.built_in)
        }
    }

    /// Whether there is nothing to evaluate.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Runs the rules on `path` (with the request's `query`), as asked by `origin`. `exists`
    /// says whether a file or directory is at a path, for `if_missing` rules only.
    pub fn evaluate(
        &self,
        path: RequestPath,
        query: Option<&str>,
        origin: Origin,
        exists: &dyn Fn(&RequestPath) -> bool,
    ) -> Evaluation {
        let mut evaluation = Evaluation {
            verdict: Verdict::RewriteLoop,
            headers: Vec::new(),
            auth: None,
            upstream: None,
        };
        let mut path = path;
        let mut rewritten_query: Option<String> = None;
        let mut rewrites = 0;
        'passes: loop {
            let text = path.text();
            let mut scripts = Scripts::Run;
            let mut internal = false;
            for (index, rule) in self.rules.iter().enumerate() {
                let number = index + 1;
                let Some(groups) = rule.select(&text) else {
                    continue;
                };
                if rule.if_missing && exists(&path) {
                    continue;
                }
                if rule.internal {
                    if origin == Origin::Client && rewrites == 0 {
                        evaluation.verdict = Verdict::Internal { rule: number };
                        return evaluation;
                    }
                    internal = true;
                }
                if rule.static_only {
                    scripts = Scripts::Never;
                }
                evaluation.headers.extend(rule.headers.iter().cloned());
                if let Some(auth) = &rule.auth {
                    evaluation.auth = Some(Arc::clone(auth));
                }
                if let Some(group) = &rule.upstream {
                    evaluation.upstream = Some(group.clone());
                }
                let query_in_force = rewritten_query.as_deref().or(query);
                match &rule.ending {
                    None => {}
                    Some(Ending::Deny(status)) => {
                        evaluation.verdict = Verdict::Deny {
                            status: *status,
                            rule: number,
                        };
                        return evaluation;
                    }
                    Some(Ending::Return {
                        status,
                        location,
                        body,
                    }) => {
                        let location = location.as_ref().map(|template| {
                            let expanded =
                                template.expand(&groups, PathForm::Encoded, query_in_force);
                            match expanded.query {
                                Some(query) if !query.is_empty() => {
                                    format!("{}?{query}", expanded.path)
                                }
                                Some(_) => expanded.path,
                                None => match query_in_force {
                                    Some(query) if !query.is_empty() => {
                                        format!("{}?{query}", expanded.path)
                                    }
                                    _ => expanded.path,
                                },
                            }
                        });
                        evaluation.verdict = Verdict::Return {
                            status: *status,
                            location,
                            body: body.clone(),
                            rule: number,
                        };
                        return evaluation;
                    }
                    Some(Ending::Rewrite(template)) => {
                        let expanded = template.expand(&groups, PathForm::Decoded, query_in_force);
                        rewrites += 1;
                        if rewrites > MAX_REWRITES {
                            evaluation.verdict = Verdict::RewriteLoop;
                            return evaluation;
                        }
                        let Some(next) = RequestPath::from_decoded(&expanded.path) else {
                            evaluation.verdict = Verdict::BadRewrite {
                                rule: number,
                                produced: expanded.path,
                            };
                            return evaluation;
                        };
                        path = next;
                        // The response comes from where the rewrite leads: the headers meant
                        // for the old path (a `.css` file's caching) do not follow it there.
                        evaluation.headers.clear();
                        evaluation.upstream = None;
                        if let Some(query) = expanded.query {
                            rewritten_query = Some(query);
                        }
                        continue 'passes;
                    }
                }
            }
            evaluation.verdict = Verdict::Route {
                path,
                query: rewritten_query,
                rewritten: rewrites > 0,
                scripts,
                internal,
            };
            return evaluation;
        }
    }
}

impl Rule {
    /// Whether the rule applies to `text`, with the groups its templates may use.
    fn select<'t>(&self, text: &'t str) -> Option<Selected<'t>> {
        let selected = match &self.matcher {
            Matcher::Prefix(prefix) => text
                .starts_with(prefix.as_str())
                .then_some(Selected::Whole(text)),
            Matcher::Exact(exact) => (text == exact).then_some(Selected::Whole(text)),
            Matcher::Regex(pattern) if self.needs_captures() => {
                pattern.regex().captures(text).map(Selected::Captures)
            }
            Matcher::Regex(pattern) => pattern
                .regex()
                .find(text)
                .map(|found| Selected::Whole(found.as_str())),
        }?;
        match &self.unless {
            Some(unless) if unless.regex().is_match(text) => None,
            _ => Some(selected),
        }
    }

    /// Only templates read groups; `is_match`-style searches are much cheaper than captures.
    fn needs_captures(&self) -> bool {
        match &self.ending {
            Some(Ending::Rewrite(template)) => template.uses_captures(),
            Some(Ending::Return {
                location: Some(template),
                ..
            }) => template.uses_captures(),
            _ => false,
        }
    }
}

/// What a matching rule saw: the whole match, or a regex's groups.
enum Selected<'t> {
    Whole(&'t str),
    Captures(regex::Captures<'t>),
}

impl Groups for Selected<'_> {
    fn group(&self, index: usize) -> Option<&str> {
        match self {
            Selected::Whole(text) => (index == 0).then_some(*text),
            Selected::Captures(captures) => captures.get(index).map(|found| found.as_str()),
        }
    }

    fn named(&self, name: &str) -> Option<&str> {
        match self {
            Selected::Whole(_) => None,
            Selected::Captures(captures) => captures.name(name).map(|found| found.as_str()),
        }
    }
}

#[cfg(test)]
mod tests;
