//! The HTTP routes, one module per resource, each registering itself with `config`.

pub mod events;
pub mod health;
pub mod local_objects;
pub mod media;
pub mod preconditions;
pub mod tus;
pub mod uploads;
pub mod variants;
pub mod zip;

use actix_web::{Route, guard, web};

/// A route that answers `GET` and `HEAD` alike. actix-web routes `HEAD` only where it is asked
/// to, while RFC 9110 (§9.3.2) has every resource that answers `GET` answer `HEAD` with the same
/// headers; actix-http sends those headers (`Content-Length` included) and drops the body.
pub fn get_or_head() -> Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}
