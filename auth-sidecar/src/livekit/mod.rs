//! Everything LiveKit: the API keys, the grants and hashes that go into tokens, and the RoomService API.

pub mod grant;
pub mod keys;
pub mod twirp;
pub mod webhook;

#[cfg(test)]
pub(crate) mod fake;
