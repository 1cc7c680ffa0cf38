//! Talking to Matrix homeservers: server discovery, the federation OpenID userinfo check, the guard
//! that decides which addresses a client-supplied server name may make us contact, and the calls to the
//! own homeserver as its application service.

pub mod client_api;
pub mod delayed_event;
pub mod discovery;
pub mod federation;
pub mod full_access;
pub mod guard;
mod idle_pool;
pub mod openid;
pub mod own_homeserver;
pub mod server_name;
mod token_cache;

#[cfg(test)]
mod host_properties;
#[cfg(test)]
pub(crate) mod test_support;

use std::sync::{Mutex, MutexGuard, PoisonError};

/// An error and its sources on one line: reqwest's and rustls' own text rarely says what went wrong.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Locks a mutex that guards a cache. The caches stay consistent even if a holder panicked (every
/// update is a single insert or remove), so a poisoned lock is simply taken over.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
