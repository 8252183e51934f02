//! Deliveries owed to others.

use std::time::Duration;

use crate::{Deliveries, ReferenceToken};

pub async fn deliveries_come_due_are_held_requeued_and_finished<S: Deliveries>(store: &S) {
    // Ids of their own, so that stores shared between tests see only these.
    let id = |n: u32| format!("{n}-{}", ReferenceToken::generate().expose());
    let (a, b, later) = (id(1), id(2), id(3));
    let now = 1_000_000;
    assert!(
        store
            .queue_delivery(&b, "payload b", now - 10)
            .await
            .expect("queue")
    );
    assert!(
        store
            .queue_delivery(&a, "payload a", now - 20)
            .await
            .expect("queue")
    );
    assert!(
        store
            .queue_delivery(&later, "later", now + 60_000)
            .await
            .expect("queue")
    );
    let hold = Duration::from_secs(30);
    let due = store.deliveries_due(now, hold, 10).await.expect("due");
    assert_eq!(
        due,
        vec![
            (a.clone(), "payload a".to_owned()),
            (b.clone(), "payload b".to_owned())
        ],
        "the due ones, soonest first, not the one due later"
    );
    assert!(
        store
            .deliveries_due(now, hold, 10)
            .await
            .expect("due")
            .is_empty(),
        "taken deliveries are held"
    );
    let held_out = now + 30_001;
    let again = store.deliveries_due(held_out, hold, 1).await.expect("due");
    assert_eq!(
        again,
        vec![(a.clone(), "payload a".to_owned())],
        "after the hold, by limit"
    );
    // A retry replaces the payload and the time it is due.
    assert!(
        store
            .queue_delivery(&b, "payload b, again", held_out + 5)
            .await
            .expect("requeue")
    );
    assert!(store.finish_delivery(&a).await.expect("finish"));
    assert!(!store.finish_delivery(&a).await.expect("finish twice"));
    let rest = store
        .deliveries_due(held_out + 10, hold, 10)
        .await
        .expect("due");
    assert_eq!(rest, vec![(b.clone(), "payload b, again".to_owned())]);
    for id in [&b, &later] {
        assert!(store.finish_delivery(id).await.expect("finish"));
    }
    assert!(
        store
            .deliveries_due(u64::MAX / 2, hold, 10)
            .await
            .expect("due")
            .is_empty()
    );
}
