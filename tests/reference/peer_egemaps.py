#!/usr/bin/env python3
"""A measurement, not a reference: the classic speech-emotion peer on the same folds as `train`.

openSMILE's eGeMAPSv02 functionals (88 values per utterance: pitch, loudness, jitter, shimmer,
formants, spectral balance, MFCC statistics) with a class-balanced logistic regression and an RBF
SVM, each standardised on the fold's training utterances, on the speaker groups of `train
--protocol speakers:K` (group g holds the corpus's sorted speakers g, g+K, g+2K, ...). Given a
`train` run (`--run RUN`), it trains on exactly that run's training utterances per fold (the
validation speakers of RUN/report.md left out, as the fold model was) and also scores the run's fold
models (RUN/folds/groupN.safetensors through `duet predict --json`) and the mean of their
probabilities with the regression's: what a second, hand-engineered view of the voice adds.

    python3 tests/reference/peer_egemaps.py --manifest RAVDESS/manifest.csv --label-map calm=neutral \\
        [--folds 5] [--run target/experiments/RUN --duet target/release/duet]

Needs opensmile and numpy (tests/reference/requirements.txt) and scikit-learn (`pip install
scikit-learn`). Prints UA (the mean of the classes' recalls) per fold and the mean ± std over folds.
"""

import argparse
import csv
import hashlib
import json
import os
import re
import subprocess
import sys

import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--manifest", required=True, help="path,label,speaker CSV")
    ap.add_argument("--label-map", default="", help="e.g. calm=neutral (as train's)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--run", help="a train run directory with folds/groupN.safetensors and report.md")
    ap.add_argument("--duet", default="target/release/duet")
    ap.add_argument("--cache", default="target/peer_egemaps", help="where the functionals are kept")
    a = ap.parse_args()
    try:
        import opensmile
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import SVC
    except ImportError as e:
        sys.exit(f"peer_egemaps.py needs opensmile and scikit-learn ({e}): pip install opensmile scikit-learn")

    root = os.path.dirname(os.path.abspath(a.manifest))
    rows = list(csv.DictReader(open(a.manifest)))
    mapping = dict(kv.split("=") for kv in a.label_map.split(",") if kv)
    keep = [r for r in rows if mapping.get(r["label"], r["label"]) != ""]
    y = np.array([mapping.get(r["label"], r["label"]) for r in keep])
    spk = np.array([r["speaker"] for r in keep])
    classes = sorted(set(y))
    speakers = sorted(set(spk))

    os.makedirs(a.cache, exist_ok=True)
    key = hashlib.sha256("\n".join(os.path.join(root, r["path"]) for r in keep).encode()).hexdigest()[:16]
    cache = os.path.join(a.cache, f"egemaps-{key}.npy")
    if os.path.exists(cache):
        X = np.load(cache)
    else:
        smile = opensmile.Smile(
            feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.Functionals
        )
        X = []
        for i, r in enumerate(keep):
            X.append(smile.process_file(os.path.join(root, r["path"])).values[0])
            if (i + 1) % 100 == 0:
                print(f"eGeMAPS: {i + 1}/{len(keep)}", file=sys.stderr, flush=True)
        X = np.array(X)
        np.save(cache, X)

    def ua(truth, pred):
        return float(np.mean([np.mean(pred[truth == c] == c) for c in classes if (truth == c).any()]))

    def pick(p):
        return np.array(classes)[p.argmax(1)]

    report = open(os.path.join(a.run, "report.md")).read() if a.run else ""
    names = ["eGeMAPS logistic regression", "eGeMAPS RBF SVM"]
    if a.run:
        names += ["Duet fold model", "mean of Duet's and the regression's probabilities"]
    scores = []
    for g in range(a.folds):
        test = np.isin(spk, speakers[g :: a.folds])
        train = ~test
        if a.run:
            m = re.search(rf"\*\*group{g + 1}\*\*: test group{g + 1} \(\d+ utt\.\); valid (\S+) \+ (\S+) ", report)
            if not m:
                sys.exit(f"{a.run}/report.md names no validation speakers for group{g + 1}")
            train &= ~np.isin(spk, m.groups())
        lr = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=5000, class_weight="balanced"))
        svm = make_pipeline(StandardScaler(), SVC(C=1.0, class_weight="balanced"))
        lr.fit(X[train], y[train])
        svm.fit(X[train], y[train])
        p_lr = lr.predict_proba(X[test])
        assert list(lr.classes_) == classes
        row = [ua(y[test], pick(p_lr)), ua(y[test], svm.predict(X[test]))]
        if a.run:
            files = [os.path.join(root, r["path"]) for r, t in zip(keep, test) if t]
            out = subprocess.run(
                [a.duet, "predict", "--json", "--model", os.path.join(a.run, "folds", f"group{g + 1}.safetensors")]
                + files,
                capture_output=True, text=True, check=True,
            ).stdout
            p_duet = np.array([[json.loads(l)["probabilities"][c] for c in classes] for l in out.splitlines()])
            row += [ua(y[test], pick(p_duet)), ua(y[test], pick(0.5 * p_duet + 0.5 * p_lr))]
        scores.append(row)
        print(f"group{g + 1} ({int(train.sum())} train / {int(test.sum())} test): "
              + ", ".join(f"{n} {100 * v:.1f}" for n, v in zip(names, row)), flush=True)
    s = 100 * np.array(scores)
    for n, m, sd in zip(names, s.mean(0), s.std(0)):
        print(f"UA {n}: {m:.1f} ± {sd:.1f} %")


if __name__ == "__main__":
    main()
