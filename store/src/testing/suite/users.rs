//! Users: the IdP's directory.

use super::user;
use crate::{Changed, Claimed, MAX_USERNAME_LEN, Replaced, StoreError, User, UserDirectory};

pub async fn users_are_created_once_read_updated_and_deleted<S: UserDirectory>(store: &S) {
    assert_eq!(store.user("alice").await.expect("get"), None);
    let alice = user("alice");
    assert!(store.create_user(&alice).await.expect("create"));
    let mut other = user("alice");
    other.roles = vec!["admin".to_owned()];
    assert!(
        !store.create_user(&other).await.expect("create again"),
        "a name is taken once"
    );
    assert_eq!(store.user("alice").await.expect("get"), Some(alice.clone()));

    let mut changed = alice.clone();
    changed.password_hash = None;
    changed.roles = vec!["a".to_owned(), "b".to_owned()];
    changed.disabled = true;
    changed.upstream = Some("corp".to_owned());
    changed.updated_at += 5;
    assert!(store.update_user(&changed).await.expect("update"));
    assert_eq!(
        store.user("alice").await.expect("get"),
        Some(changed.clone())
    );
    // And back: optional fields come back too.
    assert!(store.update_user(&alice).await.expect("update"));
    assert_eq!(store.user("alice").await.expect("get"), Some(alice.clone()));
    assert!(!store.update_user(&user("nobody")).await.expect("update"));
    assert_eq!(store.user("nobody").await.expect("get"), None);

    assert!(store.delete_user("alice").await.expect("delete"));
    assert_eq!(store.user("alice").await.expect("get"), None);
    assert!(!store.delete_user("alice").await.expect("delete again"));
    assert!(
        store
            .create_user(&other)
            .await
            .expect("create after delete")
    );
    assert_eq!(store.user("alice").await.expect("get"), Some(other));

    // Names with characters that mean something to Redis are kept apart.
    let odd = user("x}{y:*");
    assert!(store.create_user(&odd).await.expect("create"));
    assert_eq!(store.user("x}{y:*").await.expect("get"), Some(odd));
    assert_eq!(store.user("x}{y").await.expect("get"), None);
    // Names past the bound are refused, and never found.
    let long = "a".repeat(MAX_USERNAME_LEN + 1);
    assert!(matches!(
        store.create_user(&user(&long)).await,
        Err(StoreError::Invalid { .. })
    ));
    assert_eq!(store.user(&long).await.expect("get"), None);
    assert!(
        store
            .create_user(&user(&"a".repeat(MAX_USERNAME_LEN)))
            .await
            .expect("create at the bound")
    );
}

pub async fn users_are_listed_by_name_in_pages<S: UserDirectory>(store: &S) {
    let mut created: Vec<User> = [
        "al", "alice", "alicia", "albert", "al}{x", "al:*", "bob", "zed", "ålice", "Alice",
    ]
    .into_iter()
    .map(user)
    .collect();
    for u in &created {
        assert!(store.create_user(u).await.expect("create"));
    }
    // Bytewise order, as Rust orders strings.
    created.sort_by(|a, b| a.username.cmp(&b.username));
    let names: Vec<&str> = created.iter().map(|u| u.username.as_str()).collect();
    let all = store.list_users("", None, 1000).await.expect("list");
    assert_eq!(all.users, created);
    assert_eq!(all.next, None);

    // Paging through a prefix, two at a time, gives every match once, in order.
    let wanted: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| n.starts_with("al"))
        .collect();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .list_users("al", after.as_deref(), 2)
            .await
            .expect("list");
        assert!(page.users.len() <= 2);
        seen.extend(page.users.iter().map(|u| u.username.clone()));
        match page.next {
            Some(next) => {
                assert_eq!(
                    Some(&next),
                    seen.last(),
                    "the cursor is the page's last name"
                );
                after = Some(next);
            }
            None => break,
        }
    }
    assert_eq!(seen, wanted);

    // An exact last page says there is no next one.
    let exact = store.list_users("b", None, 1).await.expect("list");
    assert_eq!((exact.users.len(), exact.next), (1, None));
    assert!(
        store
            .list_users("nobody", None, 10)
            .await
            .expect("list")
            .users
            .is_empty()
    );
    // A limit of 0 is taken as 1; a deleted user is no longer listed.
    assert_eq!(
        store
            .list_users("", None, 0)
            .await
            .expect("list")
            .users
            .len(),
        1
    );
    assert!(store.delete_user("alice").await.expect("delete"));
    let after_delete = store.list_users("alic", None, 10).await.expect("list");
    let listed: Vec<&str> = after_delete
        .users
        .iter()
        .map(|u| u.username.as_str())
        .collect();
    assert_eq!(listed, ["alicia"]);
}

pub async fn one_time_password_steps_are_taken_once_and_in_order<S: UserDirectory>(store: &S) {
    let keep = std::time::Duration::from_secs(120);
    let mut carol = user("carol");
    carol.otp_secret = Some("c2VjcmV0LXNlY3JldA".to_owned());
    carol.recovery_codes = vec!["$argon2id$one".to_owned(), "$argon2id$two".to_owned()];
    assert!(store.create_user(&carol).await.expect("create"));
    assert_eq!(
        store
            .user("carol")
            .await
            .expect("get")
            .expect("carol")
            .otp_secret,
        carol.otp_secret,
        "the secret is kept with the user"
    );
    assert_eq!(
        store
            .user("carol")
            .await
            .expect("get")
            .expect("carol")
            .recovery_codes,
        carol.recovery_codes,
        "and the recovery codes' hashes"
    );
    carol.passkeys = vec![crate::Passkey {
        id: "Y3JlZGVudGlhbA".to_owned(),
        public_key: "pQECAyYgASFYIA".to_owned(),
        sign_count: 7,
        backup_eligible: false,
        created_at: 1,
        last_used_at: 2,
    }];
    assert!(store.update_user(&carol).await.expect("update"));
    assert_eq!(
        store
            .user("carol")
            .await
            .expect("get")
            .expect("carol")
            .passkeys,
        carol.passkeys,
        "and the passkeys"
    );
    assert!(store.use_otp_step("carol", 1000, keep).await.expect("use"));
    assert!(
        !store
            .use_otp_step("carol", 1000, keep)
            .await
            .expect("again"),
        "a step is taken once"
    );
    assert!(
        !store
            .use_otp_step("carol", 999, keep)
            .await
            .expect("earlier"),
        "an earlier step after a later one is refused"
    );
    assert!(store.use_otp_step("carol", 1001, keep).await.expect("next"));
    let mut dave = user("dave");
    dave.otp_secret = carol.otp_secret.clone();
    assert!(store.create_user(&dave).await.expect("create"));
    assert!(
        store.use_otp_step("dave", 1000, keep).await.expect("use"),
        "steps are per user"
    );
}

/// A passkey of credential id `id`, for the tests.
fn passkey(id: &str) -> crate::Passkey {
    crate::Passkey {
        id: id.to_owned(),
        public_key: "pQECAyYgASFYIA".to_owned(),
        sign_count: 0,
        backup_eligible: false,
        created_at: 1,
        last_used_at: 0,
    }
}

pub async fn users_are_replaced_only_as_they_were_read<S: UserDirectory>(store: &S) {
    let mut dave = user("dave");
    dave.recovery_codes = vec!["$argon2id$one".to_owned(), "$argon2id$two".to_owned()];
    dave.passkeys = vec![passkey("ZGF2ZS0x")];
    assert!(store.create_user(&dave).await.expect("create"));
    let read = store.user("dave").await.expect("get").expect("dave");

    // Two changes made from the same read: the first is written, the second is not.
    let mut one = read.clone();
    one.recovery_codes.remove(0);
    let mut two = read.clone();
    two.passkeys.push(passkey("ZGF2ZS0y"));
    assert_eq!(
        store.replace_user(&read, &one).await.expect("replace"),
        Replaced::Done
    );
    assert_eq!(
        store.replace_user(&read, &two).await.expect("replace"),
        Replaced::Changed,
        "a record changed since it was read is not overwritten"
    );
    assert_eq!(store.user("dave").await.expect("get"), Some(one.clone()));
    // A field the read did not have (or lost) counts as a change too.
    let mut without = one.clone();
    without.passkeys.clear();
    assert_eq!(
        store.replace_user(&without, &two).await.expect("replace"),
        Replaced::Changed
    );
    let mut fewer = one.clone();
    fewer.otp_secret = Some("c2VjcmV0".to_owned());
    assert_eq!(
        store.replace_user(&fewer, &two).await.expect("replace"),
        Replaced::Changed
    );
    assert_eq!(store.user("dave").await.expect("get"), Some(one.clone()));

    assert_eq!(
        store
            .replace_user(&user("nobody"), &user("nobody"))
            .await
            .expect("replace"),
        Replaced::Missing
    );
    assert!(matches!(
        store.replace_user(&one, &user("erin")).await,
        Err(StoreError::Invalid { .. })
    ));
}

pub async fn concurrent_changes_to_a_user_are_all_kept<S: UserDirectory>(store: &S) {
    let mut frank = user("frank");
    frank.recovery_codes = (0..8).map(|i| format!("$argon2id${i}")).collect();
    assert!(store.create_user(&frank).await.expect("create"));
    // Eight requests at once, each adding a passkey of its own, and eight using the same
    // recovery code: every passkey is kept, and the code is used once.
    let adds = (0..8).map(|i| {
        crate::change_user(store, "frank", 10, move |u: &mut User| {
            u.passkeys.push(passkey(&format!("ZnJhbmst{i}")));
            Ok::<_, ()>(())
        })
    });
    let uses = (0..8).map(|_| {
        crate::change_user(store, "frank", 10, |u: &mut User| {
            let i = u
                .recovery_codes
                .iter()
                .position(|c| c == "$argon2id$3")
                .ok_or("used")?;
            u.recovery_codes.remove(i);
            Ok::<_, &str>(())
        })
    });
    let (added, used) = futures_util::future::join(
        futures_util::future::join_all(adds),
        futures_util::future::join_all(uses),
    )
    .await;
    for change in added {
        assert!(matches!(change, Ok(Changed::Done(..))), "{change:?}");
    }
    let used = used
        .iter()
        .filter(|change| matches!(change, Ok(Changed::Done(..))))
        .count();
    assert_eq!(used, 1, "a recovery code is used once");
    let frank = store.user("frank").await.expect("get").expect("frank");
    let mut ids: Vec<&str> = frank.passkeys.iter().map(|p| p.id.as_str()).collect();
    ids.sort_unstable();
    let wanted: Vec<String> = (0..8).map(|i| format!("ZnJhbmst{i}")).collect();
    assert_eq!(ids, wanted);
    assert_eq!(frank.recovery_codes.len(), 7);

    // A change that refuses writes nothing; one for a user who is not there says so.
    let refused = crate::change_user(store, "frank", 20, |u: &mut User| {
        u.passkeys.clear();
        Err::<(), _>("no")
    })
    .await
    .expect("change");
    assert!(matches!(refused, Changed::Refused("no")));
    assert_eq!(store.user("frank").await.expect("get"), Some(frank));
    let missing = crate::change_user(store, "nobody", 20, |_: &mut User| Ok::<_, ()>(()))
        .await
        .expect("change");
    assert!(matches!(missing, Changed::Missing));
}

pub async fn a_passkey_credential_id_belongs_to_one_user<S: UserDirectory>(store: &S) {
    let id = "Y3JlZC0x";
    assert_eq!(store.passkey_owner(id).await.expect("owner"), None);
    assert_eq!(
        store.claim_passkey(id, "gina").await.expect("claim"),
        Claimed::Now
    );
    assert_eq!(
        store.claim_passkey(id, "gina").await.expect("claim"),
        Claimed::Already
    );
    assert_eq!(
        store.claim_passkey(id, "hank").await.expect("claim"),
        Claimed::ByAnother,
        "another user cannot claim it"
    );
    assert_eq!(
        store.passkey_owner(id).await.expect("owner").as_deref(),
        Some("gina")
    );
    assert!(!store.release_passkey(id, "hank").await.expect("release"));
    assert!(store.release_passkey(id, "gina").await.expect("release"));
    assert!(!store.release_passkey(id, "gina").await.expect("again"));
    assert_eq!(
        store.claim_passkey(id, "hank").await.expect("claim"),
        Claimed::Now,
        "released, it is free"
    );
    // Ids that differ only past a long common start are different credentials.
    let long = "A".repeat(1364);
    let longer = format!("{long}B");
    assert_eq!(
        store.claim_passkey(&long, "gina").await.expect("claim"),
        Claimed::Now
    );
    assert_eq!(
        store.claim_passkey(&longer, "hank").await.expect("claim"),
        Claimed::Now
    );

    // Deleting a user gives up the claims of the passkeys in their record (only theirs).
    let mut hank = user("hank");
    hank.passkeys = vec![passkey(id), passkey(&long)];
    assert!(store.create_user(&hank).await.expect("create"));
    assert!(store.delete_user("hank").await.expect("delete"));
    assert_eq!(store.passkey_owner(id).await.expect("owner"), None);
    assert_eq!(
        store.passkey_owner(&long).await.expect("owner").as_deref(),
        Some("gina"),
        "another user's claim stays"
    );
    assert_eq!(
        store
            .passkey_owner(&longer)
            .await
            .expect("owner")
            .as_deref(),
        Some("hank"),
        "a claim of a passkey not in the record stays"
    );
}
