//! The gateway (see issue: reference→value swap, cache, sync, routing). Not built yet.
