//! The event stream: publishing revocations and role changes, its head, and the reader that
//! blocks on it with a connection of its own and tells a gap (trimmed stream, lost data) from
//! a quiet stream.

use std::time::Duration;

use redis::Value;
use redis::aio::ConnectionLike;
use redis::streams::{StreamId, StreamReadReply};
use tokio::sync::Mutex;

use super::connection::{Con, Reader, RedisOptions, Source};
use super::schema::{Keys, Scripts};
use crate::{Event, EventBatch, EventCursor, SessionId, StoreError};

/// Appends `event` to the stream with the next sequence number, keeping about `max_len`.
pub(super) async fn publish(
    con: &Con,
    keys: &Keys,
    scripts: &Scripts,
    max_len: usize,
    event: &Event,
) -> Result<(), StoreError> {
    let (kind, sids, subject) = encode_event(event);
    let mut invocation = scripts.publish.prepare_invoke();
    invocation
        .key(&keys.events_seq)
        .key(&keys.events)
        .arg(max_len)
        .arg(kind)
        .arg(&sids)
        .arg(subject);
    // The change itself is already made; a gateway that misses this event keeps serving the
    // session from cache (up to max_staleness), so try hard before giving up.
    let mut delay = Duration::from_millis(50);
    let mut attempt = 0;
    loop {
        let mut con = con.clone();
        match invocation.invoke_async::<Value>(&mut con).await {
            Ok(_) => return Ok(()),
            Err(e) if attempt < 3 => {
                tracing::warn!(error = %e, attempt, "publishing a store event failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            Err(e) => return Err(StoreError::unavailable(e)),
        }
    }
}

/// The position just after the newest event, in the data set's epoch.
pub(super) async fn head(
    con: &mut impl ConnectionLike,
    keys: &Keys,
    scripts: &Scripts,
) -> Result<EventCursor, StoreError> {
    let (epoch, id, seq): (String, String, String) = scripts
        .head
        .key(&keys.events_seq)
        .key(&keys.events)
        .key(&keys.events_epoch)
        .invoke_async(con)
        .await
        .map_err(StoreError::unavailable)?;
    let seq = seq.parse().map_err(|_| StoreError::Corrupt {
        what: "event sequence number",
    })?;
    Ok(EventCursor { epoch, id, seq })
}

/// Reads the stream on a connection of its own, so a blocked read never delays lookups, and
/// whose response timeout fits each read's wait.
pub(super) struct EventReader {
    source: Source,
    reader: Mutex<Option<Reader>>,
}

impl EventReader {
    pub(super) fn new(source: Source) -> Self {
        EventReader {
            source,
            reader: Mutex::new(None),
        }
    }

    /// Events after `after`, waiting up to `wait` for one to arrive.
    pub(super) async fn read(
        &self,
        keys: &Keys,
        scripts: &Scripts,
        options: &RedisOptions,
        after: &EventCursor,
        wait: Duration,
    ) -> Result<EventBatch, StoreError> {
        let mut slot = self.reader.lock().await;
        let fresh = self.connection(&mut slot, options, wait).await?;
        let Some(con) = slot.as_mut() else {
            return Err(StoreError::Config("no reader connection".to_owned()));
        };
        let result = match con {
            Reader::Single(con) => {
                con.set_response_timeout(wait + options.response_timeout);
                read_on(con, keys, scripts, fresh, after, wait).await
            }
            Reader::Cluster(con, _) => read_on(con, keys, scripts, fresh, after, wait).await,
        };
        if matches!(result, Err(StoreError::Unavailable(_))) {
            // Start over on a new connection (and check the stream's head) next time.
            *slot = None;
        }
        result
    }

    /// The reader's connection, (re)made when needed (on a cluster, also when a read asks to
    /// wait longer than its response timeout allows). `true` when it is new, which is when the
    /// stream may have been reset behind the reader's back.
    async fn connection(
        &self,
        slot: &mut Option<Reader>,
        options: &RedisOptions,
        wait: Duration,
    ) -> Result<bool, StoreError> {
        let needed = wait + options.response_timeout;
        match slot {
            Some(Reader::Single(_)) => return Ok(false),
            Some(Reader::Cluster(_, timeout)) if *timeout >= needed => return Ok(false),
            _ => {}
        }
        *slot = Some(self.source.reader(options, needed).await?);
        Ok(true)
    }
}

/// One read of the stream; `fresh` when `con` is new.
async fn read_on(
    con: &mut impl ConnectionLike,
    keys: &Keys,
    scripts: &Scripts,
    fresh: bool,
    after: &EventCursor,
    wait: Duration,
) -> Result<EventBatch, StoreError> {
    if fresh {
        // A new connection may mean a restarted or failed-over Redis that lost data, or
        // whose stream is older than our position (reading on would then wait forever).
        let head = head(con, keys, scripts).await?;
        let (newest, ours) = (stream_id(&head.id), stream_id(&after.id));
        let behind = match (newest, ours) {
            (Some(h), Some(a)) => h < a,
            _ => true,
        };
        // Events were published after our position, yet the stream holds nothing newer
        // than it: they were trimmed away.
        let trimmed = head.seq > after.seq && newest <= ours;
        if head.epoch != after.epoch || behind || trimmed || head.seq < after.seq {
            return Ok(EventBatch {
                events: Vec::new(),
                cursor: head,
                gap: true,
            });
        }
    }
    let wait_ms = wait.as_millis().clamp(1, u128::from(u32::MAX)) as u64;
    let reply: Option<StreamReadReply> = redis::cmd("XREAD")
        .arg("COUNT")
        .arg(512)
        .arg("BLOCK")
        .arg(wait_ms)
        .arg("STREAMS")
        .arg(&keys.events)
        .arg(&after.id)
        .query_async(con)
        .await
        .map_err(StoreError::unavailable)?;
    let mut batch = EventBatch {
        events: Vec::new(),
        cursor: after.clone(),
        gap: false,
    };
    let entries = reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids);
    for entry in entries {
        let seq: Option<u64> = entry.get::<String>("seq").and_then(|s| s.parse().ok());
        match seq {
            // Delivered before (at-least-once): nothing new.
            Some(seq) if seq <= batch.cursor.seq => {}
            Some(seq) => {
                if seq != batch.cursor.seq + 1 {
                    batch.gap = true;
                }
                match decode_event(&entry) {
                    Some(event) => batch.events.push(event),
                    None => batch.gap = true,
                }
                batch.cursor.seq = seq;
            }
            // An entry this version did not write: we cannot tell what it revoked.
            None => batch.gap = true,
        }
        batch.cursor.id = entry.id;
    }
    Ok(batch)
}

/// A stream entry id, compared as Redis does.
fn stream_id(text: &str) -> Option<(u64, u64)> {
    let (ms, seq) = text.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// The `type`, `sids` and `sub` fields of an event's entry (`seq` is the script's).
fn encode_event(event: &Event) -> (&'static str, String, &str) {
    let (kind, subject) = match event {
        Event::Revoked { .. } => ("revoked", ""),
        Event::RolesChanged { .. } => ("roles", ""),
        Event::SubjectRevoked { subject, .. } => ("subject_revoked", subject.as_str()),
    };
    let sids = event
        .sessions()
        .iter()
        .map(SessionId::as_str)
        .collect::<Vec<_>>()
        .join(" ");
    (kind, sids, subject)
}

/// An event from its entry; `None` for a type or shape this version does not write.
pub(crate) fn decode_event(entry: &StreamId) -> Option<Event> {
    let kind: String = entry.get("type")?;
    let sids: String = entry.get("sids")?;
    let sessions = sids
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(SessionId::parse)
        .collect::<Option<Vec<_>>>()?;
    match kind.as_str() {
        "revoked" => {
            let [session] = <[SessionId; 1]>::try_from(sessions).ok()?;
            Some(Event::Revoked { session })
        }
        "roles" => Some(Event::RolesChanged { sessions }),
        "subject_revoked" => Some(Event::SubjectRevoked {
            subject: entry.get("sub")?,
            sessions,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ReferenceToken;

    fn entry(kind: &str, sids: &str, subject: &str) -> StreamId {
        let map = [
            ("seq", "1"),
            ("type", kind),
            ("sids", sids),
            ("sub", subject),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Value::BulkString(v.as_bytes().to_vec())))
        .collect();
        StreamId {
            id: "1-1".to_owned(),
            map,
            milliseconds_elapsed_from_delivery: None,
            delivered_count: None,
        }
    }

    fn ids(n: usize) -> Vec<SessionId> {
        (0..n)
            .map(|_| ReferenceToken::generate().session_id())
            .collect()
    }

    #[test]
    fn events_decode_as_they_were_encoded() {
        let [one, two] = <[SessionId; 2]>::try_from(ids(2)).expect("two ids");
        for event in [
            Event::Revoked { session: one },
            Event::RolesChanged {
                sessions: vec![one, two],
            },
            Event::SubjectRevoked {
                subject: "alice".to_owned(),
                sessions: vec![one, two],
            },
            Event::SubjectRevoked {
                subject: "bob".to_owned(),
                sessions: Vec::new(),
            },
        ] {
            let (kind, sids, subject) = encode_event(&event);
            assert_eq!(decode_event(&entry(kind, &sids, subject)), Some(event));
        }
    }

    #[test]
    fn an_entry_this_version_did_not_write_does_not_decode() {
        let [one, two] = <[SessionId; 2]>::try_from(ids(2)).expect("two ids");
        let both = format!("{one} {two}");
        assert_eq!(decode_event(&entry("renamed", one.as_str(), "")), None);
        assert_eq!(decode_event(&entry("revoked", &both, "")), None);
        assert_eq!(decode_event(&entry("revoked", "", "")), None);
        assert_eq!(decode_event(&entry("roles", "not-an-id", "")), None);
    }

    #[test]
    fn stream_ids_compare_as_redis_does() {
        assert_eq!(stream_id("1700000000000-3"), Some((1_700_000_000_000, 3)));
        assert!(stream_id("1-10") > stream_id("1-9"));
        assert!(stream_id("2-0") > stream_id("1-99"));
        assert_eq!(stream_id("0-0"), Some((0, 0)));
        for bad in ["", "1", "1-", "-1", "1-x", "a-1"] {
            assert_eq!(stream_id(bad), None, "{bad:?}");
        }
    }
}
