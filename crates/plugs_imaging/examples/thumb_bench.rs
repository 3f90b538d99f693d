//! The measuring half of `cargo xtask bench imaging`: makes photo-like JPEG fixtures, and renders
//! 256-pixel-wide thumbnails of files with [`plugs_imaging::render`] on one thread, as a worker
//! does, so that xtask can time it against `vipsthumbnail` on the same files.
//!
//! ```text
//! thumb_bench fixtures DIR COUNT WIDTH HEIGHT   # DIR/photo-NN.jpg, quality 90
//! thumb_bench render OUTDIR FILE...             # OUTDIR/<name>, one JSON line of figures
//! thumb_bench dims FILE...                      # "WIDTHxHEIGHT" per file, one per line
//! ```
//!
//! `render` prints `{"count","seconds","peak_rss_kib"}`: the thumbnails made, the seconds spent
//! reading, rendering and writing them, and the process's peak resident set (VmHWM).

// Printing figures is this program's whole interface.
#![allow(clippy::print_stdout, missing_docs)]

use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use image::codecs::jpeg::JpegEncoder;
use image::{ImageReader, RgbImage};
use plugs_imaging::{DecodeLimits, Encoding, RenditionSpec, Size, render};

/// The thumbnail width, as the worker's smallest default.
const WIDTH: u32 = 256;
/// The JPEG quality of the thumbnails, the same as asked of vipsthumbnail.
const QUALITY: u8 = 80;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["fixtures", dir, count, width, height] => {
            fixtures(Path::new(dir), count.parse().unwrap_or(0), width, height)
        }
        ["render", out, files @ ..] if !files.is_empty() => render_all(Path::new(out), files),
        ["dims", files @ ..] => dims(files),
        _ => Err(
            "usage: thumb_bench fixtures DIR COUNT WIDTH HEIGHT | render OUTDIR FILE... | \
                  dims FILE..."
                .into(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("thumb_bench: {error}");
            ExitCode::FAILURE
        }
    }
}

fn fixtures(dir: &Path, count: u32, width: &str, height: &str) -> Result<()> {
    let (width, height): (u32, u32) = (width.parse()?, height.parse()?);
    if count == 0 || width == 0 || height == 0 {
        return Err("COUNT, WIDTH and HEIGHT must be at least 1".into());
    }
    std::fs::create_dir_all(dir)?;
    for n in 0..count {
        let image = photo_like(width, height, u64::from(n) + 1);
        let path = dir.join(format!("photo-{n:02}.jpg"));
        let file = BufWriter::new(std::fs::File::create(&path)?);
        JpegEncoder::new_with_quality(file, 90).encode_image(&image)?;
    }
    Ok(())
}

/// A picture with what makes photographs expensive to code: smooth gradients (sky), edges at
/// every scale (objects, texture) and sensor noise, different for every `seed`. A flat colour
/// would compress to almost nothing and decode unrealistically fast.
fn photo_like(width: u32, height: u32, seed: u64) -> RgbImage {
    let mut random = XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    // A few discs ("objects") at seeded places and sizes.
    let discs: Vec<(f32, f32, f32, [f32; 3])> = (0..24)
        .map(|_| {
            (
                random.unit() * width as f32,
                random.unit() * height as f32,
                (0.02 + 0.15 * random.unit()) * width as f32,
                [
                    random.unit() * 255.0,
                    random.unit() * 255.0,
                    random.unit() * 255.0,
                ],
            )
        })
        .collect();
    let phase = random.unit() * std::f32::consts::TAU;
    RgbImage::from_fn(width, height, |x, y| {
        let (fx, fy) = (x as f32 / width as f32, y as f32 / height as f32);
        // Sky to ground, with a slow wave across.
        let mut pixel = [
            60.0 + 150.0 * (1.0 - fy) + 20.0 * (fx * 7.0 + phase).sin(),
            90.0 + 110.0 * (1.0 - fy) + 25.0 * (fy * 5.0 + phase).cos(),
            120.0 + 120.0 * (1.0 - fy) * fx,
        ];
        for &(cx, cy, r, colour) in &discs {
            let (dx, dy) = (x as f32 - cx, y as f32 - cy);
            if dx * dx + dy * dy < r * r {
                // Shaded, with a fine texture like foliage or fabric.
                let texture = 18.0 * ((x as f32 * 0.35).sin() * (y as f32 * 0.27).cos());
                for (channel, c) in pixel.iter_mut().zip(colour) {
                    *channel = 0.35 * *channel + 0.65 * c + texture;
                }
            }
        }
        let noise = [random.noise(), random.noise(), random.noise()];
        image::Rgb(std::array::from_fn(|i| {
            (pixel[i] + noise[i]).clamp(0.0, 255.0) as u8
        }))
    })
}

/// A small, fast, seeded generator: fixtures must be the same on every run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// In [0, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1_u64 << 24) as f32
    }

    /// Sensor-like noise, about ±6 levels.
    fn noise(&mut self) -> f32 {
        (self.unit() + self.unit() - 1.0) * 6.0
    }
}

fn render_all(out: &Path, files: &[&str]) -> Result<()> {
    std::fs::create_dir_all(out)?;
    let spec = RenditionSpec::new(Size::Width(WIDTH), Encoding::Jpeg { quality: QUALITY });
    let limits = DecodeLimits::default();
    let started = Instant::now();
    for file in files {
        let path = PathBuf::from(file);
        let bytes = std::fs::read(&path)?;
        let rendered = render(&bytes, &[spec], &limits)?;
        let name = path.file_name().ok_or("a file without a name")?;
        for rendition in rendered.renditions {
            std::fs::write(out.join(name), rendition.bytes)?;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{{\"count\":{},\"seconds\":{seconds:.3},\"peak_rss_kib\":{}}}",
        files.len(),
        peak_rss_kib()
    );
    Ok(())
}

fn dims(files: &[&str]) -> Result<()> {
    for file in files {
        let (width, height) = ImageReader::open(file)?
            .with_guessed_format()?
            .into_dimensions()?;
        println!("{width}x{height}");
    }
    Ok(())
}

/// Peak resident set size of this process (VmHWM), in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
