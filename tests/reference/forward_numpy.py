#!/usr/bin/env python3
"""Independent numpy reference forward pass of a Duet model (docs/weights.md, format version 1).

Written from docs/weights.md only (not from the Rust code). Every computation runs in float64.

    python forward_numpy.py --model M.safetensors FEATDIR [FEATDIR ...]

Each FEATDIR holds `mfcc.npy` ([frames, 39]) and `mel_<n_fft>.npy` ([n_mels, frames], power mel before
resize/log) for the narrow and the wide n_fft of the model's `features` block. One JSON line per FEATDIR:

    {"dir": ..., "probabilities": [C], "branches": {branch: [C] softmax(logits_b)},
     "logits": [C] fused, "branch_logits": {branch: [C]}}

Library use: `load_model`, `forward` (one utterance), `forward_batch` (padded batch, eval or training
mode), `param_counts`, `module_param_counts`, `spectrogram_image`, `resize_indices`, `align`.
"""

import argparse
import json
import os
import sys

import numpy as np

FORMAT_VERSION = 1

KIND_BRANCHES = {
    "base1": ("mfcc",),
    "base2": ("narrow",),
    "base3": ("wide",),
    "base4": ("narrow", "wide"),
    "base5": ("mfcc", "narrow", "wide"),
    "base6": ("mfcc", "narrow"),
    "ds-lstm": ("ds",),
    "dual": ("mfcc", "ds"),
}

# docs/weights.md section 6 (the file's branch_weights are what is used; these are the documented values)
DEFAULT_BRANCH_WEIGHTS = {
    "base1": {"mfcc": 1.0},
    "base2": {"narrow": 1.0},
    "base3": {"wide": 1.0},
    "base4": {"narrow": 0.5, "wide": 0.5},
    "base5": {"mfcc": 0.5, "narrow": 0.25, "wide": 0.25},
    "base6": {"mfcc": 0.5, "narrow": 0.5},
    "ds-lstm": {"ds": 1.0},
    "dual": {"mfcc": 0.5, "ds": 0.5},
}

RUNNING_SUFFIXES = (".running_mean", ".running_var")


class ModelError(ValueError):
    """A model file or its config does not follow docs/weights.md."""


class FeatureError(ValueError):
    """Features missing or of the wrong shape."""


# ----------------------------------------------------------------------------------------------------
# config helpers


def cfg(config, dotted, kind=None):
    """config["a"]["b"] for dotted "a.b", with a clear error when absent."""
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ModelError(f"config field '{dotted}' is missing from duet.config")
        node = node[part]
    if kind is not None and not isinstance(node, kind):
        raise ModelError(f"config field '{dotted}' has the wrong type: {node!r}")
    return node


def pair(config, dotted):
    v = cfg(config, dotted)
    if not (isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(a, int) for a in v)):
        raise ModelError(f"config field '{dotted}' must be a pair of integers, got {v!r}")
    return int(v[0]), int(v[1])


def branches_of(config):
    kind = cfg(config, "kind")
    if kind not in KIND_BRANCHES:
        raise ModelError(f"unknown kind {kind!r}; expected one of {sorted(KIND_BRANCHES)}")
    return KIND_BRANCHES[kind]


def check_config(config):
    version = cfg(config, "format_version")
    if not isinstance(version, int) or version < 1:
        raise ModelError(f"bad format_version {version!r}")
    if version > FORMAT_VERSION:
        raise ModelError(
            f"format_version {version} is newer than this reader ({FORMAT_VERSION}); refusing the file")
    branches = branches_of(config)
    classes = cfg(config, "classes", list)
    if not classes:
        raise ModelError("config field 'classes' is empty")
    for f in ("hidden", "layers", "mfcc_dim"):
        if cfg(config, f, int) < 1:
            raise ModelError(f"config field '{f}' must be >= 1")
    cfg(config, "bn_eps", (int, float))
    if any(b in branches for b in ("narrow", "wide", "ds")):
        ch = cfg(config, "cnn.channels", list)
        if len(ch) != 2:
            raise ModelError(f"config field 'cnn.channels' must have 2 entries, got {ch!r}")
        for f in ("cnn.kernel_narrow", "cnn.kernel_wide", "cnn.padding_narrow", "cnn.padding_wide"):
            pair(config, f)
        if cfg(config, "cnn.pool", int) < 1:
            raise ModelError("config field 'cnn.pool' must be >= 1")
        cfg(config, "resize.narrow_frames", int)
        cfg(config, "resize.wide_frames", int)
    if "ds" in branches:
        al = cfg(config, "alignment")
        if al not in ("pairs", "triples"):
            raise ModelError(f"config field 'alignment' must be 'pairs' or 'triples', got {al!r}")
    bw = cfg(config, "branch_weights", dict)
    if set(bw) != set(branches):
        raise ModelError(
            f"branch_weights has keys {sorted(bw)}, expected exactly the branches of kind "
            f"{config['kind']!r}: {sorted(branches)}")
    return config


# ----------------------------------------------------------------------------------------------------
# sizes


def conv_pool_len(n, k, p, pool, what="size"):
    """Two stages of conv (n -> n + 2p - k + 1) then max-pool (n -> n // pool)."""
    for j in range(2):
        n = n + 2 * p - k + 1
        if n < 1:
            raise ModelError(f"{what}: conv{j} output is empty (kernel {k}, padding {p})")
        n = n // pool
        if n < 1:
            raise ModelError(f"{what}: pool after conv{j} output is empty (pool {pool})")
    return n


def cnn_out_dims(config, which, n_mels):
    """(frequency F', time T', flattened vector size) of the CNN of `which` in {narrow, wide}."""
    kf, kt = pair(config, f"cnn.kernel_{which}")
    pf, pt = pair(config, f"cnn.padding_{which}")
    pool = cfg(config, "cnn.pool")
    frames = cfg(config, f"resize.{which}_frames")
    c1 = cfg(config, "cnn.channels")[1]
    f_out = conv_pool_len(n_mels, kf, pf, pool, f"{which} CNN frequency axis")
    t_out = conv_pool_len(frames, kt, pt, pool, f"{which} CNN time axis")
    return f_out, t_out, c1 * f_out


def aligned_len(t1, t2, alignment):
    n = t1 // 2 if alignment == "pairs" else t1 // 2 - 1
    return max(0, min(n, t2))


def optional_n_mels(config, which):
    feats = config.get("features")
    if isinstance(feats, dict) and isinstance(feats.get(which), dict):
        v = feats[which].get("n_mels")
        if isinstance(v, int):
            return v
    return None


# ----------------------------------------------------------------------------------------------------
# tensor name/shape contract (docs/weights.md sections 4-5)


def _lstm_shapes(prefix, layers, H, in0):
    out = {}
    for k in range(layers):
        inn = in0 if k == 0 else H
        out[f"{prefix}.l{k}.weight_ih"] = (4 * H, inn)
        out[f"{prefix}.l{k}.weight_hh"] = (4 * H, H)
        out[f"{prefix}.l{k}.bias_ih"] = (4 * H,)
        out[f"{prefix}.l{k}.bias_hh"] = (4 * H,)
    return out


def _cnn_shapes(prefix, config, which):
    c0, c1 = cfg(config, "cnn.channels")
    kf, kt = pair(config, f"cnn.kernel_{which}")
    out = {}
    for j, (cin, cout) in enumerate(((1, c0), (c0, c1))):
        out[f"{prefix}.conv{j}.weight"] = (cout, cin, kf, kt)
        out[f"{prefix}.conv{j}.bias"] = (cout,)
        for s in ("weight", "bias", "running_mean", "running_var"):
            out[f"{prefix}.bn{j}.{s}"] = (cout,)
    return out


def _need(tensors, name, ndim):
    if name not in tensors:
        raise ModelError(f"missing tensor '{name}'")
    t = tensors[name]
    if t.ndim != ndim:
        raise ModelError(f"tensor '{name}' has shape {list(t.shape)}, expected {ndim} dimensions")
    return t


def expected_shapes(tensors, config):
    """Every tensor name the kind must have, with its shape. Sizes the config alone does not fix
    (the flattened CNN vector sizes when `features.*.n_mels` is absent, the rbn step count S) are taken
    from the file and then checked for consistency."""
    check_config(config)
    H = config["hidden"]
    L = config["layers"]
    C = len(config["classes"])
    shapes = {}
    for b in branches_of(config):
        if b == "mfcc":
            shapes.update(_lstm_shapes("mfcc.lstm", L, H, config["mfcc_dim"]))
        elif b in ("narrow", "wide"):
            shapes.update(_cnn_shapes(f"{b}.cnn", config, b))
            n_mels = optional_n_mels(config, b)
            if n_mels is not None:
                in0 = cnn_out_dims(config, b, n_mels)[2]
            else:
                in0 = _need(tensors, f"{b}.lstm.l0.weight_ih", 2).shape[1]
                cnn_out_dims(config, b, 10 ** 6)  # time axis must still be non-empty
            shapes.update(_lstm_shapes(f"{b}.lstm", L, H, in0))
        elif b == "ds":
            shapes.update(_cnn_shapes("ds.cnn_narrow", config, "narrow"))
            shapes.update(_cnn_shapes("ds.cnn_wide", config, "wide"))
            nn_, nw = optional_n_mels(config, "narrow"), optional_n_mels(config, "wide")
            if nn_ is not None:
                X0 = cnn_out_dims(config, "narrow", nn_)[2]
            else:
                X0 = _need(tensors, "ds.dslstm.l0.cand_t.weight", 2).shape[1] - H
            if nw is not None:
                Y = cnn_out_dims(config, "wide", nw)[2]
            else:
                Y = _need(tensors, "ds.dslstm.l0.cand_f.weight", 2).shape[1] - H
            t1 = cnn_out_dims(config, "narrow", 10 ** 6)[1]
            t2 = cnn_out_dims(config, "wide", 10 ** 6)[1]
            if aligned_len(t1, t2, config["alignment"]) < 1:
                raise ModelError(
                    f"alignment '{config['alignment']}' of T1={t1}, T2={t2} leaves no time step")
            for k in range(L):
                X = X0 if k == 0 else H
                p = f"ds.dslstm.l{k}"
                S = _need(tensors, f"{p}.rbn.running_mean", 2).shape[0]
                if S < 1:
                    raise ModelError(f"tensor '{p}.rbn.running_mean' has no time step (S = 0)")
                shapes[f"{p}.gates.weight"] = (4 * H, X + Y + H)
                shapes[f"{p}.gates.bias"] = (4 * H,)
                shapes[f"{p}.cand_t.weight"] = (H, X + H)
                shapes[f"{p}.cand_t.bias"] = (H,)
                shapes[f"{p}.cand_f.weight"] = (H, Y + H)
                shapes[f"{p}.cand_f.bias"] = (H,)
                shapes[f"{p}.rbn.weight"] = (4 * H,)
                shapes[f"{p}.rbn.bias"] = (4 * H,)
                shapes[f"{p}.rbn.running_mean"] = (S, 4 * H)
                shapes[f"{p}.rbn.running_var"] = (S, 4 * H)
                for s in ("weight", "bias", "running_mean", "running_var"):
                    shapes[f"{p}.out_bn.{s}"] = (H,)
        shapes[f"{b}.head.weight"] = (C, H)
        shapes[f"{b}.head.bias"] = (C,)
    return shapes


def check_tensors(tensors, config):
    shapes = expected_shapes(tensors, config)
    for name, shape in shapes.items():
        if name not in tensors:
            raise ModelError(f"missing tensor '{name}' (expected shape {list(shape)})")
        if tuple(tensors[name].shape) != tuple(shape):
            raise ModelError(
                f"tensor '{name}' has shape {list(tensors[name].shape)}, expected {list(shape)}")
    extra = sorted(set(tensors) - set(shapes))
    if extra:
        raise ModelError(f"unexpected tensor(s) for kind {config['kind']!r}: {extra}")
    for name, t in tensors.items():
        if not np.all(np.isfinite(t)):
            raise ModelError(f"tensor '{name}' has non-finite values")
        if name.endswith(".running_var") and np.any(t < 0):
            raise ModelError(f"tensor '{name}' has negative variances")


def load_model(path):
    """(tensors as float64 numpy arrays, config dict); validates names, shapes and the config."""
    from safetensors import safe_open
    from safetensors.numpy import load_file

    with safe_open(path, "np") as f:
        meta = f.metadata() or {}
    if "duet.config" not in meta:
        raise ModelError(f"{path}: no 'duet.config' entry in the safetensors metadata")
    try:
        config = json.loads(meta["duet.config"])
    except json.JSONDecodeError as e:
        raise ModelError(f"{path}: duet.config is not valid JSON: {e}") from e
    raw = load_file(path)
    tensors = {}
    for name, v in raw.items():
        if v.dtype not in (np.float16, np.float32):
            raise ModelError(f"tensor '{name}' has dtype {v.dtype}; the format allows F32 or F16")
        tensors[name] = v.astype(np.float64)
    check_tensors(tensors, config)
    return tensors, config


# ----------------------------------------------------------------------------------------------------
# parameter counts (docs/weights.md section 7: running statistics are not parameters)


def is_parameter(name):
    return not name.endswith(RUNNING_SUFFIXES)


def param_counts(tensors, config):
    """{branch: number of parameters} for the kind's branches (everything but running_mean/var)."""
    out = {}
    for b in branches_of(config):
        out[b] = int(sum(t.size for n, t in tensors.items()
                         if n.startswith(b + ".") and is_parameter(n)))
    return out


def module_param_counts(tensors):
    """{module: parameters} with modules like 'ds.cnn_narrow', 'ds.dslstm.l0', 'mfcc.lstm.l1', 'ds.head'."""
    out = {}
    for n, t in tensors.items():
        if not is_parameter(n):
            continue
        parts = n.split(".")
        if parts[1] in ("lstm", "dslstm"):
            mod = ".".join(parts[:3])
        else:
            mod = ".".join(parts[:2])
        out[mod] = out.get(mod, 0) + int(t.size)
    return dict(sorted(out.items()))


# ----------------------------------------------------------------------------------------------------
# features (docs/weights.md section 1)


def resize_indices(t_raw, target):
    """Nearest-neighbour source frame of each output frame: min(floor(i * T_raw / target), T_raw - 1)."""
    return [min((i * t_raw) // target, t_raw - 1) for i in range(target)]


def spectrogram_image(mel, target, log_floor):
    """[n_mels, T_raw] power mel -> [n_mels, target] log image: 10 log10(max(resized, floor))."""
    mel = np.asarray(mel, dtype=np.float64)
    if mel.ndim != 2 or mel.shape[1] < 1 or mel.shape[0] < 1:
        raise FeatureError(f"mel spectrogram must be [n_mels, frames] with frames >= 1, got {mel.shape}")
    idx = np.array(resize_indices(mel.shape[1], target), dtype=np.int64)
    return 10.0 * np.log10(np.maximum(mel[:, idx], float(log_floor)))


def feature_nffts(config):
    n1 = cfg(config, "features.narrow.n_fft")
    n2 = cfg(config, "features.wide.n_fft")
    return n1, n2


def load_featdir(path, config):
    """{'mfcc': [T,39] | None, 'mel_narrow': [n,T] | None, 'mel_wide': ...} for the model's branches."""
    branches = branches_of(config)
    out = {"mfcc": None, "mel_narrow": None, "mel_wide": None}
    if "mfcc" in branches:
        f = os.path.join(path, "mfcc.npy")
        if not os.path.exists(f):
            raise FeatureError(f"{f} not found")
        out["mfcc"] = np.load(f)
    if any(b in branches for b in ("narrow", "wide", "ds")):
        n1, n2 = feature_nffts(config)
        cfg(config, "features.log_floor")
        need = []
        if "narrow" in branches or "ds" in branches:
            need.append(("mel_narrow", n1))
        if "wide" in branches or "ds" in branches:
            need.append(("mel_wide", n2))
        for key, nfft in need:
            f = os.path.join(path, f"mel_{nfft}.npy")
            if not os.path.exists(f):
                raise FeatureError(f"{f} not found (the {key[4:]} spectrogram, n_fft {nfft})")
            out[key] = np.load(f)
    return out


# ----------------------------------------------------------------------------------------------------
# building blocks (float64, batched: the leading axis is the batch)


def sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def softmax(z, axis=-1):
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - np.max(z, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


class Mode:
    """Batch-norm mode. Eval: running statistics. Training: batch statistics; the updated running
    statistics (momentum, unbiased variance, PyTorch semantics) are collected in `self.running`."""

    def __init__(self, tensors, training=False, momentum=0.1):
        self.tensors = tensors
        self.training = training
        self.momentum = momentum
        self.running = {}

    def get(self, name):
        return self.running.get(name, self.tensors[name])

    def update(self, prefix, mean, var_unbiased, row=None):
        m = self.momentum
        for suffix, v in ((".running_mean", mean), (".running_var", var_unbiased)):
            name = prefix + suffix
            cur = np.array(self.get(name), dtype=np.float64, copy=True)
            if row is None:
                cur = (1 - m) * cur + m * v
            else:
                cur[row] = (1 - m) * cur[row] + m * v
            self.running[name] = cur


def batch_norm(v, prefix, axis, eps, mode):
    """BN over feature axis `axis` of v. Eval: running stats; training: stats over all other axes."""
    t = mode.tensors
    shape = [1] * v.ndim
    shape[axis] = -1
    if mode.training:
        red = tuple(i for i in range(v.ndim) if i != axis)
        n = int(np.prod([v.shape[i] for i in red]))
        if n < 2:
            raise ValueError(f"{prefix}: training-mode batch norm needs more than 1 value per channel")
        mean = v.mean(axis=red)
        var = v.var(axis=red)
        mode.update(prefix, mean, var * n / (n - 1))
    else:
        mean = t[prefix + ".running_mean"]
        var = t[prefix + ".running_var"]
    return ((v - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) * t[prefix + ".weight"].reshape(shape)
            + t[prefix + ".bias"].reshape(shape))


def lstm_stack(seq, tensors, prefix, layers):
    """Standard LSTM stack (section 4.1) over seq [B, T, in]; returns the top layer's h: [B, T, H]."""
    out = seq
    for k in range(layers):
        p = f"{prefix}.l{k}."
        w_ih, w_hh = tensors[p + "weight_ih"], tensors[p + "weight_hh"]
        b = tensors[p + "bias_ih"] + tensors[p + "bias_hh"]
        H = w_hh.shape[1]
        B, T, _ = out.shape
        h = np.zeros((B, H))
        c = np.zeros((B, H))
        hs = np.empty((B, T, H))
        for t in range(T):
            z = out[:, t] @ w_ih.T + h @ w_hh.T + b
            i = sigmoid(z[:, 0:H])
            f = sigmoid(z[:, H:2 * H])
            g = np.tanh(z[:, 2 * H:3 * H])
            o = sigmoid(z[:, 3 * H:4 * H])
            c = f * c + i * g
            h = o * np.tanh(c)
            hs[:, t] = h
        out = hs
    return out


def conv2d(x, w, b, padding):
    """Cross-correlation, stride 1, zero padding [p_freq, p_time]. x [B, Cin, F, T], w [Cout, Cin, kf, kt]."""
    pf, pt = padding
    _, _, kf, kt = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pf, pf), (pt, pt)))
    B, _, Fp, Tp = xp.shape
    Fo, To = Fp - kf + 1, Tp - kt + 1
    if Fo < 1 or To < 1:
        raise FeatureError(f"conv input {x.shape[2:]} too small for kernel {(kf, kt)} padding {padding}")
    out = np.zeros((B, w.shape[0], Fo, To))
    for i in range(kf):
        for j in range(kt):
            # [Cout, Cin] x [B, Cin, Fo, To] -> [B, Cout, Fo, To]
            out += np.einsum("oc,bcft->boft", w[:, :, i, j], xp[:, :, i:i + Fo, j:j + To])
    return out + b[None, :, None, None]


def maxpool2d(a, pool):
    B, C, Fh, Tw = a.shape
    F2, T2 = Fh // pool, Tw // pool
    if F2 < 1 or T2 < 1:
        raise FeatureError(f"max-pool {pool} of a {Fh}x{Tw} map is empty")
    return a[:, :, :F2 * pool, :T2 * pool].reshape(B, C, F2, pool, T2, pool).max(axis=(3, 5))


def cnn_block(img, prefix, kernel, padding, pool, eps, mode):
    """Section 4.2: img [B, 1, n_mels, frames] -> sequence [B, T', channels[1] * F'] (channel-major)."""
    t = mode.tensors
    a = img
    for j in range(2):
        w = t[f"{prefix}.conv{j}.weight"]
        if tuple(w.shape[2:]) != tuple(kernel):
            raise ModelError(f"{prefix}.conv{j}.weight kernel {w.shape[2:]} != config {kernel}")
        a = conv2d(a, w, t[f"{prefix}.conv{j}.bias"], padding)
        a = batch_norm(a, f"{prefix}.bn{j}", 1, eps, mode)
        a = np.maximum(a, 0.0)
        a = maxpool2d(a, pool)
    B, C, Fq, T = a.shape
    # seq[b, t, c * F' + f] = a[b, c, f, t]
    return a.transpose(0, 3, 1, 2).reshape(B, T, C * Fq)


def align(X, Y, alignment):
    """Section 4.3 on X [B, T1, D], Y [B, T2, E] -> (X', Y') with T3 steps each."""
    T1, T2 = X.shape[1], Y.shape[1]
    if alignment == "pairs":
        n = T1 // 2
        xs = [(X[:, 2 * i] + X[:, 2 * i + 1]) / 2.0 for i in range(n)]
    elif alignment == "triples":
        n = max(T1 // 2 - 1, 0)
        xs = [(X[:, 2 * i] + X[:, 2 * i + 1] + X[:, 2 * i + 2]) / 3.0 for i in range(n)]
    else:
        raise ModelError(f"unknown alignment {alignment!r}")
    T3 = min(n, T2)
    if T3 < 1:
        raise FeatureError(f"alignment '{alignment}' of T1={T1}, T2={T2} leaves no time step")
    Xa = np.stack(xs[:T3], axis=1)
    return Xa, Y[:, :T3]


def dslstm_stack(X, Y, layers, eps, mode):
    """Section 4.4: X [B, T3, X0], Y [B, T3, Y] -> top layer's out_t [B, T3, H]."""
    t = mode.tensors
    x_in = X
    out = None
    B, T, _ = X.shape
    for k in range(layers):
        p = f"ds.dslstm.l{k}."
        Wg, bg = t[p + "gates.weight"], t[p + "gates.bias"]
        Wt, bt = t[p + "cand_t.weight"], t[p + "cand_t.bias"]
        Wf, bf = t[p + "cand_f.weight"], t[p + "cand_f.bias"]
        rw, rb = t[p + "rbn.weight"], t[p + "rbn.bias"]
        H = Wt.shape[0]
        S = t[p + "rbn.running_mean"].shape[0]
        h = np.zeros((B, H))
        Cc = np.zeros((B, H))
        hs = np.empty((B, T, H))
        for step in range(T):
            x_t, y_t = x_in[:, step], Y[:, step]
            g = sigmoid(np.concatenate([x_t, y_t, h], axis=1) @ Wg.T + bg)
            s = min(step, S - 1)
            if mode.training:
                if B < 2:
                    raise ValueError("training-mode recurrent batch norm needs a batch of 2 or more")
                mean, var = g.mean(axis=0), g.var(axis=0)
                mode.update(p + "rbn", mean, var * B / (B - 1), row=s)
            else:
                mean, var = t[p + "rbn.running_mean"][s], t[p + "rbn.running_var"][s]
            g = (g - mean) / np.sqrt(var + eps) * rw + rb
            f, iT, iF, o = g[:, 0:H], g[:, H:2 * H], g[:, 2 * H:3 * H], g[:, 3 * H:4 * H]
            ct = np.tanh(np.concatenate([x_t, h], axis=1) @ Wt.T + bt)
            cf = np.tanh(np.concatenate([y_t, h], axis=1) @ Wf.T + bf)
            Cc = f * Cc + iT * ct + iF * cf
            h = o * np.tanh(Cc)
            hs[:, step] = h
        out = batch_norm(hs, p + "out_bn", 2, eps, mode)
        x_in = out
    return out


def head(p, tensors, branch):
    return p @ tensors[f"{branch}.head.weight"].T + tensors[f"{branch}.head.bias"]


# ----------------------------------------------------------------------------------------------------
# the model


def forward_batch(tensors, config, mfcc=None, lengths=None, img_narrow=None, img_wide=None,
                  training=False, labels=None, momentum=0.1):
    """Batched forward.

    mfcc: [B, T_max, mfcc_dim] zero-padded, lengths: [B] valid frame counts (default: all T_max);
    img_narrow / img_wide: [B, n_mels, frames] log images (after `spectrogram_image`).
    training=True: every BN uses batch statistics; result["running"] holds the updated running stats.
    labels: [B] class indices -> result["loss"] = sum_b w_b * mean cross-entropy(logits_b).
    """
    check_config(config)
    mode = Mode(tensors, training=training, momentum=momentum)
    eps = float(config["bn_eps"])
    L = config["layers"]
    branches = branches_of(config)
    bl = {}
    for b in branches:
        if b == "mfcc":
            if mfcc is None:
                raise FeatureError("the model needs MFCC features")
            m = np.asarray(mfcc, dtype=np.float64)
            if m.ndim != 3 or m.shape[2] != config["mfcc_dim"] or m.shape[1] < 1:
                raise FeatureError(f"mfcc must be [B, frames >= 1, {config['mfcc_dim']}], got {m.shape}")
            lens = np.full(m.shape[0], m.shape[1]) if lengths is None else np.asarray(lengths)
            if np.any(lens < 1) or np.any(lens > m.shape[1]):
                raise FeatureError(f"mfcc lengths {lens} out of range 1..{m.shape[1]}")
            hs = lstm_stack(m, tensors, "mfcc.lstm", L)
            mask = (np.arange(m.shape[1])[None, :] < lens[:, None]).astype(np.float64)
            p = (hs * mask[:, :, None]).sum(axis=1) / lens[:, None]
        elif b in ("narrow", "wide"):
            img = img_narrow if b == "narrow" else img_wide
            if img is None:
                raise FeatureError(f"the model needs the {b} spectrogram")
            seq = cnn_block(np.asarray(img, dtype=np.float64)[:, None], f"{b}.cnn",
                            pair(config, f"cnn.kernel_{b}"), pair(config, f"cnn.padding_{b}"),
                            config["cnn"]["pool"], eps, mode)
            in0 = tensors[f"{b}.lstm.l0.weight_ih"].shape[1]
            if seq.shape[2] != in0:
                raise FeatureError(f"{b} CNN output vectors have size {seq.shape[2]}, the LSTM expects {in0} "
                                   f"(wrong number of mel bands?)")
            p = lstm_stack(seq, tensors, f"{b}.lstm", L).mean(axis=1)
        else:  # ds
            if img_narrow is None or img_wide is None:
                raise FeatureError("the ds branch needs both spectrograms")
            sx = cnn_block(np.asarray(img_narrow, dtype=np.float64)[:, None], "ds.cnn_narrow",
                           pair(config, "cnn.kernel_narrow"), pair(config, "cnn.padding_narrow"),
                           config["cnn"]["pool"], eps, mode)
            sy = cnn_block(np.asarray(img_wide, dtype=np.float64)[:, None], "ds.cnn_wide",
                           pair(config, "cnn.kernel_wide"), pair(config, "cnn.padding_wide"),
                           config["cnn"]["pool"], eps, mode)
            H = config["hidden"]
            X0 = tensors["ds.dslstm.l0.cand_t.weight"].shape[1] - H
            Yd = tensors["ds.dslstm.l0.cand_f.weight"].shape[1] - H
            if sx.shape[2] != X0 or sy.shape[2] != Yd:
                raise FeatureError(f"ds CNN output sizes ({sx.shape[2]}, {sy.shape[2]}) != DS-LSTM inputs "
                                   f"({X0}, {Yd}) (wrong number of mel bands?)")
            Xa, Ya = align(sx, sy, config["alignment"])
            p = dslstm_stack(Xa, Ya, L, eps, mode).mean(axis=1)
        bl[b] = head(p, tensors, b)
    weights = config["branch_weights"]
    logits = sum(float(weights[b]) * bl[b] for b in branches)
    res = {
        "branch_logits": bl,
        "logits": logits,
        "probabilities": softmax(logits),
        "branch_probabilities": {b: softmax(v) for b, v in bl.items()},
    }
    if labels is not None:
        labels = np.asarray(labels, dtype=np.int64)
        loss = 0.0
        for b in branches:
            z = bl[b]
            lse = np.log(np.sum(np.exp(z - z.max(axis=1, keepdims=True)), axis=1)) + z.max(axis=1)
            ce = np.mean(lse - z[np.arange(len(labels)), labels])
            loss += float(weights[b]) * ce
        res["loss"] = float(loss)
    if training:
        res["running"] = mode.running
    return res


def forward(tensors, config, mfcc=None, mel_narrow=None, mel_wide=None):
    """One utterance, eval mode. mfcc [T, mfcc_dim]; mel_* [n_mels, T_raw] power mel (before resize/log).
    Returns {"probabilities", "logits", "branches" (softmax per branch), "branch_logits"} as lists."""
    branches = branches_of(config)
    spec = any(b in branches for b in ("narrow", "wide", "ds"))
    img_n = img_w = None
    if spec:
        floor = cfg(config, "features.log_floor")
        if mel_narrow is not None and ("narrow" in branches or "ds" in branches):
            img_n = spectrogram_image(mel_narrow, cfg(config, "resize.narrow_frames"), floor)[None]
        if mel_wide is not None and ("wide" in branches or "ds" in branches):
            img_w = spectrogram_image(mel_wide, cfg(config, "resize.wide_frames"), floor)[None]
    m = None
    if mfcc is not None and "mfcc" in branches:
        m = np.asarray(mfcc, dtype=np.float64)
        if m.ndim != 2:
            raise FeatureError(f"mfcc must be [frames, {config['mfcc_dim']}], got {m.shape}")
        m = m[None]
    r = forward_batch(tensors, config, mfcc=m, img_narrow=img_n, img_wide=img_w)
    return {
        "probabilities": r["probabilities"][0].tolist(),
        "branches": {b: v[0].tolist() for b, v in r["branch_probabilities"].items()},
        "logits": r["logits"][0].tolist(),
        "branch_logits": {b: v[0].tolist() for b, v in r["branch_logits"].items()},
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description="numpy float64 reference forward of a Duet model")
    ap.add_argument("--model", required=True, help="model .safetensors file")
    ap.add_argument("--param-counts", action="store_true",
                    help="first print one JSON line {\"param_counts\": {branch: n}, \"modules\": {...}}")
    ap.add_argument("featdirs", nargs="*", help="directories with mfcc.npy and mel_<n_fft>.npy")
    a = ap.parse_args(argv)
    try:
        tensors, config = load_model(a.model)
        if a.param_counts:
            print(json.dumps({"param_counts": param_counts(tensors, config),
                              "modules": module_param_counts(tensors)}))
        for d in a.featdirs:
            feats = load_featdir(d, config)
            r = forward(tensors, config, feats["mfcc"], feats["mel_narrow"], feats["mel_wide"])
            print(json.dumps({"dir": d, **r}), flush=True)
    except (ModelError, FeatureError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
