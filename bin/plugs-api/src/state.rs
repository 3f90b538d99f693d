//! The application state every worker shares, and how it is built from [`Settings`].

use plugs_media::MediaService;

use crate::auth::JwtKeys;
use crate::metrics::Metrics;
use crate::routes::local_objects::LocalObjects;
use crate::routes::media::UploadLimits;

/// What the handlers share: the service, the token keys, the metrics, the upload limits and,
/// for the local store, what serves its presigned URLs.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The media service.
    pub service: MediaService,
    /// Token verification.
    pub keys: JwtKeys,
    /// Metrics registry.
    pub metrics: Metrics,
    /// Upload limits.
    pub limits: UploadLimits,
    /// Set when the store's presigned URLs point at this server.
    pub local_objects: Option<LocalObjects>,
}
