//! The `tokengate` binary: parses the command line and starts what it names.

mod demo;
mod dev;
#[cfg(feature = "otel")]
mod otel;

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use tokengate_idp::Idp;
use tokengate_idp::config::IdpConfig;
use tokengate_idp::keys::{KeySet, SigningKey};
use tokengate_idp::password::hash_password;
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
    /// Shows which route and which rule of a gateway config decide a request, and the outcome,
    /// without traffic (the token is taken as valid; rate limits and the CSRF check are not
    /// part of it). Exits 0 when the request would pass, 3 when it would be refused.
    Check {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The request's method, e.g. GET.
        method: String,
        /// The request's path, e.g. /api/orders/7.
        path: String,
        /// The token's roles, comma-separated.
        #[arg(long, value_delimiter = ',', value_name = "ROLES")]
        roles: Vec<String>,
        /// The client the session was issued to.
        #[arg(long, value_name = "ID")]
        client: Option<String>,
        /// The token's subject.
        #[arg(long, value_name = "SUB", default_value = "")]
        subject: String,
        /// The request's Host, for routes limited to a host.
        #[arg(long)]
        host: Option<String>,
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

/// Logs to standard error, filtered by `RUST_LOG` (default `info`); with the `otel` feature
/// and an OTLP endpoint, also exports the request spans as `service`.
fn init_tracing(service: &'static str) -> Telemetry {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;

    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let log = tracing_subscriber::fmt::layer()
        .with_target(false)
        // Colours for a terminal only: a log file or collector gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    #[cfg(feature = "otel")]
    match otel::start(service) {
        Ok(Some((export_layer, export))) => {
            // Each layer its own filter: spans are exported whatever the log level.
            tracing_subscriber::registry()
                .with(tracing_subscriber::Layer::with_filter(log, filter))
                .with(export_layer)
                .init();
            tracing::info!(service, "exporting spans over OTLP");
            return Telemetry {
                export: Some(export),
            };
        }
        Ok(None) => {}
        Err(e) => {
            tracing_subscriber::registry().with(log).with(filter).init();
            tracing::warn!(error = %e, "span export not started");
            return Telemetry { export: None };
        }
    }
    #[cfg(not(feature = "otel"))]
    let _ = service;
    tracing_subscriber::registry().with(log).with(filter).init();
    Telemetry {
        #[cfg(feature = "otel")]
        export: None,
    }
}

/// What [`init_tracing`] started: the span exporter, with the `otel` feature.
struct Telemetry {
    #[cfg(feature = "otel")]
    export: Option<otel::Export>,
}

impl Telemetry {
    /// Sends the spans still queued (the process is about to exit).
    async fn flush(self) {
        #[cfg(feature = "otel")]
        if let Some(export) = self.export {
            export.shutdown().await;
        }
    }
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

/// Logs how opening an access log's file again went.
fn reopened(result: Result<(), tokengate_server::access::OpenError>) {
    match result {
        Ok(()) => tracing::info!("SIGUSR1: access log reopened"),
        Err(e) => {
            tracing::error!(error = %e, "SIGUSR1: cannot reopen the access log; still writing to the old file")
        }
    }
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
    // Logs (and exported spans) name the service that runs; the one-shot commands log nothing.
    let telemetry = match &cli.command {
        Command::Idp { .. } => Some(init_tracing("tokengate-idp")),
        Command::Gateway { .. } => Some(init_tracing("tokengate-gateway")),
        Command::Dev { .. } => Some(init_tracing("tokengate-dev")),
        Command::Echo { .. } => Some(init_tracing("tokengate-echo")),
        Command::HashPassword | Command::GenKey { .. } | Command::Check { .. } => None,
    };
    let result = command(cli.command).await;
    if let Some(telemetry) = telemetry {
        telemetry.flush().await;
    }
    result
}

async fn command(command: Command) -> Result<()> {
    match command {
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
            let listen = dev::DevListen {
                idp: idp_listen,
                idp_admin: admin_listen,
                gateway: gateway_listen,
                gateway_admin: gateway_admin_listen,
                backend: backend_listen,
                demo: demo_listen,
            };
            dev::run(redis_url, listen).await
        }
        Command::Check {
            config,
            method,
            path,
            roles,
            client,
            subject,
            host,
        } => {
            let config = tokengate_gateway::config::GatewayConfig::load_offline(&config)?;
            let who = tokengate_gateway::policy::Who {
                roles: &roles,
                client: client.as_deref(),
                subject: subject.as_bytes(),
            };
            let check = tokengate_gateway::routes::Check::run(
                &config,
                &method,
                &path,
                host.as_deref(),
                who,
            )?;
            print!("{check}");
            if check.refused.is_some() {
                std::process::exit(3);
            }
            Ok(())
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
    let bound = Idp::new(config, store, keys)?
        .bind()
        .await?
        .reload_from(path);
    tracing::info!(public = %bound.public_addr(), admin = %bound.admin_addr(), "IdP listening");
    let shutdown = CancellationToken::new();
    stop_on_signal(shutdown.clone());
    let reloader = bound.reloader();
    reload_on_signal(move || {
        let reloader = reloader.clone();
        tokio::spawn(async move {
            let _ = reloader.reload().await;
        });
    });
    if let Some(access) = bound.access_log() {
        reopen_on_signal(move || reopened(access.reopen()));
    }
    bound.serve(shutdown).await;
    Ok(())
}

async fn run_echo(listen: std::net::SocketAddr) -> Result<()> {
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
        reopen_on_signal(move || reopened(access.reopen()));
    }
    gateway.serve(shutdown).await?;
    Ok(())
}
