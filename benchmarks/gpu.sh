#!/usr/bin/env bash
# The GPU speed table: our train step (JAX) and the same CMPL step in PyTorch (AMP bfloat16,
# channels_last_3d) on one NVIDIA card, for the presets paper_pair_224_bf16 and r3d18_pair_112
# (bfloat16), with MFU against the card's own measured bf16 matmul rate. See BENCHMARKS.md.
#
#   bash benchmarks/gpu.sh                   # prints the table; raw JSON lines in $OUT_DIR
#   WHEELS=/path/to/wheels bash benchmarks/gpu.sh
#
# Needs: JAX with CUDA, flax, optax, orbax-checkpoint, PyTorch with CUDA, ml_collections and
# absl-py. It installs nothing from a network: where ml_collections (pure Python) is missing,
# download it on a machine with internet, `pip download --no-deps -d wheels ml_collections`,
# copy the folder over and pass WHEELS=wheels (installed with --no-index into a temp folder).
# TensorFlow, TFDS and clu are not needed. Fails, never falls back to CPU, when JAX or torch
# sees no GPU. Each of the four runs has its own time limit; the whole script takes < 8 min.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT_DIR="${OUT_DIR:-/tmp/cmpl_jax_gpu_bench}"
mkdir -p "$OUT_DIR"
if [[ -n "${WHEELS:-}" ]]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/cmpl_jax_site \
    "$WHEELS"/*.whl
  export PYTHONPATH="/tmp/cmpl_jax_site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
export PYTHONUNBUFFERED=1
export JAX_PLATFORMS=cuda                   # no silent CPU fallback
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.92  # the 224 preset needs most of an 80-140 GB card
export TF_CPP_MIN_LOG_LEVEL=3

python3 - <<'EOF'
import importlib, sys
missing = [m for m in ("jax", "flax", "optax", "orbax.checkpoint", "torch", "ml_collections",
                       "absl") if importlib.util.find_spec(m.split(".")[0]) is None]
if missing:
  sys.exit(f"gpu.sh: missing Python packages {missing}; see the header of benchmarks/gpu.sh")
import jax, torch
try:
  backend = jax.default_backend()
except Exception as e:  # JAX_PLATFORMS=cuda without a usable GPU: jax raises (kind varies)
  reason = (str(e).splitlines() or [type(e).__name__])[0]
  sys.exit(f"gpu.sh: JAX sees no GPU ({reason}); install jax[cuda12] and check nvidia-smi")
if backend != "gpu":
  sys.exit(f"gpu.sh: JAX sees no GPU (backend {backend!r}); install jax[cuda12]")
if not torch.cuda.is_available():
  sys.exit("gpu.sh: PyTorch sees no CUDA device")
print(f"# {jax.devices()[0].device_kind}; jax {jax.__version__}, torch {torch.__version__}")
EOF

run() {  # name, time limit (s), command...
  local name=$1 limit=$2
  shift 2
  echo "# $name: $*" >&2
  if ! timeout "$limit" "$@" > "$OUT_DIR/$name.out" 2> "$OUT_DIR/$name.err"; then
    echo "gpu.sh: $name failed or ran past ${limit}s; last lines of its stderr:" >&2
    tail -20 "$OUT_DIR/$name.err" >&2
    exit 1
  fi
  grep '^{' "$OUT_DIR/$name.out" | tail -1 > "$OUT_DIR/$name.json"
}

R3D_BATCH=(--config.dtype=bfloat16 --config.batch_size=8 --config.mu=7)
run jax_paper_pair_224_bf16 200 python3 -m cmpl_jax.benchmark \
  --config=configs/benchmark.py:paper_pair_224_bf16 --what=train_step --steps=10 --warmup=3
run torch_paper_pair_224_bf16 100 python3 benchmarks/torch_reference.py --device=cuda \
  --config=configs/benchmark.py:paper_pair_224_bf16 --steps=10 --warmup=3
run jax_r3d18_pair_112_bf16 120 python3 -m cmpl_jax.benchmark \
  --config=configs/benchmark.py:r3d18_pair_112 --what=train_step --steps=10 --warmup=3 \
  "${R3D_BATCH[@]}"
run torch_r3d18_pair_112_bf16 60 python3 benchmarks/torch_reference.py --device=cuda \
  --config=configs/benchmark.py:r3d18_pair_112 --steps=10 --warmup=3 "${R3D_BATCH[@]}"

python3 - "$OUT_DIR" <<'EOF'
import json, os, sys
out = sys.argv[1]
rows = []
for preset in ("paper_pair_224_bf16", "r3d18_pair_112_bf16"):
  figures = {side: json.load(open(os.path.join(out, f"{side}_{preset}.json")))
             for side in ("jax", "torch")}
  for side, f in figures.items():
    if f["config"]["backend"] != "gpu":
      sys.exit(f"gpu.sh: {side} {preset} ran on {f['config']['backend']}, not a GPU")
  ratio = figures["jax"]["clips_per_sec"] / figures["torch"]["clips_per_sec"]
  for side, f in figures.items():
    c = f["config"]
    rows.append(f"| {preset} | {side} | {c['labeled']}+{c['labeled'] * c['mu']}x2 | "
                f"{f['clips_per_sec']:.1f} | {f['step_ms']:.1f} | {100 * f['mfu']:.1f}% | "
                f"{f.get('matmul_peak_tflops', 0):.0f} | {f['peak_device_mb'] or 0:.0f} | "
                + (f"{ratio:.2f}x |" if side == "jax" else "1.00x |"))
print("| preset | framework | clips (labeled+unlabeled x views) | clips/s | step ms | MFU | "
      "bf16 matmul peak TFLOP/s | peak device MB | vs torch |")
print("|---|---|---|---|---|---|---|---|---|")
print("\n".join(rows))
print(f"raw JSON lines: {out}/*.json")
EOF
