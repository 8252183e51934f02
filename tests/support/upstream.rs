//! A real, independent OpenID Connect provider for the federation tests: `oidc-provider` from
//! npm (tests/upstream/, its lock file committed), run under Node.js on a free port. It can be
//! made to answer bad things for real: a token signed with another key, for another audience,
//! expired, with another nonce, late, or not at all (stopped).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::get;

/// The client the provider knows tokengate as, and its secret.
pub const CLIENT_ID: &str = "tokengate";
pub const CLIENT_SECRET: &str = "upstream-secret";

/// How the provider misbehaves, if at all.
#[derive(Clone, Debug, Default)]
pub struct UpstreamOptions {
    /// Re-sign the token endpoint's id_token with this wrong: `aud`, `exp`, `nonce`, `iss`,
    /// `key` (another key under the published key id), `kid` (another, unpublished key id).
    pub tamper: Option<&'static str>,
    /// Answer the token endpoint this late.
    pub delay: Option<Duration>,
    /// The `amr` the provider's id_token says (comma-separated), as one that asked for a
    /// second factor.
    pub amr: Option<&'static str>,
    /// Serve HTTPS with this certificate and key (PEM files).
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// The provider's Node.js process; killed when dropped.
pub struct TestUpstream {
    pub issuer: String,
    child: Option<Child>,
}

fn folder() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/upstream")
}

/// `npm ci` once, if the provider's packages are not installed yet (CI installs them first).
fn install() {
    static INSTALL: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut done = INSTALL.lock().unwrap();
    if *done || folder().join("node_modules/oidc-provider").exists() {
        *done = true;
        return;
    }
    let status = std::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(folder())
        .status()
        .expect("npm (Node.js 20 or newer) is needed for the federation tests");
    assert!(status.success(), "npm ci in tests/upstream failed");
    *done = true;
}

impl TestUpstream {
    /// Starts the provider with one client, `tokengate`, whose only redirect URI is `callback`,
    /// and waits for its discovery document.
    pub async fn start(callback: &str, options: UpstreamOptions) -> Self {
        install();
        let mut command = Command::new("node");
        command
            .arg("provider.mjs")
            .current_dir(folder())
            .env("CALLBACK", callback)
            .env("CLIENT_ID", CLIENT_ID)
            .env("CLIENT_SECRET", CLIENT_SECRET)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(tamper) = options.tamper {
            command.env("TAMPER", tamper);
        }
        if let Some(amr) = options.amr {
            command.env("AMR", amr);
        }
        if let Some(delay) = options.delay {
            command.env("DELAY_MS", delay.as_millis().to_string());
        }
        if let Some((cert, key)) = &options.tls {
            command.env("TLS_CERT", cert).env("TLS_KEY", key);
        }
        let mut child = command
            .spawn()
            .expect("node is needed for the federation tests");
        // The provider's stderr goes to the test's output (shown when the test fails) and is
        // kept for the message if it never starts, so that a failure explains itself.
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut errors = BufReader::new(child.stderr.take().unwrap()).lines();
        let kept = stderr.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = errors.next_line().await {
                eprintln!("[upstream provider] {line}");
                let mut kept = kept.lock().unwrap();
                if kept.len() < 64 * 1024 {
                    kept.push_str(&line);
                    kept.push('\n');
                }
            }
        });
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let started = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(port) = line.strip_prefix("listening ") {
                    return Some(port.trim().parse::<u16>().unwrap());
                }
            }
            None
        })
        .await;
        let port = match started {
            Ok(Some(port)) => port,
            Ok(None) => {
                let status = child.wait().await;
                panic!(
                    "the upstream provider stopped before listening ({status:?}); its stderr:\n{}",
                    stderr.lock().unwrap()
                )
            }
            Err(_) => panic!(
                "the upstream provider did not start within 30s; its stderr:\n{}",
                stderr.lock().unwrap()
            ),
        };
        // Keep reading its output so that it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let scheme = if options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let issuer = format!("{scheme}://127.0.0.1:{port}");
        if options.tls.is_none() {
            let discovery = get(&format!("{issuer}/.well-known/openid-configuration")).await;
            assert_eq!(discovery.status, 200, "{}", discovery.body);
        }
        TestUpstream {
            issuer,
            child: Some(child),
        }
    }

    /// Stops the provider: from now on it answers nothing.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.issuer)
        }
    }
}
