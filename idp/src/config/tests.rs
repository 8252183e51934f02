use std::path::Path;

use super::*;

#[test]
fn the_commented_upstream_example_is_valid() {
    let example = include_str!("../../../config/idp.toml");
    let block: String = example
        .lines()
        .skip_while(|l| *l != "# [[upstreams]]")
        .map_while(|l| l.strip_prefix("# ").or((l == "#").then_some("")))
        // The example's CA file is not shipped.
        .filter(|l| !l.starts_with("tls_ca_file"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(block.contains("role_map"), "{block}");
    let path = Path::new("config/idp.toml");
    let config = IdpConfig::parse(&format!("{BASE}{block}"), path).unwrap();
    config.validate(path).unwrap();
    assert_eq!(config.upstreams[0].roles_claim, "groups");
}

#[test]
fn upstream_secrets_never_show_in_debug() {
    let text = format!(
        "{BASE}[[upstreams]]\nname = \"corp\"\nissuer = \"https://sso.example.com\"\nclient_id = \"tg\"\nclient_secret = \"hush-hush\"\n"
    );
    let config = IdpConfig::parse(&text, Path::new("idp.toml")).unwrap();
    let debug = format!("{config:?}");
    assert!(
        debug.contains("corp") && !debug.contains("hush-hush"),
        "{debug}"
    );
}

const BASE: &str = r#"
[server]
listen = "127.0.0.1:7000"
[admin]
listen = "127.0.0.1:7001"
token = "long-enough-token"
"#;

fn error_of(extra: &str) -> String {
    let path = Path::new("conf/idp.toml");
    let text = format!("{BASE}{extra}");
    match IdpConfig::parse(&text, path).and_then(|c| c.validate(path).map(|_| c)) {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn errors_name_the_file_and_the_key() {
    assert_eq!(error_of(""), "");
    let user = r#"[[users]]
username = "alice"
password_hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"
"#;
    let twice = error_of(&format!("{user}{user}"));
    assert!(
        twice.contains("conf/idp.toml") && twice.contains("users[1].username"),
        "{twice}"
    );
    let plain = error_of("[[clients]]\nclient_id = \"c\"\nclient_secret_hash = \"secret\"\n");
    assert!(plain.contains("clients[0].client_secret_hash"), "{plain}");
    let roles = error_of(&format!("{user}roles = [\"a,b\"]\n"));
    assert!(roles.contains("users[0].roles"), "{roles}");
    let lifetime = error_of("[tokens]\nidle_timeout = \"2h\"\nmax_lifetime = \"1h\"\n");
    assert!(lifetime.contains("tokens.max_lifetime"), "{lifetime}");
    for ttl in ["29s", "13h"] {
        let short = error_of(&format!("[tokens]\nvalue_token_ttl = \"{ttl}\"\n"));
        assert!(short.contains("tokens.value_token_ttl"), "{ttl}: {short}");
    }
    assert_eq!(error_of("[tokens]\nvalue_token_ttl = \"30s\"\n"), "");
    let mode = error_of("[store]\nmode = \"cluster\"\n");
    assert!(mode.contains("store.nodes"), "{mode}");
    let public_secret = error_of(
        "[[clients]]\nclient_id = \"web\"\ntype = \"public\"\nclient_secret_hash = \"$argon2id$x\"\nredirect_uris = [\"http://a/cb\"]\n",
    );
    assert!(
        public_secret.contains("clients[0].client_secret_hash"),
        "{public_secret}"
    );
    let no_redirect = error_of("[[clients]]\nclient_id = \"web\"\ntype = \"public\"\n");
    assert!(
        no_redirect.contains("clients[0].redirect_uris"),
        "{no_redirect}"
    );
    let fragment = error_of(
        "[[clients]]\nclient_id = \"web\"\ntype = \"public\"\nredirect_uris = [\"http://a/cb#x\"]\n",
    );
    assert!(
        fragment.contains("clients[0].redirect_uris[0]"),
        "{fragment}"
    );
    let relative = error_of(
        "[[clients]]\nclient_id = \"web\"\ntype = \"public\"\nredirect_uris = [\"/cb\"]\n",
    );
    assert!(relative.contains("absolute"), "{relative}");
    let public_cc = error_of(
        "[[clients]]\nclient_id = \"web\"\ntype = \"public\"\ngrants = [\"client_credentials\"]\n",
    );
    assert!(public_cc.contains("clients[0].grants"), "{public_cc}");
    let upstream = "[[upstreams]]\nname = \"corp\"\nissuer = \"https://sso.example.com\"\nclient_id = \"tokengate\"\n";
    let no_secret = error_of(upstream);
    assert!(
        no_secret.contains("upstreams[0].client_secret")
            && no_secret.contains("TOKENGATE_UPSTREAM_CORP_SECRET"),
        "{no_secret}"
    );
    assert_eq!(error_of(&format!("{upstream}client_secret = \"s\"\n")), "");
    let no_openid = error_of(&format!(
        "{upstream}client_secret = \"s\"\nscopes = [\"email\"]\n"
    ));
    assert!(no_openid.contains("upstreams[0].scopes"), "{no_openid}");
    let bad_name = error_of(&upstream.replace("corp", "Corp Inc"));
    assert!(bad_name.contains("upstreams[0].name"), "{bad_name}");
    let bad_role = error_of(&format!(
        "{upstream}client_secret = \"s\"\nrole_map = {{ eng = [\"a,b\"] }}\n"
    ));
    assert!(bad_role.contains("upstreams[0].role_map.eng"), "{bad_role}");
    let unknown = error_of("[server2]\n");
    assert!(
        unknown.contains("conf/idp.toml") && unknown.contains("server2"),
        "{unknown}"
    );
}

#[test]
fn backchannel_logout_uris_and_retry_spans_are_checked() {
    let client =
        "[[clients]]\nclient_id = \"web\"\ntype = \"public\"\nredirect_uris = [\"http://a/cb\"]\n";
    assert_eq!(
        error_of(&format!(
            "{client}backchannel_logout_uri = \"https://app.example.com/logout\"\nbackchannel_logout_retry_for = \"10m\"\n"
        )),
        ""
    );
    let relative = error_of(&format!("{client}backchannel_logout_uri = \"/logout\"\n"));
    assert!(
        relative.contains("clients[0].backchannel_logout_uri") && relative.contains("absolute"),
        "{relative}"
    );
    let fragment = error_of(&format!(
        "{client}backchannel_logout_uri = \"https://app.example.com/logout#x\"\n"
    ));
    assert!(fragment.contains("fragment"), "{fragment}");
    for span in ["0s", "8d"] {
        let error = error_of(&format!(
            "{client}backchannel_logout_retry_for = \"{span}\"\n"
        ));
        assert!(
            error.contains("clients[0].backchannel_logout_retry_for"),
            "{span}: {error}"
        );
    }
}

#[test]
fn webauthn_is_checked_with_clear_errors() {
    let ok = |rp: &str, origins: &str| {
        error_of(&format!(
            "[webauthn]\nrp_id = \"{rp}\"\norigins = [{origins}]\n"
        ))
    };
    assert_eq!(ok("localhost", "\"http://localhost:7000\""), "");
    assert_eq!(
        ok(
            "example.com",
            "\"https://login.example.com\", \"https://example.com:8443\""
        ),
        ""
    );
    for (rp, origins, why) in [
        (
            "https://example.com",
            "\"https://example.com\"",
            "webauthn.rp_id",
        ),
        ("Example.com", "\"https://example.com\"", "webauthn.rp_id"),
        ("", "\"https://example.com\"", "webauthn.rp_id"),
        ("example.com", "", "webauthn.origins"),
        ("example.com", "\"http://example.com\"", "must be https"),
        ("example.com", "\"https://evil.com\"", "subdomains"),
        ("example.com", "\"https://notexample.com\"", "subdomains"),
        ("example.com", "\"https://example.com/\"", "no path"),
        ("example.com", "\"https://example.com/login\"", "no path"),
        ("example.com", "\"example.com\"", "webauthn.origins"),
    ] {
        let error = ok(rp, origins);
        assert!(error.contains(why), "{rp} {origins}: {error}");
        assert!(error.contains("conf/idp.toml"), "{error}");
    }
    assert!(error_of("[webauthn]\nrp_id = \"localhost\"\n").contains("origins"));
}
