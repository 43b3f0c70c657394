"""The text-level API (textvae.load): each verb against the generate call it wraps, the CLI's meanings of its
keywords, and clear refusals of the Python traps (a string for a list, a wrong-shaped z, an unknown keyword)."""

import re
from pathlib import Path

import pytest
import torch

import textvae
from textvae import generate
from textvae.cli import main
from textvae.errors import TextVAEError

README = Path(__file__).resolve().parent.parent / "README.md"
QUIET_NIGHT = "床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。"
SPRING_MORNING = "春眠不覺曉，處處聞啼鳥。夜來風雨聲，花落知多少。"


@pytest.fixture(scope="module")
def vae():
    return textvae.load("poem")


def test_load_takes_a_short_name_from_any_folder_and_exposes_the_module(vae, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert isinstance(textvae.load().module, textvae.TextVAE) and isinstance(vae.module, textvae.TextVAE)
    assert textvae.TextVAE.from_pretrained.__doc__ and textvae.load.__doc__


def test_sample_matches_generate_with_the_same_settings(vae):
    options = dict(decoding=generate.Decoding(strategy="sample", temperature=0.8), seed=3,
                   constraint=generate.constraint_for(vae.module.tokenizer, "7x4", rhyme="auto"))
    assert vae.sample(4, form="7x4", rhyme=True, temperature=0.8, seed=3) == generate.sample(vae.module, 4, **options)


def test_rhyme_true_is_the_cli_s_bare_rhyme_flag(vae, capsys):
    main(["sample", "poem", "-n", "3", "--form", "5x4", "--rhyme", "--meter", "--seed", "5"])
    assert vae.sample(3, form="5x4", rhyme=True, meter=True, seed=5) == capsys.readouterr().out.splitlines()
    main(["sample", "poem", "-n", "2", "--form", "5x4", "--rhyme", "陽", "--seed", "5"])
    assert vae.sample(2, form="5x4", rhyme="陽", seed=5) == capsys.readouterr().out.splitlines()


def test_encode_gives_the_posterior_modes_and_decode_reads_them_back(vae):
    z = vae.encode([QUIET_NIGHT, SPRING_MORNING])
    assert z.shape == (2, vae.module.config.latent_dim)
    assert torch.equal(z, generate.posterior(vae.module, [QUIET_NIGHT, SPRING_MORNING]).mode)
    assert torch.allclose(vae.encode(QUIET_NIGHT), z[:1], atol=1e-5)  # batched alone: the same up to rounding
    with generate.seeded(0, vae.device):  # an automatic form draws each poem's line count
        expected = generate.decode(vae.module, z, constraint="auto")
    assert vae.decode(z, seed=0) == expected
    assert vae.decode(z[0], seed=1) == vae.decode(z[:1], seed=1)  # one z (D,) is a batch of one
    drawn = vae.encode([QUIET_NIGHT] * 2000, sample=True, seed=0)
    assert torch.allclose(drawn.mean(dim=0), z[0], atol=0.15)  # draws from q(z|x) centre on its mode


def test_reconstruct_returns_one_string_for_one_text_and_a_list_for_a_list(vae):
    [[expected]] = generate.reconstruct(vae.module, [QUIET_NIGHT])
    assert vae.reconstruct(QUIET_NIGHT) == expected and vae.reconstruct([QUIET_NIGHT]) == [expected]
    drawn = vae.reconstruct(QUIET_NIGHT, n=3, seed=0)
    assert drawn == generate.reconstruct(vae.module, [QUIET_NIGHT], n=3, seed=0)[0] and len(drawn) == 3


def test_interpolate_and_vary_match_generate(vae):
    assert vae.interpolate(QUIET_NIGHT, SPRING_MORNING, steps=4) == generate.interpolate(
        vae.module, QUIET_NIGHT, SPRING_MORNING, steps=4)
    assert vae.vary(QUIET_NIGHT, n=3, seed=1, script="simplified") == generate.vary(
        vae.module, QUIET_NIGHT, 3, seed=1, script="simplified")


@pytest.mark.parametrize("call, words", [
    (lambda v: v.sample(2, temprature=0.8), "unknown option 'temprature' (did you mean 'temperature'?)"),
    (lambda v: v.sample(2, form=7), "form takes a name such as '7x4'"),
    (lambda v: v.sample(2, rhyme=3), "rhyme takes True, False, or a group"),
    (lambda v: v.reconstruct(QUIET_NIGHT, temperature=0.5), "temperature shape sampling, and the greedy strategy"),
    (lambda v: v.decode(torch.zeros(2, 5)), "z must be a float tensor of shape (B, D) = (B, 32) or (32,), not"),
    (lambda v: v.decode(torch.zeros(1, 2, 32)), "z must be a float tensor of shape (B, D)"),
    (lambda v: v.vary([QUIET_NIGHT]), "vary takes one text (a string), not list"),
    (lambda v: generate.reconstruct(v.module, QUIET_NIGHT), "not one string (it would be read one character"),
    (lambda v: generate.sample(v.module, 2, decoding=generate.Decoding(temperature=0.8)), "set strategy 'sample'"),
    (lambda v: generate.sample(v.module, 2, constraint=7), "constraint must be a form's name"),
])
def test_python_traps_are_refused_with_a_clear_error(vae, call, words):
    with pytest.raises(TextVAEError, match=re.escape(words)):
        call(vae)


def test_a_form_given_as_a_string_is_that_form(vae):
    poems = generate.sample(vae.module, 2, constraint="7x4", seed=0)
    assert all(len(p) == 32 for p in poems)


def test_the_readme_api_section_runs_as_written(tmp_path, monkeypatch, capsys):
    section = README.read_text().split("## Python API", 1)[1].split("\n## ", 1)[0]
    code = "\n".join(re.findall(r"```python\n(.*?)```", section, re.S))
    assert "textvae.load" in code
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out.strip()
