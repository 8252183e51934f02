//! The event stream: resuming from a cursor, waking a blocked reader, gaps.

use std::time::Duration;

use super::session;
use crate::{Event, EventStream, SessionAdmin};

pub async fn events_resume_from_cursor_at_least_once<S: EventStream + SessionAdmin>(store: &S) {
    let start = store.events_head().await.expect("head");
    let (a, b) = (session("f"), session("g"));
    store.create(&a).await.expect("create");
    store.create(&b).await.expect("create");
    store.revoke(&a.id).await.expect("revoke");
    let first = store
        .read_events(&start, Duration::from_millis(10))
        .await
        .expect("read");
    assert!(!first.gap);
    assert_eq!(first.events, vec![Event::Revoked { session: a.id }]);
    // Nothing new after the returned cursor.
    let empty = store
        .read_events(&first.cursor, Duration::from_millis(10))
        .await
        .expect("read");
    assert!(empty.events.is_empty() && !empty.gap);
    assert_eq!(empty.cursor, first.cursor);
    store.revoke(&b.id).await.expect("revoke");
    let next = store
        .read_events(&first.cursor, Duration::from_millis(10))
        .await
        .expect("read");
    assert_eq!(next.events, vec![Event::Revoked { session: b.id }]);
    // Reading again from an old position delivers the same events again (at-least-once).
    let again = store
        .read_events(&start, Duration::from_millis(10))
        .await
        .expect("read");
    assert_eq!(again.events.len(), 2);
    assert_eq!(again.cursor, next.cursor);
}

pub async fn blocked_reader_wakes_on_event<S: EventStream + SessionAdmin + Clone + 'static>(
    store: &S,
) {
    let s = session("h");
    store.create(&s).await.expect("create");
    let head = store.events_head().await.expect("head");
    let reader = {
        let store = store.clone();
        tokio::spawn(async move { store.read_events(&head, Duration::from_secs(20)).await })
    };
    let started = std::time::Instant::now();
    store.revoke(&s.id).await.expect("revoke");
    let batch = reader.await.expect("join").expect("read");
    assert_eq!(batch.events, vec![Event::Revoked { session: s.id }]);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "reader was not woken"
    );
}

pub async fn trimmed_stream_is_reported_as_gap<S: EventStream + SessionAdmin>(
    store: &S,
    max_len: usize,
) {
    let start = store.events_head().await.expect("head");
    for _ in 0..(max_len * 3 + 300) {
        let s = session("i");
        store.create(&s).await.expect("create");
        store.revoke(&s.id).await.expect("revoke");
    }
    let batch = store
        .read_events(&start, Duration::from_millis(10))
        .await
        .expect("read");
    assert!(batch.gap, "a reader behind the trimmed stream must be told");
}
