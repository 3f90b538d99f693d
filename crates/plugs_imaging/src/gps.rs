//! Blanking the GPS position of an image's EXIF as its bytes stream past, without re-encoding.

/// The largest EXIF block held back to be edited. A JPEG APP1 segment cannot exceed 64 KiB; PNG
/// and WebP allow more, but EXIF that large is no camera's: such a block passes unchanged and
/// the outcome says so.
pub const MAX_EXIF_BLOCK: usize = 256 * 1024;

/// What [`GpsBlanker`] did to a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GpsOutcome {
    /// A GPS directory with entries was found and blanked: the bytes changed.
    Blanked,
    /// The format was understood and it carries no GPS position (no EXIF, or EXIF without a
    /// GPS directory, or an empty one). The bytes are unchanged.
    NotFound,
    /// Not a format the blanker reads (JPEG, PNG, WebP). The bytes are unchanged.
    Unsupported,
    /// The stream or its EXIF is malformed, cut short, or its EXIF block is larger than
    /// [`MAX_EXIF_BLOCK`]: the blanker gave up and passed the bytes unchanged from there on.
    /// Blocks blanked before that point stay blanked.
    GaveUp,
}

impl GpsOutcome {
    /// Whether any byte of the stream was changed.
    #[must_use]
    pub fn changed(self) -> bool {
        self == Self::Blanked
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Container {
    /// Waiting for the first 12 bytes that tell the format.
    Unknown,
    Jpeg,
    Png,
    /// RIFF: the offset of the end of the RIFF payload.
    Webp {
        end: u64,
    },
    /// Nothing left to look at: everything passes.
    Done,
}

/// What the parser decided about the bytes at the front of the held buffer.
enum Step {
    /// Not enough bytes held to decide.
    NeedMore,
    /// The next `n` bytes (perhaps not yet received) pass unchanged, then parsing resumes.
    Pass(u64),
    /// Everything from here on passes unchanged.
    Finish,
}

/// Blanks the GPS position in the EXIF of a JPEG (APP1 `Exif`), PNG (`eXIf` chunk, whose CRC
/// it recomputes) or WebP (RIFF `EXIF` chunk) while the bytes stream through it.
///
/// The edit is in place: the GPS directory's entry count, its entries and the values they point
/// to are overwritten with zeros, so every length (the file's, the segment's, the chunk's) stays
/// what it was, nothing is re-encoded, and a reader finds an empty GPS directory. The output has
/// exactly the length of the input, and every byte outside the GPS directory is unchanged.
///
/// Memory is bounded: the blanker holds back at most one container header, or one EXIF block
/// (at most [`MAX_EXIF_BLOCK`]) until it is complete, never the file. Anything it does not
/// understand passes unchanged, and [`GpsBlanker::finish`] reports what happened.
///
/// Not covered: GPS positions in XMP or in a maker note, and containers it does not read (HEIC).
///
/// ```
/// use plugs_imaging::{GpsBlanker, GpsOutcome};
/// let mut blanker = GpsBlanker::new();
/// let mut out = blanker.push(b"not an image at all");
/// let (rest, outcome) = blanker.finish();
/// out.extend(rest);
/// assert_eq!(out, b"not an image at all");
/// assert_eq!(outcome, GpsOutcome::Unsupported);
/// ```
#[derive(Debug)]
pub struct GpsBlanker {
    container: Container,
    /// Bytes received and not yet released, the parser's window.
    held: Vec<u8>,
    /// Bytes still to pass unchanged before parsing resumes.
    skip: u64,
    /// Offset in the stream of the first byte of `held` (or of the skipped run).
    offset: u64,
    flags: Flags,
}

/// What has been seen so far.
#[derive(Debug, Default, Clone, Copy)]
struct Flags {
    recognised: bool,
    blanked: bool,
    gave_up: bool,
}

impl Default for GpsBlanker {
    fn default() -> Self {
        Self::new()
    }
}

impl GpsBlanker {
    /// A blanker at the start of a stream.
    #[must_use]
    pub fn new() -> Self {
        Self {
            container: Container::Unknown,
            held: Vec::new(),
            skip: 0,
            offset: 0,
            flags: Flags::default(),
        }
    }

    /// Takes the next chunk and returns the bytes that are ready to go on. They may be fewer
    /// than the chunk (while an EXIF block is held back) or more (when it is released); over
    /// the whole stream, with [`GpsBlanker::finish`], exactly as many bytes come out as went in.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(chunk.len() + self.held.len());
        let mut input = chunk;
        if self.skip > 0 {
            let n = usize::try_from(self.skip).map_or(input.len(), |skip| skip.min(input.len()));
            out.extend_from_slice(&input[..n]);
            input = &input[n..];
            self.skip -= n as u64;
            self.offset += n as u64;
        }
        if input.is_empty() {
            return out;
        }
        if self.container == Container::Done {
            out.extend_from_slice(input);
            return out;
        }
        self.held.extend_from_slice(input);
        self.run(&mut out, false);
        out
    }

    /// Whether the blanker has decided about the rest of the stream: it reached the image data
    /// (a JPEG's start of scan, a PNG's end), the end of a WebP's RIFF payload, or met a format
    /// it does not read or a structure it gave up on. From here on every byte passes unchanged,
    /// so a caller that has seen only the head of a file knows the outcome for the whole file.
    #[must_use]
    pub fn is_settled(&self) -> bool {
        self.container == Container::Done
    }

    /// Whether a GPS position has been blanked in the bytes pushed so far.
    #[must_use]
    pub fn has_blanked(&self) -> bool {
        self.flags.blanked
    }

    /// Ends the stream: returns the bytes still held back, and what was done.
    #[must_use]
    pub fn finish(mut self) -> (Vec<u8>, GpsOutcome) {
        let mut out = Vec::new();
        self.run(&mut out, true);
        out.append(&mut self.held);
        let outcome = if self.flags.blanked {
            GpsOutcome::Blanked
        } else if self.flags.gave_up {
            GpsOutcome::GaveUp
        } else if !self.flags.recognised {
            GpsOutcome::Unsupported
        } else {
            GpsOutcome::NotFound
        };
        (out, outcome)
    }

    /// Parses `held` from its front, releasing what is decided into `out`.
    fn run(&mut self, out: &mut Vec<u8>, at_end: bool) {
        let mut at = 0_usize;
        while self.container != Container::Done && at < self.held.len() {
            let stream_offset = self.offset;
            match step(
                &mut self.container,
                &mut self.flags,
                &mut self.held[at..],
                stream_offset,
                at_end,
            ) {
                Step::NeedMore => break,
                Step::Pass(n) => {
                    let available = self.held.len() - at;
                    let take = usize::try_from(n).map_or(available, |n| n.min(available));
                    out.extend_from_slice(&self.held[at..at + take]);
                    at += take;
                    self.offset += take as u64;
                    self.skip = n - take as u64;
                    if self.skip > 0 {
                        break;
                    }
                }
                Step::Finish => {
                    self.container = Container::Done;
                }
            }
        }
        if self.container == Container::Done {
            out.extend_from_slice(&self.held[at..]);
            self.offset += (self.held.len() - at) as u64;
            self.held.clear();
        } else {
            self.held.drain(..at);
        }
        if at_end && !self.held.is_empty() && self.flags.recognised {
            // Cut short inside a header or an EXIF block.
            self.flags.gave_up = true;
        }
    }
}

fn give_up(flags: &mut Flags) -> Step {
    flags.gave_up = true;
    Step::Finish
}

/// Decides about the bytes at the front of `buf`, which starts at `stream_offset` in the stream.
fn step(
    container: &mut Container,
    flags: &mut Flags,
    buf: &mut [u8],
    stream_offset: u64,
    at_end: bool,
) -> Step {
    match *container {
        Container::Done => Step::Finish,
        Container::Unknown => {
            if buf.len() < 12 && !at_end {
                return Step::NeedMore;
            }
            if buf.len() >= 3 && buf[..3] == [0xFF, 0xD8, 0xFF] {
                *container = Container::Jpeg;
                flags.recognised = true;
                Step::Pass(2)
            } else if buf.starts_with(b"\x89PNG\r\n\x1a\n") {
                *container = Container::Png;
                flags.recognised = true;
                Step::Pass(8)
            } else if buf.len() >= 12 && buf.starts_with(b"RIFF") && &buf[8..12] == b"WEBP" {
                let size = u32_le(&buf[4..8]);
                *container = Container::Webp {
                    end: 8 + u64::from(size),
                };
                flags.recognised = true;
                Step::Pass(12)
            } else {
                Step::Finish
            }
        }
        Container::Jpeg => step_jpeg(flags, buf),
        Container::Png => step_png(flags, buf),
        Container::Webp { end } => {
            if stream_offset >= end {
                return Step::Finish;
            }
            step_webp(flags, buf)
        }
    }
}

/// JPEG: markers and their segments up to the start of the scan; EXIF lives in APP1 before it.
fn step_jpeg(flags: &mut Flags, buf: &mut [u8]) -> Step {
    if buf.len() < 2 {
        return Step::NeedMore;
    }
    if buf[0] != 0xFF {
        return give_up(flags);
    }
    match buf[1] {
        // Fill byte before a marker.
        0xFF => return Step::Pass(1),
        // Markers without a segment.
        0x01 | 0xD0..=0xD7 => return Step::Pass(2),
        // Start of scan or end of image: no EXIF past this point.
        0xDA | 0xD9 => return Step::Finish,
        _ => {}
    }
    if buf.len() < 4 {
        return Step::NeedMore;
    }
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    if len < 2 {
        return give_up(flags);
    }
    let total = 2 + len;
    if buf[1] != 0xE1 {
        return Step::Pass(total as u64);
    }
    if buf.len() < 10.min(total) {
        return Step::NeedMore;
    }
    if total < 10 || &buf[4..10] != b"Exif\0\0" {
        // APP1 also carries XMP: not ours to edit.
        return Step::Pass(total as u64);
    }
    if buf.len() < total {
        return Step::NeedMore;
    }
    edit_tiff(flags, &mut buf[10..total]);
    Step::Pass(total as u64)
}

/// PNG: length, type, data, CRC. The `eXIf` chunk is held whole, edited and its CRC rewritten.
fn step_png(flags: &mut Flags, buf: &mut [u8]) -> Step {
    if buf.len() < 8 {
        return Step::NeedMore;
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if len > 0x7FFF_FFFF {
        return give_up(flags);
    }
    let total = 12 + u64::from(len);
    match &buf[4..8] {
        b"IEND" => Step::Finish,
        b"eXIf" => {
            let Ok(len) = usize::try_from(len) else {
                return give_up(flags);
            };
            if len > MAX_EXIF_BLOCK {
                return give_up(flags);
            }
            if buf.len() < 12 + len {
                return Step::NeedMore;
            }
            let crc_at = 8 + len;
            let stored = u32::from_be_bytes([
                buf[crc_at],
                buf[crc_at + 1],
                buf[crc_at + 2],
                buf[crc_at + 3],
            ]);
            if crc32fast::hash(&buf[4..crc_at]) != stored {
                // A chunk already damaged: rewriting its CRC would hide that.
                return give_up(flags);
            }
            if edit_tiff(flags, &mut buf[8..crc_at]) {
                let crc = crc32fast::hash(&buf[4..crc_at]);
                buf[crc_at..crc_at + 4].copy_from_slice(&crc.to_be_bytes());
            }
            Step::Pass(total)
        }
        _ => Step::Pass(total),
    }
}

/// WebP: RIFF chunks (FourCC, little-endian size, data, a pad byte to an even length).
fn step_webp(flags: &mut Flags, buf: &mut [u8]) -> Step {
    if buf.len() < 8 {
        return Step::NeedMore;
    }
    let size = u32_le(&buf[4..8]);
    let total = 8 + u64::from(size) + u64::from(size & 1);
    if &buf[..4] != b"EXIF" {
        return Step::Pass(total);
    }
    let Ok(size) = usize::try_from(size) else {
        return give_up(flags);
    };
    if size > MAX_EXIF_BLOCK {
        return give_up(flags);
    }
    if buf.len() < 8 + size {
        return Step::NeedMore;
    }
    let data = &mut buf[8..8 + size];
    // Some writers keep the JPEG-style "Exif\0\0" prefix inside the chunk.
    let tiff_start = if data.starts_with(b"Exif\0\0") { 6 } else { 0 };
    edit_tiff(flags, &mut data[tiff_start..]);
    Step::Pass(total)
}

/// Blanks the GPS directory of one EXIF (TIFF) block, recording the result in `flags`. Returns
/// whether a byte changed.
fn edit_tiff(flags: &mut Flags, tiff: &mut [u8]) -> bool {
    match blank_gps_in_tiff(tiff) {
        Ok(changed) => {
            flags.blanked |= changed;
            changed
        }
        Err(Malformed) => {
            flags.gave_up = true;
            false
        }
    }
}

/// The TIFF structure of an EXIF block is not what its own offsets claim.
#[derive(Debug, PartialEq, Eq)]
struct Malformed;

const GPS_IFD_POINTER: u16 = 0x8825;

/// Finds the GPS directory through IFD0 and overwrites with zeros its entry count, its entries,
/// its next-directory link and every value its entries point to. Validates everything before it
/// writes anything, so a malformed block is left exactly as it was.
///
/// Returns whether there was anything to blank.
fn blank_gps_in_tiff(tiff: &mut [u8]) -> Result<bool, Malformed> {
    let order = match tiff.get(..4) {
        Some(b"II*\0") => Order::Little,
        Some(b"MM\0*") => Order::Big,
        _ => return Err(Malformed),
    };
    let ifd0 = order.u32(tiff, 4)? as usize;
    let count = usize::from(order.u16(tiff, ifd0)?);
    let mut gps = None;
    for i in 0..count {
        let entry = ifd0 + 2 + 12 * i;
        if order.u16(tiff, entry)? == GPS_IFD_POINTER {
            gps = Some(order.u32(tiff, entry + 8)? as usize);
        }
    }
    let Some(gps) = gps else {
        return Ok(false);
    };
    let entries = usize::from(order.u16(tiff, gps)?);
    if entries == 0 {
        return Ok(false);
    }
    // The count, the entries and the link to a next directory.
    let dir_end = gps + 2 + 12 * entries;
    let link_end = dir_end + 4;
    if tiff.len() < dir_end {
        return Err(Malformed);
    }
    let mut ranges = Vec::with_capacity(entries + 1);
    ranges.push(gps..link_end.min(tiff.len()));
    for i in 0..entries {
        let entry = gps + 2 + 12 * i;
        let kind = order.u16(tiff, entry + 2)?;
        let n = order.u32(tiff, entry + 4)? as usize;
        let Some(size) = type_size(kind).and_then(|unit| unit.checked_mul(n)) else {
            // An unknown type: its value is unreachable once the entry is gone.
            continue;
        };
        if size > 4 {
            let at = order.u32(tiff, entry + 8)? as usize;
            let end = at.checked_add(size).ok_or(Malformed)?;
            if end > tiff.len() {
                return Err(Malformed);
            }
            ranges.push(at..end);
        }
    }
    for range in ranges {
        tiff[range].fill(0);
    }
    Ok(true)
}

/// Bytes per value of a TIFF field type.
fn type_size(kind: u16) -> Option<usize> {
    match kind {
        1 | 2 | 6 | 7 => Some(1),
        3 | 8 => Some(2),
        4 | 9 | 11 | 13 => Some(4),
        5 | 10 | 12 => Some(8),
        _ => None,
    }
}

#[derive(Clone, Copy)]
enum Order {
    Little,
    Big,
}

impl Order {
    fn u16(self, buf: &[u8], at: usize) -> Result<u16, Malformed> {
        let bytes: [u8; 2] = buf
            .get(at..at + 2)
            .and_then(|b| b.try_into().ok())
            .ok_or(Malformed)?;
        Ok(match self {
            Self::Little => u16::from_le_bytes(bytes),
            Self::Big => u16::from_be_bytes(bytes),
        })
    }

    fn u32(self, buf: &[u8], at: usize) -> Result<u32, Malformed> {
        let bytes: [u8; 4] = buf
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .ok_or(Malformed)?;
        Ok(match self {
            Self::Little => u32::from_le_bytes(bytes),
            Self::Big => u32::from_be_bytes(bytes),
        })
    }
}

fn u32_le(bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .rev()
        .fold(0_u32, |acc, &b| (acc << 8) | u32::from(b))
}
