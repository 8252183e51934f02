//! The IdP's access log (`[log] access = true`): one JSON line per request, written off the
//! request path by the shared writer (`tokengate_server::access`).
//!
//! Where the gateway's lines tell routing, the IdP's tell who asked for what: `client_id`,
//! `grant`, `subject` (as presented) and `outcome` (`ok`, or the error code the client got).
//! Never a token, code, password or secret: the query is left out unless `access_query = true`,
//! and even then the values of the parameters that carry secrets are replaced by `-`.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use http::{HeaderValue, Method, Uri, Version, header};
use tokengate_server::access::{
    Clock, Line, address, integer, json_bytes, json_opt, json_str, millis, or_null, protocol,
};
use tokengate_server::cut;

/// Query parameters whose values a line never shows.
const SECRET_PARAMETERS: [&str; 10] = [
    "code",
    "code_verifier",
    "client_secret",
    "password",
    "token",
    "access_token",
    "refresh_token",
    "id_token_hint",
    "state",
    "nonce",
];

/// What a handler tells the log about a request, as a response extension.
#[derive(Clone, Debug, Default)]
pub struct Noted {
    /// The client that asked, as presented.
    pub client_id: Option<String>,
    /// The grant type asked for.
    pub grant: Option<&'static str>,
    /// The user it was about, as presented.
    pub subject: Option<String>,
}

/// The error code a client got, set on every error response (`crate::error`).
#[derive(Clone, Copy, Debug)]
pub struct Outcome(pub &'static str);

/// The IdP's access log.
pub type AccessLog = tokengate_server::access::AccessLog<Record>;

/// A request as it arrived: taken before the handler consumes it.
pub struct Arrived {
    time: SystemTime,
    method: Method,
    uri: Uri,
    version: Version,
    user_agent: Option<HeaderValue>,
    client: Option<IpAddr>,
}

impl Arrived {
    /// Copies what the line needs from `req` (the router calls it before the handler runs);
    /// `client` is the peer address.
    pub fn new<B>(req: &http::Request<B>, client: Option<IpAddr>) -> Self {
        Arrived {
            time: SystemTime::now(),
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            user_agent: req.headers().get(header::USER_AGENT).cloned(),
            client,
        }
    }
}

/// Hands the line of a request that `arrived`, matched `route` and got `response` after
/// `duration`, to the writer.
pub fn record<B>(
    log: &AccessLog,
    arrived: Arrived,
    route: &str,
    response: &http::Response<B>,
    duration: Duration,
) {
    let noted = response.extensions().get::<Noted>().cloned();
    let outcome = response.extensions().get::<Outcome>().map(|o| o.0);
    log.send(Record {
        arrived,
        query: log.query(),
        route: route.to_owned(),
        status: response.status().as_u16(),
        duration,
        noted: noted.unwrap_or_default(),
        outcome: outcome.unwrap_or(if response.status().is_success() {
            "ok"
        } else {
            "-"
        }),
    });
}

/// One request, as its line will tell it (the writer thread formats it).
pub struct Record {
    arrived: Arrived,
    query: bool,
    route: String,
    status: u16,
    duration: Duration,
    noted: Noted,
    outcome: &'static str,
}

impl Line for Record {
    fn format(&self, out: &mut Vec<u8>, clock: &mut Clock) {
        let a = &self.arrived;
        out.extend_from_slice(b"{\"time\":\"");
        clock.write(out, a.time);
        out.extend_from_slice(b"\",\"client_address\":");
        or_null(out, a.client, |out, ip| {
            out.push(b'"');
            address(out, ip);
            out.push(b'"');
        });
        out.extend_from_slice(b",\"method\":");
        json_str(out, cut(a.method.as_str()));
        out.extend_from_slice(b",\"path\":");
        json_str(out, cut(a.uri.path()));
        if let Some(query) = a.uri.query().filter(|_| self.query) {
            out.extend_from_slice(b",\"query\":");
            json_str(out, cut(&redacted(query)));
        }
        out.extend_from_slice(b",\"protocol\":\"");
        out.extend_from_slice(protocol(a.version).as_bytes());
        out.extend_from_slice(b"\",\"route\":");
        json_str(out, cut(&self.route));
        out.extend_from_slice(b",\"status\":");
        integer(out, self.status);
        out.extend_from_slice(b",\"duration_ms\":");
        millis(out, self.duration);
        out.extend_from_slice(b",\"client_id\":");
        json_opt(out, self.noted.client_id.as_deref().map(cut));
        out.extend_from_slice(b",\"grant\":");
        json_opt(out, self.noted.grant);
        out.extend_from_slice(b",\"subject\":");
        json_opt(out, self.noted.subject.as_deref().map(cut));
        out.extend_from_slice(b",\"outcome\":");
        json_str(out, self.outcome);
        out.extend_from_slice(b",\"user_agent\":");
        or_null(out, a.user_agent.as_ref(), |out, v| {
            json_bytes(out, v.as_bytes())
        });
        out.extend_from_slice(b"}\n");
    }
}

/// `query` with the value of every parameter that may carry a secret replaced by `-`.
fn redacted(query: &str) -> String {
    let mut out = String::with_capacity(query.len());
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        let name = pair.split('=').next().unwrap_or("");
        let secret = SECRET_PARAMETERS
            .iter()
            .any(|s| s.eq_ignore_ascii_case(name));
        if secret && pair.len() > name.len() {
            out.push_str(name);
            out.push_str("=-");
        } else {
            out.push_str(pair);
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn secrets_in_the_query_are_replaced() {
        assert_eq!(
            redacted("client_id=web&code=abc&state=xyz&CODE_verifier=v&scope=openid"),
            "client_id=web&code=-&state=-&CODE_verifier=-&scope=openid"
        );
        assert_eq!(redacted("code"), "code");
    }

    #[test]
    fn a_line_is_one_json_object_with_what_the_handler_noted() {
        let req = http::Request::post("/oauth2/token?x=1&password=hunter2")
            .header(header::USER_AGENT, "curl/8")
            .body(())
            .unwrap();
        let record = Record {
            arrived: Arrived::new(&req, Some([10, 0, 0, 1].into())),
            query: true,
            route: "/oauth2/token".into(),
            status: 400,
            duration: Duration::from_micros(1500),
            noted: Noted {
                client_id: Some("cli\nent".into()),
                grant: Some("password"),
                subject: Some("alice".into()),
            },
            outcome: "invalid_grant",
        };
        let mut line = Vec::new();
        record.format(&mut line, &mut Clock::default());
        let line = String::from_utf8(line).unwrap();
        assert_eq!(line.matches('\n').count(), 1, "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["client_address"], "10.0.0.1");
        assert_eq!(v["method"], "POST");
        assert_eq!(v["path"], "/oauth2/token");
        assert_eq!(v["query"], "x=1&password=-");
        assert_eq!(v["route"], "/oauth2/token");
        assert_eq!(v["status"], 400);
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["client_id"], "cli\nent");
        assert_eq!(v["grant"], "password");
        assert_eq!(v["subject"], "alice");
        assert_eq!(v["outcome"], "invalid_grant");
        assert_eq!(v["user_agent"], "curl/8");
    }
}
