#![doc = include_str!("../README.md")]

mod error;
mod frames;
mod gps;
mod probe;
mod render;

pub use error::ImagingError;
pub use gps::{GpsBlanker, GpsOutcome, MAX_EXIF_BLOCK};
pub use probe::{ImageFormat, ImageInfo, Orientation, probe};
pub use render::{
    DecodeLimits, Encoding, Rendered, Rendition, RenditionSpec, Size, render, render_upright,
    target_dimensions,
};
