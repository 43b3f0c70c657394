import dataclasses

import pytest
import torch

from textvae import precision
from textvae.cli import build_parser
from textvae.fields import help_of
from textvae.errors import TextVAEError
from textvae.evaluate import EvalConfig
from textvae.generate import Decoding
from textvae.precision import PRECISIONS, autocast_for, check_precision, cpu_has_bf16, resolve_precision
from textvae.train import TrainConfig

CONFIGS = (TrainConfig, EvalConfig, Decoding)


@pytest.fixture
def cpu_flags(monkeypatch):
    """Pretend the CPU reports these flags."""
    def pretend(*flags):
        monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
    return pretend


@pytest.mark.parametrize("flags,native", [(("avx2", "avx512f"), False), (("avx2", "avx512_bf16"), True),
                                          (("amx_bf16",), True), ((), False)])
def test_auto_is_bf16_exactly_on_cpus_with_native_bf16(cpu_flags, flags, native):
    cpu_flags(*flags)
    assert cpu_has_bf16() == native
    assert resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")
    assert resolve_precision("auto", torch.device("cpu")) == ("bf16" if native else "fp32")


@pytest.mark.parametrize("flags", [(), ("amx_bf16",)])
def test_an_explicit_choice_ignores_the_hardware(cpu_flags, flags):
    cpu_flags(*flags)
    assert [resolve_precision(p, "cpu") for p in ("fp32", "bf16")] == ["fp32", "bf16"]


def test_autocast_for_turns_bf16_autocast_on_only_for_bf16(cpu_flags):
    cpu_flags("avx2")
    for choice, expected in (("fp32", False), ("auto", False), ("bf16", True)):
        with autocast_for(choice, torch.device("cpu")):
            assert torch.is_autocast_enabled("cpu") == expected, choice
            if expected:
                assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_cpuinfo_is_read_once(monkeypatch):
    reads = []

    class FakePath:
        def __init__(self, path):
            self.path = path

        def read_text(self):
            reads.append(self.path)
            return "processor\t: 0\nflags\t\t: fpu sse2 avx512_bf16\n"

    monkeypatch.setattr(precision, "Path", FakePath)
    precision.cpu_flags.cache_clear()
    try:
        assert [cpu_has_bf16() for _ in range(3)] == [True] * 3
        assert reads == ["/proc/cpuinfo"]
    finally:
        precision.cpu_flags.cache_clear()  # forget the pretend flags


@pytest.mark.parametrize("bad", ["fp16", "BF16", "", "float32"])
def test_a_bad_value_raises_a_one_line_error_naming_the_choices(bad):
    with pytest.raises(TextVAEError) as error:
        resolve_precision(bad, "cpu")
    assert "\n" not in str(error.value) and "auto, fp32, bf16" in str(error.value)
    for config in CONFIGS:
        with pytest.raises(TextVAEError, match="precision must be one of auto, fp32, bf16") as error:
            config(precision=bad)
        assert "\n" not in str(error.value)
    with pytest.raises(TextVAEError, match="EvalConfig.precision"):
        check_precision(bad, "EvalConfig.precision")


def test_the_three_configs_share_one_precision_field():
    fields = [{f.name: f for f in dataclasses.fields(config)}["precision"] for config in CONFIGS]
    assert {f.default for f in fields} == {"auto"}
    assert len({help_of(config)["precision"] for config in CONFIGS}) == 1  # one help text
    for config in CONFIGS:
        for choice in PRECISIONS:
            assert config(precision=choice).precision == choice
    assert not any("bf16" == f.name for config in CONFIGS for f in dataclasses.fields(config))


@pytest.mark.parametrize("verb", [["train"], ["evaluate", "m"], ["sample", "m"], ["reconstruct", "m", "x"],
                                  ["interpolate", "m"], ["vary", "m", "x"]])
def test_every_command_takes_precision_and_none_takes_bf16(verb, capsys):
    assert build_parser().parse_args([*verb, "--precision", "bf16"]).precision == "bf16"
    assert build_parser().parse_args(verb).precision is None  # unset: the config's default applies
    with pytest.raises(SystemExit):
        build_parser().parse_args([*verb, "--bf16"])
    assert "unrecognized arguments: --bf16" in capsys.readouterr().err
