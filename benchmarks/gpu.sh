#!/usr/bin/env bash
# The real-size GPU benchmark in one call, for a machine with no network (e.g. an NVIDIA H200 with Python 3.12,
# a CUDA torch, transformers, onnx, onnxruntime and opencv-headless, and no diffusers).
#
# Here, once: `make gpu-wheels` puts the pure-Python wheels the benchmark needs and that machine lacks in .whl/.
# There: `benchmarks/gpu.sh` installs them and this project (no dependencies) into a temporary folder (nothing
# else on the machine changes), prints the versions it finds, then runs `vcam bench model --model sd15-random`
# (SD1.5 + motion modules + depth mapper, TAESD, DPT-Hybrid, CLIP ViT-L, random weights, nothing downloaded) in
# priority order within the time budget (default 480 s):
#   1. fp16 eager, every cell: 512x512 and 512x288 x T = 1, 2, 4
#   2. fp16 cached temporal attention, one layer at SD1.5's shapes (`vcam bench unet --attention-only`): the
#      plain kernels vs SDPA vs the fused Triton kernel, which "auto" picks on CUDA untried; the summary says
#      whether it is faster, i.e. whether that default stays
#   3. fp16 eager with the encode overlap (next frame's encode + depth on a side CUDA stream): 512x512, T = 2
#   4. fp16 torch.compile, 512x512 and 512x288 at T = 2
#   5. fp32 eager once: 512x512, T = 2
#   6. fp16 static step captured as a CUDA graph, 512x512 and 512x288 at T = 2, each without and with overlap
# Each cell is appended to OUT/cells.jsonl (attention rows to OUT/attention.jsonl) the moment it is done, so a
# timeout still leaves every finished cell. OUT is --out, else $OUT, else benchmarks/out/. Also written:
# OUT/versions.txt, OUT/gpu.log, OUT/summary.txt.
#
# Tested on a CPU with the tiny model: `benchmarks/gpu.sh --device cpu --tiny --out /tmp/x` (same steps, tiny
# sizes, torch.compile with the "eager" backend); `--dry-run` prints the plan and runs nothing.
set -euo pipefail

usage() {
  sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  cat <<'EOF'

usage: benchmarks/gpu.sh [--out DIR] [--device cuda|cpu] [--tiny] [--budget SECONDS] [--frames N]
                         [--python PYTHON] [--dry-run]
EOF
}

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT_DIR="${OUT:-$ROOT/benchmarks/out}"
DEVICE=cuda
TINY=0
DRY_RUN=0
BUDGET=480
FRAMES=30
PYTHON="${PYTHON:-python3}"

while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT_DIR="${2:?--out needs a folder}"; shift 2 ;;
    --device) DEVICE="${2:?--device needs cuda or cpu}"; shift 2 ;;
    --tiny) TINY=1; shift ;;
    --budget) BUDGET="${2:?--budget needs seconds}"; shift 2 ;;
    --frames) FRAMES="${2:?--frames needs a number}"; shift 2 ;;
    --python) PYTHON="${2:?--python needs an interpreter}"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "gpu.sh: unknown option $1: see benchmarks/gpu.sh --help" >&2; exit 2 ;;
  esac
done
case "$DEVICE" in cuda | cpu) ;; *) echo "gpu.sh: --device $DEVICE is not cuda or cpu" >&2; exit 2 ;; esac
case "$BUDGET$FRAMES" in *[!0-9]*) echo "gpu.sh: --budget and --frames take whole numbers" >&2; exit 2 ;; esac

STARTED=$(date +%s)
CELLS="$OUT_DIR/cells.jsonl"
LOG="$OUT_DIR/gpu.log"

if [ "$TINY" = 1 ]; then
  MODEL=(--model tiny --device "$DEVICE" --settle 0 --compile-backend eager)
  SIZES_ALL=64x32
  SIZE_ONE=64x32
  STEPS_ALL=1,2
  FRAMES=1
  ATTENTION=(--attention-shapes 64x320 --attention-repeats 2)
else
  MODEL=(--model sd15-random --device "$DEVICE" --settle 3)
  SIZES_ALL=512x512,512x288
  SIZE_ONE=512x512
  STEPS_ALL=1,2,4
  # SD1.5's motion-module layers at 512x512 (h*w x channels, 8 heads) and the largest at 512x288
  ATTENTION=(--attention-shapes 4096x320 1024x640 256x1280 64x1280 2304x320 --attention-repeats 20)
fi

# name, seconds at most, then the cell selection (`vcam bench model`), or "attention" (`vcam bench unet`)
PHASES=(
  "fp16-eager|150|--dtypes float16 --modes eager --sizes $SIZES_ALL --steps $STEPS_ALL"
  "fp16-attention|60|attention"
  "fp16-overlap|90|--dtypes float16 --modes eager --sizes $SIZE_ONE --steps 2 --overlap on"
  "fp16-compiled|210|--dtypes float16 --modes compiled --sizes $SIZES_ALL --steps 2"
  "fp32-eager|60|--dtypes float32 --modes eager --sizes $SIZE_ONE --steps 2"
)
if [ "$DEVICE" = cuda ]; then
  PHASES+=("fp16-cudagraph|120|--dtypes float16 --modes cudagraph --sizes $SIZES_ALL --steps 2 --overlap off,on")
fi

# the command of a phase, in COMMAND
phase_command() {
  if [ "$1" = attention ]; then
    COMMAND=("$PYTHON" -m vcam -v bench unet --attention-only --device "$DEVICE" "${ATTENTION[@]}")
    COMMAND+=(--out "$OUT_DIR/attention.jsonl")
  else
    # shellcheck disable=SC2206  # the selection is a list of options
    COMMAND=("$PYTHON" -m vcam -v bench model "${MODEL[@]}" --frames "$FRAMES" $1 --out "$CELLS")
  fi
}

if [ "$DRY_RUN" = 1 ]; then
  echo "gpu.sh plan (budget ${BUDGET}s, cells to $CELLS):"
  for phase in "${PHASES[@]}"; do
    IFS='|' read -r name seconds selection <<<"$phase"
    phase_command "$selection"
    echo "  $name (<= ${seconds}s): ${COMMAND[*]}"
  done
  exit 0
fi

mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
CELLS="$OUT_DIR/cells.jsonl"
LOG="$OUT_DIR/gpu.log"
: >"$CELLS"
: >"$LOG"
: >"$OUT_DIR/attention.jsonl"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1

# 1. install: the carried wheels (--no-deps) and this project into a temporary folder first on the path. The
# project is laid out as its wheel is (vcam/, model/ as vcam/model, tray/ as vcam/tray): no build backend needed
SITE="$(mktemp -d "${TMPDIR:-/tmp}/vcam-gpu-site.XXXXXX")"
trap 'rm -rf "$SITE"' EXIT
shopt -s nullglob
WHEELS=("$ROOT"/.whl/*.whl)
shopt -u nullglob
if [ "${#WHEELS[@]}" -gt 0 ]; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "${WHEELS[@]}" \
    >>"$LOG" 2>&1 || { echo "gpu.sh: installing the wheels in .whl/ failed, see $LOG" >&2; exit 1; }
fi
cp -R "$ROOT/vcam" "$SITE/vcam"
cp -R "$ROOT/model" "$SITE/vcam/model"
cp -R "$ROOT/tray" "$SITE/vcam/tray"
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
cd "$SITE"  # not the checkout: its vcam/ folder (without vcam/model) would shadow the copy

# 2. versions
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(uname -srm)"
  echo "wheels: ${WHEELS[*]##*/}"
  "$PYTHON" - <<'EOF'
import importlib, platform
print("python:", platform.python_version())
for name in ("torch", "transformers", "diffusers", "onnx", "onnxruntime", "numpy", "vcam"):
    try:
        module = importlib.import_module(name)
        print(f"{name}: {getattr(module, '__version__', '?')} ({module.__file__})")
    except ImportError as error:
        print(f"{name}: missing ({error})")
import torch
print("cuda:", torch.version.cuda, "available:", torch.cuda.is_available())
if torch.cuda.is_available():
    print("gpu:", torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))
try:
    import onnxruntime
    print("onnxruntime providers:", onnxruntime.get_available_providers())
except ImportError:
    pass
EOF
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
  fi
} 2>&1 | tee "$OUT_DIR/versions.txt"

# 3. the phases, in priority order, each bounded by its own limit and what is left of the budget
for phase in "${PHASES[@]}"; do
  IFS='|' read -r name seconds selection <<<"$phase"
  left=$((BUDGET - ($(date +%s) - STARTED)))
  # the phase caps are sized for the real model on a GPU; the tiny model on a (loaded) CPU has only the budget
  [ "$TINY" = 1 ] && seconds=$left
  limit=$((seconds < left - 5 ? seconds : left - 5))
  if [ "$limit" -lt 15 ]; then
    echo "gpu.sh: $name skipped: ${left}s left of the ${BUDGET}s budget" | tee -a "$LOG"
    continue
  fi
  echo "gpu.sh: $name (<= ${limit}s)" | tee -a "$LOG"
  phase_command "$selection"
  if ! timeout --kill-after=10 "$limit" "${COMMAND[@]}" >>"$LOG" 2>&1; then
    echo "gpu.sh: $name stopped early (time limit or error): its finished cells are in $CELLS" | tee -a "$LOG"
  fi
done

# 4. a short table, last
"$PYTHON" - "$CELLS" <<'EOF' | tee "$OUT_DIR/summary.txt"
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1], encoding="utf-8") if line.strip()]
print(f"{'cell':38} {'ms/frame':>9} {'fps':>7} {'unet ms':>8} {'latency':>7} {'KV MB':>8} {'peak MB':>9}")
for row in rows:
    if "error" in row:
        print(f"{row['cell']:38} error: {row['error'][:80]}")
        continue
    print(
        f"{row['cell']:38} {row['ms_per_frame']:9.2f} {row['fps']:7.2f} {row['breakdown_ms']['unet']:8.2f}"
        f" {row['latency_frames']!s:>7} {row['kv_cache_mb']:8.1f} {row['peak_memory_mb']:9.1f}"
    )
print(f"{len(rows)} cells")
EOF

# 5. the attention layer: is the fused kernel ("auto" on CUDA) faster than the plain kernels and SDPA?
"$PYTHON" - "$OUT_DIR/attention.jsonl" <<'EOF' | tee -a "$OUT_DIR/summary.txt"
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1], encoding="utf-8") if line.strip()]
cached = [row for row in rows if row["state"] in ("steady", "filling")]
print(f"\ncached temporal attention, one layer ({rows[0]['device'] if rows else 'no rows'}): ms, layer / kernel / static kernel")
print(f"{'rows x head_dim, state':26} {'math':>24} {'sdpa':>16} {'fused':>24}")
slower = []
for row in cached:
    def cell(backend, static=True):
        if f"{backend}_layer_ms" not in row:
            return "-"
        text = f"{row[f'{backend}_layer_ms']:.3f} / {row[f'{backend}_kernel_ms']:.3f}"
        return text + (f" / {row[f'{backend}_static_kernel_ms']:.3f}" if static else "")
    name = f"{row['rows']} x {row['head_dim']}, {row['state']}"
    print(f"{name:26} {cell('math'):>24} {cell('sdpa', False):>16} {cell('fused'):>24}")
    if "fused_layer_ms" in row:
        best = min(row["math_layer_ms"], row["sdpa_layer_ms"])
        if row["fused_layer_ms"] > best or row["fused_static_kernel_ms"] > row["math_static_kernel_ms"]:
            slower.append(name)
failures = {row.get("fused_failure") for row in cached} - {None}
if failures:
    print("fused kernel FAILED here, the plain kernels ran instead:", "; ".join(sorted(failures)))
elif not any("fused_layer_ms" in row for row in cached):
    print("fused kernel not run here (it needs CUDA and triton)")
elif slower:
    print("fused kernel SLOWER at:", "; ".join(slower))
    print('-> make "auto" stop picking it on CUDA (resolve_backend in model/stream_attention.py)')
else:
    print('fused kernel faster than the plain kernels and SDPA at every shape: "auto" keeps it on CUDA')
EOF
