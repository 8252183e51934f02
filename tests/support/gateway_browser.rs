//! A stack for browser sessions at the gateway: Redis, the IdP with the gateway as its
//! confidential client (and a second client, `other`, with the same callback), an echo
//! backend, and a gateway with `[browser]` and browser routes.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use tokengate_gateway::config::{BrowserConfig, RouteConfig};
use tokengate_idp::config::{ClientConfig, Grant};
use tokengate_idp::password::hash_password;

use super::{EchoBackend, TestGateway, TestIdp, TestRedis, gateway_config, idp_config};

pub const GATEWAY_CLIENT: &str = "gateway";
pub const GATEWAY_SECRET: &str = "gateway-client-secret";
pub const OTHER_CLIENT: &str = "other";
pub const OTHER_SECRET: &str = "other-client-secret";

pub struct BrowserStack {
    pub redis: TestRedis,
    pub idp: TestIdp,
    pub backend: EchoBackend,
    pub gateway: TestGateway,
}

impl BrowserStack {
    /// Routes: `/app/` and `/app/api/` (role `orders:read`) are browser routes, `/sso/` is the
    /// IdP's route (`idp = true`), and the usual `/api/` and `/public/`.
    pub async fn start() -> Self {
        let redis = TestRedis::start();
        let backend = EchoBackend::start().await;
        // The gateway's address goes into the IdP's client registration before it starts.
        let listen: SocketAddr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let public_url = format!("http://{listen}");
        let mut config = idp_config(&redis.url());
        for (id, secret) in [
            (GATEWAY_CLIENT, GATEWAY_SECRET),
            (OTHER_CLIENT, OTHER_SECRET),
        ] {
            let mut client = ClientConfig::confidential(
                id,
                hash_password(secret).unwrap(),
                &[Grant::AuthorizationCode],
            );
            client.redirect_uris = vec![format!("{public_url}/.tokengate/callback")];
            client.post_logout_redirect_uris = vec![format!("{public_url}/")];
            config.clients.push(client);
        }
        let idp = TestIdp::spawn(config).await;
        let mut gw = gateway_config(&redis.url(), &idp, &backend.url());
        gw.server.listen = listen;
        gw.browser = Some(
            toml::from_str::<BrowserConfig>(&format!(
                r#"
issuer = "{issuer}"
client_id = "{GATEWAY_CLIENT}"
client_secret = "{GATEWAY_SECRET}"
public_url = "{public_url}"
"#,
                issuer = idp.url(""),
            ))
            .unwrap(),
        );
        let backend_url = backend.url();
        for route in [
            format!("path_prefix = \"/app/\"\nupstream = \"{backend_url}\"\nbrowser = true"),
            format!(
                "path_prefix = \"/app/api/\"\nupstream = \"{backend_url}\"\nbrowser = true\nroles = [\"orders:read\"]"
            ),
            format!(
                "path_prefix = \"/sso/\"\nupstream = \"{backend_url}\"\nauth = false\nidp = true"
            ),
        ] {
            gw.routes
                .push(toml::from_str::<RouteConfig>(&route).unwrap());
        }
        gw.validate(std::path::Path::new("test.toml")).unwrap();
        let gateway = TestGateway::spawn(gw).await;
        BrowserStack {
            redis,
            idp,
            backend,
            gateway,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gateway.public)
    }

    pub fn origin(&self) -> String {
        format!("http://{}", self.gateway.public)
    }
}
