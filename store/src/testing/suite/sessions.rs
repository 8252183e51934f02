//! Sessions: created, read, revoked, listed, given new roles; roles set by an administrator.

use super::{events_since, session};
use crate::{
    Event, EventStream, ReferenceToken, Session, SessionAdmin, SessionId, SessionKind, SessionRead,
    ValueToken, now_unix,
};

pub async fn create_then_lookup<S: SessionRead + SessionAdmin>(store: &S) {
    let s = session("alice");
    store.create(&s).await.expect("create");
    assert_eq!(store.lookup(&s.id).await.expect("lookup"), Some(s));
    let unknown = ReferenceToken::generate().session_id();
    assert_eq!(store.lookup(&unknown).await.expect("lookup"), None);
}

pub async fn ended_sessions_are_not_found<S: SessionRead + SessionAdmin>(store: &S) {
    let mut idle = session("alice");
    idle.last_used_at = now_unix() - 700; // idle timeout 600 passed
    store.create(&idle).await.expect("create");
    assert_eq!(store.lookup(&idle.id).await.expect("lookup"), None);
    assert!(store.sessions("alice").await.expect("list").is_empty());
}

pub async fn revoke_publishes_once<S: SessionRead + EventStream + SessionAdmin>(store: &S) {
    let s = session("alice");
    store.create(&s).await.expect("create");
    let cursor = store.events_head().await.expect("head");
    assert!(store.revoke(&s.id).await.expect("revoke"));
    assert_eq!(store.lookup(&s.id).await.expect("lookup"), None);
    assert!(!store.revoke(&s.id).await.expect("revoke again"));
    assert_eq!(
        events_since(store, &cursor).await,
        vec![Event::Revoked { session: s.id }]
    );
    assert!(store.sessions("alice").await.expect("list").is_empty());
}

pub async fn revoke_subject_ends_every_session_of_that_subject_only<
    S: SessionRead + EventStream + SessionAdmin,
>(
    store: &S,
) {
    let mut alice: Vec<Session> = (0..3).map(|_| session("alice")).collect();
    let bob = session("bob");
    for s in alice.iter().chain([&bob]) {
        store.create(s).await.expect("create");
    }
    let cursor = store.events_head().await.expect("head");
    let mut revoked = store.revoke_subject("alice").await.expect("revoke subject");
    revoked.sort();
    alice.sort_by_key(|a| a.id);
    let ids: Vec<SessionId> = alice.iter().map(|s| s.id).collect();
    assert_eq!(revoked, ids);
    for s in &alice {
        assert_eq!(store.lookup(&s.id).await.expect("lookup"), None);
    }
    assert!(store.sessions("alice").await.expect("list").is_empty());
    assert_eq!(store.sessions("bob").await.expect("list"), vec![bob]);
    let events = events_since(store, &cursor).await;
    let [Event::SubjectRevoked { subject, sessions }] = events.as_slice() else {
        panic!("expected one forced-logout event, got {events:?}");
    };
    assert_eq!(subject, "alice");
    let mut sessions = sessions.clone();
    sessions.sort();
    assert_eq!(sessions, ids);
    assert!(
        store
            .revoke_subject("nobody")
            .await
            .expect("revoke")
            .is_empty()
    );
}

pub async fn sessions_lists_live_sessions<S: SessionAdmin>(store: &S) {
    let a = session("carol");
    let b = session("carol");
    store.create(&a).await.expect("create");
    store.create(&b).await.expect("create");
    let mut listed = store.sessions("carol").await.expect("list");
    listed.sort_by_key(|x| x.id);
    let mut expected = vec![a, b];
    expected.sort_by_key(|x| x.id);
    assert_eq!(listed, expected);
    // Subjects with characters that mean something to Redis are kept apart.
    let odd = session("x}{y:*");
    store.create(&odd).await.expect("create");
    assert_eq!(store.sessions("x}{y:*").await.expect("list"), vec![odd]);
}

pub async fn update_sessions_replaces_roles_of_live_sessions<
    S: SessionRead + EventStream + SessionAdmin,
>(
    store: &S,
) {
    let live = session("dave");
    let gone = session("dave");
    store.create(&live).await.expect("create");
    store.create(&gone).await.expect("create");
    store.revoke(&gone.id).await.expect("revoke");
    let cursor = store.events_head().await.expect("head");
    let roles = vec!["admin".to_owned(), "orders:write".to_owned()];
    let token = ValueToken("new.value.token".to_owned());
    let updates = [
        (live.id, roles.clone(), token.clone()),
        (gone.id, roles.clone(), token.clone()),
    ];
    assert_eq!(store.update_sessions(&updates).await.expect("update"), 1);
    let got = store.lookup(&live.id).await.expect("lookup").expect("live");
    assert_eq!(got.expires_at(), live.expires_at());
    assert_eq!((got.roles, got.value_token), (roles, token));
    assert_eq!(store.lookup(&gone.id).await.expect("lookup"), None);
    assert_eq!(
        events_since(store, &cursor).await,
        vec![Event::RolesChanged {
            sessions: vec![live.id]
        }]
    );
}

pub async fn subject_roles_round_trip<S: SessionAdmin>(store: &S) {
    assert_eq!(store.subject_roles("erin").await.expect("get"), None);
    let roles = vec!["a".to_owned(), "b".to_owned()];
    store.set_subject_roles("erin", &roles).await.expect("set");
    assert_eq!(store.subject_roles("erin").await.expect("get"), Some(roles));
    store
        .set_subject_roles("carol", &["x".to_owned()])
        .await
        .expect("set");
    assert!(store.clear_subject_roles("carol").await.expect("clear"));
    assert_eq!(store.subject_roles("carol").await.expect("get"), None);
    assert!(!store.clear_subject_roles("carol").await.expect("clear"));
}

pub async fn sessions_keep_client_method_and_kind<S: SessionRead + SessionAdmin>(store: &S) {
    let mut browser = session("alice");
    browser.client_id = Some("web".to_owned());
    browser.method = "upstream:corp".to_owned();
    browser.kind = SessionKind::Browser;
    store.create(&browser).await.expect("create");
    assert_eq!(
        store.lookup(&browser.id).await.expect("lookup"),
        Some(browser.clone())
    );
    let mut plain = session("alice");
    plain.method = String::new();
    store.create(&plain).await.expect("create");
    assert_eq!(
        store.lookup(&plain.id).await.expect("lookup"),
        Some(plain.clone())
    );
    // A role change keeps what the session is and where it came from.
    let roles = vec!["admin".to_owned()];
    let token = ValueToken("re.signed.token".to_owned());
    store
        .update_sessions(&[(browser.id, roles.clone(), token.clone())])
        .await
        .expect("update");
    let got = store
        .lookup(&browser.id)
        .await
        .expect("lookup")
        .expect("live");
    assert_eq!(
        (got.client_id, got.method, got.kind),
        (browser.client_id, browser.method, SessionKind::Browser)
    );
}
