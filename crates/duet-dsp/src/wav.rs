//! WAV decoding: RIFF and RF64/BW64 containers, `WAVE_FORMAT_PCM` (8/16/24/32-bit integer),
//! `WAVE_FORMAT_IEEE_FLOAT` (32/64-bit) and `WAVE_FORMAT_EXTENSIBLE` with either sub-format; any channel
//! count, mixed down to mono by averaging.
//!
//! Why not hound or symphonia: neither reads RF64 (hound 3.5, symphonia 0.6), the decoder has to stream
//! (a one-hour file must not be held several times in memory) and every malformed header needs its own
//! typed error. The container logic is small; it is tested against files written by libsndfile
//! (`tests/reference/make_fixtures.py`) in every format above.
//!
//! Sample scaling: unsigned 8-bit `(b - 128) / 128`, signed integers `v / 2^(bits-1)` of the container
//! width (so a 20-bit sample left-justified in 24 bits scales correctly), floats unchanged (a float WAV may
//! exceed ±1; it is not clipped). NaN or infinite float samples are rejected with
//! [`DspError::NonFinite`] naming the sample; they are never cleaned silently.

use std::io::{self, Read};

use crate::DspError;

/// Lowest accepted sample rate in Hz (below it the file is almost certainly corrupt).
pub const MIN_SAMPLE_RATE: u32 = 1_000;
/// Highest accepted sample rate in Hz.
pub const MAX_SAMPLE_RATE: u32 = 768_000;
/// Largest `fmt ` / `ds64` chunk read into memory; real ones are 16-40 bytes.
const MAX_HEADER_CHUNK: u32 = 1 << 16;

/// How one sample is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleEncoding {
    /// Unsigned 8-bit integer, offset 128.
    U8,
    /// Signed little-endian integer of 2, 3 or 4 bytes.
    Int {
        /// Container width in bytes (2..=4).
        bytes: u8,
    },
    /// IEEE 754 32-bit float.
    F32,
    /// IEEE 754 64-bit float.
    F64,
}

impl SampleEncoding {
    /// Bytes per sample in the container.
    pub fn bytes(self) -> usize {
        match self {
            SampleEncoding::U8 => 1,
            SampleEncoding::Int { bytes } => bytes as usize,
            SampleEncoding::F32 => 4,
            SampleEncoding::F64 => 8,
        }
    }
}

/// What the header says about the audio.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WavFormat {
    /// Samples per second per channel.
    pub sample_rate: u32,
    /// Number of interleaved channels.
    pub channels: u16,
    /// Sample storage.
    pub encoding: SampleEncoding,
    /// Bits per sample as declared (may be less than the container, e.g. 20 in 24).
    pub bits_per_sample: u16,
    /// Size of the data chunk in bytes; `None` when the header leaves it open (streamed RIFF writers put
    /// 0xFFFFFFFF there) and the data runs to the end of the file.
    pub data_bytes: Option<u64>,
    /// Whether the container is RF64/BW64 (64-bit sizes).
    pub rf64: bool,
}

impl WavFormat {
    /// Bytes of one frame (one sample of every channel).
    pub fn block_align(&self) -> usize {
        self.encoding.bytes() * self.channels as usize
    }

    /// Number of frames in the data chunk, when the header says.
    pub fn n_frames(&self) -> Option<u64> {
        self.data_bytes.map(|b| b / self.block_align() as u64)
    }
}

/// Reads the whole result of a read, distinguishing "clean end" from "ended part-way".
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn io_err(e: io::Error) -> DspError {
    DspError::Io {
        path: "<stream>".into(),
        source: e,
    }
}

fn describe_magic(head: &[u8]) -> String {
    let printable: String = head
        .iter()
        .take(4)
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        })
        .collect();
    let hex: Vec<String> = head.iter().take(4).map(|b| format!("{b:02x}")).collect();
    let guess = if head.starts_with(b"fLaC") {
        " (this is a FLAC file; convert it to WAV)"
    } else if head.starts_with(b"OggS") {
        " (this is an Ogg file; convert it to WAV)"
    } else if head.starts_with(b"ID3")
        || (head.len() >= 2 && head[0] == 0xFF && head[1] & 0xE0 == 0xE0)
    {
        " (this looks like an MP3 file; convert it to WAV)"
    } else if head.starts_with(b"FORM") {
        " (this is an AIFF/IFF file; convert it to WAV)"
    } else if head.len() >= 8 && &head[4..8] == b"ftyp" {
        " (this is an MP4/M4A file; convert it to WAV)"
    } else {
        ""
    };
    format!(
        "expected \"RIFF\" or \"RF64\" at byte 0, found \"{printable}\" ({}){guess}",
        hex.join(" ")
    )
}

fn codec_name(tag: u16) -> &'static str {
    match tag {
        0x0002 => "Microsoft ADPCM",
        0x0006 => "A-law",
        0x0007 => "mu-law",
        0x0011 => "IMA ADPCM",
        0x0031 => "GSM 6.10",
        0x0050 => "MPEG",
        0x0055 => "MPEG layer 3",
        0x00FF => "AAC",
        0x1610 => "HE-AAC",
        0x2000 => "AC-3",
        0xF1AC => "FLAC",
        _ => "unknown",
    }
}

/// Streaming WAV reader: parses the header on construction, then hands out mono samples block by block.
pub struct WavReader<R: Read> {
    reader: R,
    format: WavFormat,
    /// Data bytes not read yet (`None` = until end of stream).
    bytes_left: Option<u64>,
    /// Frames handed out so far.
    frame_index: u64,
    /// Bytes consumed so far (for messages).
    offset: u64,
    buf: Vec<u8>,
}

impl<R: Read> WavReader<R> {
    /// Parses the header up to the start of the `data` chunk.
    pub fn new(mut reader: R) -> Result<Self, DspError> {
        let mut head = [0u8; 12];
        let got = read_full(&mut reader, &mut head).map_err(io_err)?;
        if got == 0 {
            return Err(DspError::Empty);
        }
        let magic = &head[..got.min(4)];
        let rf64 = match magic {
            b"RIFF" => false,
            b"RF64" | b"BW64" => true,
            _ => return Err(DspError::NotWav(describe_magic(&head[..got]))),
        };
        if got < 12 {
            return Err(DspError::HeaderOnly(format!(
                "the file is {got} bytes long and ends inside the 12-byte RIFF header"
            )));
        }
        if &head[8..12] != b"WAVE" {
            let t: String = head[8..12]
                .iter()
                .map(|&b| if b.is_ascii_graphic() { b as char } else { '.' })
                .collect();
            return Err(DspError::NotWav(format!(
                "a RIFF file of type \"{t}\", not \"WAVE\""
            )));
        }
        let mut offset = 12u64;
        let mut ds64_data: Option<u64> = None;
        let mut fmt: Option<(u32, u16, SampleEncoding, u16)> = None;
        loop {
            let mut ch = [0u8; 8];
            let got = read_full(&mut reader, &mut ch).map_err(io_err)?;
            if got == 0 {
                return Err(DspError::HeaderOnly(format!(
                    "the file ends after {offset} bytes without a {} chunk",
                    if fmt.is_none() {
                        "\"fmt \""
                    } else {
                        "\"data\""
                    }
                )));
            }
            if got < 8 {
                return Err(DspError::Truncated(format!(
                    "the file ends inside a chunk header at byte {offset}"
                )));
            }
            let id = [ch[0], ch[1], ch[2], ch[3]];
            let size = u32::from_le_bytes([ch[4], ch[5], ch[6], ch[7]]);
            offset += 8;
            match &id {
                b"data" => {
                    let Some((sample_rate, channels, encoding, bits)) = fmt else {
                        return Err(DspError::BadHeader(format!(
                            "the \"data\" chunk at byte {} comes before any \"fmt \" chunk",
                            offset - 8
                        )));
                    };
                    let data_bytes = if rf64 && size == u32::MAX {
                        Some(ds64_data.ok_or_else(|| {
                            DspError::BadHeader(
                                "RF64 file whose data size is 0xFFFFFFFF but which has no \"ds64\" chunk".into(),
                            )
                        })?)
                    } else if !rf64 && size == u32::MAX {
                        None
                    } else {
                        Some(size as u64)
                    };
                    let format = WavFormat {
                        sample_rate,
                        channels,
                        encoding,
                        bits_per_sample: bits,
                        data_bytes,
                        rf64,
                    };
                    return Ok(WavReader {
                        reader,
                        bytes_left: data_bytes,
                        format,
                        frame_index: 0,
                        offset,
                        buf: Vec::new(),
                    });
                }
                b"fmt " | b"ds64" => {
                    if size > MAX_HEADER_CHUNK {
                        return Err(DspError::BadHeader(format!(
                            "the \"{}\" chunk at byte {} claims {size} bytes",
                            String::from_utf8_lossy(&id),
                            offset - 8
                        )));
                    }
                    let mut body = vec![0u8; size as usize + (size as usize & 1)];
                    let got = read_full(&mut reader, &mut body).map_err(io_err)?;
                    if got < size as usize {
                        return Err(DspError::Truncated(format!(
                            "the file ends inside the \"{}\" chunk ({got} of {size} bytes)",
                            String::from_utf8_lossy(&id)
                        )));
                    }
                    offset += got as u64;
                    let body = &body[..size as usize];
                    if &id == b"ds64" {
                        if size < 24 {
                            return Err(DspError::BadHeader(format!(
                                "the \"ds64\" chunk is {size} bytes; it needs at least 24"
                            )));
                        }
                        let mut d = [0u8; 8];
                        d.copy_from_slice(&body[8..16]);
                        ds64_data = Some(u64::from_le_bytes(d));
                    } else {
                        fmt = Some(parse_fmt(body)?);
                    }
                }
                _ => {
                    // Any other chunk (LIST, fact, bext, JUNK, ...): skip it, with its pad byte.
                    let skip = size as u64 + (size as u64 & 1);
                    let skipped =
                        io::copy(&mut (&mut reader).take(skip), &mut io::sink()).map_err(io_err)?;
                    offset += skipped;
                    if skipped < size as u64 {
                        return Err(DspError::HeaderOnly(format!(
                            "the file ends inside the \"{}\" chunk before any \"data\" chunk ({skipped} of {size} bytes)",
                            String::from_utf8_lossy(&id)
                        )));
                    }
                }
            }
        }
    }

    /// The header's description of the audio.
    pub fn format(&self) -> &WavFormat {
        &self.format
    }

    /// Appends up to `max_frames` mono samples (channel average) to `out`; returns how many were
    /// appended, 0 at the end of the data.
    pub fn read_mono(&mut self, out: &mut Vec<f32>, max_frames: usize) -> Result<usize, DspError> {
        let block = self.format.block_align();
        let want_frames = match self.bytes_left {
            Some(left) => (left / block as u64).min(max_frames as u64) as usize,
            None => max_frames,
        };
        // At most ~1 MiB per read whatever the channel count (65535 channels of f64 is legal).
        let want_frames = want_frames.min((1usize << 20).div_ceil(block).max(1));
        if want_frames == 0 {
            if let Some(left) = self.bytes_left
                && left > 0
            {
                return Err(DspError::Truncated(format!(
                    "the data chunk size is not a whole number of {block}-byte sample frames ({left} bytes left over)"
                )));
            }
            return Ok(0);
        }
        self.buf.resize(want_frames * block, 0);
        let got = read_full(&mut self.reader, &mut self.buf).map_err(io_err)?;
        self.offset += got as u64;
        if let Some(left) = self.bytes_left.as_mut() {
            if got < want_frames * block {
                let declared = self.format.data_bytes.unwrap_or(0);
                let have = declared - *left + got as u64;
                return Err(DspError::Truncated(format!(
                    "the data chunk declares {declared} bytes ({:.3} s) but the file ends after {have} of them ({:.3} s)",
                    declared as f64 / block as f64 / self.format.sample_rate as f64,
                    (have / block as u64) as f64 / self.format.sample_rate as f64
                )));
            }
            *left -= got as u64;
        } else if got % block != 0 {
            return Err(DspError::Truncated(format!(
                "the file ends in the middle of sample frame {} ({} of {block} bytes)",
                self.frame_index + (got / block) as u64,
                got % block
            )));
        }
        let frames = got / block;
        let start = out.len();
        out.reserve(frames);
        let ch = self.format.channels as usize;
        let data = &self.buf[..frames * block];
        match self.format.encoding {
            // Fast path for the common case (IEMOCAP and most corpora): 16-bit integer, exact in f32.
            SampleEncoding::Int { bytes: 2 } if ch == 1 => {
                out.resize(start + frames, 0.0);
                for (o, s) in out[start..].iter_mut().zip(data.chunks_exact(2)) {
                    *o = i16::from_le_bytes([s[0], s[1]]) as f32 * (1.0 / 32768.0);
                }
            }
            // Stereo 16-bit: the sum of two samples is exact in f32, and so is the scale 2^-16.
            SampleEncoding::Int { bytes: 2 } if ch == 2 => {
                out.resize(start + frames, 0.0);
                for (o, s) in out[start..].iter_mut().zip(data.chunks_exact(4)) {
                    let l = i16::from_le_bytes([s[0], s[1]]) as i32;
                    let r = i16::from_le_bytes([s[2], s[3]]) as i32;
                    *o = (l + r) as f32 * (1.0 / 65536.0);
                }
            }
            SampleEncoding::Int { bytes: 2 } => {
                let scale = 1.0 / (32768.0 * ch as f64);
                out.extend(data.chunks_exact(block).map(|frame| {
                    let sum: i64 = frame
                        .chunks_exact(2)
                        .map(|s| i16::from_le_bytes([s[0], s[1]]) as i64)
                        .sum();
                    (sum as f64 * scale) as f32
                }));
            }
            _ => self.convert_generic(data, out)?,
        }
        debug_assert_eq!(out.len() - start, frames);
        self.frame_index += frames as u64;
        Ok(frames)
    }
}

impl<R: Read> WavReader<R> {
    /// Any encoding and channel count: channel mean in f64, NaN/Inf checked per sample.
    fn convert_generic(&self, data: &[u8], out: &mut Vec<f32>) -> Result<(), DspError> {
        let block = self.format.block_align();
        let ch = self.format.channels as usize;
        let bytes = self.format.encoding.bytes();
        let inv_ch = 1.0 / ch as f64;
        for (fi, frame) in data.chunks_exact(block).enumerate() {
            let mut acc = 0.0f64;
            for (c, s) in frame.chunks_exact(bytes).enumerate() {
                let v = match self.format.encoding {
                    SampleEncoding::U8 => (s[0] as f64 - 128.0) / 128.0,
                    SampleEncoding::Int { bytes: 2 } => {
                        i16::from_le_bytes([s[0], s[1]]) as f64 / 32768.0
                    }
                    SampleEncoding::Int { bytes: 3 } => {
                        (i32::from_le_bytes([0, s[0], s[1], s[2]]) >> 8) as f64 / 8_388_608.0
                    }
                    SampleEncoding::Int { .. } => {
                        i32::from_le_bytes([s[0], s[1], s[2], s[3]]) as f64 / 2_147_483_648.0
                    }
                    SampleEncoding::F32 => {
                        let v = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
                        check_finite(v as f64, self.frame_index + fi as u64, c)?;
                        v as f64
                    }
                    SampleEncoding::F64 => {
                        let v =
                            f64::from_le_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]);
                        check_finite(v, self.frame_index + fi as u64, c)?;
                        v
                    }
                };
                acc += v;
            }
            let m = if ch == 1 { acc } else { acc * inv_ch };
            // A sum of finite f64 values can still overflow f32 (float WAVs with huge values).
            let m32 = m as f32;
            if !m32.is_finite() {
                return Err(DspError::NonFinite {
                    index: self.frame_index + fi as u64,
                    channel: 0,
                    kind: if m32 > 0.0 {
                        "+inf after conversion to 32-bit float"
                    } else {
                        "-inf after conversion to 32-bit float"
                    },
                });
            }
            out.push(m32);
        }
        Ok(())
    }
}

fn check_finite(v: f64, index: u64, channel: usize) -> Result<(), DspError> {
    if v.is_finite() {
        return Ok(());
    }
    Err(DspError::NonFinite {
        index,
        channel: channel as u16,
        kind: if v.is_nan() {
            "NaN"
        } else if v > 0.0 {
            "+inf"
        } else {
            "-inf"
        },
    })
}

/// Parses a `fmt ` chunk body into (rate, channels, encoding, bits).
fn parse_fmt(b: &[u8]) -> Result<(u32, u16, SampleEncoding, u16), DspError> {
    if b.len() < 16 {
        return Err(DspError::BadHeader(format!(
            "the \"fmt \" chunk is {} bytes; it needs at least 16",
            b.len()
        )));
    }
    let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let mut tag = u16_at(0);
    let channels = u16_at(2);
    let sample_rate = u32_at(4);
    let block_align = u16_at(12);
    let bits = u16_at(14);
    if tag == 0xFFFE {
        // WAVE_FORMAT_EXTENSIBLE: cbSize(2) validBits(2) channelMask(4) SubFormat GUID(16).
        if b.len() < 40 {
            return Err(DspError::BadHeader(format!(
                "WAVE_FORMAT_EXTENSIBLE \"fmt \" chunk is {} bytes; it needs 40",
                b.len()
            )));
        }
        const GUID_TAIL: [u8; 14] = [
            0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71,
        ];
        if b[26..40] != GUID_TAIL {
            return Err(DspError::UnsupportedCodec {
                tag: 0xFFFE,
                name: "WAVE_FORMAT_EXTENSIBLE with a non-standard sub-format GUID",
            });
        }
        tag = u16_at(24);
    }
    if channels == 0 {
        return Err(DspError::ZeroChannels);
    }
    if !(MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&sample_rate) {
        return Err(DspError::BadSampleRate {
            rate: sample_rate,
            min: MIN_SAMPLE_RATE,
            max: MAX_SAMPLE_RATE,
        });
    }
    let encoding = match tag {
        1 => match bits {
            1..=8 => SampleEncoding::U8,
            9..=16 => SampleEncoding::Int { bytes: 2 },
            17..=24 => SampleEncoding::Int { bytes: 3 },
            25..=32 => SampleEncoding::Int { bytes: 4 },
            _ => {
                return Err(DspError::UnsupportedSampleFormat(format!(
                    "{bits}-bit integer PCM (Duet reads 8, 16, 24 and 32-bit)"
                )));
            }
        },
        3 => match bits {
            32 => SampleEncoding::F32,
            64 => SampleEncoding::F64,
            _ => {
                return Err(DspError::UnsupportedSampleFormat(format!(
                    "{bits}-bit IEEE float (Duet reads 32 and 64-bit float)"
                )));
            }
        },
        other => {
            return Err(DspError::UnsupportedCodec {
                tag: other,
                name: codec_name(other),
            });
        }
    };
    let expect = encoding.bytes() * channels as usize;
    if block_align as usize != expect {
        return Err(DspError::BadHeader(format!(
            "block align is {block_align} bytes but {channels} channel(s) of {bits}-bit samples need {expect}"
        )));
    }
    Ok((sample_rate, channels, encoding, bits))
}

/// Decoded audio: mono samples (channel average) at the file's own rate.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodedAudio {
    /// Mono samples; integer PCM maps into [-1, 1), float is passed through.
    pub samples: Vec<f32>,
    /// The file's sample rate in Hz.
    pub sample_rate: u32,
    /// The file's channel count (before the mix-down).
    pub channels: u16,
}

/// Decodes a whole WAV file held in memory to mono f32 at its own sample rate.
pub fn decode_wav(bytes: &[u8]) -> Result<DecodedAudio, DspError> {
    let mut reader = WavReader::new(bytes)?;
    let fmt = reader.format().clone();
    let mut samples =
        Vec::with_capacity(fmt.n_frames().unwrap_or(0).min(bytes.len() as u64) as usize);
    while reader.read_mono(&mut samples, 1 << 16)? > 0 {}
    if samples.is_empty() {
        return Err(DspError::NoSamples);
    }
    Ok(DecodedAudio {
        samples,
        sample_rate: fmt.sample_rate,
        channels: fmt.channels,
    })
}
