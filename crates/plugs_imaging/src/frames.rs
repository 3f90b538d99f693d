//! Counting the frames of an animation by walking its blocks, without decoding any.

/// Frames of a GIF, counting stops at `limit + 1`. A malformed stream counts what was seen: the
/// decoder reports the damage itself.
pub(crate) fn gif_frames(bytes: &[u8], limit: u32) -> u32 {
    let Some(&packed) = bytes.get(10) else {
        return 0;
    };
    let mut at = 13 + color_table_len(packed);
    let mut frames = 0_u32;
    while frames <= limit {
        match bytes.get(at) {
            // Extension: label, then data sub-blocks.
            Some(0x21) => at = skip_sub_blocks(bytes, at + 2),
            // Image descriptor: 9 bytes, a local colour table, the LZW code size, sub-blocks.
            Some(0x2C) => {
                frames += 1;
                let Some(&packed) = bytes.get(at + 9) else {
                    break;
                };
                at = skip_sub_blocks(bytes, at + 10 + color_table_len(packed) + 1);
            }
            _ => break,
        }
    }
    frames
}

fn color_table_len(packed: u8) -> usize {
    if packed & 0x80 == 0 {
        0
    } else {
        3 << ((packed & 0x07) + 1)
    }
}

/// The offset just past a chain of sub-blocks starting at `at` (past the end if it is cut).
fn skip_sub_blocks(bytes: &[u8], mut at: usize) -> usize {
    while let Some(&len) = bytes.get(at) {
        at += 1;
        if len == 0 {
            return at;
        }
        at += usize::from(len);
    }
    usize::MAX / 2
}

/// Frames (`ANMF` chunks) of a WebP; 1 for a still image. Counting stops at `limit + 1`.
pub(crate) fn webp_frames(bytes: &[u8], limit: u32) -> u32 {
    let mut at = 12_usize;
    let mut frames = 0_u32;
    while frames <= limit {
        let Some(header) = bytes.get(at..at + 8) else {
            break;
        };
        if &header[..4] == b"ANMF" {
            frames += 1;
        }
        let size = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        at = at
            .saturating_add(8)
            .saturating_add(size)
            .saturating_add(size & 1);
    }
    frames.max(1)
}
