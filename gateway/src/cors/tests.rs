use super::*;

fn config(text: &str) -> CorsConfig {
    #[derive(serde::Deserialize)]
    struct Route {
        cors: CorsConfig,
    }
    toml::from_str::<Route>(text).unwrap().cors
}

fn cors(text: &str) -> Cors {
    Cors::new(&config(text)).unwrap()
}

const SPA: &str = r#"cors = { allowed_origins = ["https://app.example.com"], allowed_methods = ["GET", "PUT", "DELETE"], allowed_headers = ["Authorization", "content-type"], expose_headers = ["x-request-id", "ETag"], allow_credentials = true, max_age = "10m" }"#;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn get<'h>(h: &'h HeaderMap, name: &str) -> Option<&'h str> {
    h.get(name).map(|v| v.to_str().unwrap())
}

#[test]
fn bad_cors_tables_name_their_key() {
    let cases = [
        (r#"cors = { allowed_origins = [] }"#, "allowed_origins"),
        (
            r#"cors = { allowed_origins = ["https://a.example/app"] }"#,
            "allowed_origins",
        ),
        (
            r#"cors = { allowed_origins = ["a.example"] }"#,
            "allowed_origins",
        ),
        (
            r#"cors = { allowed_origins = ["*"], allow_credentials = true }"#,
            "allowed_origins",
        ),
        (
            r#"cors = { allowed_origins = ["*", "https://a.example"] }"#,
            "allowed_origins",
        ),
        (
            r#"cors = { allowed_origins = ["https://a.example"], allowed_methods = ["get"] }"#,
            "allowed_methods",
        ),
        (
            r#"cors = { allowed_origins = ["https://a.example"], allowed_methods = [] }"#,
            "allowed_methods",
        ),
        (
            r#"cors = { allowed_origins = ["https://a.example"], allowed_headers = ["*"] }"#,
            "allowed_headers",
        ),
        (
            r#"cors = { allowed_origins = ["https://a.example"], expose_headers = ["bad header"] }"#,
            "expose_headers",
        ),
        (
            r#"cors = { allowed_origins = ["https://a.example"], max_age = "25h" }"#,
            "max_age",
        ),
    ];
    for (text, key) in cases {
        assert_eq!(Cors::new(&config(text)).unwrap_err().key, key, "{text}");
    }
}

#[test]
fn a_preflight_is_answered_for_allowed_origin_method_and_headers_only() {
    let c = cors(SPA);
    let ok = c
        .preflight(&headers(&[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "PUT"),
            (
                "access-control-request-headers",
                "authorization, Content-Type",
            ),
        ]))
        .unwrap();
    assert_eq!(ok.status(), 204);
    let h = ok.headers();
    assert_eq!(
        get(h, "access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(get(h, "access-control-allow-credentials"), Some("true"));
    assert_eq!(
        get(h, "access-control-allow-methods"),
        Some("GET, PUT, DELETE")
    );
    assert_eq!(
        get(h, "access-control-allow-headers"),
        Some("authorization, content-type")
    );
    assert_eq!(get(h, "access-control-max-age"), Some("600"));
    assert!(get(h, "vary").unwrap().starts_with("Origin"));

    // POST is safelisted: allowed without being listed. The origin matches in any case.
    let simple = headers(&[
        ("origin", "HTTPS://App.Example.com"),
        ("access-control-request-method", "POST"),
    ]);
    assert_eq!(c.preflight(&simple).unwrap().status(), 204);

    let refused: &[&[(&str, &str)]] = &[
        // Another origin, a look-alike, "null", two origins.
        &[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "GET"),
        ],
        &[
            ("origin", "https://app.example.com.evil.example"),
            ("access-control-request-method", "GET"),
        ],
        &[("origin", "null"), ("access-control-request-method", "GET")],
        &[
            ("origin", "https://app.example.com"),
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "GET"),
        ],
        // A method not listed.
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "PATCH"),
        ],
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "G T"),
        ],
        // A header not listed.
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", "authorization, x-admin"),
        ],
    ];
    for request in refused {
        assert_eq!(
            c.preflight(&headers(request)).map(|r| r.status()),
            Err(Reject::CorsRefused),
            "{request:?}"
        );
    }
    let many = vec!["authorization"; MAX_REQUESTED + 1].join(",");
    let flood = headers(&[
        ("origin", "https://app.example.com"),
        ("access-control-request-method", "GET"),
        ("access-control-request-headers", &many),
    ]);
    assert!(c.preflight(&flood).is_err());
}

#[test]
fn answers_get_our_cors_headers_in_place_of_the_upstreams() {
    let c = cors(SPA);
    let upstream = |h: &mut HeaderMap| {
        h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
        h.insert(
            "access-control-expose-headers",
            HeaderValue::from_static("x-secret"),
        );
        h.insert("vary", HeaderValue::from_static("Accept-Encoding"));
    };
    let request = headers(&[("origin", "https://app.example.com")]);
    let mut h = HeaderMap::new();
    upstream(&mut h);
    c.respond(&mut h, c.allowed_origin(&request));
    assert_eq!(
        get(&h, "access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(get(&h, "access-control-allow-credentials"), Some("true"));
    assert_eq!(
        get(&h, "access-control-expose-headers"),
        Some("x-request-id, etag")
    );
    let vary: Vec<&str> = h
        .get_all("vary")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(vary, ["Accept-Encoding", "Origin"]);

    // Another origin: the upstream's CORS headers go, and none of ours come.
    let mut h = HeaderMap::new();
    upstream(&mut h);
    let other = headers(&[("origin", "https://evil.example")]);
    c.respond(&mut h, c.allowed_origin(&other));
    assert_eq!(get(&h, "access-control-allow-origin"), None);
    assert_eq!(get(&h, "access-control-expose-headers"), None);
    assert_eq!(h.get_all("vary").iter().count(), 2);
}

#[test]
fn any_origin_is_echoed_without_credentials() {
    let c = cors(r#"cors = { allowed_origins = ["*"] }"#);
    let request = headers(&[("origin", "https://anyone.example")]);
    let mut h = HeaderMap::new();
    c.respond(&mut h, c.allowed_origin(&request));
    assert_eq!(
        get(&h, "access-control-allow-origin"),
        Some("https://anyone.example")
    );
    assert_eq!(get(&h, "access-control-allow-credentials"), None);
    assert!(!c.trusts_credentialed(&request));
    assert!(cors(SPA).trusts_credentialed(&headers(&[("origin", "https://app.example.com")])));
}
