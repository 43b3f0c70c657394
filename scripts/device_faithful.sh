#!/usr/bin/env bash
# The `faithful` candidates on a lent GPU (issue 2.4): one call of the device tool, about 9 minutes.
# The lent machine has PyTorch and pyarrow but neither `datasets` nor the prepared corpus, so the call carries .gpu/
# (git-ignored, built by scripts/build_device_bundle.sh): wheels of datasets and its missing needs, and the train
# and validation token ids of data/poems. Results come back as $OUT/runs.tar.part*; `cat runs.tar.part* | tar -x`
# joins them. Arguments pass on to scripts/timed_runs.py (--candidates, and after -- options of every run).
set -euo pipefail
export OMP_NUM_THREADS=4
source scripts/device_env.sh
mkdir -p data && tar -xJf .gpu/poems.tar.xz -C data
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv
python3 scripts/timed_runs.py --budget "${BUDGET:-540}" --calibrate "${CALIBRATE:-50}" --out "$OUT" "$@"
