//! The key schema and the Lua scripts that work on it: the only place that knows either.
//!
//! Keys (`tg` is the configurable prefix; `{...}` is the Redis Cluster hash tag):
//!
//! | key                          | type   | holds                                              |
//! |------------------------------|--------|----------------------------------------------------|
//! | `tg:s:{<session id>}`        | hash   | one session; expires with the session              |
//! | `tg:u:{<subject>}:sessions`  | zset   | the subject's session ids, scored by max expiry    |
//! | `tg:u:{<subject>}:roles`     | string | roles an administrator set (JSON array)            |
//! | `tg:u:{<subject>}:user`      | hash   | the user of that name (no expiry)                  |
//! | `tg:u:{<subject>}:otp`       | string | the last one-time-password step the user used (expires) |
//! | `tg:{users}`                 | zset   | every username (score 0, ordered by name: BYLEX)   |
//! | `tg:k:{<credential hash>}`   | string | the user who claimed that passkey credential id    |
//! | `tg:c:{<code id>}`           | hash   | one authorization code: `rec`, then `used`; expires |
//! | `tg:p:{<state id>}`         | string | a sign-in waiting for an upstream provider; expires |
//! | `tg:{events}`                | stream | revocations and role changes, bounded length       |
//! | `tg:{events}:seq`            | string | the sequence number of the newest event            |
//! | `tg:{events}:epoch`          | string | made once per data set: a new one means data loss  |
//! | `tg:{renewal}`               | zset   | session ids scored by their value token's `exp`    |
//! | `tg:{renewal}:lease`         | string | the IdP replica renewing value tokens (expires)    |
//! | `tg:l:{<login key>}:n`       | string | failed logins in the current window (expires)      |
//! | `tg:l:{<login key>}:lock`    | string | present while the login key is locked out          |
//! | `tg:{audit}`                 | stream | administrators' actions, bounded length (exact)    |
//! | `tg:{deliveries}`            | zset   | queued delivery ids, scored by when due (Unix ms)  |
//! | `tg:{deliveries}:items`      | hash   | each queued delivery's payload by id               |
//! | `tg:{reporters}`             | zset   | who reported last use, scored by when (bounded)    |
//!
//! `<subject>` and `<login key>` are base64url-encoded so that braces in a username cannot move the hash tag;
//! `<credential hash>` is 128 bits of the SHA-256 of a credential id (base64url), whose length
//! the key would otherwise follow.
//! Every script touches one key or keys of one hash tag; steps that span slots are ordered so
//! that repeating them after a failure is safe. A user spans two slots (its record and the
//! index): it is indexed before its record is written and unindexed after its record is
//! deleted, so a listed name may have no record (skipped when listing, set right by the next
//! create or delete of that name) but a record is never missing from the index. A passkey's
//! credential id is claimed before it is added to a record and released after it is removed,
//! so a credential id in a record is always claimed by its user; a claim whose passkey is not
//! in the record (cut short in between) blocks only that credential id for other users.
//!
//! The renewal schedule is written before a session (so no live session is missing from it)
//! and after each new value token; an entry whose session has ended stays until the scan for
//! due tokens meets it (at the latest one value-token lifetime after the session's end) and
//! removes it. A session held by a value token that is older than the schedule (written by an
//! earlier version, valid to the session's end) needs no renewal and is not in it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use redis::Script;

use crate::{CodeId, Session, SessionId, SessionKind, User, ValueToken};

/// The names of the keys, as the table above lays them out.
#[derive(Clone, Debug)]
pub(super) struct Keys {
    prefix: String,
    pub events: String,
    pub events_seq: String,
    pub events_epoch: String,
    pub renewal: String,
    pub renewal_lease: String,
    pub users: String,
    pub audit: String,
    pub reporters: String,
    pub deliveries: String,
    pub delivery_items: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
            events: format!("{prefix}:{{events}}"),
            events_seq: format!("{prefix}:{{events}}:seq"),
            events_epoch: format!("{prefix}:{{events}}:epoch"),
            renewal: format!("{prefix}:{{renewal}}"),
            renewal_lease: format!("{prefix}:{{renewal}}:lease"),
            users: format!("{prefix}:{{users}}"),
            audit: format!("{prefix}:{{audit}}"),
            reporters: format!("{prefix}:{{reporters}}"),
            deliveries: format!("{prefix}:{{deliveries}}"),
            delivery_items: format!("{prefix}:{{deliveries}}:items"),
        }
    }
    pub fn session(&self, id: &SessionId) -> String {
        format!("{}:s:{{{}}}", self.prefix, id.as_str())
    }
    pub fn code(&self, id: &CodeId) -> String {
        format!("{}:c:{{{}}}", self.prefix, id.as_str())
    }
    pub fn pending(&self, id: &CodeId) -> String {
        format!("{}:p:{{{}}}", self.prefix, id.as_str())
    }
    pub fn note(&self, id: &CodeId) -> String {
        format!("{}:n:{{{}}}", self.prefix, id.as_str())
    }
    pub fn login(&self, key: &str, what: &str) -> String {
        format!(
            "{}:l:{{{}}}:{what}",
            self.prefix,
            URL_SAFE_NO_PAD.encode(key.as_bytes())
        )
    }
    pub fn passkey(&self, credential_id: &str) -> String {
        format!(
            "{}:k:{{{}}}",
            self.prefix,
            crate::token::hash_id(credential_id)
        )
    }
    pub fn subject(&self, subject: &str, what: &str) -> String {
        format!(
            "{}:u:{{{}}}:{what}",
            self.prefix,
            URL_SAFE_NO_PAD.encode(subject.as_bytes())
        )
    }
}

/// The scripts, run by their hash and loaded into Redis when it does not know them.
pub(super) struct Scripts {
    pub create: Script,
    pub index_add: Script,
    pub touch: Script,
    pub revoke: Script,
    pub update: Script,
    pub replace: Script,
    pub lease: Script,
    pub release_lease: Script,
    pub publish: Script,
    pub head: Script,
    pub login_failed: Script,
    pub put_user: Script,
    pub replace_user: Script,
    pub claim_passkey: Script,
    pub release_passkey: Script,
    pub create_code: Script,
    pub redeem_code: Script,
    pub queue_delivery: Script,
    pub otp_step: Script,
    pub deliveries_due: Script,
}

impl Scripts {
    pub fn new() -> Self {
        Scripts {
            // KEYS[1] session; ARGV expire_at, then field/value pairs (`session_fields`).
            create: Script::new(
                r"redis.call('HSET', KEYS[1], unpack(ARGV, 2))
                  redis.call('EXPIREAT', KEYS[1], ARGV[1])
                  return 1",
            ),
            // KEYS[1] subject index; ARGV sid, max_exp, now. Prunes ended sessions and keeps the
            // index alive as long as its longest-lived session.
            index_add: Script::new(
                r"redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
                  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
                  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
                  if #last == 2 then
                    redis.call('EXPIREAT', KEYS[1], math.floor(tonumber(last[2])) + 1)
                  end
                  return 1",
            ),
            // KEYS[1] session; ARGV last_used. Never revives (missing key: 0), never shortens.
            touch: Script::new(
                r"local h = redis.call('HMGET', KEYS[1], 'last_used', 'idle', 'max_exp')
                  if not h[1] or not h[2] or not h[3] then return 0 end
                  local lu = tonumber(ARGV[1])
                  if lu <= tonumber(h[1]) then return 0 end
                  local exp = math.min(lu + tonumber(h[2]), tonumber(h[3]))
                  redis.call('HSET', KEYS[1], 'last_used', ARGV[1])
                  redis.call('EXPIREAT', KEYS[1], exp)
                  return 1",
            ),
            // KEYS[1] session. Deletes it and answers its subject, or nil if there was none.
            revoke: Script::new(
                r"local sub = redis.call('HGET', KEYS[1], 'sub')
                  if not sub then return false end
                  redis.call('DEL', KEYS[1])
                  return sub",
            ),
            // KEYS[1] session; ARGV roles, vt. Keeps the expiry; skips ended sessions.
            update: Script::new(
                r"if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
                  redis.call('HSET', KEYS[1], 'roles', ARGV[1], 'vt', ARGV[2])
                  return 1",
            ),
            // KEYS[1] session; ARGV vt it replaces, new vt. Only while the session holds the
            // token the new one was made from: a role change or another renewal wins.
            replace: Script::new(
                r"if redis.call('HGET', KEYS[1], 'vt') ~= ARGV[1] then return 0 end
                  redis.call('HSET', KEYS[1], 'vt', ARGV[2])
                  return 1",
            ),
            // KEYS[1] lease; ARGV holder, ms. Taken when free, kept (and extended) by its holder.
            lease: Script::new(
                r"local holder = redis.call('GET', KEYS[1])
                  if holder and holder ~= ARGV[1] then return 0 end
                  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
                  return 1",
            ),
            // KEYS[1] lease; ARGV holder. Deleted only by its holder.
            release_lease: Script::new(
                r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
                  return 0",
            ),
            // KEYS[1] seq, KEYS[2] stream; ARGV maxlen, type, sids, sub. One number per event,
            // in the same step as the event, so a reader can see a gap.
            publish: Script::new(
                r"local seq = redis.call('INCR', KEYS[1])
                  local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*',
                    'seq', seq, 'type', ARGV[2], 'sids', ARGV[3], 'sub', ARGV[4])
                  return {id, seq}",
            ),
            // KEYS[1] last step; ARGV step, ttl s. Taken only past the last one used.
            otp_step: Script::new(
                r"local last = tonumber(redis.call('GET', KEYS[1]) or '-1')
                  if tonumber(ARGV[1]) <= last then return 0 end
                  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
                  return 1",
            ),
            // KEYS[1] queue, KEYS[2] items; ARGV id, payload, due ms, most queued. A new id is
            // refused when the queue is full; a queued one is replaced (a retry).
            queue_delivery: Script::new(
                r"if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0
                     and redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[4]) then return 0 end
                  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
                  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
                  return 1",
            ),
            // KEYS[1] queue, KEYS[2] items; ARGV now ms, hold ms, limit. The due ones, each moved
            // to `now + hold`; an id without its payload leaves the queue.
            deliveries_due: Script::new(
                r"local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
                  local due = {}
                  for _, id in ipairs(ids) do
                    local payload = redis.call('HGET', KEYS[2], id)
                    if payload then
                      redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), id)
                      due[#due + 1] = id
                      due[#due + 1] = payload
                    else
                      redis.call('ZREM', KEYS[1], id)
                    end
                  end
                  return due",
            ),
            // KEYS[1] failure count, KEYS[2] lock; ARGV limit, window ms, lockout ms.
            login_failed: Script::new(
                r"local n = redis.call('INCR', KEYS[1])
                  if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
                  if n >= tonumber(ARGV[1]) then
                    redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
                    redis.call('DEL', KEYS[1])
                    return 1
                  end
                  return 0",
            ),
            // KEYS[1] user; ARGV '0' (create: must not exist) or '1' (replace: must exist),
            // then field/value pairs (`user_fields`). The record is replaced whole.
            put_user: Script::new(
                r"if redis.call('EXISTS', KEYS[1]) ~= tonumber(ARGV[1]) then return 0 end
                  redis.call('DEL', KEYS[1])
                  redis.call('HSET', KEYS[1], unpack(ARGV, 2))
                  return 1",
            ),
            // KEYS[1] user; ARGV n, then the n field/value pairs of the record as read, then
            // those of the new one. 1 replaced, 2 changed since read (nothing written), 0 none.
            replace_user: Script::new(
                r"if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
                  local n = tonumber(ARGV[1])
                  local have = redis.call('HGETALL', KEYS[1])
                  if #have ~= 2 * n then return 2 end
                  local want = {}
                  for i = 2, 2 * n, 2 do want[ARGV[i]] = ARGV[i + 1] end
                  for i = 1, #have, 2 do
                    if want[have[i]] ~= have[i + 1] then return 2 end
                  end
                  redis.call('DEL', KEYS[1])
                  redis.call('HSET', KEYS[1], unpack(ARGV, 2 * n + 2))
                  return 1",
            ),
            // KEYS[1] credential; ARGV username. 1 claimed now, 2 theirs already, 0 another's.
            claim_passkey: Script::new(
                r"local owner = redis.call('GET', KEYS[1])
                  if not owner then
                    redis.call('SET', KEYS[1], ARGV[1])
                    return 1
                  end
                  if owner == ARGV[1] then return 2 end
                  return 0",
            ),
            // KEYS[1] credential; ARGV username. Deletes the claim only if it is theirs.
            release_passkey: Script::new(
                r"if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
                  redis.call('DEL', KEYS[1])
                  return 1",
            ),
            // KEYS[1] code; ARGV ttl ms, record. Never overwrites a code.
            create_code: Script::new(
                r"if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
                  redis.call('HSET', KEYS[1], 'rec', ARGV[2])
                  redis.call('PEXPIRE', KEYS[1], ARGV[1])
                  return 1",
            ),
            // KEYS[1] code; ARGV session id. {0, nil} unknown, {1, record} first use (now spent,
            // remembering the session), {2, session} a replay. The expiry stays as it was.
            redeem_code: Script::new(
                r"local h = redis.call('HMGET', KEYS[1], 'rec', 'used')
                  if not h[1] then return {0, false} end
                  if h[2] then return {2, h[2]} end
                  redis.call('HSET', KEYS[1], 'used', ARGV[1])
                  return {1, h[1]}",
            ),
            // KEYS[1] seq, KEYS[2] stream, KEYS[3] epoch. The epoch (made on first use: a
            // Redis that lost its data makes a new one), the newest event's id and number.
            head: Script::new(
                r"local t = redis.call('TIME')
                  redis.call('SET', KEYS[3], t[1] .. '.' .. t[2], 'NX')
                  local epoch = redis.call('GET', KEYS[3])
                  local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
                  local seq = redis.call('GET', KEYS[1]) or '0'
                  if #last == 0 then return {epoch, '0-0', seq} end
                  return {epoch, last[1][1], seq}",
            ),
        }
    }
}

/// The fields of a session's hash (without its id, which is in the key).
pub(crate) fn session_fields(
    s: &Session,
) -> Result<Vec<(&'static str, String)>, serde_json::Error> {
    let mut fields = vec![
        ("sub", s.subject.clone()),
        ("roles", serde_json::to_string(&s.roles)?),
        ("vt", s.value_token.expose().to_owned()),
        ("created", s.created_at.to_string()),
        ("last_used", s.last_used_at.to_string()),
        ("idle", s.idle_timeout.to_string()),
        ("max_exp", s.max_expires_at.to_string()),
        ("method", s.method.clone()),
        ("kind", s.kind.as_str().to_owned()),
    ];
    if let Some(client) = &s.client_id {
        fields.push(("client", client.clone()));
    }
    Ok(fields)
}

/// A session from the fields of its hash; `None` unless every required field is there and
/// every field is well-formed. `client`, `method` and `kind` came later: a record without them
/// is an access session with no client and an empty method.
pub(crate) fn decode_session(id: SessionId, fields: Vec<(String, String)>) -> Option<Session> {
    let mut s = Session {
        id,
        subject: String::new(),
        roles: Vec::new(),
        value_token: ValueToken(String::new()),
        created_at: 0,
        last_used_at: 0,
        idle_timeout: 0,
        max_expires_at: 0,
        client_id: None,
        method: String::new(),
        kind: SessionKind::Access,
    };
    let mut seen = 0u8;
    for (name, value) in fields {
        let bit = match name.as_str() {
            "sub" => {
                s.subject = value;
                1
            }
            "roles" => {
                s.roles = serde_json::from_str(&value).ok()?;
                2
            }
            "vt" => {
                s.value_token = ValueToken(value);
                4
            }
            "created" => {
                s.created_at = value.parse().ok()?;
                8
            }
            "last_used" => {
                s.last_used_at = value.parse().ok()?;
                16
            }
            "idle" => {
                s.idle_timeout = value.parse().ok()?;
                32
            }
            "max_exp" => {
                s.max_expires_at = value.parse().ok()?;
                64
            }
            "client" => {
                s.client_id = Some(value);
                0
            }
            "method" => {
                s.method = value;
                0
            }
            "kind" => {
                s.kind = SessionKind::parse(&value)?;
                0
            }
            _ => 0,
        };
        seen |= bit;
    }
    (seen == 127).then_some(s)
}

/// The fields of a user's hash.
pub(crate) fn user_fields(u: &User) -> Result<Vec<(&'static str, String)>, serde_json::Error> {
    let mut fields = vec![
        ("name", u.username.clone()),
        ("roles", serde_json::to_string(&u.roles)?),
        ("disabled", if u.disabled { "1" } else { "0" }.to_owned()),
        ("created", u.created_at.to_string()),
        ("updated", u.updated_at.to_string()),
    ];
    if let Some(hash) = &u.password_hash {
        fields.push(("hash", hash.clone()));
    }
    if let Some(upstream) = &u.upstream {
        fields.push(("upstream", upstream.clone()));
    }
    if let Some(secret) = &u.otp_secret {
        fields.push(("otp", secret.clone()));
    }
    if !u.recovery_codes.is_empty() {
        fields.push(("recovery", serde_json::to_string(&u.recovery_codes)?));
    }
    if !u.passkeys.is_empty() {
        fields.push(("passkeys", serde_json::to_string(&u.passkeys)?));
    }
    Ok(fields)
}

/// A user from the fields of its hash; `None` unless every required field is there and
/// well-formed.
pub(crate) fn decode_user(fields: Vec<(String, String)>) -> Option<User> {
    let mut u = User {
        username: String::new(),
        password_hash: None,
        roles: Vec::new(),
        disabled: false,
        upstream: None,
        otp_secret: None,
        recovery_codes: Vec::new(),
        passkeys: Vec::new(),
        created_at: 0,
        updated_at: 0,
    };
    let mut seen = 0u8;
    for (name, value) in fields {
        let bit = match name.as_str() {
            "name" => {
                u.username = value;
                1
            }
            "roles" => {
                u.roles = serde_json::from_str(&value).ok()?;
                2
            }
            "disabled" => {
                u.disabled = match value.as_str() {
                    "0" => false,
                    "1" => true,
                    _ => return None,
                };
                4
            }
            "created" => {
                u.created_at = value.parse().ok()?;
                8
            }
            "updated" => {
                u.updated_at = value.parse().ok()?;
                16
            }
            "hash" => {
                u.password_hash = Some(value);
                0
            }
            "upstream" => {
                u.upstream = Some(value);
                0
            }
            "otp" => {
                u.otp_secret = Some(value);
                0
            }
            "recovery" => {
                u.recovery_codes = serde_json::from_str(&value).ok()?;
                0
            }
            "passkeys" => {
                u.passkeys = serde_json::from_str(&value).ok()?;
                0
            }
            _ => 0,
        };
        seen |= bit;
    }
    (seen == 31).then_some(u)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ReferenceToken;

    /// The Redis Cluster hash tag of a key: what stands between its first `{` and the next `}`.
    fn hash_tag(key: &str) -> &str {
        let open = key.find('{').expect("a key with a hash tag");
        let len = key[open + 1..].find('}').expect("a closed hash tag");
        &key[open + 1..open + 1 + len]
    }

    #[test]
    fn keys_are_laid_out_as_the_schema_says() {
        let keys = Keys::new("tg");
        let id = ReferenceToken::generate().session_id();
        assert_eq!(keys.session(&id), format!("tg:s:{{{id}}}"));
        assert_eq!(keys.subject("alice", "sessions"), "tg:u:{YWxpY2U}:sessions");
        assert_eq!(keys.subject("alice", "roles"), "tg:u:{YWxpY2U}:roles");
        assert_eq!(keys.login("alice", "n"), "tg:l:{YWxpY2U}:n");
        assert_eq!(keys.login("alice", "lock"), "tg:l:{YWxpY2U}:lock");
        assert_eq!(keys.events, "tg:{events}");
        assert_eq!(keys.events_seq, "tg:{events}:seq");
        assert_eq!(keys.events_epoch, "tg:{events}:epoch");
        assert_eq!(keys.renewal, "tg:{renewal}");
        assert_eq!(keys.renewal_lease, "tg:{renewal}:lease");
        assert_eq!(keys.subject("alice", "user"), "tg:u:{YWxpY2U}:user");
        assert_eq!(keys.users, "tg:{users}");
        let code = crate::CodeId::of_code("a code");
        assert_eq!(keys.code(&code), format!("tg:c:{{{code}}}"));
        assert_eq!(Keys::new("prod").session(&id), format!("prod:s:{{{id}}}"));
    }

    #[test]
    fn keys_one_script_touches_share_a_hash_tag() {
        let keys = Keys::new("tg");
        // publish and head: sequence number, stream and epoch.
        assert_eq!(hash_tag(&keys.events), hash_tag(&keys.events_seq));
        assert_eq!(hash_tag(&keys.events), hash_tag(&keys.events_epoch));
        // A user's record sits with its sessions' index and roles (one slot per subject).
        assert_eq!(
            hash_tag(&keys.subject("alice", "user")),
            hash_tag(&keys.subject("alice", "sessions"))
        );
        // login_failed: the count and the lock.
        assert_eq!(
            hash_tag(&keys.login("10.0.0.1", "n")),
            hash_tag(&keys.login("10.0.0.1", "lock"))
        );
    }

    #[test]
    fn braces_in_a_name_cannot_move_the_hash_tag() {
        let keys = Keys::new("tg");
        for name in ["a}b", "{x}", "}{", "al{ice"] {
            let encoded = URL_SAFE_NO_PAD.encode(name);
            assert_eq!(hash_tag(&keys.subject(name, "sessions")), encoded);
            assert_eq!(hash_tag(&keys.subject(name, "user")), encoded);
            assert_eq!(hash_tag(&keys.login(name, "lock")), encoded);
        }
    }

    fn fields() -> Vec<(String, String)> {
        [
            ("sub", "alice"),
            ("roles", r#"["orders:read"]"#),
            ("vt", "header.claims.signature"),
            ("created", "100"),
            ("last_used", "150"),
            ("idle", "600"),
            ("max_exp", "43300"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    #[test]
    fn a_session_decodes_from_every_field_of_its_hash() {
        let id = ReferenceToken::generate().session_id();
        let s = decode_session(id, fields()).expect("decodes");
        assert_eq!(s.id, id);
        assert_eq!(s.subject, "alice");
        assert_eq!(s.roles, ["orders:read"]);
        assert_eq!(s.value_token.expose(), "header.claims.signature");
        assert_eq!(
            (
                s.created_at,
                s.last_used_at,
                s.idle_timeout,
                s.max_expires_at
            ),
            (100, 150, 600, 43300)
        );
        // A record from before clients, methods and kinds were kept is an access session.
        assert_eq!(
            (s.client_id, s.method.as_str(), s.kind),
            (None, "", SessionKind::Access)
        );
        // A field this version does not know is left alone.
        let mut more = fields();
        more.push(("later".to_owned(), "x".to_owned()));
        assert!(decode_session(id, more).is_some());
    }

    #[test]
    fn a_session_round_trips_through_its_fields() {
        let id = ReferenceToken::generate().session_id();
        let mut s = decode_session(id, fields()).expect("decodes");
        s.client_id = Some("web".to_owned());
        s.method = "authorization_code".to_owned();
        s.kind = SessionKind::Browser;
        let written = session_fields(&s).expect("fields");
        let read = written
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        assert_eq!(decode_session(id, read), Some(s));
        // A kind this version does not know makes no session at all, never an access one.
        let mut unknown = fields();
        unknown.push(("kind".to_owned(), "refresh".to_owned()));
        assert!(decode_session(id, unknown).is_none());
    }

    #[test]
    fn a_user_round_trips_and_a_malformed_one_does_not_decode() {
        let mut user = User {
            username: "alice".to_owned(),
            password_hash: Some("$argon2id$hash".to_owned()),
            roles: vec!["r".to_owned()],
            disabled: true,
            upstream: Some("corp".to_owned()),
            otp_secret: Some("c2VjcmV0".to_owned()),
            recovery_codes: vec!["$argon2id$a".to_owned(), "$argon2id$b".to_owned()],
            passkeys: vec![crate::Passkey {
                id: "Y3JlZA".to_owned(),
                public_key: "pQECAyYgASFYIA".to_owned(),
                sign_count: 3,
                backup_eligible: true,
                created_at: 100,
                last_used_at: 150,
            }],
            created_at: 100,
            updated_at: 200,
        };
        let decode = |u: &User| {
            let fields = user_fields(u).expect("fields");
            decode_user(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
        };
        assert_eq!(decode(&user), Some(user.clone()));
        user.password_hash = None;
        user.upstream = None;
        user.otp_secret = None;
        user.recovery_codes.clear();
        user.passkeys.clear();
        user.disabled = false;
        assert_eq!(decode(&user), Some(user.clone()));
        let good: Vec<(String, String)> = user_fields(&user)
            .expect("fields")
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        for i in 0..good.len() {
            let mut missing = good.clone();
            let (name, _) = missing.remove(i);
            assert!(decode_user(missing).is_none(), "without {name}");
        }
        for (name, bad) in [("disabled", "yes"), ("roles", "r"), ("updated", "soon")] {
            let malformed = good
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        if k == name { bad.to_owned() } else { v.clone() },
                    )
                })
                .collect();
            assert!(decode_user(malformed).is_none(), "{name} = {bad}");
        }
    }

    #[test]
    fn a_session_with_a_field_missing_or_malformed_does_not_decode() {
        let id = ReferenceToken::generate().session_id();
        for i in 0..fields().len() {
            let mut missing = fields();
            let (name, _) = missing.remove(i);
            assert!(decode_session(id, missing).is_none(), "without {name}");
        }
        for (name, bad) in [("roles", "orders:read"), ("created", "-1"), ("idle", "1s")] {
            let mut malformed = fields();
            for (k, v) in &mut malformed {
                if k == name {
                    *v = bad.to_owned();
                }
            }
            assert!(decode_session(id, malformed).is_none(), "{name} = {bad}");
        }
    }
}
