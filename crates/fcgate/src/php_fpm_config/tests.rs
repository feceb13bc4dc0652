#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use super::*;

fn write(root: &Path, relative: &str, text: &str) -> PathBuf {
    let path = root.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap();
    path
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn read(path: &Path) -> Vec<FpmPool> {
    read_pools_with_env(path, &no_env).unwrap()
}

fn named<'a>(pools: &'a [FpmPool], name: &str) -> &'a FpmPool {
    pools.iter().find(|pool| pool.name == name).unwrap()
}

fn unix(path: impl Into<PathBuf>) -> Address {
    Address::Unix(path.into())
}

fn tcp(host_port: &str) -> Address {
    Address::parse(host_port).unwrap()
}

#[test]
fn debian_layout_global_section_and_absolute_include() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let main = write(
        root,
        "php-fpm.conf",
        &format!(
            "[global]\npid = /run/php/php8.2-fpm.pid\n; pm.max_children = 99\ninclude={}/pool.d/*.conf\n",
            root.display()
        ),
    );
    let www = write(
        root,
        "pool.d/www.conf",
        "[www]\nuser = www-data\nlisten = /run/php/php8.2-fpm.sock\npm = dynamic\n\npm.max_children = 5\npm.max_requests = 500\n",
    );
    let api = write(
        root,
        "pool.d/api.conf",
        "[api]\nlisten = 127.0.0.1:9001\npm = OnDemand\npm.max_children = 12\npm.process_idle_timeout = 10s\n",
    );
    write(root, "pool.d/notes.txt", "[ignored]\npm.max_children = 1\n");

    let pools = read(&main);

    let names: Vec<&str> = pools.iter().map(|pool| pool.name.as_str()).collect();
    assert_eq!(
        names,
        ["api", "www"],
        "glob results are read in sorted order"
    );
    assert_eq!(
        pools[1],
        FpmPool {
            name: "www".into(),
            listen: Some("/run/php/php8.2-fpm.sock".into()),
            pm: Some("dynamic".into()),
            max_children: Some(5),
            max_requests: Some(500),
            process_idle_timeout: None,
            defined_in: www.clone(),
            max_children_source: Some(ConfigLine { path: www, line: 6 }),
        }
    );
    assert_eq!(pools[0].pm.as_deref(), Some("ondemand"));
    assert_eq!(pools[0].process_idle_timeout.as_deref(), Some("10s"));
    assert_eq!(pools[0].defined_in, api);
}

#[test]
fn a_single_pool_file_reads_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "www.conf",
        "[www]\nlisten = 9000\npm = static\npm.max_children = 2\n",
    );
    let pools = read(&file);
    assert_eq!(pools.len(), 1);
    assert_eq!(pools[0].max_children, Some(2));
    assert_eq!(pools[0].listen.as_deref(), Some("9000"));
}

#[test]
fn relative_include_resolves_against_the_including_directory() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(dir.path(), "fpm/php-fpm.conf", "include = pool.d/*.conf\n");
    write(
        dir.path(),
        "fpm/pool.d/www.conf",
        "[www]\npm.max_children = 3\n",
    );
    assert_eq!(read(&main)[0].max_children, Some(3));
}

#[test]
fn relative_include_falls_back_to_a_prefix_above_the_file() {
    // The official Docker image: /usr/local/etc/php-fpm.conf has `include=etc/php-fpm.d/*.conf`,
    // relative to php-fpm's prefix /usr/local.
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("usr/local");
    let main = write(
        &prefix,
        "etc/php-fpm.conf",
        "[global]\ninclude=etc/php-fpm.d/*.conf\n",
    );
    let www = write(
        &prefix,
        "etc/php-fpm.d/www.conf",
        "[www]\nlisten = 127.0.0.1:9000\npm.max_children = 5\n",
    );
    write(
        &prefix,
        "etc/php-fpm.d/zz-docker.conf",
        "[global]\ndaemonize = no\n[www]\nlisten = 9000\n",
    );

    let pools = read(&main);

    assert_eq!(pools.len(), 1);
    assert_eq!(
        pools[0].listen.as_deref(),
        Some("9000"),
        "zz-docker.conf is read last and wins"
    );
    assert_eq!(pools[0].defined_in, www.canonicalize().unwrap());
}

#[test]
fn later_settings_win_and_a_reopened_section_is_the_same_pool() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(
        dir.path(),
        "php-fpm.conf",
        "[www]\npm.max_children = 5\npm.max_children = 6\ninclude = conf.d/*.conf\n[other]\nlisten = 9002\n",
    );
    let override_file = write(
        dir.path(),
        "conf.d/override.conf",
        "[WWW]\nPM.MAX_CHILDREN = 8\npm = static\n",
    );

    let pools = read(&main);

    assert_eq!(pools.len(), 2, "[WWW] reopens [www]");
    let www = named(&pools, "www");
    assert_eq!(www.max_children, Some(8));
    assert_eq!(www.pm.as_deref(), Some("static"));
    assert_eq!(www.defined_in, main);
    assert_eq!(
        www.max_children_source,
        Some(ConfigLine {
            path: override_file,
            line: 2
        })
    );
    assert_eq!(named(&pools, "other").listen.as_deref(), Some("9002"));
}

#[test]
fn the_current_section_carries_into_and_out_of_included_files() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(
        dir.path(),
        "php-fpm.conf",
        "[www]\ninclude = www-extra.conf\npm.max_requests = 10\n",
    );
    // No header: these lines belong to [www], as in php-fpm; then [second] stays current.
    write(
        dir.path(),
        "www-extra.conf",
        "pm.max_children = 4\n[second]\npm.max_children = 1\n",
    );

    let pools = read(&main);

    assert_eq!(named(&pools, "www").max_children, Some(4));
    assert_eq!(named(&pools, "www").max_requests, None);
    assert_eq!(named(&pools, "second").max_requests, Some(10));
}

#[test]
fn global_section_settings_belong_to_no_pool() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(
        dir.path(),
        "php-fpm.conf",
        "listen = /before/any/section.sock\n[www]\npm.max_children = 2\n[Global]\npm.max_children = 50\nlisten = /x.sock\n",
    );
    let pools = read(&main);
    assert_eq!(pools[0].max_children, Some(2));
    assert_eq!(pools[0].listen, None);
}

#[test]
fn pool_name_and_environment_variables_expand_in_listen() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(
        dir.path(),
        "pools.conf",
        "[alpha]\nlisten = ${SOCKETS}/$pool.sock\n[beta]\nlisten = \"${SOCKETS}/$pool-$pool.sock\"\nprefix = /srv/$pool\n[gamma]\nlisten = ${UNSET}/gamma.sock\n",
    );
    let env = |name: &str| (name == "SOCKETS").then(|| "/run/php".to_owned());

    let pools = read_pools_with_env(&main, &env).unwrap();

    assert_eq!(
        named(&pools, "alpha").listen.as_deref(),
        Some("/run/php/alpha.sock")
    );
    assert_eq!(
        named(&pools, "beta").listen.as_deref(),
        Some("/run/php/beta-beta.sock")
    );
    assert_eq!(
        named(&pools, "gamma").listen.as_deref(),
        Some("/gamma.sock")
    );
}

#[test]
fn relative_unix_listen_hangs_off_an_absolute_pool_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(
        dir.path(),
        "pools.conf",
        "[a]\nprefix = /srv/$pool\nlisten = run/fpm.sock\n[b]\nprefix = /srv/b\nlisten = 9000\n[c]\nlisten = run/c.sock\n",
    );
    let pools = read(&main);
    assert_eq!(
        named(&pools, "a").listen.as_deref(),
        Some("/srv/a/run/fpm.sock")
    );
    assert_eq!(named(&pools, "b").listen.as_deref(), Some("9000"));
    assert_eq!(named(&pools, "c").listen.as_deref(), Some("run/c.sock"));
}

#[test]
fn syntax_errors_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(
        dir.path(),
        "php-fpm.conf",
        "[global]\ninclude = pool.d/*.conf\n",
    );
    let broken = write(
        dir.path(),
        "pool.d/www.conf",
        "[www]\n; fine\nlisten = \"/run/php.sock\n",
    );

    let error = read_pools_with_env(&main, &no_env).unwrap_err();

    let PhpFpmConfigError::Syntax { at, message } = &error else {
        panic!("expected a syntax error, got {error:?}");
    };
    assert_eq!(
        at,
        &ConfigLine {
            path: broken.clone(),
            line: 3
        }
    );
    assert!(message.contains("unterminated double quote"), "{message}");
    assert!(
        error
            .to_string()
            .starts_with(&format!("{}:3: ", broken.display())),
        "{error}"
    );
}

#[test]
fn a_setting_that_is_not_a_number_names_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "www.conf", "[www]\npm.max_children = five\n");
    let error = read_pools_with_env(&file, &no_env).unwrap_err();
    assert!(
        matches!(&error, PhpFpmConfigError::InvalidNumber { at, key, value }
            if at.line == 2 && key == "pm.max_children" && value == "five"),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!(
            "{}:2: pm.max_children = `five` is not a whole number",
            file.display()
        )
    );
}

#[test]
fn an_include_cycle_stops_at_php_fpms_depth_limit() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(
        dir.path(),
        "php-fpm.conf",
        "[www]\n\ninclude = php-fpm.conf\n",
    );
    let error = read_pools_with_env(&main, &no_env).unwrap_err();
    assert!(
        matches!(&error, PhpFpmConfigError::IncludeTooDeep { at } if at.path == main.canonicalize().unwrap() && at.line == 3),
        "{error:?}"
    );
}

#[test]
fn includes_nest_up_to_five_files() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(dir.path(), "f0.conf", "include = f1.conf\n");
    for level in 1..4 {
        write(
            dir.path(),
            &format!("f{level}.conf"),
            &format!("include = f{}.conf\n", level + 1),
        );
    }
    write(dir.path(), "f4.conf", "[deep]\npm.max_children = 7\n");
    assert_eq!(read(&main)[0].max_children, Some(7));

    write(dir.path(), "f4.conf", "include = f5.conf\n");
    write(dir.path(), "f5.conf", "[deeper]\n");
    let error = read_pools_with_env(&main, &no_env).unwrap_err();
    assert!(
        matches!(error, PhpFpmConfigError::IncludeTooDeep { .. }),
        "{error:?}"
    );
}

#[test]
fn a_missing_file_is_unreadable_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.conf");
    let error = read_pools(&missing).unwrap_err();
    assert!(
        matches!(&error, PhpFpmConfigError::Unreadable { path, included_from: None, .. } if *path == missing),
        "{error:?}"
    );
    assert!(
        error.to_string().contains(&missing.display().to_string()),
        "{error}"
    );
}

#[test]
fn no_pools_reports_includes_that_matched_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(
        dir.path(),
        "php-fpm.conf",
        "[global]\ninclude=/nonexistent/fcgate/pool.d/*.conf\n",
    );
    let error = read_pools_with_env(&main, &no_env).unwrap_err();
    let text = error.to_string();
    assert!(
        matches!(&error, PhpFpmConfigError::NoPools { unmatched_includes, .. } if unmatched_includes.len() == 1),
        "{error:?}"
    );
    assert!(text.contains("/nonexistent/fcgate/pool.d/*.conf"), "{text}");
    assert!(text.contains("php-fpm.conf:2"), "{text}");
}

fn pool(name: &str, listen: Option<&str>, max_children: Option<u32>) -> FpmPool {
    let defined_in = PathBuf::from(format!("/etc/php/pool.d/{name}.conf"));
    FpmPool {
        name: name.into(),
        listen: listen.map(Into::into),
        pm: Some("static".into()),
        max_children,
        max_requests: None,
        process_idle_timeout: None,
        max_children_source: max_children.map(|_| ConfigLine {
            path: defined_in.clone(),
            line: 4,
        }),
        defined_in,
    }
}

#[test]
fn tcp_listen_forms_match_by_port_and_reachable_host() {
    for (listen, address, expected) in [
        ("127.0.0.1:9000", "127.0.0.1:9000", true),
        ("127.0.0.1:9000", "localhost:9000", true),
        ("9000", "127.0.0.1:9000", true),
        ("9000", "localhost:9000", true),
        ("9000", "[::1]:9000", true),
        ("9000", "php:9000", true),
        ("0.0.0.0:9000", "127.0.0.1:9000", true),
        ("*:9000", "10.1.2.3:9000", true),
        ("[::]:9000", "localhost:9000", true),
        ("[::1]:9000", "localhost:9000", true),
        ("[::1]:9000", "[::1]:9000", true),
        ("localhost:9000", "127.0.0.1:9000", true),
        ("127.0.0.2:9000", "127.0.0.1:9000", true),
        ("10.1.2.3:9000", "10.1.2.3:9000", true),
        ("PHP:9000", "php:9000", true),
        ("127.0.0.1:9000", "0.0.0.0:9000", true),
        // A loopback socket of the other family cannot take the connect.
        ("[::1]:9000", "127.0.0.1:9000", false),
        ("127.0.0.1:9000", "[::1]:9000", false),
        ("127.0.0.1:9000", "127.0.0.1:9001", false),
        ("9001", "localhost:9000", false),
        ("10.1.2.3:9000", "127.0.0.1:9000", false),
        ("10.1.2.3:9000", "php:9000", false),
        ("127.0.0.1:99999", "127.0.0.1:9000", false),
        ("/run/php/fpm.sock", "127.0.0.1:9000", false),
    ] {
        assert_eq!(
            listen::serves(listen, &tcp(address)),
            expected,
            "listen {listen} vs {address}"
        );
    }
}

#[test]
fn unix_listen_matches_the_same_socket_path() {
    let sock = "/run/php/php8.2-fpm.sock";
    assert!(listen::serves(sock, &unix(sock)));
    assert!(!listen::serves(sock, &unix("/run/php/php8.1-fpm.sock")));
    assert!(!listen::serves("9000", &unix(sock)));
    assert!(!listen::serves(sock, &tcp("127.0.0.1:9000")));
    // Relative to php-fpm's unknown prefix: any path ending with it.
    assert!(listen::serves(
        "var/run/fpm.sock",
        &unix("/usr/local/var/run/fpm.sock")
    ));
    assert!(!listen::serves(
        "run/fpm.sock",
        &unix("/usr/local/var/run/other.sock")
    ));
}

#[test]
fn unix_listen_matches_through_a_symlinked_directory() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("run");
    std::fs::create_dir(&real).unwrap();
    let link = dir.path().join("var-run");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let listen = real.join("php.sock").display().to_string();
    assert!(listen::serves(&listen, &unix(link.join("php.sock"))));
    assert!(!listen::serves(&listen, &unix(link.join("other.sock"))));
}

#[test]
fn pool_for_prefers_the_named_pool_case_insensitively() {
    let pools = [
        pool("www", Some("9000"), Some(5)),
        pool("admin", Some("9001"), Some(2)),
    ];
    let found = pool_for(&pools, &tcp("127.0.0.1:9000"), Some("ADMIN")).unwrap();
    assert_eq!(found.name, "admin");

    let error = pool_for(&pools, &tcp("127.0.0.1:9000"), Some("api")).unwrap_err();
    let text = error.to_string();
    assert!(
        matches!(error, PhpFpmConfigError::UnknownPool { .. }),
        "{error:?}"
    );
    assert!(
        text.contains("`api`")
            && text.contains("[www] listen = 9000")
            && text.contains("[admin] listen = 9001"),
        "{text}"
    );
}

#[test]
fn pool_for_picks_the_pool_listening_on_the_address() {
    let pools = [
        pool("www", Some("/run/php/www.sock"), Some(5)),
        pool("api", Some("127.0.0.1:9001"), Some(8)),
        pool("unset", None, Some(1)),
    ];
    assert_eq!(
        pool_for(&pools, &unix("/run/php/www.sock"), None)
            .unwrap()
            .name,
        "www"
    );
    assert_eq!(
        pool_for(&pools, &tcp("localhost:9001"), None).unwrap().name,
        "api"
    );

    let error = pool_for(&pools, &tcp("127.0.0.1:9000"), None).unwrap_err();
    let text = error.to_string();
    assert!(
        matches!(error, PhpFpmConfigError::NoMatchingPool { .. }),
        "{error:?}"
    );
    assert!(text.contains("127.0.0.1:9000"), "{text}");
    assert!(
        text.contains("[www] listen = /run/php/www.sock (/etc/php/pool.d/www.conf)"),
        "{text}"
    );
    assert!(text.contains("[unset] listen = unset"), "{text}");
}

#[test]
fn pool_for_falls_back_to_the_only_pool() {
    let pools = [pool("www", Some("/var/run/php/container.sock"), Some(5))];
    let found = pool_for(&pools, &unix("/srv/mounted/php.sock"), None).unwrap();
    assert_eq!(found.name, "www");
}

#[test]
fn pool_for_refuses_to_guess_between_pools_on_one_address() {
    let pools = [
        pool("a", Some("9000"), Some(5)),
        pool("b", Some("127.0.0.1:9000"), Some(6)),
    ];
    let error = pool_for(&pools, &tcp("127.0.0.1:9000"), None).unwrap_err();
    assert!(
        matches!(&error, PhpFpmConfigError::AmbiguousPool { pools, .. } if pools.len() == 2),
        "{error:?}"
    );
    assert!(pool_for(&[], &tcp("127.0.0.1:9000"), None).is_err());
}

#[test]
fn max_children_for_describes_where_the_figure_comes_from() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(
        dir.path(),
        "php-fpm.conf",
        "[global]\ninclude = pool.d/*.conf\n",
    );
    let www = write(
        dir.path(),
        "pool.d/www.conf",
        "[www]\nlisten = /run/php/www.sock\npm = static\npm.max_children = 5\n",
    );
    write(
        dir.path(),
        "pool.d/api.conf",
        "[api]\nlisten = 9001\npm.max_children = 3\n",
    );

    let (max, description) = max_children_for(&main, &unix("/run/php/www.sock"), None).unwrap();
    assert_eq!(max, 5);
    assert_eq!(
        description,
        format!("pm.max_children = 5 in {}:4 [www]", www.display())
    );

    let (max, _) = max_children_for(&main, &unix("/elsewhere.sock"), Some("api")).unwrap();
    assert_eq!(max, 3);
}

#[test]
fn max_children_for_says_when_it_fell_back_to_the_only_pool() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "www.conf",
        "[www]\nlisten = /var/run/php.sock\npm.max_children = 4\n",
    );
    let (max, description) = max_children_for(&file, &unix("/mnt/php.sock"), None).unwrap();
    assert_eq!(max, 4);
    assert!(
        description.ends_with("[www] (the only pool; its listen = /var/run/php.sock does not name unix:/mnt/php.sock)"),
        "{description}"
    );
}

#[test]
fn max_children_for_refuses_a_missing_or_zero_figure() {
    let dir = tempfile::tempdir().unwrap();
    let missing = write(dir.path(), "missing.conf", "[www]\nlisten = 9000\n");
    let error = max_children_for(&missing, &tcp("127.0.0.1:9000"), None).unwrap_err();
    assert!(
        matches!(&error, PhpFpmConfigError::NoMaxChildren { pool, .. } if pool == "www"),
        "{error:?}"
    );

    let zero = write(
        dir.path(),
        "zero.conf",
        "[www]\nlisten = 9000\npm.max_children = 0\n",
    );
    let error = max_children_for(&zero, &tcp("127.0.0.1:9000"), None).unwrap_err();
    assert!(
        matches!(&error, PhpFpmConfigError::ZeroMaxChildren { at, .. } if at.line == 3),
        "{error:?}"
    );
}

/// Debian's packaged config, when php8.2-fpm is installed here (optional: nothing is run).
#[test]
fn reads_debians_packaged_config_when_present() {
    let main = Path::new("/etc/php/8.2/fpm/php-fpm.conf");
    if !main.exists() {
        return;
    }
    let pools = read_pools(main).unwrap();
    let www = named(&pools, "www");
    assert_eq!(www.max_children, Some(5));
    assert_eq!(www.listen.as_deref(), Some("/run/php/php8.2-fpm.sock"));
    assert_eq!(
        www.defined_in,
        Path::new("/etc/php/8.2/fpm/pool.d/www.conf")
    );

    let (max, description) =
        max_children_for(main, &unix("/run/php/php8.2-fpm.sock"), None).unwrap();
    assert_eq!(max, 5);
    assert!(
        description.starts_with("pm.max_children = 5 in /etc/php/8.2/fpm/pool.d/www.conf:"),
        "{description}"
    );
}

mod against_php_fpm;
