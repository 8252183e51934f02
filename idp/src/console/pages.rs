//! The console's pages: what is going on, users, one user and their sessions, clients and the
//! audit trail, and the console's style sheet.

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use tokengate_store::{
    AuditTrail, Health, SessionAdmin, SessionKind, StoreError, UserDirectory, now_unix,
};

use super::auth::Admin;
use super::layout::{Nav, message, page, stored};
use crate::admin;
use crate::config::CONSOLE_CLIENT_ID;
use crate::state::AppState;

/// Users per page.
const USERS_PAGE: usize = 25;
/// Audit entries per page.
const AUDIT_PAGE: usize = 50;
/// A gateway counts as active if it reported last use this recently.
const ACTIVE_GATEWAY_SECS: u64 = 300;

const CONSOLE_STYLE: &str = include_str!("../../assets/console.css");

pub(super) async fn style() -> Response {
    let css = [include_str!("../../assets/style.css"), CONSOLE_STYLE].concat();
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        css,
    )
        .into_response()
}

#[derive(Template)]
#[template(path = "console/overview.html")]
struct OverviewPage {
    nav: Option<Nav>,
    window: String,
    sign_ins: String,
    failed_sign_ins: String,
    totals: crate::metrics::Totals,
    gateways: Vec<(String, String)>,
    active_minutes: u64,
}

struct UserRow {
    username: String,
    link: String,
    roles: String,
    status: &'static str,
}

#[derive(Template)]
#[template(path = "console/users.html")]
struct UsersPage<'a> {
    nav: Option<Nav>,
    csrf: &'a str,
    prefix: &'a str,
    users: Vec<UserRow>,
    next: Option<String>,
    notice: Option<&'a str>,
    error: Option<&'a str>,
}

struct SessionRow {
    id: String,
    created: String,
    last_used: String,
    expires: String,
    client: String,
    method: String,
}

#[derive(Template)]
#[template(path = "console/user.html")]
struct UserPage<'a> {
    nav: Option<Nav>,
    csrf: &'a str,
    username: &'a str,
    status: &'static str,
    disabled: bool,
    upstream: Option<&'a str>,
    roles: String,
    sessions: Vec<SessionRow>,
    passkeys: Vec<PasskeyRow>,
    notice: Option<&'a str>,
    error: Option<&'a str>,
}

struct PasskeyRow {
    id: String,
    label: String,
    synced: bool,
    created: String,
    last_used: String,
}

struct ClientRow {
    id: String,
    builtin: bool,
    kind: &'static str,
    grants: String,
    redirect_uris: Vec<String>,
}

#[derive(Template)]
#[template(path = "console/clients.html")]
struct ClientsPage {
    nav: Option<Nav>,
    clients: Vec<ClientRow>,
}

struct AuditRow {
    when: String,
    actor: String,
    action: String,
    target: String,
    address: String,
}

#[derive(Template)]
#[template(path = "console/audit.html")]
struct AuditPage {
    nav: Option<Nav>,
    entries: Vec<AuditRow>,
    next: Option<String>,
}

/// A page's query; what does not parse counts as no query at all.
fn query_of<T: serde::de::DeserializeOwned + Default>(query: Option<&str>) -> T {
    serde_urlencoded::from_str(query.unwrap_or("")).unwrap_or_default()
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn format_time(unix: u64) -> String {
    let (days, secs) = ((unix / 86_400) as i64, unix % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// `GET /console/`: what is going on.
pub(super) async fn overview(
    State(state): State<AppState>,
    admin: Admin,
) -> Result<Response, Response> {
    let now = now_unix();
    let since = now.saturating_sub(ACTIVE_GATEWAY_SECS);
    let reporters = stored(&state, state.store.reporters(since).await)?;
    let totals = state.metrics.totals();
    let (sign_ins, failed_sign_ins, window) = match state.activity.per_minute(totals) {
        Some((rates, over)) => (
            rates.sign_ins.to_string(),
            rates.failed_sign_ins.to_string(),
            format!("Rates measured over the last {} s.", over.as_secs()),
        ),
        None => (
            "–".to_owned(),
            "–".to_owned(),
            "Rates appear once this IdP has run for a few seconds.".to_owned(),
        ),
    };
    let gateways = reporters
        .into_iter()
        .map(|r| {
            let ago = now.saturating_sub(r.last_seen);
            (r.name, format!("{ago} s ago"))
        })
        .collect();
    Ok(page(
        StatusCode::OK,
        &OverviewPage {
            nav: admin.nav(),
            window,
            sign_ins,
            failed_sign_ins,
            totals,
            gateways,
            active_minutes: ACTIVE_GATEWAY_SECS / 60,
        },
    ))
}

pub(super) fn user_link(username: &str, done: Option<&str>) -> String {
    let mut params = vec![("name", username)];
    if let Some(done) = done {
        params.push(("done", done));
    }
    format!(
        "/console/user?{}",
        serde_urlencoded::to_string(params).unwrap_or_default()
    )
}

/// What a finished action says, by its code in the redirect (never text from the request).
fn notice(done: Option<&str>) -> Option<&'static str> {
    Some(match done? {
        "created" => "User created.",
        "ended" => "The session was ended.",
        "ended-all" => "Every session of this user was ended.",
        "roles" => "Roles saved; live sessions have the new roles.",
        "password" => "Password set.",
        "disabled" => "User disabled; every session was ended.",
        "enabled" => "User enabled.",
        "passkey-removed" => "Passkey removed.",
        _ => return None,
    })
}

#[derive(serde::Deserialize, Default)]
struct UsersQuery {
    #[serde(default)]
    prefix: String,
    after: Option<String>,
}

/// `GET /console/users?prefix=&after=`: users by name, a page at a time.
pub(super) async fn users(
    State(state): State<AppState>,
    admin: Admin,
    RawQuery(query): RawQuery,
) -> Result<Response, Response> {
    let query: UsersQuery = query_of(query.as_deref());
    users_page(&state, &admin, &query.prefix, query.after.as_deref(), None).await
}

pub(super) async fn users_page(
    state: &AppState,
    admin: &Admin,
    prefix: &str,
    after: Option<&str>,
    error: Option<&str>,
) -> Result<Response, Response> {
    let long = |s: &str| s.len() > crate::config::MAX_SUBJECT_LEN;
    let (prefix, after) = if long(prefix) || after.is_some_and(long) {
        ("", None)
    } else {
        (prefix, after.filter(|a| !a.is_empty()))
    };
    let listed = stored(
        state,
        state.store.list_users(prefix, after, USERS_PAGE).await,
    )?;
    let users = listed
        .users
        .iter()
        .map(|u| UserRow {
            username: u.username.clone(),
            link: user_link(&u.username, None),
            roles: u.roles.join(" "),
            status: if u.disabled { "disabled" } else { "active" },
        })
        .collect();
    let next = listed.next.map(|next| {
        let q = serde_urlencoded::to_string([("prefix", prefix), ("after", next.as_str())]);
        format!("/console/users?{}", q.unwrap_or_default())
    });
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    Ok(page(
        status,
        &UsersPage {
            nav: admin.nav(),
            csrf: admin.csrf(),
            prefix,
            users,
            next,
            notice: None,
            error,
        },
    ))
}

#[derive(serde::Deserialize, Default)]
struct UserQuery {
    #[serde(default)]
    name: String,
    done: Option<String>,
}

/// `GET /console/user?name=`: one user and their live sessions.
pub(super) async fn user(
    State(state): State<AppState>,
    admin: Admin,
    RawQuery(query): RawQuery,
) -> Result<Response, Response> {
    let query: UserQuery = query_of(query.as_deref());
    user_page(
        &state,
        &admin,
        &query.name,
        notice(query.done.as_deref()),
        None,
    )
    .await
}

pub(super) async fn user_page(
    state: &AppState,
    admin: &Admin,
    username: &str,
    notice: Option<&str>,
    error: Option<&str>,
) -> Result<Response, Response> {
    let found = match admin::subject(username) {
        Ok(name) => stored(state, state.store.user(name).await)?,
        Err(_) => None,
    };
    let Some(user) = found else {
        return Err(message(
            StatusCode::NOT_FOUND,
            admin.nav(),
            "No such user",
            "There is no user of that name.",
            Some(("/console/users", "All users")),
        ));
    };
    let mut sessions = stored(state, state.store.sessions(&user.username).await)?;
    sessions.sort_by_key(|s| std::cmp::Reverse(s.created_at));
    let rows = sessions
        .iter()
        .map(|s| SessionRow {
            id: s.id.to_string(),
            created: format_time(s.created_at),
            last_used: format_time(s.last_used_at),
            expires: format_time(s.expires_at()),
            client: match (&s.client_id, s.kind) {
                (Some(c), _) => c.clone(),
                (None, SessionKind::Browser) => "sign-in page (single sign-on)".to_owned(),
                (None, SessionKind::Access) => "–".to_owned(),
            },
            method: if s.method.is_empty() {
                "–".to_owned()
            } else {
                s.method.clone()
            },
        })
        .collect();
    let passkeys = user
        .passkeys
        .iter()
        .map(|p| PasskeyRow {
            id: p.id.clone(),
            label: p.id.chars().take(12).collect(),
            synced: p.backup_eligible,
            created: format_time(p.created_at),
            last_used: if p.last_used_at == 0 {
                "never".to_owned()
            } else {
                format_time(p.last_used_at)
            },
        })
        .collect();
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    Ok(page(
        status,
        &UserPage {
            nav: admin.nav(),
            csrf: admin.csrf(),
            username: &user.username,
            status: if user.disabled { "Disabled" } else { "Active" },
            disabled: user.disabled,
            upstream: user.upstream.as_deref(),
            roles: user.roles.join(" "),
            sessions: rows,
            passkeys,
            notice,
            error,
        },
    ))
}

/// `GET /console/clients`: the registered clients, read-only.
pub(super) async fn clients(State(state): State<AppState>, admin: Admin) -> Response {
    let clients = state
        .clients
        .all()
        .into_iter()
        .map(|c| ClientRow {
            id: c.id.clone(),
            builtin: c.id == CONSOLE_CLIENT_ID,
            kind: if c.is_public() {
                "public"
            } else {
                "confidential"
            },
            grants: c
                .grants
                .iter()
                .map(|g| g.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            redirect_uris: c.redirect_uris.clone(),
        })
        .collect();
    page(
        StatusCode::OK,
        &ClientsPage {
            nav: admin.nav(),
            clients,
        },
    )
}

#[derive(serde::Deserialize, Default)]
struct AuditQuery {
    before: Option<String>,
}

/// `GET /console/audit?before=`: the audit trail, newest first.
pub(super) async fn audit_trail(
    State(state): State<AppState>,
    admin: Admin,
    RawQuery(query): RawQuery,
) -> Result<Response, Response> {
    let query: AuditQuery = query_of(query.as_deref());
    let before = query.before.filter(|b| !b.is_empty() && b.len() <= 64);
    let trail = match state.store.audit(before.as_deref(), AUDIT_PAGE).await {
        Err(StoreError::Invalid { .. }) => tokengate_store::AuditPage::default(),
        answer => stored(&state, answer)?,
    };
    let entries = trail
        .entries
        .into_iter()
        .map(|e| AuditRow {
            when: format_time(e.at),
            actor: e.actor,
            action: e.action,
            target: e.target,
            address: e.address,
        })
        .collect();
    let next = trail.next.map(|next| {
        let q = serde_urlencoded::to_string([("before", next.as_str())]);
        format!("/console/audit?{}", q.unwrap_or_default())
    });
    Ok(page(
        StatusCode::OK,
        &AuditPage {
            nav: admin.nav(),
            entries,
            next,
        },
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn times_are_shown_in_utc() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_time(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_time(1_795_000_000), "2026-11-18 11:06:40 UTC");
    }

    #[test]
    fn what_the_console_shows_is_escaped() {
        let evil = "<script>alert('x')</script>\"";
        let html = UserPage {
            nav: Some(Nav {
                admin: evil.to_owned(),
                csrf: "c".to_owned(),
            }),
            csrf: "c",
            username: evil,
            status: "Active",
            disabled: false,
            upstream: None,
            roles: evil.to_owned(),
            sessions: vec![],
            passkeys: vec![PasskeyRow {
                id: evil.to_owned(),
                label: evil.to_owned(),
                synced: true,
                created: evil.to_owned(),
                last_used: evil.to_owned(),
            }],
            notice: None,
            error: None,
        }
        .render()
        .unwrap();
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("'x'"));
        assert!(html.contains("&#60;script&#62;") || html.contains("&lt;script&gt;"));
    }
}
