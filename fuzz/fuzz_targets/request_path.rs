//! Arbitrary bytes as a request path, through the decoding and normalising every rule and the
//! router rely on, then through rules that deny, rewrite with captures and return redirects:
//! nothing may panic; a path that is accepted is absolute, has no empty, `.` or `..` segment and
//! no control character, and normalising it again changes nothing; a rewrite's result obeys the
//! same. Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run request_path -- -max_total_time=60`
#![no_main]

use std::sync::OnceLock;

use fcgate::request_path::RequestPath;
use fcgate::rules::{Origin, RuleSet, Verdict};
use libfuzzer_sys::fuzz_target;

const RULES: &str = r#"root = "/"
[[rule]]
regex = '^/(data|conf)/'
deny = 404
[[rule]]
regex = '^/old/(?P<rest>.*)$'
return = { status = 301, location = "/new/${rest}?from=$1" }
[[rule]]
regex = '^/_media/(.*)$'
rewrite = "/lib/exe/fetch.php?media=$1&x=$0"
[[rule]]
regex = '^/loop/(.*)$'
rewrite = "/loop/$1"
[[rule]]
prefix = "/p/"
internal = true
[[rule]]
regex = '^/([^_].*)$'
if_missing = true
rewrite = "/doku.php?id=$1"
"#;

fn rules() -> &'static RuleSet {
    static RULES_IN_FORCE: OnceLock<RuleSet> = OnceLock::new();
    RULES_IN_FORCE.get_or_init(|| {
        let config = fcgate::config::parse_file_text(RULES)
            .and_then(|raw| raw.validate())
            .unwrap_or_else(|error| panic!("the fuzz rules do not load: {error}"));
        config.site.rules
    })
}

fn check_normalised(path: &RequestPath) {
    let text = path.text();
    assert!(text.starts_with('/'), "{text:?} is not absolute");
    assert!(!text.contains("//"), "{text:?} has an empty segment");
    assert!(
        !path.segments.iter().any(|segment| segment == "." || segment == ".."),
        "{text:?} has a dot segment"
    );
    assert!(!text.bytes().any(|byte| byte.is_ascii_control()), "{text:?}");
    assert_eq!(
        RequestPath::from_decoded(&text).map(|again| again.text()),
        Some(text.clone()),
        "normalising {text:?} again changes it"
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (raw_path, query) = match text.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (text, None),
    };
    let Some(path) = RequestPath::parse(raw_path) else {
        return;
    };
    check_normalised(&path);
    let missing = |candidate: &RequestPath| candidate.text().len() % 2 == 0;
    for origin in [Origin::Client, Origin::Internal] {
        let evaluation = rules().evaluate(path.clone(), query, origin, &missing);
        if let Verdict::Route { path, .. } = &evaluation.verdict {
            check_normalised(path);
        }
    }
});
