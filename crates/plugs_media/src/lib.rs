#![doc = include_str!("../README.md")]

mod archive;
mod config;
mod direct;
mod edit;
mod error;
mod external;
mod import;
mod listing;
mod processing;
mod reconcile;
mod service;
mod tus;
mod types;
mod upload;

pub use archive::{ArchiveMember, EventArchive};
pub use config::{DownloadSigner, ServiceConfig};
pub use direct::{
    Completion, DirectCompletion, DirectUpload, DirectUploadRequest, DirectUploadStatus,
    EventUsage, UploadPlan,
};
pub use edit::{EventEdit, IfMatch, MediaEdit};
pub use error::MediaError;
pub use external::{ExternalTool, ExternalTools, HEIF_TYPES, VIDEO_TYPES};
pub use import::{ImportRequest, Verification};
pub use listing::MediaQuery;
pub use processing::{
    DISPLAY_VARIANT, DerivedFormat, JobReport, POSTER_VARIANT, ProcessingConfig, ProcessingWorker,
    VariantRequest, VariantState, derived_key, parse_derived_key, thumbnail_variant,
};
pub use service::MediaService;
pub use tus::{
    TUS_CHECKSUM_ALGORITHMS, TUS_PART_SIZE, TusChecksum, TusChunk, TusCreate, TusError, TusStatus,
};
pub use types::{
    Page, PageRequest, ReconcileOptions, ReconcileReport, UploadFields, UploadRequest,
};
pub use upload::StagedUpload;
