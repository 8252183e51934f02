//! Issuing sessions: a reference token for the client, a signed value token for the store, and
//! that value token renewed while the session lives.

use std::sync::Arc;

use tokengate_store::{
    AnyStore, Claims, EXPIRY_MARGIN, ReferenceToken, Renewal, Session, SessionAdmin, SessionKind,
    SessionRead, StoreError, TokenRenewal, ValueToken, Verifier, VerifyError, now_unix,
};

use crate::config::TokensConfig;
use crate::keys::{KeyError, KeySet};

/// Why a session could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// Writing the session or its value token failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Signing the value token failed.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// Why a session's value token cannot be renewed.
#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    /// Forged, or signed by a key this IdP no longer has.
    #[error("the value token failed verification")]
    Unverifiable(#[source] VerifyError),
    /// Signed by us, but for a different session id than the one it is stored under.
    #[error("the value token belongs to another session")]
    Mismatch,
    /// Expired longer ago than its session can have lived on without a usable token: an old
    /// token written back into the store, not one the IdP fell behind on.
    #[error("the value token expired too long ago")]
    Outlived,
    /// Signing the renewed token failed.
    #[error(transparent)]
    Key(#[from] KeyError),
}

impl RenewError {
    /// The `reason` label of the failure metric.
    pub fn reason(&self) -> &'static str {
        match self {
            RenewError::Unverifiable(_) | RenewError::Mismatch => "unverifiable",
            RenewError::Outlived => "outlived",
            RenewError::Key(_) => "sign",
        }
    }
}

/// A session just created, with the token to hand to its owner.
#[derive(Debug)]
pub struct Issued {
    /// The reference token for the client; the store keeps only its hash (the session id).
    pub token: ReferenceToken,
    /// The record as written to the store, with its signed value token.
    pub session: Session,
}

/// What a new session is: whose, with which roles, how it was obtained, for which client.
#[derive(Clone, Debug)]
pub struct NewSession {
    /// The user name or client id: `sub` of the value token.
    pub subject: String,
    /// Roles at issue time; a re-role changes them later in the store.
    pub roles: Vec<String>,
    /// `password`, `client_credentials`, `authorization_code`, `admin`, `upstream:NAME`.
    pub method: String,
    /// The client the session was issued to; `None` for admin-issued and browser sessions.
    pub client_id: Option<String>,
    /// Bearer (`Access`) or the IdP's own browser session (`Browser`).
    pub kind: SessionKind,
    /// Seconds of inactivity that end the session, when not the configured `tokens.idle_timeout`.
    pub idle_timeout: Option<u64>,
}

impl NewSession {
    /// An API session: its reference token is a bearer token.
    pub fn access(subject: &str, roles: Vec<String>, method: &str) -> Self {
        NewSession {
            subject: subject.to_owned(),
            roles,
            method: method.to_owned(),
            client_id: None,
            kind: SessionKind::Access,
            idle_timeout: None,
        }
    }

    /// The IdP's single-sign-on browser session, whose cookie is never a bearer token.
    pub fn browser(subject: &str, roles: Vec<String>, method: &str) -> Self {
        NewSession {
            kind: SessionKind::Browser,
            ..Self::access(subject, roles, method)
        }
    }

    /// Ended after `seconds` without use, instead of the configured idle timeout.
    pub fn idle_after(self, seconds: u64) -> Self {
        NewSession {
            idle_timeout: Some(seconds),
            ..self
        }
    }

    /// Issued to `client_id`.
    pub fn for_client(self, client_id: &str) -> Self {
        NewSession {
            client_id: Some(client_id.to_owned()),
            ..self
        }
    }
}

/// Creates sessions and (re)signs their value tokens.
#[derive(Debug)]
pub struct Issuer {
    store: AnyStore,
    keys: Arc<KeySet>,
    verifier: Verifier,
    issuer: String,
    idle_timeout: u64,
    max_lifetime: u64,
    value_token_ttl: u64,
}

impl Issuer {
    /// Sessions signed as `issuer` (`tokens.issuer`, or its default) with the lifetimes of
    /// `tokens`.
    pub fn new(
        store: AnyStore,
        keys: Arc<KeySet>,
        issuer: &str,
        tokens: &TokensConfig,
    ) -> Result<Self, KeyError> {
        let verifier = Verifier::new(&keys.public_jwks()?, issuer);
        Ok(Issuer {
            store,
            keys,
            verifier,
            issuer: issuer.to_owned(),
            idle_timeout: tokens.idle_timeout.as_secs(),
            max_lifetime: tokens.max_lifetime.as_secs(),
            value_token_ttl: tokens.value_token_ttl.as_secs(),
        })
    }

    /// A value token saying who `subject` is in session `sid` with `roles`, proved by `amr`,
    /// signed `now`: it
    /// expires `value_token_ttl` later, or when the session does, whichever is first.
    fn sign(
        &self,
        sid: &str,
        subject: &str,
        roles: &[String],
        amr: Vec<String>,
        session_end: u64,
        now: u64,
    ) -> Result<ValueToken, KeyError> {
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: subject.to_owned(),
            sid: sid.to_owned(),
            roles: roles.to_vec(),
            iat: now,
            exp: session_end.min(now + self.value_token_ttl),
            amr,
        };
        Ok(ValueToken(self.keys.current().sign_jwt(&claims)?))
    }

    fn sign_session(&self, session: &Session) -> Result<ValueToken, KeyError> {
        let (id, end) = (session.id.as_str(), session.max_expires_at);
        let amr = amr(&session.method);
        self.sign(id, &session.subject, &session.roles, amr, end, now_unix())
    }

    /// The claims of the session's value token if it is ours and this session's, expired or not.
    fn verified(&self, session: &Session) -> Result<Claims, RenewError> {
        let claims = self
            .verifier
            .verify_allowing_expired(session.value_token.expose())
            .map_err(RenewError::Unverifiable)?;
        if claims.sid != session.id.as_str() || claims.sub != session.subject {
            return Err(RenewError::Mismatch);
        }
        Ok(claims)
    }

    /// A new value token for `session`, made from the verified claims of the one it holds: the
    /// subject and roles come from the IdP's own signature, never from the store's other
    /// fields, so that a write to the store cannot get anything signed. A token that expired
    /// more than the idle timeout ago is not renewed (see `Claims::renewable`).
    pub fn renewed(&self, session: &Session, now: u64) -> Result<ValueToken, RenewError> {
        let claims = self.verified(session)?;
        if !claims.renewable(session.idle_timeout, now) {
            return Err(RenewError::Outlived);
        }
        let end = session.max_expires_at;
        let amr = claims.amr.clone();
        Ok(self.sign(&claims.sid, &claims.sub, &claims.roles, amr, end, now)?)
    }

    /// How long a value token lasts.
    pub fn value_token_ttl(&self) -> u64 {
        self.value_token_ttl
    }

    /// The longest a session lasts, in seconds.
    pub fn max_lifetime(&self) -> u64 {
        self.max_lifetime
    }

    /// A new session, stored before the token is returned.
    pub async fn issue(&self, new: NewSession) -> Result<Issued, IssueError> {
        self.issue_as(ReferenceToken::generate(), new).await
    }

    /// A new session behind a token made beforehand (a code redemption names the session it
    /// makes before making it, so that a replay can end it).
    pub async fn issue_as(
        &self,
        token: ReferenceToken,
        new: NewSession,
    ) -> Result<Issued, IssueError> {
        let now = now_unix();
        let mut session = Session {
            id: token.session_id(),
            subject: new.subject,
            roles: new.roles,
            value_token: ValueToken(String::new()),
            created_at: now,
            last_used_at: now,
            idle_timeout: new.idle_timeout.unwrap_or(self.idle_timeout),
            max_expires_at: now + self.max_lifetime,
            client_id: new.client_id,
            method: new.method,
            kind: new.kind,
        };
        session.value_token = self.sign_session(&session)?;
        self.store.create(&session).await?;
        Ok(Issued { token, session })
    }

    /// The roles a subject logs in with: an administrator's choice over the configured ones.
    pub async fn roles_of(
        &self,
        subject: &str,
        configured: &[String],
    ) -> Result<Vec<String>, StoreError> {
        Ok(self
            .store
            .subject_roles(subject)
            .await?
            .unwrap_or_else(|| configured.to_vec()))
    }

    /// Gives a subject new roles: future logins and every live session (re-signed).
    /// Returns how many live sessions changed.
    pub async fn set_roles(&self, subject: &str, roles: &[String]) -> Result<usize, IssueError> {
        self.store.set_subject_roles(subject, roles).await?;
        let mut updates = Vec::new();
        for mut session in self.store.sessions(subject).await? {
            session.roles = roles.to_vec();
            let token = self.sign_session(&session)?;
            updates.push((session.id, session.roles, token));
        }
        Ok(self.store.update_sessions(&updates).await?)
    }

    /// The live session of `kind` a reference token opens, with its value token verified: a
    /// record written into the store by anyone but the IdP does not pass, nor does a session of
    /// another kind (a browser session's cookie is no bearer token). A value token about to
    /// expire (the renewal task fell behind, e.g. while the IdP was down) is renewed first.
    pub async fn resolve(
        &self,
        token: &str,
        kind: SessionKind,
    ) -> Result<Option<Session>, StoreError> {
        let Ok(token) = ReferenceToken::parse(token) else {
            return Ok(None);
        };
        let Some(session) = self.store.lookup(&token.session_id()).await? else {
            return Ok(None);
        };
        if session.kind != kind {
            return Ok(None);
        }
        let claims = match self.verified(&session) {
            Ok(claims) => claims,
            Err(e) => {
                tracing::warn!(session = %session.id, error = %e, "value token refused");
                return Ok(None);
            }
        };
        let now = now_unix();
        if claims.exp > now + EXPIRY_MARGIN {
            return Ok(Some(session));
        }
        self.renew_now(session, now).await
    }

    /// Renews one session's value token on the spot; `None` if it cannot be renewed.
    async fn renew_now(
        &self,
        mut session: Session,
        now: u64,
    ) -> Result<Option<Session>, StoreError> {
        let token = match self.renewed(&session, now) {
            Ok(token) => token,
            Err(e) => {
                tracing::warn!(session = %session.id, error = %e, "expired value token not renewed");
                return Ok(None);
            }
        };
        let renewal = Renewal {
            session: session.id,
            replaces: session.value_token.clone(),
            token: token.clone(),
        };
        if self.store.replace_value_tokens(&[renewal]).await? == 1 {
            session.value_token = token;
            return Ok(Some(session));
        }
        // Renewed or re-roled meanwhile, or ended: what the store holds now decides.
        let Some(current) = self.store.lookup(&session.id).await? else {
            return Ok(None);
        };
        let fresh = self
            .verified(&current)
            .is_ok_and(|claims| claims.exp > now + EXPIRY_MARGIN);
        Ok(fresh.then_some(current))
    }
}

/// The suffix of a session's method when a one-time password (or a recovery code) came with
/// the password: `password+otp`, `authorization_code+otp`.
pub const WITH_OTP: &str = "+otp";

/// The method of a sign-in with a passkey and no password (`passkey+hwk`, `passkey+swk`):
/// passkeys sign in without a password only with user verification (a PIN or biometric on
/// the device), so such a session counts as multi-factor.
pub const PASSKEY: &str = "passkey";

/// The suffix of a session's method when a passkey came with it: `+hwk` for one bound to its
/// device, `+swk` for one that may be synced between devices (WebAuthn's backup-eligible flag).
pub fn with_passkey(backup_eligible: bool) -> &'static str {
    if backup_eligible { "+swk" } else { "+hwk" }
}

/// The start of the method of a sign-in through an upstream provider (`upstream:NAME`).
pub const UPSTREAM: &str = "upstream:";
/// Most `amr` values of a provider kept.
const MAX_PROVIDER_AMR: usize = 8;
/// Longest `amr` value of a provider kept (RFC 8176's registered values are 2 to 5 letters).
const MAX_PROVIDER_AMR_LEN: usize = 32;

/// The method of a sign-in through upstream provider `name` whose ID token said `amr`
/// (RFC 8176): `upstream:NAME`, then `+VALUE` for each value the provider named, so that the
/// session keeps its provider's factors. Values that are not short tokens of letters, digits,
/// `-` and `_` are dropped (a provider's claim never becomes a method of another shape), and at
/// most [`MAX_PROVIDER_AMR`] are kept.
pub fn upstream_method(name: &str, amr: &[&str]) -> String {
    let mut method = format!("{UPSTREAM}{name}");
    let mut kept: Vec<&str> = Vec::new();
    for value in amr {
        let fits = (1..=MAX_PROVIDER_AMR_LEN).contains(&value.len())
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if fits && !kept.contains(value) && kept.len() < MAX_PROVIDER_AMR {
            kept.push(value);
            method.push('+');
            method.push_str(value);
        }
    }
    method
}

/// The upstream provider a session made by `method` signed in through, if any.
pub fn upstream_of(method: &str) -> Option<&str> {
    let rest = method.strip_prefix(UPSTREAM)?;
    Some(rest.split_once('+').map_or(rest, |(name, _)| name))
}

/// How a session made by `method` was authenticated, as RFC 8176 names it (`amr`): `pwd` for a
/// password, `otp`, `hwk` or `swk` and `mfa` added with a second factor (a passkey without a
/// password, `passkey+hwk`, is `hwk` and `mfa`); the provider's own for a sign-in through an
/// upstream provider (none when it named none); nothing for a client's own session.
pub fn amr(method: &str) -> Vec<String> {
    // A provider's own, as its ID token said them (`upstream_method`).
    if let Some(rest) = method.strip_prefix(UPSTREAM) {
        return rest.split('+').skip(1).map(str::to_owned).collect();
    }
    let (base, factor) = match method.rsplit_once('+') {
        Some((base, factor @ ("otp" | "hwk" | "swk"))) => (base, Some(factor)),
        _ => (method, None),
    };
    let mut amr = match base {
        "password" | "authorization_code" => vec!["pwd"],
        _ => Vec::new(),
    };
    if let Some(factor) = factor {
        amr.extend([factor, "mfa"]);
    }
    amr.into_iter().map(str::to_owned).collect()
}

/// The authentication context class (OpenID Connect `acr`) of a sign-in with one factor: a
/// password, or an upstream provider that named no second factor.
pub const ACR_ONE_FACTOR: &str = "urn:tokengate:acr:1fa";
/// The class of a sign-in with a second factor (a code, a recovery code or a passkey after a
/// password; a user-verified passkey alone; an upstream provider's `mfa`). A client that asks
/// for it (`acr_values`, or the `claims` parameter) gets a code only after a second factor.
pub const ACR_MFA: &str = "urn:tokengate:acr:mfa";

/// The `acr` of a session whose `amr` is `amr`: none when nothing is known of how the person
/// signed in (a client's own session).
pub fn acr(amr: &[String]) -> Option<&'static str> {
    if amr.iter().any(|a| a == "mfa") {
        Some(ACR_MFA)
    } else if amr.is_empty() {
        None
    } else {
        Some(ACR_ONE_FACTOR)
    }
}

/// Whether a session made by `method` had a second factor (its `amr` holds `mfa`).
pub fn has_second_factor(method: &str) -> bool {
    amr(method).iter().any(|a| a == "mfa")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use std::time::Duration;

    use tokengate_store::{MemoryStore, SessionId};

    use super::*;

    #[test]
    fn sessions_say_how_they_were_authenticated() {
        assert_eq!(amr("password"), ["pwd"]);
        assert_eq!(amr("authorization_code"), ["pwd"]);
        assert_eq!(amr("password+otp"), ["pwd", "otp", "mfa"]);
        assert_eq!(amr("authorization_code+otp"), ["pwd", "otp", "mfa"]);
        assert_eq!(amr("password+hwk"), ["pwd", "hwk", "mfa"]);
        assert_eq!(amr("authorization_code+swk"), ["pwd", "swk", "mfa"]);
        assert_eq!(amr("passkey+hwk"), ["hwk", "mfa"]);
        assert_eq!(amr("passkey+swk"), ["swk", "mfa"]);
        assert!(has_second_factor("passkey+hwk") && has_second_factor("password+otp"));
        assert_eq!(acr(&amr("password")), Some(ACR_ONE_FACTOR));
        assert_eq!(acr(&amr("authorization_code+swk")), Some(ACR_MFA));
        assert_eq!(acr(&amr("passkey+hwk")), Some(ACR_MFA));
        assert_eq!(acr(&amr("client_credentials")), None);
        // A provider's factors, passed through.
        let upstream = upstream_method("corp", &["pwd", "otp", "mfa", "mfa"]);
        assert_eq!(upstream, "upstream:corp+pwd+otp+mfa");
        assert_eq!(amr(&upstream), ["pwd", "otp", "mfa"]);
        assert_eq!(acr(&amr(&upstream)), Some(ACR_MFA));
        assert!(has_second_factor(&upstream));
        assert_eq!(upstream_of(&upstream), Some("corp"));
        assert_eq!(upstream_of("upstream:corp"), Some("corp"));
        assert_eq!(upstream_of("password+otp"), None);
        let odd = upstream_method("corp", &["pwd", "a+b", "", "x y", &"l".repeat(33), "hwk"]);
        assert_eq!(odd, "upstream:corp+pwd+hwk");
        let many: Vec<String> = (0..20).map(|i| format!("f{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(amr(&upstream_method("corp", &many)).len(), MAX_PROVIDER_AMR);
        assert!(!has_second_factor("password") && !has_second_factor("password+other"));
        for none in ["client_credentials", "admin", "upstream:corp", ""] {
            assert!(amr(none).is_empty(), "{none}");
        }
    }

    /// An issuer on an in-memory store with value tokens of `ttl` seconds.
    pub(crate) fn issuer(ttl: u64) -> (Issuer, AnyStore) {
        let store = AnyStore::Memory(MemoryStore::new());
        let tokens = TokensConfig {
            value_token_ttl: Duration::from_secs(ttl),
            ..TokensConfig::default()
        };
        let keys = Arc::new(KeySet::ephemeral().unwrap());
        let issuer = Issuer::new(store.clone(), keys, "tokengate", &tokens).unwrap();
        (issuer, store)
    }

    /// Puts a value token signed `ago` seconds back into the session of `issued`.
    pub(crate) async fn age(issuer: &Issuer, store: &AnyStore, issued: &Issued, ago: u64) {
        let s = &issued.session;
        let old = issuer
            .sign(
                s.id.as_str(),
                &s.subject,
                &s.roles,
                amr(&s.method),
                s.max_expires_at,
                now_unix() - ago,
            )
            .unwrap();
        let held = store.lookup(&s.id).await.unwrap().unwrap().value_token;
        let renewal = Renewal {
            session: s.id,
            replaces: held,
            token: old,
        };
        assert_eq!(store.replace_value_tokens(&[renewal]).await.unwrap(), 1);
    }

    /// The `exp` of the value token the store holds for session `id`.
    pub(crate) async fn token_exp(issuer: &Issuer, store: &AnyStore, id: &SessionId) -> u64 {
        let held = store.lookup(id).await.unwrap().unwrap().value_token;
        claims_of(issuer, &held).exp
    }

    /// A new access session of alice's, without roles.
    async fn alice(issuer: &Issuer) -> Issued {
        let new = NewSession::access("alice", Vec::new(), "password");
        issuer.issue(new).await.unwrap()
    }

    fn claims_of(issuer: &Issuer, token: &ValueToken) -> Claims {
        issuer
            .verifier
            .verify_allowing_expired(token.expose())
            .unwrap()
    }

    #[tokio::test]
    async fn a_value_token_lasts_its_ttl_and_is_renewed_from_its_own_claims() {
        let (issuer, store) = issuer(60);
        let roles = vec!["orders:read".to_owned()];
        let issued = issuer
            .issue(NewSession::access("alice", roles.clone(), "password"))
            .await
            .unwrap();
        let claims = claims_of(&issuer, &issued.session.value_token);
        assert_eq!(claims.exp, claims.iat + 60);
        // Someone with write access to the store gives the session more roles: a renewal signs
        // what the IdP signed before, not what the store says.
        let (id, token) = (issued.session.id, issued.session.value_token.clone());
        let admin = vec!["admin".to_owned()];
        store.update_sessions(&[(id, admin, token)]).await.unwrap();
        let session = store.lookup(&id).await.unwrap().unwrap();
        let renewed = issuer.renewed(&session, now_unix() + 10).unwrap();
        let claims = claims_of(&issuer, &renewed);
        assert_eq!((claims.roles, claims.iat), (roles, now_unix() + 10));
        assert_eq!(claims.exp, now_unix() + 70);
    }

    #[tokio::test]
    async fn a_token_is_renewed_to_the_session_end_at_the_latest() {
        let (issuer, _store) = issuer(60);
        let mut session = alice(&issuer).await.session;
        // Half a minute of its absolute lifetime left, less than a value token lasts.
        session.max_expires_at = now_unix() + 30;
        let renewed = issuer.renewed(&session, now_unix()).unwrap();
        assert_eq!(claims_of(&issuer, &renewed).exp, session.max_expires_at);
    }

    #[tokio::test]
    async fn tokens_not_our_own_or_expired_too_long_ago_are_not_renewed() {
        let (issuer, store) = issuer(60);
        let issued = alice(&issuer).await;
        // Expired longer ago than the idle timeout (30 min): written back, not fallen behind.
        age(&issuer, &store, &issued, 60 + 1800 + 1).await;
        let session = store.lookup(&issued.session.id).await.unwrap().unwrap();
        let e = issuer.renewed(&session, now_unix()).unwrap_err();
        assert!(matches!(e, RenewError::Outlived), "{e:?}");
        assert_eq!(
            issuer
                .resolve(issued.token.expose(), SessionKind::Access)
                .await
                .unwrap(),
            None
        );
        // Signed by another IdP's key.
        let (other, _) = self::issuer(60);
        let forged = alice(&other).await.session;
        let e = issuer.renewed(&forged, now_unix()).unwrap_err();
        assert!(matches!(e, RenewError::Unverifiable(_)), "{e:?}");
        // Another session's token.
        let mut swapped = alice(&issuer).await.session;
        swapped.value_token = session.value_token;
        let e = issuer.renewed(&swapped, now_unix()).unwrap_err();
        assert!(matches!(e, RenewError::Mismatch), "{e:?}");
    }

    #[tokio::test]
    async fn resolve_renews_an_expired_value_token_on_the_spot() {
        let (issuer, store) = issuer(60);
        let issued = alice(&issuer).await;
        age(&issuer, &store, &issued, 100).await; // expired 40 s ago: the IdP was down
        let session = issuer
            .resolve(issued.token.expose(), SessionKind::Access)
            .await
            .unwrap()
            .expect("the session lives on");
        let claims = issuer
            .verifier
            .verify(session.value_token.expose())
            .unwrap();
        assert!(claims.exp > now_unix() + 50);
        let stored = store.lookup(&session.id).await.unwrap().unwrap();
        assert_eq!(stored.value_token, session.value_token);
    }

    #[tokio::test]
    async fn a_session_is_resolved_only_as_its_own_kind() {
        let (issuer, _store) = issuer(600);
        let roles = vec!["r".to_owned()];
        let access = issuer
            .issue(NewSession::access("alice", roles.clone(), "password").for_client("cli"))
            .await
            .expect("issue");
        assert_eq!(access.session.client_id.as_deref(), Some("cli"));
        assert_eq!(access.session.method, "password");
        let browser = issuer
            .issue(NewSession::browser("alice", roles, "password"))
            .await
            .expect("issue");
        let resolve = |token: &Issued, kind| {
            let text = token.token.expose().to_owned();
            let issuer = &issuer;
            async move { issuer.resolve(&text, kind).await.expect("resolve") }
        };
        assert!(resolve(&access, SessionKind::Access).await.is_some());
        assert!(resolve(&access, SessionKind::Browser).await.is_none());
        assert!(
            resolve(&browser, SessionKind::Access).await.is_none(),
            "a browser session's cookie is no bearer token"
        );
        let found = resolve(&browser, SessionKind::Browser).await.expect("live");
        assert_eq!(found.kind, SessionKind::Browser);
    }
}
