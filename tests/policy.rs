//! Per-route rules on real processes: the README's example policy, request by request, with
//! tokens of different roles and clients; a reload that changes the rules, and one that is
//! refused for a bad rule.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::stack::{Options, Stack};
use support::{PASSWORD, Reply, post_form, send};

const RELOAD_TOKEN: &str = "reload-token-0123456789";

/// The first TOML block after the README's `policy-example` marker, its upstream made `{backend}`.
fn readme_policy() -> String {
    let readme = include_str!("../README.md");
    let from = readme
        .find("<!-- policy-example")
        .expect("README has the policy example");
    let block = &readme[from..];
    let start = block.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let end = block[start..].find("```").expect("the block ends") + start;
    block[start..end].replace("http://127.0.0.1:9001", "{backend}")
}

async fn stack() -> Stack {
    Stack::start(Options {
        gateways: 1,
        gateway_admin: format!("token = \"{RELOAD_TOKEN}\""),
        gateway_extra: readme_policy(),
        idp_extra:
            "[[clients]]\nclient_id = \"backoffice\"\ntype = \"public\"\ngrants = [\"password\"]\n"
                .into(),
        ..Options::default()
    })
    .await
}

/// The password grant through `client`.
async fn login(stack: &Stack, user: &str, client: &str) -> String {
    let r = post_form(
        &stack.idp.url("/oauth2/token"),
        &[],
        &format!("grant_type=password&client_id={client}&username={user}&password={PASSWORD}"),
    )
    .await;
    assert_eq!(r.status, 200, "login {user} via {client}: {}", r.body);
    let token = r.json()["access_token"].as_str().unwrap().to_owned();
    stack.secret(&token);
    token
}

async fn set_roles(stack: &Stack, user: &str, roles: &[&str]) {
    let body = serde_json::json!({ "roles": roles }).to_string();
    let r = stack
        .admin("PUT", &format!("/admin/users/{user}/roles"), Some(&body))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
}

async fn request(stack: &Stack, method: &str, path: &str, token: &str) -> Reply {
    let auth = format!("Bearer {token}");
    send(
        method,
        &stack.gateways[0].url(path),
        &[("authorization", &auth)],
        String::new(),
    )
    .await
}

/// What a refusal names: `Some(rule)`, `None` for the route's roles.
fn refused_by(r: &Reply) -> Option<String> {
    assert_eq!(r.status, 403, "{}", r.body);
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    let description = r.json()["error_description"].as_str().map(str::to_owned);
    if let Some(d) = &description {
        assert!(challenge.contains(d.as_str()), "{challenge}");
    }
    description
}

/// Method, path, token, who holds it, and `Ok` (reaches the backend) or what refuses it
/// (`Some(description)` for a rule, `None` for the route's roles).
type Case<'a> = (
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    Result<(), Option<String>>,
);

#[tokio::test]
async fn the_readme_policy_request_by_request() {
    let stack = stack().await;
    // alice reads (orders:read, through the cli client); bob writes through cli, carol through
    // the back-office application; root is a shop admin without any order role.
    set_roles(&stack, "bob", &["orders:read", "orders:write"]).await;
    set_roles(&stack, "carol", &["orders:read", "orders:write"]).await;
    let reader = login(&stack, "alice", "cli").await;
    let writer = login(&stack, "bob", "cli").await;
    let backoffice = login(&stack, "carol", "backoffice").await;
    let minted = stack
        .admin(
            "POST",
            "/admin/sessions",
            Some(r#"{"username": "root", "roles": ["shop:admin"]}"#),
        )
        .await;
    assert_eq!(minted.status, 200, "{}", minted.body);
    let admin = minted.json()["access_token"].as_str().unwrap().to_owned();
    stack.secret(&admin);

    let rule = |i: usize| Some(format!("refused by rule {i} of the route"));
    let cases: &[Case] = &[
        // Reads: no rule is for them, the route's roles decide.
        ("GET", "/shop/orders/7", &reader, "reader", Ok(())),
        ("GET", "/shop/orders/7", &writer, "writer", Ok(())),
        ("GET", "/shop/orders/7", &admin, "admin", Err(None)),
        // Writes: rule 3.
        ("POST", "/shop/orders", &reader, "reader", Err(rule(3))),
        ("POST", "/shop/orders", &writer, "writer", Ok(())),
        ("DELETE", "/shop/orders/7", &writer, "writer", Ok(())),
        ("PATCH", "/shop/orders/7", &reader, "reader", Err(rule(3))),
        // Refunds: both roles and the back-office client (rule 1, before rule 3).
        (
            "POST",
            "/shop/orders/7/refunds",
            &backoffice,
            "backoffice",
            Ok(()),
        ),
        (
            "POST",
            "/shop/orders/7/refunds",
            &writer,
            "writer",
            Err(rule(1)),
        ),
        (
            "POST",
            "/shop/orders/7/refunds",
            &reader,
            "reader",
            Err(rule(1)),
        ),
        ("GET", "/shop/orders/7/refunds", &reader, "reader", Ok(())),
        // The admin subtree: shop admins only, for every method.
        ("GET", "/shop/admin/users", &admin, "admin", Ok(())),
        ("DELETE", "/shop/admin/users/3", &admin, "admin", Ok(())),
        (
            "GET",
            "/shop/admin/users",
            &backoffice,
            "backoffice",
            Err(rule(0)),
        ),
        ("GET", "/shop/admin", &writer, "writer", Err(rule(0))),
        // Internal: nobody.
        (
            "GET",
            "/shop/internal/metrics",
            &admin,
            "admin",
            Err(rule(2)),
        ),
        (
            "POST",
            "/shop/internal/x",
            &backoffice,
            "backoffice",
            Err(rule(2)),
        ),
    ];
    for (method, path, token, who, expected) in cases {
        let r = request(&stack, method, path, token).await;
        match expected {
            Ok(()) => {
                assert_eq!(r.status, 200, "{method} {path} as {who}: {}", r.body);
                assert_eq!(r.json()["path"], *path);
                assert_eq!(r.json()["method"], *method);
            }
            Err(by) => {
                assert_eq!(&refused_by(&r), by, "{method} {path} as {who}");
                assert!(
                    !r.body.contains("orders:") && !r.body.contains("shop:admin"),
                    "a refusal never names roles: {}",
                    r.body
                );
            }
        }
    }
    // Nothing refused reached the backend.
    assert!(!stack.backend.saw("/shop/internal"));
    // A path written to slip past a rule is refused before any rule (400), and never forwarded.
    for path in [
        "/shop/orders/../internal/metrics",
        "/shop/%69nternal/metrics",
        "/shop//internal/metrics",
    ] {
        let r = request(&stack, "GET", path, &admin).await;
        assert_eq!(r.status, 400, "{path}: {}", r.body);
    }
    assert!(!stack.backend.saw("internal"));
    // Without a token: 401, as on any protected route; rules come after authentication.
    let r = send(
        "GET",
        &stack.gateways[0].url("/shop/orders/7"),
        &[],
        String::new(),
    )
    .await;
    assert_eq!(r.status, 401);
    stack.assert_logs_clean();
}

/// `POST /admin/reload` with the admin token.
async fn reload(stack: &Stack) -> Reply {
    let auth = format!("Bearer {RELOAD_TOKEN}");
    send(
        "POST",
        &stack.gateways[0].admin_url("/admin/reload"),
        &[("authorization", &auth)],
        String::new(),
    )
    .await
}

#[tokio::test]
async fn a_reload_compiles_new_rules_and_a_bad_rule_changes_nothing() {
    let stack = stack().await;
    let reader = login(&stack, "alice", "cli").await;
    let path = stack.gateway_config_path(0);
    let original = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        request(&stack, "GET", "/shop/orders/7", &reader)
            .await
            .status,
        200
    );

    // A bad glob: refused with its key, the rules in force stay.
    let bad = format!("{original}\n[[routes.rules]]\npath = \"orders/7*\"\n");
    std::fs::write(&path, bad).unwrap();
    let r = reload(&stack).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["error"], "invalid_config");
    let description = r.json()["error_description"].to_string();
    assert!(
        description.contains("routes[5].rules[4].path") && description.contains("bad glob segment"),
        "the answer names the bad key: {description}"
    );
    assert_eq!(
        request(&stack, "GET", "/shop/orders/7", &reader)
            .await
            .status,
        200
    );

    // A new rule that closes reads of one order: in force once the reload answers.
    let closed = format!(
        "{original}\n[[routes.rules]]\nmethods = [\"GET\"]\npath = \"orders/7\"\nallow = false\n"
    );
    std::fs::write(&path, closed).unwrap();
    let r = reload(&stack).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = request(&stack, "GET", "/shop/orders/7", &reader).await;
    assert_eq!(
        refused_by(&r).as_deref(),
        Some("refused by rule 4 of the route")
    );
    assert_eq!(
        request(&stack, "GET", "/shop/orders/8", &reader)
            .await
            .status,
        200
    );
}
