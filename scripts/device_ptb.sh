#!/usr/bin/env bash
# The Penn Treebank study (issue 2.5) on a lent GPU: scripts/collapse_study.py --study ptb with its runs
# training and scored on CUDA, several at a time. Runs whose results are committed in docs/results/ptb-runs/
# are skipped, so successive calls work through the queue. Needs .gpu/ from scripts/build_device_bundle.sh
# (carry it) and the commit the tree holds, since the lent machine gets no .git:
#   COMMIT=$(git rev-parse HEAD) ... bash scripts/device_ptb.sh --only lm-no-latent bn-g-0-7
# BUDGET (seconds, default 540) stops the driver in time to return what finished: $OUT/ptb-runs.tar holds
# docs/results/ptb-runs/*.json (commit these) and the runs' logs. A run cut by BUDGET is lost: size --only and
# WORKERS so that the runs end inside it.
set -euo pipefail
: "${COMMIT:?set COMMIT to the commit of this tree}"
source scripts/device_env.sh
tar -xJf .gpu/ptb.tar.xz
status=0
timeout "${BUDGET:-540}" python3 scripts/collapse_study.py --study ptb --device cuda --workers "${WORKERS:-4}" \
    --threads 2 --commit "$COMMIT" "$@" || status=$?
tar -cf "$OUT/ptb-runs.tar" docs/results/ptb-runs runs/ptb/*.log 2>/dev/null || true
exit $status
