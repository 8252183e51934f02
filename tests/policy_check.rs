//! `tokengate check` as an operator runs it: the built binary on a config file with the
//! README's example policy; what it prints, and its exit status.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

/// A folder of this test's own, removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("tokengate-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    /// A gateway config with `routes` after its required sections.
    fn config(&self, name: &str, routes: &str) -> PathBuf {
        let file = self.0.join(name);
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:8080\"\n[admin]\nlisten = \"127.0.0.1:9090\"\n\
             [idp]\njwks_url = \"http://127.0.0.1:7000/.well-known/jwks.json\"\n\
             [[routes]]\npath_prefix = \"/public/\"\nupstream = \"http://127.0.0.1:9001\"\n\
             auth = false\n[[routes.rules]]\nmethods = [\"DELETE\"]\nallow = false\n{routes}"
        );
        std::fs::write(&file, text).unwrap();
        file
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The README's example policy, as written there.
fn readme_policy() -> &'static str {
    let readme = include_str!("../README.md");
    let block = &readme[readme.find("<!-- policy-example").unwrap()..];
    let start = block.find("```toml\n").unwrap() + "```toml\n".len();
    &block[start..start + block[start..].find("```").unwrap()]
}

/// Exit status, standard output and standard error of `tokengate check ARGS`.
fn check(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tokengate"))
        .arg("check")
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    (
        out.status.code().expect("exited, not killed"),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// The value of `key:` in the output.
fn line<'o>(out: &'o str, key: &str) -> &'o str {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key}: in\n{out}"))
        .trim()
}

#[test]
fn check_names_the_route_and_rule_that_decide_and_exits_by_outcome() {
    let dir = Dir::new("check");
    let config = dir.config("gateway.toml", readme_policy());
    let config = config.to_str().unwrap();
    // (args after the config, exit status, "route:", "decided by:" starts with, "outcome:")
    let cases: &[(&[&str], i32, &str, &str, &str)] = &[
        (
            &["GET", "/shop/orders/7", "--roles", "orders:read"],
            0,
            "routes[1]: path_prefix = \"/shop/\"",
            "no rule matches; the route's roles (any of) [\"orders:read\"]",
            "allowed: forwarded upstream",
        ),
        (
            &["GET", "/shop/orders/7?page=2"],
            3,
            "routes[1]: path_prefix = \"/shop/\"",
            "no rule matches",
            "refused: 403 insufficient_scope",
        ),
        (
            &[
                "POST",
                "/shop/orders/7/refunds",
                "--roles",
                "orders:read,orders:write",
                "--client",
                "web",
            ],
            3,
            "routes[1]",
            "rules[1]: path = \"orders/*/refunds\", methods = [\"POST\"]",
            "refused: 403 insufficient_scope",
        ),
        (
            &[
                "POST",
                "/shop/orders/7/refunds",
                "--roles",
                "orders:read,orders:write",
                "--client",
                "backoffice",
            ],
            0,
            "routes[1]",
            "rules[1]:",
            "allowed: forwarded upstream",
        ),
        (
            &["PUT", "/shop/admin/users/3", "--roles", "shop:admin"],
            0,
            "routes[1]",
            "rules[0]: path = \"admin/**\", roles_any = [\"shop:admin\"]",
            "allowed: forwarded upstream",
        ),
        (
            &["GET", "/shop/internal/metrics", "--roles", "shop:admin"],
            3,
            "routes[1]",
            "rules[2]: path = \"internal/**\", allow = false",
            "refused: 403 insufficient_scope",
        ),
        (
            &[
                "GET",
                "/shop/orders/../internal/metrics",
                "--roles",
                "orders:read",
            ],
            3,
            "routes[1]",
            "the path:",
            "refused: 400 bad_target",
        ),
        (
            &["DELETE", "/public/x"],
            3,
            "routes[0]: path_prefix = \"/public/\"",
            "rules[0]: methods = [\"DELETE\"], allow = false",
            "refused: 403 insufficient_scope",
        ),
        (
            &["GET", "/public/x"],
            0,
            "routes[0]",
            "no rule matches; a public route lets it pass",
            "allowed: forwarded upstream",
        ),
    ];
    for (args, status, route, decided, outcome) in cases {
        let mut all = vec!["--config", config];
        all.extend_from_slice(args);
        let (code, out, err) = check(&all);
        assert_eq!(code, *status, "{args:?}:\n{out}{err}");
        assert!(line(&out, "route").starts_with(route), "{args:?}:\n{out}");
        assert!(
            line(&out, "decided by").starts_with(decided),
            "{args:?}:\n{out}"
        );
        assert_eq!(line(&out, "outcome"), *outcome, "{args:?}");
    }
    // No route.
    let (code, out, _) = check(&["--config", config, "GET", "/elsewhere"]);
    assert_eq!((code, line(&out, "route")), (3, "none matches"));
    assert_eq!(line(&out, "outcome"), "refused: 404 no_route");
}

#[test]
fn check_refuses_bad_input_with_a_clear_error() {
    let dir = Dir::new("check-bad");
    let good = dir.config("good.toml", readme_policy());
    let good = good.to_str().unwrap();
    let bad = dir.config(
        "bad.toml",
        &format!(
            "{}[[routes.rules]]\npath = \"orders/**x\"\n",
            readme_policy()
        ),
    );
    let missing = dir.0.join("missing.toml");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--config", bad.to_str().unwrap(), "GET", "/shop/x"],
            "routes[1].rules[4].path",
        ),
        (
            vec!["--config", missing.to_str().unwrap(), "GET", "/"],
            "missing.toml",
        ),
        (
            vec!["--config", good, "G T", "/shop/x"],
            "not an HTTP method",
        ),
        (vec!["--config", good, "GET", "shop/x"], "is not a path"),
        (
            vec!["--config", good, "GET", "http://example.com/shop/x"],
            "is not a path",
        ),
    ];
    for (args, message) in cases {
        let (code, out, err) = check(&args);
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert!(err.contains(message), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
