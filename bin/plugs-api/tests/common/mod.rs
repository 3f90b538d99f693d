//! Helpers shared by the handler tests and the end-to-end tests.
#![allow(dead_code, reason = "each test binary uses a different subset")]

/// A complete, valid 1x1 RGB PNG.
pub(crate) const PNG: &[u8] = b"\x89\x50\x4e\x47\x0d\x0a\x1a\x0a\x00\x00\x00\x0d\x49\x48\x44\x52\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90\x77\x53\xde\x00\x00\x00\x0c\x49\x44\x41\x54\x78\x9c\x63\xf8\xcf\xc0\x00\x00\x03\x01\x01\x00\xc9\xfe\x92\xef\x00\x00\x00\x00\x49\x45\x4e\x44\xae\x42\x60\x82";

/// A PNG padded to `len` bytes with an ancillary chunk-free tail (the sniffer reads the head).
pub(crate) fn png_of_len(len: usize) -> Vec<u8> {
    let mut bytes = PNG.to_vec();
    bytes.resize(len.max(PNG.len()), 0);
    bytes
}

/// Hex SHA-256.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The multipart boundary the builders use.
pub(crate) const BOUNDARY: &str = "plugs-test-boundary-7d1c";

/// One part of a hand-built multipart body.
pub(crate) enum Part<'a> {
    /// A text field.
    Text(&'a str, &'a str),
    /// A file field: name, filename, content type, bytes.
    File(&'a str, &'a str, Option<&'a str>, &'a [u8]),
}

/// A `multipart/form-data` body with [`BOUNDARY`].
pub(crate) fn multipart(parts: &[Part<'_>]) -> Vec<u8> {
    let mut body = Vec::new();
    for part in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        match part {
            Part::Text(name, value) => {
                body.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
                );
                body.extend_from_slice(value.as_bytes());
            }
            Part::File(name, filename, content_type, bytes) => {
                body.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n").as_bytes(),
                );
                if let Some(content_type) = content_type {
                    body.extend_from_slice(format!("Content-Type: {content_type}\r\n").as_bytes());
                }
                body.extend_from_slice(b"\r\n");
                body.extend_from_slice(bytes);
            }
        }
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// The `Content-Type` of a [`multipart`] body.
pub(crate) fn multipart_content_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}
