//! `tokengate dev`: the IdP, a gateway, an echo backend and a demo web app in one process, on an
//! in-memory store (or Redis), with fresh secrets each run and a printed walkthrough.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use tokengate_idp::config::{
    AdminConfig, ClientConfig, Grant, IdpConfig, ServerConfig, TokensConfig, UserConfig,
    WebauthnConfig,
};
use tokengate_idp::keys::KeySet;
use tokengate_idp::password::hash_password;
use tokengate_idp::{BoundIdp, Idp};
use tokengate_store::{AnyStore, MemoryStore, ReferenceToken, StoreConfig};
use tokio_util::sync::CancellationToken;

use crate::demo;

/// Where `tokengate dev` listens.
pub struct DevListen {
    pub idp: SocketAddr,
    pub idp_admin: SocketAddr,
    pub gateway: SocketAddr,
    pub gateway_admin: SocketAddr,
    pub backend: SocketAddr,
    pub demo: SocketAddr,
}

/// The demo user the walkthrough signs in as.
const USER: (&str, &str) = ("alice", "wonderland");

/// Secrets made fresh each run: dev never has a guessable one.
struct Secrets {
    admin_token: String,
    gateway_secret: String,
    console_password: String,
}

impl Secrets {
    fn new() -> Self {
        Secrets {
            admin_token: ReferenceToken::generate().expose().to_owned(),
            gateway_secret: ReferenceToken::generate().expose().to_owned(),
            console_password: ReferenceToken::generate().expose()[..20].to_owned(),
        }
    }
}

pub async fn run(redis_url: Option<String>, listen: DevListen) -> Result<()> {
    let store = connect(redis_url.as_deref())?;
    let demo_listener = bind(listen.demo).await?;
    let demo_url = format!("http://{}", demo_listener.local_addr()?);
    let secrets = Secrets::new();
    // The gateway signs browsers in as a confidential client; its address names its callback.
    let gateway_listen = resolve_port(listen.gateway)?;
    let gateway_url = format!("http://{gateway_listen}");

    // The IdP's port is known before it binds: its address names the passkeys' origin.
    let idp_listen = resolve_port(listen.idp)?;
    let config = idp_config(&listen, idp_listen, &secrets, &demo_url, &gateway_url)?;
    let idp = Idp::new(config, store.clone(), KeySet::ephemeral()?)?
        .bind()
        .await?;
    let backend_listener = bind(listen.backend).await?;
    let backend = backend_listener.local_addr()?;
    let gateway_config =
        gateway_config(&idp, &secrets, gateway_listen, &listen, backend, &demo_url)?;
    let gateway = tokengate_gateway::Gateway::bind(gateway_config, store).await?;
    let demo_app = demo::DemoApp::new(
        &idp.issuer(),
        &format!("http://{}", gateway.public_addr()),
        &demo_url,
    );
    print_walkthrough(&Walkthrough {
        store: if redis_url.is_some() {
            "on Redis"
        } else {
            "in-memory store"
        },
        gateway: gateway.public_addr(),
        gateway_admin: gateway.admin_addr(),
        idp: idp.issuer(),
        admin: idp.admin_addr(),
        backend,
        console_url: idp.console_url(),
        demo_url: &demo_url,
        secrets: &secrets,
    });

    let shutdown = CancellationToken::new();
    crate::stop_on_signal(shutdown.clone());
    let demo = axum::serve(demo_listener, demo_app.router())
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let (_, gateway_result, _, demo_result) = tokio::join!(
        idp.serve(shutdown.clone()),
        gateway.serve(shutdown.clone()),
        tokengate_gateway::echo::serve(backend_listener, shutdown.clone()),
        demo,
    );
    gateway_result?;
    demo_result.context("the demo app")?;
    Ok(())
}

/// The embedded in-memory store, or Redis at `--redis-url`.
fn connect(redis_url: Option<&str>) -> Result<AnyStore> {
    match redis_url {
        Some(url) => {
            let config = StoreConfig::redis(url);
            config
                .validate()
                .map_err(|e| anyhow::anyhow!("--redis-url ({}): {}", e.key, e.message))?;
            Ok(config.connect()?)
        }
        None => Ok(AnyStore::Memory(MemoryStore::new())),
    }
}

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

/// `addr` with port 0 replaced by a free port (the gateway's URL must be known before it binds).
fn resolve_port(addr: SocketAddr) -> Result<SocketAddr> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    Ok(std::net::TcpListener::bind(addr)?.local_addr()?)
}

/// The IdP: the demo user, a console administrator, and three clients (the walkthrough's `cli`,
/// the demo web app, the gateway's browser sessions).
///
/// On a loopback address the IdP is named `http://localhost:PORT` (its issuer, where browsers
/// go), with passkeys on: WebAuthn takes `localhost` as a relying party id over plain http, but
/// never an IP address.
fn idp_config(
    listen: &DevListen,
    idp_listen: SocketAddr,
    secrets: &Secrets,
    demo_url: &str,
    gateway_url: &str,
) -> Result<IdpConfig> {
    let (user, password) = USER;
    let (tokens, webauthn) = if idp_listen.ip().is_loopback() {
        let site = format!("http://localhost:{}", idp_listen.port());
        let tokens = TokensConfig {
            issuer: site.clone(),
            ..TokensConfig::default()
        };
        let webauthn = WebauthnConfig {
            rp_id: "localhost".to_owned(),
            origins: vec![site],
        };
        (tokens, Some(webauthn))
    } else {
        (TokensConfig::default(), None)
    };
    Ok(IdpConfig {
        server: ServerConfig {
            listen: idp_listen,
            max_connections: 1024,
            header_timeout: std::time::Duration::from_secs(10),
            request_timeout: std::time::Duration::from_secs(30),
            drain_timeout: std::time::Duration::from_secs(5),
        },
        admin: AdminConfig::new(listen.idp_admin, &secrets.admin_token),
        store: StoreConfig::default(),
        tokens,
        login: Default::default(),
        log: Default::default(),
        users: vec![
            UserConfig {
                username: user.to_owned(),
                password_hash: hash_password(password)?,
                roles: vec!["orders:read".to_owned()],
            },
            UserConfig {
                username: "admin".to_owned(),
                password_hash: hash_password(&secrets.console_password)?,
                roles: vec!["tokengate:admin".to_owned()],
            },
        ],
        // The walkthrough's curl commands use the password grant, which only a client that
        // lists it may use (RFC 9700 advises against it anywhere else).
        clients: vec![
            ClientConfig::public("cli", &[Grant::Password], &[]),
            {
                let redirect = demo::DemoApp::redirect_uri(demo_url);
                let mut app = ClientConfig::public(
                    demo::CLIENT_ID,
                    &[Grant::AuthorizationCode],
                    &[&redirect],
                );
                app.post_logout_redirect_uris = vec![format!("{demo_url}/")];
                app
            },
            {
                let mut gateway = ClientConfig::confidential(
                    "gateway",
                    hash_password(&secrets.gateway_secret)?,
                    &[Grant::AuthorizationCode],
                );
                gateway.redirect_uris = vec![format!("{gateway_url}/.tokengate/callback")];
                gateway.post_logout_redirect_uris = vec![format!("{gateway_url}/")];
                gateway
            },
        ],
        upstreams: Vec::new(),
        mfa: Default::default(),
        webauthn,
        base_dir: PathBuf::from("."),
    })
}

/// The gateway: `/api/` (role `orders:read`) and `/public/` to the echo backend, `/app/` to the
/// demo app with browser sessions.
fn gateway_config(
    idp: &BoundIdp,
    secrets: &Secrets,
    listen_at: SocketAddr,
    listen: &DevListen,
    backend: SocketAddr,
    demo_url: &str,
) -> Result<tokengate_gateway::config::GatewayConfig> {
    let toml = format!(
        r#"
[server]
listen = "{listen_at}"
[admin]
listen = "{gw_admin}"
[idp]
jwks_url = "http://{idp}/.well-known/jwks.json"
issuer = "{issuer}"
[sync]
interval = "1s"
[browser]
issuer = "{issuer}"
client_id = "gateway"
client_secret = "{gateway_secret}"
public_url = "http://{listen_at}"
[[routes]]
path_prefix = "/api/"
upstream = "http://{backend}"
roles = ["orders:read"]
[[routes]]
path_prefix = "/public/"
upstream = "http://{backend}"
auth = false
[[routes]]
path_prefix = "/app/"
upstream = "{demo_url}"
browser = true
[[routes]]
path_prefix = "/app/api/"
upstream = "http://{backend}"
roles = ["orders:read"]
browser = true
"#,
        issuer = idp.issuer(),
        idp = idp.public_addr(),
        gw_admin = listen.gateway_admin,
        gateway_secret = secrets.gateway_secret,
    );
    Ok(toml::from_str(&toml)?)
}

/// What the walkthrough names.
struct Walkthrough<'a> {
    store: &'static str,
    gateway: SocketAddr,
    gateway_admin: SocketAddr,
    /// The IdP's issuer URL (where browsers go).
    idp: String,
    admin: SocketAddr,
    backend: SocketAddr,
    console_url: String,
    demo_url: &'a str,
    secrets: &'a Secrets,
}

fn print_walkthrough(w: &Walkthrough<'_>) {
    let (user, password) = USER;
    let Walkthrough {
        store,
        gateway: gw,
        gateway_admin: gw_admin,
        idp,
        admin,
        backend,
        console_url,
        demo_url,
        ..
    } = w;
    let (admin_token, console_password) = (&w.secrets.admin_token, &w.secrets.console_password);
    println!(
        r#"tokengate dev ({store}):
  gateway  http://{gw}   (/api/ needs role orders:read, /public/ is open; admin: http://{gw_admin})
  IdP      {idp}   (admin API on http://{admin})
  backend  http://{backend}   (echoes what it receives)

  console  {console_url}   (admin console: sign in as admin / {console_password})

Demo user: {user} / {password}   Admin token: {admin_token}

In a browser: {demo_url}/ is a small web app that signs you in through the IdP (authorization
code flow with PKCE, then single sign-on) and calls /api/ through the gateway with its token.
Browser app: http://{gw}/app/ is served through the gateway, which signs the browser in itself
and keeps the session in an HttpOnly cookie (no token in the page); a forced logout ends it.
Second factor: once signed in through the demo app, {idp}/account/otp enrols {user} in
one-time passwords (any authenticator app), and {idp}/account/passkeys adds a passkey
(on localhost); from then on signing in asks for one.

  # log in: the answer's access_token is an opaque reference token
  TOKEN=$(curl -s -d grant_type=password -d client_id=cli -d username={user} -d password={password} {idp}/oauth2/token | sed 's/.*"access_token":"\([^"]*\)".*/\1/')
  # call a backend through the gateway: it receives the signed value token and role headers
  curl -s -H "Authorization: Bearer $TOKEN" http://{gw}/api/orders
  # force a logout of every session of the user
  curl -s -X DELETE -H "Authorization: Bearer {admin_token}" http://{admin}/admin/users/{user}/sessions
  # the same call now answers 401
  curl -i -H "Authorization: Bearer $TOKEN" http://{gw}/api/orders
"#
    );
}
