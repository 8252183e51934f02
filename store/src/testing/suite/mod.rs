//! The contract every store implementation passes. Each function is one behaviour.
//!
//! One file per concern, as the traits are; the behaviours are re-exported here, where
//! [`store_contract_tests!`](crate::store_contract_tests) finds them.

// Each behaviour of the contract is named by its function; the names are its documentation.
#![allow(missing_docs)]

mod audit;
mod codes;
mod deliveries;
mod events;
mod pending;
mod renewal;
mod sessions;
mod throttle;
mod usage;
mod users;

pub use self::audit::{audit_is_read_newest_first_in_pages, audit_trail_is_bounded};
pub use self::codes::codes_are_redeemed_once_then_replayed_then_forgotten;
pub use self::deliveries::deliveries_come_due_are_held_requeued_and_finished;
pub use self::events::{
    blocked_reader_wakes_on_event, events_resume_from_cursor_at_least_once,
    trimmed_stream_is_reported_as_gap,
};
pub use self::pending::{
    notes_are_kept_replaced_once_only_and_forgotten, pending_records_are_taken_once_then_forgotten,
};
pub use self::renewal::{
    one_holder_at_a_time_has_the_renewal_lease, renewed_value_tokens_replace_without_an_event,
    value_tokens_come_due_by_expiry,
};
pub use self::sessions::{
    create_then_lookup, ended_sessions_are_not_found, revoke_publishes_once,
    revoke_subject_ends_every_session_of_that_subject_only, sessions_keep_client_method_and_kind,
    sessions_lists_live_sessions, subject_roles_round_trip,
    update_sessions_replaces_roles_of_live_sessions,
};
pub use self::throttle::login_failures_lock_out_per_key;
pub use self::usage::{
    reporters_are_remembered_by_last_report, touch_extends_but_never_shortens_or_revives,
};
pub use self::users::{
    a_passkey_credential_id_belongs_to_one_user, concurrent_changes_to_a_user_are_all_kept,
    one_time_password_steps_are_taken_once_and_in_order,
    users_are_created_once_read_updated_and_deleted, users_are_listed_by_name_in_pages,
    users_are_replaced_only_as_they_were_read,
};

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::{
    AuthCode, Event, EventStream, ReferenceToken, Session, SessionId, SessionKind, TokenRenewal,
    User, ValueToken, now_unix,
};

/// A session that is live now, for `subject`.
pub fn session(subject: &str) -> Session {
    let now = now_unix();
    Session {
        id: ReferenceToken::generate().session_id(),
        subject: subject.to_owned(),
        roles: vec!["orders:read".to_owned()],
        value_token: ValueToken(format!("header.{subject}.signature")),
        created_at: now,
        last_used_at: now,
        idle_timeout: 600,
        max_expires_at: now + 3600,
        client_id: None,
        method: "password".to_owned(),
        kind: SessionKind::Access,
    }
}

/// A user with a password, created now.
pub fn user(username: &str) -> User {
    let now = now_unix();
    User {
        username: username.to_owned(),
        password_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned()),
        roles: vec!["orders:read".to_owned()],
        disabled: false,
        upstream: None,
        otp_secret: None,
        recovery_codes: Vec::new(),
        passkeys: Vec::new(),
        created_at: now,
        updated_at: now,
    }
}

/// What a code for `subject` stands for.
pub fn auth_code(subject: &str) -> AuthCode {
    AuthCode {
        client_id: "web".to_owned(),
        redirect_uri: "http://127.0.0.1:3000/callback".to_owned(),
        code_challenge: Some("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".to_owned()),
        nonce: Some("n-0S6_WzA2Mj".to_owned()),
        scope: Some("openid orders:read".to_owned()),
        subject: subject.to_owned(),
        roles: vec!["orders:read".to_owned()],
        auth_time: now_unix(),
        method: "password".to_owned(),
    }
}

/// A token shaped like a value token (unsigned: the store does not verify) expiring at `exp`.
pub fn token_expiring(subject: &str, exp: u64) -> ValueToken {
    let claims = format!(r#"{{"sub":"{subject}","exp":{exp}}}"#);
    ValueToken(format!(
        "eyJhbGciOiJFZERTQSJ9.{}.c2lnbmF0dXJl",
        URL_SAFE_NO_PAD.encode(claims)
    ))
}

/// A live session of `subject` whose value token expires at `exp`.
pub(super) fn session_expiring(subject: &str, exp: u64) -> Session {
    let mut s = session(subject);
    s.value_token = token_expiring(subject, exp);
    s
}

pub(super) async fn due_ids<S: TokenRenewal>(
    store: &S,
    before: u64,
    skip: usize,
    limit: usize,
) -> Vec<SessionId> {
    store
        .value_tokens_due(before, skip, limit)
        .await
        .expect("due")
        .into_iter()
        .map(|s| s.id)
        .collect()
}

pub(super) async fn events_since<S: EventStream>(
    store: &S,
    cursor: &crate::EventCursor,
) -> Vec<Event> {
    store
        .read_events(cursor, Duration::from_millis(10))
        .await
        .expect("read events")
        .events
}

/// Generates one `#[tokio::test]` per contract behaviour. `$make` is a closure from the
/// maximum event count to `(store, guard)`; the guard lives as long as the test.
#[macro_export]
macro_rules! store_contract_tests {
    ($make:expr) => {
        $crate::store_contract_tests!(@each $make;
            create_then_lookup,
            ended_sessions_are_not_found,
            touch_extends_but_never_shortens_or_revives,
            revoke_publishes_once,
            revoke_subject_ends_every_session_of_that_subject_only,
            sessions_lists_live_sessions,
            update_sessions_replaces_roles_of_live_sessions,
            value_tokens_come_due_by_expiry,
            renewed_value_tokens_replace_without_an_event,
            one_holder_at_a_time_has_the_renewal_lease,
            subject_roles_round_trip,
            events_resume_from_cursor_at_least_once,
            blocked_reader_wakes_on_event,
            login_failures_lock_out_per_key,
            sessions_keep_client_method_and_kind,
            users_are_created_once_read_updated_and_deleted,
            users_are_listed_by_name_in_pages,
            codes_are_redeemed_once_then_replayed_then_forgotten,
            audit_is_read_newest_first_in_pages,
            reporters_are_remembered_by_last_report,
            pending_records_are_taken_once_then_forgotten,
            notes_are_kept_replaced_once_only_and_forgotten,
            deliveries_come_due_are_held_requeued_and_finished,
            one_time_password_steps_are_taken_once_and_in_order,
            users_are_replaced_only_as_they_were_read,
            concurrent_changes_to_a_user_are_all_kept,
            a_passkey_credential_id_belongs_to_one_user
        );
        #[tokio::test]
        async fn trimmed_stream_is_reported_as_gap() {
            let (store, _guard) = ($make)(10);
            $crate::testing::suite::trimmed_stream_is_reported_as_gap(&store, 10).await;
        }
        #[tokio::test]
        async fn audit_trail_is_bounded() {
            let (store, _guard) = ($make)(10);
            $crate::testing::suite::audit_trail_is_bounded(&store, 10).await;
        }
    };
    (@each $make:expr; $($name:ident),*) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (store, _guard) = ($make)(10_000);
                $crate::testing::suite::$name(&store).await;
            }
        )*
    };
}
