//! Pending sign-ins and notes.

use std::time::Duration;

use crate::{CodeId, Notes, PendingSignIns, ReferenceToken};

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

pub async fn notes_are_kept_replaced_once_only_and_forgotten<S: Notes>(store: &S) {
    let id = CodeId::of_code(ReferenceToken::generate().expose());
    let ttl = Duration::from_secs(60);
    assert_eq!(store.note(&id).await.expect("read"), None);
    store.put_note(&id, "alice", ttl).await.expect("put");
    store.put_note(&id, "bob", ttl).await.expect("put again");
    assert_eq!(store.note(&id).await.expect("read").as_deref(), Some("bob"));
    assert!(
        !store.put_note_once(&id, "carol", ttl).await.expect("once"),
        "a name already kept is not taken again"
    );
    assert_eq!(store.note(&id).await.expect("read").as_deref(), Some("bob"));
    let once = CodeId::of_code(ReferenceToken::generate().expose());
    let short = Duration::from_millis(200);
    assert!(store.put_note_once(&once, "1", short).await.expect("once"));
    assert!(!store.put_note_once(&once, "1", short).await.expect("twice"));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        store.note(&once).await.expect("read"),
        None,
        "forgotten after its TTL"
    );
    assert!(store.put_note_once(&once, "1", short).await.expect("after"));
}
