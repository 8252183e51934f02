//! Entry points for the fuzz targets (`fuzz/`) and the replay of their corpus: the store's
//! decoders, fed fields an attacker with write access to Redis could have planted.

use crate::{Event, SessionId};

/// Splits `data` at NUL bytes into alternating names and values.
fn fields(data: &[u8]) -> Vec<(String, String)> {
    let parts: Vec<String> = data
        .split(|b| *b == 0)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    parts
        .chunks(2)
        .map(|c| (c[0].clone(), c.get(1).cloned().unwrap_or_default()))
        .collect()
}

/// Decodes a session hash; a decoded session must be self-consistent.
pub fn session_record(data: &[u8]) {
    let Some(id) = SessionId::parse("AAAAAAAAAAAAAAAAAAAAAA") else {
        panic!("a valid session id was refused");
    };
    if let Some(s) = crate::redis::schema::decode_session(id, fields(data)) {
        assert!(s.expires_at() <= s.max_expires_at);
        let _ = s.is_live(crate::now_unix());
    }
}

/// Decodes an event stream entry; a decoded event names only well-formed session ids.
pub fn event_entry(data: &[u8]) {
    let map = fields(data)
        .into_iter()
        .map(|(k, v)| (k, redis::Value::BulkString(v.into_bytes())))
        .collect();
    let entry = redis::streams::StreamId {
        id: "1-1".to_owned(),
        map,
        milliseconds_elapsed_from_delivery: None,
        delivered_count: None,
    };
    if let Some(event) = crate::redis::events::decode_event(&entry) {
        assert!(matches!(
            event,
            Event::Revoked { .. } | Event::RolesChanged { .. } | Event::SubjectRevoked { .. }
        ));
        for s in event.sessions() {
            assert!(SessionId::parse(s.as_str()).is_some());
        }
    }
}
