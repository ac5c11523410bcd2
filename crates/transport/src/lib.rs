//! sente-lite-transport: warp WebSocket and HTTP for the channel engine.
