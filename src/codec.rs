//! Content-Encoding of bodies. Captures keep bodies as received, so what
//! reads their JSON — redaction and session binding at record time,
//! correlation at replay — decodes gzip, deflate, br and zstd first, and
//! encodes again what it changed.

use std::io::{Read, Write};

use bytes::Bytes;

/// Most bytes a body is decoded to; the rest is left unread, so a
/// decompression bomb costs at most this much.
pub const MAX_DECODED: u64 = 16 * 1024 * 1024;

/// A Content-Encoding value this cannot read (`compress`, several stacked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsupported;

/// A Content-Encoding this reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// `gzip` (and `x-gzip`).
    Gzip,
    /// `deflate`: zlib-wrapped, or raw as some servers send it.
    Deflate,
    /// `br`.
    Brotli,
    /// `zstd` (browsers ask for it; CDNs answer with it).
    Zstd,
}

impl Coding {
    /// The coding a Content-Encoding value names; `Ok(None)` for none
    /// (`identity` or empty).
    ///
    /// # Errors
    /// A coding this cannot read.
    pub fn parse(value: &[u8]) -> Result<Option<Coding>, Unsupported> {
        let value = value.trim_ascii();
        let is = |name: &[u8]| value.eq_ignore_ascii_case(name);
        if value.is_empty() || is(b"identity") {
            Ok(None)
        } else if is(b"gzip") || is(b"x-gzip") {
            Ok(Some(Coding::Gzip))
        } else if is(b"deflate") {
            Ok(Some(Coding::Deflate))
        } else if is(b"br") {
            Ok(Some(Coding::Brotli))
        } else if is(b"zstd") {
            Ok(Some(Coding::Zstd))
        } else {
            Err(Unsupported)
        }
    }

    /// Decodes `body`. A body cut short (a capture's size cap) gives what
    /// decodes before the cut; `None` when nothing does.
    pub fn decode(self, body: &[u8]) -> Option<Vec<u8>> {
        self.decode_up_to(body, MAX_DECODED)
    }

    /// [`Coding::decode`], stopping after `limit` bytes of content.
    pub fn decode_up_to(self, body: &[u8], limit: u64) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        // `read_to_end` keeps what it read before an error: a truncated
        // body decodes as far as it goes.
        let _ = match self {
            Coding::Gzip => flate2::read::MultiGzDecoder::new(body)
                .take(limit)
                .read_to_end(&mut out),
            Coding::Deflate => {
                let zlib = flate2::read::ZlibDecoder::new(body)
                    .take(limit)
                    .read_to_end(&mut out);
                if out.is_empty() {
                    flate2::read::DeflateDecoder::new(body)
                        .take(limit)
                        .read_to_end(&mut out)
                } else {
                    zlib
                }
            }
            Coding::Brotli => brotli::Decompressor::new(body, 4096)
                .take(limit)
                .read_to_end(&mut out),
            Coding::Zstd => match ruzstd::decoding::StreamingDecoder::new(body) {
                Ok(d) => d.take(limit).read_to_end(&mut out),
                Err(_) => return None,
            },
        };
        (!out.is_empty() || body.is_empty()).then_some(out)
    }

    /// Encodes `body` in this coding, at the fastest level: a stored
    /// copy or a replayed body is read once, size matters less than time.
    pub fn encode(self, body: &[u8]) -> Vec<u8> {
        let level = flate2::Compression::fast();
        // Writing into a Vec cannot fail.
        match self {
            Coding::Gzip => {
                let mut w = flate2::write::GzEncoder::new(Vec::new(), level);
                let _ = w.write_all(body);
                w.finish().unwrap_or_default()
            }
            Coding::Deflate => {
                let mut w = flate2::write::ZlibEncoder::new(Vec::new(), level);
                let _ = w.write_all(body);
                w.finish().unwrap_or_default()
            }
            Coding::Brotli => {
                let mut out = Vec::new();
                {
                    let mut w = brotli::CompressorWriter::new(&mut out, 4096, 1, 22);
                    let _ = w.write_all(body);
                }
                out
            }
            Coding::Zstd => {
                ruzstd::encoding::compress_to_vec(body, ruzstd::encoding::CompressionLevel::Fastest)
            }
        }
    }
}

/// The coding named by the Content-Encoding among recorded `[name, value]`
/// headers (see [`Coding::parse`]).
///
/// # Errors
/// A coding this cannot read.
pub fn coding_of(headers: &[(String, String)]) -> Result<Option<Coding>, Unsupported> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-encoding"))
        .map_or(Ok(None), |(_, v)| Coding::parse(v.as_bytes()))
}

/// A received `body` as its content reads, given its Content-Encoding:
/// the same bytes when it is not encoded, decoded when it is, `None` when
/// its coding cannot be read or it does not decode.
pub fn decoded(content_encoding: Option<&[u8]>, body: Bytes) -> Option<Bytes> {
    match content_encoding.map_or(Ok(None), Coding::parse) {
        Ok(None) => Some(body),
        Ok(Some(c)) => c.decode(&body).map(Bytes::from),
        Err(Unsupported) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: &[u8] = br#"{"token":"tok_0123456789abcdef","items":[1,2,3]}"#;

    #[test]
    fn every_coding_round_trips_and_a_cut_body_decodes_as_far_as_it_goes() {
        for coding in [Coding::Gzip, Coding::Deflate, Coding::Brotli, Coding::Zstd] {
            let encoded = coding.encode(JSON);
            assert_ne!(encoded, JSON, "{coding:?}");
            assert_eq!(coding.decode(&encoded).as_deref(), Some(JSON), "{coding:?}");
        }
        let long: Vec<u8> = (0..20_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let gz = Coding::Gzip.encode(&long);
        let part = Coding::Gzip.decode(&gz[..gz.len() / 2]).expect("a prefix");
        assert!(!part.is_empty() && long.starts_with(&part));
        // zstd decodes whole blocks (up to 128 KiB): a cut one gives
        // nothing, never garbage.
        let zst = Coding::Zstd.encode(&long);
        let part = Coding::Zstd.decode(&zst[..zst.len() / 2]);
        assert!(part.is_none_or(|p| long.starts_with(&p)));
    }

    #[test]
    fn raw_deflate_is_read_too_and_garbage_is_not() {
        let mut w = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        w.write_all(JSON).expect("write");
        let raw = w.finish().expect("finish");
        assert_eq!(Coding::Deflate.decode(&raw).as_deref(), Some(JSON));
        assert_eq!(Coding::Gzip.decode(b"not gzip at all"), None);
    }

    #[test]
    fn content_encoding_values_name_their_coding() {
        assert_eq!(Coding::parse(b" GZIP "), Ok(Some(Coding::Gzip)));
        assert_eq!(Coding::parse(b"identity"), Ok(None));
        assert_eq!(Coding::parse(b"br"), Ok(Some(Coding::Brotli)));
        assert_eq!(Coding::parse(b"zstd"), Ok(Some(Coding::Zstd)));
        assert_eq!(Coding::parse(b"compress"), Err(Unsupported));
        assert_eq!(Coding::parse(b"gzip, br"), Err(Unsupported));
        let json = Bytes::from_static(JSON);
        assert_eq!(decoded(None, json.clone()), Some(json.clone()));
        let gz = Bytes::from(Coding::Gzip.encode(JSON));
        assert_eq!(decoded(Some(b"gzip"), gz), Some(json.clone()));
        assert_eq!(decoded(Some(b"compress"), json), None);
    }
}
