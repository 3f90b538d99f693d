//! The one error type of this crate.

use crate::ImageFormat;

/// Why an image could not be read, decoded or rendered.
///
/// Messages of the codecs below are carried as text, so the enum derives `PartialEq` and tests
/// compare errors whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImagingError {
    /// The bytes are none of the formats this crate reads (JPEG, PNG, GIF, WebP).
    #[error("not an image this service reads (JPEG, PNG, GIF or WebP)")]
    UnsupportedFormat,
    /// The header declares more pixels than the limit: a decompression bomb, or simply too big.
    /// Refused from the header alone, before any pixel is decoded.
    #[error("{width} x {height} pixels is more than the limit of {max_pixels}")]
    TooManyPixels {
        /// Width the header declares.
        width: u32,
        /// Height the header declares.
        height: u32,
        /// The limit it exceeds.
        max_pixels: u64,
    },
    /// An animation with more frames than the limit.
    #[error("{frames} frames or more is more than the limit of {max_frames}")]
    TooManyFrames {
        /// Frames counted (counting stops just past the limit).
        frames: u32,
        /// The limit it exceeds.
        max_frames: u32,
    },
    /// The header or the pixel data is malformed, or decoding would need more memory than allowed.
    #[error("cannot decode the {format:?} image: {reason}")]
    Decode {
        /// The format the bytes claim to be.
        format: ImageFormat,
        /// What the decoder said.
        reason: String,
    },
    /// A rendition could not be resized or encoded.
    #[error("cannot render the image: {reason}")]
    Render {
        /// What the resizer or the encoder said.
        reason: String,
    },
}
