"""The poem studio: a local web app over saved models, and the JSON API its page and other programs call.

`create_app({name: model_dir}, data_dir)` loads every model once, up front. One lock serialises the model calls:
torch runs one request at a time, and a seeded request (which seeds the global generator inside `generate`) cannot
interleave with another. The queue for that lock is bounded (textvae.serve.queue): a request that would wait behind
too many others, or that waited too long, is an HTTP 503 with {"error": message} and a Retry-After header. Unseeded
sample requests that arrive together with the same settings apart from n are decoded as one batch
(textvae.serve.batching), each taking its own n poems, since a decode of many rows costs little more than one of a
few; a seeded request is never batched, so that it gives the poems it gives alone. Body fields carry the Python
API's names and types (docs/vocabulary.md), steering's like, era, theme and strength (textvae.steering) among them,
and are validated with limits (n ≤ 100 samples or 20 variations, steps ≤ 20, text ≤ 200 characters, strength in (0,
100]). A bad body, an unknown model or a TextVAEError is an HTTP 400 with {"error": message}; anything else is a 500
with a one-line message, never a traceback in the answer.
"""

import json
import warnings
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from textvae import generate, metrics
from textvae.errors import TextVAEError
from textvae.poetry import in_script, to_model_script
from textvae.serve import latent_map
from textvae.serve.batching import SampleBatcher
from textvae.serve.queue import RETRY_AFTER, Busy, ModelQueue
from textvae.steering import MAX_STRENGTH, RESTYLE_STRENGTH, Steering
from textvae.vae import TextVAE

STATIC = Path(__file__).parent / "static"
MAX_N, MAX_STEPS, MAX_TEXT, MAX_VARIATIONS = 100, 20, 200, 20
MAX_NAME = 40  # a poet's, an era's or a theme's name; the library names the known ones when one is wrong


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    model: str | None = Field(None, description="a model name from GET /api/models (default: the first)")
    seed: int | None = Field(None, ge=0, lt=2**32)
    script: Literal["traditional", "simplified"] | None = None


class _SteeringBody(_Body):
    like: str = Field("", max_length=MAX_NAME, description="write in the manner of this poet (GET /api/models "
                                                           "lists a model's poets)")
    era: str = Field("", max_length=MAX_NAME)
    theme: str = Field("", max_length=MAX_NAME)
    strength: float = Field(Steering.strength, gt=0, le=MAX_STRENGTH, description="how hard like, era and theme "
                                                                                  "pull: s in p(z) p(y|z)^s")

    def steering(self) -> Steering:
        return Steering(like=self.like, era=self.era, theme=self.theme, strength=self.strength)


class SampleBody(_SteeringBody):
    form: str | None = Field(None, description="5x4 | 7x4 | 5x8 | 7x8 | auto | drawn | free; null: automatic")
    n: int = Field(5, ge=1, le=MAX_N)
    rhyme: bool | str = Field(False, description="true: the group line 2 ends in; a group (七陽) or one of its "
                                                 "characters; random; false: none (as the Python API's rhyme)")
    meter: bool = False
    acrostic: str = Field("", max_length=8)
    keywords: str = Field("", max_length=20, description="words each poem holds, as `--keywords 月,江,酒`")
    temperature: float = Field(1.0, gt=0, le=5)
    top_p: float = Field(1.0, gt=0, le=1)
    prior: Literal[generate.PRIORS] = "auto"


class ReconstructBody(_Body):
    text: str = Field(min_length=1, max_length=MAX_TEXT)
    n: int = Field(0, ge=0, le=MAX_VARIATIONS, description="variations to decode beside the reconstruction")
    spread: float = Field(generate.DEFAULT_SPREAD, gt=0, le=generate.MAX_SPREAD)  # as `textvae vary --spread`


class InterpolateBody(_Body):
    a: str = Field(min_length=1, max_length=MAX_TEXT)
    b: str = Field(min_length=1, max_length=MAX_TEXT)
    steps: int = Field(5, ge=2, le=MAX_STEPS)
    path: Literal[generate.PATHS] = Field(generate.DEFAULT_PATH, description="linear | slerp | prior | crossings "
                                          "(as `textvae interpolate --path`)")


class RestyleBody(_SteeringBody):
    text: str = Field(min_length=1, max_length=MAX_TEXT)
    strength: float = Field(RESTYLE_STRENGTH, gt=0, le=MAX_STRENGTH)


class ProjectBody(_Body):
    texts: list[str] = Field(min_length=1, max_length=MAX_N)


class Studio:
    """The loaded models, their lazily built latent maps, the bounded queue for the lock around every model call,
    and the batcher that decodes concurrent unseeded sample requests under that lock."""

    def __init__(self, model_dirs: dict[str, Path], data_dir: Path | None):
        if not model_dirs:
            raise TextVAEError("the studio needs at least one model folder")
        self.dirs = {name: Path(d) for name, d in model_dirs.items()}
        self.models = {name: generate.load_model(d) for name, d in self.dirs.items()}
        self.data_dir, self.maps, self.queue = data_dir, {}, ModelQueue()
        self.batcher = SampleBatcher(self.queue)

    def model(self, name: str | None) -> tuple[str, TextVAE]:
        name = name or next(iter(self.models))
        if name not in self.models:
            raise TextVAEError(f"unknown model {name!r}; this server has {', '.join(self.models)}")
        return name, self.models[name]

    def card(self, name: str) -> dict:
        """What GET /api/models says of a model: its shape, and its eval.json figures where it has one."""
        model, report = self.models[name], self.dirs[name] / "eval.json"
        c = model.config
        card = dict(name=name, posterior=c.posterior, latent_dim=c.latent_dim if c.has_latent else 0,
                    decoder=f"{c.decoder}-{c.decoder_hidden}", parameters=sum(p.numel() for p in model.parameters()),
                    priors=list(model.priors), default_prior=model.default_prior, default_path=generate.DEFAULT_PATH,
                    latent_map=self.data_dir is not None, eval=None, attributes=None)
        if model.attributes is not None:  # what the page's poet, era and theme menus offer
            card["attributes"] = {f"{kind}s": list(model.attributes.values(kind))
                                  for kind in ("author", "era", "theme")}
        if report.is_file():
            latent = json.loads(report.read_text())["latent"]
            card["eval"] = {k: latent.get(k) for k in ("iw_nll", "iw_estimator", "elbo", "rec", "kl", "mi",
                                                        "active_units", "kl_per_dim", "variance_per_dim", "examples")}
        return card

    def latent_map(self, name: str) -> latent_map.LatentMap:
        if name not in self.maps:
            if self.data_dir is None:
                raise TextVAEError("no dataset to map: run `textvae prepare poems`, then start the studio again (or "
                                   "give a prepared dataset with --data DIR)")
            self.maps[name] = latent_map.build(self.models[name], self.data_dir)
        return self.maps[name]


def _options(body: _Body, **decoding) -> dict:
    return dict(decoding=generate.Decoding(**decoding), seed=body.seed, script=body.script)


def _sample(model: TextVAE, body: SampleBody) -> dict:
    constraint = generate.constraint_for(model.tokenizer, body.form, body.acrostic, body.rhyme, body.meter,
                                         keywords=body.keywords)
    decoding = dict(strategy="sample", temperature=body.temperature, top_p=body.top_p)
    return dict(poems=generate.sample(model, body.n, constraint=constraint, prior=body.prior,
                                      steering=body.steering(), **_options(body, **decoding)))


def _recorded(work) -> tuple[dict, list[str]]:
    """work()'s result and the library warnings (unknown characters) it raised. Callers hold the model lock:
    catch_warnings swaps process-wide state, so two at once would lose or mix warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = work()
    return result, [str(w.message) for w in caught]


def _restyle(model: TextVAE, body: RestyleBody) -> dict:
    restyled = generate.restyle(model, body.text, body.steering(), **_options(body))
    # the input as the model read it, in the answer's script, so that a simplified poem is compared like for like
    read = in_script([to_model_script(model.tokenizer, body.text.strip())], body.script, model.tokenizer)[0]
    return dict(restyled=restyled, kept=metrics.kept_in_place(read, restyled))


def _reconstruct(model: TextVAE, body: ReconstructBody) -> dict:
    options = _options(body)
    reconstruction = generate.reconstruct(model, [body.text], **options)[0][0]
    variations = generate.vary(model, body.text, body.n, spread=body.spread, **options) if body.n else []
    return dict(reconstruction=reconstruction, variations=variations)


def _bad_request(message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=400)


def _validation_message(error: RequestValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"] if part != "body")
    return f"{where}: {first['msg']}" if where else first["msg"]


def create_app(model_dirs: dict[str, Path], data_dir: Path | None = None) -> FastAPI:
    studio = Studio(model_dirs, data_dir)
    app = FastAPI(title="textvae poem studio", docs_url="/api/docs", redoc_url=None)
    app.state.studio = studio

    @app.exception_handler(TextVAEError)
    async def textvae_error(request: Request, error: TextVAEError):
        return _bad_request(str(error))

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, error: RequestValidationError):
        return _bad_request(_validation_message(error))

    @app.exception_handler(Busy)
    async def busy(request: Request, error: Busy):
        return JSONResponse({"error": str(error)}, status_code=503, headers={"Retry-After": str(RETRY_AFTER)})

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception):
        return JSONResponse({"error": f"internal error: {type(error).__name__}: {error}"}, status_code=500)

    def call(body: _Body, work) -> dict:
        """Run `work(model, body)` in its turn at the model, with library warnings (unknown characters) returned."""
        name, model = studio.model(body.model)
        with studio.queue.turn():
            result, caught = _recorded(lambda: work(model, body))
        return dict(model=name, **result, warnings=caught)

    @app.get("/api/models")
    def models() -> dict:
        return dict(models=[studio.card(name) for name in studio.models])

    @app.post("/api/sample")
    def sample(body: SampleBody) -> dict:
        if body.seed is not None:  # alone, so that it gives the poems it gives alone
            return call(body, _sample)
        name, model = studio.model(body.model)
        settings = (name, tuple(sorted(body.model_dump(exclude={"model", "n"}).items())))

        def decode(total: int) -> tuple[list[str], list[str]]:
            result, caught = _recorded(lambda: _sample(model, body.model_copy(update=dict(n=total))))
            return result["poems"], caught

        with studio.queue.place():
            poems, caught = studio.batcher.sample(settings, body.n, decode)
        return dict(model=name, poems=poems, warnings=caught)

    @app.post("/api/reconstruct")
    def reconstruct(body: ReconstructBody) -> dict:
        return call(body, _reconstruct)

    @app.post("/api/restyle")
    def restyle(body: RestyleBody) -> dict:
        return call(body, _restyle)

    @app.post("/api/interpolate")
    def interpolate(body: InterpolateBody) -> dict:
        return call(body, lambda model, b: dict(path=generate.interpolate(model, b.a, b.b, steps=b.steps,
                                                                          path=b.path, **_options(b))))

    @app.get("/api/latent-map")
    def latent_map_points(model: str | None = None) -> dict:
        name, _ = studio.model(model)
        with studio.queue.turn():
            found = studio.latent_map(name)
        return dict(model=name, points=found.points, labels=found.labels, texts=found.texts,
                    explained=found.explained)

    @app.post("/api/project")
    def project(body: ProjectBody) -> dict:
        if any(not t.strip() or len(t) > MAX_TEXT for t in body.texts):
            raise TextVAEError(f"each text must be 1 to {MAX_TEXT} characters")
        name, model = studio.model(body.model)
        with studio.queue.turn():
            points = latent_map.project_texts(model, studio.latent_map(name), body.texts)
        return dict(model=name, points=points)

    @app.get("/")
    def page():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
