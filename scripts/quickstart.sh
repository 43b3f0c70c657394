#!/usr/bin/env bash
# The README's main command: install textvae into a virtual environment (.venv in the repository, made here
# unless one is active), then use the shipped poem model (`poem`, data/pretrained: no training and no corpus
# needed) to print prior samples in the form the model picks, rhymed regulated verse (--meter --rhyme) in each
# form, an acrostic, a reconstruction and an interpolation between 靜夜思 and 春曉. It works in the repository
# root wherever it is called from. TORCH_INDEX=https://download.pytorch.org/whl/cpu installs PyTorch's CPU-only
# build from the PyTorch project's index; without it pip takes torch from PyPI (on Linux, the CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${VIRTUAL_ENV:-}" ]; then
    [ -x .venv/bin/python ] || python3 -m venv .venv
    . .venv/bin/activate
fi
pip install torch==2.13.0 ${TORCH_INDEX:+--index-url "$TORCH_INDEX"}
pip install -e .
model=poem
# fp32, so that the seeded output is the README's on any CPU: `--precision auto` would decode in bf16 where the
# CPU has it, and bf16 rounding changes which characters are drawn
fp32="--precision fp32"
echo "== prior samples, the form the model picks"
textvae sample "$model" -n 4 --temperature 0.8 --top-p 0.9 --seed 4 $fp32
seed=0
for form in 5x4 7x4 5x8 7x8; do
    echo "== prior samples, $form (rhyme- and meter-steered)"
    textvae sample "$model" -n 3 --form "$form" --meter --rhyme --temperature 0.8 --top-p 0.9 --seed $((seed++)) $fp32
done
echo "== acrostic 春夏秋冬 (rhyme- and meter-steered)"
textvae sample "$model" -n 2 --acrostic 春夏秋冬 --meter --rhyme --temperature 0.8 --top-p 0.9 --seed 0 $fp32
echo "== reconstruction of 登鸛雀樓 (posterior mean, greedy; it keeps the input's form)"
textvae reconstruct "$model" $fp32 白日依山盡，黃河入海流。欲窮千里目，更上一層樓。
echo "== interpolation: 靜夜思 -> 春曉"
textvae interpolate "$model" 床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。 \
    春眠不覺曉，處處聞啼鳥。夜來風雨聲，花落知多少。 --steps 5 $fp32
