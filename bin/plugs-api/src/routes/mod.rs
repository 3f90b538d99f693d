//! The HTTP routes, one module per resource, each registering itself with `config`.

pub mod events;
pub mod health;
pub mod local_objects;
pub mod media;
