//! Last-use reports and the reporters that wrote them.

use super::session;
use crate::{Health, ReferenceToken, SessionAdmin, SessionRead, UsageReport, now_unix};

pub async fn touch_extends_but_never_shortens_or_revives<
    S: SessionRead + UsageReport + SessionAdmin,
>(
    store: &S,
) {
    let now = now_unix();
    let mut s = session("alice");
    s.last_used_at = now - 100;
    store.create(&s).await.expect("create");

    assert_eq!(store.touch(&[(s.id, now)]).await.expect("touch"), 1);
    let got = store.lookup(&s.id).await.expect("lookup").expect("live");
    assert_eq!(got.last_used_at, now);
    assert_eq!(got.expires_at(), now + 600);

    // An older report never moves the expiry back.
    assert_eq!(store.touch(&[(s.id, now - 50)]).await.expect("touch"), 0);
    let got = store.lookup(&s.id).await.expect("lookup").expect("live");
    assert_eq!(got.last_used_at, now);

    // Use never extends past the absolute lifetime.
    store.touch(&[(s.id, now + 3500)]).await.expect("touch");
    let got = store.lookup(&s.id).await.expect("lookup").expect("live");
    assert_eq!(got.expires_at(), s.max_expires_at);

    // A revoked session stays revoked whatever is reported later.
    assert!(store.revoke(&s.id).await.expect("revoke"));
    assert_eq!(store.touch(&[(s.id, now + 10)]).await.expect("touch"), 0);
    assert_eq!(store.lookup(&s.id).await.expect("lookup"), None);
    // Unknown sessions in a batch are skipped, the rest applied.
    let other = session("bob");
    store.create(&other).await.expect("create");
    let unknown = ReferenceToken::generate().session_id();
    let batch = [(unknown, now + 5), (other.id, now + 5)];
    assert_eq!(store.touch(&batch).await.expect("touch"), 1);
}

pub async fn reporters_are_remembered_by_last_report<S: UsageReport + Health>(store: &S) {
    let now = now_unix();
    store.report_seen("gw-a", now - 100).await.expect("a");
    store.report_seen("gw-b", now - 10).await.expect("b");
    store.report_seen("gw-a", now).await.expect("a again");
    // An older report never moves a reporter back.
    store.report_seen("gw-b", now - 50).await.expect("b late");
    let seen = store.reporters(now - 60).await.expect("reporters");
    let names: Vec<(&str, u64)> = seen
        .iter()
        .map(|r| (r.name.as_str(), r.last_seen))
        .collect();
    assert_eq!(names, [("gw-a", now), ("gw-b", now - 10)]);
    assert_eq!(store.reporters(now - 5).await.expect("recent").len(), 1);
}
