//! OpenID Connect Back-Channel Logout 1.0, sent: when a session issued to a client with a
//! `backchannel_logout_uri` ends (a forced logout, a revocation, the user disabled or deleted,
//! a logout at `/oauth2/logout`, a logout received from an upstream provider), the client gets a
//! logout token naming the session (`sid`, as in the ID token it got) and its subject.
//!
//! [`queue`] puts one delivery per ended session in the store's queue (so any IdP replica
//! delivers it and a restart loses none) and wakes this replica's [`Outbox`]. The outbox takes
//! the due deliveries, signs a logout token for each with the value-token key (`typ`
//! `logout+jwt`, signed anew at each attempt with the same `jti`), and POSTs it, at most
//! [`IN_FLIGHT_PER_CLIENT`] at once per client, each within [`TIMEOUT`]. A failure is retried
//! with exponential backoff until the client's `backchannel_logout_retry_for` has passed since
//! the session ended.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, header};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde::{Deserialize, Serialize};
use tokengate_store::{AnyStore, Deliveries, Session};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::metrics::DeliveryLabels;
use crate::state::{AppState, Live};

/// The event a logout token carries (Back-Channel Logout 1.0 §2.4).
pub const LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// The `typ` of a logout token's header (§2.4), which no ID token has.
pub const LOGOUT_TYP: &str = "logout+jwt";
/// Logout tokens on their way to one client at once.
pub const IN_FLIGHT_PER_CLIENT: usize = 8;
/// How long one delivery may take.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// How long a logout token is valid after it is signed.
const TOKEN_TTL: u64 = 120;
/// How long a replica holds the deliveries it took: longer than a round of them can take, so
/// that no other replica sends them meanwhile; a replica that stops leaves them to the others.
const HOLD: Duration = Duration::from_secs(60);
/// Deliveries taken per round.
const BATCH: usize = 64;
/// How often the queue is looked at without being woken (retries, other replicas' work).
const POLL: Duration = Duration::from_secs(1);
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// One logout token owed to a client, as the store's queue keeps it.
#[derive(Debug, Deserialize, Serialize)]
struct Delivery {
    client: String,
    sub: String,
    sid: String,
    /// When the session ended (Unix seconds): retries stop `backchannel_logout_retry_for` later.
    ended_at: u64,
    attempts: u32,
}

/// The claims of a logout token.
#[derive(Serialize)]
struct LogoutClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
    jti: &'a str,
    sub: &'a str,
    sid: &'a str,
    events: serde_json::Value,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A random id for a delivery, which is also its logout token's `jti`.
fn delivery_id() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 16];
    // Without randomness ids could repeat, and a client would take a second logout as a replay
    // of the first: log it, and go on with what there is.
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        tracing::error!("no randomness for a logout token's jti");
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The wait before attempt `attempts + 1`: 1 s, doubling, at most [`MAX_BACKOFF`].
fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.min(16)).min(MAX_BACKOFF)
}

/// Queues a logout token for each of `sessions` (which just ended) issued to a client that
/// takes them, and wakes this replica's outbox. A failure to queue is logged and counted: the
/// session has ended all the same, only the client does not hear of it.
pub async fn queue(state: &AppState, sessions: &[Session]) {
    let now = now_ms();
    let mut queued = false;
    for session in sessions {
        let Some(client) = session
            .client_id
            .as_deref()
            .and_then(|id| state.clients.get(id))
            .filter(|c| c.backchannel_logout_uri.is_some())
        else {
            continue;
        };
        let delivery = Delivery {
            client: client.id.clone(),
            sub: session.subject.clone(),
            sid: session.id.to_string(),
            ended_at: now / 1000,
            attempts: 0,
        };
        let Ok(payload) = serde_json::to_string(&delivery) else {
            continue;
        };
        match state
            .store
            .queue_delivery(&delivery_id(), &payload, now)
            .await
        {
            Ok(true) => queued = true,
            Ok(false) => {
                tracing::warn!(client_id = %client.id, session = %session.id, "back-channel logout queue full; the client will not hear of this session's end");
                count(state, &client.id, "dropped");
            }
            Err(e) => {
                let _ = state.store_error(e);
                tracing::warn!(client_id = %client.id, session = %session.id, "queueing a back-channel logout failed; the client will not hear of this session's end");
            }
        }
    }
    if queued {
        state.outbox.notify_one();
    }
}

fn count(state: &AppState, client: &str, result: &'static str) {
    state
        .metrics
        .backchannel_logout_deliveries
        .get_or_create(&DeliveryLabels {
            client: client.to_owned(),
            result,
        })
        .inc();
}

/// What an attempt came to.
enum Outcome {
    Delivered,
    Failed(String),
}

/// The sender of queued logout tokens: one per IdP process, following the state in force (its
/// clients, keys and issuer).
pub struct Outbox {
    live: Live,
    store: AnyStore,
    wake: Arc<Notify>,
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// Deliveries in flight per client; the map holds configured clients only.
    in_flight: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Outbox {
    /// An outbox woken through `wake` (the state's `outbox`), sending over HTTP or HTTPS (the
    /// system's roots; without any, HTTPS deliveries fail and are retried).
    pub fn new(live: Live, store: AnyStore, wake: Arc<Notify>) -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(TIMEOUT));
        http.enforce_http(false);
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = builder.with_native_roots().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "no system root certificates: back-channel logout over HTTPS will fail");
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(
                rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            )
        });
        let connector = builder.https_or_http().enable_http1().wrap_connector(http);
        Outbox {
            live,
            store,
            wake,
            http: Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// Sends what is due, round after round, until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let this = Arc::new(self);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = this.wake.notified() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
            loop {
                let due = match this.store.deliveries_due(now_ms(), HOLD, BATCH).await {
                    Ok(due) => due,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading the back-channel logout queue failed; will retry");
                        break;
                    }
                };
                let full = due.len() == BATCH;
                let mut round = JoinSet::new();
                for (id, payload) in due {
                    let this = this.clone();
                    round.spawn(async move { this.deliver(id, payload).await });
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = async { while round.join_next().await.is_some() {} } => {}
                }
                if !full {
                    break;
                }
            }
        }
    }

    /// One attempt at one delivery, then the queue told what came of it.
    async fn deliver(&self, id: String, payload: String) {
        let state = self.live.load();
        let Ok(mut delivery) = serde_json::from_str::<Delivery>(&payload) else {
            tracing::warn!(jti = %id, "an unreadable back-channel logout delivery was dropped");
            self.finish(&id).await;
            return;
        };
        let client = state.clients.get(&delivery.client).cloned();
        let Some((client, uri)) = client.and_then(|c| {
            let uri = c.backchannel_logout_uri.clone()?;
            Some((c, uri))
        }) else {
            tracing::info!(client_id = %delivery.client, jti = %id, "the client no longer takes back-channel logout tokens; delivery dropped");
            count(&state, &delivery.client, "dropped");
            self.finish(&id).await;
            return;
        };
        let permits = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(client.id.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(IN_FLIGHT_PER_CLIENT)))
            .clone();
        let Ok(_permit) = permits.acquire_owned().await else {
            return;
        };
        let outcome = match self.logout_token(&state, &id, &delivery) {
            Ok(token) => self.post(&uri, &token).await,
            Err(e) => Outcome::Failed(format!("signing failed: {e}")),
        };
        match outcome {
            Outcome::Delivered => {
                tracing::info!(client_id = %client.id, jti = %id, session = %delivery.sid, "back-channel logout delivered");
                count(&state, &client.id, "delivered");
                self.finish(&id).await;
            }
            Outcome::Failed(why) => {
                delivery.attempts = delivery.attempts.saturating_add(1);
                let wait = backoff(delivery.attempts - 1);
                let deadline = delivery
                    .ended_at
                    .saturating_add(client.backchannel_logout_retry_for.as_secs());
                let next = now_ms().saturating_add(wait.as_millis() as u64);
                if next / 1000 > deadline {
                    tracing::warn!(client_id = %client.id, jti = %id, attempts = delivery.attempts, error = %why, "back-channel logout given up");
                    count(&state, &client.id, "expired");
                    self.finish(&id).await;
                    return;
                }
                tracing::info!(client_id = %client.id, jti = %id, attempts = delivery.attempts, retry_in = ?wait, error = %why, "back-channel logout failed; will retry");
                count(&state, &client.id, "failed");
                let Ok(payload) = serde_json::to_string(&delivery) else {
                    return;
                };
                // Nothing queued again (the store down) leaves it held: it comes due again
                // when the hold ends.
                if let Err(e) = self.store.queue_delivery(&id, &payload, next).await {
                    tracing::warn!(error = %e, jti = %id, "requeueing a back-channel logout failed");
                }
            }
        }
    }

    /// The logout token for `delivery`, signed now.
    fn logout_token(
        &self,
        state: &AppState,
        jti: &str,
        delivery: &Delivery,
    ) -> Result<String, crate::keys::KeyError> {
        let iat = now_ms() / 1000;
        state.keys.current().sign_typed(
            &LogoutClaims {
                iss: &state.issuer_name,
                aud: &delivery.client,
                iat,
                exp: iat + TOKEN_TTL,
                jti,
                sub: &delivery.sub,
                sid: &delivery.sid,
                events: serde_json::json!({ LOGOUT_EVENT: {} }),
            },
            LOGOUT_TYP,
        )
    }

    /// POSTs `logout_token` to the client's `uri`: delivered on a `2xx` within [`TIMEOUT`].
    async fn post(&self, uri: &str, token: &str) -> Outcome {
        let body = match serde_urlencoded::to_string([("logout_token", token)]) {
            Ok(body) => body,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        let request = Request::post(uri)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(body)));
        let request = match request {
            Ok(request) => request,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        match tokio::time::timeout(TIMEOUT, self.http.request(request)).await {
            Ok(Ok(response)) if response.status().is_success() => Outcome::Delivered,
            Ok(Ok(response)) => Outcome::Failed(format!("answered {}", response.status())),
            Ok(Err(e)) => Outcome::Failed(e.to_string()),
            Err(_) => Outcome::Failed(format!("no answer within {TIMEOUT:?}")),
        }
    }

    /// Removes a delivery from the queue; a failure leaves it to come due again when its hold
    /// ends (delivered twice: the client sees the same `jti`).
    async fn finish(&self, id: &str) {
        if let Err(e) = self.store.finish_delivery(id).await {
            tracing::warn!(error = %e, jti = %id, "removing a back-channel logout from the queue failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_from_a_second_to_five_minutes() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(32));
        assert_eq!(backoff(9), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
