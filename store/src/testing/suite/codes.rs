//! Authorization codes.

use std::time::Duration;

use super::{auth_code, session};
use crate::{CodeId, Codes, Redeemed, ReferenceToken};

pub async fn codes_are_redeemed_once_then_replayed_then_forgotten<S: Codes>(store: &S) {
    let code = ReferenceToken::generate();
    let id = CodeId::of_code(code.expose());
    let record = auth_code("alice");
    let ttl = Duration::from_secs(60);
    assert!(store.create_code(&id, &record, ttl).await.expect("create"));
    assert!(
        !store
            .create_code(&id, &auth_code("mallory"), ttl)
            .await
            .expect("create again"),
        "a code is never overwritten"
    );
    let (first, second) = (session("alice").id, session("alice").id);
    assert_eq!(
        store.redeem_code(&id, &first).await.expect("redeem"),
        Redeemed::Fresh(record)
    );
    for _ in 0..2 {
        assert_eq!(
            store.redeem_code(&id, &second).await.expect("replay"),
            Redeemed::Replayed(Some(first)),
            "a replay names the session the first use made"
        );
    }
    let unknown = CodeId::of_code(ReferenceToken::generate().expose());
    assert_eq!(
        store.redeem_code(&unknown, &first).await.expect("redeem"),
        Redeemed::Unknown
    );

    // A spent code is remembered until its TTL ends, then forgotten; so is an unused one.
    let short = Duration::from_millis(300);
    let spent = CodeId::of_code(ReferenceToken::generate().expose());
    let unused = CodeId::of_code(ReferenceToken::generate().expose());
    assert!(
        store
            .create_code(&spent, &auth_code("bob"), short)
            .await
            .expect("create")
    );
    assert!(
        store
            .create_code(&unused, &auth_code("bob"), short)
            .await
            .expect("create")
    );
    assert!(matches!(
        store.redeem_code(&spent, &first).await.expect("redeem"),
        Redeemed::Fresh(_)
    ));
    assert_eq!(
        store.redeem_code(&spent, &second).await.expect("replay"),
        Redeemed::Replayed(Some(first))
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    for id in [&spent, &unused] {
        while store.redeem_code(id, &second).await.expect("redeem") != Redeemed::Unknown {
            assert!(
                std::time::Instant::now() < deadline,
                "a code outlived its TTL"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
