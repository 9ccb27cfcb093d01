"""Does a model keep its answers when a recording goes through another microphone and room?

For each 16-bit mono WAV of the chosen speakers in a manifest (`path,label,speaker`), writes copies
through the channels a user's recording may have and a studio's does not:

- `phone`: the telephone band, 300-3400 Hz (sox `highpass 300 lowpass 3400`);
- `noise`: white noise at 20 dB SNR (seeded); `noise0`, `noise5`, `noise10`, `noise15` and `noise30` the
  same at 0, 5, 10, 15 and 30 dB (where a model trained with noise starts to fail);
- `pink`: pink noise at 20 dB SNR (seeded; `train --augment` adds white or brown noise, never pink);
- `room`: a small reverberant room (sox `reverb 50 50 50`);
- `laptop`: a 150-7000 Hz microphone in a damped room with noise at 30 dB SNR.

Runs `duet predict --json` on the originals and on each set of copies and prints, per channel, how
many labels stay the same, the accuracy against the manifest's labels (after `--label-map`), how
many copies `duet` marked noisy and the accuracy of those it did not.
Needs sox; otherwise the standard library only (and `quieter.py` beside it).

    python3 tests/reference/channel.py --duet target/release/duet \
        --manifest RAVDESS/manifest.csv --label-map calm=neutral \
        --speakers ravdess_01,ravdess_06,ravdess_11,ravdess_16
"""

import argparse
import csv
import math
import os
import random
import subprocess
import sys
import tempfile

from quieter import results
from quieter import read_pcm16, write_pcm16

CHANNELS = {
    # name: (sox effects, (noise colour, SNR in dB) or None)
    "phone": (["highpass", "300", "lowpass", "3400"], None),
    "noise": ([], ("white", 20.0)),
    "noise30": ([], ("white", 30.0)),
    "noise15": ([], ("white", 15.0)),
    "noise10": ([], ("white", 10.0)),
    "noise5": ([], ("white", 5.0)),
    "noise0": ([], ("white", 0.0)),
    "pink": ([], ("pink", 20.0)),
    "room": (["reverb", "50", "50", "50"], None),
    "laptop": (["highpass", "150", "lowpass", "7000", "reverb", "20", "50", "30"], ("white", 30.0)),
}


def pink(n, rng):
    """Pink (1/f) noise: white noise through Paul Kellet's economy filter (three one-pole sections)."""
    b0 = b1 = b2 = 0.0
    out = []
    for _ in range(n):
        w = rng.gauss(0.0, 1.0)
        b0 = 0.99765 * b0 + w * 0.0990460
        b1 = 0.96300 * b1 + w * 0.2965164
        b2 = 0.57000 * b2 + w * 1.0526913
        out.append(b0 + b1 + b2 + w * 0.1848)
    return out


def with_noise(samples, colour, snr_db, rng):
    """Adds white or pink noise at an SNR (dB) against the recording's mean power."""
    n = len(samples)
    noise = pink(n, rng) if colour == "pink" else [rng.gauss(0.0, 1.0) for _ in range(n)]
    power = sum(v * v for v in samples) / max(1, n)
    noise_power = sum(v * v for v in noise) / max(1, n)
    scale = math.sqrt(power / 10.0 ** (snr_db / 10.0) / max(noise_power, 1e-30))
    return [v + scale * e for v, e in zip(samples, noise)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duet", required=True, help="the duet binary")
    ap.add_argument("--model", help="a model file (default: the one the duet binary bundles)")
    ap.add_argument("--manifest", required=True, help="CSV path,label,speaker")
    ap.add_argument("--speakers", required=True, help="comma-separated speaker ids")
    ap.add_argument("--label-map", default="", help="FROM=TO,... applied to the manifest's labels")
    ap.add_argument("--channels", default=",".join(CHANNELS), help="which channels (default: all)")
    ap.add_argument("--seed", type=int, default=1, help="the noise's seed")
    args = ap.parse_args()
    mapping = dict(p.split("=", 1) for p in args.label_map.split(",") if p)
    speakers = set(args.speakers.split(","))
    base = os.path.dirname(os.path.abspath(args.manifest))
    with open(args.manifest, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["speaker"] in speakers]
    if not rows:
        sys.exit(f"no file of {sorted(speakers)} in {args.manifest}")
    files = [os.path.join(base, r["path"]) for r in rows]
    truth = [mapping.get(r["label"], r["label"]) for r in rows]
    names = args.channels.split(",")
    for name in names:
        if name not in CHANNELS:
            sys.exit(f"unknown channel {name!r}; known: {', '.join(CHANNELS)}")
    rng = random.Random(args.seed)

    def accuracy(labels):
        return 100.0 * sum(a == b for a, b in zip(labels, truth)) / len(truth)

    def report(name, answers, original):
        labels = [r["label"] for r in answers]
        noisy = [bool(r.get("noisy")) for r in answers]
        snr = sorted(r["speech_to_noise_db"] for r in answers if r.get("speech_to_noise_db") is not None)
        median = f", speech {snr[len(snr) // 2]:.1f} dB above the noise (median)" if snr else ""
        kept = [(a, t) for a, t, n in zip(labels, truth, noisy) if not n]
        rest = (
            f"accuracy of the rest {100.0 * sum(a == t for a, t in kept) / len(kept):.1f} % ({len(kept)})"
            if kept
            else "none left"
        )
        same = ""
        if original is not None:
            same = f"same label for {sum(a == b for a, b in zip(original, labels))} of {len(files)}; "
        counts = ", ".join(f"{c} {labels.count(c)}" for c in sorted(set(truth) | set(labels)))
        print(
            f"{name}: {same}accuracy {accuracy(labels):.1f} %"
            f" (answered: {counts}); marked noisy {sum(noisy)}, {rest}{median}"
        )
        return labels

    original = report("originals", results(args.duet, args.model, files), None)
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            effects, noise = CHANNELS[name]
            copies = []
            for i, path in enumerate(files):
                out = os.path.join(tmp, f"{name}-{i}.wav")
                if effects:
                    subprocess.run(["sox", "-G", "-V1", path, out, *effects], check=True)
                    src = out
                else:
                    src = path
                if noise is not None:
                    rate, x = read_pcm16(src)
                    noisy = with_noise(x, *noise, rng)
                    write_pcm16(out, rate, [max(-32768, min(32767, round(v))) for v in noisy])
                copies.append(out)
            report(name, results(args.duet, args.model, copies), original)


if __name__ == "__main__":
    main()
