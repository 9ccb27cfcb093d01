//! Helpers shared by the duet-data integration tests.
#![allow(dead_code)]

use std::fs;
use std::path::Path;

/// A tiny but valid 16 kHz mono 16-bit PCM WAV (`n` samples of a ramp).
pub fn tiny_wav(n: usize) -> Vec<u8> {
    let data_len = (n * 2) as u32;
    let mut b = Vec::new();
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data_len).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&16000u32.to_le_bytes());
    b.extend_from_slice(&32000u32.to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data_len.to_le_bytes());
    for i in 0..n {
        b.extend_from_slice(&((i as i16).wrapping_mul(97)).to_le_bytes());
    }
    b
}

/// Writes `bytes` to `path`, creating its parent directories.
pub fn write(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}
