//! Reading what an image is without decoding its pixels: format, dimensions, EXIF orientation.

use std::io::Cursor;

use crate::ImagingError;

/// The image formats this crate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ImageFormat {
    /// JPEG (JFIF or Exif).
    Jpeg,
    /// PNG, 8 or 16 bits per channel.
    Png,
    /// GIF; only the first frame of an animation is rendered.
    Gif,
    /// WebP, lossy or lossless; only the first frame of an animation is rendered.
    Webp,
}

impl ImageFormat {
    /// Recognises the format from the first bytes (12 are enough), by magic number only.
    ///
    /// ```
    /// use plugs_imaging::ImageFormat;
    /// assert_eq!(ImageFormat::sniff(b"\x89PNG\r\n\x1a\n...."), Some(ImageFormat::Png));
    /// assert_eq!(ImageFormat::sniff(b"hello"), None);
    /// ```
    #[must_use]
    pub fn sniff(head: &[u8]) -> Option<Self> {
        if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(Self::Jpeg)
        } else if head.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(Self::Png)
        } else if head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a") {
            Some(Self::Gif)
        } else if head.len() >= 12 && head.starts_with(b"RIFF") && &head[8..12] == b"WEBP" {
            Some(Self::Webp)
        } else {
            None
        }
    }

    pub(crate) fn to_image(self) -> image::ImageFormat {
        match self {
            Self::Jpeg => image::ImageFormat::Jpeg,
            Self::Png => image::ImageFormat::Png,
            Self::Gif => image::ImageFormat::Gif,
            Self::Webp => image::ImageFormat::WebP,
        }
    }
}

/// The EXIF orientation (tag 0x0112): how the stored pixels must be turned to be shown upright.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Orientation {
    /// 1: as stored.
    Normal,
    /// 2: mirrored left to right.
    FlipHorizontal,
    /// 3: turned half a circle.
    Rotate180,
    /// 4: mirrored top to bottom.
    FlipVertical,
    /// 5: mirrored along the top-left to bottom-right diagonal.
    Transpose,
    /// 6: turned a quarter clockwise to be upright (the usual portrait photo of a phone).
    Rotate90,
    /// 7: mirrored along the other diagonal.
    Transverse,
    /// 8: turned a quarter counter-clockwise to be upright.
    Rotate270,
}

impl Orientation {
    /// The orientation an EXIF value names; anything outside 1 to 8 reads as [`Self::Normal`].
    #[must_use]
    pub fn from_exif(value: u32) -> Self {
        match value {
            2 => Self::FlipHorizontal,
            3 => Self::Rotate180,
            4 => Self::FlipVertical,
            5 => Self::Transpose,
            6 => Self::Rotate90,
            7 => Self::Transverse,
            8 => Self::Rotate270,
            _ => Self::Normal,
        }
    }

    /// Whether showing the image upright swaps its width and height.
    #[must_use]
    pub fn swaps_dimensions(self) -> bool {
        matches!(
            self,
            Self::Transpose | Self::Rotate90 | Self::Transverse | Self::Rotate270
        )
    }

    pub(crate) fn to_image(self) -> image::metadata::Orientation {
        use image::metadata::Orientation as O;
        match self {
            Self::Normal => O::NoTransforms,
            Self::FlipHorizontal => O::FlipHorizontal,
            Self::Rotate180 => O::Rotate180,
            Self::FlipVertical => O::FlipVertical,
            Self::Transpose => O::Rotate90FlipH,
            Self::Rotate90 => O::Rotate90,
            Self::Transverse => O::Rotate270FlipH,
            Self::Rotate270 => O::Rotate270,
        }
    }
}

/// What an image is, read from its headers alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImageInfo {
    /// The container format.
    pub format: ImageFormat,
    /// Width of the stored pixels, before orientation.
    pub width: u32,
    /// Height of the stored pixels, before orientation.
    pub height: u32,
    /// The EXIF orientation; [`Orientation::Normal`] when there is no EXIF.
    pub orientation: Orientation,
}

impl ImageInfo {
    /// Width and height as the image is shown, orientation applied.
    #[must_use]
    pub fn upright_dimensions(&self) -> (u32, u32) {
        if self.orientation.swaps_dimensions() {
            (self.height, self.width)
        } else {
            (self.width, self.height)
        }
    }

    /// Width times height.
    #[must_use]
    pub fn pixels(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }
}

/// Reads the format, the dimensions and the EXIF orientation from the headers, decoding no pixel.
///
/// Cheap whatever the image declares, so it is safe on a decompression bomb.
///
/// # Errors
/// [`ImagingError::UnsupportedFormat`] for anything but JPEG, PNG, GIF and WebP;
/// [`ImagingError::Decode`] for a header that cannot be read.
pub fn probe(bytes: &[u8]) -> Result<ImageInfo, ImagingError> {
    let format = ImageFormat::sniff(bytes).ok_or(ImagingError::UnsupportedFormat)?;
    let (width, height) = image::ImageReader::with_format(Cursor::new(bytes), format.to_image())
        .into_dimensions()
        .map_err(|e| ImagingError::Decode {
            format,
            reason: e.to_string(),
        })?;
    Ok(ImageInfo {
        format,
        width,
        height,
        orientation: exif_orientation(format, bytes),
    })
}

/// The EXIF orientation, or [`Orientation::Normal`] when there is none or it cannot be read (a
/// broken EXIF block must not make an otherwise good picture unusable).
fn exif_orientation(format: ImageFormat, bytes: &[u8]) -> Orientation {
    if format == ImageFormat::Gif {
        return Orientation::Normal;
    }
    let Ok(exif) = exif::Reader::new().read_from_container(&mut Cursor::new(bytes)) else {
        return Orientation::Normal;
    };
    exif.get_field(exif::Tag::Orientation, exif::In::PRIMARY)
        .and_then(|field| field.value.get_uint(0))
        .map_or(Orientation::Normal, Orientation::from_exif)
}
