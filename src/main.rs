//! The `tokengate` binary: parses the command line and starts what it names.

mod demo;

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use tokengate_idp::Idp;
use tokengate_idp::config::{
    AdminConfig, ClientConfig, Grant, IdpConfig, ServerConfig, TokensConfig, UserConfig,
};
use tokengate_idp::keys::{KeySet, SigningKey};
use tokengate_idp::password::hash_password;
use tokengate_store::{AnyStore, MemoryStore, ReferenceToken, StoreConfig};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "tokengate",
    version,
    about = "Edge API gateway and identity provider for reference/value tokens",
    after_help = "Try the whole thing in one process: `tokengate dev` (its listen flags: `tokengate dev --help`)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the identity provider.
    Idp {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Runs a gateway.
    Gateway {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Runs a demo in one process: the IdP, a gateway and an echo backend, on an in-memory
    /// store (or Redis), with a demo user.
    Dev {
        /// Use this Redis instead of the embedded in-memory store.
        #[arg(long, value_name = "URL")]
        redis_url: Option<String>,
        /// Public listener of the IdP.
        #[arg(long, default_value = "127.0.0.1:7000")]
        idp_listen: std::net::SocketAddr,
        /// Admin listener of the IdP.
        #[arg(long, default_value = "127.0.0.1:7001")]
        admin_listen: std::net::SocketAddr,
        /// Public listener of the gateway.
        #[arg(long, default_value = "127.0.0.1:8080")]
        gateway_listen: std::net::SocketAddr,
        /// Admin listener of the gateway (/healthz, /readyz, /metrics).
        #[arg(long, default_value = "127.0.0.1:9090")]
        gateway_admin_listen: std::net::SocketAddr,
        /// The echo backend.
        #[arg(long, default_value = "127.0.0.1:9001")]
        backend_listen: std::net::SocketAddr,
        /// The demo web application that signs in through the IdP (code flow with PKCE).
        #[arg(long, default_value = "127.0.0.1:3000")]
        demo_listen: std::net::SocketAddr,
    },
    /// Runs the demo echo backend alone: answers every request with its method, path and
    /// headers as JSON (what a backend behind the gateway receives).
    Echo {
        #[arg(long, default_value = "127.0.0.1:9001")]
        listen: std::net::SocketAddr,
    },
    /// Reads a password from standard input and prints its argon2id hash for a config file.
    HashPassword,
    /// Writes a new signing key (PKCS#8 PEM) to FILE.
    GenKey {
        #[arg(long, value_enum, default_value = "ed25519")]
        alg: KeyAlg,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum KeyAlg {
    Ed25519,
    P256,
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        // Colours for a terminal only: a log file or collector gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

/// Cancels `token` on SIGINT or SIGTERM.
/// Runs `reload` on every `SIGHUP` (Unix), as nginx and HAProxy do; it logs its own outcome.
fn reload_on_signal(reload: impl Fn() + Send + 'static) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP: reload with POST /admin/reload");
                return;
            }
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the configuration");
            reload();
        }
    });
    #[cfg(not(unix))]
    drop(reload);
}

/// Runs `reopen` on every `SIGUSR1` (Unix): log files are opened again after rotation.
fn reopen_on_signal(reopen: impl Fn() + Send + 'static) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let signal = tokio::signal::unix::SignalKind::user_defined1();
        let Ok(mut usr1) = tokio::signal::unix::signal(signal) else {
            tracing::error!("cannot listen for SIGUSR1: the access log will not be reopened");
            return;
        };
        while usr1.recv().await.is_some() {
            reopen();
        }
    });
    #[cfg(not(unix))]
    drop(reopen);
}

fn stop_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot listen for SIGTERM");
                        let _ = ctrl_c.await;
                        token.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down");
        token.cancel();
    });
}

/// mimalloc: fewer cycles per allocation than glibc's on the request path (see benches/).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<()> {
    let cli = Cli::parse();
    // On one core (a CPU limit, or `taskset`), a single-threaded scheduler does the same work
    // without the cross-thread synchronisation of the work-stealing one.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut builder = if cores == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = builder
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Idp { config } => run_idp(config).await,
        Command::Gateway { config } => run_gateway(config).await,
        Command::Echo { listen } => run_echo(listen).await,
        Command::Dev {
            redis_url,
            idp_listen,
            admin_listen,
            gateway_listen,
            gateway_admin_listen,
            backend_listen,
            demo_listen,
        } => {
            let listen = DevListen {
                idp: idp_listen,
                idp_admin: admin_listen,
                gateway: gateway_listen,
                gateway_admin: gateway_admin_listen,
                backend: backend_listen,
                demo: demo_listen,
            };
            run_dev(redis_url, listen).await
        }
        Command::HashPassword => {
            let mut password = String::new();
            std::io::stdin()
                .read_to_string(&mut password)
                .context("reading the password from standard input")?;
            let password = password.trim_end_matches(['\r', '\n']);
            anyhow::ensure!(!password.is_empty(), "no password on standard input");
            println!("{}", hash_password(password)?);
            Ok(())
        }
        Command::GenKey { alg, out } => {
            let pem = match alg {
                KeyAlg::Ed25519 => SigningKey::generate_ed25519_pem()?,
                KeyAlg::P256 => SigningKey::generate_p256_pem()?,
            };
            write_private(&out, &pem).with_context(|| format!("writing {}", out.display()))?;
            println!("wrote {}", out.display());
            Ok(())
        }
    }
}

fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(text.as_bytes())
}

async fn run_idp(path: PathBuf) -> Result<()> {
    init_tracing();
    let config = IdpConfig::load(&path)?;
    let key_paths = config.signing_key_paths();
    anyhow::ensure!(
        !key_paths.is_empty(),
        "{}: `tokens.signing_keys` must list at least one key file (tokengate gen-key makes one)",
        path.display()
    );
    let keys = KeySet::load(&key_paths)
        .with_context(|| format!("{}: `tokens.signing_keys`", path.display()))?;
    let store = config
        .store
        .connect()
        .with_context(|| format!("{}: `store`", path.display()))?;
    if config.admin.token == "change-me" {
        tracing::warn!(
            "admin.token is the example value: set TOKENGATE_ADMIN_TOKEN before exposing the admin listener"
        );
    }
    let bound = Idp::new(config, store, keys)?.bind().await?;
    tracing::info!(public = %bound.public_addr(), admin = %bound.admin_addr(), "IdP listening");
    let shutdown = CancellationToken::new();
    stop_on_signal(shutdown.clone());
    bound.serve(shutdown).await;
    Ok(())
}

async fn run_echo(listen: std::net::SocketAddr) -> Result<()> {
    init_tracing();
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(listen = %listener.local_addr()?, "echo backend listening");
    let shutdown = CancellationToken::new();
    stop_on_signal(shutdown.clone());
    tokengate_gateway::echo::serve(listener, shutdown).await;
    Ok(())
}

async fn run_gateway(path: PathBuf) -> Result<()> {
    init_tracing();
    let config = tokengate_gateway::config::GatewayConfig::load(&path)?;
    let store = config
        .store
        .connect()
        .with_context(|| format!("{}: `store`", path.display()))?;
    let gateway = tokengate_gateway::Gateway::bind(config, store)
        .await?
        .reload_from(path);
    tracing::info!(public = %gateway.public_addr(), admin = %gateway.admin_addr(), "gateway listening");
    let shutdown = CancellationToken::new();
    stop_on_signal(shutdown.clone());
    let reloader = gateway.reloader();
    reload_on_signal(move || {
        let _ = reloader.reload();
    });
    if let Some(access) = gateway.access_log() {
        reopen_on_signal(move || match access.reopen() {
            Ok(()) => tracing::info!("SIGUSR1: access log reopened"),
            Err(e) => {
                tracing::error!(error = %e, "SIGUSR1: cannot reopen the access log; still writing to the old file")
            }
        });
    }
    gateway.serve(shutdown).await?;
    Ok(())
}

/// `addr` with port 0 replaced by a free port (the gateway's URL must be known before it binds).
fn resolve_port(addr: std::net::SocketAddr) -> Result<std::net::SocketAddr> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    Ok(std::net::TcpListener::bind(addr)?.local_addr()?)
}

/// Where `tokengate dev` listens.
struct DevListen {
    idp: std::net::SocketAddr,
    idp_admin: std::net::SocketAddr,
    gateway: std::net::SocketAddr,
    gateway_admin: std::net::SocketAddr,
    backend: std::net::SocketAddr,
    demo: std::net::SocketAddr,
}

async fn run_dev(redis_url: Option<String>, listen: DevListen) -> Result<()> {
    init_tracing();
    let store = match &redis_url {
        Some(url) => {
            let config = StoreConfig::redis(url);
            config
                .validate()
                .map_err(|e| anyhow::anyhow!("--redis-url ({}): {}", e.key, e.message))?;
            config.connect()?
        }
        None => AnyStore::Memory(MemoryStore::new()),
    };
    let demo_listener = tokio::net::TcpListener::bind(listen.demo)
        .await
        .with_context(|| format!("cannot listen on {}", listen.demo))?;
    let demo_url = format!("http://{}", demo_listener.local_addr()?);
    // A fresh admin token each run, printed below: dev never has a guessable one.
    let admin_token = ReferenceToken::generate().expose().to_owned();
    let (user, password) = ("alice", "wonderland");
    // The gateway signs browsers in as a confidential client; its address names its callback.
    let gateway_listen = resolve_port(listen.gateway)?;
    let gateway_url = format!("http://{gateway_listen}");
    let gateway_secret = ReferenceToken::generate().expose().to_owned();
    // The console's demo administrator gets a fresh password each run, like the admin token.
    let console_password = ReferenceToken::generate().expose()[..20].to_owned();
    let config = IdpConfig {
        server: ServerConfig {
            listen: listen.idp,
            max_connections: 1024,
            header_timeout: std::time::Duration::from_secs(10),
            request_timeout: std::time::Duration::from_secs(30),
            drain_timeout: std::time::Duration::from_secs(5),
        },
        admin: AdminConfig::new(listen.idp_admin, &admin_token),
        store: StoreConfig::default(),
        tokens: TokensConfig::default(),
        login: Default::default(),
        users: vec![
            UserConfig {
                username: user.to_owned(),
                password_hash: hash_password(password)?,
                roles: vec!["orders:read".to_owned()],
            },
            UserConfig {
                username: "admin".to_owned(),
                password_hash: hash_password(&console_password)?,
                roles: vec!["tokengate:admin".to_owned()],
            },
        ],
        // The walkthrough's curl commands use the password grant, which only a client that
        // lists it may use (RFC 9700 advises against it anywhere else).
        clients: vec![
            ClientConfig::public("cli", &[Grant::Password], &[]),
            {
                let redirect = demo::DemoApp::redirect_uri(&demo_url);
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
                    hash_password(&gateway_secret)?,
                    &[Grant::AuthorizationCode],
                );
                gateway.redirect_uris = vec![format!("{gateway_url}/.tokengate/callback")];
                gateway.post_logout_redirect_uris = vec![format!("{gateway_url}/")];
                gateway
            },
        ],
        upstreams: Vec::new(),
        base_dir: PathBuf::from("."),
    };
    let idp_bound = Idp::new(config, store.clone(), KeySet::ephemeral()?)?
        .bind()
        .await?;
    let (idp, admin) = (idp_bound.public_addr(), idp_bound.admin_addr());
    let console_url = idp_bound.console_url();
    let backend_listener = tokio::net::TcpListener::bind(listen.backend)
        .await
        .with_context(|| format!("cannot listen on {}", listen.backend))?;
    let backend = backend_listener.local_addr()?;
    let gateway_toml = format!(
        r#"
[server]
listen = "{gw}"
[admin]
listen = "{gw_admin}"
[idp]
jwks_url = "http://{idp}/.well-known/jwks.json"
[sync]
interval = "1s"
[browser]
issuer = "{issuer}"
client_id = "gateway"
client_secret = "{gateway_secret}"
public_url = "{gateway_url}"
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
        issuer = idp_bound.issuer(),
        gw = gateway_listen,
        gw_admin = listen.gateway_admin,
    );
    let gateway_config: tokengate_gateway::config::GatewayConfig = toml::from_str(&gateway_toml)?;
    let gateway = tokengate_gateway::Gateway::bind(gateway_config, store).await?;
    let gw = gateway.public_addr();
    let gw_admin = gateway.admin_addr();
    let demo_app = demo::DemoApp::new(idp_bound.issuer(), &format!("http://{gw}"), &demo_url);
    println!(
        r#"tokengate dev ({store}):
  gateway  http://{gw}   (/api/ needs role orders:read, /public/ is open; admin: http://{gw_admin})
  IdP      http://{idp}   (admin API on http://{admin})
  backend  http://{backend}   (echoes what it receives)

  console  {console_url}   (admin console: sign in as admin / {console_password})

Demo user: {user} / {password}   Admin token: {admin_token}

In a browser: {demo_url}/ is a small web app that signs you in through the IdP (authorization
code flow with PKCE, then single sign-on) and calls /api/ through the gateway with its token.
Browser app: http://{gw}/app/ is served through the gateway, which signs the browser in itself
and keeps the session in an HttpOnly cookie (no token in the page); a forced logout ends it.

  # log in: the answer's access_token is an opaque reference token
  TOKEN=$(curl -s -d grant_type=password -d client_id=cli -d username={user} -d password={password} http://{idp}/oauth2/token | sed 's/.*"access_token":"\([^"]*\)".*/\1/')
  # call a backend through the gateway: it receives the signed value token and role headers
  curl -s -H "Authorization: Bearer $TOKEN" http://{gw}/api/orders
  # force a logout of every session of the user
  curl -s -X DELETE -H "Authorization: Bearer {admin_token}" http://{admin}/admin/users/{user}/sessions
  # the same call now answers 401
  curl -i -H "Authorization: Bearer $TOKEN" http://{gw}/api/orders
"#,
        store = if redis_url.is_some() {
            "on Redis"
        } else {
            "in-memory store"
        },
    );
    let shutdown = CancellationToken::new();
    stop_on_signal(shutdown.clone());
    let demo = axum::serve(demo_listener, demo_app.router())
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let (_, gateway_result, _, demo_result) = tokio::join!(
        idp_bound.serve(shutdown.clone()),
        gateway.serve(shutdown.clone()),
        tokengate_gateway::echo::serve(backend_listener, shutdown.clone()),
        demo,
    );
    gateway_result?;
    demo_result.context("the demo app")?;
    Ok(())
}
