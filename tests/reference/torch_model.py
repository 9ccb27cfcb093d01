#!/usr/bin/env python3
"""PyTorch (CPU) implementation of a Duet model (docs/weights.md, format version 1), for checks and
benchmarks. Loads the same safetensors file as forward_numpy.py (which it uses only to read and
validate the file; the computation here is separate code).

    python torch_model.py --model M.safetensors --check FEATDIR [FEATDIR ...] [--dtype float64|float32] [--batched]
    python torch_model.py --model M.safetensors --bench-forward --batch N --seconds S --threads K [--runs R]
    python torch_model.py --model M.safetensors --bench-train --batch N --threads K [--seconds S] [--runs R]

--check prints the same JSON lines as forward_numpy.py (eval mode; float64 by default).
The benches print {"median_s", "runs_s", "peak_rss_mb", ...}: median of R >= 5 timed runs after
warm-up, float32, random features of an S-second utterance (MFCC frames 1 + (S*16000 - 400)//160,
spectrograms at the model's resize targets; the timed forward includes the log of the spectrograms).
"""

import argparse
import json
import os
import resource
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import forward_numpy as ref  # noqa: E402

MOMENTUM = 0.1


class CNNBlock(nn.Module):
    """conv -> BatchNorm2d -> ReLU -> max-pool, twice; output [B, T', c1 * F'] channel-major."""

    def __init__(self, channels, kernel, padding, pool, eps):
        super().__init__()
        c0, c1 = channels
        self.conv0 = nn.Conv2d(1, c0, tuple(kernel), padding=tuple(padding))
        self.bn0 = nn.BatchNorm2d(c0, eps=eps, momentum=MOMENTUM)
        self.conv1 = nn.Conv2d(c0, c1, tuple(kernel), padding=tuple(padding))
        self.bn1 = nn.BatchNorm2d(c1, eps=eps, momentum=MOMENTUM)
        self.pool = pool

    def _stage(self, a, conv, bn):
        if self.training:  # batch statistics of the conv output (BatchNorm2d semantics)
            return F.max_pool2d(F.relu(bn(conv(a)), inplace=True), self.pool)
        # eval: BN folded into the conv; relu and max-pool commute (relu is monotone), pool first
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        w = conv.weight * scale[:, None, None, None]
        b = (conv.bias - bn.running_mean) * scale + bn.bias
        a = F.conv2d(a, w, b, padding=conv.padding)
        return F.relu(F.max_pool2d(a, self.pool), inplace=True)

    def forward(self, img):  # [B, 1, F, T]
        # channels_last: PyTorch's fast CPU path (oneDNN) for conv, batch norm and pooling
        a = img.contiguous(memory_format=torch.channels_last)
        a = self._stage(a, self.conv0, self.bn0)
        a = self._stage(a, self.conv1, self.bn1)
        B, C, Fq, T = a.shape
        return a.permute(0, 3, 1, 2).reshape(B, T, C * Fq)


class LSTMStack(nn.Module):
    """nn.LSTM; file names <prefix>.l{k}.weight_ih map to <prefix>.rnn.weight_ih_l{k} (see load_weights)."""

    def __init__(self, in0, hidden, layers):
        super().__init__()
        self.rnn = nn.LSTM(in0, hidden, num_layers=layers, batch_first=True)

    def forward(self, seq):
        return self.rnn(seq)[0]


class RecurrentBN(nn.Module):
    """Affine shared over time, running statistics per time step [S, 4H]."""

    def __init__(self, steps, features, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.full((features,), 0.1))
        self.bias = nn.Parameter(torch.zeros(features))
        self.register_buffer("running_mean", torch.zeros(steps, features))
        self.register_buffer("running_var", torch.ones(steps, features))
        self.eps = eps


class DSLSTMLayer(nn.Module):
    def __init__(self, X, Y, H, steps, eps):
        super().__init__()
        self.X, self.Y, self.H = X, Y, H
        self.gates = nn.Linear(X + Y + H, 4 * H)
        self.cand_t = nn.Linear(X + H, H)
        self.cand_f = nn.Linear(Y + H, H)
        self.rbn = RecurrentBN(steps, 4 * H, eps)
        self.out_bn = nn.BatchNorm1d(H, eps=eps, momentum=MOMENTUM)

    def forward(self, x, y):  # x [B, T, X], y [B, T, Y]
        X, Y, H = self.X, self.Y, self.H
        B, T, _ = x.shape
        Wg, Wt, Wf = self.gates.weight, self.cand_t.weight, self.cand_f.weight
        # input projections of every step in two matmuls: pre[..., 0:4H] gates, [4H:5H] C~T, [5H:6H] C~F
        px = F.linear(x, torch.cat([Wg[:, :X], Wt[:, :X]], 0))
        py = F.linear(y, torch.cat([Wg[:, X:X + Y], Wf[:, :Y]], 0))
        pre = torch.cat([px[..., :4 * H] + py[..., :4 * H] + self.gates.bias,
                         px[..., 4 * H:] + self.cand_t.bias,
                         py[..., 4 * H:] + self.cand_f.bias], dim=-1)
        # one recurrent matmul per step: h @ [Wg_h; Wt_h; Wf_h]^T
        WhT = torch.cat([Wg[:, X + Y:], Wt[:, X:], Wf[:, Y:]], 0).t()
        rbn = self.rbn
        S = rbn.running_mean.shape[0]
        if not self.training:
            scale = rbn.weight * torch.rsqrt(rbn.running_var + rbn.eps)  # [S, 4H]
            shift = rbn.bias - rbn.running_mean * scale
        h = x.new_zeros(B, H)
        c = x.new_zeros(B, H)
        steps = pre.unbind(1)
        hs = []
        for t in range(T):
            z = torch.addmm(steps[t], h, WhT)
            g = torch.sigmoid(z[:, :4 * H])
            s = min(t, S - 1)
            if self.training:
                # batch statistics of this step; updates running_mean[s] / running_var[s] in place
                g = F.batch_norm(g, rbn.running_mean[s], rbn.running_var[s], rbn.weight, rbn.bias,
                                 True, MOMENTUM, rbn.eps)
            else:
                g = torch.addcmul(shift[s], g, scale[s])
            f, i_t, i_f, o = g.chunk(4, 1)
            ct, cf = torch.tanh(z[:, 4 * H:]).chunk(2, 1)
            c = torch.addcmul(torch.addcmul(f * c, i_t, ct), i_f, cf)
            h = o * torch.tanh(c)
            hs.append(h)
        hs = torch.stack(hs, 1)
        return self.out_bn(hs.reshape(B * T, H)).reshape(B, T, H)


class MFCCBranch(nn.Module):
    def __init__(self, mfcc_dim, H, layers, C):
        super().__init__()
        self.lstm = LSTMStack(mfcc_dim, H, layers)
        self.head = nn.Linear(H, C)

    def forward(self, mfcc, lengths):  # [B, T, 39], [B]
        out = self.lstm(mfcc)  # unidirectional: zero padding at the end does not touch valid steps
        T = mfcc.shape[1]
        mask = (torch.arange(T, device=mfcc.device)[None, :] < lengths[:, None]).to(out.dtype)
        p = torch.bmm(mask[:, None, :], out)[:, 0] / lengths[:, None].to(out.dtype)
        return self.head(p)


class SpecBranch(nn.Module):
    def __init__(self, cnn_args, in0, H, layers, C):
        super().__init__()
        self.cnn = CNNBlock(*cnn_args)
        self.lstm = LSTMStack(in0, H, layers)
        self.head = nn.Linear(H, C)

    def forward(self, img):
        return self.head(self.lstm(self.cnn(img)).mean(1))


class DSBranch(nn.Module):
    def __init__(self, cnn_narrow, cnn_wide, X0, Y, H, layers, steps, C, alignment, eps):
        super().__init__()
        self.cnn_narrow = CNNBlock(*cnn_narrow)
        self.cnn_wide = CNNBlock(*cnn_wide)
        self.dslstm = nn.ModuleDict(
            {f"l{k}": DSLSTMLayer(X0 if k == 0 else H, Y, H, steps[k], eps) for k in range(layers)})
        self.head = nn.Linear(H, C)
        self.alignment = alignment

    def forward(self, img_n, img_w):
        x = self.cnn_narrow(img_n)
        y = self.cnn_wide(img_w)
        T1, T2 = x.shape[1], y.shape[1]
        if self.alignment == "pairs":
            n = T1 // 2
            xa = x[:, :2 * n].reshape(x.shape[0], n, 2, x.shape[2]).mean(2)
        else:
            n = T1 // 2 - 1
            xa = (x[:, 0:2 * n:2] + x[:, 1:2 * n + 1:2] + x[:, 2:2 * n + 2:2]) / 3.0
        T3 = min(n, T2)
        if T3 < 1:
            raise ValueError(f"alignment leaves no step (T1={T1}, T2={T2})")
        xa, y = xa[:, :T3], y[:, :T3]
        for layer in self.dslstm.values():
            xa = layer(xa, y)
        return self.head(xa.mean(1))


class DuetTorch(nn.Module):
    """forward(mfcc [B,T,39], lengths [B], mel_narrow [B,n1,frames1], mel_wide [B,n2,frames2]) with the
    spectrograms already resized (power, before log) -> {branch: logits [B, C]}."""

    def __init__(self, config, shapes):
        super().__init__()
        ref.check_config(config)
        self.config = config
        self.branches = ref.branches_of(config)
        self.weights = {b: float(config["branch_weights"][b]) for b in self.branches}
        H, L, C = config["hidden"], config["layers"], len(config["classes"])
        eps = float(config["bn_eps"])
        self.log_floor = None
        if any(b in self.branches for b in ("narrow", "wide", "ds")):
            self.log_floor = float(ref.cfg(config, "features.log_floor"))

        def cnn_args(which):
            return (config["cnn"]["channels"], ref.pair(config, f"cnn.kernel_{which}"),
                    ref.pair(config, f"cnn.padding_{which}"), config["cnn"]["pool"], eps)

        for b in self.branches:
            if b == "mfcc":
                self.mfcc = MFCCBranch(config["mfcc_dim"], H, L, C)
            elif b in ("narrow", "wide"):
                setattr(self, b, SpecBranch(cnn_args(b), shapes[f"{b}.lstm.l0.weight_ih"][1], H, L, C))
            else:
                X0 = shapes["ds.dslstm.l0.cand_t.weight"][1] - H
                Y = shapes["ds.dslstm.l0.cand_f.weight"][1] - H
                steps = [shapes[f"ds.dslstm.l{k}.rbn.running_mean"][0] for k in range(L)]
                self.ds = DSBranch(cnn_args("narrow"), cnn_args("wide"), X0, Y, H, L, steps, C,
                                   config["alignment"], eps)

    def log_image(self, mel):
        return (10.0 * torch.log10(torch.clamp(mel, min=self.log_floor))).unsqueeze(1)

    def forward(self, mfcc=None, lengths=None, mel_narrow=None, mel_wide=None):
        out = {}
        br = self.branches
        need_n = "narrow" in br or "ds" in br
        need_w = "wide" in br or "ds" in br
        img_n = self.log_image(mel_narrow) if need_n and mel_narrow is not None else None
        img_w = self.log_image(mel_wide) if need_w and mel_wide is not None else None
        for b in self.branches:
            if b == "mfcc":
                if lengths is None:
                    lengths = torch.full((mfcc.shape[0],), mfcc.shape[1], dtype=torch.long)
                out[b] = self.mfcc(mfcc, lengths)
            elif b == "narrow":
                out[b] = self.narrow(img_n)
            elif b == "wide":
                out[b] = self.wide(img_w)
            else:
                out[b] = self.ds(img_n, img_w)
        return out

    def fuse(self, branch_logits):
        return sum(self.weights[b] * z for b, z in branch_logits.items())

    def loss(self, branch_logits, labels):
        return sum(self.weights[b] * F.cross_entropy(z, labels) for b, z in branch_logits.items())


def module_name(file_name):
    """File tensor name -> state_dict key."""
    parts = file_name.split(".")
    # <branch>.lstm.l{k}.<w> -> <branch>.lstm.rnn.<w>_l{k}
    if len(parts) == 4 and parts[1] == "lstm" and parts[2].startswith("l"):
        return f"{parts[0]}.lstm.rnn.{parts[3]}_{parts[2]}"
    return file_name


def load_weights(model, tensors, dtype):
    sd = model.state_dict()
    new = {}
    for name, arr in tensors.items():
        key = module_name(name)
        if key not in sd:
            raise ref.ModelError(f"tensor '{name}' has no place in the model (key {key})")
        if tuple(sd[key].shape) != tuple(arr.shape):
            raise ref.ModelError(f"tensor '{name}' shape {arr.shape} != module {tuple(sd[key].shape)}")
        new[key] = torch.from_numpy(np.ascontiguousarray(arr)).to(dtype)
    missing = [k for k in sd if k not in new and not k.endswith("num_batches_tracked")]
    if missing:
        raise ref.ModelError(f"model parameters not in the file: {missing}")
    model.load_state_dict(new, strict=False)
    return model


def from_arrays(tensors, config, dtype=torch.float32):
    ref.check_tensors(tensors, config)
    shapes = {n: t.shape for n, t in tensors.items()}
    model = DuetTorch(config, shapes).to(dtype)
    load_weights(model, tensors, dtype)
    return model.to(memory_format=torch.channels_last)  # conv weights; other tensors are unaffected


def load(path, dtype=torch.float32):
    tensors, config = ref.load_model(path)
    return from_arrays(tensors, config, dtype), config


def resize_mel(mel, frames):
    """[n_mels, T_raw] -> [n_mels, frames] with F.interpolate(mode='nearest') (docs: the same rule)."""
    return F.interpolate(mel[None], size=frames, mode="nearest")[0]


def prepare(featdirs, config, dtype):
    """Feature dirs -> model inputs (padded MFCC batch, lengths, resized power mels)."""
    feats = [ref.load_featdir(d, config) for d in featdirs]
    inp = {}
    if feats[0]["mfcc"] is not None:
        ms = [torch.from_numpy(np.asarray(f["mfcc"], dtype=np.float64)).to(dtype) for f in feats]
        inp["lengths"] = torch.tensor([m.shape[0] for m in ms])
        inp["mfcc"] = nn.utils.rnn.pad_sequence(ms, batch_first=True)
    for key, which in (("mel_narrow", "narrow"), ("mel_wide", "wide")):
        if feats[0][key] is not None:
            frames = ref.cfg(config, f"resize.{which}_frames")
            inp[key] = torch.stack([resize_mel(torch.from_numpy(np.asarray(f[key], np.float64)).to(dtype),
                                               frames) for f in feats])
    return inp


def result_json(d, bl, model, i):
    logits = model.fuse(bl)
    return {
        "dir": d,
        "probabilities": torch.softmax(logits[i], 0).tolist(),
        "branches": {b: torch.softmax(z[i], 0).tolist() for b, z in bl.items()},
        "logits": logits[i].tolist(),
        "branch_logits": {b: z[i].tolist() for b, z in bl.items()},
    }


def n_mels_of(config, tensors_shapes, which):
    n = ref.optional_n_mels(config, which)
    if n is not None:
        return n
    # infer: the smallest band count whose CNN output matches the recurrent layer's input size
    H = config["hidden"]
    if which in ref.branches_of(config):
        want = tensors_shapes[f"{which}.lstm.l0.weight_ih"][1]
    else:
        key = "cand_t" if which == "narrow" else "cand_f"
        want = tensors_shapes[f"ds.dslstm.l0.{key}.weight"][1] - H
    for n in range(1, 4097):
        try:
            if ref.cnn_out_dims(config, which, n)[2] == want:
                return n
        except ref.ModelError:
            pass
    raise ref.ModelError(f"cannot infer the number of {which} mel bands")


def random_inputs(model, config, shapes, batch, seconds, dtype, gen):
    inp = {}
    br = model.branches
    if "mfcc" in br:
        T = 1 + (int(seconds * 16000) - 400) // 160
        inp["mfcc"] = torch.randn(batch, T, config["mfcc_dim"], generator=gen, dtype=dtype) * 5
        inp["lengths"] = torch.full((batch,), T, dtype=torch.long)
    for which in ("narrow", "wide"):
        if which in br or "ds" in br:
            n = n_mels_of(config, shapes, which)
            frames = config["resize"][f"{which}_frames"]
            inp[f"mel_{which}"] = torch.rand(batch, n, frames, generator=gen, dtype=dtype) ** 4
    return inp


def tune_malloc():
    """Keep freed memory in glibc's heap instead of returning big blocks to the OS (mmap threshold
    1 GiB, no trimming): otherwise every large activation is page-faulted afresh on each forward, which
    on this kind of CPU costs more than the convolutions (PyTorch's CPU tuning guide recommends a
    caching allocator such as jemalloc/tcmalloc for the same reason). Returns True when applied."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1))
    except (OSError, AttributeError):
        return False


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bench(model, config, shapes, args, train):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    dtype = next(model.parameters()).dtype
    inp = random_inputs(model, config, shapes, args.batch, args.seconds, dtype, gen)
    dev = torch.device(args.device)
    model = model.to(dev)
    inp = {k: v.to(dev) for k, v in inp.items()}
    # CUDA runs asynchronously: a step is timed only once its kernels have finished.
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    if train:
        model.train()
        lr = 1e-4 if config.get("preset") == "paper" else 1e-3
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        labels = torch.randint(0, len(config["classes"]), (args.batch,), generator=gen).to(dev)

        def step():
            opt.zero_grad(set_to_none=True)
            loss = model.loss(model(**inp), labels)
            loss.backward()
            opt.step()
            return loss
    else:
        model.eval()

        def step():
            with torch.inference_mode():
                return model.fuse(model(**inp))
    for _ in range(args.warmup):
        step()
    sync()
    runs = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        step()
        sync()
        runs.append(time.perf_counter() - t0)
    return {
        "mode": "train" if train else "forward",
        "kind": config["kind"], "preset": config.get("preset"),
        "batch": args.batch, "seconds": args.seconds, "threads": torch.get_num_threads(),
        "median_s": statistics.median(runs), "runs_s": runs, "peak_rss_mb": peak_rss_mb(),
        "torch": torch.__version__, "malloc_tuned": args.malloc_tuned, "device": str(dev),
        **({"gpu": torch.cuda.get_device_name(dev),
            "gpu_peak_mb": torch.cuda.max_memory_allocated(dev) / 2**20} if dev.type == "cuda" else {}),
    }


def train_steps(tensors, config, a, dtype):
    """`--train-steps`: torch.optim.Adam (its defaults) on the weighted loss, training mode (batch
    statistics, running statistics updated), the FEATDIRs as one padded batch each step."""
    labels = torch.tensor([int(v) for v in a.labels.split(",") if v.strip()])
    if len(labels) != len(a.featdirs):
        raise ref.FeatureError(f"--labels gives {len(labels)} labels for {len(a.featdirs)} FEATDIRs")
    model = from_arrays(tensors, config, dtype).train()
    inp = prepare(a.featdirs, config, dtype)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr, eps=a.adam_eps)
    losses = []
    for _ in range(a.train_steps):
        opt.zero_grad()
        loss = model.loss(model(**inp), labels)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    sd = model.state_dict()
    out = {n: sd[module_name(n)].detach().to(torch.float64).contiguous().flatten().tolist() for n in tensors}
    return {"losses": losses, "tensors": out}


def main(argv=None):
    ap = argparse.ArgumentParser(description="PyTorch Duet model: --check or benchmarks")
    ap.add_argument("--model", required=True)
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--check", action="store_true", help="eval-mode JSON lines like forward_numpy.py")
    g.add_argument("--bench-forward", action="store_true")
    g.add_argument("--bench-train", action="store_true")
    g.add_argument("--train-steps", type=int, metavar="N",
                   help="N training-mode steps (Adam) on the FEATDIRs as one padded batch; prints "
                        "{losses, tensors: {file name: flat values}} after the last")
    ap.add_argument("featdirs", nargs="*")
    ap.add_argument("--dtype", choices=["float32", "float64"], default=None,
                    help="check: float64 (default); benches: float32 (default)")
    ap.add_argument("--batched", action="store_true", help="check: run all FEATDIRs as one padded batch")
    ap.add_argument("--labels", default="", help="train-steps: the FEATDIRs' class indices, comma-separated")
    ap.add_argument("--lr", type=float, default=1e-3, help="train-steps: Adam's learning rate")
    ap.add_argument("--adam-eps", type=float, default=1e-8, help="train-steps: Adam's epsilon")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu", help="benches: torch device, e.g. cpu or cuda")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--no-malloc-tune", action="store_true",
                    help="benches: keep glibc's default mmap/trim thresholds (see tune_malloc)")
    a = ap.parse_args(argv)
    a.malloc_tuned = False
    if not a.check and not a.no_malloc_tune:
        a.malloc_tuned = tune_malloc()
    if a.threads:
        torch.set_num_threads(a.threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass
    if a.runs < 5:
        ap.error("--runs must be >= 5")
    try:
        tensors, config = ref.load_model(a.model)
        shapes = {n: t.shape for n, t in tensors.items()}
        if a.check:
            dtype = torch.float32 if a.dtype == "float32" else torch.float64
            model = from_arrays(tensors, config, dtype).eval()
            groups = [a.featdirs] if a.batched else [[d] for d in a.featdirs]
            for ds in groups:
                if not ds:
                    continue
                inp = prepare(ds, config, dtype)
                with torch.inference_mode():
                    bl = model(**inp)
                for i, d in enumerate(ds):
                    print(json.dumps(result_json(d, bl, model, i)), flush=True)
        elif a.train_steps is not None:
            dtype = torch.float32 if a.dtype == "float32" else torch.float64
            print(json.dumps(train_steps(tensors, config, a, dtype)), flush=True)
        else:
            dtype = torch.float64 if a.dtype == "float64" else torch.float32
            model = from_arrays(tensors, config, dtype)
            del tensors
            print(json.dumps(bench(model, config, shapes, a, train=a.bench_train)), flush=True)
    except (ref.ModelError, ref.FeatureError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
