//! WebSocket relay (being written).
