//! What `[[rule]]`s cost a request: the built-in dotfile rule alone against it plus the 20
//! rules of bench/rules-20.toml (bench/run's fcgate-rules peer), none of which matches, on the
//! paths of a PHP app. `cargo bench -p fcgate --bench rules`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion};
use fcgate::request_path::RequestPath;
use fcgate::rules::Origin;

fn rule_set(rules: &str) -> fcgate::rules::RuleSet {
    let root = tempfile::tempdir().unwrap();
    let text = format!("root = {:?}\n{rules}", root.path().to_str().unwrap());
    let config = fcgate::config::parse_file_text(&text)
        .unwrap()
        .validate()
        .unwrap();
    config.site.rules
}

fn evaluation(criterion: &mut Criterion) {
    let twenty = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../bench/rules-20.toml"
    ))
    .unwrap();
    for (name, rules) in [
        ("built-in", rule_set("")),
        ("built-in+20", rule_set(&twenty)),
    ] {
        for path in ["/hello.php", "/index.php/blog/2024/05/a-post-title"] {
            criterion.bench_function(&format!("{name} {path}"), |bench| {
                bench.iter(|| {
                    let request = RequestPath::parse(std::hint::black_box(path)).unwrap();
                    rules.evaluate(request, Some("page=2"), Origin::Client, &|_| false)
                });
            });
        }
    }
}

criterion_group!(benches, evaluation);
criterion_main!(benches);
