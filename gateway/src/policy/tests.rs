use super::*;

/// Rules from TOML, as a route's `[[routes.rules]]` would hold them.
fn rules(toml_rules: &str) -> Vec<RuleConfig> {
    #[derive(serde::Deserialize)]
    struct Rules {
        #[serde(default)]
        rules: Vec<RuleConfig>,
    }
    toml::from_str::<Rules>(toml_rules).unwrap().rules
}

fn policy(toml_rules: &str, roles: &[&str], auth: bool) -> Policy {
    let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
    Policy::compile(&rules(toml_rules), &roles, auth).unwrap()
}

/// Who asks, in the tables below.
#[derive(Clone, Copy)]
struct As {
    roles: &'static [&'static str],
    client: Option<&'static str>,
    subject: &'static str,
}

const READER: As = As {
    roles: &["orders:read"],
    client: Some("web"),
    subject: "alice",
};
const WRITER: As = As {
    roles: &["orders:read", "orders:write"],
    client: Some("web"),
    subject: "bob",
};
const BACKOFFICE: As = As {
    roles: &["orders:read", "orders:write"],
    client: Some("backoffice"),
    subject: "carol",
};
const ADMIN: As = As {
    roles: &["admin"],
    client: None,
    subject: "root",
};
const NOBODY: As = As {
    roles: &[],
    client: None,
    subject: "nobody",
};

fn verdict(p: &Policy, method: &str, rest: &str, who: Option<As>) -> (bool, By) {
    let roles: Vec<String> = who
        .map(|w| w.roles.iter().map(|r| (*r).to_owned()).collect())
        .unwrap_or_default();
    let who = who.map(|w| Who {
        roles: &roles,
        client: w.client,
        subject: w.subject.as_bytes(),
    });
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let v = p.decide(&method, rest, who);
    (v.allowed, v.by)
}

#[test]
fn globs_match_whole_segments() {
    let cases: &[(&str, &str, bool)] = &[
        ("orders", "orders", true),
        ("orders", "orders/", false),
        ("orders", "order", false),
        ("orders", "ordersx", false),
        ("orders/*", "orders/7", true),
        ("orders/*", "orders/", false),
        ("orders/*", "orders", false),
        ("orders/*", "orders/7/refunds", false),
        ("orders/*/refunds", "orders/7/refunds", true),
        ("orders/*/refunds", "orders/7/8/refunds", false),
        ("orders/**", "orders", true),
        ("orders/**", "orders/", true),
        ("orders/**", "orders/7/refunds/1", true),
        ("orders/**", "ordersx/7", false),
        ("**", "", true),
        ("**", "a/b/c", true),
        ("*", "", false),
        ("*", "a", true),
        ("*", "a/b", false),
        ("**/refunds", "refunds", true),
        ("**/refunds", "orders/7/refunds", true),
        ("**/refunds", "orders/7/refunds/x", false),
        ("**/refunds/*", "a/refunds/b/refunds/c", true),
        ("a/**/b/**/c", "a/x/b/y/z/c", true),
        ("a/**/b/**/c", "a/b/c", true),
        ("a/**/b/**/c", "a/x/c", false),
        ("a/**/*", "a", false),
        ("a/**/*", "a/x", true),
        ("**/**", "", true),
        ("orders/", "orders/", true),
        ("orders/", "orders", false),
        ("Orders", "orders", false),
    ];
    for (glob, path, expected) in cases {
        let g = Glob::parse(glob).unwrap();
        assert_eq!(g.matches(path), *expected, "{glob} against {path:?}");
    }
}

#[test]
fn bad_globs_are_refused_with_a_reason() {
    let cases: &[(&str, &str)] = &[
        ("", "must not be empty"),
        ("/orders", "without a leading /"),
        ("orders//x", "empty segment"),
        ("orders/../admin", ". or .."),
        ("orders/./x", ". or .."),
        ("orders*", "whole segments"),
        ("*.json", "whole segments"),
        ("***", "whole segments"),
        ("orders/%2e", "decoded"),
        ("a\\b", "decoded"),
        ("orders?x=1", "no spaces, ? or #"),
        ("or ders", "no spaces"),
    ];
    for (glob, reason) in cases {
        let e = Glob::parse(glob).unwrap_err();
        assert_eq!(e.key, "path");
        assert!(e.message.contains(reason), "{glob:?}: {}", e.message);
    }
    let long = "a/".repeat(MAX_SEGMENTS) + "a";
    assert!(Glob::parse(&long).is_err());
    assert!(Glob::parse(&"a".repeat(MAX_GLOB + 1)).is_err());
}

#[test]
fn bad_rules_name_their_key() {
    let cases: &[(&str, bool, &str)] = &[
        ("[[rules]]\nmethods = []\n", true, "methods"),
        ("[[rules]]\nmethods = [\"get\"]\n", true, "methods"),
        ("[[rules]]\nmethods = [\"GE T\"]\n", true, "methods"),
        ("[[rules]]\nroles_any = []\n", true, "roles_any"),
        ("[[rules]]\nroles_all = [\"\"]\n", true, "roles_all"),
        (
            "[[rules]]\nallow = false\nroles_any = [\"a\"]\n",
            true,
            "roles_any",
        ),
        (
            "[[rules]]\nallow = false\nclients = [\"a\"]\n",
            true,
            "clients",
        ),
        ("[[rules]]\nroles_any = [\"a\"]\n", false, "roles_any"),
        ("[[rules]]\nsubjects = [\"a\"]\n", false, "subjects"),
        ("[[rules]]\nclients = [\"a\"]\n", false, "clients"),
        ("[[rules]]\npath = \"a*\"\n", true, "path"),
    ];
    for (text, auth, key) in cases {
        let (i, e) = Policy::compile(&rules(text), &[], *auth).unwrap_err();
        assert_eq!((i, e.key), (0, *key), "{text}");
    }
    let many = "[[rules]]\n".repeat(MAX_RULES + 1);
    assert_eq!(
        Policy::compile(&rules(&many), &[], true).unwrap_err().1.key,
        "rules"
    );
    // The second rule is the bad one.
    let (i, _) = Policy::compile(
        &rules("[[rules]]\nallow = false\n[[rules]]\nmethods = [\"x\"]\n"),
        &[],
        true,
    )
    .unwrap_err();
    assert_eq!(i, 1);
    // Public routes take allow (and methods, paths) only.
    assert!(
        Policy::compile(
            &rules("[[rules]]\nmethods = [\"POST\"]\npath = \"x/**\"\nallow = false\n"),
            &[],
            false
        )
        .is_ok()
    );
}

/// The README's example policy (a read/write split, a client-restricted endpoint, an
/// admin-only subtree), under the route's `roles = ["orders:read"]`.
const ORDERS: &str = r#"
[[rules]]
path = "admin/**"
roles_any = ["admin"]
[[rules]]
methods = ["POST"]
path = "orders/*/refunds"
roles_all = ["orders:write"]
clients = ["backoffice"]
[[rules]]
methods = ["POST", "PUT", "PATCH", "DELETE"]
roles_any = ["orders:write"]
[[rules]]
path = "internal/**"
allow = false
[[rules]]
methods = ["GET", "HEAD"]
path = "orders/*/audit"
subjects = ["auditor", "alice"]
"#;

#[test]
fn first_matching_rule_decides_else_the_route_roles() {
    let p = policy(ORDERS, &["orders:read"], true);
    use By::{Route, Rule};
    let cases: &[(&str, &str, As, (bool, By))] = &[
        // No rule matches a GET of an order: the route's roles.
        ("GET", "orders/7", READER, (true, Route)),
        ("GET", "orders/7", NOBODY, (false, Route)),
        ("GET", "orders/7", ADMIN, (false, Route)),
        // Writes need orders:write (any method listed, none other).
        ("POST", "orders", READER, (false, Rule(2))),
        ("POST", "orders", WRITER, (true, Rule(2))),
        ("DELETE", "orders/7", WRITER, (true, Rule(2))),
        ("OPTIONS", "orders/7", READER, (true, Route)),
        // Refunds: orders:write, from the back-office client only; rule 1 comes first.
        ("POST", "orders/7/refunds", WRITER, (false, Rule(1))),
        ("POST", "orders/7/refunds", BACKOFFICE, (true, Rule(1))),
        ("POST", "orders/7/refunds", READER, (false, Rule(1))),
        ("GET", "orders/7/refunds", READER, (true, Route)),
        // The admin subtree: admin only, whatever the route's roles; before every other rule.
        ("GET", "admin", ADMIN, (true, Rule(0))),
        ("POST", "admin/users/1", ADMIN, (true, Rule(0))),
        ("GET", "admin/users", WRITER, (false, Rule(0))),
        // Deny outright, even to an admin.
        ("GET", "internal/metrics", ADMIN, (false, Rule(3))),
        ("GET", "internal", READER, (false, Rule(3))),
        // Subjects.
        ("GET", "orders/7/audit", READER, (true, Rule(4))),
        ("HEAD", "orders/7/audit", WRITER, (false, Rule(4))),
    ];
    for (method, path, who, expected) in cases {
        assert_eq!(
            verdict(&p, method, path, Some(*who)),
            *expected,
            "{method} {path} as {}",
            who.subject
        );
    }
}

#[test]
fn roles_any_all_and_clients_combine() {
    let p = policy(
        r#"
[[rules]]
roles_any = ["a", "b"]
roles_all = ["c", "d"]
clients = ["web", "cli"]
"#,
        &[],
        true,
    );
    let cases: &[(&[&'static str], Option<&'static str>, bool)] = &[
        (&["a", "c", "d"], Some("web"), true),
        (&["b", "c", "d"], Some("cli"), true),
        (&["c", "d"], Some("web"), false),
        (&["a", "c"], Some("web"), false),
        (&["a", "c", "d"], Some("other"), false),
        (&["a", "c", "d"], None, false),
    ];
    for (roles, client, expected) in cases {
        let who = As {
            roles,
            client: *client,
            subject: "s",
        };
        assert_eq!(
            verdict(&p, "GET", "x", Some(who)).0,
            *expected,
            "{roles:?} {client:?}"
        );
    }
}

#[test]
fn a_rule_without_requirements_allows_any_identity_and_overrides_the_route() {
    let p = policy(
        "[[rules]]\nmethods = [\"GET\"]\npath = \"catalog/**\"\n",
        &["staff"],
        true,
    );
    assert_eq!(
        verdict(&p, "GET", "catalog/1", Some(NOBODY)),
        (true, By::Rule(0))
    );
    assert_eq!(
        verdict(&p, "POST", "catalog/1", Some(NOBODY)),
        (false, By::Route)
    );
}

#[test]
fn public_routes_apply_allow_rules_only() {
    let p = policy(
        "[[rules]]\nmethods = [\"POST\", \"PUT\", \"DELETE\"]\nallow = false\n[[rules]]\npath = \"drafts/**\"\nallow = false\n",
        &[],
        false,
    );
    let cases: &[(&str, &str, (bool, By))] = &[
        ("GET", "docs/1", (true, By::Route)),
        ("POST", "docs/1", (false, By::Rule(0))),
        ("GET", "drafts/1", (false, By::Rule(1))),
        ("GET", "drafts", (false, By::Rule(1))),
    ];
    for (method, path, expected) in cases {
        assert_eq!(
            verdict(&p, method, path, None),
            *expected,
            "{method} {path}"
        );
    }
}

#[test]
fn paths_read_differently_by_a_backend_are_refused_on_routes_with_path_rules() {
    let p = policy("[[rules]]\npath = \"admin/**\"\nallow = false\n", &[], true);
    for path in [
        "x/../admin/users",
        "./admin",
        "x//admin",
        "/admin",
        "adm%69n/users",
        "admin%2Fusers",
        "a%5cb",
        "a\\b",
        "a%zz",
        "a%2",
        "a%2E%2E/admin",
    ] {
        assert_eq!(
            verdict(&p, "GET", path, Some(READER)),
            (false, By::Path),
            "{path}"
        );
    }
    for path in ["orders/a%20b", "orders/%C3%A9", "orders/", "", "x/y"] {
        assert_eq!(
            verdict(&p, "GET", path, Some(READER)),
            (true, By::Route),
            "{path}"
        );
    }
    // Without path rules, nothing about the path is judged (as without rules).
    let p = policy(
        "[[rules]]\nmethods = [\"DELETE\"]\nallow = false\n",
        &[],
        true,
    );
    assert_eq!(
        verdict(&p, "GET", "x/../y", Some(READER)),
        (true, By::Route)
    );
}

#[test]
fn rest_is_the_path_below_the_prefix() {
    assert_eq!(rest("/api/orders/7", "/api/"), "orders/7");
    assert_eq!(rest("/api/orders/7", "/api"), "orders/7");
    assert_eq!(rest("/api/", "/api/"), "");
    assert_eq!(rest("/api", "/api"), "");
    assert_eq!(rest("/api//x", "/api/"), "/x");
    assert_eq!(rest("/x", "/"), "x");
}

#[test]
fn methods_standard_or_not_match_exactly() {
    let p = policy(
        "[[rules]]\nmethods = [\"PROPFIND\", \"GET\"]\nallow = false\n",
        &[],
        true,
    );
    let cases: &[(&str, bool)] = &[
        ("GET", false),
        ("PROPFIND", false),
        ("HEAD", true),
        ("POST", true),
        ("PROPPATCH", true),
        ("MKCOL", true),
    ];
    for (method, allowed) in cases {
        assert_eq!(
            verdict(&p, method, "x", Some(READER)).0,
            *allowed,
            "{method}"
        );
    }
    let p = policy(
        "[[rules]]\nmethods = [\"PROPFIND\"]\nallow = false\n",
        &[],
        true,
    );
    assert!(
        verdict(&p, "GET", "x", Some(READER)).0,
        "no standard method listed"
    );
    assert!(!verdict(&p, "PROPFIND", "x", Some(READER)).0);
}

#[test]
fn dot_segments_are_found_written_out_or_escaped() {
    for path in [
        "/public/../admin/x",
        "/public/./x",
        "/public/..",
        "/public/%2e%2e/admin",
        "/public/%2E./admin",
        "/public/.%2e/admin",
        "/public/%2e/x",
    ] {
        assert!(dot_segment(path), "{path}");
    }
    for path in [
        "/api/orders/7",
        "/api/file.json",
        "/api/.well-known/x",
        "/api/...",
        "/api/a..b",
        "/api/%2e%2e%2e",
        "/api/%20",
        "/",
    ] {
        assert!(!dot_segment(path), "{path}");
    }
}
