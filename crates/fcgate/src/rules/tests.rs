//! The rules' evaluation without sockets or files: order, captures, encoded paths, rewrites
//! and their bound, internal locations, what accumulates.
#![allow(clippy::unwrap_used)]

use super::*;

fn prefix(text: &str) -> Rule {
    rule(Matcher::Prefix(text.into()))
}

fn regex(text: &str) -> Rule {
    rule(Matcher::Regex(Pattern::new(text).unwrap()))
}

fn rule(matcher: Matcher) -> Rule {
    Rule {
        matcher,
        unless: None,
        ending: None,
        static_only: false,
        headers: Vec::new(),
        auth: None,
        internal: false,
        if_missing: false,
        upstream: None,
    }
}

fn deny(mut rule: Rule, status: u16) -> Rule {
    rule.ending = Some(Ending::Deny(StatusCode::from_u16(status).unwrap()));
    rule
}

fn rewrite(mut rule: Rule, replacement: &str) -> Rule {
    let (count, names) = match &rule.matcher {
        Matcher::Regex(pattern) => pattern.groups(),
        _ => (1, Vec::new()),
    };
    let template = Template::parse(replacement, count, &|name| names.iter().any(|n| n == name));
    rule.ending = Some(Ending::Rewrite(template.unwrap()));
    rule
}

fn header(mut rule: Rule, name: &'static str, value: &'static str) -> Rule {
    rule.headers.push(HeaderAction::Set(
        HeaderName::from_static(name),
        HeaderValue::from_static(value),
    ));
    rule
}

fn evaluate(rules: &[Rule], raw: &str) -> Evaluation {
    let (path, query) = match raw.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (raw, None),
    };
    RuleSet::new(rules.to_vec()).evaluate(
        RequestPath::parse(path).unwrap(),
        query,
        Origin::Client,
        &existing,
    )
}

/// The files the evaluation is told exist.
fn existing(path: &RequestPath) -> bool {
    ["/doku.php", "/lib/exe/detail.php", "/lib/tpl/logo.png"].contains(&path.text().as_str())
}

fn routed(evaluation: &Evaluation) -> (String, Option<String>) {
    match &evaluation.verdict {
        Verdict::Route { path, query, .. } => (path.text(), query.clone()),
        other => panic!("not routed: {other:?}"),
    }
}

fn status(evaluation: &Evaluation) -> Option<u16> {
    match &evaluation.verdict {
        Verdict::Deny { status, .. } => Some(status.as_u16()),
        _ => None,
    }
}

/// DokuWiki's upstream layout keeps pages, change logs with client addresses, and its config
/// inside the docroot: however the path is spelt, a deny on the folder holds.
#[test]
fn every_spelling_of_a_denied_path_is_denied() {
    let rules = [
        deny(prefix("/data/"), 404),
        deny(regex("^/(conf|bin|inc|vendor)/"), 403),
    ];
    for path in [
        "/data/pages/start.txt",
        "/data//meta/start.changes",
        "/%64ata/pages/start.txt",
        "/data%2Fpages/start.txt",
        "/x/../data/pages/start.txt",
        "/./data/pages/start.txt",
        "/data/",
    ] {
        assert_eq!(status(&evaluate(&rules, path)), Some(404), "{path}");
    }
    assert_eq!(status(&evaluate(&rules, "/conf/local.php")), Some(403));
    assert_eq!(status(&evaluate(&rules, "/inc/%2e%2e/conf/x")), Some(403));
    // Case matters, as in nginx's prefix locations: on a case-sensitive disk `/Data/` is
    // another, missing folder; `(?i)` makes a regex rule ignore case.
    assert_eq!(status(&evaluate(&rules, "/Data/pages/start.txt")), None);
    let insensitive = [deny(regex("(?i)^/data/"), 404)];
    assert_eq!(status(&evaluate(&insensitive, "/DaTa/x")), Some(404));
    // `/data` itself is not under `/data/`: routing redirects it to `/data/`, denied then.
    assert_eq!(status(&evaluate(&rules, "/data")), None);
    assert_eq!(status(&evaluate(&rules, "/database.php")), None);
}

#[test]
fn the_first_ending_rule_decides_and_earlier_ones_contribute() {
    let rules = [
        header(prefix("/"), "x-frame-options", "DENY"),
        header(regex(r"\.css$"), "cache-control", "max-age=60"),
        deny(prefix("/private/"), 403),
        deny(prefix("/private/"), 404),
    ];
    let evaluation = evaluate(&rules, "/private/style.css");
    assert_eq!(status(&evaluation), Some(403));
    let names: Vec<_> = evaluation
        .headers
        .iter()
        .map(|h| h.name().as_str())
        .collect();
    assert_eq!(names, ["x-frame-options", "cache-control"]);
    let evaluation = evaluate(&rules, "/public/app.js");
    assert_eq!(routed(&evaluation), ("/public/app.js".into(), None));
    assert_eq!(evaluation.headers.len(), 1);
}

#[test]
fn unless_carves_out_an_exception() {
    let hidden = Rule {
        unless: Some(Pattern::new(r"^/\.well-known(/[^./][^/]*)*/?$").unwrap()),
        ..deny(regex(r"/\."), 404)
    };
    let rules = [hidden];
    for path in [
        "/.env",
        "/.git/config",
        "/a/.htaccess",
        "/.well-known/.git/x",
        "/...",
    ] {
        assert_eq!(status(&evaluate(&rules, path)), Some(404), "{path}");
    }
    for path in [
        "/.well-known/security.txt",
        "/.well-known/acme-challenge/t",
        "/a.b/c",
    ] {
        assert_eq!(status(&evaluate(&rules, path)), None, "{path}");
    }
}

#[test]
fn rewrites_route_again_with_captures_and_nginx_query_handling() {
    let rules = [
        rewrite(regex("^/_media/(.*)$"), "/lib/exe/fetch.php?media=$1"),
        rewrite(
            regex("^/_detail/(?P<id>.*)$"),
            "/lib/exe/detail.php?media=${id}?",
        ),
        deny(prefix("/lib/exe/fetch.php"), 403),
        Rule {
            if_missing: true,
            ..rewrite(regex("^/(?P<page>[^_].*)$"), "/doku.php?id=$1")
        },
    ];
    // DokuWiki's userewrite=1 rules, carried over from its nginx recipe.
    let evaluation = evaluate(&rules, "/_media/wiki/logo%20big.png?w=200");
    // The rewritten path is routed again: the deny on the target applies.
    assert_eq!(status(&evaluation), Some(403));
    let evaluation = evaluate(&rules, "/_detail/a.png?tok=1");
    assert_eq!(
        routed(&evaluation),
        ("/lib/exe/detail.php".into(), Some("media=a.png".into()))
    );
    let evaluation = evaluate(&rules, "/wiki/syntax?do=edit");
    assert_eq!(
        routed(&evaluation),
        ("/doku.php".into(), Some("id=wiki/syntax&do=edit".into()))
    );
    assert!(matches!(
        evaluation.verdict,
        Verdict::Route {
            rewritten: true,
            ..
        }
    ));
    // An existing file is left alone by the `if_missing` catch-all.
    let evaluation = evaluate(&rules, "/lib/tpl/logo.png");
    assert_eq!(routed(&evaluation), ("/lib/tpl/logo.png".into(), None));
}

#[test]
fn rewrite_loops_are_bounded() {
    let rules = [rewrite(regex("^/(.*)$"), "/x$1")];
    assert_eq!(evaluate(&rules, "/a").verdict, Verdict::RewriteLoop);
    let rules = [rewrite(prefix("/a"), "/a")];
    assert_eq!(evaluate(&rules, "/a").verdict, Verdict::RewriteLoop);
    // Ten are allowed.
    let rules = [rewrite(regex("^/(a{0,9})$"), "/${1}a")];
    assert_eq!(routed(&evaluate(&rules, "/")).0, "/aaaaaaaaaa");
}

#[test]
fn a_rewrite_above_the_root_is_refused() {
    let rules = [rewrite(prefix("/up"), "/../../etc/passwd")];
    assert!(matches!(
        evaluate(&rules, "/up").verdict,
        Verdict::BadRewrite { rule: 1, .. }
    ));
}

#[test]
fn internal_locations_answer_only_rewrites_and_the_gateway() {
    let protected = Rule {
        internal: true,
        ..prefix("/protected/")
    };
    let rules = [
        protected,
        rewrite(regex("^/download/(.*)$"), "/protected/$1"),
    ];
    assert_eq!(
        evaluate(&rules, "/protected/x.zip").verdict,
        Verdict::Internal { rule: 1 }
    );
    assert_eq!(
        evaluate(&rules, "/%70rotected/x.zip").verdict,
        Verdict::Internal { rule: 1 }
    );
    let through_rewrite = evaluate(&rules, "/download/x.zip");
    assert!(matches!(
        through_rewrite.verdict,
        Verdict::Route { internal: true, .. }
    ));
    let accel = RuleSet::new(rules.to_vec()).evaluate(
        RequestPath::parse("/protected/x.zip").unwrap(),
        None,
        Origin::Internal,
        &existing,
    );
    assert!(matches!(
        accel.verdict,
        Verdict::Route { internal: true, .. }
    ));
    let outside = RuleSet::new(rules.to_vec()).evaluate(
        RequestPath::parse("/public/x.zip").unwrap(),
        None,
        Origin::Internal,
        &existing,
    );
    assert!(matches!(
        outside.verdict,
        Verdict::Route {
            internal: false,
            ..
        }
    ));
}

#[test]
fn static_locations_never_run_scripts_and_returns_fill_in_captures() {
    let uploads = Rule {
        static_only: true,
        ..prefix("/uploads/")
    };
    let mut moved = regex("^/old/(.*)$");
    moved.ending = Some(Ending::Return {
        status: StatusCode::MOVED_PERMANENTLY,
        location: Some(Template::parse("/new/$1", 2, &|_| false).unwrap()),
        body: None,
    });
    let rules = [uploads, moved];
    assert!(matches!(
        evaluate(&rules, "/uploads/x.php").verdict,
        Verdict::Route {
            scripts: Scripts::Never,
            ..
        }
    ));
    assert!(matches!(
        evaluate(&rules, "/index.php").verdict,
        Verdict::Route {
            scripts: Scripts::Run,
            ..
        }
    ));
    let Verdict::Return { location, .. } = evaluate(&rules, "/old/a b?p=1").verdict else {
        panic!("not a return");
    };
    assert_eq!(location.as_deref(), Some("/new/a%20b?p=1"));
}
