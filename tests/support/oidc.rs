//! An independent OpenID Connect client for the tests (the `openidconnect` crate over our
//! hyper client), and a cookie-keeping HTTP client that acts as a browser without script.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use openidconnect::core::CoreClient;
use openidconnect::{
    AsyncHttpClient, EndpointMaybeSet, EndpointNotSet, EndpointSet, HttpRequest, HttpResponse,
};

use super::{Reply, send};

#[derive(Debug)]
pub struct HttpError(Box<dyn std::error::Error + Send + Sync>);

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http client: {}", self.0)
    }
}

impl std::error::Error for HttpError {}

/// openidconnect's HTTP client trait over hyper; never follows redirects.
#[derive(Clone)]
pub struct Http(Client<HttpConnector, Full<Bytes>>);

impl Http {
    pub fn new() -> Self {
        Http(Client::builder(TokioExecutor::new()).build_http())
    }
}

impl Default for Http {
    fn default() -> Self {
        Self::new()
    }
}

impl<'c> AsyncHttpClient<'c> for Http {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, req: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let req = http::Request::from_parts(parts, Full::new(Bytes::from(body)));
            let resp = self
                .0
                .request(req)
                .await
                .map_err(|e| HttpError(Box::new(e)))?;
            let (parts, body) = resp.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| HttpError(Box::new(e)))?
                .to_bytes();
            Ok(http::Response::from_parts(parts, body.to_vec()))
        })
    }
}

/// A relying party after discovery, with its token endpoint set.
pub type Rp = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
    EndpointMaybeSet,
>;

/// A browser without script: keeps cookies, never follows redirects.
#[derive(Default)]
pub struct Browser {
    jar: Mutex<BTreeMap<String, String>>,
}

impl Browser {
    pub fn new() -> Self {
        Self::default()
    }

    fn cookie_header(&self) -> String {
        self.jar
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep(&self, reply: &Reply) {
        let mut jar = self.jar.lock().unwrap();
        for value in reply.headers.get_all("set-cookie") {
            let value = value.to_str().unwrap();
            let (pair, attributes) = value.split_once(';').unwrap_or((value, ""));
            let (name, v) = pair.split_once('=').unwrap();
            if attributes.contains("Max-Age=0") {
                jar.remove(name.trim());
            } else {
                jar.insert(name.trim().to_owned(), v.trim().to_owned());
            }
        }
    }

    pub fn cookie(&self, name: &str) -> Option<String> {
        self.jar.lock().unwrap().get(name).cloned()
    }

    pub fn forget(&self, name: &str) {
        self.jar.lock().unwrap().remove(name);
    }

    pub async fn get(&self, url: &str) -> Reply {
        let cookies = self.cookie_header();
        let reply = send("GET", url, &[("cookie", &cookies)], String::new()).await;
        self.keep(&reply);
        reply
    }

    /// Any request with the jar's cookies and these headers.
    pub async fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: String,
    ) -> Reply {
        let cookies = self.cookie_header();
        let mut all = vec![("cookie", cookies.as_str())];
        all.extend_from_slice(headers);
        let reply = send(method, url, &all, body).await;
        self.keep(&reply);
        reply
    }

    pub async fn post_form(&self, url: &str, form: &[(&str, &str)]) -> Reply {
        let cookies = self.cookie_header();
        let body = serde_urlencoded::to_string(form).unwrap();
        let reply = send(
            "POST",
            url,
            &[
                ("cookie", &cookies),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            body,
        )
        .await;
        self.keep(&reply);
        reply
    }

    /// Opens `authorize_url` and, if it shows the sign-in form, fills it in and sends it.
    /// Returns the last answer (a redirect to the client when signing in worked).
    pub async fn sign_in(&self, authorize_url: &str, username: &str, password: &str) -> Reply {
        let page = self.get(authorize_url).await;
        if page.status != 200 {
            return page;
        }
        let mut form = hidden_fields(&page.body);
        form.push(("username".into(), username.into()));
        form.push(("password".into(), password.into()));
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let action = authorize_url.split('?').next().unwrap();
        self.post_form(action, &form).await
    }
}

/// The hidden fields of the first form in an HTML page.
pub fn hidden_fields(html: &str) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    for input in html.split("<input").skip(1) {
        let tag = &input[..input.find('>').unwrap()];
        if !tag.contains("type=\"hidden\"") {
            continue;
        }
        let attr = |name: &str| {
            let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
            let end = start + tag[start..].find('"')?;
            Some(unescape(&tag[start..end]))
        };
        fields.push((attr("name").unwrap(), attr("value").unwrap_or_default()));
    }
    fields
}

/// Undoes HTML escaping (named and numeric character references).
pub fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let Some(end) = rest[i..].find(';') else {
            out.push_str(&rest[i..]);
            return out;
        };
        let entity = &rest[i + 1..i + end];
        let c = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match c {
            Some(c) => out.push(c),
            None => out.push_str(&rest[i..=i + end]),
        }
        rest = &rest[i + end + 1..];
    }
    out.push_str(rest);
    out
}

/// The query parameters of a redirect's `Location`.
pub fn location_query(reply: &Reply) -> BTreeMap<String, String> {
    let location = reply.header("location").expect("a Location header");
    let query = location.split_once('?').map_or("", |(_, q)| q);
    serde_urlencoded::from_str(query).unwrap()
}

/// Signs in to the admin console at `admin` (the admin listener's base URL) as `username`:
/// `/console/` → `/console/login` → the IdP's sign-in page → `/console/callback`. Returns the
/// callback's answer (a redirect to `/console/` with the console cookie when it worked).
pub async fn console_sign_in(
    browser: &Browser,
    admin: &str,
    username: &str,
    password: &str,
) -> Reply {
    let start = browser.get(&format!("{admin}/console/")).await;
    assert_eq!(start.status, 303, "{}", start.body);
    assert_eq!(start.header("location"), Some("/console/login"));
    let login = browser
        .get(&format!("{admin}/console/login?prompt=login"))
        .await;
    assert_eq!(login.status, 302, "{}", login.body);
    let authorize = login.header("location").unwrap().to_owned();
    let back = browser.sign_in(&authorize, username, password).await;
    assert_eq!(back.status, 302, "{}", back.body);
    let callback = back.header("location").unwrap().to_owned();
    assert!(
        callback.starts_with(&format!("{admin}/console/callback?")),
        "{callback}"
    );
    browser.get(&callback).await
}
