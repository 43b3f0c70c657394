import json
from pathlib import Path

import pytest
import torch
from tiny_poems import tiny

from textvae import generate
from textvae.cli import main
from textvae.data import pad_batch
from textvae.errors import TextVAEError
from textvae.generate import Decoding, FreeText, constraint_for
from textvae.poetry import Verse, follows_tonal_pattern, form_of, is_cjk, join_lines, rhyme_rate, split_lines
from textvae.tokenizer import Tokenizer

POEMS = [
    "床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。",
    "春眠不覺曉，處處聞啼鳥。夜來風雨聲，花落知多少。",
    "白日依山盡，黃河入海流。欲窮千里目，更上一層樓。",
    "千山鳥飛絕，萬徑人蹤滅。孤舟蓑笠翁，獨釣寒江雪。",
    "紅豆生南國，春來發幾枝。願君多采擷，此物最相思。",
    "朝辭白帝彩雲間，千里江陵一日還。兩岸猿聲啼不住，輕舟已過萬重山。",
    "月落烏啼霜滿天，江楓漁火對愁眠。姑蘇城外寒山寺，夜半鐘聲到客船。",
    "國破山河在，城春草木深。感時花濺淚，恨別鳥驚心。"
    "烽火連三月，家書抵萬金。白頭搔更短，渾欲不勝簪。",
]
A, B = POEMS[0], POEMS[1]
FORMS = ["5x4", "7x4", "5x8", "7x8"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(POEMS, kind="char", vocab_size=1000)


@pytest.fixture(scope="module")
def trained(tok):
    """Gaussian and vMF models that reconstruct the poems, so greedy decoding has clear winners."""
    models = {}
    for posterior in ("gaussian", "vmf"):
        model = tiny(tok, posterior=posterior, **({"kappa": 20.0} if posterior == "vmf" else {})).train()
        ids, mask = pad_batch(tok.encode_batch(POEMS))
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(100):
            out = model(ids, mask)
            loss = (out.rec + 0.1 * out.kl).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        models[posterior] = model.eval()
    return models


def assert_poem(text, form, tok):
    lines = split_lines(text)
    assert form_of(lines) == form, text
    assert join_lines(lines) == text  # ，and 。 exactly where they belong, nothing else
    assert all(is_cjk(c) and tok.piece_to_id(c) != tok.unk_id for line in lines for c in line), text


# -----------------------------------------------------------------------------
# strategies


def modes(model, texts):
    """Posterior modes: latents the trained model decodes with clear margins (no near-ties to flip)."""
    ids, mask = pad_batch(model.tokenizer.encode_batch(texts))
    with torch.no_grad():
        return model.encode(ids, mask).mode


@pytest.mark.parametrize("form", ["free", "auto", "5x4"])
def test_beam_of_width_one_top_k_one_and_tiny_top_p_are_greedy(trained, form):
    model = trained["gaussian"]
    z = modes(model, POEMS)  # poems of three forms: free-form rows end at different steps
    constraint = constraint_for(model.tokenizer, form)
    torch.manual_seed(0)  # the automatic form draws each poem's line count: the same draws for every strategy
    # fp32 on every CPU: the strategies score the same logits in different ways, and bf16's rounding can turn a
    # near-tie in a different way on each path, which is not what this test is about
    greedy = generate.decode(model, z, decoding=Decoding(precision="fp32"), constraint=constraint)
    for decoding in (Decoding(strategy="beam", beam=1, precision="fp32"),
                     Decoding(strategy="sample", top_k=1, precision="fp32"),
                     Decoding(strategy="sample", top_p=1e-6, precision="fp32")):
        torch.manual_seed(0)
        assert generate.decode(model, z, decoding=decoding, constraint=constraint) == greedy


def test_beam_search_finds_the_reconstruction_of_a_trained_model(trained):
    model = trained["gaussian"]
    assert generate.reconstruct(model, POEMS, decoding=Decoding(strategy="beam", beam=3)) == [[p] for p in POEMS]


@pytest.mark.parametrize("decoder", ["gru", "lstm", "transformer"])
@pytest.mark.parametrize("strategy", ["greedy", "beam", "sample"])
def test_bf16_decoding_keeps_the_form_and_leaves_the_model_in_fp32(tok, decoder, strategy):
    model = tiny(tok, decoder=decoder)
    decoding = Decoding(strategy=strategy, precision="bf16")
    for form in FORMS:
        constraint = Verse(tok, form, rhyme="auto", meter=True)
        for text in generate.sample(model, 8, decoding=decoding, constraint=constraint, seed=0):
            assert_poem(text, form, tok)
            assert follows_tonal_pattern(split_lines(text)), text
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_bf16_decoding_of_a_trained_model_reconstructs_like_fp32(trained):
    model = trained["gaussian"]
    z = modes(model, POEMS)
    bf16, fp32 = Decoding(precision="bf16"), Decoding(precision="fp32")
    assert generate.decode(model, z, decoding=bf16) == generate.decode(model, z, decoding=fp32) == POEMS


def test_decoding_in_chunks_changes_nothing(trained):
    model = trained["gaussian"]
    z = modes(model, POEMS)
    assert generate.decode(model, z, batch_size=3) == generate.decode(model, z) == POEMS


def test_max_tokens_bounds_free_form_output(tok):
    texts = generate.sample(tiny(tok), 5, decoding=Decoding(strategy="sample", max_tokens=6),
                            constraint=FreeText(tok), seed=0)
    assert all(1 <= len(t) <= 6 for t in texts)  # a token decodes to at most one character


# -----------------------------------------------------------------------------
# verbs


@pytest.mark.parametrize("posterior", ["gaussian", "vmf"])
def test_interpolation_endpoints_are_the_reconstructions(trained, posterior):
    model = trained[posterior]
    assert generate.reconstruct(model, [A, B]) == [[A], [B]]  # the model has learnt them
    path = generate.interpolate(model, A, B, steps=5)
    assert len(path) == 5 and path[0] == A and path[-1] == B
    assert generate.interpolate(model, A, B, steps=4, constraint=Verse(model.tokenizer, "5x4"))[::3] == [A, B]


def test_slerp_path_stays_on_the_sphere_and_the_gaussian_path_is_straight(trained):
    sphere = generate.latent_path(trained["vmf"], A, B, steps=9, path="linear")
    assert torch.allclose(sphere.norm(dim=-1), torch.ones(9), atol=1e-5)
    line = generate.latent_path(trained["gaussian"], A, B, steps=9, path="linear")
    assert torch.allclose(line[4], (line[0] + line[-1]) / 2, atol=1e-5)
    prior = generate.latent_path(trained["vmf"], steps=3)
    assert torch.allclose(prior.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_a_crossing_takes_b_s_first_half_lines_at_the_caesura():
    assert generate.crossing(A, B, 0) == A and generate.crossing(A, B, 8) == B
    assert generate.crossing(A, B, 1) == "春眠明月光，疑是地上霜。舉頭望明月，低頭思故鄉。"  # 2 + 3 characters
    assert generate.crossing(A, B, 3) == "春眠不覺曉，處處地上霜。舉頭望明月，低頭思故鄉。"
    seven = generate.crossing(POEMS[5], POEMS[6], 1)  # 4 + 3 characters
    assert seven == "月落烏啼彩雲間，千里江陵一日還。兩岸猿聲啼不住，輕舟已過萬重山。"


def test_the_crossings_path_walks_through_the_codes_of_the_crossings(trained):
    model = trained["gaussian"]
    path = generate.latent_path(model, A, B, steps=5, path="crossings")
    crossings = [generate.crossing(A, B, k) for k in (2, 4, 6)]  # 8 half-lines, 3 middle points
    assert torch.equal(path[1:-1], generate.posterior(model, crossings).mode)
    assert torch.equal(path[[0, -1]], generate.posterior(model, [A, B]).mode)  # the ends are exact
    line = generate.latent_path(model, A, POEMS[5], steps=5, path="linear")  # two forms: no crossing is regular
    assert torch.equal(generate.latent_path(model, A, POEMS[5], steps=5, path="crossings"), line)


def test_seeds_reproduce_outputs_and_leave_the_global_generator_alone(tok, trained):
    model = tiny(tok)
    state = torch.random.get_rng_state()
    constraint = Verse(tok, "5x4", rhyme="random", meter=True)
    first = generate.sample(model, 6, constraint=constraint, seed=7)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert generate.sample(model, 6, constraint=constraint, seed=7) == first
    assert generate.sample(model, 6, constraint=constraint, seed=8) != first
    assert generate.sample(model, 6, seed=7) == generate.sample(model, 6, seed=7)  # the automatic form too
    vmf = trained["vmf"]
    assert generate.vary(vmf, A, 4, seed=1) == generate.vary(vmf, A, 4, seed=1)
    assert generate.interpolate(vmf, steps=3, seed=2) == generate.interpolate(vmf, steps=3, seed=2)


def test_vary_and_reconstruct_samples_draw_from_the_posterior(trained):
    model = trained["vmf"]
    out = generate.reconstruct(model, [A, B], n=3, constraint=Verse(model.tokenizer, "5x4"), seed=0)
    assert [len(texts) for texts in out] == [3, 3]
    assert len(generate.vary(model, A, 5, seed=0)) == 5


@pytest.mark.parametrize("posterior", ["gaussian", "vmf"])
def test_vary_spread_pulls_each_draw_towards_the_mode(trained, posterior):
    model = trained[posterior]
    q = generate.posterior(model, [A])
    with generate.seeded(0, torch.device("cpu")):
        wide = generate._pulled_draws(model, q, 4000, 1.0)  # (4000, D)
    with generate.seeded(0, torch.device("cpu")):
        near = generate._pulled_draws(model, q, 4000, 0.25)
    if posterior == "vmf":  # the same draws, moved a quarter of the way out from the mode, then back on the sphere
        expected = torch.nn.functional.normalize(q.mode + 0.25 * (wide - q.mode), dim=-1)
        assert torch.allclose(near, expected, atol=1e-5)
        assert torch.allclose(near.norm(dim=-1), torch.ones(4000), atol=1e-5)
    else:  # N(mode, (0.25 sigma)^2), checked by Monte Carlo
        assert torch.allclose(near.std(0) / q.stddev[0], torch.full_like(q.stddev[0], 0.25), rtol=0.1)
        assert (near.mean(0) - q.mode[0]).abs().max() < 4 * 0.25 * q.stddev.max() / 4000 ** 0.5


def test_vary_draws_again_each_variation_that_copies_the_input(trained, monkeypatch):
    model = trained["gaussian"]
    mode = generate.posterior(model, [A]).mode  # (1, D)
    radius = []  # the largest distance from the mode that each decoding call saw

    def copies_near_the_mode(model, z, constraints, **options):  # a decoder that writes A for z close to the mode
        radius.append((z - mode).norm(dim=-1).max().item())
        return [A if (row - mode[0]).norm() < 2 * radius[0] else f"{A} {i}" for i, row in enumerate(z)]

    monkeypatch.setattr(generate, "decode_each", copies_near_the_mode)
    out = generate.vary(model, A, 6, spread=0.01, seed=0)
    assert len(out) == 6 and A not in out
    assert len(radius) > 2 and radius[-1] > 2 * radius[0]  # each redraw doubled the spread
    monkeypatch.setattr(generate, "decode_each", lambda model, z, constraints, **options: [A] * len(z))
    with pytest.warns(UserWarning, match=f"6 of 6 variations are the text itself after {generate.MAX_REDRAWS}"):
        assert generate.vary(model, A, 6, seed=0) == [A] * 6


def test_without_a_constraint_a_poem_model_writes_regular_poems_and_other_models_free_text(tok):
    hot = Decoding(strategy="sample", temperature=3)
    assert all(form_of(split_lines(t)) for t in generate.sample(tiny(tok), 16, decoding=hot, seed=0))
    english = Tokenizer.train(["the cat sat on the mat", "a dog ran far away", "birds sing in spring"], kind="char",
                              vocab_size=300)
    assert isinstance(constraint_for(english), FreeText)
    assert all(generate.sample(tiny(english), 4, decoding=Decoding(strategy="sample", max_tokens=8), seed=0))
    with pytest.raises(TextVAEError, match="no piece for ，"):
        constraint_for(english, "auto")


def test_reconstruct_and_vary_keep_each_poem_s_form(tok):
    model = tiny(tok)
    irregular = "床前明月光，疑是地上霜。"
    outputs = generate.reconstruct(model, POEMS + [irregular], n=2, decoding=Decoding(strategy="sample"),
                                   seed=0)
    for text, out in zip(POEMS, outputs):
        assert [form_of(split_lines(o)) for o in out] == [form_of(split_lines(text))] * 2, out
    assert all(form_of(split_lines(o)) is not None for o in outputs[-1])  # an automatic form
    assert {form_of(split_lines(t)) for t in generate.vary(model, POEMS[5], 6, seed=0)} == {"7x4"}
    free = generate.reconstruct(model, [POEMS[5]], constraint=FreeText(tok), seed=0)[0][0]
    assert form_of(split_lines(free)) is None  # the untrained model, unconstrained


@pytest.mark.parametrize("steps", [4, 5])
def test_interpolating_poems_of_two_forms_keeps_a_s_form_up_to_the_midpoint_and_b_s_after(tok, steps):
    path = generate.interpolate(tiny(tok), A, POEMS[5], steps=steps, decoding=Decoding(strategy="sample"), seed=0)
    assert [form_of(split_lines(p)) for p in path] == ["5x4"] * (steps // 2 + steps % 2) + ["7x4"] * (steps // 2)


def test_a_model_without_latent_samples_like_a_language_model_and_refuses_the_rest(tok):
    model = tiny(tok, posterior="none")
    for text in generate.sample(model, 4, constraint=Verse(tok, "7x4"), seed=0):
        assert_poem(text, "7x4", tok)
    for call in (lambda: generate.reconstruct(model, [A]), lambda: generate.interpolate(model, A, B),
                 lambda: generate.vary(model, A)):
        with pytest.raises(TextVAEError, match="plain language model"):
            call()


# -----------------------------------------------------------------------------
# bad input


def test_unknown_characters_are_named_in_a_warning(tok):
    with pytest.warns(UserWarning, match="x 龘"):
        out = generate.reconstruct(tiny(tok), ["龘床前x"])
    assert len(out) == 1


def test_an_over_long_text_is_cut_with_a_warning(tok):
    with pytest.warns(UserWarning, match="only the first 78"):
        generate.reconstruct(tiny(tok), ["".join(POEMS)])


@pytest.mark.parametrize("call,message", [
    (lambda m: generate.reconstruct(m, ["  "]), "empty text"),
    (lambda m: generate.vary(m, ""), "empty text"),
    (lambda m: generate.vary(m, A, spread=0), "spread must be a number in"),
    (lambda m: generate.vary(m, A, spread=float("nan")), "spread must be a number in"),
    (lambda m: generate.reconstruct(m, [A], constraint=Verse(m.tokenizer, "7x4")), "does not fit the form 7x4"),
    (lambda m: generate.interpolate(m, A, POEMS[-1], constraint=Verse(m.tokenizer, "5x4")),
     "does not fit the form 5x4"),
    (lambda m: Verse(m.tokenizer, "5x4", acrostic="春夏秋"), "has 3 characters"),
    (lambda m: Verse(m.tokenizer, acrostic="春夏"), "4 or 8 lines"),
    (lambda m: Verse(m.tokenizer, "5x4", acrostic="春花山龘"), "'龘' is not a Chinese character in"),
    (lambda m: Verse(m.tokenizer, "6x4"), "form must be one of"),
    (lambda m: constraint_for(m.tokenizer, "6x4"), "form must be one of"),
    (lambda m: Verse(m.tokenizer, "5x4", rhyme="xyz"), "neither a 平水韻"),
    (lambda m: constraint_for(m.tokenizer, "free", meter=True), "needs a poem"),
    (lambda m: generate.sample(m, 0), ">= 1"),
    (lambda m: generate.interpolate(m, A), "two texts"),
    (lambda m: generate.interpolate(m, A, B, steps=1), "steps must be >= 2"),
    (lambda m: Decoding(strategy="nucleus"), "strategy must be one of"),
    (lambda m: Decoding(temperature=0), "temperature must be > 0"),
    (lambda m: Decoding(top_p=0), "top_p"),
    (lambda m: Decoding(precision="fp16"), "precision must be one of"),
])
def test_bad_requests_fail_with_a_clear_message(tok, call, message):
    with pytest.raises(TextVAEError, match=message):
        call(tiny(tok))


def test_missing_or_corrupt_model_directories(tok, tmp_path):
    with pytest.raises(TextVAEError, match="config.json is missing"):
        generate.load_model(tmp_path / "nowhere")
    tiny(tok).save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "tokenizer.model").unlink()
    with pytest.raises(TextVAEError, match="tokenizer.model is missing: config.json records it"):
        generate.load_model(tmp_path / "m")
    (tmp_path / "m" / "tokenizer.model").write_bytes(b"garbage")
    with pytest.raises(TextVAEError, match="not a SentencePiece model"):
        generate.load_model(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"\0" * 100)
    with pytest.raises(TextVAEError, match="corrupt"):
        generate.load_model(tmp_path / "m")


def test_a_tokenizer_from_another_model_is_refused(tok, tmp_path):
    other = Tokenizer.train(POEMS[:2], kind="char", vocab_size=1000)
    model = tiny(tok)
    model.tokenizer = other
    model.save_pretrained(tmp_path / "m")
    with pytest.raises(TextVAEError, match="different models"):
        generate.load_model(tmp_path / "m")


# -----------------------------------------------------------------------------
# command line


@pytest.fixture(scope="module")
def model_dir(trained, tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "model"
    trained["gaussian"].save_pretrained(path)
    return str(path)


def run(capsys, *argv):
    main(list(argv))
    return capsys.readouterr()


def test_cli_sample_prints_one_poem_a_line_or_json(capsys, model_dir, tok):
    lines = run(capsys, "sample", model_dir, "-n", "3", "--form", "5x4", "--acrostic", "春花山月", "--rhyme",
                "--seed", "0").out.splitlines()
    assert len(lines) == 3 and all(split_lines(t)[0][0] == "春" for t in lines)
    records = json.loads(run(capsys, "sample", model_dir, "-n", "2", "--strategy", "beam", "--json").out)
    assert len(records) == 2 and all(isinstance(r["text"], str) for r in records)


def test_cli_meter_and_rhyme_steer_every_poem_and_free_form_lifts_the_shape(capsys, model_dir, tok):
    for form in ["5x4", "7x8", "auto", "drawn"]:
        lines = run(capsys, "sample", model_dir, "-n", "6", "--form", form, "--meter", "--rhyme", "--temperature",
                    "3", "--seed", "0").out.splitlines()
        assert len(lines) == 6 and all(follows_tonal_pattern(split_lines(t)) for t in lines), lines
        assert rhyme_rate([split_lines(t) for t in lines]) == (1.0, 1.0)
    lines = run(capsys, "sample", model_dir, "-n", "6", "--meter", "--acrostic", "春花山月", "--seed", "0").out
    assert all(follows_tonal_pattern(split_lines(t)) and split_lines(t)[0][0] == "春" for t in lines.splitlines())
    free = run(capsys, "sample", model_dir, "-n", "20", "--form", "free", "--temperature", "3", "--seed", "0").out
    assert any(form_of(split_lines(t)) is None for t in free.splitlines())
    result = run(capsys, "sample", model_dir, "-n", "2", "--form", "5x4", "--rhyme", "曉", "--meter", "--seed", "0")
    assert "warning: no character kept every rule" in result.err and "meter at 4" in result.err  # 曉 is 仄


def test_cli_interpolate_help_says_how_two_forms_meet(capsys):
    with pytest.raises(SystemExit):
        main(["interpolate", "--help"])
    assert "A's form up to the midpoint and B's after it" in " ".join(capsys.readouterr().out.split())


def test_cli_reconstruct_interpolate_vary(capsys, model_dir):
    assert run(capsys, "reconstruct", model_dir, A, B).out.splitlines() == [f"{A}\t{A}", f"{B}\t{B}"]
    lines = run(capsys, "interpolate", model_dir, A, B, "--steps", "4").out.splitlines()
    assert len(lines) == 4 and lines[0] == A and lines[-1] == B
    records = json.loads(run(capsys, "interpolate", model_dir, "--steps", "3", "--seed", "1", "--json").out)
    assert [r["t"] for r in records] == [0.0, 0.5, 1.0]
    assert len(run(capsys, "vary", model_dir, A, "-n", "3", "--seed", "0").out.splitlines()) == 3


def test_cli_texts_may_follow_options(capsys, model_dir):
    """argparse alone leaves A and B unrecognised after `MODEL --steps 4` (a nargs="*" positional)."""
    after = run(capsys, "interpolate", model_dir, A, B, "--steps", "4").out
    assert run(capsys, "interpolate", model_dir, "--steps", "4", A, B).out == after
    assert run(capsys, "interpolate", model_dir, A, "--steps", "4", B).out == after
    with pytest.raises(SystemExit) as exit_info:
        main(["interpolate", model_dir, A, B, "--steps", "4", "--bogus"])
    assert exit_info.value.code == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_cli_export_writes_a_half_size_copy_that_reconstructs_alike_and_never_replaces_a_folder(
        capsys, model_dir, tmp_path):
    out = tmp_path / "half"
    assert "stored in fp16" in run(capsys, "export", model_dir, str(out)).out
    assert (out / "model.safetensors").stat().st_size < 0.55 * (Path(model_dir) / "model.safetensors").stat().st_size
    assert run(capsys, "reconstruct", str(out), A, B).out == run(capsys, "reconstruct", model_dir, A, B).out
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        main(["export", model_dir, str(out), "--dtype", "bf16"])
    assert exit_info.value.code == 1 and "already exists" in capsys.readouterr().err
    assert (out / "model.safetensors").read_bytes() == before


@pytest.mark.parametrize("argv,message", [
    (["reconstruct", "MODEL", "床前明月光x"], "warning: not in the model's vocabulary"),
    (["vary", "MODEL", A, "--form", "7x8"], "error: '床前明月光"),
    (["sample", "MODEL", "--form", "free", "--rhyme"], "error: an acrostic, keywords, or rhyme or meter steering needs a poem"),
    (["sample", "MODEL", "--acrostic", "春夏秋"], "error: the acrostic"),
    (["interpolate", "MODEL", A], "error: interpolate takes two texts"),
    (["sample", "nowhere"], "error: nowhere is not a saved textvae model"),
])
def test_cli_bad_input_exits_non_zero_with_the_reason(capsys, model_dir, argv, message):
    argv = [model_dir if a == "MODEL" else a for a in argv]
    if message.startswith("warning"):
        assert message in run(capsys, *argv).err
        return
    with pytest.raises(SystemExit) as exit_info:
        run(capsys, *argv)
    assert exit_info.value.code == 1
    assert message in capsys.readouterr().err
