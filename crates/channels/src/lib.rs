//! sente-lite-channels: the channel engine (pub/sub, retention, RPC).
//!
//! It knows nothing of HTTP, WebSocket or warp.
