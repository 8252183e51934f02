//! The audit trail.

use crate::{AuditTrail, MAX_AUDIT_PAGE, StoreError, now_unix};

fn audit_entry(n: usize) -> crate::AuditEntry {
    crate::AuditEntry {
        id: String::new(),
        at: now_unix(),
        actor: "console:admin".into(),
        action: "session.revoke".into(),
        target: format!("user{n}"),
        address: "127.0.0.1".into(),
    }
}

pub async fn audit_is_read_newest_first_in_pages<S: AuditTrail>(store: &S) {
    assert_eq!(
        store.audit(None, 10).await.expect("empty"),
        crate::AuditPage::default()
    );
    for n in 0..5 {
        store.append_audit(&audit_entry(n)).await.expect("append");
    }
    let first = store.audit(None, 2).await.expect("page");
    let targets = |p: &crate::AuditPage| -> Vec<String> {
        p.entries.iter().map(|e| e.target.clone()).collect()
    };
    assert_eq!(targets(&first), ["user4", "user3"]);
    let e = &first.entries[0];
    assert_eq!(
        (e.actor.as_str(), e.action.as_str(), e.address.as_str()),
        ("console:admin", "session.revoke", "127.0.0.1")
    );
    assert!(e.at > 0 && !e.id.is_empty());
    let second = store.audit(first.next.as_deref(), 2).await.expect("page 2");
    assert_eq!(targets(&second), ["user2", "user1"]);
    let last = store
        .audit(second.next.as_deref(), 2)
        .await
        .expect("page 3");
    assert_eq!(targets(&last), ["user0"]);
    assert_eq!(last.next, None);
    assert!(matches!(
        store.audit(Some("not a cursor"), 2).await,
        Err(StoreError::Invalid { .. })
    ));
}

/// The store keeps at most `max_len` audit entries, the newest.
pub async fn audit_trail_is_bounded<S: AuditTrail>(store: &S, max_len: usize) {
    for n in 0..max_len + 5 {
        store.append_audit(&audit_entry(n)).await.expect("append");
    }
    let page = store.audit(None, MAX_AUDIT_PAGE).await.expect("page");
    assert_eq!(page.entries.len(), max_len);
    assert_eq!(page.entries[0].target, format!("user{}", max_len + 4));
    assert_eq!(page.entries[max_len - 1].target, "user5");
}
