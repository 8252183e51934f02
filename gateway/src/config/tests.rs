use std::path::Path;
use std::time::Duration;

use super::*;

const BASE: &str = r#"
[server]
listen = "127.0.0.1:8080"
[admin]
listen = "127.0.0.1:9090"
[idp]
jwks_url = "http://127.0.0.1:7000/.well-known/jwks.json"
"#;
const BROWSER: &str = r#"
[browser]
issuer = "http://127.0.0.1:7000"
client_id = "gateway"
client_secret = "s3cret"
public_url = "http://127.0.0.1:8080"
"#;

/// The key a config is refused for, or `None` if it is accepted.
fn refused(text: &str) -> Option<String> {
    let path = Path::new("gateway.toml");
    match GatewayConfig::parse(text, path).unwrap().validate(path) {
        Ok(()) => None,
        Err(ConfigError::Invalid { key, file, .. }) => {
            assert_eq!(file, path);
            Some(key)
        }
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn browser_settings_are_checked_by_key() {
    assert_eq!(refused(&format!("{BASE}{BROWSER}")), None);
    let route =
        "[[routes]]\npath_prefix = \"/app/\"\nupstream = \"http://127.0.0.1:1\"\nbrowser = true\n";
    assert_eq!(refused(&format!("{BASE}{BROWSER}{route}")), None);
    assert_eq!(
        refused(&format!("{BASE}{route}")).as_deref(),
        Some("routes[0].browser")
    );
    assert_eq!(
        refused(&format!("{BASE}{BROWSER}{route}auth = false\n")).as_deref(),
        Some("routes[0].browser")
    );
    for (change, key) in [
        (
            ("issuer = \"http://127.0.0.1:7000\"", "issuer = \"ftp://x\""),
            "browser.issuer",
        ),
        (("client_secret = \"s3cret\"", ""), "browser.client_secret"),
        (
            ("client_id = \"gateway\"", "client_id = \"\""),
            "browser.client_id",
        ),
        (
            (
                "public_url = \"http://127.0.0.1:8080\"",
                "public_url = \"http://h/app\"",
            ),
            "browser.public_url",
        ),
        (
            ("client_id", "cookie_name = \"tokengate_idp\"\nclient_id"),
            "browser.cookie_name",
        ),
        (
            ("client_id", "cookie_name = \"__Host-x\"\nclient_id"),
            "browser.cookie_name",
        ),
        (
            ("client_id", "cookie_name = \"a b\"\nclient_id"),
            "browser.cookie_name",
        ),
        (
            (
                "client_id",
                "allowed_origins = [\"http://h/path\"]\nclient_id",
            ),
            "browser.allowed_origins[0]",
        ),
    ] {
        let text = format!("{BASE}{}", BROWSER.replacen(change.0, change.1, 1));
        assert_eq!(refused(&text).as_deref(), Some(key), "{change:?}");
    }
}

#[test]
fn rate_limits_are_checked_by_key() {
    let route = |limit: &str, auth: bool| {
        format!(
            "{BASE}[[routes]]\npath_prefix = \"/api/\"\nupstream = \"http://127.0.0.1:1\"\nauth = {auth}\nrate_limit = {limit}\n"
        )
    };
    let ok = r#"{ rate = "100/s", burst = 200, per = "subject" }"#;
    assert_eq!(refused(&route(ok, true)), None);
    for (limit, auth, key) in [
        (r#"{ rate = "100", per = "route" }"#, true, "rate"),
        (r#"{ rate = "0/s", per = "route" }"#, true, "rate"),
        (
            r#"{ rate = "1/s", burst = 0, per = "route" }"#,
            true,
            "burst",
        ),
        (r#"{ rate = "1/s", per = "session" }"#, false, "per"),
    ] {
        assert_eq!(
            refused(&route(limit, auth)).as_deref(),
            Some(format!("routes[0].rate_limit.{key}").as_str()),
            "{limit}"
        );
    }
    let keys = route(r#"{ rate = "1/s", per = "route" }"#, true) + "rate_limit_max_keys = 0\n";
    assert_eq!(
        refused(&keys).as_deref(),
        Some("routes[0].rate_limit_max_keys")
    );
    let unknown = route(r#"{ rate = "1/s", per = "planet" }"#, true);
    assert!(GatewayConfig::parse(&unknown, Path::new("g.toml")).is_err());
}

#[test]
fn browser_defaults_follow_tls_and_public_url() {
    let config = GatewayConfig::parse(&format!("{BASE}{BROWSER}"), Path::new("g.toml")).unwrap();
    let browser = config.browser.unwrap();
    assert_eq!(browser.cookie_name(false), "tokengate");
    assert_eq!(browser.cookie_name(true), "__Host-tokengate");
    let behind_tls = BrowserConfig {
        public_url: "https://app.example.com".into(),
        ..browser.clone()
    };
    assert!(behind_tls.secure(false));
    assert_eq!(behind_tls.cookie_name(false), "__Host-tokengate");
    assert_eq!(browser.allowed_origins(), ["http://127.0.0.1:8080"]);
    assert_eq!(browser.login_timeout, Duration::from_secs(600));
    let debug = format!("{browser:?}");
    assert!(!debug.contains("s3cret"), "{debug}");
    assert!(debug.contains("<redacted>"));
}

#[test]
fn upstream_resilience_has_defaults_and_overrides() {
    let route = "[[routes]]\npath_prefix = \"/api/\"\nupstream = [\"http://127.0.0.1:1\", \"http://127.0.0.1:2\"]\n";
    let config = GatewayConfig::parse(&format!("{BASE}{route}"), Path::new("g.toml")).unwrap();
    let r = &config.routes[0];
    assert_eq!(
        (r.timeout, r.connect_timeout, r.max_requests),
        (None, None, None)
    );
    assert_eq!(r.balance, Balance::RoundRobin);
    assert_eq!((r.retries, r.eject_after), (1, 5));
    assert_eq!(r.eject_for, Duration::from_secs(10));
    assert!(r.eject_on_5xx);
    assert_eq!(r.health_check, None);

    let more = r#"timeout = "3s"
connect_timeout = "250ms"
max_requests = 2
balance = "least_requests"
retries = 0
eject_after = 3
eject_for = "30s"
eject_on_5xx = false
health_check = { path = "/up", interval = "5s" }
"#;
    let config =
        GatewayConfig::parse(&format!("{BASE}{route}{more}"), Path::new("g.toml")).unwrap();
    let r = &config.routes[0];
    assert_eq!(r.timeout, Some(Duration::from_secs(3)));
    assert_eq!(r.connect_timeout, Some(Duration::from_millis(250)));
    assert_eq!(r.max_requests, Some(2));
    assert_eq!(r.balance, Balance::LeastRequests);
    assert_eq!((r.retries, r.eject_after, r.eject_on_5xx), (0, 3, false));
    let check = r.health_check.as_ref().unwrap();
    assert_eq!(check.path, "/up");
    assert_eq!(check.interval, Duration::from_secs(5));
    assert_eq!(check.timeout, Duration::from_secs(1));
    assert_eq!((check.unhealthy_after, check.healthy_after), (3, 2));
    assert_eq!(refused(&format!("{BASE}{route}{more}")), None);
}

#[test]
fn upstream_resilience_is_checked_by_key() {
    let route = "[[routes]]\npath_prefix = \"/api/\"\nupstream = \"http://127.0.0.1:1\"\n";
    for (line, key) in [
        ("timeout = \"0s\"", "timeout"),
        ("connect_timeout = \"0s\"", "connect_timeout"),
        ("max_requests = 0", "max_requests"),
        ("retries = 6", "retries"),
        ("eject_after = 0", "eject_after"),
        ("eject_for = \"0s\"", "eject_for"),
        ("eject_for = \"6m\"", "eject_for"),
        ("health_check = { path = \"healthz\" }", "health_check.path"),
        (
            "health_check = { interval = \"0s\" }",
            "health_check.interval",
        ),
        (
            "health_check = { interval = \"1s\", timeout = \"2s\" }",
            "health_check.timeout",
        ),
        (
            "health_check = { unhealthy_after = 0 }",
            "health_check.unhealthy_after",
        ),
        (
            "health_check = { healthy_after = 0 }",
            "health_check.healthy_after",
        ),
    ] {
        assert_eq!(
            refused(&format!("{BASE}{route}{line}\n")).as_deref(),
            Some(format!("routes[0].{key}").as_str()),
            "{line}"
        );
    }
    for bad in [
        "balance = \"random\"",
        "health_check = { path = \"/\", every = \"1s\" }",
    ] {
        let text = format!("{BASE}{route}{bad}\n");
        assert!(
            GatewayConfig::parse(&text, Path::new("g.toml")).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn workers_are_checked_and_default_to_none() {
    let path = Path::new("gateway.toml");
    let config = GatewayConfig::parse(BASE, path).unwrap();
    assert_eq!(config.server.workers, 0);
    assert!(
        config.server.http1_fast_path,
        "the lean path is on by default"
    );
    let with = |lines: &str| BASE.replace("[admin]", &format!("{lines}\n[admin]"));
    assert_eq!(refused(&with("workers = 4")), None);
    assert_eq!(
        refused(&with("workers = 257")).as_deref(),
        Some("server.workers")
    );
    assert_eq!(
        refused(&with("workers = 4\nmax_connections = 3")).as_deref(),
        Some("server.max_connections")
    );
}

#[test]
fn route_rules_are_checked_by_key_and_index() {
    let route = "[[routes]]\npath_prefix = \"/api/\"\nupstream = \"http://127.0.0.1:1\"\n";
    let ok = "[[routes.rules]]\nmethods = [\"GET\"]\npath = \"orders/*\"\nroles_any = [\"r\"]\n";
    assert_eq!(refused(&format!("{BASE}{route}{ok}")), None);
    let cases = [
        (
            "[[routes.rules]]\npath = \"/orders\"\n",
            true,
            "routes[0].rules[1].path",
        ),
        (
            "[[routes.rules]]\npath = \"or*ders\"\n",
            true,
            "routes[0].rules[1].path",
        ),
        (
            "[[routes.rules]]\nmethods = [\"get\"]\n",
            true,
            "routes[0].rules[1].methods",
        ),
        (
            "[[routes.rules]]\nallow = false\nsubjects = [\"x\"]\n",
            true,
            "routes[0].rules[1].subjects",
        ),
        (
            "[[routes.rules]]\nroles_all = [\"x\"]\n",
            false,
            "routes[0].rules[0].roles_all",
        ),
    ];
    for (rule, auth, key) in cases {
        let text = if auth {
            format!("{BASE}{route}{ok}{rule}")
        } else {
            format!("{BASE}{route}auth = false\n{rule}")
        };
        assert_eq!(refused(&text).as_deref(), Some(key), "{rule}");
    }
    let unknown = format!("{BASE}{route}[[routes.rules]]\nrole = [\"x\"]\n");
    assert!(GatewayConfig::parse(&unknown, Path::new("g.toml")).is_err());
}
