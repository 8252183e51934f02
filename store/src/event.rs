use crate::token::SessionId;

/// A change every gateway must apply to its cache. Applying one twice is harmless.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// One session was revoked.
    Revoked {
        /// The session.
        session: SessionId,
    },
    /// These sessions got new roles (and a new value token): reload them.
    RolesChanged {
        /// The sessions.
        sessions: Vec<SessionId>,
    },
    /// Every session of a subject was revoked (forced logout).
    SubjectRevoked {
        /// The subject.
        subject: String,
        /// Its sessions that were live.
        sessions: Vec<SessionId>,
    },
}

impl Event {
    /// The sessions a gateway must drop from its cache.
    pub fn sessions(&self) -> &[SessionId] {
        match self {
            Event::Revoked { session } => std::slice::from_ref(session),
            Event::RolesChanged { sessions } | Event::SubjectRevoked { sessions, .. } => sessions,
        }
    }
}

/// A reader's position in the event stream: the id of the last event it saw and that event's
/// sequence number (every event gets the next number, so a jump means events were lost), in
/// one epoch of the store (a store that lost its data starts a new one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventCursor {
    pub(crate) epoch: String,
    pub(crate) id: String,
    pub(crate) seq: u64,
}

impl EventCursor {
    /// The sequence number of the last event seen.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// When the last event seen was published (Unix milliseconds), if the store records it
    /// (Redis stream ids start with it).
    pub fn published_at_ms(&self) -> Option<u64> {
        let (ms, _) = self.id.split_once('-')?;
        ms.parse().ok()
    }
}

/// What one read of the event stream returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventBatch {
    /// The events, oldest first.
    pub events: Vec<Event>,
    /// Where to read next.
    pub cursor: EventCursor,
    /// Events between the old position and these may be lost: drop the whole cache.
    pub gap: bool,
}
