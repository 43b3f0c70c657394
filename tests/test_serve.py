"""The studio's JSON API (textvae.serve): each endpoint against the library it wraps (steered sampling and
restyling among them), bad bodies and limits as 400s with a one-line JSON error, concurrent unseeded samples decoded
as one batch, a full queue or a long wait as a 503, 20 concurrent requests against a real server, and `textvae
serve`'s own checks."""

import json
import socket
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import opencc
import pytest
from fastapi.testclient import TestClient
from studio import POEMS, Server, make_model_and_data

from textvae import generate, metrics
from textvae.attributes import THEMES
from textvae.cli import main
from textvae.errors import TextVAEError
from textvae.poetry import Verse, follows_tonal_pattern, form_of, poem_rhymes, split_lines
from textvae.serve import batching, queue
from textvae.serve.app import create_app
from textvae.steering import RESTYLE_STRENGTH, Steering

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return make_model_and_data(tmp_path_factory.mktemp("studio"))


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """The same model without attribute models."""
    return make_model_and_data(tmp_path_factory.mktemp("plain"), attributes=False)[0]


@pytest.fixture(scope="module")
def client(folders, plain):
    return TestClient(create_app({"poem": folders[0], "plain": plain}, folders[1]))


@pytest.fixture(scope="module")
def model(folders):
    return generate.load_model(folders[0])


def ok(response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def refused(response, words: str) -> str:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert words in error and "Traceback" not in error and "\n" not in error
    return error


def test_models_lists_the_model_and_its_report(folders, client):
    card = ok(client.get("/api/models"))["models"][0]
    assert card["name"] == "poem" and card["posterior"] == "gaussian" and card["latent_dim"] == 8
    assert card["eval"] is None and card["priors"] == [] and card["default_prior"] is None
    (folders[0] / "eval.json").write_text(json.dumps(dict(latent=dict(iw_nll=123.4, kl=5.5, mi=3.2, active_units=8))))
    try:
        fresh = TestClient(create_app({"poem": folders[0]}, folders[1]))
        card = ok(fresh.get("/api/models"))["models"][0]
        assert card["eval"]["iw_nll"] == 123.4 and card["eval"]["active_units"] == 8
    finally:
        (folders[0] / "eval.json").unlink()


def test_models_list_the_poets_eras_and_themes_to_steer_toward(client):
    poem, plain = ok(client.get("/api/models"))["models"]
    assert poem["attributes"] == dict(authors=["李白", "杜甫"], eras=["song", "tang"], themes=list(THEMES))
    assert plain["name"] == "plain" and plain["attributes"] is None


@pytest.mark.parametrize("form", ["5x4", "7x8"])
def test_sample_writes_the_form_with_rhyme_and_meter(client, form):
    body = dict(form=form, n=4, rhyme=True, meter=True, seed=1)
    poems = ok(client.post("/api/sample", json=body))["poems"]
    assert len(poems) == 4
    for poem in poems:
        lines = split_lines(poem)
        assert form_of(lines) == form and poem_rhymes(lines) and follows_tonal_pattern(lines), poem


def test_rhyme_takes_a_group_as_the_python_api_does(client, model):
    poems = ok(client.post("/api/sample", json=dict(form="5x4", n=2, rhyme="陽", seed=3)))["poems"]
    assert poems == generate.sample(model, 2, seed=3, constraint=generate.constraint_for(model.tokenizer, "5x4",
                                                                                          rhyme="陽"))


def test_sample_is_the_library_call(client, model):
    body = dict(n=3, seed=7, temperature=0.8, top_p=0.9)
    poems = ok(client.post("/api/sample", json=body))["poems"]
    assert poems == generate.sample(model, 3, seed=7, decoding=generate.Decoding(strategy="sample", temperature=0.8,
                                                                                  top_p=0.9))
    assert all(form_of(split_lines(p)) is not None for p in poems)  # no form given: a regular one, automatically


def test_sample_with_an_acrostic(client):
    poems = ok(client.post("/api/sample", json=dict(acrostic="床疑舉低", n=2, seed=0)))["poems"]
    assert all([line[0] for line in split_lines(p)] == list("床疑舉低") for p in poems)


@pytest.mark.parametrize("body", [
    dict(like="杜甫", era="tang", theme="autumn", strength=3.0, keywords="明月,江", form="5x4"),
    dict(keywords="月，江 酒"),  # either comma, or spaces, as the CLI's --keywords
    dict(theme="moon", form="7x4"),
])
def test_steered_sample_is_the_library_call_and_holds_the_keywords(client, model, body):
    poems = ok(client.post("/api/sample", json=dict(body, n=3, seed=2)))["poems"]
    steering = Steering(**{k: body[k] for k in ("like", "era", "theme", "strength") if k in body})
    constraint = generate.constraint_for(model.tokenizer, body.get("form"), keywords=body.get("keywords", ""))
    assert poems == generate.sample(model, 3, seed=2, steering=steering, constraint=constraint)
    for poem in poems:
        lines = split_lines(poem)
        assert form_of(lines) == body["form"] if "form" in body else form_of(lines) is not None, poem
        for word in body.get("keywords", "").replace("，", ",").replace(" ", ",").split(","):
            assert any(word in line for line in lines), (word, poem)


def test_restyle_keeps_the_form_and_says_how_much_stayed_in_place(client, model):
    answer = ok(client.post("/api/restyle", json=dict(text=POEMS[0], like="李白", seed=0)))
    restyled = generate.restyle(model, POEMS[0], Steering(like="李白", strength=RESTYLE_STRENGTH), seed=0)
    assert answer["restyled"] == restyled and len(restyled) == len(POEMS[0])
    assert form_of(split_lines(restyled)) == "5x4"
    assert 0 <= answer["kept"] <= 1 and answer["kept"] == metrics.kept_in_place(POEMS[0], restyled)
    to_simplified = opencc.OpenCC("t2s").convert
    simplified = ok(client.post("/api/restyle", json=dict(text=to_simplified(POEMS[0]), like="李白", seed=0,
                                                          script="simplified")))
    assert simplified["restyled"] == to_simplified(restyled)
    assert simplified["kept"] == answer["kept"]  # the poem compared in the answer's script
    weak = ok(client.post("/api/restyle", json=dict(text=POEMS[0], era="song", theme="spring", strength=0.5)))
    assert len(weak["restyled"]) == len(POEMS[0]) and 0 <= weak["kept"] <= 1


@pytest.mark.parametrize("path, body", [("/api/sample", {}), ("/api/restyle", dict(text=POEMS[0]))])
def test_a_model_without_attribute_models_says_how_to_fit_them(client, path, body):
    refused(client.post(path, json=dict(body, model="plain", theme="autumn")), "with `textvae fit-attributes MODEL`")


def test_keywords_need_no_attribute_models(client):
    poems = ok(client.post("/api/sample", json=dict(model="plain", keywords="江", n=2, seed=0)))["poems"]
    assert all("江" in poem for poem in poems)


def test_reconstruct_and_vary(client, model):
    answer = ok(client.post("/api/reconstruct", json=dict(text=POEMS[2], n=3, seed=0)))
    assert answer["reconstruction"] == generate.reconstruct(model, [POEMS[2]])[0][0]
    assert len(answer["variations"]) == 3 and all(form_of(split_lines(v)) == "5x4" for v in answer["variations"])
    close = ok(client.post("/api/reconstruct", json=dict(text=POEMS[2], n=3, spread=0.5, seed=0)))
    assert close["variations"] == generate.vary(model, POEMS[2], 3, spread=0.5, seed=0)
    refused(client.post("/api/reconstruct", json=dict(text=POEMS[2], n=3, spread=0)), "spread")
    simplified = ok(client.post("/api/reconstruct", json=dict(text="白日依山尽，黄河入海流。欲穷千里目，更上一层楼。")))
    assert simplified["reconstruction"] == answer["reconstruction"]  # read in the model's (traditional) script


def test_interpolate(client, model):
    path = ok(client.post("/api/interpolate", json=dict(a=POEMS[0], b=POEMS[5], steps=4)))["path"]
    assert len(path) == 4
    assert path[0] == generate.reconstruct(model, [POEMS[0]], constraint=Verse(model.tokenizer, "5x4"))[0][0]
    assert [form_of(split_lines(p)) for p in path] == ["5x4", "5x4", "7x4", "7x4"]
    slerp = ok(client.post("/api/interpolate", json=dict(a=POEMS[0], b=POEMS[5], steps=4, path="slerp")))["path"]
    assert slerp[::3] == path[::3]  # the same ends, walked another way


def test_the_latent_map_and_placing_poems(client):
    found = ok(client.get("/api/latent-map"))
    assert len(found["points"]) == len(POEMS) and all(len(p) == 2 for p in found["points"])
    assert sorted(set(found["labels"]["form"])) == ["5x4", "5x8", "7x4"]
    assert set(found["labels"]["dynasty"]) == {"tang", "song"}
    assert 0 < sum(found["explained"]) <= 1
    placed = ok(client.post("/api/project", json=dict(texts=[found["texts"][3]])))["points"]
    assert placed[0] == pytest.approx(found["points"][3], abs=1e-4)  # a test poem lands on its own point


def test_the_latent_map_needs_a_dataset(folders):
    bare = TestClient(create_app({"poem": folders[0]}, None))
    refused(bare.get("/api/latent-map"), "--data")


@pytest.mark.parametrize("path, body, words", [
    ("/api/sample", dict(n=101), "n: Input should be less than or equal to 100"),
    ("/api/sample", dict(n=0), "n: Input should be greater than or equal to 1"),
    ("/api/sample", dict(form="9x9"), "form must be one of"),
    ("/api/sample", dict(acrostic="春夏秋"), "acrostic"),
    ("/api/sample", dict(rhyme="yes please"), "'yes please' is neither a 平水韻 rhyme group"),
    ("/api/sample", dict(rhyme=3), "rhyme"),
    ("/api/sample", dict(model="nope"), "unknown model 'nope'; this server has poem"),
    ("/api/sample", dict(colour="red"), "colour: Extra inputs are not permitted"),
    ("/api/sample", dict(temperature=0), "temperature"),
    ("/api/sample", dict(prior="aggregate"), "no gmm prior: fit one with `textvae fit-prior MODEL --kind gmm`"),
    ("/api/sample", dict(prior="flow"), "no flow prior"),
    ("/api/sample", dict(prior="prior"), "prior: Input should be 'auto', 'standard', 'gmm', 'flow', 'diffusion'"),
    ("/api/sample", dict(theme="winter"), "unknown theme 'winter': the model knows 10; they are: farewell, autumn"),
    ("/api/sample", dict(like="李商隱"), "unknown poet '李商隱': the model knows 2; nearest"),
    ("/api/sample", dict(era="ming"), "unknown era 'ming': the model knows 2; they are: song, tang"),
    ("/api/sample", dict(theme="moon", strength=0), "strength: Input should be greater than 0"),
    ("/api/sample", dict(theme="moon", strength=101), "strength: Input should be less than or equal to 100"),
    ("/api/sample", dict(keywords="月,江,酒,山,雲"), "give 1 to 4 keywords, not 5"),
    ("/api/sample", dict(keywords="月", form="free"), "needs a poem"),
    ("/api/sample", dict(keywords="月", acrostic="床疑舉低"), "keywords and an acrostic"),
    ("/api/restyle", dict(text=POEMS[0]), "restyle needs a target"),
    ("/api/restyle", dict(text=POEMS[0], theme="winter"), "unknown theme 'winter'"),
    ("/api/restyle", dict(theme="moon"), "text: Field required"),
    ("/api/restyle", dict(text=POEMS[0], theme="moon", strength=-1), "strength: Input should be greater than 0"),
    ("/api/restyle", dict(text=POEMS[0], theme="moon", n=3), "n: Extra inputs are not permitted"),
    ("/api/reconstruct", dict(text="x" * 201), "text: String should have at most 200 characters"),
    ("/api/reconstruct", dict(text=""), "text: String should have at least 1 character"),
    ("/api/reconstruct", dict(), "text: Field required"),
    ("/api/reconstruct", dict(text="   "), "empty text"),
    ("/api/interpolate", dict(a=POEMS[0], b=POEMS[1], steps=21), "steps: Input should be less than or equal to 20"),
    ("/api/interpolate", dict(a=POEMS[0]), "b: Field required"),
    ("/api/interpolate", dict(a=POEMS[0], b=POEMS[1], path="curved"),
     "path: Input should be 'linear', 'slerp', 'prior' or 'crossings'"),
    ("/api/interpolate", dict(a=POEMS[0], b=POEMS[1], path="prior"), "path 'prior' walks the coordinates of a flow"),
    ("/api/project", dict(texts=[]), "texts: List should have at least 1 item"),
])
def test_bad_bodies_are_400s_with_a_message(client, path, body, words):
    refused(client.post(path, json=body), words)


def test_a_body_that_is_not_json_is_a_400(client):
    refused(client.post("/api/sample", content=b"{not json", headers={"Content-Type": "application/json"}), "JSON")


def test_the_page_and_its_files_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="write-form"' in page.text and 'id="restyle-form"' in page.text
    assert client.get("/static/studio.js").status_code == 200


def test_20_concurrent_requests_give_what_20_sequential_ones_give(folders):
    server = Server(*folders)
    try:
        bodies = [("/api/sample", dict(form="5x4", n=2, rhyme=True, seed=i)) for i in range(6)] + \
                 [("/api/sample", dict(form="5x4", n=2, theme="moon", keywords="江", seed=i)) for i in range(2)] + \
                 [("/api/interpolate", dict(a=POEMS[0], b=POEMS[1], steps=3, seed=i)) for i in range(4)] + \
                 [("/api/reconstruct", dict(text=POEMS[i], n=2, seed=i)) for i in range(4)] + \
                 [("/api/restyle", dict(text=POEMS[i], era="tang", seed=i)) for i in range(4)]
        with httpx.Client(base_url=server.url, timeout=60) as http:
            sequential = [ok(http.post(path, json=body)) for path, body in bodies]
            with ThreadPoolExecutor(20) as pool:
                concurrent = list(pool.map(lambda pb: ok(http.post(pb[0], json=pb[1])), bodies))
        assert concurrent == sequential  # seeded requests do not disturb each other
    finally:
        server.stop()


@pytest.fixture
def calls(monkeypatch) -> list:
    """(n, poems) of each generate.sample call; each call also warns, naming its n."""
    made, real = [], generate.sample

    def sample(model, n, **options):
        warnings.warn(f"a call for {n}")
        made.append((n, real(model, n, **options)))
        return made[-1][1]
    monkeypatch.setattr(generate, "sample", sample)
    return made


def queued(client, bodies: list[dict]) -> list:
    """The answers to `bodies` posted at once while the model lock is held, so that all of them queue; the lock
    is let go once every unseeded one has joined a batch (the test waits on the batcher's state, not a clock)."""
    studio, unseeded = client.app.state.studio, sum(b["n"] for b in bodies if b.get("seed") is None)
    with ThreadPoolExecutor(len(bodies)) as pool:
        with studio.queue.lock:
            answers = [pool.submit(client.post, "/api/sample", json=body) for body in bodies]
            until(lambda: sum(group.total for group in list(studio.batcher.pending.values())) >= unseeded)
        return [answer.result() for answer in answers]


def until(condition) -> None:
    """Wait for the server's threads to reach a state (polled: no clock decides the outcome)."""
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, "the requests never reached the state waited for"
        time.sleep(0.001)


def test_concurrent_unseeded_requests_are_one_call_and_each_gets_its_own_poems(client, calls):
    ns = [1, 2, 3, 4]
    answers = [ok(a) for a in queued(client, [dict(form="5x4", rhyme=True, temperature=0.9, n=n) for n in ns])]
    assert [n for n, _ in calls] == [sum(ns)]
    made = calls[0][1]
    for n, answer in zip(ns, answers):
        poems = answer["poems"]
        assert len(poems) == n and answer["warnings"] == [f"a call for {sum(ns)}"] and answer["model"] == "poem"
        assert any(made[i:i + n] == poems for i in range(len(made)))  # a slice of the one call's poems
        assert all(form_of(split_lines(p)) == "5x4" and poem_rhymes(split_lines(p)) for p in poems), poems
    assert sorted(p for answer in answers for p in answer["poems"]) == sorted(made)  # each poem to one member
    assert not client.app.state.studio.batcher.pending


def test_a_seeded_request_is_never_batched(client, calls):
    seeded = dict(form="5x4", n=3, seed=11)
    alone = ok(client.post("/api/sample", json=seeded))["poems"]
    answers = queued(client, [dict(form="5x4", n=2), seeded, dict(form="5x4", n=2)])  # beside a batch of its form
    assert ok(answers[1])["poems"] == alone
    assert all(len(ok(answers[i])["poems"]) == 2 for i in (0, 2))
    assert sorted(n for n, _ in calls) == [3, 3, 4]


def test_different_settings_are_different_calls(client, calls):
    bodies = [dict(form="5x4", n=2), dict(form="7x4", n=2), dict(form="5x4", n=2, temperature=0.5),
              dict(form="5x4", n=2, model="plain")]
    answers = [ok(a) for a in queued(client, bodies)]
    assert [n for n, _ in calls] == [2, 2, 2, 2]
    assert [form_of(split_lines(a["poems"][0])) for a in answers] == ["5x4", "7x4", "5x4", "5x4"]
    assert [a["model"] for a in answers] == ["poem", "poem", "poem", "plain"]


@pytest.mark.parametrize("error, status", [(TextVAEError("the decoder broke"), 400),
                                           (RuntimeError("the decoder broke"), 500)])
def test_an_error_in_a_batch_reaches_every_member(client, monkeypatch, error, status):
    real = generate.sample

    def once(model, n, **options):
        monkeypatch.setattr(generate, "sample", real)
        raise error
    monkeypatch.setattr(generate, "sample", once)
    answers = queued(TestClient(client.app, raise_server_exceptions=False), [dict(n=n) for n in (1, 2, 3)])
    assert [a.status_code for a in answers] == [status] * 3
    assert all("the decoder broke" in a.json()["error"] for a in answers)
    assert len(ok(client.post("/api/sample", json=dict(n=2)))["poems"]) == 2  # the next batch is unharmed


def test_a_leader_waits_for_company_only_when_the_studio_is_busy(client, monkeypatch):
    batcher, now, waited = client.app.state.studio.batcher, [1000.0], []
    monkeypatch.setattr(batcher, "clock", lambda: now[0])
    monkeypatch.setattr(batcher, "_gather", waited.append)
    monkeypatch.setattr(batcher, "finished", float("-inf"))  # an idle studio
    ok(client.post("/api/sample", json=dict(n=1)))
    ok(client.post("/api/sample", json=dict(n=1)))  # one client sending request after request
    assert waited == []
    queued(client, [dict(n=1), dict(n=1)])  # a batch of two requests, just finished
    assert waited == []
    ok(client.post("/api/sample", json=dict(n=1)))
    assert len(waited) == 1  # under load: the clients just answered may join
    queued(client, [dict(n=1), dict(n=1)])  # after a batch of one: no wait
    now[0] += 2 * batching.BUSY  # no batch for longer than BUSY: idle again
    ok(client.post("/api/sample", json=dict(n=1)))
    assert len(waited) == 1


def test_gathering_ends_once_the_group_is_as_large_as_the_last_batch(monkeypatch):
    batcher = batching.SampleBatcher(queue.ModelQueue())
    batcher.served = 2
    full, short = batching._Group(members=2), batching._Group(members=1)
    monkeypatch.setattr(batching, "GATHER", 600.0)
    assert batcher._gather(full)  # at once: a wait of GATHER would stall the test for ten minutes
    monkeypatch.setattr(batching, "GATHER", 0.001)
    assert not batcher._gather(short)


def busy(response) -> str:
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == str(queue.RETRY_AFTER)
    error = response.json()["error"]
    assert error.startswith("the studio is busy: ") and "\n" not in error
    return error


def test_a_request_behind_a_full_queue_is_refused_at_once(client, monkeypatch):
    studio = client.app.state.studio
    monkeypatch.setattr(queue, "MAX_WAITING", 2)
    with ThreadPoolExecutor(2) as pool:
        with studio.queue.lock:
            waiting = [pool.submit(client.post, "/api/sample", json=dict(form="5x4", n=1)),
                       pool.submit(client.post, "/api/reconstruct", json=dict(text=POEMS[0]))]
            until(lambda: studio.queue.waiting == 2 and studio.batcher.pending)
            assert "2 requests are waiting" in busy(client.post("/api/sample", json=dict(form="5x4", n=3)))
            busy(client.post("/api/interpolate", json=dict(a=POEMS[0], b=POEMS[1])))
            assert [group.total for group in studio.batcher.pending.values()] == [1]  # the refused one never joined
            assert ok(client.get("/api/models"))["models"]  # what needs no model still answers
        assert len(ok(waiting[0].result())["poems"]) == 1 and ok(waiting[1].result())["reconstruction"]
    assert studio.queue.waiting == 0 and not studio.batcher.pending


def test_a_request_that_waits_too_long_for_the_model_is_refused(client, monkeypatch):
    studio = client.app.state.studio
    monkeypatch.setattr(queue, "WAIT_TIMEOUT", 0.01)
    with studio.queue.lock:
        assert "not free within 0.01 s" in busy(client.post("/api/reconstruct", json=dict(text=POEMS[0], n=2)))
        busy(client.post("/api/sample", json=dict(form="7x4", n=2)))
        busy(client.get("/api/latent-map"))
    assert not studio.batcher.pending and studio.queue.waiting == 0  # the refused leader's group is gone
    assert len(ok(client.post("/api/sample", json=dict(form="7x4", n=2)))["poems"]) == 2  # the normal path


def test_a_leader_refused_the_model_refuses_its_members_and_closes_its_group(monkeypatch):
    model_queue, decoded, everyone_in = queue.ModelQueue(), [], threading.Event()
    batcher = batching.SampleBatcher(model_queue)

    @contextmanager
    def refused():
        everyone_in.wait()
        raise queue.Busy("the studio is busy: a test")
        yield  # never reached: it makes `refused` a generator, as contextmanager needs
    monkeypatch.setattr(model_queue, "model", refused)
    with ThreadPoolExecutor(3) as pool:
        answers = [pool.submit(batcher.sample, "key", n, lambda total: decoded.append(total)) for n in (1, 2, 3)]
        until(lambda: "key" in batcher.pending and batcher.pending["key"].members == 3)
        everyone_in.set()
        for answer in answers:
            with pytest.raises(queue.Busy, match="a test"):
                answer.result()
    assert decoded == [] and not batcher.pending


def fails(argv, capsys) -> str:
    with pytest.raises(SystemExit) as raised:
        main(argv)
    assert raised.value.code not in (0, None)
    return capsys.readouterr().err


def test_serve_refuses_what_it_cannot_serve(folders, tmp_path, capsys):
    assert "is not a saved model" in fails(["serve", str(tmp_path)], capsys)
    assert "--port must be from 1 to 65535" in fails(["serve", str(folders[0]), "--port", "70000"], capsys)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        err = fails(["serve", str(folders[0]), "--port", str(port), "--data", str(folders[1])], capsys)
    assert f"cannot serve on 127.0.0.1:{port}" in err and "Traceback" not in err


def test_a_model_card_says_whether_the_latent_map_is_on(folders):
    with_data = TestClient(create_app({"poem": folders[0]}, folders[1])).get("/api/models").json()
    without = TestClient(create_app({"poem": folders[0]}, None)).get("/api/models").json()
    assert with_data["models"][0]["latent_map"] is True and without["models"][0]["latent_map"] is False
