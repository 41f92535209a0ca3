#!/usr/bin/env bash
# Create (or update) the project's virtual environment and install the app into it.
#
#   installers/install.sh [--dev] [--venv PATH] [--torch cpu|cuda|rocm|mps|auto]
#
# Torch goes in first, chosen for the GPU found (CUDA via nvidia-smi, ROCm via rocminfo, Apple
# MPS on macOS, else CPU), then the app with `pip install -e .[extras]`, so the project's own
# lower bound on torch never pulls a second, multi-GB build.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
venv="$root/.venv"
dev=0
torch_kind="auto"
python="${PYTHON:-python3}"

# The usage is the header comment, up to the first line of code (pure bash: no tool on PATH needed).
usage() {
  local line
  while IFS= read -r line; do
    case "$line" in
      '#!'*) ;;
      '#'*) line=${line#\#}; printf '%s\n' "${line# }" ;;
      *) return 0 ;;
    esac
  done < "${BASH_SOURCE[0]}"
}

while [ $# -gt 0 ]; do
  case "$1" in
    --dev) dev=1 ;;
    --venv) venv="$2"; shift ;;
    --torch) torch_kind="$2"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

if ! command -v "$python" >/dev/null 2>&1; then
  echo "install.sh: '$python' not found: install Python 3.10 or newer (or set PYTHON=/path/to/python3)" >&2
  exit 2
fi
if ! "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)'; then
  echo "install.sh: Python 3.10 or newer is needed, found $("$python" --version 2>&1)" >&2
  exit 2
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "==> creating the virtual environment $venv"
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip)
"${pip[@]}" install --quiet --upgrade pip

if [ "$torch_kind" = "auto" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    torch_kind="cuda"
  elif command -v rocminfo >/dev/null 2>&1 && rocminfo >/dev/null 2>&1; then
    torch_kind="rocm"
  elif [ "$(uname -s)" = "Darwin" ]; then
    torch_kind="mps"
  else
    torch_kind="cpu"
  fi
fi

if "$venv/bin/python" -c 'import torch' >/dev/null 2>&1; then
  echo "==> torch already installed: $("$venv/bin/python" -c 'import torch; print(torch.__version__)')"
else
  echo "==> installing torch ($torch_kind)"
  case "$torch_kind" in
    cuda) "${pip[@]}" install torch ;;  # PyPI's Linux wheels are CUDA builds
    rocm) "${pip[@]}" install torch --index-url https://download.pytorch.org/whl/rocm6.2 ;;
    mps) "${pip[@]}" install torch ;;  # macOS wheels include MPS
    cpu)
      # A CPU build: this pinned version is the wheel kept on build machines; elsewhere PyTorch's CPU index serves it.
      "${pip[@]}" install torch==2.13.0 || "${pip[@]}" install torch --index-url https://download.pytorch.org/whl/cpu ;;
    *) echo "install.sh: --torch must be cpu, cuda, rocm, mps or auto (got '$torch_kind')" >&2; exit 2 ;;
  esac
fi

extras="segment,tray"
[ "$torch_kind" = "cuda" ] && extras="$extras,cuda"
[ "$dev" = 1 ] && extras="$extras,dev"
echo "==> installing the app with extras [$extras]"
"${pip[@]}" install --quiet -e "${root}[$extras]"

# One OpenCV: mediapipe 0.10.32+ (which an older version of this app allowed) pulled opencv-contrib-python, which
# writes the same cv2/ folder as opencv-python-headless. Remove it, then put headless's own files back.
if "${pip[@]}" show --quiet opencv-contrib-python >/dev/null 2>&1; then
  headless=$("$venv/bin/python" -c 'from importlib.metadata import version; print(version("opencv-python-headless"))')
  echo "==> removing opencv-contrib-python: one OpenCV (opencv-python-headless $headless) is kept"
  "${pip[@]}" uninstall --quiet --yes opencv-contrib-python
  "${pip[@]}" install --quiet --force-reinstall --no-deps "opencv-python-headless==$headless"
fi
echo "==> done: $venv/bin/vcam"
