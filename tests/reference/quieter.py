"""Does a model give the same label to a recording played 20 dB quieter?

For each 16-bit mono WAV of the chosen speakers in a manifest (`path,label,speaker`), writes two
copies DB decibels quieter: 32-bit float (the exact scaled signal) and 16-bit with triangular
dither (what a quiet recording on a real device holds: its dither noise is lifted with the speech
by a level normalisation). Runs `duet predict --json` on the originals and on each set of copies
and prints how many labels stay the same. Standard library only.

    python3 tests/reference/quieter.py --duet target/release/duet \
        --manifest RAVDESS/manifest.csv --speakers ravdess_01,ravdess_06,ravdess_11,ravdess_16
"""

import argparse
import csv
import json
import os
import random
import struct
import subprocess
import sys
import tempfile
import wave


def read_pcm16(path):
    with wave.open(path, "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            sys.exit(f"{path}: expected 16-bit mono PCM")
        rate = w.getframerate()
        data = w.readframes(w.getnframes())
    return rate, struct.unpack(f"<{len(data) // 2}h", data)


def write_float(path, rate, samples):
    body = struct.pack(f"<{len(samples)}f", *samples)
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    with open(path, "wb") as f:
        f.write(b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(body)) + b"WAVE")
        f.write(b"fmt " + struct.pack("<I", len(fmt)) + fmt)
        f.write(b"data" + struct.pack("<I", len(body)) + body)


def write_pcm16(path, rate, samples):
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(struct.pack(f"<{len(samples)}h", *samples))


def results(duet, model, files):
    """`duet predict --json` of each file, as dicts."""
    extra = ["--model", model] if model else []
    out = subprocess.run(
        [duet, "predict", "--json", *extra, *files], check=True, capture_output=True, text=True
    ).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def labels(duet, model, files):
    return [r["label"] for r in results(duet, model, files)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duet", required=True, help="the duet binary")
    ap.add_argument("--model", help="a model file (default: the one the duet binary bundles)")
    ap.add_argument("--manifest", required=True, help="CSV path,label,speaker")
    ap.add_argument("--speakers", required=True, help="comma-separated speaker ids")
    ap.add_argument("--db", type=float, default=20.0, help="how much quieter (default 20)")
    ap.add_argument("--seed", type=int, default=1, help="the dither's seed")
    args = ap.parse_args()
    speakers = set(args.speakers.split(","))
    base = os.path.dirname(os.path.abspath(args.manifest))
    with open(args.manifest, newline="") as f:
        files = [os.path.join(base, r["path"]) for r in csv.DictReader(f) if r["speaker"] in speakers]
    if not files:
        sys.exit(f"no file of {sorted(speakers)} in {args.manifest}")
    gain = 10.0 ** (-args.db / 20.0)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        floats, ints = [], []
        for i, path in enumerate(files):
            rate, x = read_pcm16(path)
            scaled = [v * gain for v in x]
            floats.append(os.path.join(tmp, f"{i}-float.wav"))
            write_float(floats[-1], rate, [v / 32768.0 for v in scaled])
            dithered = (round(v + rng.random() - rng.random()) for v in scaled)
            ints.append(os.path.join(tmp, f"{i}-int16.wav"))
            write_pcm16(ints[-1], rate, [max(-32768, min(32767, v)) for v in dithered])
        original = labels(args.duet, args.model, files)
        for name, copies in (("float", floats), ("16-bit dithered", ints)):
            same = sum(a == b for a, b in zip(original, labels(args.duet, args.model, copies)))
            print(f"{args.db:g} dB quieter, {name}: same label for {same} of {len(files)}")


if __name__ == "__main__":
    main()
