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
