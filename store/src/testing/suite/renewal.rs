//! The renewal of value tokens: what comes due, its replacement, the lease.

use std::time::Duration;

use super::{due_ids, events_since, session, session_expiring, token_expiring};
use crate::{
    EventStream, ReferenceToken, Renewal, SessionAdmin, SessionRead, TokenRenewal, now_unix,
};

pub async fn value_tokens_come_due_by_expiry<S: SessionAdmin + TokenRenewal>(store: &S) {
    let now = now_unix();
    let soon = session_expiring("alice", now + 100);
    let later = session_expiring("bob", now + 200);
    let far = session_expiring("carol", now + 1000);
    let mut to_the_end = session("dave");
    to_the_end.value_token = token_expiring("dave", to_the_end.max_expires_at);
    let revoked = session_expiring("erin", now + 50);
    let logged_out = session_expiring("frank", now + 60);
    let mut idle = session_expiring("grace", now + 70);
    idle.last_used_at = now - 700; // idle timeout 600 passed
    for s in [
        &soon,
        &later,
        &far,
        &to_the_end,
        &revoked,
        &logged_out,
        &idle,
    ] {
        store.create(s).await.expect("create");
    }
    store.revoke(&revoked.id).await.expect("revoke");
    store.revoke_subject("frank").await.expect("revoke subject");

    // Soonest first; ended sessions are never due.
    let (a, b, c) = (soon.id, later.id, far.id);
    assert_eq!(due_ids(store, now + 500, 0, 10).await, [a, b]);
    assert_eq!(
        due_ids(store, now + 150, 0, 10).await,
        std::slice::from_ref(&a)
    );
    assert_eq!(
        due_ids(store, now + 500, 0, 1).await,
        std::slice::from_ref(&a)
    );
    assert_eq!(
        due_ids(store, now + 500, 1, 10).await,
        std::slice::from_ref(&b)
    );
    assert_eq!(due_ids(store, now + 500, 2, 10).await, []);
    // A token that lasts as long as its session has nothing left to renew.
    assert_eq!(due_ids(store, now + 5000, 0, 10).await, [a, b, c]);
    // The returned session is the whole record.
    let got = store.value_tokens_due(now + 150, 0, 1).await.expect("due");
    assert_eq!(got, std::slice::from_ref(&soon));

    // A role change's new token moves the session in the schedule.
    let roles = vec!["admin".to_owned()];
    let token = token_expiring("alice", now + 2000);
    store
        .update_sessions(&[(a, roles, token)])
        .await
        .expect("update");
    assert_eq!(
        due_ids(store, now + 500, 0, 10).await,
        std::slice::from_ref(&b)
    );
    assert_eq!(due_ids(store, now + 5000, 0, 10).await, [b, c, a]);
}

pub async fn renewed_value_tokens_replace_without_an_event<
    S: SessionRead + EventStream + SessionAdmin + TokenRenewal,
>(
    store: &S,
) {
    let now = now_unix();
    let s = session_expiring("alice", now + 100);
    store.create(&s).await.expect("create");
    let cursor = store.events_head().await.expect("head");
    let fresh = token_expiring("alice", now + 400);
    let renewal = Renewal {
        session: s.id,
        replaces: s.value_token.clone(),
        token: fresh.clone(),
    };
    assert_eq!(
        store
            .replace_value_tokens(std::slice::from_ref(&renewal))
            .await
            .expect("replace"),
        1
    );
    let got = store.lookup(&s.id).await.expect("lookup").expect("live");
    assert_eq!(got.value_token, fresh);
    assert_eq!(
        (got.expires_at(), got.roles),
        (s.expires_at(), s.roles.clone())
    );
    assert_eq!(
        events_since(store, &cursor).await,
        [],
        "a renewal must not become an event"
    );
    assert_eq!(due_ids(store, now + 200, 0, 10).await, []);
    assert_eq!(
        due_ids(store, now + 500, 0, 10).await,
        std::slice::from_ref(&s.id)
    );

    // A renewal made from a token the session no longer holds (a role change or another
    // replica's renewal came first) changes nothing.
    let late = Renewal {
        token: token_expiring("alice", now + 450),
        ..renewal
    };
    assert_eq!(
        store.replace_value_tokens(&[late]).await.expect("replace"),
        0
    );
    let got = store.lookup(&s.id).await.expect("lookup").expect("live");
    assert_eq!(got.value_token, fresh);

    // Ended and unknown sessions are not renewed, nor brought back.
    store.revoke(&s.id).await.expect("revoke");
    let after_revoke = Renewal {
        session: s.id,
        replaces: fresh,
        token: token_expiring("alice", now + 500),
    };
    let unknown = Renewal {
        session: ReferenceToken::generate().session_id(),
        ..after_revoke.clone()
    };
    let replaced = store
        .replace_value_tokens(&[after_revoke, unknown])
        .await
        .expect("replace");
    assert_eq!(replaced, 0);
    assert_eq!(store.lookup(&s.id).await.expect("lookup"), None);
    assert_eq!(due_ids(store, now + 5000, 0, 10).await, []);
    assert_eq!(store.replace_value_tokens(&[]).await.expect("replace"), 0);
}

pub async fn one_holder_at_a_time_has_the_renewal_lease<S: TokenRenewal>(store: &S) {
    let ttl = Duration::from_millis(300);
    assert!(store.renewal_lease("idp-a", ttl).await.expect("lease"));
    assert!(!store.renewal_lease("idp-b", ttl).await.expect("lease"));
    // The holder keeps it as long as it asks again in time.
    tokio::time::sleep(ttl / 2).await;
    assert!(store.renewal_lease("idp-a", ttl).await.expect("lease"));
    tokio::time::sleep(ttl / 2).await;
    assert!(!store.renewal_lease("idp-b", ttl).await.expect("lease"));
    // A holder that stopped asking (crashed) loses it when it runs out.
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    assert!(store.renewal_lease("idp-b", ttl).await.expect("lease"));
    assert!(!store.renewal_lease("idp-a", ttl).await.expect("lease"));
    // Only its holder gives it up; then the next one takes it at once.
    assert!(!store.release_renewal_lease("idp-a").await.expect("release"));
    assert!(!store.renewal_lease("idp-a", ttl).await.expect("lease"));
    assert!(store.release_renewal_lease("idp-b").await.expect("release"));
    assert!(store.renewal_lease("idp-a", ttl).await.expect("lease"));
    assert!(!store.release_renewal_lease("idp-b").await.expect("release"));
}
