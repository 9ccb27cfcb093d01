#!/usr/bin/env python3
"""Self-checks of the Python reference implementations (forward_numpy.py, torch_model.py).

    python -m pytest tests/reference          (or)          python tests/reference/test_reference.py

Model files are built here directly from docs/weights.md (names, shapes, metadata), independently of
the readers' own shape tables. Torch checks are skipped when torch is not installed; numpy checks always run.
"""

import json
import math
import os
import subprocess
import sys
import tempfile
import unittest

import numpy as np
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import forward_numpy as fn  # noqa: E402

try:
    import torch  # noqa: F401
    HAVE_TORCH = True
except ImportError:  # pragma: no cover
    HAVE_TORCH = False

KINDS = ["base1", "base2", "base3", "base4", "base5", "base6", "ds-lstm", "dual"]
BRANCHES = {"base1": ["mfcc"], "base2": ["narrow"], "base3": ["wide"], "base4": ["narrow", "wide"],
            "base5": ["mfcc", "narrow", "wide"], "base6": ["mfcc", "narrow"], "ds-lstm": ["ds"],
            "dual": ["mfcc", "ds"]}
WEIGHTS = {"base1": {"mfcc": 1.0}, "base2": {"narrow": 1.0}, "base3": {"wide": 1.0},
           "base4": {"narrow": 0.5, "wide": 0.5}, "base5": {"mfcc": 0.5, "narrow": 0.25, "wide": 0.25},
           "base6": {"mfcc": 0.5, "narrow": 0.5}, "ds-lstm": {"ds": 1.0}, "dual": {"mfcc": 0.5, "ds": 0.5}}
CLASSES = ["angry", "happy", "neutral", "sad"]


def need_torch():
    if not HAVE_TORCH:
        raise unittest.SkipTest("torch not installed")
    import torch_model
    return torch_model


# ----------------------------------------------------------------------------------------------------
# model files from docs/weights.md


def make_config(kind, preset="authors", small=True, hidden=8, layers=2):
    if preset == "authors":
        mels, nfft, frames = (128, 256), (512, 1024), (230, 120)
        cnn = {"channels": [64, 16], "kernel_narrow": [4, 2], "kernel_wide": [2, 4],
               "padding_narrow": [1, 0], "padding_wide": [0, 1], "pool": 2}
        alignment = "triples"
    else:
        mels, nfft, frames = (64, 128), (256, 512), (460, 230)
        cnn = {"channels": [64, 16], "kernel_narrow": [4, 4], "kernel_wide": [4, 4],
               "padding_narrow": [0, 0], "padding_wide": [0, 0], "pool": 2}
        alignment = "pairs"
    if small:
        mels, frames = (16, 32), (60, 30)
        cnn["channels"] = [6, 4]
    else:
        hidden = 200
    return {
        "format_version": 1, "kind": kind, "preset": preset, "classes": CLASSES, "mfcc_dim": 39,
        "hidden": hidden, "layers": layers, "cnn": cnn, "alignment": alignment, "bn_eps": 1e-5,
        "resize": {"narrow_frames": frames[0], "wide_frames": frames[1]},
        "features": {"sample_rate": 16000,
                     "narrow": {"n_fft": nfft[0], "hop_length": nfft[0] // 2, "n_mels": mels[0]},
                     "wide": {"n_fft": nfft[1], "hop_length": nfft[1] // 2, "n_mels": mels[1]},
                     "log_floor": 1e-10},
        "branch_weights": dict(WEIGHTS[kind]),
    }


def docs_cnn(n, k, p, pool):
    """docs 4.2: conv n -> n + 2p - k + 1, pool n -> floor(n / pool), twice."""
    for _ in range(2):
        n = (n + 2 * p - k + 1) // pool
    return n


def docs_dims(config):
    """(X0, Y, T1, T2, T3) of docs 4.2-4.3."""
    c = config["cnn"]
    c1 = c["channels"][1]
    f = config["features"]
    fn_ = docs_cnn(f["narrow"]["n_mels"], c["kernel_narrow"][0], c["padding_narrow"][0], c["pool"])
    fw = docs_cnn(f["wide"]["n_mels"], c["kernel_wide"][0], c["padding_wide"][0], c["pool"])
    t1 = docs_cnn(config["resize"]["narrow_frames"], c["kernel_narrow"][1], c["padding_narrow"][1], c["pool"])
    t2 = docs_cnn(config["resize"]["wide_frames"], c["kernel_wide"][1], c["padding_wide"][1], c["pool"])
    n = t1 // 2 if config["alignment"] == "pairs" else t1 // 2 - 1
    return c1 * fn_, c1 * fw, t1, t2, min(n, t2)


def make_tensors(config, rng, steps=None, zeros=False):
    """Every tensor of docs/weights.md sections 4-5 for the config's kind (float32)."""
    H, L, C = config["hidden"], config["layers"], len(config["classes"])
    out = {}

    def w(name, *shape, fan_in=None, kind="weight"):
        if zeros:
            out[name] = np.zeros(shape, np.float32)
            return
        if kind == "weight":
            a = rng.normal(0, 1.0 / math.sqrt(fan_in or shape[-1]), shape)
        elif kind == "bias":
            a = rng.normal(0, 0.1, shape)
        elif kind == "bn_weight":
            a = 1.0 + rng.normal(0, 0.1, shape)
        elif kind == "mean":
            a = rng.normal(0, 0.1, shape)
        elif kind == "var":
            a = rng.uniform(0.5, 1.5, shape)
        out[name] = a.astype(np.float32)

    def lstm(prefix, in0):
        for k in range(L):
            i = in0 if k == 0 else H
            w(f"{prefix}.l{k}.weight_ih", 4 * H, i)
            w(f"{prefix}.l{k}.weight_hh", 4 * H, H)
            w(f"{prefix}.l{k}.bias_ih", 4 * H, kind="bias")
            w(f"{prefix}.l{k}.bias_hh", 4 * H, kind="bias")

    def bn(prefix, n):
        w(prefix + ".weight", n, kind="bn_weight")
        w(prefix + ".bias", n, kind="bias")
        w(prefix + ".running_mean", n, kind="mean")
        w(prefix + ".running_var", n, kind="var")

    def cnn(prefix, which):
        c0, c1 = config["cnn"]["channels"]
        kf, kt = config["cnn"][f"kernel_{which}"]
        w(f"{prefix}.conv0.weight", c0, 1, kf, kt, fan_in=kf * kt)
        w(f"{prefix}.conv0.bias", c0, kind="bias")
        bn(f"{prefix}.bn0", c0)
        w(f"{prefix}.conv1.weight", c1, c0, kf, kt, fan_in=c0 * kf * kt)
        w(f"{prefix}.conv1.bias", c1, kind="bias")
        bn(f"{prefix}.bn1", c1)

    for b in BRANCHES[config["kind"]]:
        if b == "mfcc":
            lstm("mfcc.lstm", config["mfcc_dim"])
        elif b in ("narrow", "wide"):
            cnn(f"{b}.cnn", b)
            X0, Y, *_ = docs_dims(config)
            lstm(f"{b}.lstm", X0 if b == "narrow" else Y)
        else:
            cnn("ds.cnn_narrow", "narrow")
            cnn("ds.cnn_wide", "wide")
            X0, Y, _, _, T3 = docs_dims(config)
            S = T3 if steps is None else steps
            for k in range(L):
                X = X0 if k == 0 else H
                p = f"ds.dslstm.l{k}"
                w(f"{p}.gates.weight", 4 * H, X + Y + H)
                w(f"{p}.gates.bias", 4 * H, kind="bias")
                w(f"{p}.cand_t.weight", H, X + H)
                w(f"{p}.cand_t.bias", H, kind="bias")
                w(f"{p}.cand_f.weight", H, Y + H)
                w(f"{p}.cand_f.bias", H, kind="bias")
                w(f"{p}.rbn.weight", 4 * H, kind="bn_weight")
                w(f"{p}.rbn.bias", 4 * H, kind="bias")
                w(f"{p}.rbn.running_mean", S, 4 * H, kind="mean")
                w(f"{p}.rbn.running_var", S, 4 * H, kind="var")
                if not zeros:  # sigmoid outputs: mean ~0.5, small variance
                    out[f"{p}.rbn.weight"] = (0.1 + rng.normal(0, 0.3, 4 * H)).astype(np.float32)
                    out[f"{p}.rbn.running_mean"] += np.float32(0.5)
                    out[f"{p}.rbn.running_var"] *= np.float32(0.05)
                bn(f"{p}.out_bn", H)
        w(f"{b}.head.weight", C, H)
        w(f"{b}.head.bias", C, kind="bias")
    return out


def make_features(config, rng, t_mfcc=None, t_narrow=None, t_wide=None):
    f = config["features"]
    t_mfcc = t_mfcc or int(rng.integers(20, 50))
    t_narrow = t_narrow or int(rng.integers(40, 90))
    t_wide = t_wide or (t_narrow + 1) // 2 + 1
    mfcc = (rng.normal(0, 5, (t_mfcc, config["mfcc_dim"]))).astype(np.float32)
    mn = (np.exp(rng.normal(0, 2, (f["narrow"]["n_mels"], t_narrow))) * 1e-3).astype(np.float32)
    mw = (np.exp(rng.normal(0, 2, (f["wide"]["n_mels"], t_wide))) * 1e-3).astype(np.float32)
    mn[:, 0] = 0.0  # digital silence: exercises the log floor
    mw[:3, -1] = 0.0
    return {"mfcc": mfcc, "mel_narrow": mn, "mel_wide": mw}


def images(config, feats_list):
    fl = config["features"]["log_floor"]
    n = np.stack([fn.spectrogram_image(f["mel_narrow"], config["resize"]["narrow_frames"], fl)
                  for f in feats_list])
    w = np.stack([fn.spectrogram_image(f["mel_wide"], config["resize"]["wide_frames"], fl)
                  for f in feats_list])
    return n, w


def pad_mfcc(feats_list):
    lens = np.array([f["mfcc"].shape[0] for f in feats_list])
    m = np.zeros((len(feats_list), lens.max(), feats_list[0]["mfcc"].shape[1]))
    for i, f in enumerate(feats_list):
        m[i, :lens[i]] = f["mfcc"]
    return m, lens


def calibrate(tensors, config, rng, batch=6):
    """Set every running statistic to the batch statistics of a random batch (momentum 1), so that eval
    activations are normalised rather than saturated: makes the comparisons sensitive."""
    t64 = {k: v.astype(np.float64) for k, v in tensors.items()}
    feats = [make_features(config, rng) for _ in range(batch)]
    m, lens = pad_mfcc(feats)
    n, w = images(config, feats)
    r = fn.forward_batch(t64, config, m, lens, n, w, training=True, momentum=1.0)
    for k, v in r["running"].items():
        tensors[k] = v.astype(np.float32)
    return tensors


def build(kind, preset="authors", seed=0, steps=None, **kw):
    rng = np.random.default_rng(seed)
    config = make_config(kind, preset, **kw)
    tensors = make_tensors(config, rng, steps=steps)
    if any(b != "mfcc" for b in BRANCHES[kind]):
        calibrate(tensors, config, rng)
    return config, tensors


def write_model(path, config, tensors, dtype=np.float32):
    save_file({k: np.ascontiguousarray(v.astype(dtype)) for k, v in tensors.items()}, path,
              metadata={"duet.config": json.dumps(config)})


def write_featdir(d, config, feats):
    os.makedirs(d, exist_ok=True)
    np.save(os.path.join(d, "mfcc.npy"), feats["mfcc"])
    np.save(os.path.join(d, f"mel_{config['features']['narrow']['n_fft']}.npy"), feats["mel_narrow"])
    np.save(os.path.join(d, f"mel_{config['features']['wide']['n_fft']}.npy"), feats["mel_wide"])


def f64(tensors):
    return {k: v.astype(np.float64) for k, v in tensors.items()}


# ----------------------------------------------------------------------------------------------------
# hand-computed cases


def test_resize_index_rule():
    assert fn.resize_indices(5, 3) == [0, 1, 3]
    assert fn.resize_indices(3, 7) == [0, 0, 0, 1, 1, 2, 2]
    assert fn.resize_indices(4, 4) == [0, 1, 2, 3]
    assert fn.resize_indices(460, 230) == list(range(0, 460, 2))
    assert fn.resize_indices(1, 3) == [0, 0, 0]
    mel = np.array([[1.0, 2.0, 0.0, 1e-12, 10.0]])
    img = fn.spectrogram_image(mel, 3, 1e-10)  # frames 0, 1, 3
    np.testing.assert_allclose(img, [[0.0, 10 * math.log10(2.0), -100.0]], atol=1e-12)


def test_interpolate_matches_index_rule():
    tm = need_torch()
    import torch
    for t_raw in list(range(1, 300)) + [461, 917, 1234]:
        for target in (120, 230, 460, 7):
            x = torch.arange(t_raw, dtype=torch.float64)[None]
            got = tm.resize_mel(x, target)[0].long().tolist()
            assert got == fn.resize_indices(t_raw, target), (t_raw, target)


def sig(v):
    return 1.0 / (1.0 + math.exp(-v))


def test_lstm_hand_h1():
    # H = 1, in = 1, one layer; rows i, f, g, o
    w_ih = np.array([[0.5], [-0.3], [0.8], [0.2]])
    w_hh = np.array([[0.1], [0.4], [-0.6], [0.7]])
    b_ih = np.array([0.05, 0.1, -0.2, 0.0])
    b_hh = np.array([0.0, 0.2, 0.1, -0.1])
    t = {"x.l0.weight_ih": w_ih, "x.l0.weight_hh": w_hh, "x.l0.bias_ih": b_ih, "x.l0.bias_hh": b_hh}
    xs = [1.0, -2.0, 0.5]
    h = c = 0.0
    want = []
    for x in xs:
        z = [w_ih[r, 0] * x + b_ih[r] + w_hh[r, 0] * h + b_hh[r] for r in range(4)]
        i, f, g, o = sig(z[0]), sig(z[1]), math.tanh(z[2]), sig(z[3])
        c = f * c + i * g
        h = o * math.tanh(c)
        want.append(h)
    got = fn.lstm_stack(np.array(xs)[None, :, None], t, "x", 1)[0, :, 0]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-14)


def test_conv_pool_flatten_hand():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1, 2, 3, 4))
    w = rng.normal(size=(3, 2, 2, 3))
    b = np.array([0.1, -0.2, 0.3])
    pf, pt = 1, 0
    got = fn.conv2d(x, w, b, (pf, pt))
    xp = np.zeros((2, 5, 4))
    xp[:, 1:4, :] = x[0]
    assert got.shape == (1, 3, 3 + 2 - 2 + 1, 4 - 3 + 1)
    for o in range(3):
        for fi in range(got.shape[2]):
            for ti in range(got.shape[3]):
                s = b[o] + sum(w[o, c, i, j] * xp[c, fi + i, ti + j]
                               for c in range(2) for i in range(2) for j in range(3))
                assert abs(got[0, o, fi, ti] - s) < 1e-12
    a = np.arange(25.0).reshape(1, 1, 5, 5)
    np.testing.assert_array_equal(fn.maxpool2d(a, 2)[0, 0], [[6, 8], [16, 18]])  # last row/col dropped
    # flatten: 1x1 convs, channels [1, 2] with conv1 weights (1, 2), identity BNs, pool 1
    eps = 1e-5
    t = {"c.conv0.weight": np.ones((1, 1, 1, 1)), "c.conv0.bias": np.zeros(1),
         "c.conv1.weight": np.array([1.0, 2.0]).reshape(2, 1, 1, 1), "c.conv1.bias": np.zeros(2)}
    for j, n in ((0, 1), (1, 2)):
        t.update({f"c.bn{j}.weight": np.ones(n), f"c.bn{j}.bias": np.zeros(n),
                  f"c.bn{j}.running_mean": np.zeros(n), f"c.bn{j}.running_var": np.full(n, 1 - eps)})
    img = np.abs(rng.normal(size=(1, 1, 3, 4)))  # F = 3, T = 4
    seq = fn.cnn_block(img, "c", (1, 1), (0, 0), 1, eps, fn.Mode(t))
    assert seq.shape == (1, 4, 6)
    for ti in range(4):
        for c in range(2):
            for f in range(3):
                assert abs(seq[0, ti, c * 3 + f] - (c + 1) * img[0, 0, f, ti]) < 1e-9


def test_alignment_hand():
    X = np.arange(7.0)[None, :, None]
    Y = np.arange(10.0)[None, :, None] * 10
    xa, ya = fn.align(X, Y, "pairs")
    np.testing.assert_allclose(xa[0, :, 0], [0.5, 2.5, 4.5])
    np.testing.assert_allclose(ya[0, :, 0], [0, 10, 20])
    xa, ya = fn.align(X, Y, "triples")  # n = 7 // 2 - 1 = 2
    np.testing.assert_allclose(xa[0, :, 0], [1.0, 3.0])
    np.testing.assert_allclose(ya[0, :, 0], [0, 10])
    X8 = np.arange(8.0)[None, :, None]
    xa, ya = fn.align(X8, Y[:, :2], "triples")  # n = 3, truncated to T2 = 2
    np.testing.assert_allclose(xa[0, :, 0], [1.0, 3.0])
    xa, _ = fn.align(X8, Y, "triples")
    np.testing.assert_allclose(xa[0, :, 0], [1.0, 3.0, 5.0])
    try:
        fn.align(np.zeros((1, 3, 1)), Y, "triples")
    except fn.FeatureError:
        pass
    else:
        raise AssertionError("an empty alignment must be an error")


def test_dslstm_rbn_clamp_hand():
    """H = X = Y = 1, one layer, S = 2 statistics rows, T3 = 4 steps: steps 2, 3 use row 1."""
    rng = np.random.default_rng(7)
    eps = 1e-5
    p = "ds.dslstm.l0."
    t = {p + "gates.weight": rng.normal(size=(4, 3)), p + "gates.bias": rng.normal(size=4) * 0.1,
         p + "cand_t.weight": rng.normal(size=(1, 2)), p + "cand_t.bias": np.array([0.05]),
         p + "cand_f.weight": rng.normal(size=(1, 2)), p + "cand_f.bias": np.array([-0.05]),
         p + "rbn.weight": np.array([0.1, 0.3, -0.2, 0.5]), p + "rbn.bias": np.array([0.0, 0.1, 0.2, 0.3]),
         p + "rbn.running_mean": np.array([[0.4, 0.5, 0.6, 0.5], [0.55, 0.45, 0.5, 0.6]]),
         p + "rbn.running_var": np.array([[0.02, 0.05, 0.03, 0.04], [0.06, 0.01, 0.02, 0.05]]),
         p + "out_bn.weight": np.array([1.5]), p + "out_bn.bias": np.array([-0.2]),
         p + "out_bn.running_mean": np.array([0.1]), p + "out_bn.running_var": np.array([0.3])}
    xs, ys = [0.3, -1.0, 2.0, 0.7], [1.0, 0.2, -0.4, -1.5]
    h = C = 0.0
    want = []
    for step, (x, y) in enumerate(zip(xs, ys)):
        s = min(step, 1)
        g = []
        for r in range(4):
            a = sig(sum(t[p + "gates.weight"][r, j] * v for j, v in enumerate((x, y, h))) + t[p + "gates.bias"][r])
            a = ((a - t[p + "rbn.running_mean"][s, r]) / math.sqrt(t[p + "rbn.running_var"][s, r] + eps)
                 * t[p + "rbn.weight"][r] + t[p + "rbn.bias"][r])
            g.append(a)
        f, iT, iF, o = g  # row blocks f, iT, iF, o
        ct = math.tanh(t[p + "cand_t.weight"][0, 0] * x + t[p + "cand_t.weight"][0, 1] * h + 0.05)
        cf = math.tanh(t[p + "cand_f.weight"][0, 0] * y + t[p + "cand_f.weight"][0, 1] * h - 0.05)
        C = f * C + iT * ct + iF * cf
        h = o * math.tanh(C)
        want.append((h - 0.1) / math.sqrt(0.3 + eps) * 1.5 - 0.2)
    got = fn.dslstm_stack(np.array(xs)[None, :, None], np.array(ys)[None, :, None], 1, eps,
                          fn.Mode(t))[0, :, 0]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-13)


def test_fusion_weights_base5():
    config, tensors = build("base5", seed=11)
    feats = make_features(config, np.random.default_rng(1))
    r = fn.forward(f64(tensors), config, feats["mfcc"], feats["mel_narrow"], feats["mel_wide"])
    bl = {b: np.array(v) for b, v in r["branch_logits"].items()}
    want = 0.5 * bl["mfcc"] + 0.25 * bl["narrow"] + 0.25 * bl["wide"]
    np.testing.assert_allclose(r["logits"], want, atol=1e-12)
    np.testing.assert_allclose(r["probabilities"], fn.softmax(want), atol=1e-12)
    for b in bl:
        np.testing.assert_allclose(r["branches"][b], fn.softmax(bl[b]), atol=1e-12)


# ----------------------------------------------------------------------------------------------------
# parameter counts (docs/weights.md section 7)


def formula_counts(config):
    """Section 7 formulas."""
    H, C = config["hidden"], len(config["classes"])
    c0, c1 = config["cnn"]["channels"]
    X0, Y, *_ = docs_dims(config)

    def cnn(which):
        kf, kt = config["cnn"][f"kernel_{which}"]
        return c0 * (kf * kt + 1) + 2 * c0 + c1 * (c0 * kf * kt + 1) + 2 * c1

    def lstm(in0):
        return sum(4 * H * ((in0 if k == 0 else H) + H) + 8 * H for k in range(config["layers"]))

    def ds_layer(X):
        return (4 * H * (X + Y + H) + 4 * H + H * (X + H) + H + H * (Y + H) + H + 8 * H + 2 * H)

    head = C * H + C
    out = {}
    for b in BRANCHES[config["kind"]]:
        if b == "mfcc":
            out[b] = lstm(39) + head
        elif b == "narrow":
            out[b] = cnn("narrow") + lstm(X0) + head
        elif b == "wide":
            out[b] = cnn("wide") + lstm(Y) + head
        else:
            out[b] = (cnn("narrow") + cnn("wide")
                      + sum(ds_layer(X0 if k == 0 else H) for k in range(config["layers"])) + head)
    return out


def test_param_counts_authors_defaults():
    cfg_d = make_config("dual", "authors", small=False)
    t = make_tensors(cfg_d, None, zeros=True)
    fn.check_tensors(t, cfg_d)
    pc = fn.param_counts(t, cfg_d)
    assert pc == {"mfcc": 515_204, "ds": 3_217_092}, pc
    assert sum(pc.values()) == 3_732_296
    mods = fn.module_param_counts(t)
    assert mods["ds.cnn_narrow"] == 8_944 and mods["ds.cnn_wide"] == 8_944
    assert mods["ds.dslstm.l0"] == 1_747_200 and mods["ds.dslstm.l1"] == 1_451_200
    assert mods["mfcc.lstm.l0"] == 192_800 and mods["mfcc.lstm.l1"] == 321_600
    assert mods["ds.head"] == 804 and mods["mfcc.head"] == 804
    assert docs_dims(cfg_d)[:2] == (496, 1008)
    for kind, want in (("base1", {"mfcc": 515_204}), ("ds-lstm", {"ds": 3_217_092})):
        c = make_config(kind, "authors", small=False)
        assert fn.param_counts(make_tensors(c, None, zeros=True), c) == want


def test_param_counts_formulas_every_kind():
    for preset in ("authors", "paper"):
        for kind in KINDS:
            c = make_config(kind, preset, small=False)
            t = make_tensors(c, None, zeros=True)
            fn.check_tensors(t, c)
            assert fn.param_counts(t, c) == formula_counts(c), (kind, preset)
    c = make_config("dual", "paper", small=False)
    assert docs_dims(c)[:2] == (208, 464)
    mods = fn.module_param_counts(make_tensors(c, None, zeros=True))
    assert mods["ds.cnn_narrow"] == mods["ds.cnn_wide"] == 17_648


# ----------------------------------------------------------------------------------------------------
# files, kinds, errors, CLI


def test_every_kind_roundtrip_numpy():
    with tempfile.TemporaryDirectory() as tmp:
        for preset in ("authors", "paper"):
            for kind in KINDS:
                config, tensors = build(kind, preset, seed=KINDS.index(kind) + (0 if preset == "authors" else 100))
                path = os.path.join(tmp, f"{kind}-{preset}.safetensors")
                write_model(path, config, tensors)
                t, c = fn.load_model(path)
                assert c == config
                for k in tensors:
                    np.testing.assert_array_equal(t[k], tensors[k].astype(np.float64))
                feats = make_features(config, np.random.default_rng(5))
                r = fn.forward(t, c, feats["mfcc"], feats["mel_narrow"], feats["mel_wide"])
                assert len(r["probabilities"]) == 4 and abs(sum(r["probabilities"]) - 1) < 1e-12
                assert set(r["branches"]) == set(BRANCHES[kind])
                assert np.all(np.isfinite(r["logits"]))


def test_f16_file():
    config, tensors = build("dual", "authors", seed=4)
    feats = make_features(config, np.random.default_rng(6))
    with tempfile.TemporaryDirectory() as tmp:
        p16 = os.path.join(tmp, "m16.safetensors")
        write_model(p16, config, tensors, np.float16)
        t16, _ = fn.load_model(p16)
        assert all(v.dtype == np.float64 for v in t16.values())
        r16 = fn.forward(t16, config, feats["mfcc"], feats["mel_narrow"], feats["mel_wide"])
        rounded = {k: v.astype(np.float16).astype(np.float64) for k, v in tensors.items()}
        want = fn.forward(rounded, config, feats["mfcc"], feats["mel_narrow"], feats["mel_wide"])
        np.testing.assert_allclose(r16["probabilities"], want["probabilities"], atol=1e-14)
        r32 = fn.forward(f64(tensors), config, feats["mfcc"], feats["mel_narrow"], feats["mel_wide"])
        assert np.max(np.abs(np.array(r16["probabilities"]) - r32["probabilities"])) < 1e-2


def expect_error(fnc, *needles, exc=(fn.ModelError, fn.FeatureError)):
    try:
        fnc()
    except exc as e:
        for n in needles:
            assert n in str(e), (n, str(e))
        return
    raise AssertionError(f"no error containing {needles}")


def test_errors():
    config, tensors = build("dual", "authors", seed=2)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.safetensors")

        def load_with(t, c=config):
            write_model(path, c, t)
            return fn.load_model(path)

        t = dict(tensors)
        del t["ds.dslstm.l1.rbn.weight"]
        expect_error(lambda: load_with(t), "missing tensor 'ds.dslstm.l1.rbn.weight'")
        t = dict(tensors)
        t["mfcc.lstm.l0.weight_hh"] = np.zeros((32, 7), np.float32)
        expect_error(lambda: load_with(t), "'mfcc.lstm.l0.weight_hh'", "[32, 7]", "[32, 8]")
        t = dict(tensors)
        t["ds.cnn_wide.conv1.weight"] = t["ds.cnn_wide.conv1.weight"][:, :, :1]
        expect_error(lambda: load_with(t), "ds.cnn_wide.conv1.weight")
        t = dict(tensors)
        t["narrow.head.weight"] = np.zeros((4, 8), np.float32)
        expect_error(lambda: load_with(t), "unexpected", "narrow.head.weight")
        c = dict(config, format_version=2)
        expect_error(lambda: load_with(tensors, c), "format_version 2")
        c = dict(config, kind="base7")
        expect_error(lambda: load_with(tensors, c), "unknown kind")
        c = dict(config, branch_weights={"mfcc": 1.0})
        expect_error(lambda: load_with(tensors, c), "branch_weights")
        save_file({k: v for k, v in tensors.items()}, path)
        expect_error(lambda: fn.load_model(path), "duet.config")
        # features block without n_fft: clear message when reading a feature directory
        c = json.loads(json.dumps(config))
        del c["features"]["wide"]["n_fft"]
        write_model(path, c, tensors)
        d = os.path.join(tmp, "f")
        write_featdir(d, config, make_features(config, np.random.default_rng(0)))
        t64, c2 = fn.load_model(path)
        expect_error(lambda: fn.load_featdir(d, c2), "features.wide.n_fft")
        # wrong mel band count
        feats = make_features(config, np.random.default_rng(0))
        expect_error(lambda: fn.forward(f64(tensors), config, feats["mfcc"], feats["mel_narrow"][:12],
                                        feats["mel_wide"]), "mel bands")


def run_cli(args):
    r = subprocess.run([sys.executable] + args, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def test_cli_numpy():
    config, tensors = build("dual", "paper", seed=9)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.safetensors")
        write_model(path, config, tensors)
        dirs = []
        rng = np.random.default_rng(10)
        for i in range(2):
            d = os.path.join(tmp, f"utt{i}")
            feats = make_features(config, rng)
            write_featdir(d, config, feats)
            dirs.append((d, feats))
        out = run_cli([os.path.join(HERE, "forward_numpy.py"), "--model", path, "--param-counts"]
                      + [d for d, _ in dirs])
        assert out[0]["param_counts"] == formula_counts(config)
        for line, (d, feats) in zip(out[1:], dirs):
            assert line["dir"] == d
            want = fn.forward(f64(tensors), config, feats["mfcc"], feats["mel_narrow"], feats["mel_wide"])
            np.testing.assert_allclose(line["probabilities"], want["probabilities"], atol=1e-15)
            assert set(line["branches"]) == {"mfcc", "ds"} and len(line["logits"]) == 4
        r = subprocess.run([sys.executable, os.path.join(HERE, "forward_numpy.py"), "--model",
                            os.path.join(tmp, "nope.safetensors")], capture_output=True, text=True)
        assert r.returncode != 0


def test_numpy_padded_batch_equals_single():
    config, tensors = build("dual", "authors", seed=12)
    t = f64(tensors)
    rng = np.random.default_rng(13)
    feats = [make_features(config, rng, t_mfcc=n) for n in (17, 33, 25)]
    m, lens = pad_mfcc(feats)
    n, w = images(config, feats)
    r = fn.forward_batch(t, config, m, lens, n, w)
    for i, f in enumerate(feats):
        one = fn.forward(t, config, f["mfcc"], f["mel_narrow"], f["mel_wide"])
        np.testing.assert_allclose(r["logits"][i], one["logits"], atol=1e-12)


# ----------------------------------------------------------------------------------------------------
# numpy vs torch


def torch_logits(tm, model, inp):
    import torch
    with torch.no_grad():
        bl = model(**inp)
    return {b: z.double().numpy() for b, z in bl.items()}, model.fuse(bl).double().numpy()


def torch_inputs(config, feats, dtype):
    import torch
    import torch.nn.utils.rnn as rnn
    inp = {}
    ms = [torch.from_numpy(f["mfcc"].astype(np.float64)).to(dtype) for f in feats]
    inp["mfcc"] = rnn.pad_sequence(ms, batch_first=True)
    inp["lengths"] = torch.tensor([m.shape[0] for m in ms])
    import torch_model as tm
    for key, which in (("mel_narrow", "narrow"), ("mel_wide", "wide")):
        inp[key] = torch.stack([tm.resize_mel(torch.from_numpy(f[key].astype(np.float64)).to(dtype),
                                              config["resize"][f"{which}_frames"]) for f in feats])
    return inp


def test_torch_matches_numpy_every_kind():
    tm = need_torch()
    import torch
    worst = 0.0
    for preset in ("authors", "paper"):
        for kind in KINDS:
            steps = None
            if kind == "dual":  # fewer rbn rows than steps: exercises the clamp in both
                steps = docs_dims(make_config(kind, preset))[4] - 2
            config, tensors = build(kind, preset, seed=200 + KINDS.index(kind) + (0 if preset == "authors" else 100), steps=steps)
            rng = np.random.default_rng(21)
            feats = [make_features(config, rng) for _ in range(3)]
            t = f64(tensors)
            want = [fn.forward(t, config, f["mfcc"], f["mel_narrow"], f["mel_wide"]) for f in feats]
            for dtype, tol in ((torch.float64, 1e-5), (torch.float32, 1e-4)):
                model = tm.from_arrays(t, config, dtype).eval()
                bl, logits = torch_logits(tm, model, torch_inputs(config, feats, dtype))
                probs = torch.softmax(torch.from_numpy(logits), 1).numpy()
                for i, w in enumerate(want):
                    d = np.max(np.abs(probs[i] - w["probabilities"]))
                    if dtype == torch.float64:
                        worst = max(worst, d)
                    assert d < tol, (kind, preset, dtype, d)
                    for b in bl:
                        assert np.max(np.abs(bl[b][i] - w["branch_logits"][b])) < tol * 10, (kind, b)
    assert worst < 1e-9, worst


def test_torch_training_semantics_match_numpy():
    """Training mode: batch statistics everywhere (rbn per step over the batch, out_bn over batch x
    time), running statistics updated with momentum 0.1 and the unbiased variance, weighted CE loss."""
    tm = need_torch()
    import torch
    for kind, preset in (("dual", "authors"), ("base5", "paper"), ("ds-lstm", "paper")):
        steps = docs_dims(make_config(kind, preset))[4] - 1 if kind == "ds-lstm" else None
        config, tensors = build(kind, preset, seed=31, steps=steps)
        rng = np.random.default_rng(32)
        feats = [make_features(config, rng, t_mfcc=n) for n in (20, 31, 26, 40)]
        labels = np.array([0, 3, 1, 2])
        m, lens = pad_mfcc(feats)
        n, w = images(config, feats)
        t = f64(tensors)
        want = fn.forward_batch(t, config, m, lens, n, w, training=True, labels=labels)
        model = tm.from_arrays(t, config, torch.float64).train()
        bl = model(**torch_inputs(config, feats, torch.float64))
        loss = model.loss(bl, torch.from_numpy(labels))
        assert abs(loss.item() - want["loss"]) < 1e-9, (loss.item(), want["loss"])
        sd = model.state_dict()
        assert want["running"]
        for name, v in want["running"].items():
            got = sd[tm.module_name(name)].numpy()
            np.testing.assert_allclose(got, v, atol=1e-9, err_msg=name)
        untouched = [k for k in tensors if k.endswith(fn.RUNNING_SUFFIXES) and k not in want["running"]]
        for name in untouched:  # rows beyond the sequence (none here) or nothing else
            np.testing.assert_array_equal(sd[tm.module_name(name)].numpy(), t[name])


def test_torch_train_step():
    tm = need_torch()
    import torch
    config, tensors = build("dual", "authors", seed=41)
    model = tm.from_arrays(f64(tensors), config, torch.float32).train()
    rng = np.random.default_rng(42)
    feats = [make_features(config, rng) for _ in range(4)]
    inp = torch_inputs(config, feats, torch.float32)
    labels = torch.tensor([0, 1, 2, 3])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = model.ds.dslstm["l0"].rbn.weight.detach().clone()
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = model.loss(model(**inp), labels)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]
    assert not torch.equal(before, model.ds.dslstm["l0"].rbn.weight.detach())
    assert int(model.ds.cnn_narrow.bn0.num_batches_tracked) == 8


def test_torch_cli_check_matches_numpy_cli():
    need_torch()
    config, tensors = build("base5", "authors", seed=51)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.safetensors")
        write_model(path, config, tensors, np.float16)
        rng = np.random.default_rng(52)
        dirs = []
        for i in range(2):
            d = os.path.join(tmp, f"u{i}")
            write_featdir(d, config, make_features(config, rng))
            dirs.append(d)
        a = run_cli([os.path.join(HERE, "forward_numpy.py"), "--model", path] + dirs)
        b = run_cli([os.path.join(HERE, "torch_model.py"), "--model", path, "--check"] + dirs)
        c = run_cli([os.path.join(HERE, "torch_model.py"), "--model", path, "--check", "--batched"] + dirs)
        for x, y, z in zip(a, b, c):
            assert x["dir"] == y["dir"] == z["dir"]
            for key in ("probabilities", "logits"):
                np.testing.assert_allclose(y[key], x[key], atol=1e-9)
                np.testing.assert_allclose(z[key], x[key], atol=1e-9)
            for br in x["branches"]:
                np.testing.assert_allclose(y["branches"][br], x["branches"][br], atol=1e-9)
        r = run_cli([os.path.join(HERE, "torch_model.py"), "--model", path, "--bench-forward",
                     "--batch", "2", "--seconds", "0.5", "--threads", "1", "--runs", "5", "--warmup", "1"])
        assert len(r[0]["runs_s"]) == 5 and r[0]["median_s"] > 0 and r[0]["peak_rss_mb"] > 0


def test_full_size_dual_authors_numpy_vs_torch():
    """The real sizes once (H = 200, 128/256 mels, 230/120 frames)."""
    tm = need_torch()
    import torch
    rng = np.random.default_rng(61)
    config = make_config("dual", "authors", small=False)
    tensors = make_tensors(config, rng)
    feats = make_features(config, rng, t_mfcc=120, t_narrow=250, t_wide=126)
    want = fn.forward(f64(tensors), config, feats["mfcc"], feats["mel_narrow"], feats["mel_wide"])
    model = tm.from_arrays(f64(tensors), config, torch.float64).eval()
    bl, logits = torch_logits(tm, model, torch_inputs(config, [feats], torch.float64))
    np.testing.assert_allclose(logits[0], want["logits"], atol=1e-8)


if __name__ == "__main__":
    try:
        import pytest
        sys.exit(pytest.main([__file__, "-q"]))
    except ImportError:
        failed = 0
        for name, f in sorted(globals().items()):
            if name.startswith("test_") and callable(f):
                try:
                    f()
                    print(f"ok    {name}")
                except unittest.SkipTest as e:
                    print(f"skip  {name}: {e}")
                except Exception as e:  # noqa: BLE001
                    failed += 1
                    print(f"FAIL  {name}: {e!r}")
        sys.exit(1 if failed else 0)
