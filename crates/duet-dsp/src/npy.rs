//! numpy `.npy` files (format version 1.0), little-endian float32, C order: what `duet features` writes
//! and the reference tests read.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// The `.npy` header (magic, version 1.0, length, dict padded to 64 bytes) for f32 data of `shape`.
fn header(shape: &[usize]) -> Vec<u8> {
    let dims = match shape.len() {
        1 => format!("({},)", shape[0]),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {dims}, }}");
    // Magic (6) + version (2) + length (2) + dict + '\n' is a multiple of 64.
    let unpadded = 10 + dict.len() + 1;
    dict.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    dict.push('\n');
    let mut out = Vec::with_capacity(10 + dict.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

fn check_len(shape: &[usize], data: &[f32]) -> io::Result<()> {
    let n: usize = shape.iter().product();
    if n != data.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "npy: shape {shape:?} holds {n} values but {} were given",
                data.len()
            ),
        ));
    }
    Ok(())
}

/// The bytes of a `.npy` file holding `data` with `shape` (little-endian f32, C order).
pub fn to_bytes(shape: &[usize], data: &[f32]) -> io::Result<Vec<u8>> {
    check_len(shape, data)?;
    let mut out = header(shape);
    out.reserve(4 * data.len());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    Ok(out)
}

/// Writes `data` with `shape` as a `.npy` file (little-endian float32, C order), streaming (no copy of
/// the array in memory).
pub fn write_f32(path: &Path, shape: &[usize], data: &[f32]) -> io::Result<()> {
    check_len(shape, data)?;
    let mut w = BufWriter::with_capacity(1 << 16, File::create(path)?);
    w.write_all(&header(shape))?;
    let mut block = [0u8; 4096];
    for chunk in data.chunks(1024) {
        for (b, v) in block.chunks_exact_mut(4).zip(chunk) {
            b.copy_from_slice(&v.to_le_bytes());
        }
        w.write_all(&block[..4 * chunk.len()])?;
    }
    w.flush()
}

/// Parses `.npy` bytes holding little-endian float32 (or float64, converted) in C order.
pub fn from_bytes(bytes: &[u8]) -> io::Result<(Vec<usize>, Vec<f32>)> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("not a .npy file (no \\x93NUMPY magic)".into()));
    }
    let (hlen, hstart) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(bad("truncated .npy header".into()));
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(bad(format!("unsupported .npy version {v}"))),
    };
    let header = bytes
        .get(hstart..hstart + hlen)
        .ok_or_else(|| bad("truncated .npy header".into()))?;
    let header = std::str::from_utf8(header).map_err(|_| bad("non-UTF-8 .npy header".into()))?;
    let field = |name: &str| -> io::Result<&str> {
        let key = format!("'{name}':");
        let i = header
            .find(&key)
            .ok_or_else(|| bad(format!("npy header lacks {key}")))?;
        Ok(header[i + key.len()..].trim_start())
    };
    let descr = field("descr")?;
    let width = if descr.starts_with("'<f4'") {
        4
    } else if descr.starts_with("'<f8'") {
        8
    } else {
        return Err(bad(format!(
            "npy dtype {} is not little-endian float32/64",
            &descr[..descr.len().min(8)]
        )));
    };
    if field("fortran_order")?.starts_with("True") {
        return Err(bad("npy in Fortran order is not supported".into()));
    }
    let shape_s = field("shape")?;
    let close = shape_s
        .find(')')
        .ok_or_else(|| bad("npy shape is not a tuple".into()))?;
    let shape: Vec<usize> = shape_s[1..close]
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| bad(format!("npy shape entry {s:?}")))
        })
        .collect::<io::Result<_>>()?;
    let n: usize = shape.iter().product();
    let body = &bytes[hstart + hlen..];
    if body.len() < n * width {
        return Err(bad(format!(
            "npy body has {} bytes, shape {shape:?} needs {}",
            body.len(),
            n * width
        )));
    }
    let data = if width == 4 {
        body[..n * 4]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    } else {
        body[..n * 8]
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect()
    };
    Ok((shape, data))
}

/// Reads a `.npy` file of little-endian float32 (or float64, converted to f32) in C order.
pub fn read_f32(path: &Path) -> io::Result<(Vec<usize>, Vec<f32>)> {
    let mut bytes = Vec::new();
    BufReader::new(File::open(path)?).read_to_end(&mut bytes)?;
    from_bytes(&bytes)
}
