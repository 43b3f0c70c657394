"""scripts/benchmark.py end to end on a tiny poem dataset: the device-generic path (the one `--device cuda` takes on a
GPU) run on the CPU, and its report filed by device next to other devices' results."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from textvae import data
from textvae.poetry import split_lines
from textvae.tokenizer import load_tokenizer

ROOT = Path(__file__).parent.parent
BENCHMARK = ROOT / "scripts" / "benchmark.py"
QUATRAINS = [
    "白日依山盡，黃河入海流。欲窮千里目，更上一層樓。",
    "床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。",
    "春眠不覺曉，處處聞啼鳥。夜來風雨聲，花落知多少。",
    "千山鳥飛絕，萬徑人蹤滅。孤舟蓑笠翁，獨釣寒江雪。",
    "紅豆生南國，春來發幾枝。願君多采擷，此物最相思。",
]


@pytest.fixture(scope="module")
def poems_dir(tmp_path_factory):
    """200 quatrains of famous lines shuffled, prepared with the shipped model's tokenizer (whose 8,000 pieces the
    presets' adaptive softmax bands need)."""
    lines = [line for poem in QUATRAINS for line in split_lines(poem)]
    rng = random.Random(0)
    texts = sorted({"{}，{}。{}，{}。".format(*rng.sample(lines, 4)) for _ in range(400)})[:200]
    tokenizer = load_tokenizer(ROOT / "data" / "pretrained" / "tokenizer.model")
    out = tmp_path_factory.mktemp("bench") / "poems"
    data.save(data.tokenize_splits(data.split_records([dict(text=t) for t in texts]), tokenizer), tokenizer, {}, out)
    return out


def run(*args, **kwargs):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(BENCHMARK), *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=ROOT, **kwargs)


def test_a_quick_run_files_its_results_under_the_device_and_keeps_other_devices(poems_dir, tmp_path):
    out = tmp_path / "benchmark.json"
    elsewhere = {"machine": {"device": "NVIDIA H100 80GB HBM3"}, "sampling_poems_per_s": {"5x4": 1.0}}
    out.write_text(json.dumps({"devices": {"NVIDIA H100 80GB HBM3": elsewhere}}))
    done = run("--quick", "--device", "cpu", "--parts", "train", "sampling", "--data", poems_dir, "--out", out,
               "--plot", tmp_path / "ttq.png", timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    devices = json.loads(out.read_text())["devices"]
    assert devices["NVIDIA H100 80GB HBM3"] == elsewhere
    (name, entry), = [(k, v) for k, v in devices.items() if k != "NVIDIA H100 80GB HBM3"]
    assert entry["machine"]["device"] == name and name.startswith(entry["machine"]["cpu"])
    assert entry["time_to_quality"]["reference_steps"] == 4 and len(entry["validation_curves"]["new"]) == 2
    assert all(0 < entry["mfu"][path] < 1 for path in ("reference", "new"))
    assert set(entry["sampling_poems_per_s"]) == {"5x4", "7x8"} and min(entry["sampling_poems_per_s"].values()) > 0
    assert (tmp_path / "ttq.png").stat().st_size > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")
def test_cuda_without_a_gpu_is_one_line_before_any_work(poems_dir, tmp_path):
    done = run("--device", "cuda", "--data", poems_dir, "--out", tmp_path / "b.json", timeout=120)
    assert done.returncode == 2 and "CUDA is not available here" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "b.json").exists()
