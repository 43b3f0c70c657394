#!/usr/bin/env bash
# Builds .gpu/, what scripts/device_faithful.sh and scripts/device_ptb.sh need on a lent GPU machine (Python 3.12,
# PyTorch, pyarrow 25, no `datasets`, no network): the wheels of datasets and of the three packages it needs that
# the machine lacks, the token ids of data/poems's train and validation splits, and data/ptb where it is
# prepared. About 14 MB beside the working tree, under the tool's 64 MiB. Run from the repository root after
# `textvae prepare poems`; .gpu/ must be git-ignored (echo /.gpu/ >> .git/info/exclude).
set -euo pipefail
[ -d data/poems/dataset ] || { echo "data/poems is not prepared: run textvae prepare poems first" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p .gpu/whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 -d .gpu/whl datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 fsspec==2026.9.0
python3 - "$tmp/poems" <<'PY'
import sys
from datasets import DatasetDict, Sequence, Value, load_from_disk
full = load_from_disk("data/poems/dataset")
ids_only = DatasetDict({split: full[split].select_columns(["ids"]).cast_column("ids", Sequence(Value("int16")))
                        for split in ("train", "validation")})
ids_only.save_to_disk(f"{sys.argv[1]}/dataset", num_shards={split: 1 for split in ids_only})
PY
cp data/poems/tokenizer.model data/poems/manifest.json "$tmp/poems/"
tar -cJf .gpu/poems.tar.xz -C "$tmp" poems
if [ -d data/ptb/dataset ]; then tar -cJf .gpu/ptb.tar.xz data/ptb; fi
du -sh .gpu
