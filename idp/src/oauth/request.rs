//! The authorization request, checked (client, redirect URI, PKCE, scope, nonce), and how a
//! sign-in ends: the browser's single-sign-on session and a code sent back to the client. Shared
//! by the sign-in form (`authorize`), the second factor (`crate::second_factor`) and federation,
//! none of which depends on another for it.

use std::sync::Arc;
use std::time::Duration;

use axum::response::Response;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use subtle::ConstantTimeEq;
use tokengate_server::cookies::{self, SameSite};
use tokengate_store::{
    AuthCode, CodeId, Codes, ReferenceToken, Session, SessionKind, User, UserDirectory, now_unix,
};

use crate::clients::Client;
use crate::config::Grant;
use crate::extract::FormBody;
use crate::oauth::scope::Scope;
use crate::pages::{self, redirect};
use crate::sessions::{ACR_MFA, ACR_ONE_FACTOR, NewSession};
use crate::state::AppState;

/// How long an authorization code may wait for its redemption.
pub const CODE_TTL: Duration = Duration::from_secs(60);
const MAX_STATE: usize = 1024;
const MAX_NONCE: usize = 512;

/// An authorization request, checked.
pub struct AuthorizeRequest {
    /// Registered, and allowed the authorization code flow.
    pub client: Arc<Client>,
    /// One of the client's registered URIs, exactly.
    pub redirect_uri: String,
    /// Given back to the client unchanged; at most 1024 bytes.
    pub state: Option<String>,
    /// What `scope` asked for; `openid` makes the code also yield an ID token.
    pub scope: Scope,
    /// The `S256` PKCE challenge; required of public clients.
    pub code_challenge: Option<String>,
    /// OpenID Connect `nonce`, copied into the ID token; at most 512 bytes.
    pub nonce: Option<String>,
    /// OpenID Connect `prompt` as sent (`none`, `login`), read by the handlers.
    pub prompt: Option<String>,
    /// Whether the client asked for [`ACR_MFA`] (`acr_values`, or the `claims` parameter's
    /// `acr` of the ID token): a second factor before the code, whatever the user's roles.
    pub wants_mfa: bool,
}

/// Why an authorization request goes no further.
#[derive(Debug)]
pub enum Refusal {
    /// The client or its redirect URI cannot be trusted: a page, never a redirect.
    Page(&'static str),
    /// Back to the client with `error` (and `state`), RFC 6749 §4.1.2.1.
    Redirect {
        /// The client's registered redirect URI.
        to: String,
        /// The request's `state`, when it was short enough to send back.
        state: Option<String>,
        /// The RFC 6749 error code (`invalid_request`, `unsupported_response_type`, ...).
        error: &'static str,
        /// Human-readable `error_description`.
        description: &'static str,
    },
}

/// Whether `s` is 43 to 128 characters of RFC 7636's `unreserved` set.
pub fn is_pkce_text(s: &str) -> bool {
    (43..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// The `S256` challenge of a verifier: `BASE64URL(SHA256(verifier))`.
pub fn pkce_challenge(verifier: &str) -> String {
    use base64::Engine;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// Whether `verifier` is well formed and its `S256` challenge is `challenge` (constant time).
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let computed = pkce_challenge(verifier);
    is_pkce_text(verifier) && bool::from(computed.as_bytes().ct_eq(challenge.as_bytes()))
}

impl AuthorizeRequest {
    /// The request's parameters, from the query (GET) or the sign-in form (POST).
    pub fn parse(params: &FormBody, state: &AppState) -> Result<Self, Refusal> {
        let page = |message| move |_| Refusal::Page(message);
        let client_id = params
            .get("client_id")
            .map_err(page("The request names its application more than once."))?
            .ok_or(Refusal::Page(
                "The request does not name its application (client_id).",
            ))?;
        let client = state
            .clients
            .get(client_id)
            .ok_or(Refusal::Page(
                "The application is not registered with this sign-in service.",
            ))?
            .clone();
        let redirect_uri = params
            .get("redirect_uri")
            .map_err(page("The request names its redirect URI more than once."))?
            .ok_or(Refusal::Page(
                "The request does not say where to return (redirect_uri).",
            ))?;
        if !client.has_redirect_uri(redirect_uri) {
            return Err(Refusal::Page(
                "The redirect URI is not registered for this application.",
            ));
        }
        let redirect_uri = redirect_uri.to_owned();
        // From here on, errors go back to the client.
        let state_param = params.get("state").ok().flatten();
        let refuse = |error: &'static str, description: &'static str| Refusal::Redirect {
            to: redirect_uri.clone(),
            state: state_param
                .filter(|s| s.len() <= MAX_STATE)
                .map(str::to_owned),
            error,
            description,
        };
        let one = |name: &str| {
            params
                .get(name)
                .map_err(|_| refuse("invalid_request", "a parameter is repeated"))
        };
        if state_param.is_some_and(|s| s.len() > MAX_STATE) {
            return Err(refuse("invalid_request", "state is too long"));
        }
        let state_value = one("state")?.map(str::to_owned);
        if !client.may_use(Grant::AuthorizationCode) {
            return Err(refuse(
                "unauthorized_client",
                "this client may not use the authorization code flow",
            ));
        }
        match one("response_type")? {
            Some("code") => {}
            Some(_) => {
                return Err(refuse(
                    "unsupported_response_type",
                    "only response_type=code is supported",
                ));
            }
            None => return Err(refuse("invalid_request", "response_type is required")),
        }
        let scope = Scope::parse(one("scope")?)
            .map_err(|_| refuse("invalid_scope", "the scope is malformed"))?;
        let code_challenge = match (one("code_challenge")?, one("code_challenge_method")?) {
            (Some(challenge), Some("S256")) if is_pkce_text(challenge) => {
                Some(challenge.to_owned())
            }
            (Some(_), Some("S256")) => {
                return Err(refuse("invalid_request", "code_challenge is malformed"));
            }
            (Some(_), _) => {
                return Err(refuse(
                    "invalid_request",
                    "code_challenge_method must be S256",
                ));
            }
            (None, Some(_)) => {
                return Err(refuse(
                    "invalid_request",
                    "code_challenge_method without code_challenge",
                ));
            }
            (None, None) if client.is_public() => {
                return Err(refuse(
                    "invalid_request",
                    "PKCE is required: send code_challenge with code_challenge_method=S256",
                ));
            }
            (None, None) => None,
        };
        let nonce = one("nonce")?;
        if nonce.is_some_and(|n| n.len() > MAX_NONCE) {
            return Err(refuse("invalid_request", "nonce is too long"));
        }
        let prompt = one("prompt")?.map(str::to_owned);
        let wants_mfa = wants_mfa(one("acr_values")?, one("claims")?)
            .map_err(|description| refuse("invalid_request", description))?;
        Ok(AuthorizeRequest {
            client,
            redirect_uri,
            state: state_value,
            scope,
            code_challenge,
            nonce: nonce.map(str::to_owned),
            prompt,
            wants_mfa,
        })
    }

    /// A redirect refusal back to this request's client, with its `state`.
    pub fn refuse(&self, error: &'static str, description: &'static str) -> Refusal {
        Refusal::Redirect {
            to: self.redirect_uri.clone(),
            state: self.state.clone(),
            error,
            description,
        }
    }

    /// The parameters the sign-in form carries back.
    pub fn hidden(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            ("client_id", self.client.id.clone()),
            ("redirect_uri", self.redirect_uri.clone()),
            ("response_type", "code".to_owned()),
        ];
        let optional = [
            ("state", self.state.clone()),
            ("scope", self.scope.requested()),
            ("code_challenge", self.code_challenge.clone()),
            (
                "code_challenge_method",
                self.code_challenge.as_ref().map(|_| "S256".to_owned()),
            ),
            ("nonce", self.nonce.clone()),
        ];
        fields.extend(optional.into_iter().filter_map(|(k, v)| Some((k, v?))));
        // The `claims` parameter's `acr` is carried as the class it asked for.
        if self.wants_mfa {
            fields.push(("acr_values", ACR_MFA.to_owned()));
        }
        fields
    }

    /// Whether a sign-in for this request needs a second factor: the user's roles or the
    /// client require one (`AppState::mfa_required`), or the request asked for [`ACR_MFA`].
    pub fn needs_mfa(&self, state: &AppState, roles: &[String]) -> bool {
        self.wants_mfa || state.mfa_required(roles, &self.client)
    }
}

/// Longest `acr_values` and `claims` taken.
const MAX_ACR_REQUEST: usize = 4096;

/// Whether `acr_values` (space-separated, most preferred first) or the `claims` parameter (JSON,
/// OpenID Connect Core §5.5: `{"id_token": {"acr": {"essential": true, "values": [...]}}}`)
/// ask for [`ACR_MFA`] alone: a request that also accepts [`ACR_ONE_FACTOR`] is given what the
/// sign-in had, and classes this IdP does not know are passed over (the ID token's `acr` says
/// which was met). `Err` with the description of a malformed parameter.
fn wants_mfa(acr_values: Option<&str>, claims: Option<&str>) -> Result<bool, &'static str> {
    if acr_values.is_some_and(|v| v.len() > MAX_ACR_REQUEST)
        || claims.is_some_and(|c| c.len() > MAX_ACR_REQUEST)
    {
        return Err("acr_values or claims is too long");
    }
    let mut asked: Vec<String> = acr_values
        .into_iter()
        .flat_map(str::split_ascii_whitespace)
        .map(str::to_owned)
        .collect();
    if let Some(claims) = claims {
        let claims: serde_json::Value =
            serde_json::from_str(claims).map_err(|_| "claims is not a JSON object")?;
        if !claims.is_object() {
            return Err("claims is not a JSON object");
        }
        let acr = &claims["id_token"]["acr"];
        if let Some(value) = acr["value"].as_str() {
            asked.push(value.to_owned());
        }
        if let Some(values) = acr["values"].as_array() {
            asked.extend(values.iter().filter_map(|v| v.as_str()).map(str::to_owned));
        }
    }
    let mfa = asked.iter().any(|a| a == ACR_MFA);
    let one = asked.iter().any(|a| a == ACR_ONE_FACTOR);
    Ok(mfa && !one)
}

impl Refusal {
    /// A `400` page, or a redirect to the client with `error`, `state` and `iss`
    /// (RFC 9207; `issuer` is ours).
    pub fn into_response(self, issuer: &str) -> Response {
        match self {
            Refusal::Page(message) => pages::message(
                StatusCode::BAD_REQUEST,
                "This sign-in link does not work",
                message,
            ),
            Refusal::Redirect {
                to,
                state,
                error,
                description,
            } => {
                let mut params = vec![("error", error), ("error_description", description)];
                if let Some(state) = state.as_deref() {
                    params.push(("state", state));
                }
                params.push(("iss", issuer));
                redirect(&to, &params)
            }
        }
    }
}

/// The browser's single-sign-on session for `username`, signed in by `method`: its cookie, or
/// `None` when the store could not take it (logged).
pub(crate) async fn start_sso(state: &AppState, username: &str, method: &str) -> Option<String> {
    let browser = NewSession::browser(username, Vec::new(), method);
    let sso = match state.issuer.issue(browser).await {
        Ok(issued) => issued,
        Err(e) => {
            let _ = state.issue_error(e);
            return None;
        }
    };
    tracing::info!(subject = ?tokengate_server::Outside(username), session = %sso.session.id, method, "signed in");
    Some(cookies::set(
        cookies::SSO,
        sso.token.expose(),
        SameSite::Lax,
        state.secure_cookies(),
        Some(sso.session.max_expires_at.saturating_sub(now_unix())),
    ))
}

/// The method of the sessions a code made after a sign-in by `method` (that of the browser's
/// single-sign-on session): the password form's codes keep their historical
/// `authorization_code`, a second factor stays on it (`+otp`, `+hwk`), other ways name
/// themselves.
pub(crate) fn code_method(method: &str) -> String {
    match method.split_once('+') {
        Some(("password", factor)) => format!("authorization_code+{factor}"),
        _ if method == "password" || method.is_empty() => "authorization_code".to_owned(),
        _ => method.to_owned(),
    }
}

/// After someone proved who they are (`method`: `password`, `password+otp`, `upstream:NAME`): their IdP
/// browser session (the single-sign-on cookie), and a code for the authorize request.
pub async fn finish_sign_in(
    state: &AppState,
    request: &AuthorizeRequest,
    username: &str,
    roles: &[String],
    method: &str,
) -> Response {
    let Some(cookie) = start_sso(state, username, method).await else {
        return request
            .refuse("temporarily_unavailable", "the token store is unreachable")
            .into_response(&state.issuer_name);
    };
    // The password form's codes keep their historical method; other ways name themselves.
    let code_method = code_method(method);
    issue_code(
        state,
        request,
        username,
        roles,
        now_unix(),
        Some(cookie),
        &code_method,
    )
    .await
}

/// The browser's live IdP session and its user, if it has one and the user may still sign in.
pub(crate) async fn signed_in(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<(Session, User)>, tokengate_store::StoreError> {
    let Some(token) = cookies::get(headers, cookies::SSO) else {
        return Ok(None);
    };
    let Some(session) = state.issuer.resolve(token, SessionKind::Browser).await? else {
        return Ok(None);
    };
    // A browser session issued to a client (the console's) is no single-sign-on session.
    if session.client_id.is_some() {
        return Ok(None);
    }
    let user = state.store.user(&session.subject).await?;
    let Some(user) = user.filter(|u| !u.disabled) else {
        return Ok(None);
    };
    state.usage.record(&session.id, now_unix());
    Ok(Some((session, user)))
}

/// A code for `subject`, sent back to the client (with the new SSO cookie, after a sign-in).
pub(crate) async fn issue_code(
    state: &AppState,
    request: &AuthorizeRequest,
    subject: &str,
    roles: &[String],
    auth_time: u64,
    sso_cookie: Option<String>,
    method: &str,
) -> Response {
    let granted = match request.scope.grant(roles) {
        Ok(granted) => granted,
        Err(_) => {
            return request
                .refuse("invalid_scope", "none of the roles asked for is held")
                .into_response(&state.issuer_name);
        }
    };
    let code = ReferenceToken::generate();
    let record = AuthCode {
        client_id: request.client.id.clone(),
        redirect_uri: request.redirect_uri.clone(),
        code_challenge: request.code_challenge.clone(),
        nonce: request.nonce.clone(),
        scope: (!granted.scope.is_empty()).then(|| granted.scope.clone()),
        subject: subject.to_owned(),
        roles: granted.roles,
        auth_time,
        method: method.to_owned(),
    };
    if let Err(e) = state
        .store
        .create_code(&CodeId::of_code(code.expose()), &record, CODE_TTL)
        .await
    {
        let _ = state.store_error(e);
        return request
            .refuse("temporarily_unavailable", "the token store is unreachable")
            .into_response(&state.issuer_name);
    }
    let how = if sso_cookie.is_some() {
        method
    } else {
        "single sign-on"
    };
    tracing::info!(subject = %subject, client_id = %request.client.id, how, "authorization code issued");
    let mut params = vec![("code", code.expose())];
    if let Some(s) = request.state.as_deref() {
        params.push(("state", s));
    }
    params.push(("iss", &state.issuer_name));
    let mut response = redirect(&request.redirect_uri, &params);
    if let Some(cookie) = sso_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mfa_class_is_asked_by_acr_values_or_the_claims_parameter() {
        let mfa = Some(ACR_MFA);
        assert_eq!(wants_mfa(None, None), Ok(false));
        assert_eq!(wants_mfa(mfa, None), Ok(true));
        assert_eq!(
            wants_mfa(Some("urn:other urn:tokengate:acr:mfa"), None),
            Ok(true)
        );
        // One factor accepted too: no second factor forced.
        let either = format!("{ACR_MFA} {ACR_ONE_FACTOR}");
        assert_eq!(wants_mfa(Some(&either), None), Ok(false));
        assert_eq!(wants_mfa(Some("urn:other"), None), Ok(false));
        let essential =
            format!(r#"{{"id_token":{{"acr":{{"essential":true,"values":["{ACR_MFA}"]}}}}}}"#);
        assert_eq!(wants_mfa(None, Some(&essential)), Ok(true));
        let value = format!(r#"{{"id_token":{{"acr":{{"value":"{ACR_MFA}"}}}}}}"#);
        assert_eq!(wants_mfa(None, Some(&value)), Ok(true));
        assert_eq!(
            wants_mfa(None, Some(r#"{"id_token":{"acr":null}}"#)),
            Ok(false)
        );
        assert_eq!(wants_mfa(None, Some(r#"{"userinfo":{}}"#)), Ok(false));
        assert!(wants_mfa(None, Some("not json")).is_err());
        assert!(wants_mfa(None, Some("[1]")).is_err());
        assert!(wants_mfa(Some(&"a ".repeat(3000)), None).is_err());
    }

    #[test]
    fn pkce_s256_matches_rfc_7636_appendix_b() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        assert!(pkce_matches(verifier, challenge));
        assert!(!pkce_matches(
            verifier,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cN"
        ));
        assert!(!pkce_matches("short", challenge));
        assert!(!is_pkce_text(&"a".repeat(129)));
        assert!(!is_pkce_text(&format!("{}!", "a".repeat(43))));
    }
}
