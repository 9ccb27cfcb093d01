#!/usr/bin/env python3
"""The peer of `cargo run --release -p duet-dsp --example bench_dsp`: the paper's front end with the
reference tools on one thread — librosa.load (decode, channel mean, soxr resampling to 16 kHz), the two
librosa.feature.melspectrogram calls, and openSMILE MFCC12_E_D_A through the opensmile package
(tests/reference/mfcc12_e_d_a.conf).

  target/venv/bin/python tests/reference/bench_dsp.py [--preset paper|authors] [--runs N] FILES...

One warm-up pass, then N (default 7) timed passes over all files; prints one JSON line with the same keys
as the Rust side: {"tool", "preset", "files", "audio_s", "runs_s", "median_s", "x_realtime"}.
"""

from __future__ import annotations

import os

# One thread everywhere (set before numpy/numba import their thread pools).
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
           "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import librosa  # noqa: E402
import numpy as np  # noqa: E402
import opensmile  # noqa: E402

CONF = Path(__file__).resolve().parent / "mfcc12_e_d_a.conf"
SR = 16000
PRESETS = {"paper": (256, 512), "authors": (512, 1024)}


def front_end(path: str, smile: opensmile.Smile, n_ffts: tuple[int, int]) -> float:
    y, _ = librosa.load(path, sr=SR, mono=True)
    for n_fft in n_ffts:
        librosa.feature.melspectrogram(y=y, sr=SR, n_fft=n_fft, hop_length=n_fft // 2, n_mels=n_fft // 4)
    smile.process_signal(y, SR)
    return len(y) / SR


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="paper")
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    try:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    except (AttributeError, OSError):
        pass
    smile = opensmile.Smile(feature_set=str(CONF), feature_level="mfcc39")
    n_ffts = PRESETS[args.preset]
    audio_s = sum(front_end(f, smile, n_ffts) for f in args.files)  # warm-up
    runs = []
    for _ in range(max(1, args.runs)):
        t0 = time.perf_counter()
        for f in args.files:
            front_end(f, smile, n_ffts)
        runs.append(time.perf_counter() - t0)
    med = statistics.median(runs)
    print(json.dumps({
        "tool": "librosa+opensmile",
        "preset": args.preset,
        "files": len(args.files),
        "audio_s": round(audio_s, 3),
        "runs_s": [round(r, 6) for r in runs],
        "median_s": round(med, 6),
        "x_realtime": round(audio_s / med, 1),
        "versions": {"librosa": librosa.__version__, "opensmile": opensmile.__version__,
                     "numpy": np.__version__},
    }))


if __name__ == "__main__":
    main()
