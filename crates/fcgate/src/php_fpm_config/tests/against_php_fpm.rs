//! php-fpm itself as the reference: `php-fpm -tt` parses a config tree and dumps every pool's
//! settings, which must agree with what this reader finds. Skipped when php-fpm is missing
//! (the testkit warns, and fails under CI=true).

use std::collections::BTreeMap;
use std::process::Command;

use super::*;

/// Pool name → (listen, pm.max_children, pm.max_requests) from a `-tt` dump.
fn dumped_pools(dump: &str) -> BTreeMap<String, (String, u32, u64)> {
    let mut pools = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in dump.lines() {
        let Some((_, entry)) = line.split_once("NOTICE: ") else {
            continue;
        };
        if let Some(name) = entry
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
        {
            current = (name != "global").then(|| name.to_owned());
            continue;
        }
        let (Some(pool), Some((key, value))) = (&current, entry.trim().split_once(" = ")) else {
            continue;
        };
        let settings = pools
            .entry(pool.clone())
            .or_insert_with(|| (String::new(), 0, 0));
        match key {
            "listen" => settings.0 = value.to_owned(),
            "pm.max_children" => settings.1 = value.parse().unwrap(),
            "pm.max_requests" => settings.2 = value.parse().unwrap(),
            _ => {}
        }
    }
    pools
}

#[test]
fn agrees_with_php_fpm_on_a_tree_exercising_every_rule() {
    let Some(binary) = fcgi_testkit::php::PhpFpm::find_binary() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().canonicalize().unwrap();
    let main = write(
        &prefix,
        "etc/php-fpm.conf",
        &format!(
            "[global]\nerror_log = {}/fpm.log\n; relative: php-fpm takes it from the prefix (-p)\ninclude=etc/pool.d/*.conf\n",
            prefix.display()
        ),
    );
    write(
        &prefix,
        "etc/pool.d/a.conf",
        &format!(
            "[alpha]\nuser = nobody\nlisten = \"{}/${{FCGATE_ORACLE_DIR}}/$pool.sock\" ; quoted\npm = static\npm.max_children = ${{FCGATE_ORACLE_CHILDREN}}\npm.max_requests = 100 ; comment\n\n[beta]\nuser = nobody\nlisten = '127.0.0.1:19001'\npm = ondemand\npm.max_children = 4\npm.process_idle_timeout = 10s\n",
            prefix.display()
        ),
    );
    // Sorted after a.conf: no header, so it continues [beta]; then reopens alpha as ALPHA.
    write(
        &prefix,
        "etc/pool.d/b.conf",
        "pm.max_children = 9\npm.max_requests = 7\n[ALPHA]\npm.max_requests = 200\n",
    );
    write(&prefix, "etc/pool.d/c.conf.disabled", "[gamma]\n");

    let output = Command::new(&binary)
        .arg("-tt")
        .arg("-y")
        .arg(&main)
        .arg("-p")
        .arg(&prefix)
        .env("FCGATE_ORACLE_DIR", "sockets")
        .env("FCGATE_ORACLE_CHILDREN", "6")
        .output()
        .unwrap();
    let dump = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "php-fpm -tt refused the tree:\n{dump}"
    );
    let expected = dumped_pools(&dump);

    let env = |name: &str| match name {
        "FCGATE_ORACLE_DIR" => Some("sockets".to_owned()),
        "FCGATE_ORACLE_CHILDREN" => Some("6".to_owned()),
        _ => None,
    };
    let pools = read_pools_with_env(&main, &env).unwrap();
    let read: BTreeMap<String, (String, u32, u64)> = pools
        .iter()
        .map(|pool| {
            let settings = (
                pool.listen.clone().unwrap_or_default(),
                pool.max_children.unwrap_or(0),
                pool.max_requests.unwrap_or(0),
            );
            (pool.name.clone(), settings)
        })
        .collect();

    assert_eq!(read, expected, "php-fpm -tt dump:\n{dump}");
    assert_eq!(
        expected.get("alpha").map(|settings| settings.1),
        Some(6),
        "the tree must exercise ${{VAR}}"
    );
}
