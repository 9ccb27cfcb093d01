#!/usr/bin/env python3
"""Makes duet-dsp's reference fixtures in tests/fixtures/dsp/ (committed; the Rust tests read them).

  target/venv/bin/python tests/reference/make_fixtures.py [--wavs]

1. Test audio (only with --wavs, else the committed WAVs are reused so the references stay comparable):
   espeak-ng speech (two voices), a chirp, near-silence (LSB noise + digital zeros), a clipped signal, and a
   44.1 kHz stereo file. Every sample is an exact 16-bit value (docs/reference.md §2, last bullet: the
   opensmile package truncates to int16 before openSMILE sees the audio).
2. Features with the independent implementations: librosa.feature.melspectrogram (mels;
   docs/reference.md §3) and openSMILE through the opensmile package running tests/reference/mfcc12_e_d_a.conf
   (MFCC12_E_D_A; docs/reference.md §2). Files: <name>.mel_<nfft>.npy [n_mels, frames] float32 and
   <name>.mfcc.npy [frames, 39] float32.
3. For the 44.1 kHz stereo file: librosa.load(sr=16000) (channel mean + soxr_hq) quantised to 16 bits is
   written as stereo_44k.soxr16k.wav and gets features like the others (the resamplers differ, so the Rust
   tests check features on this common 16 kHz input, and rubato against soxr separately).
4. Decoder fixtures: a short excerpt written by libsndfile (soundfile) as RIFF PCM 8/16/24/32, float 32/64,
   WAVE_FORMAT_EXTENSIBLE (3 channels) and RF64; decode.<form>.wav plus decode.<form>.npy, the mono
   (channel-mean) samples as libsndfile reads them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "dsp"
CONF = ROOT / "tests" / "reference" / "mfcc12_e_d_a.conf"
SR = 16000
N_FFTS = (256, 512, 1024)  # paper: 256 + 512, authors: 512 + 1024

SENTENCE_1 = "Kids are talking by the door. I can't believe you did that again!"
SENTENCE_2 = "Dogs are sitting by the door, and nobody seems to care."


def to_int16_grid(x: np.ndarray) -> np.ndarray:
    """Rounds to the nearest 16-bit value, clipped, as float32 in [-1, 1)."""
    q = np.clip(np.round(np.asarray(x, dtype=np.float64) * 32768.0), -32768, 32767)
    return (q / 32768.0).astype(np.float32)


def write16(path: Path, x: np.ndarray, sr: int = SR) -> None:
    q = np.clip(np.round(np.asarray(x, dtype=np.float64) * 32768.0), -32768, 32767).astype(np.int16)
    sf.write(str(path), q, sr, subtype="PCM_16", format="WAV")


def espeak(text: str, voice: str) -> np.ndarray:
    """espeak-ng speech resampled to 16 kHz (soxr, deterministic)."""
    import soxr

    exe = shutil.which("espeak-ng")
    if exe is None:
        sys.exit("espeak-ng not found (apt-get install espeak-ng)")
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "s.wav"
        subprocess.run([exe, "-v", voice, "-s", "150", "-w", str(p), text], check=True)
        y, sr = sf.read(str(p), dtype="float64")
    if y.ndim > 1:
        y = y.mean(axis=1)
    y = soxr.resample(y, sr, SR, quality="HQ")
    return y


def make_wavs() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20240601)
    s1 = espeak(SENTENCE_1, "en-us")
    s2 = espeak(SENTENCE_2, "en+f3")
    s1 = s1[: int(3.0 * SR)] * (0.7 / np.max(np.abs(s1)))
    s2 = s2[: int(2.5 * SR)] * (0.5 / np.max(np.abs(s2)))
    write16(OUT / "speech_a.wav", s1)
    write16(OUT / "speech_b.wav", s2)

    t = np.arange(int(2.0 * SR)) / SR
    f0, f1, dur = 50.0, 7900.0, 2.0
    phase = 2 * np.pi * f0 * dur / np.log(f1 / f0) * (np.exp(t / dur * np.log(f1 / f0)) - 1)
    write16(OUT / "chirp.wav", 0.5 * np.sin(phase))

    # Near-silence: digital zeros, then +-1..2 LSB noise, then a -60 dBFS tone burst, then zeros.
    n = int(1.5 * SR)
    x = np.zeros(n)
    x[4000:14000] = rng.integers(-2, 3, 10000) / 32768.0
    tt = np.arange(4000) / SR
    x[15000:19000] = 0.001 * np.sin(2 * np.pi * 440 * tt)
    write16(OUT / "near_silence.wav", x)

    # Clipped: speech driven 8x into the rails.
    write16(OUT / "clipped.wav", np.clip(s1[: int(2.0 * SR)] * 8.0, -1.0, 32767 / 32768))

    # 44.1 kHz stereo: speech left, the other voice + a 10 kHz tone (above 8 kHz: must vanish) right.
    import soxr

    sr44 = 44100
    left = soxr.resample(s1[: int(2.0 * SR)], SR, sr44, quality="VHQ")
    right = soxr.resample(s2[: int(2.0 * SR)], SR, sr44, quality="VHQ")
    n44 = min(len(left), len(right))
    tt = np.arange(n44) / sr44
    right = 0.6 * right[:n44] + 0.2 * np.sin(2 * np.pi * 10000 * tt)
    st = np.stack([left[:n44] * 0.9, right], axis=1)
    q = np.clip(np.round(st * 32768.0), -32768, 32767).astype(np.int16)
    sf.write(str(OUT / "stereo_44k.wav"), q, sr44, subtype="PCM_16", format="WAV")


def librosa_mels(y: np.ndarray) -> dict[int, np.ndarray]:
    import librosa

    out = {}
    for n_fft in N_FFTS:
        m = librosa.feature.melspectrogram(
            y=y, sr=SR, n_fft=n_fft, hop_length=n_fft // 2, n_mels=n_fft // 4
        )
        out[n_fft] = np.ascontiguousarray(m, dtype=np.float32)
    return out


def opensmile_mfcc(y: np.ndarray) -> np.ndarray:
    import opensmile

    smile = opensmile.Smile(feature_set=str(CONF), feature_level="mfcc39")
    df = smile.process_signal(y, SR)
    return np.ascontiguousarray(df.to_numpy(dtype=np.float32))


def features(name: str, y: np.ndarray) -> dict:
    y = np.asarray(y, dtype=np.float32)
    for n_fft, m in librosa_mels(y).items():
        np.save(OUT / f"{name}.mel_{n_fft}.npy", m)
    mf = opensmile_mfcc(y)
    np.save(OUT / f"{name}.mfcc.npy", mf)
    return {"samples": int(len(y)), "mfcc_frames": int(mf.shape[0])}


def decode_fixtures() -> None:
    y, sr = sf.read(str(OUT / "speech_a.wav"), dtype="float64")
    x = y[8000 : 8000 + 4000]
    forms = {
        "pcm_u8": dict(subtype="PCM_U8", format="WAV", ch=1),
        "pcm16": dict(subtype="PCM_16", format="WAV", ch=1),
        "pcm24": dict(subtype="PCM_24", format="WAV", ch=2),
        "pcm32": dict(subtype="PCM_32", format="WAV", ch=1),
        "float32": dict(subtype="FLOAT", format="WAV", ch=2),
        "float64": dict(subtype="DOUBLE", format="WAV", ch=1),
        "extensible_3ch": dict(subtype="PCM_24", format="WAVEX", ch=3),
        "rf64": dict(subtype="PCM_16", format="RF64", ch=2),
        "rf64_float": dict(subtype="FLOAT", format="RF64", ch=1),
    }
    for form, f in forms.items():
        ch = f["ch"]
        cols = [x * (1.0 - 0.25 * c) for c in range(ch)]  # channels differ, so the mean is checked
        data = np.stack(cols, axis=1) if ch > 1 else cols[0]
        if f["subtype"] in ("PCM_U8",):
            data = np.round(np.asarray(data) * 128) / 128
        path = OUT / f"decode.{form}.wav"
        sf.write(str(path), data, SR if form != "pcm24" else 22050, subtype=f["subtype"], format=f["format"])
        back, _ = sf.read(str(path), dtype="float64", always_2d=True)
        np.save(OUT / f"decode.{form}.npy", back.mean(axis=1).astype(np.float32))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wavs", action="store_true", help="re-synthesise the test WAVs too")
    args = ap.parse_args()
    if args.wavs or not (OUT / "speech_a.wav").exists():
        make_wavs()

    import librosa
    import opensmile

    meta = {
        "librosa": librosa.__version__,
        "opensmile": opensmile.__version__,
        "numpy": np.__version__,
        "files": {},
    }
    for name in ("speech_a", "speech_b", "chirp", "near_silence", "clipped"):
        y, sr = sf.read(str(OUT / f"{name}.wav"), dtype="float32")
        assert sr == SR and y.ndim == 1, name
        meta["files"][name] = features(name, y)

    # 44.1 kHz stereo: librosa's own load path (mean of channels, soxr_hq), on the 16-bit grid.
    y16 = to_int16_grid(librosa.load(str(OUT / "stereo_44k.wav"), sr=SR, mono=True)[0])
    write16(OUT / "stereo_44k.soxr16k.wav", y16)
    meta["files"]["stereo_44k.soxr16k"] = features("stereo_44k.soxr16k", y16)

    decode_fixtures()
    (OUT / "fixtures.json").write_text(json.dumps(meta, indent=1) + "\n")
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {len(list(OUT.iterdir()))} files, {total / 1e6:.2f} MB, to {OUT}")


if __name__ == "__main__":
    main()
