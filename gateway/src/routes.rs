//! The route table: the longest matching path prefix wins, and a route limited to a host is
//! preferred over a catch-all of equal prefix.

use std::sync::Arc;

use http::{Method, Request, header};

use crate::cluster::Cluster;
use crate::config::{RouteConfig, ServerConfig};
use crate::cors::Cors;
use crate::metrics::{Metrics, StatusCounters};
use crate::policy::{self, By, Policy, Verdict, Who};
use crate::ratelimit::RateLimiter;
use crate::reject::Reject;

/// A route with its upstreams parsed once.
#[derive(Debug)]
pub struct Route {
    /// `path_prefix` as configured.
    pub prefix: Arc<str>,
    /// Lower-case host this route is limited to.
    pub host: Option<String>,
    /// At least one upstream, with the state that picking and retrying keep; shared with the
    /// route that replaces this one on a reload when its upstream settings are unchanged.
    pub upstreams: Arc<Cluster>,
    /// `cors`: `None` costs the request path nothing.
    pub cors: Option<Box<Cors>>,
    /// `rules`, then `roles` (any one of them; empty: any valid token), compiled.
    pub policy: Policy,
    /// `false`: a public route, no token asked for.
    pub auth: bool,
    /// `Upgrade` requests pass through; elsewhere `Upgrade` is dropped.
    pub websocket: bool,
    /// Takes the browser session cookie; navigations without a session go to sign in.
    pub browser: bool,
    /// The route to the IdP: its sign-in cookie is forwarded.
    pub idp: bool,
    /// Requests this route answered, by status.
    pub requests: StatusCounters,
    /// `rate_limit`: `None` costs the request path nothing. Shared with the route that a
    /// reload replaces this one with when its limit is unchanged, so its state survives.
    pub limit: Option<Arc<RateLimiter>>,
    /// `rate_limit_headers`: allowed responses carry `RateLimit` too.
    pub limit_headers: bool,
}

impl Route {
    /// `None` if an upstream URL is not `scheme://authority`, or there is none, or the rate
    /// limit or a rule is invalid. `server` has the timeouts a route may override. `previous` is the route
    /// of the same prefix and host in the table this one replaces: an unchanged rate limit, and
    /// unchanged upstream settings, keep their state.
    pub fn new(
        config: &RouteConfig,
        server: &ServerConfig,
        metrics: &Metrics,
        previous: Option<&Route>,
    ) -> Option<Self> {
        let upstreams = Cluster::new(config, server, metrics, previous.map(|p| &p.upstreams))?;
        let host = config.host.as_ref().map(|h| h.to_ascii_lowercase());
        let limit = match &config.rate_limit {
            Some(limit) => {
                let mut limit = limit.clone();
                limit.max_keys = config.rate_limit_max_keys;
                match previous.and_then(|p| p.limit.as_ref()) {
                    Some(kept) if *kept.config() == limit => Some(kept.clone()),
                    _ => Some(Arc::new(RateLimiter::new(
                        &limit,
                        metrics.rate_limited(&config.path_prefix, limit.per.as_str()),
                    )?)),
                }
            }
            None => None,
        };
        let policy = Policy::compile(&config.rules, &config.roles, config.auth).ok()?;
        let cors = match &config.cors {
            Some(cors) => Some(Box::new(Cors::new(cors).ok()?)),
            None => None,
        };
        Some(Route {
            cors,
            policy,
            limit,
            limit_headers: config.rate_limit_headers,
            requests: metrics.route_counters(&config.path_prefix, host.as_deref()),
            prefix: config.path_prefix.as_str().into(),
            host,
            upstreams,
            auth: config.auth,
            websocket: config.websocket,
            browser: config.browser,
            idp: config.idp,
        })
    }

    /// Whether a request with this method and path, from `who` (`None` on a public route),
    /// may pass: the first of the route's rules that matches decides, else its roles.
    pub fn decide(&self, method: &Method, path: &str, who: Option<Who<'_>>) -> Verdict {
        self.policy
            .decide(method, policy::rest(path, &self.prefix), who)
    }

    /// [`Route::decide`] as the request path needs it: a refusal by a rule names the rule; a
    /// path that rules cannot judge is a bad target.
    pub fn authorize(
        &self,
        method: &Method,
        path: &str,
        who: Option<Who<'_>>,
    ) -> Result<(), Reject> {
        match self.decide(method, path, who) {
            Verdict { allowed: true, .. } => Ok(()),
            Verdict {
                by: By::Rule(i), ..
            } => Err(Reject::InsufficientScope(Some(
                u16::try_from(i).unwrap_or(u16::MAX),
            ))),
            Verdict { by: By::Route, .. } => Err(Reject::InsufficientScope(None)),
            Verdict { by: By::Path, .. } => Err(Reject::BadTarget),
        }
    }

    fn matches(&self, path: &str, host: Option<&str>) -> bool {
        path.starts_with(&*self.prefix)
            && self
                .host
                .as_ref()
                .is_none_or(|h| host.is_some_and(|rh| rh.eq_ignore_ascii_case(h)))
    }
}

/// The route table, built from `[[routes]]` on load and on every reload.
pub struct Routes(Vec<Route>);

impl Routes {
    /// The route with this prefix and host, if the table has one.
    pub fn get(&self, prefix: &str, host: Option<&str>) -> Option<&Route> {
        self.0
            .iter()
            .find(|r| &*r.prefix == prefix && r.host.as_deref() == host)
    }

    /// Sorts routes most specific first.
    pub fn new(mut routes: Vec<Route>) -> Self {
        // Longest prefix first; at equal length, a route for a named host before a catch-all.
        routes.sort_by_key(|r| std::cmp::Reverse((r.prefix.len(), r.host.is_some())));
        Routes(routes)
    }

    /// Every route, most specific first.
    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.0.iter()
    }

    /// The route for a request: the first (most specific) that matches its path and host.
    pub fn find<B>(&self, req: &Request<B>) -> Option<&Route> {
        let (path, host) = (req.uri().path(), request_host(req));
        self.0.iter().find(|r| r.matches(path, host))
    }
}

/// What `tokengate check` answers: for a request as configured, which route and which rule
/// decide, and the outcome, without traffic. Rate limits, the CSRF origin check of `browser`
/// routes and the token itself are outside it: the identity is taken as valid.
#[derive(Debug)]
pub struct Check {
    lines: Vec<(&'static str, String)>,
    /// `None`: the request would pass (as far as rules and roles go).
    pub refused: Option<Reject>,
}

/// Why `tokengate check` cannot answer.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The method is not an HTTP method.
    #[error("{0:?} is not an HTTP method")]
    Method(String),
    /// The path is not an origin-form request target.
    #[error("{0:?} is not a path (it must start with /)")]
    Path(String),
    /// A route of the configuration cannot be built.
    #[error("routes[{0}] cannot be built")]
    Route(usize),
}

impl Check {
    /// Decides `method path` for `host` (if any) as the routes of `config` would, for `who`
    /// (taken as a valid token on a protected route; ignored on a public one).
    pub fn run(
        config: &crate::config::GatewayConfig,
        method: &str,
        path: &str,
        host: Option<&str>,
        who: Who<'_>,
    ) -> Result<Self, CheckError> {
        let method =
            Method::from_bytes(method.as_bytes()).map_err(|_| CheckError::Method(method.into()))?;
        let uri = path
            .parse::<http::Uri>()
            .ok()
            .filter(|u| u.scheme().is_none() && path.starts_with('/'))
            .ok_or_else(|| CheckError::Path(path.into()))?;
        let metrics = Metrics::new();
        let routes = config
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| Route::new(r, &config.server, &metrics, None).ok_or(CheckError::Route(i)))
            .collect::<Result<Vec<_>, _>>()?;
        let routes = Routes::new(routes);
        let mut req = Request::builder().method(method.clone()).uri(uri.clone());
        if let Some(host) = host {
            req = req.header(header::HOST, host);
        }
        let req = req.body(()).map_err(|_| CheckError::Path(path.into()))?;
        let mut lines = vec![("request", format!("{method} {}", uri.path()))];
        let Some(route) = routes.find(&req) else {
            lines.push(("route", "none matches".into()));
            return Ok(Check::done(lines, Some(Reject::NoRoute)));
        };
        let (index, config) = config
            .routes
            .iter()
            .enumerate()
            .find(|(_, r)| {
                r.path_prefix == *route.prefix
                    && r.host.as_ref().map(|h| h.to_ascii_lowercase()) == route.host
            })
            .ok_or(CheckError::Route(0))?;
        let host = config
            .host
            .as_ref()
            .map(|h| format!(", host = {h:?}"))
            .unwrap_or_default();
        lines.push((
            "route",
            format!(
                "routes[{index}]: path_prefix = {:?}{host}",
                config.path_prefix
            ),
        ));
        if crate::policy::dot_segment(uri.path()) {
            lines.push((
                "decided by",
                "the path: every route refuses a . or .. segment (written out or escaped)".into(),
            ));
            return Ok(Check::done(lines, Some(Reject::BadTarget)));
        }
        let who = route.auth.then_some(who);
        lines.push((
            "as",
            match who {
                None => "anyone: a public route (auth = false) asks for no token".into(),
                Some(w) => format!(
                    "a valid token with roles {:?}, client {}, subject {}",
                    w.roles,
                    w.client.map_or("(none)".into(), |c| format!("{c:?}")),
                    match std::str::from_utf8(w.subject) {
                        Ok("") | Err(_) => "(any)".into(),
                        Ok(s) => format!("{s:?}"),
                    }
                ),
            },
        ));
        let verdict = route.decide(&method, uri.path(), who);
        lines.push((
            "decided by",
            match verdict.by {
                By::Rule(i) => format!("rules[{i}]: {}", describe(&config.rules[i])),
                By::Route if !route.auth => "no rule matches; a public route lets it pass".into(),
                By::Route if config.roles.is_empty() => {
                    "no rule matches; the route's roles: none asked, any valid token".into()
                }
                By::Route => format!("no rule matches; the route's roles (any of) {:?}", config.roles),
                By::Path => "the path: a route with path rules refuses a path a backend could read differently (a . or .. segment, //, a backslash, an escaped / \\ or unreserved character)".into(),
            },
        ));
        let refused = route.authorize(&method, uri.path(), who).err();
        Ok(Check::done(lines, refused))
    }

    fn done(mut lines: Vec<(&'static str, String)>, refused: Option<Reject>) -> Self {
        lines.push((
            "outcome",
            match refused {
                None => "allowed: forwarded upstream".into(),
                Some(r) => format!("refused: {} {}", r.status().as_u16(), r.name()),
            },
        ));
        Check { lines, refused }
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (key, value) in &self.lines {
            writeln!(f, "{:<11} {value}", format!("{key}:"))?;
        }
        Ok(())
    }
}

/// A rule as the file writes it, on one line.
fn describe(rule: &crate::config::RuleConfig) -> String {
    let lists = [
        ("methods", &rule.methods),
        ("roles_any", &rule.roles_any),
        ("roles_all", &rule.roles_all),
        ("clients", &rule.clients),
        ("subjects", &rule.subjects),
    ];
    let mut parts: Vec<String> = Vec::new();
    if let Some(path) = &rule.path {
        parts.push(format!("path = {path:?}"));
    }
    parts.extend(
        lists
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k} = {v:?}"))),
    );
    if !rule.allow {
        parts.push("allow = false".into());
    }
    if parts.is_empty() {
        "(for every request, asks nothing)".into()
    } else {
        parts.join(", ")
    }
}

/// The host a request is for, without the port: `:authority` (HTTP/2) or `Host`.
fn request_host<B>(req: &Request<B>) -> Option<&str> {
    let raw = match req.uri().authority() {
        Some(authority) => authority.host(),
        None => req.headers().get(header::HOST)?.to_str().ok()?,
    };
    // Strip a port, keeping IPv6 literals whole.
    Some(match raw.rfind(':') {
        Some(i) if !raw.ends_with(']') => &raw[..i],
        _ => raw,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn route(prefix: &str, host: Option<&str>, upstream: &str) -> Route {
        let host = host
            .map(|h| format!("host = \"{h}\"\n"))
            .unwrap_or_default();
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:1\"\n[admin]\nlisten = \"127.0.0.1:2\"\n\
             [idp]\njwks_url = \"http://i:1/\"\n[[routes]]\npath_prefix = \"{prefix}\"\n\
             {host}upstream = \"{upstream}\"\nauth = false\n"
        );
        let config =
            crate::config::GatewayConfig::parse(&text, std::path::Path::new("g.toml")).unwrap();
        Route::new(&config.routes[0], &config.server, &Metrics::new(), None).unwrap()
    }

    fn table() -> Routes {
        Routes::new(vec![
            route("/", None, "http://root:1"),
            route("/api/", None, "http://api:1"),
            route("/api/", Some("Shop.Example"), "http://shop:1"),
            route("/api/admin/", None, "http://admin:1"),
        ])
    }

    fn upstream_for(routes: &Routes, uri: &str, host: Option<&str>) -> Option<String> {
        let mut req = Request::get(uri);
        if let Some(h) = host {
            req = req.header(header::HOST, h);
        }
        let req = req.body(()).unwrap();
        routes
            .find(&req)
            .map(|r| r.upstreams.upstreams()[0].authority.host().to_owned())
    }

    #[test]
    fn longest_prefix_wins() {
        let t = table();
        assert_eq!(
            upstream_for(&t, "/api/admin/x", None).as_deref(),
            Some("admin")
        );
        assert_eq!(upstream_for(&t, "/api/x", None).as_deref(), Some("api"));
        assert_eq!(upstream_for(&t, "/apix", None).as_deref(), Some("root"));
        assert_eq!(upstream_for(&t, "/", None).as_deref(), Some("root"));
    }

    #[test]
    fn a_host_route_wins_over_a_catch_all_and_ignores_port_and_case() {
        let t = table();
        for host in ["shop.example", "SHOP.example:8443"] {
            assert_eq!(
                upstream_for(&t, "/api/x", Some(host)).as_deref(),
                Some("shop"),
                "{host}"
            );
        }
        assert_eq!(
            upstream_for(&t, "http://shop.example/api/x", None).as_deref(),
            Some("shop")
        );
        assert_eq!(
            upstream_for(&t, "/api/x", Some("other.example")).as_deref(),
            Some("api")
        );
        assert_eq!(
            upstream_for(&t, "/api/x", Some("[::1]:80")).as_deref(),
            Some("api")
        );
    }

    #[test]
    fn no_match_is_none() {
        let t = Routes::new(vec![route("/api/", None, "http://api:1")]);
        assert_eq!(upstream_for(&t, "/public", None), None);
    }

    #[test]
    fn upstreams_are_numbered_across_routes_and_tables() {
        let (t, u) = (table(), table());
        let mut ids: Vec<usize> = [&t, &u]
            .iter()
            .flat_map(|t| t.iter())
            .flat_map(|r| r.upstreams.upstreams().iter().map(|u| u.id))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 8);
    }

    #[test]
    fn roles_allow_any_listed_or_none_asked() {
        fn get(r: &Route, roles: Option<&[String]>) -> Result<(), Reject> {
            let who = roles.map(|roles| Who {
                roles,
                client: None,
                subject: b"alice",
            });
            r.authorize(&Method::GET, "/x", who)
        }
        let mut r = route("/", None, "http://a:1");
        assert_eq!(get(&r, Some(&[])), Ok(()));
        r.policy = Policy::compile(&[], &["a".into(), "b".into()], true).unwrap();
        assert_eq!(get(&r, Some(&["x".into(), "b".into()])), Ok(()));
        assert_eq!(
            get(&r, Some(&["x".into()])),
            Err(Reject::InsufficientScope(None))
        );
        assert_eq!(get(&r, None), Ok(()), "a public route checks no roles");
    }
}
