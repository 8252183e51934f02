//! The login throttle.

use std::time::Duration;

use crate::LoginThrottle;

/// `store` must keep at most `max_len` events (a few hundred at most).
pub async fn login_failures_lock_out_per_key<S: LoginThrottle>(store: &S) {
    let (window, lockout) = (Duration::from_secs(60), Duration::from_secs(30));
    let fail = |key: &'static str| store.login_failed(key, 3, window, lockout);
    assert!(!fail("user:alice").await.expect("count"));
    assert!(!fail("user:alice").await.expect("count"));
    assert_eq!(store.login_locked("user:alice").await.expect("check"), None);
    // A success forgets the failures so far.
    store.login_succeeded("user:alice").await.expect("clear");
    assert!(!fail("user:alice").await.expect("count"));
    assert!(!fail("user:alice").await.expect("count"));
    assert!(
        fail("user:alice").await.expect("count"),
        "third failure must lock"
    );
    let left = store
        .login_locked("user:alice")
        .await
        .expect("check")
        .expect("locked");
    assert!(
        left > Duration::from_secs(28) && left <= lockout,
        "{left:?}"
    );
    // Other keys (and names with braces) are untouched; a success does not lift a lock.
    assert_eq!(store.login_locked("user:{bob}").await.expect("check"), None);
    store.login_succeeded("user:alice").await.expect("clear");
    assert!(
        store
            .login_locked("user:alice")
            .await
            .expect("check")
            .is_some()
    );
    // A short lockout ends by itself.
    assert!(
        store
            .login_failed("addr:10.0.0.1", 1, window, Duration::from_millis(50))
            .await
            .expect("count")
    );
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(
        store.login_locked("addr:10.0.0.1").await.expect("check"),
        None
    );
}
