//! Pending sign-ins.

use std::time::Duration;

use crate::{CodeId, PendingSignIns, ReferenceToken};

pub async fn pending_records_are_taken_once_then_forgotten<S: PendingSignIns>(store: &S) {
    let id = CodeId::of_code(ReferenceToken::generate().expose());
    let ttl = Duration::from_secs(60);
    assert!(
        store
            .create_pending(&id, "first", ttl)
            .await
            .expect("create")
    );
    assert!(
        !store
            .create_pending(&id, "second", ttl)
            .await
            .expect("create"),
        "a pending record is never overwritten"
    );
    assert_eq!(
        store.take_pending(&id).await.expect("take").as_deref(),
        Some("first")
    );
    assert_eq!(store.take_pending(&id).await.expect("again"), None);
    let unknown = CodeId::of_code(ReferenceToken::generate().expose());
    assert_eq!(store.take_pending(&unknown).await.expect("take"), None);
    let short = CodeId::of_code(ReferenceToken::generate().expose());
    assert!(
        store
            .create_pending(&short, "brief", Duration::from_millis(200))
            .await
            .expect("create")
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(store.take_pending(&short).await.expect("take"), None);
}
