#![doc = include_str!("../README.md")]

mod config;
mod error;
mod reconcile;
mod service;
mod types;
mod upload;

pub use config::ServiceConfig;
pub use error::MediaError;
pub use service::MediaService;
pub use types::{Page, PageRequest, ReconcileOptions, ReconcileReport, UploadRequest};
