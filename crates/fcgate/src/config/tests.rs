//! Tests of the whole pipeline: file text, flags, validation, and the example file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use clap::Parser;

use super::*;

fn parse_args(args: &[&str]) -> Cli {
    Cli::try_parse_from(std::iter::once("fcgate").chain(args.iter().copied())).unwrap()
}

fn validate_text(text: &str) -> Result<Config, ConfigError> {
    parse_file_text(text)?.validate()
}

/// The error text for `text`, which must be refused.
fn refusal(text: &str) -> String {
    match validate_text(text) {
        Ok(config) => panic!("accepted {text:?} as {config:?}"),
        Err(error) => error.to_string(),
    }
}

fn example_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/fcgate.toml")
}

#[test]
fn defaults_without_file_or_flags() {
    let config = load(&parse_args(&[])).unwrap();
    assert_eq!(
        config.listen,
        vec!["127.0.0.1:8080".parse::<ListenSpec>().unwrap()]
    );
    assert_eq!(config.site.mode, SiteMode::App);
    assert!(!config.site.underscores_in_headers);
    assert!(config.site.extra_params.is_empty());
    assert_eq!(
        config.limits,
        ClientLimits {
            client_max_body_size: 8 << 20,
            client_body_buffer_size: 64 << 10,
            response_buffer_size: 256 << 10,
            max_response_buffer: 1 << 30,
            client_header_timeout: Duration::from_secs(30),
            max_request_body_buffer_total: 1 << 30,
            client_body_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            head: crate::request_guard::HeadLimits {
                max_request_target: 8 << 10,
                max_header_line: 8 << 10,
                max_request_head: 32 << 10,
                allow_trace: false,
            },
            http2: Http2Limits {
                max_concurrent_streams: 128,
                stream_window: 1 << 20,
                connection_window: 1 << 20,
            },
        }
    );
    assert!(config.upstream.servers.is_empty());
    // Except one: an abandoned request keeps its slot until the backend has finished it.
    assert_eq!(
        config.upstream.pool,
        PoolConfig {
            abort_drain_timeout: config.upstream.pool.read_timeout,
            ..PoolConfig::default()
        }
    );
    assert_eq!(config.shutdown_timeout, Duration::from_secs(10));
    assert!(config.max_client_connections >= 16);
    let refused = config.require_servers().unwrap_err().to_string();
    assert!(refused.starts_with("upstream.servers:"), "{refused}");
}

#[test]
fn example_file_loads_and_validates() {
    let path = example_path();
    let path_text = path.to_str().unwrap();
    let config = load(&parse_args(&["--config", path_text])).unwrap();
    assert_eq!(
        config.upstream.servers,
        [UpstreamServer::new(Address::Unix(PathBuf::from(
            "/run/php/php-fpm.sock"
        )))]
    );
    // Every value the example spells out is the default; the example must not drift from it.
    let mut expected = RawConfig::default().validate().unwrap();
    expected
        .upstream
        .servers
        .clone_from(&config.upstream.servers);
    assert_eq!(config, expected);
    check(&parse_args(&["check", "--config", path_text])).unwrap();
}

#[test]
fn example_file_in_php_mode() {
    let root = tempfile::tempdir().unwrap();
    let root_text = root.path().to_str().unwrap();
    let cli = parse_args(&[
        "--config",
        example_path().to_str().unwrap(),
        "--root",
        root_text,
    ]);
    let config = load(&cli).unwrap();
    let SiteMode::Php(site) = config.site.mode else {
        panic!("root given but not in PHP mode");
    };
    assert_eq!(*site.root, *root.path().canonicalize().unwrap());
    assert_eq!(site.index, "index.php");
    assert_eq!(site.script_extensions, ["php"]);
    assert!(site.front_controller);
    assert_eq!(
        site.directory_without_index,
        DirectoryWithoutIndex::Forbidden
    );
}

#[test]
fn check_requires_servers() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("no-servers.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:9999\"\n").unwrap();
    let cli = parse_args(&["check", "--config", file.to_str().unwrap()]);
    let refused = check(&cli).unwrap_err().to_string();
    assert!(refused.starts_with("upstream.servers:"), "{refused}");
}

#[test]
fn missing_file_is_named() {
    let cli = parse_args(&["--config", "/nonexistent/fcgate.toml"]);
    let refused = load(&cli).unwrap_err().to_string();
    assert!(refused.contains("/nonexistent/fcgate.toml"), "{refused}");
}

#[test]
fn parse_errors_carry_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:1\"\n[upstream]\nmax_con = 4\n").unwrap();
    let refused = load(&parse_args(&["--config", file.to_str().unwrap()]))
        .unwrap_err()
        .to_string();
    assert!(refused.contains("bad.toml"), "{refused}");
    assert!(refused.contains("line 3"), "{refused}");
    assert!(refused.contains("max_con"), "{refused}");
    assert!(
        refused.contains("3 | max_con = 4\n  | ^^^^^^^"),
        "{refused}"
    );
}

#[test]
fn value_errors_carry_the_file_line_column_and_caret() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    let text =
        "listen = \"127.0.0.1:1\"\n[upstream]\nservers = [\"127.0.0.1:9000\"]\nmax_conns = 0\n";
    std::fs::write(&file, text).unwrap();
    let path = file.to_str().unwrap();
    let refused = load(&parse_args(&["--config", path]))
        .unwrap_err()
        .to_string();
    assert_eq!(
        refused,
        format!(
            "in {path}: line 4, column 13\n  |\n4 | max_conns = 0\n  |             ^\n\
             upstream.max_conns: must be at least 1"
        )
    );
    // A bad value given as a flag is not shown on a line of the file.
    std::fs::write(&file, "[upstream]\nservers = [\"127.0.0.1:9000\"]\n").unwrap();
    let flags = ["--config", path, "--upstream", "127.0.0.1:9000 weight=0"];
    let refused = load(&parse_args(&flags)).unwrap_err().to_string();
    assert!(refused.starts_with("upstream.servers[0]: "), "{refused}");
}

#[test]
fn every_number_type_is_named_as_the_docs_name_it() {
    for text in [
        "[compression]\ngzip_level = \"5\"",
        "[[rule]]\nprefix = \"/a\"\ndeny = \"403\"",
    ] {
        let refused = refusal(text);
        assert!(refused.contains("expected a whole number"), "{refused}");
        assert!(!refused.contains("expected i64") && !refused.contains("expected u16"));
    }
}

#[test]
fn unknown_keys_are_refused() {
    assert!(refusal("lisen = \"127.0.0.1:80\"").contains("lisen"));
    assert!(refusal("[upstream]\nmax_con = 4").contains("max_con"));
    // `[upstreams]` holds groups: a pool setting straight in it names what it expected.
    assert!(refusal("[upstreams]\nmax_conns = 4").contains("[upstreams.NAME]"));
}

#[test]
fn wrong_types_name_the_key() {
    for (text, key) in [
        ("listen = \"localhost\"", "listen"),
        ("listen = 8080", "listen"),
        ("front_controller = \"yes\"", "front_controller"),
        ("client_max_body_size = \"8MB\"", "client_max_body_size"),
        ("client_body_buffer_size = -1", "client_body_buffer_size"),
        ("shutdown_timeout = 10", "shutdown_timeout"),
        ("client_header_timeout = \"30\"", "client_header_timeout"),
        ("[upstream]\nmax_conns = \"four\"", "max_conns"),
        ("[upstream]\nmax_conns = -1", "max_conns"),
        ("[upstream]\nread_timeout = \"1 fortnight\"", "read_timeout"),
        ("[upstream]\nservers = \"unix:/a.sock\"", "servers"),
        ("[params]\nX = 1", "X"),
    ] {
        let refused = refusal(text);
        assert!(refused.contains(key), "{text:?} -> {refused}");
    }
}

#[test]
fn bad_values_name_the_key() {
    for (text, prefix) in [
        (
            "[upstream]\nmax_conns = 0",
            "upstream.max_conns: must be at least 1",
        ),
        (
            "[upstream]\nmax_conns = 2\nmax_idle = 3",
            "upstream.max_idle:",
        ),
        (
            "[upstream]\nkeepalive_requests = 0",
            "upstream.keepalive_requests:",
        ),
        (
            "[upstream]\nmultiplex = \"yes\"",
            "upstream.multiplex: \"yes\" is not one of auto, on, force, off",
        ),
        (
            "[upstream]\nmax_reqs_per_conn = 0",
            "upstream.max_reqs_per_conn: must be at least 1",
        ),
        (
            "[upstream]\nkeepalive_timeout = \"0s\"",
            "upstream.keepalive_timeout:",
        ),
        (
            "[upstream]\nkeepalive_time = \"0s\"",
            "upstream.keepalive_time:",
        ),
        (
            "[upstream]\nconnect_timeout = \"0s\"",
            "upstream.connect_timeout:",
        ),
        (
            "[upstream]\nread_timeout = \"0s\"",
            "upstream.read_timeout:",
        ),
        (
            "[upstream]\nsend_timeout = \"0s\"",
            "upstream.send_timeout:",
        ),
        (
            "[upstream]\nqueue_timeout = \"0s\"",
            "upstream.queue_timeout:",
        ),
        (
            "[upstream]\nservers = [\"nowhere\"]",
            "upstream.servers[0]:",
        ),
        (
            "[upstream]\nservers = [\"a:1\", \"unix:\"]",
            "upstream.servers[1]:",
        ),
        (
            "[upstream]\nservers = [\"a:1\", \"a:1\"]",
            "upstream.servers[1]:",
        ),
        ("client_header_timeout = \"0s\"", "client_header_timeout:"),
        ("index = \"\"", "index:"),
        ("index = \"../index.php\"", "index:"),
        ("script_extensions = []", "script_extensions:"),
        ("script_extensions = [\"p/hp\"]", "script_extensions:"),
        ("root = \"/nonexistent/www\"", "root:"),
        ("root = \"/etc/hostname\"", "root:"),
        ("[params]\n\"BAD NAME\" = \"x\"", "params.BAD NAME:"),
    ] {
        let refused = refusal(text);
        assert!(refused.starts_with(prefix), "{text:?} -> {refused}");
    }
}

#[test]
fn front_controller_must_be_a_script() {
    let root = tempfile::tempdir().unwrap();
    let root_line = format!("root = {:?}\n", root.path().to_str().unwrap());
    let refused = refusal(&format!("{root_line}index = \"index.html\""));
    assert!(refused.starts_with("index:"), "{refused}");
    let config = validate_text(&format!(
        "{root_line}index = \"index.html\"\nfront_controller = false"
    ))
    .unwrap();
    assert!(matches!(config.site.mode, SiteMode::Php(ref site) if site.index == "index.html"));
}

#[test]
fn file_values_override_defaults() {
    let config = validate_text(
        "listen = \"[::1]:8443\"\nclient_max_body_size = 0\nresponse_buffer_size = \"1m\"\n\
         underscores_in_headers = true\nscript_extensions = [\".PHP\", \"phtml\"]\n\
         [params]\nZ = \"last\"\nA = \"first\"\n\
         [upstream]\nservers = [\"127.0.0.1:9000\", \"unix:/run/a.sock\"]\nmax_conns = 8\n\
         keepalive_timeout = \"1m 30s\"\nkeep_conn = false\n",
    )
    .unwrap();
    assert_eq!(
        config.listen,
        vec!["[::1]:8443".parse::<ListenSpec>().unwrap()]
    );
    assert_eq!(config.limits.client_max_body_size, u64::MAX);
    assert_eq!(config.limits.response_buffer_size, 1 << 20);
    assert!(config.site.underscores_in_headers);
    assert_eq!(
        config.site.extra_params,
        [
            ("A".to_owned(), "first".to_owned()),
            ("Z".to_owned(), "last".to_owned())
        ]
    );
    assert_eq!(config.upstream.servers.len(), 2);
    assert_eq!(
        config.upstream.pool.max_conns,
        Some(fcgi::client::ConfiguredCap::setting(8))
    );
    assert_eq!(
        config.upstream.pool.max_idle, None,
        "max_idle follows the cap"
    );
    assert_eq!(
        config.upstream.pool.keepalive_timeout,
        Duration::from_secs(90)
    );
    assert!(!config.upstream.pool.keep_conn);
}

#[test]
fn directory_without_index_is_forbidden_or_the_front_controller() {
    let root = tempfile::tempdir().unwrap();
    let root_line = format!("root = {:?}\n", root.path().to_str().unwrap());
    for (value, expected) in [
        ("forbidden", DirectoryWithoutIndex::Forbidden),
        ("front_controller", DirectoryWithoutIndex::FrontController),
    ] {
        let text = format!("{root_line}directory_without_index = \"{value}\"");
        let SiteMode::Php(site) = validate_text(&text).unwrap().site.mode else {
            panic!("not PHP mode");
        };
        assert_eq!(site.directory_without_index, expected);
    }
    let refused = refusal(&format!(
        "{root_line}directory_without_index = \"autoindex\""
    ));
    assert!(refused.starts_with("directory_without_index:"), "{refused}");
}

#[test]
fn script_lookup_cache_trusts_two_seconds_by_default_and_zero_turns_it_off() {
    let root = tempfile::tempdir().unwrap();
    let root_line = format!("root = {:?}\n", root.path().to_str().unwrap());
    let validity = |text: &str| {
        let SiteMode::Php(site) = validate_text(text).unwrap().site.mode else {
            panic!("not PHP mode");
        };
        (site.script_cache.validity(), site.script_cache.is_enabled())
    };
    assert_eq!(validity(&root_line), (Duration::from_secs(2), true));
    assert_eq!(
        validity(&format!("{root_line}script_lookup_cache = \"500ms\"")),
        (Duration::from_millis(500), true)
    );
    assert_eq!(
        validity(&format!("{root_line}script_lookup_cache = \"0s\"")),
        (Duration::ZERO, false)
    );
    let refused = refusal(&format!("{root_line}script_lookup_cache = \"soon\""));
    assert!(refused.contains("script_lookup_cache"), "{refused}");
    assert_eq!(
        validity(&format!("{root_line}script_lookup_cache = \"1h\"")),
        (Duration::from_secs(3600), true)
    );
    let refused = refusal(&format!("{root_line}script_lookup_cache = \"61m\""));
    assert!(
        refused.starts_with("script_lookup_cache:") && refused.contains("1h"),
        "{refused}"
    );
    // A [[site]] has its own.
    let sites = validate_text(&format!(
        "{root_line}[[site]]\nserver_names = [\"a.test\"]\n{root_line}script_lookup_cache = \"0s\""
    ))
    .unwrap()
    .sites;
    let SiteMode::Php(named) = &sites.named[0].site.mode else {
        panic!("not PHP mode");
    };
    assert!(!named.script_cache.is_enabled());
}

#[test]
fn follow_symlinks_has_four_modes_and_stays_within_the_root_by_default() {
    let root = tempfile::tempdir().unwrap();
    let root_line = format!("root = {:?}\n", root.path().to_str().unwrap());
    let SiteMode::Php(site) = validate_text(&root_line).unwrap().site.mode else {
        panic!("not PHP mode");
    };
    assert_eq!(site.follow_symlinks, FollowSymlinks::WithinRoot);
    for (value, expected) in [
        ("within_root", FollowSymlinks::WithinRoot),
        ("never", FollowSymlinks::Never),
        ("owner", FollowSymlinks::Owner),
        ("always", FollowSymlinks::Always),
    ] {
        let text = format!("{root_line}follow_symlinks = \"{value}\"");
        let SiteMode::Php(site) = validate_text(&text).unwrap().site.mode else {
            panic!("not PHP mode");
        };
        assert_eq!(site.follow_symlinks, expected);
        assert_eq!(expected.as_setting(), value);
    }
    let refused = refusal(&format!("{root_line}follow_symlinks = \"on\""));
    assert!(refused.starts_with("follow_symlinks:"), "{refused}");
}

#[test]
fn script_extensions_are_normalised() {
    let root = tempfile::tempdir().unwrap();
    let text = format!(
        "root = {:?}\nscript_extensions = [\".PHP\", \"phtml\"]",
        root.path().to_str().unwrap()
    );
    let SiteMode::Php(site) = validate_text(&text).unwrap().site.mode else {
        panic!("not PHP mode");
    };
    assert_eq!(site.script_extensions, ["php", "phtml"]);
    assert!(site.is_script_name("index.php"));
    assert!(site.is_script_name("INFO.PHP"));
    assert!(site.is_script_name("x.Phtml"));
    assert!(!site.is_script_name("php"));
    assert!(!site.is_script_name("x.php.txt"));
    assert!(!site.is_script_name("x.jpg"));
}

#[test]
fn flags_override_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fcgate.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:1111\"\nshutdown_timeout = \"3s\"\n\
         [params]\nKEEP = \"file\"\nSHARED = \"file\"\n\
         [upstream]\nservers = [\"127.0.0.1:9000\"]\nmax_conns = 8\nmax_idle = 2\n\
         read_timeout = \"10s\"\nkeep_conn = true\n",
    )
    .unwrap();
    let cli = parse_args(&[
        "--config",
        file.to_str().unwrap(),
        "--listen",
        "127.0.0.1:2222",
        "--max-conns",
        "2",
        "--read-timeout",
        "500ms",
        "--keep-conn=false",
        "--upstream",
        "unix:/run/b.sock",
        "--params",
        "SHARED=flag",
        "--client-max-body-size",
        "1k",
    ]);
    let config = load(&cli).unwrap();
    assert_eq!(
        config.listen,
        vec!["127.0.0.1:2222".parse::<ListenSpec>().unwrap()]
    );
    assert_eq!(
        config.shutdown_timeout,
        Duration::from_secs(3),
        "file value kept"
    );
    assert_eq!(config.limits.client_max_body_size, 1024);
    assert_eq!(
        config.upstream.servers,
        [UpstreamServer::new(Address::Unix("/run/b.sock".into()))]
    );
    let pool = &config.upstream.pool;
    assert_eq!(
        pool.max_conns,
        Some(fcgi::client::ConfiguredCap::setting(2))
    );
    assert_eq!(pool.max_idle, Some(2));
    assert_eq!(pool.read_timeout, Duration::from_millis(500));
    assert!(!pool.keep_conn);
    assert_eq!(
        config.site.extra_params,
        [
            ("KEEP".to_owned(), "file".to_owned()),
            ("SHARED".to_owned(), "flag".to_owned())
        ]
    );
}

#[test]
fn flag_values_are_validated_under_their_key() {
    let refused = load(&parse_args(&["--max-conns", "0"]))
        .unwrap_err()
        .to_string();
    assert_eq!(refused, "upstream.max_conns: must be at least 1");
    let refused = load(&parse_args(&["--upstream", "nowhere"]))
        .unwrap_err()
        .to_string();
    assert!(refused.starts_with("upstream.servers[0]:"), "{refused}");
    let refused = load(&parse_args(&["--root", "/nonexistent/www"]))
        .unwrap_err()
        .to_string();
    assert!(refused.starts_with("root:"), "{refused}");
}

#[test]
fn php_fpm_config_gives_each_server_the_pool_s_max_children() {
    let dir = tempfile::tempdir().unwrap();
    let pool_file = dir.path().join("www.conf");
    std::fs::write(
        &pool_file,
        "[www]\nlisten = /run/php/www.sock\npm = static\npm.max_children = 7\n\
         [api]\nlisten = 127.0.0.1:9001\npm.max_children = 3\n",
    )
    .unwrap();
    let text = format!(
        "[upstream]\nservers = [\"unix:/run/php/www.sock\", \"127.0.0.1:9001\"]\nphp_fpm_config = {:?}\n",
        pool_file.display().to_string()
    );
    let config = validate_text(&text).unwrap();
    let caps: Vec<_> = (0..2)
        .map(|index| config.upstream.pool_config_for(index).max_conns.unwrap())
        .collect();
    assert_eq!((caps[0].value, caps[1].value), (7, 3));
    assert!(
        caps[0].origin.contains("pm.max_children = 7"),
        "{}",
        caps[0].origin
    );
    assert!(caps[0].origin.contains("www.conf"), "{}", caps[0].origin);

    // An explicit max_conns wins over the file.
    let explicit = validate_text(&format!("{text}max_conns = 2\n")).unwrap();
    assert_eq!(
        explicit.upstream.pool_config_for(0).max_conns,
        Some(fcgi::client::ConfiguredCap::setting(2))
    );
}

#[test]
fn a_php_fpm_config_without_a_matching_pool_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let pool_file = dir.path().join("pools.conf");
    std::fs::write(
        &pool_file,
        "[a]\nlisten = /run/a.sock\npm.max_children = 2\n[b]\nlisten = /run/b.sock\npm.max_children = 2\n",
    )
    .unwrap();
    let text = format!(
        "[upstream]\nservers = [\"unix:/run/other.sock\"]\nphp_fpm_config = {:?}\n",
        pool_file.display().to_string()
    );
    assert!(
        refusal(&text).contains("upstream.php_fpm_config"),
        "{}",
        refusal(&text)
    );
    assert!(
        refusal("[upstream]\nservers = [\"unix:/x.sock\"]\nphp_fpm_pool = \"www\"\n")
            .contains("upstream.php_fpm_pool")
    );
}

#[test]
fn servers_take_nginx_style_weight_and_backup_options() {
    let config = validate_text(
        "[upstream]\nservers = [\"unix:/run/a.sock weight=3\", \"127.0.0.1:9000 backup\"]\n\
         max_fails = 2\nfail_timeout = \"5s\"\nhealth_interval = \"0s\"\nretry_non_idempotent = true\n",
    )
    .unwrap();
    let servers = &config.upstream.servers;
    assert_eq!((servers[0].weight, servers[0].backup), (3, false));
    assert_eq!((servers[1].weight, servers[1].backup), (1, true));
    let health = &config.upstream.health;
    assert_eq!(
        (
            health.max_fails,
            health.fail_timeout,
            health.health_interval
        ),
        (2, Duration::from_secs(5), Duration::ZERO)
    );
    assert!(config.upstream.retry_non_idempotent);

    for (text, key) in [
        (
            "servers = [\"unix:/a.sock weight=0\"]",
            "upstream.servers[0]",
        ),
        ("servers = [\"unix:/a.sock heavy\"]", "upstream.servers[0]"),
        ("servers = [\"unix:/a.sock backup\"]", "upstream.servers"),
        (
            "servers = [\"unix:/a.sock\"]\nmax_fails = 0",
            "upstream.max_fails",
        ),
    ] {
        let refused = refusal(&format!("[upstream]\n{text}\n"));
        assert!(refused.starts_with(key), "{text}: {refused}");
    }
}

#[test]
fn php_fpm_max_requests_becomes_keepalive_requests_unless_set() {
    let dir = tempfile::tempdir().unwrap();
    let pool_file = dir.path().join("www.conf");
    std::fs::write(
        &pool_file,
        "[www]\nlisten = /run/php/www.sock\npm.max_children = 4\npm.max_requests = 500\n",
    )
    .unwrap();
    let base = format!(
        "[upstream]\nservers = [\"unix:/run/php/www.sock\"]\nphp_fpm_config = {:?}\n",
        pool_file.display().to_string()
    );
    let config = validate_text(&base).unwrap();
    assert_eq!(config.upstream.pool_config_for(0).keepalive_requests, 500);
    // Explicit settings win; the cap still comes from the file when max_conns is unset.
    let config = validate_text(&format!("{base}keepalive_requests = 77\n")).unwrap();
    let pool = config.upstream.pool_config_for(0);
    assert_eq!(pool.keepalive_requests, 77);
    assert_eq!(pool.max_conns.map(|cap| cap.value), Some(4));
    let config = validate_text(&format!("{base}max_conns = 2\n")).unwrap();
    let pool = config.upstream.pool_config_for(0);
    assert_eq!(
        (pool.max_conns.map(|cap| cap.value), pool.keepalive_requests),
        (Some(2), 500)
    );
}

#[test]
fn multiplexing_settings_reach_the_pool() {
    use fcgi::client::Multiplexing;
    for (text, mode) in [
        ("auto", Multiplexing::Auto),
        ("on", Multiplexing::On),
        ("force", Multiplexing::Force),
        ("off", Multiplexing::Off),
    ] {
        let config = validate_text(&format!(
            "max_response_buffer = \"4MiB\"\n[upstream]\nmultiplex = \"{text}\"\nmax_reqs_per_conn = 7"
        ))
        .unwrap();
        assert_eq!(config.upstream.pool.multiplex, mode);
        assert_eq!(config.upstream.pool.max_reqs_per_conn, 7);
        assert_eq!(config.limits.max_response_buffer, 4 << 20);
    }
    let unlimited = validate_text("max_response_buffer = 0").unwrap();
    assert_eq!(unlimited.limits.max_response_buffer, u64::MAX);
    let flags = load(&parse_args(&[
        "--multiplex",
        "force",
        "--max-reqs-per-conn",
        "3",
    ]))
    .unwrap();
    assert_eq!(flags.upstream.pool.multiplex, Multiplexing::Force);
    assert_eq!(flags.upstream.pool.max_reqs_per_conn, 3);
}

#[test]
fn a_param_longer_than_a_fastcgi_record_is_refused() {
    let text = format!(
        "listen = \"127.0.0.1:1\"\n[params]\nBIG = \"{}\"\n",
        "v".repeat(65_530)
    );
    let error = parse_file_text(&text).unwrap().validate().unwrap_err();
    assert!(error.to_string().contains("params.BIG"), "{error}");
}

/// The head limits keep every FastCGI param within one record (`validate_head_limits`): at most
/// 60 KiB for a header line and the head, 32 KiB for the target. The ceilings are allowed, a
/// byte more is refused naming the key and the reason, and so is less than 1 KiB.
#[test]
fn head_limits_above_their_ceilings_are_refused() {
    for (key, ceiling) in [
        ("max_header_line", 60 << 10),
        ("max_request_head", 60 << 10),
        ("max_request_target", 32 << 10),
    ] {
        let head = validate_text(&format!("{key} = {ceiling}"))
            .unwrap()
            .limits
            .head;
        let value = match key {
            "max_header_line" => head.max_header_line,
            "max_request_head" => head.max_request_head,
            _ => head.max_request_target,
        };
        assert_eq!(value, ceiling, "{key}");
        let refused = refusal(&format!("{key} = {}", ceiling + 1));
        let expected = format!(
            "{key}: must be at most {}KiB: every param must fit in one FastCGI record",
            ceiling >> 10
        );
        assert_eq!(refused, expected);
        let refused = refusal(&format!("{key} = 1023"));
        assert_eq!(refused, format!("{key}: must be at least 1KiB"));
    }
}

/// TRACE gets a 405 unless `allow_trace` says otherwise (nginx has no such setting: always 405).
#[test]
fn allow_trace_is_off_unless_set() {
    assert!(!validate_text("").unwrap().limits.head.allow_trace);
    assert!(
        validate_text("allow_trace = true")
            .unwrap()
            .limits
            .head
            .allow_trace
    );
}

#[test]
fn a_misspelt_key_gets_a_suggestion() {
    let error = parse_file_text("[upstream]\nmax_conn = 4\n").unwrap_err();
    assert!(
        error.to_string().contains("did you mean `max_conns`?"),
        "{error}"
    );
    let error = parse_file_text("listn = \"127.0.0.1:1\"\n").unwrap_err();
    assert!(
        error.to_string().contains("did you mean `listen`?"),
        "{error}"
    );
    // Nothing close: no guess.
    let error = parse_file_text("zzzzzzzzzzzz = 1\n").unwrap_err();
    assert!(!error.to_string().contains("did you mean"), "{error}");
}

#[test]
fn a_quoted_number_is_explained_in_plain_words() {
    let error = parse_file_text("[upstream]\nmax_conns = \"4\"\n").unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("expected a whole number, without quotes"),
        "{text}"
    );
    assert!(!text.contains("usize"), "{text}");
}

#[test]
fn log_format_is_text_or_json_from_the_flag_else_the_file() {
    assert_eq!(load(&parse_args(&[])).unwrap().log_format, LogFormat::Text);
    let refused = refusal("log_format = \"xml\"");
    assert_eq!(refused, "log_format: `xml` is not \"text\" or \"json\"");
    let refused = load(&parse_args(&["--log-format", "JSON"]))
        .unwrap_err()
        .to_string();
    assert!(refused.starts_with("log_format:"), "{refused}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fcgate.toml");
    std::fs::write(&file, "log_format = \"json\"\n").unwrap();
    let path = file.to_str().unwrap();
    assert_eq!(
        log_format(&parse_args(&["--config", path])),
        LogFormat::Json
    );
    assert_eq!(
        log_format(&parse_args(&["--config", path, "--log-format", "text"])),
        LogFormat::Text
    );
    assert_eq!(
        load(&parse_args(&["--config", path])).unwrap().log_format,
        LogFormat::Json
    );
    // The early read reports nothing and falls back to text; `load` names the problem.
    assert_eq!(
        log_format(&parse_args(&["--log-format", "xml"])),
        LogFormat::Text
    );
    assert_eq!(
        log_format(&parse_args(&["--config", "/nonexistent/fcgate.toml"])),
        LogFormat::Text
    );
    std::fs::write(&file, "log_format = \"json\"\nmax_con = 4\n").unwrap();
    assert_eq!(
        log_format(&parse_args(&["--config", path])),
        LogFormat::Json
    );
}

#[test]
fn workers_is_a_count_of_at_least_one_read_early_from_the_file() {
    assert_eq!(load(&parse_args(&[])).unwrap().workers, None);
    assert_eq!(refusal("workers = 0"), "workers: must be at least 1");
    let refused = refusal("workers = \"auto\"");
    assert!(refused.contains("a whole number"), "{refused}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fcgate.toml");
    let path = file.to_str().unwrap();
    std::fs::write(&file, "workers = 3\n").unwrap();
    assert_eq!(workers(&parse_args(&["--config", path])), Some(3));
    assert_eq!(
        load(&parse_args(&["--config", path])).unwrap().workers,
        Some(3)
    );
    // The early read reports nothing and gives the default; `load` names the problem.
    for bad in [
        "workers = 0\n",
        "workers = -2\n",
        "workers = \"two\"\n",
        "workers = [\n",
    ] {
        std::fs::write(&file, bad).unwrap();
        assert_eq!(workers(&parse_args(&["--config", path])), None, "{bad}");
        assert!(load(&parse_args(&["--config", path])).is_err(), "{bad}");
    }
    assert_eq!(workers(&parse_args(&[])), None);
}

#[test]
fn user_and_group_are_looked_up_at_load_time() {
    assert_eq!(validate_text("").unwrap().run_as, None);
    // `nobody` and `nogroup` exist on Debian; `root` is refused as the user to become.
    let run_as = validate_text("user = \"nobody\"").unwrap().run_as.unwrap();
    assert_eq!(run_as.user, "nobody");
    assert_ne!(run_as.uid, 0);
    assert!(run_as.groups.contains(&run_as.gid), "{run_as:?}");
    let with_group = validate_text("user = \"nobody\"\ngroup = \"root\"")
        .unwrap()
        .run_as
        .unwrap();
    assert_eq!(with_group.gid, 0);
    for (text, prefix) in [
        ("user = \"no-such-user-here\"", "user: there is no user"),
        ("user = \"root\"", "user: `root` is root"),
        (
            "user = \"nobody\"\ngroup = \"no-such-group-here\"",
            "group: there is no group",
        ),
        ("group = \"nogroup\"", "group: needs `user`"),
    ] {
        let refused = refusal(text);
        assert!(refused.starts_with(prefix), "{text:?} -> {refused}");
    }
}

#[test]
fn name_resolution_settings_take_nginx_style_addresses_and_default_to_the_system() {
    let config = validate_text("[upstream]\nservers = [\"php.internal:9000\"]\n").unwrap();
    assert_eq!(config.upstream.resolution, ResolutionConfig::default());
    assert_eq!(config.upstream.resolution.timeout, Duration::from_secs(5));

    let config = validate_text(
        "[upstream]\nresolver = [\"10.0.0.2\", \"127.0.0.1:5353\", \"[::1]:53\"]\n\
         resolve_interval = \"10s\"\nresolver_timeout = \"1s\"\n",
    )
    .unwrap();
    let resolution = &config.upstream.resolution;
    assert_eq!(
        resolution.name_servers,
        [
            "10.0.0.2:53".parse().unwrap(),
            "127.0.0.1:5353".parse().unwrap(),
            "[::1]:53".parse().unwrap()
        ]
    );
    assert_eq!(resolution.resolve_interval, Some(Duration::from_secs(10)));
    assert_eq!(resolution.timeout, Duration::from_secs(1));

    let flags = parse_args(&["--resolver", "127.0.0.1:5353", "--resolve-interval", "2s"]);
    let config = RawConfig::default()
        .merge_flags(&flags.settings)
        .validate()
        .unwrap();
    assert_eq!(
        config.upstream.resolution.name_servers,
        ["127.0.0.1:5353".parse().unwrap()]
    );
    assert_eq!(
        config.upstream.resolution.resolve_interval,
        Some(Duration::from_secs(2))
    );

    for (text, key) in [
        ("resolver = [\"dns.internal\"]", "upstream.resolver[0]"),
        (
            "resolver = [\"1.1.1.1\", \"1.1.1.1:dns\"]",
            "upstream.resolver[1]",
        ),
        ("resolve_interval = \"0s\"", "upstream.resolve_interval"),
        ("resolver_timeout = \"0s\"", "upstream.resolver_timeout"),
    ] {
        let message = refusal(&format!("[upstream]\n{text}\n"));
        assert!(
            message.starts_with(&format!("{key}: ")),
            "{text}: {message}"
        );
    }
}

#[test]
fn listen_takes_one_address_or_a_list_with_flags() {
    let config = validate_text(
        "listen = [\"0.0.0.0:443 tls\", \"0.0.0.0:80\", \"10.0.0.5:8081 proxy_protocol\"]\n\
         [tls]\ncertificates = [{ cert = \"/a.pem\", key = \"/a.key\" }]\n",
    )
    .unwrap();
    let listen: Vec<String> = config.listen.iter().map(ToString::to_string).collect();
    assert_eq!(
        listen,
        [
            "0.0.0.0:443 tls",
            "0.0.0.0:80",
            "10.0.0.5:8081 proxy_protocol"
        ]
    );
    assert!(config.serves_https());
    assert_eq!(config.tls.certificates[0].cert, PathBuf::from("/a.pem"));
    assert_eq!(config.tls.min_version, TlsVersion::Tls12);
    assert!(!config.tls.redirect_to_https);
}

#[test]
fn tls_settings_are_checked_against_the_listeners() {
    for (text, expected) in [
        ("listen = []", "listen: must list at least one address"),
        ("listen = [\"127.0.0.1:80\", \"127.0.0.1:80\"]", "listed twice"),
        ("listen = [\"127.0.0.1:80 h3\"]", "`h3` after the address"),
        ("listen = \"127.0.0.1:443 tls\"", "tls.certificates: a `listen` entry is marked `tls`"),
        (
            "[tls]\ncertificates = [{ cert = \"a\", key = \"b\" }]",
            "tls.certificates: no `listen` entry is marked `tls`",
        ),
        ("[tls]\nredirect_to_https = true", "tls.redirect_to_https"),
        (
            "listen = \"127.0.0.1:443 tls\"\n[tls]\ncertificates = [{ cert = \"a\", key = \"b\" }]\n\
             hsts = \"includeSubDomains\"",
            "tls.hsts",
        ),
        (
            "listen = \"127.0.0.1:443 tls\"\n[tls]\ncertificates = [{ cert = \"a\", key = \"b\" }]\n\
             min_version = \"1.1\"",
            "tls.min_version",
        ),
        ("[tls]\ncertificates = [{ cert = \"a\" }]", "key"),
    ] {
        let refused = refusal(text);
        assert!(refused.contains(expected), "{text}: {refused}");
    }
}

#[test]
fn hsts_and_the_redirect_are_kept() {
    let config = validate_text(
        "listen = [\"127.0.0.1:443 tls\", \"127.0.0.1:80\"]\n[tls]\n\
         certificates = [{ cert = \"a\", key = \"b\" }]\nredirect_to_https = true\n\
         hsts = \"max-age=31536000; includeSubDomains\"\nmin_version = \"1.3\"\n",
    )
    .unwrap();
    assert!(config.tls.redirect_to_https);
    assert_eq!(
        config.tls.hsts.unwrap(),
        "max-age=31536000; includeSubDomains"
    );
    assert_eq!(config.tls.min_version, TlsVersion::Tls13);
}

#[test]
fn listen_flags_replace_the_files_list() {
    let cli = Cli::try_parse_from([
        "fcgate",
        "--listen",
        "127.0.0.1:2222",
        "--listen",
        "127.0.0.1:2223 proxy_protocol",
    ])
    .unwrap();
    let raw = parse_file_text("listen = [\"127.0.0.1:1\"]").unwrap();
    let config = raw.merge_flags(&cli.settings).validate().unwrap();
    assert_eq!(config.listen.len(), 2);
    assert!(config.listen[1].proxy_protocol);
}

#[test]
fn trusted_proxies_are_cidr_blocks_or_addresses() {
    let config = validate_text(
        "trusted_proxies = [\"10.0.0.0/8\", \"192.0.2.7\", \"2001:db8::/32\"]\n\
         real_ip_header = \"Forwarded\"",
    )
    .unwrap();
    assert!(config
        .real_client
        .trusted
        .contains("10.1.2.3".parse().unwrap()));
    assert!(config
        .real_client
        .trusted
        .contains("192.0.2.7".parse().unwrap()));
    assert!(!config
        .real_client
        .trusted
        .contains("192.0.2.8".parse().unwrap()));
    assert_eq!(config.real_client.header, RealIpHeader::Forwarded);
    assert!(validate_text("").unwrap().real_client.trusted.is_empty());
    for (text, expected) in [
        (
            "trusted_proxies = [\"10.0.0.0/33\"]",
            "trusted_proxies: `10.0.0.0/33`",
        ),
        (
            "trusted_proxies = [\"proxy.local\"]",
            "trusted_proxies: `proxy.local`",
        ),
        (
            "real_ip_header = \"X-Forwarded-For\"",
            "real_ip_header: has no effect",
        ),
        (
            "trusted_proxies = [\"10.0.0.1\"]\nreal_ip_header = \"X-Real-IP\"",
            "real_ip_header: `X-Real-IP`",
        ),
    ] {
        let refused = refusal(text);
        assert!(refused.contains(expected), "{text}: {refused}");
    }
}

#[test]
fn acme_settings_have_defaults_and_are_checked() {
    let config = validate_text(
        "listen = [\"0.0.0.0:443 tls\", \"0.0.0.0:80\"]\n[acme]\n\
         domains = [\"Example.COM\", \"www.example.com.\"]\n",
    )
    .unwrap();
    let acme = config.acme.unwrap();
    assert_eq!(acme.domains, ["example.com", "www.example.com"]);
    assert_eq!(
        acme.directory,
        "https://acme-v02.api.letsencrypt.org/directory"
    );
    assert_eq!(acme.storage, PathBuf::from("/var/lib/fcgate/acme"));
    assert_eq!(
        acme.challenges,
        [AcmeChallenge::TlsAlpn01, AcmeChallenge::Http01]
    );
    // Without a plain listener, only TLS-ALPN-01 can be answered.
    let tls_only =
        validate_text("listen = \"0.0.0.0:443 tls\"\n[acme]\ndomains = [\"a.example\"]").unwrap();
    assert_eq!(
        tls_only.acme.unwrap().challenges,
        [AcmeChallenge::TlsAlpn01]
    );
    for (text, expected) in [
        ("[acme]\ndomains = [\"a.example\"]", "acme: certificates are for a `listen` entry"),
        ("listen = \"0.0.0.0:443 tls\"\n[acme]\ndomains = []", "acme.domains: must list"),
        (
            "listen = \"0.0.0.0:443 tls\"\n[acme]\ndomains = [\"*.example.com\"]",
            "a wildcard needs the dns-01 challenge",
        ),
        (
            "listen = \"0.0.0.0:443 tls\"\n[acme]\ndomains = [\"localhost\"]",
            "`localhost` is not a domain name",
        ),
        (
            "listen = \"0.0.0.0:443 tls\"\n[acme]\ndomains = [\"a.example\"]\ncontact = [\"me@a.example\"]",
            "acme.contact",
        ),
        (
            "listen = \"0.0.0.0:443 tls\"\n[acme]\ndomains = [\"a.example\"]\ndirectory = \"http://ca\"",
            "acme.directory",
        ),
        (
            "listen = \"0.0.0.0:443 tls\"\n[acme]\ndomains = [\"a.example\"]\nchallenges = [\"http-01\"]",
            "http-01 is answered on a plain listener",
        ),
        (
            "listen = \"0.0.0.0:443 tls\"\n[acme]\ndomains = [\"a.example\"]\nchallenges = [\"dns-01\"]",
            "`dns-01` is not",
        ),
    ] {
        let refused = refusal(text);
        assert!(refused.contains(expected), "{text}: {refused}");
    }
}

#[test]
fn http2_settings_have_nginx_like_defaults_and_rfc_ranges() {
    let http2 = validate_text("").unwrap().limits.http2;
    assert_eq!(http2.max_concurrent_streams, 128);
    assert_eq!(http2.stream_window, 1 << 20);
    assert_eq!(http2.connection_window, 1 << 20);
    let set = validate_text(
        "http2_max_concurrent_streams = 16\nhttp2_stream_window = \"64KiB\"\n\
         http2_connection_window = \"16MiB\"",
    )
    .unwrap()
    .limits
    .http2;
    assert_eq!(
        (
            set.max_concurrent_streams,
            set.stream_window,
            set.connection_window
        ),
        (16, 65_536, 16 << 20)
    );
    for (text, key) in [
        (
            "http2_max_concurrent_streams = 0",
            "http2_max_concurrent_streams",
        ),
        ("http2_stream_window = 1000", "http2_stream_window"),
        (
            "http2_connection_window = \"4GiB\"",
            "http2_connection_window",
        ),
    ] {
        let refused = refusal(text);
        assert!(refused.starts_with(key), "{text}: {refused}");
    }
}

#[test]
fn compression_is_on_for_static_files_and_off_for_scripts_by_default() {
    let compression = validate_text("").unwrap().compression;
    assert!(compression.static_files);
    assert!(!compression.scripts);
    assert!(compression.precompressed);
    assert_eq!(compression.encodings, crate::compression::Coding::ALL);
    assert_eq!(compression.min_length, 512);
    assert!(compression.types.iter().any(|name| name == "text/*"));
    assert!(compression.types.iter().any(|name| name == "image/svg+xml"));
    assert_eq!(
        (
            compression.gzip_level,
            compression.brotli_level,
            compression.zstd_level
        ),
        (5, 4, 3)
    );
}

#[test]
fn compression_settings_are_read_and_checked() {
    use crate::compression::Coding;
    let compression = validate_text(
        "[compression]\nstatic = false\nscripts = true\nencodings = [\"gzip\", \"br\"]\n\
         min_length = \"1k\"\ntypes = [\"Text/HTML\", \"application/*\"]\nprecompressed = false\n\
         gzip_level = 9\nbrotli_level = 0\nzstd_level = 19",
    )
    .unwrap()
    .compression;
    assert!(!compression.static_files && compression.scripts && !compression.precompressed);
    assert_eq!(compression.encodings, [Coding::Gzip, Coding::Brotli]);
    assert_eq!(compression.min_length, 1024);
    assert_eq!(compression.types, ["text/html", "application/*"]);
    assert_eq!(
        (
            compression.gzip_level,
            compression.brotli_level,
            compression.zstd_level
        ),
        (9, 0, 19)
    );
    for (text, expected) in [
        (
            "encodings = [\"deflate\"]",
            "compression.encodings: `deflate` is not",
        ),
        (
            "encodings = [\"br\", \"br\"]",
            "compression.encodings: `br` is listed twice",
        ),
        (
            "encodings = []",
            "compression.encodings: must name at least one",
        ),
        (
            "types = [\"*/*\"]",
            "compression.types: `*/*` is not a media type",
        ),
        (
            "types = [\"text\"]",
            "compression.types: `text` is not a media type",
        ),
        (
            "types = [\"text/html; charset=utf-8\"]",
            "compression.types",
        ),
        (
            "gzip_level = 0",
            "compression.gzip_level: must be from 1 to 9, not 0",
        ),
        (
            "brotli_level = 12",
            "compression.brotli_level: must be from 0 to 11",
        ),
        (
            "zstd_level = -1",
            "compression.zstd_level: must be from 1 to 19, not -1",
        ),
        ("min_length = \"1KB\"", "ambiguous"),
        ("gzip = true", "unknown field `gzip`"),
    ] {
        let text = format!("[compression]\n{text}");
        let refused = refusal(&text);
        assert!(refused.contains(expected), "{text}: {refused}");
    }
}

fn rules_config(rules: &str) -> Result<Config, String> {
    let root = tempfile::tempdir().unwrap();
    let text = format!("root = {:?}\n{rules}", root.path().to_str().unwrap());
    parse_file_text(&text)
        .map_err(|error| error.to_string())?
        .validate()
        .map_err(|error| error.to_string())
}

#[test]
fn the_built_in_rule_comes_first_in_php_mode_only() {
    let config = rules_config("[[rule]]\nprefix = \"/data/\"\ndeny = 404\n").unwrap();
    assert_eq!(config.site.rules.rules().len(), 2);
    assert_eq!(config.site.rules.label(1), "built-in rule 1");
    assert_eq!(config.site.rules.label(2), "rule 1");
    let config = rules_config("default_rules = false").unwrap();
    assert!(config.site.rules.is_empty());
    let app = validate_text("[[rule]]\nprefix = \"/x/\"\ndeny = 403\n").unwrap();
    assert_eq!(app.site.rules.rules().len(), 1);
}

#[test]
fn rule_mistakes_name_the_rule_and_say_what_is_right() {
    for (rules, expected) in [
        ("[[rule]]\ndeny = 404", "rule 1: says which paths"),
        ("[[rule]]\nprefix = \"/a\"\nregex = 'b'\ndeny = 404", "not several"),
        ("[[rule]]\nprefix = \"a/\"\ndeny = 404", "must start with `/`"),
        ("[[rule]]\nregex = '('\ndeny = 404", "rule 1: `regex`"),
        ("[[rule]]\nprefix = \"/a\"\ndeny = 500", "deny answers 403 or 404"),
        ("[[rule]]\nprefix = \"/a\"\ndeny = 404\nrewrite = \"/b\"", "at most one"),
        ("[[rule]]\nregex = '^/(a)$'\nrewrite = \"/b/$2\"", "has 1 group"),
        ("[[rule]]\nregex = '^/a'\nrewrite = \"http://x/\"", "use `return`"),
        ("[[rule]]\nprefix = \"/a\"\nreturn = 301", "give it a `location`"),
        (
            "[[rule]]\nprefix = \"/a\"\nreturn = { status = 404, location = \"/b\" }",
            "not a redirect",
        ),
        ("[[rule]]\nprefix = \"/a\"\nreturn = 99", "between 200 and 599"),
        ("[[rule]]\nprefix = \"/a\"", "does nothing"),
        (
            "[[rule]]\nprefix = \"/a\"\nheaders = { \"Content-Length\" = \"1\" }",
            "fcgate's to write",
        ),
        (
            "[[rule]]\nprefix = \"/a\"\nheaders = { \"bad name\" = \"1\" }",
            "not a header name",
        ),
        ("[[rule]]\nprefix = \"/a\"\nauth_basic = \"x\"", "go together"),
        (
            "[[rule]]\nprefix = \"/a\"\nauth_basic = \"x\"\nauth_basic_user_file = \"/nonexistent\"",
            "/nonexistent",
        ),
        ("[[rule]]\nprefix = \"/a\"\ndeny = 404\n[[rule]]\nprefix = \"/b\"", "rule 2:"),
        ("[[rule]]\nprefix = \"/a\"\nstatik = true", "statik"),
    ] {
        let error = rules_config(rules).unwrap_err();
        assert!(error.contains(expected), "{rules}\n=> {error}");
    }
    let app = validate_text("[[rule]]\nprefix = \"/u/\"\nstatic = true").unwrap_err();
    assert!(app.to_string().contains("need a `root`"), "{app}");
}

#[test]
fn rules_are_read_as_written() {
    let config = rules_config(
        r#"
[[rule]]
regex = '^/(?P<page>[a-z]+)$'
if_missing = true
rewrite = "/doku.php?id=${page}"

[[rule]]
exact = "/gone"
return = { status = 410, body = "gone" }

[[rule]]
prefix = "/uploads/"
static = true
add_headers = { "X-Robots-Tag" = "noindex" }

[[rule]]
regex = '\.css$'
expires = "30d"
"#,
    )
    .unwrap();
    let rules = &config.site.rules.rules()[1..];
    assert!(rules[0].if_missing);
    assert!(matches!(
        rules[0].ending,
        Some(crate::rules::Ending::Rewrite(_))
    ));
    assert!(matches!(
        rules[1].ending,
        Some(crate::rules::Ending::Return { ref body, .. }) if body.as_deref() == Some("gone")
    ));
    assert!(rules[2].static_only);
    assert!(matches!(
        rules[2].headers[0],
        crate::rules::HeaderAction::Add(..)
    ));
    assert_eq!(
        rules[3].headers,
        [crate::rules::HeaderAction::Expires(Duration::from_secs(
            30 * 86400
        ))]
    );
}

#[test]
fn sites_are_read_and_their_mistakes_name_the_site() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path().to_str().unwrap();
    let config = validate_text(&format!(
        "unknown_hosts = \"reject\"\n[[site]]\nserver_names = [\"a.example\"]\nroot = {root:?}\n\
         [[site.rule]]\nprefix = \"/x/\"\ndeny = 403\n[[site]]\nserver_names = [\"*.b.example\"]\n"
    ))
    .unwrap();
    assert_eq!(config.sites.named.len(), 2);
    assert_eq!(config.sites.unknown_hosts, UnknownHosts::Reject);
    // The built-in rule, then the site's own.
    assert_eq!(config.sites.named[0].site.rules.rules().len(), 2);
    assert!(config.site_for(Some(b"a.example")).is_some());
    assert!(config.site_for(Some(b"c.example")).is_none());
    for (text, expected) in [
        ("[[site]]\nroot = \"/x\"", "site 1: server_names:"),
        (
            "[[site]]\nserver_names = [\"a\"]\n[[site]]\nserver_names = [\"b\"]\nroot = \"/nonexistent\"",
            "site 2: root:",
        ),
        (
            "[[site]]\nserver_names = [\"a\"]\n[[site]]\nserver_names = [\"A\"]",
            "two sites",
        ),
        ("[[site]]\nserver_names = [\"a\"]\nlisten = \"x\"", "listen"),
        (
            "[[site]]\nserver_names = [\"a\"]\n[[site.rule]]\nprefix = \"/a\"",
            "site 1: rule 1: does nothing",
        ),
        ("unknown_hosts = \"421\"", "unknown_hosts:"),
    ] {
        let refused = refusal(text);
        assert!(refused.contains(expected), "{text}\n=> {refused}");
    }
}

#[test]
fn error_pages_map_error_statuses_to_paths() {
    let config =
        validate_text("error_pages = { 404 = \"/404.html\", 502 = \"/50x.php?c=1\" }").unwrap();
    assert_eq!(config.site.error_pages[&404], "/404.html");
    assert_eq!(config.site.error_pages[&502], "/50x.php?c=1");
    assert!(config.has_error_pages());
    assert!(!validate_text("").unwrap().has_error_pages());
    for (text, expected) in [
        (
            "error_pages = { 302 = \"/x\" }",
            "error_pages.302: the key is an error status",
        ),
        ("error_pages = { abc = \"/x\" }", "error_pages.abc"),
        (
            "error_pages = { 404 = \"x.html\" }",
            "not a path in the site",
        ),
        (
            "error_pages = { 404 = \"/../x\" }",
            "not a path in the site",
        ),
    ] {
        let refused = refusal(text);
        assert!(refused.contains(expected), "{text}\n=> {refused}");
    }
}

#[test]
fn upstream_groups_are_checked_where_they_are_defined_and_named() {
    let config = validate_text(
        "[[rule]]\nprefix = \"/api/\"\nupstream = \"api\"\n\
         [[site]]\nserver_names = [\"a.example\"]\nupstream = \"api\"\n\
         [upstream]\nservers = [\"unix:/a.sock\"]\n\
         [upstreams.api]\nservers = [\"unix:/b.sock\"]\nmax_conns = 3\n",
    )
    .unwrap();
    assert_eq!(
        config.upstream_groups["api"]
            .pool
            .max_conns
            .as_ref()
            .unwrap()
            .value,
        3
    );
    assert_eq!(config.sites.named[0].site.upstream.as_deref(), Some("api"));
    assert_eq!(
        config.site.rules.rules()[0].upstream.as_deref(),
        Some("api")
    );
    for (text, expected) in [
        (
            "[upstreams.api]\nservers = [\"unix:/b.sock\"]\nmax_conns = 0",
            "upstreams.api.max_conns: must be at least 1",
        ),
        ("[upstreams.api]\nmax_conns = 2", "upstreams.api.servers: a group needs"),
        ("[upstreams.\"a b\"]\nservers = [\"unix:/b.sock\"]", "letters, digits"),
        (
            "[upstream]\nservers = [\"unix:/a.sock\"]\n[upstreams.api]\nservers = [\"unix:/a.sock\"]",
            "is also in `upstream`",
        ),
        (
            "[upstreams.x]\nservers = [\"unix:/b.sock\"]\n[upstreams.y]\nservers = [\"unix:/b.sock\"]",
            "is also in `x`",
        ),
        ("[[rule]]\nprefix = \"/a/\"\nupstream = \"nope\"", "rule 1: upstream: `nope` is not"),
        (
            "[[site]]\nserver_names = [\"a\"]\nupstream = \"nope\"",
            "site 1: upstream: `nope` is not an [upstreams.nope] group (there is none)",
        ),
    ] {
        let refused = refusal(text);
        assert!(refused.contains(expected), "{text}\n=> {refused}");
    }
}
