//! The admin console (`/console/` on the admin listener): pages for the people who end a stolen
//! session or lock an account, with the same actions as the admin API (through `admin`'s
//! functions, so both leave the same audit entries).
//!
//! Signing in: the console is a public client of the IdP itself (`tokengate-console`, PKCE
//! S256, redirect URI `{admin.public_url}/console/callback`). The code it gets back is redeemed
//! in process, with the same checks as `/oauth2/token`, and becomes a browser session in the
//! store issued to the console client: revocable, ended by a forced logout, idle after
//! `admin.console_idle_timeout`, and never a bearer token (its kind is refused everywhere a
//! bearer token is taken, and the IdP's single sign-on ignores sessions issued to a client).
//!
//! Every request re-reads the user and checks `admin.console_role`; every form posts a CSRF
//! token derived from the session cookie (which a page on another site can neither read nor
//! send: `HttpOnly`, `SameSite=Strict`, `Path=/console/`).
//!
//! * `auth`: signing in and out, the console session, the `Admin` every request is for, CSRF.
//! * `pages`: the pages (`GET`): overview, users, one user, clients, audit trail, style sheet.
//! * `actions`: the forms' `POST`s, through `admin`'s functions.
//! * `layout`: what every page shares: navigation, the message page, headers, redirects.

// A handler's error here is the page to show instead (`Result<Response, Response>`): as large as
// its success, and boxing it would buy nothing.
#![allow(clippy::result_large_err)]

use axum::Router;
use axum::response::Redirect;
use axum::routing::{get, post};

use crate::state::Live;

mod actions;
mod auth;
mod layout;
mod pages;

/// The console's pages and actions under `/console/`, on the admin listener; all but the
/// sign-in routes need a console session.
pub fn routes() -> Router<Live> {
    Router::new()
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(pages::overview))
        .route("/console/assets/style.css", get(pages::style))
        .route("/console/login", get(auth::login))
        .route("/console/callback", get(auth::callback))
        .route("/console/logout", post(auth::logout))
        .route(
            "/console/users",
            get(pages::users).post(actions::create_user),
        )
        .route("/console/user", get(pages::user).post(actions::user_action))
        .route("/console/clients", get(pages::clients))
        .route("/console/audit", get(pages::audit_trail))
}
