//! Black-box tests of the `matrixrtc-auth` binary.
//!
//! Each test spawns the real binary as a child process with a controlled environment on a free
//! loopback port, against fakes of the two things it talks to: a Matrix homeserver (HTTPS, federation
//! OpenID userinfo only) and LiveKit (its Twirp HTTP API only). Expected values come from the behaviour
//! reference (error texts, claims, hash vectors), never from the service's own code.

mod support;

mod config;
mod delegation;
mod delegation_faults;
mod get_token;
mod harness;
mod hostile_homeserver;
mod lifecycle;
mod limits;
mod membership;
mod openid;
mod room;
mod sfu_get;
mod ssrf;
mod surface;
