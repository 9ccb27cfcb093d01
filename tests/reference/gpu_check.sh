#!/usr/bin/env bash
# The GPU figures, on a machine with a GPU (Vulkan driver) and PyTorch with CUDA:
#   1. native wgpu against the CPU backend: `duet predict --json` on the same WAVs for every kind and
#      both presets (random models from `duet init-model`, BN statistics randomised) and the bundled
#      model; the largest |difference| of logits and probabilities per model (issue 4: within 1e-4);
#   2. `dual` forward at batch 1 and 32 and a training step at batch 32: Duet on wgpu
#      (bench_model --backend wgpu) beside PyTorch on CUDA (torch_model.py --device cuda), same weights.
#   3. with CORPUS=manifest.csv (and a `train` binary in BIN_DIR): one fold of `train --backend wgpu`.
# It needs no cargo: give it the release binaries `duet` and `bench_model` (built elsewhere for the
# same CPU architecture).
#
# usage: tests/reference/gpu_check.sh BIN_DIR OUT_DIR WAV...
set -u -o pipefail
BIN=${1:?BIN_DIR}
OUT=${2:?OUT_DIR}
shift 2
[ $# -gt 0 ] || { echo "give at least one WAV" >&2; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"
say() { echo "[$(date +%H:%M:%S)] $*"; }

say "adapter:"
"$BIN/duet" predict --json --backend wgpu --model "$HERE/../../www/models/demo.safetensors" "$1" \
  2>&1 >/dev/null | head -3

compare() { # model label
  local m=$1 label=$2
  "$BIN/duet" predict --json --backend cpu --model "$m" "${WAVS[@]}" >"$OUT/cpu.jsonl" 2>"$OUT/cpu.err" || { cat "$OUT/cpu.err"; return 1; }
  "$BIN/duet" predict --json --backend wgpu --model "$m" "${WAVS[@]}" >"$OUT/gpu.jsonl" 2>"$OUT/gpu.err" || { cat "$OUT/gpu.err"; return 1; }
  if grep -q "using the CPU" "$OUT/gpu.err"; then cat "$OUT/gpu.err"; return 1; fi
  python3 - "$OUT/cpu.jsonl" "$OUT/gpu.jsonl" "$label" <<'EOF' | tee -a "$OUT/agreement.jsonl"
import json, sys
cpu = [json.loads(l) for l in open(sys.argv[1])]
gpu = [json.loads(l) for l in open(sys.argv[2])]
assert len(cpu) == len(gpu) and cpu, "different number of results"
dl = dp = 0.0
for a, b in zip(cpu, gpu):
    dl = max(dl, max(abs(x - y) for x, y in zip(a["logits"], b["logits"])))
    dp = max(dp, max(abs(a["probabilities"][k] - b["probabilities"][k]) for k in a["probabilities"]))
    for br in a["branches"]:
        dp = max(dp, max(abs(x - y) for x, y in zip(a["branches"][br], b["branches"][br])))
print(json.dumps({"model": sys.argv[3], "files": len(cpu), "max_abs_logit": dl, "max_abs_prob": dp,
                  "within_1e-4": dp <= 1e-4}))
EOF
}

WAVS=("$@")
: >"$OUT/agreement.jsonl"
say "1. wgpu vs CPU"
for kind in ${KINDS:-base1 base2 base3 base4 base5 base6 ds-lstm dual}; do
  for preset in paper authors; do
    "$BIN/duet" init-model --kind $kind --preset $preset --seed 7 --out "$OUT/m.safetensors" >/dev/null
    compare "$OUT/m.safetensors" "$kind/$preset (random, seed 7)"
  done
done
compare "$HERE/../../www/models/demo.safetensors" "bundled demo model"

say "2. timings: Duet wgpu vs PyTorch CUDA"
"$BIN/duet" init-model --kind dual --preset paper --seed 0 --out "$OUT/dual.safetensors" >/dev/null
{
  for b in 1 32; do
    "$BIN/bench_model" --backend wgpu --mode forward --batch $b --runs 7 --warmup 3
    python3 "$HERE/torch_model.py" --model "$OUT/dual.safetensors" --bench-forward --batch $b --device cuda --runs 7 --warmup 3
  done
  "$BIN/bench_model" --backend wgpu --mode train --batch 32 --runs 5 --warmup 2
  python3 "$HERE/torch_model.py" --model "$OUT/dual.safetensors" --bench-train --batch 32 --device cuda --runs 5 --warmup 2
} 2>&1 | tee "$OUT/timings.jsonl"
if [ -n "${CORPUS:-}" ] && [ -x "$BIN/train" ]; then
  # 3. the researcher's workflow on the GPU: `train` with --backend wgpu, one fold.
  say "3. train --backend wgpu on $CORPUS"
  start=$(date +%s.%N)
  "$BIN/train" --corpus "manifest:$CORPUS" --backend wgpu --epochs "${EPOCHS:-3}" --max-folds 1 \
    --no-final --quiet --out "$OUT/run" 2>&1 | tail -20
  say "train took $(python3 -c "import time; print(round(time.time() - $start, 1))") s"
fi
say "done"
