#!/usr/bin/env bash
# The README's main command: install textvae, prepare the poem corpus, train the `poem-small` preset,
# then print samples from it. Run from anywhere; it works in the repository root. Re-running reuses the
# prepared corpus and starts the quickstart run (runs/quickstart) afresh.
set -euo pipefail
cd "$(dirname "$0")/.."
pip install torch==2.13.0
pip install -e .
if [ ! -f data/poems/manifest.json ]; then
    textvae prepare poems
fi
rm -rf runs/quickstart
textvae train --preset poem-small --run-dir runs/quickstart
