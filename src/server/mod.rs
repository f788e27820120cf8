//! The pingora service. Every request is answered in `request_filter` (which returns `Ok(true)`):
//! pingora picks the upstream peer before any body hook runs, but condenser must read the body to
//! route on `model` and to compress, so it reads the body itself and forwards over a pooled
//! connector (README, "Decisions"). Phases, in order, per request:
//! 1. `service` dispatches on method and path (`/healthz`, `GET /v1/models`, the admin
//!    endpoints, `POST /v1/chat/completions` and `POST /v1/messages` through the shared
//!    `front_door` lifecycle, any other `/v1/*` through `passthrough`);
//! 2. the handler reads the body, routes, compresses, forwards (`upstream`) and relays the answer
//!    (`relay`), possibly shadowing it (`sampling`, `shadowing`);
//! 3. `access_log` writes one structured line (no bodies, no keys).
//!
//! Files depend downwards only: `service` → handlers → `upstream` → `relay`; `state` is the
//! composition root.

mod access_log;
mod accounting;
mod admin;
mod auth;
mod codec;
pub mod deployment;
mod forward;
mod front_door;
mod header_policy;
mod health;
mod judge;
mod limits;
pub mod listener;
mod passthrough;
mod relay;
mod reply;
mod request;
mod sampling;
mod service;
mod shadowing;
mod shared_limits;
mod shared_overrides;
mod state;
pub mod upstream;

pub use service::Condenser;
pub use shared_overrides::{start as start_shared_overrides, stored_overrides};
pub use state::AppState;
