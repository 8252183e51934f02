//! The renewal task: re-signs the value tokens of live sessions before they expire, so that a
//! value token that leaks from behind the gateway dies within `tokens.value_token_ttl` while its
//! session lives on. Gateways pick the new token up when their cached copy nears its expiry (they
//! re-read the store); no event is published per renewal.
//!
//! A session is renewed once less than half of the TTL is left on its token: the other half is
//! slack for an IdP that is down or a store that is slow. Several IdP replicas may run the task;
//! a short lease in the store lets one of them renew at a time, and a renewal only replaces the
//! token it was made from, so two replicas renewing the same session is harmless.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokengate_store::{AnyStore, Renewal, StoreError, TokenRenewal, now_unix};
use tokio_util::sync::CancellationToken;

use crate::metrics::{Metrics, ReasonLabels};
use crate::sessions::Issuer;

/// Sessions read and renewed per store round trip.
const BATCH: usize = 500;

/// Where each round finds the issuer in force (a reload may replace it, with new keys or a
/// new value-token lifetime).
type IssuerSource = Box<dyn Fn() -> Arc<Issuer> + Send + Sync>;

/// The background task that renews value tokens of live sessions before they expire; one
/// replica at a time, under a lease in the store.
pub struct RenewalTask {
    store: AnyStore,
    issuer: IssuerSource,
    resigned: Counter,
    failures: Family<ReasonLabels, Counter>,
    /// Who holds the lease: this process, by a random name.
    holder: String,
}

/// How often a round runs for a value-token lifetime of `ttl`: a twentieth of it, between 1 s
/// and 15 s. Frequent small rounds spread the signing evenly instead of in bursts, and a
/// token is renewed soon after it falls below half its lifetime.
pub fn interval(ttl: Duration) -> Duration {
    (ttl / 20).clamp(Duration::from_secs(1), Duration::from_secs(15))
}

/// A random name for this process as a lease holder.
fn holder_name() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 12];
    // Without randomness two replicas could share a name: harmless (a renewal only replaces the
    // token it was made from), so a failure leaves the bytes as they are.
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl RenewalTask {
    /// A task that renews with `issuer`.
    pub fn new(store: AnyStore, issuer: Arc<Issuer>, metrics: &Metrics) -> Self {
        Self::following(store, move || issuer.clone(), metrics)
    }

    /// A task that renews with whichever issuer `issuer` answers at the start of each round,
    /// its rounds and lease sized from that issuer's value-token lifetime.
    pub fn following(
        store: AnyStore,
        issuer: impl Fn() -> Arc<Issuer> + Send + Sync + 'static,
        metrics: &Metrics,
    ) -> Self {
        RenewalTask {
            store,
            issuer: Box::new(issuer),
            resigned: metrics.value_tokens_resigned.clone(),
            failures: metrics.value_token_renewal_failures.clone(),
            holder: holder_name(),
        }
    }

    /// The time between rounds, from the value-token lifetime in force.
    fn interval(&self) -> Duration {
        interval(Duration::from_secs((self.issuer)().value_token_ttl()))
    }

    /// Renews round after round until `shutdown`, backing off on store errors, then gives the
    /// lease up.
    pub async fn run(self, shutdown: CancellationToken) {
        let first_retry = Duration::from_secs(1);
        let mut retry = first_retry;
        let mut wait = Duration::ZERO;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = match self.round(&shutdown).await {
                Ok(()) => {
                    retry = first_retry;
                    self.interval()
                }
                Err(e) => {
                    self.failures
                        .get_or_create(&ReasonLabels { reason: "store" })
                        .inc();
                    tracing::warn!(error = %e, retry_in = ?retry, "renewing value tokens failed");
                    // Retries back off up to a fifth of the lifetime, well within the half
                    // left as slack.
                    let now = retry;
                    retry = (retry * 2).min(self.interval() * 4);
                    now
                }
            };
        }
        // A graceful stop gives the lease up, so that another replica (or this IdP restarted)
        // renews at once rather than after the lease runs out: no session's token goes unrenewed.
        let release = self.store.release_renewal_lease(&self.holder);
        match tokio::time::timeout(Duration::from_secs(2), release).await {
            Ok(Ok(true)) => tracing::info!("renewal lease released"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "releasing the renewal lease failed; it runs out by itself")
            }
            Err(_) => {
                tracing::warn!("releasing the renewal lease timed out; it runs out by itself")
            }
        }
    }

    /// One round: while this replica holds the lease, renews every session whose token has less
    /// than half its lifetime left, a batch at a time. (Public for the renewal benchmark.)
    pub async fn round(&self, shutdown: &CancellationToken) -> Result<(), StoreError> {
        let issuer = (self.issuer)();
        let ttl = Duration::from_secs(issuer.value_token_ttl());
        // The lease outlives a few rounds, so that its holder keeps it from round to round and
        // another replica takes over within seconds of a crash.
        let lease = interval(ttl) * 3;
        let before = now_unix() + ttl.as_secs() / 2;
        // Entries that stay due this round (not renewable, or changed meanwhile) are passed over.
        let mut skip = 0;
        let mut failed = 0;
        while !shutdown.is_cancelled() {
            if !self.store.renewal_lease(&self.holder, lease).await? {
                tracing::debug!("another IdP replica renews value tokens");
                return Ok(());
            }
            let due = self.store.value_tokens_due(before, skip, BATCH).await?;
            if due.is_empty() {
                break;
            }
            let now = now_unix();
            let mut renewals = Vec::with_capacity(due.len());
            for session in &due {
                match issuer.renewed(session, now) {
                    Ok(token) => renewals.push(Renewal {
                        session: session.id,
                        replaces: session.value_token.clone(),
                        token,
                    }),
                    Err(e) => {
                        let reason = e.reason();
                        self.failures.get_or_create(&ReasonLabels { reason }).inc();
                        tracing::debug!(session = %session.id, error = %e, "value token not renewed");
                        failed += 1;
                        skip += 1;
                    }
                }
            }
            let replaced = self.store.replace_value_tokens(&renewals).await?;
            self.resigned.inc_by(replaced as u64);
            skip += renewals.len() - replaced;
            tracing::debug!(due = due.len(), replaced, "value tokens renewed");
        }
        if failed > 0 {
            // One line a round, however many: the failure metric has them by reason.
            tracing::warn!(
                sessions = failed,
                "value tokens that cannot be renewed (forged, or signed by a key no longer configured)"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tokengate_store::SessionRead;

    use super::*;
    use crate::config::TokensConfig;
    use crate::keys::KeySet;
    use crate::sessions::NewSession;
    use crate::sessions::tests::{age, issuer, token_exp};

    #[test]
    fn rounds_run_a_twentieth_of_a_lifetime_apart_within_bounds() {
        assert_eq!(interval(Duration::from_secs(300)), Duration::from_secs(15));
        assert_eq!(
            interval(Duration::from_secs(30)),
            Duration::from_millis(1500)
        );
        assert_eq!(interval(Duration::from_secs(3600)), Duration::from_secs(15));
        assert_eq!(interval(Duration::from_secs(10)), Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_round_renews_what_is_due_and_passes_over_what_it_cannot() {
        let (issuer, store) = issuer(60);
        let issuer = Arc::new(issuer);
        let fresh = issuer
            .issue(NewSession::access("alice", Vec::new(), "password"))
            .await
            .unwrap();
        let mut due = Vec::new();
        for user in ["bob", "carol", "dave"] {
            let issued = issuer
                .issue(NewSession::access(user, Vec::new(), "password"))
                .await
                .unwrap();
            age(&issuer, &store, &issued, 40).await; // 20 s left, less than half of 60
            due.push(issued);
        }
        // A due session whose token another IdP signed.
        let other_tokens = TokensConfig {
            value_token_ttl: Duration::from_secs(60),
            ..TokensConfig::default()
        };
        let other_keys = Arc::new(KeySet::ephemeral().unwrap());
        let other = Issuer::new(store.clone(), other_keys, "tokengate", &other_tokens).unwrap();
        let forged = other
            .issue(NewSession::access("mallory", Vec::new(), "password"))
            .await
            .unwrap();
        age(&other, &store, &forged, 40).await;

        let metrics = Metrics::new();
        let task = RenewalTask::new(store.clone(), issuer.clone(), &metrics);
        task.round(&CancellationToken::new()).await.unwrap();
        assert_eq!(metrics.value_tokens_resigned.get(), 3);
        let unverifiable = ReasonLabels {
            reason: "unverifiable",
        };
        let failures = &metrics.value_token_renewal_failures;
        assert_eq!(failures.get_or_create(&unverifiable).get(), 1);
        for issued in &due {
            assert!(token_exp(&issuer, &store, &issued.session.id).await >= now_unix() + 59);
        }
        let held = store.lookup(&fresh.session.id).await.unwrap().unwrap();
        assert_eq!(
            held.value_token, fresh.session.value_token,
            "a token with more than half its lifetime left stays"
        );

        // Another replica does nothing while this one holds the lease.
        age(&issuer, &store, &due[0], 40).await;
        let second = Metrics::new();
        let replica = RenewalTask::new(store.clone(), issuer.clone(), &second);
        replica.round(&CancellationToken::new()).await.unwrap();
        assert_eq!(second.value_tokens_resigned.get(), 0);
        task.round(&CancellationToken::new()).await.unwrap();
        assert_eq!(metrics.value_tokens_resigned.get(), 4);
    }
}
