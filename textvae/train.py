"""Training: `TrainConfig`, the KL-weight and learning-rate schedules, and `train()`.

Objective per batch: mean over sentences of rec + β·KL′, where KL′ is the KL with optional free bits.
Resuming is exact: batches and random draws are pure functions of (seed, step, rank), so the step,
weights and optimizer state saved in `last/` are all a resume needs. Validation figures come from
textvae.latent_stats; the named recipes live in textvae.presets. Shapes: B batch, T tokens, D latent.

References: Bowman et al. 2016 (linear KL annealing, word dropout); Fu et al. 2019 (cyclical annealing);
Kingma et al. 2016 (free bits); Burda et al. 2016 (active units); Loshchilov & Hutter 2019 (AdamW).
"""

import contextlib
import dataclasses
import importlib.util
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributions import kl_divergence
from tqdm import tqdm

from textvae import checkpoint, data
from textvae.atomic import append_whole, atomic_directory, check_can_write, recover, remove_leftovers, write_text
from textvae.errors import TextVAEError
from textvae.corruption import KINDS, Corruption, corrupt
from textvae.crossing import crossing_loss
from textvae.latent_stats import validation_figures
from textvae.locking import writer_lock
from textvae.fields import SEED_LIMIT, check_choice, check_device, check_float, check_int, setting
from textvae.malloc import keep_freed_memory
from textvae.precision import PRECISION_HELP, autocast_for, check_precision
from textvae.tokenizer import check_same_tokenizer
from textvae.vae import TextVAE, VAEConfig, parameter_count

SCHEDULES = ("constant", "linear", "sigmoid", "cyclical")
COLLAPSE_KL = 0.1  # nats: a validation KL below this means the decoder ignores z


@dataclass(frozen=True)
class TrainConfig:
    data_dir: str = setting("data/poems", "a `textvae prepare` output folder")
    run_dir: str = setting("runs/poem", "receives run_config.json, metrics.jsonl, last/ and best/")
    max_steps: int = setting(3000, "optimizer steps")
    batch_size: int = setting(128, "sentences per step and process")
    lr: float = setting(2e-3, "peak learning rate")
    min_lr: float = setting(1e-4, "learning rate at the end of the cosine decay")
    warmup_steps: int = setting(100, "linear learning-rate warm-up")
    weight_decay: float = setting(0.01, "AdamW decoupled weight decay")
    grad_clip: float = setting(1.0, "max global gradient norm")
    kl_schedule: str = setting("linear", "β schedule: constant | linear | sigmoid | cyclical")
    kl_warmup_steps: int = setting(1000, "linear / sigmoid: steps until β reaches beta_max")
    kl_cycles: int = setting(4, "cyclical: number of cycles M over max_steps")
    kl_ratio: float = setting(0.5, "cyclical: share R of each cycle during which β rises")
    beta_max: float = setting(1.0, "final KL weight")
    free_bits: float = setting(0.0, "λ in nats (0 = off)")
    free_bits_mode: str = setting("sentence", "sentence: max(λ, KL) per sentence | dimension: Σ_j max(λ, KL_j)")
    target_kl: float = setting(0.0, "rate control: C in nats; β·|KL̄ − C| on the batch-mean KL replaces β·KL, "
                                    "holding the rate near C (0 = off)")
    corrupt_drop: float = setting(0.0, "denoising: share of the encoder's input tokens deleted, the decoder still "
                                       "writing the clean text (Shen et al. 2020; 0 = off)")
    corrupt_substitute: float = setting(0.0, "denoising: share of the encoder's input tokens replaced by tokens "
                                             "drawn from the batch (0 = off)")
    corrupt_shuffle: float = setting(0.0, "denoising: share of the encoder's input tokens moved one or two places "
                                          "right (0 = off)")
    crossing_weight: float = setting(0.0, "weight of the line-crossing loss: a crossing of two same-shape poems "
                                          "(B's first m of L lines, then A's) is reconstructed from its own code, "
                                          "which is drawn to the point m/L of the way from A's code to B's "
                                          "(textvae.crossing; 0 = off)")
    encoder_from: str = setting("", "a saved model (e.g. the last/ of an autoencoder run, trained with --beta-max 0) "
                                    "whose encoder and posterior head start this run while the decoder starts "
                                    "afresh: Li et al. 2019's pretraining ('' = off)")
    init_from: str = setting("", "a saved model (a run's last/ or best/) whose weights, all of them, start this run "
                                 "with a fresh optimizer and schedule: a finished run trained on ('' = off)")
    eval_every: int = setting(250, "steps between validations and checkpoints")
    eval_examples: int = setting(0, "validation sentences used (0 = all)")
    seed: int = setting(0, "seeds data order, initialisation and every random draw")
    device: str = setting("auto", "auto (CUDA when present) | cpu | cuda | cuda:N")
    precision: str = setting("auto", PRECISION_HELP)
    max_bad_steps: int = setting(5, "consecutive non-finite steps before stopping")
    collapse_evals: int = setting(3, "validations in a row with collapse before the warning")
    log_every: int = setting(10, "steps between metrics.jsonl records")
    tensorboard: bool = setting(False, "also write TensorBoard logs to run_dir/tb")

    def __post_init__(self):
        for name in ("data_dir", "run_dir"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise TextVAEError(f"TrainConfig.{name} must be a folder path, not {getattr(self, name)!r}")
        for name in ("max_steps", "eval_every", "log_every"):
            check_int(self, name, 1, 10**9)
        check_int(self, "batch_size", 1, 65536)
        for name in ("max_bad_steps", "collapse_evals", "kl_cycles"):
            check_int(self, name, 1, 10**6)
        for name in ("warmup_steps", "kl_warmup_steps", "eval_examples"):
            check_int(self, name, 0, 10**9)
        check_int(self, "seed", 0, SEED_LIMIT - 1)
        check_float(self, "lr", 0, 10, low_open=True)
        check_float(self, "grad_clip", 0, 1e6, low_open=True)
        check_float(self, "kl_ratio", 0, 1, low_open=True)
        for name in ("min_lr", "weight_decay"):
            check_float(self, name, 0, 10)
        for name in ("beta_max", "free_bits", "target_kl", "crossing_weight"):
            check_float(self, name, 0, 1000)
        for kind in KINDS:
            check_float(self, f"corrupt_{kind}", 0, 1, high_open=True)
        check_choice(self, "kl_schedule", SCHEDULES)
        check_choice(self, "free_bits_mode", ("sentence", "dimension"))
        check_device(self)
        check_precision(self.precision, "TrainConfig.precision")
        if not isinstance(self.tensorboard, bool):
            raise TextVAEError(f"TrainConfig.tensorboard must be true or false, not {self.tensorboard!r}")

    @property
    def corruption(self) -> Corruption:
        return Corruption(**{kind: getattr(self, f"corrupt_{kind}") for kind in KINDS})


def check_compatible(model: VAEConfig, train: TrainConfig) -> None:
    """Options that are valid alone but not together."""
    if (train.free_bits_mode == "dimension" and train.free_bits > 0
            and model.posterior not in ("gaussian", "bn", "bn-tau")):
        raise TextVAEError(f"TrainConfig.free_bits_mode 'dimension' needs a Gaussian posterior; the "
                           f"{model.posterior!r} posterior has no per-dimension KL (use 'sentence')")
    for name in ("free_bits", "target_kl"):
        if getattr(train, name) > 0 and not model.has_latent:
            raise TextVAEError(f"TrainConfig.{name} needs a latent: the 'none' posterior has no KL")
    if train.free_bits > 0 and train.target_kl > 0:
        raise TextVAEError("TrainConfig.free_bits and TrainConfig.target_kl are two ways to set the rate: "
                           "use one of them")
    if (train.corruption.active or train.crossing_weight > 0) and not model.has_latent:
        raise TextVAEError("TrainConfig.corrupt_* and crossing_weight shape the latent: the 'none' posterior has none")
    if train.crossing_weight > 0 and (not model.segment_marks or model.posterior == "vmf"):
        raise TextVAEError("TrainConfig.crossing_weight needs lines (segment_marks, e.g. '，。') and a Gaussian "
                           "posterior (a mix of two vMF codes leaves the sphere)")
    if train.encoder_from and not model.has_latent:
        raise TextVAEError("TrainConfig.encoder_from needs a latent: the 'none' posterior has no encoder")
    if train.encoder_from and train.init_from:
        raise TextVAEError("TrainConfig.encoder_from and TrainConfig.init_from both start the weights: "
                           "init_from already copies the encoder, so use one of them")
    if train.batch_size < 2 and model.posterior in ("bn", "bn-tau"):
        raise TextVAEError(f"TrainConfig.batch_size 1 with the {model.posterior!r} posterior: batch-norm on μ "
                           "needs the statistics of a batch for its KL floor, and one example has none; "
                           "use batch_size >= 2 (the presets use 128)")


# what must match for one model's encoder and posterior head to start another's
ENCODER_FIELDS = ("encoder", "embed_dim", "encoder_hidden", "encoder_layers", "kernel_size", "latent_dim", "posterior",
                  "latent_slots")


# model fields that shape no weight: a run started from another model's weights may change them
WEIGHTLESS_FIELDS = ("encoder_dropout", "decoder_dropout", "word_dropout")


def load_donor(model: TextVAE, source: Path, data_dir: str, option: str) -> TextVAE:
    """The saved model at `source` that TrainConfig.`option` names, refused unless it is one and shares the
    run's tokenizer."""
    if not checkpoint.is_saved_model(source):
        raise TextVAEError(f"TrainConfig.{option}: {source} is not a saved model (config.json, "
                           "model.safetensors, tokenizer.model), such as a run's last/ or best/ folder")
    donor = TextVAE.from_pretrained(source)
    check_same_tokenizer(donor.tokenizer, model.tokenizer, source, data_dir,
                         "Start from a model trained on the dataset this run trains on.")
    return donor


def differing_fields(donor: TextVAE, model: TextVAE, names) -> list[str]:
    theirs, ours = donor.config.to_dict(), model.config.to_dict()
    return [f"{name} {theirs.get(name)!r} != {ours.get(name)!r}"
            for name in names if theirs.get(name) != ours.get(name)]


def start_encoder_from(model: TextVAE, source: Path, data_dir: str) -> None:
    """Copy the encoder and posterior head of the saved model at `source` into `model`; its decoder is kept
    as initialised (Li et al. 2019: pretrain as an autoencoder, then reset the decoder)."""
    donor = load_donor(model, source, data_dir, "encoder_from")
    differ = differing_fields(donor, model, ENCODER_FIELDS)
    if not donor.config.has_latent or differ:
        raise TextVAEError(f"TrainConfig.encoder_from: {source}'s encoder does not fit this model ("
                           f"{'; '.join(differ) or 'it has no latent'}): give the same encoder and posterior flags")
    model.encoder.load_state_dict(donor.encoder.state_dict())
    model.head.load_state_dict(donor.head.state_dict())


def start_weights_from(model: TextVAE, source: Path, data_dir: str) -> None:
    """Copy every weight and buffer of the saved model at `source` into `model`, whose architecture must be
    the same; the optimizer and schedule start afresh."""
    donor = load_donor(model, source, data_dir, "init_from")
    shaping = sorted((donor.config.to_dict().keys() | model.config.to_dict().keys()) - set(WEIGHTLESS_FIELDS))
    differ = differing_fields(donor, model, shaping)
    if differ:
        raise TextVAEError(f"TrainConfig.init_from: {source} is another architecture ({'; '.join(differ)}): "
                           "give the model flags it was trained with (its config.json)")
    model.load_state_dict(donor.state_dict())


def available_memory() -> int:
    """Bytes of memory this machine can still hand out (MemAvailable on Linux, else physical memory)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_fits_memory(model: VAEConfig, device: torch.device) -> None:
    """Refuse a model whose weights, gradients and AdamW moments (4 fp32 copies) exceed half the memory."""
    need = 16 * parameter_count(model)
    have = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else available_memory()
    if need > have / 2:
        raise TextVAEError(f"the model has {need // 16:,} parameters: training needs {need / 2**30:.1f} GiB for "
                           f"weights, gradients and optimizer state alone, and {have / 2**30:.1f} GiB is free. "
                           "Lower --embed-dim, --encoder-hidden, --decoder-hidden, the layers or --latent-dim")

# -----------------------------------------------------------------------------
# schedules: pure functions of the step


def kl_weight(step: int, c: TrainConfig) -> float:
    """β at a step: constant, linear warm-up, sigmoid warm-up, or cyclical (Fu et al. 2019)."""
    if c.kl_schedule == "constant":
        return c.beta_max
    if c.kl_schedule == "linear":
        return c.beta_max * min(1.0, step / max(1, c.kl_warmup_steps))
    if c.kl_schedule == "sigmoid":  # centred at half the warm-up, 0.7 % / 99.3 % at its ends
        return c.beta_max / (1.0 + math.exp(-10.0 * (step / max(1, c.kl_warmup_steps) - 0.5)))
    period = c.max_steps / c.kl_cycles
    phase = (step % period) / period
    return c.beta_max * min(1.0, phase / c.kl_ratio)


def lr_at(step: int, c: TrainConfig) -> float:
    """Linear warm-up to lr, then cosine decay to min_lr at max_steps."""
    if step < c.warmup_steps:
        return c.lr * (step + 1) / c.warmup_steps
    progress = min(1.0, (step - c.warmup_steps) / max(1, c.max_steps - c.warmup_steps))
    return c.min_lr + 0.5 * (c.lr - c.min_lr) * (1 + math.cos(math.pi * progress))


def regularised_kl(out, prior, c: TrainConfig) -> torch.Tensor:
    """KL′ per sentence (B,): the KL, its free-bits version, or the distance of the batch's mean KL from the
    target rate (its gradient pushes the rate up below C and down above it)."""
    if c.target_kl > 0:
        return (out.kl.mean() - c.target_kl).abs().expand_as(out.kl)
    if c.free_bits == 0:
        return out.kl
    if c.free_bits_mode == "sentence":
        return out.kl.clamp(min=c.free_bits)
    per_dim = kl_divergence(out.q.base_dist, prior.base_dist).mean(dim=0)  # (D,) batch mean per dimension
    return per_dim.clamp(min=c.free_bits).sum().expand_as(out.kl)

# -----------------------------------------------------------------------------
# helpers around the loop


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TextVAEError(f"TrainConfig.device is {name!r} but CUDA is not available here")
    return torch.device(name)


def seed_step(seed: int, step: int, rank: int) -> None:
    """Every step's random draws (reparameterisation, dropout) depend only on (seed, step, rank)."""
    torch.manual_seed((seed * 1_000_003 + step) * 1009 + rank)


def collapse_warning(posterior: str) -> str:
    return (f"warning: posterior collapse: validation KL has stayed under {COLLAPSE_KL} nats (or no latent "
            f"unit is active) for several evaluations; the decoder is ignoring z (posterior {posterior!r}). "
            "Remedies: KL annealing (--kl-schedule cyclical, or a longer --kl-warmup-steps), free bits "
            "(--free-bits 0.5 [--free-bits-mode dimension]), word dropout (--word-dropout 0.3), batch-norm "
            "on μ (--posterior bn --gamma 0.6, or --posterior bn-tau --tau 0.5), or the constant-KL vMF "
            "posterior (--posterior vmf --kappa 50).")

# -----------------------------------------------------------------------------
# run directory: config, metrics log, checkpoints


def check_run_dir(run_dir: Path, data_dir: Path) -> None:
    """Refuse, before step 1 and before its lock is made beside it, a run dir that training must not or cannot
    write: a file, a dataset (or a folder inside one), a saved model, a folder without write permission."""
    if run_dir.exists() and not run_dir.is_dir():
        raise TextVAEError(f"--run-dir {run_dir} is a file: give a folder (new, empty, or a textvae run)")
    if data.is_inside(run_dir, data_dir) or data.is_dataset(run_dir):
        raise TextVAEError(f"--run-dir {run_dir} is (or lies inside) a dataset folder; training would write "
                           "into it: choose a folder of its own, such as runs/NAME")
    if checkpoint.is_saved_model(run_dir):
        raise TextVAEError(f"--run-dir {run_dir} is a saved model (config.json, model.safetensors); training "
                           "would overwrite it: choose a folder of its own, such as runs/NAME")
    check_can_write(run_dir, "--run-dir")


def check_fresh_run_dir(run_dir: Path) -> None:
    """Refuse, under the run dir's lock, a fresh run into a folder whose files it would overwrite."""
    if not run_dir.is_dir():
        return
    recover(run_dir / "last")  # a checkpoint swap cut between its renames still holds a run
    if (run_dir / "last").exists():
        raise TextVAEError(f"{run_dir} already holds a run: pass --resume to continue it, or another --run-dir")
    if not (run_dir / "run_config.json").is_file() and any(not p.name.startswith(".") for p in run_dir.iterdir()):
        raise TextVAEError(f"--run-dir {run_dir} holds files that are not a textvae run; training writes "
                           "run_config.json, metrics.jsonl, last/ and best/ there: choose a new or empty folder")


def check_same_data(run_dir: Path, data_dir: str) -> None:
    """--resume continues on the dataset the run started with."""
    try:
        saved = json.loads((run_dir / "run_config.json").read_text())["train"]["data_dir"]
    except FileNotFoundError:
        return  # no run here: load_checkpoint says so
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise TextVAEError(f"{run_dir}/run_config.json is unreadable or corrupt ({e}); cannot resume") from e
    if Path(saved).resolve() != Path(data_dir).resolve():
        raise TextVAEError(f"--resume continues {run_dir} on its dataset {saved}, not {data_dir}: drop --data-dir "
                           "or start a new run with another --run-dir")


def check_data(dataset, max_len: int) -> None:
    """A run needs a validation split; examples longer than max_len would be cut, which is worth a warning."""
    if len(dataset["validation"]) == 0:
        raise TextVAEError("the dataset's validation split is empty, so no validation ELBO or best model is "
                           "possible: prepare a larger corpus (about 1 text in 100 lands in validation)")
    for split in ("train", "validation"):
        data.warn_if_cut(data.token_ids(dataset[split]), max_len, f"{split} examples")


def save_checkpoint(run_dir: Path, model: TextVAE, trainer_state: dict) -> None:
    """run_dir/last: a save_pretrained folder plus trainer_state.pt, swapped in whole."""
    with atomic_directory(run_dir / "last") as tmp:
        model.write_to(tmp)
        checkpoint.write_trainer_state(tmp, trainer_state)


def load_checkpoint(run_dir: Path, device: torch.device) -> tuple[TextVAE, dict]:
    recover(run_dir / "last")
    state = checkpoint.read_trainer_state(run_dir / "last", device)
    return TextVAE.from_pretrained(run_dir / "last", device=device).train(), state


def _record_step(line: str) -> float:
    """A metrics record's step; a line torn by a kill mid-write counts as past every checkpoint."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf


def trim_metrics(path: Path, step: int) -> None:
    """After a resume, forget records written past the checkpoint: they will be written again."""
    if path.exists():
        keep = [line for line in path.read_text().splitlines() if _record_step(line) <= step]
        write_text(path, "".join(line + "\n" for line in keep))

# -----------------------------------------------------------------------------
# distributed


def init_distributed(device_name: str) -> tuple[int, int, torch.device]:
    """(rank, world_size, device); under torchrun this joins the process group (gloo on CPU, NCCL on GPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 1, resolve_device(device_name)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world_size, device

def check_in_sync(model: TextVAE) -> None:
    """Under DDP every rank must hold the same weights; compare a per-tensor checksum across ranks."""
    checksum = torch.stack([p.detach().double().sum() for p in model.parameters()])
    gathered = [torch.empty_like(checksum) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, checksum)
    if any(not torch.equal(gathered[0], other) for other in gathered[1:]):
        raise TextVAEError("distributed ranks hold different weights: the run is out of sync")

# -----------------------------------------------------------------------------
# the loop


def train(model_config: VAEConfig, c: TrainConfig, resume: bool = False) -> dict:
    """Train, validating and checkpointing every eval_every steps. Returns the last validation figures. The run
    folder stays locked (textvae.locking) from before its first write until this returns."""
    with contextlib.ExitStack() as held:
        return _train(model_config, c, resume, held)


def _train(model_config: VAEConfig, c: TrainConfig, resume: bool, held: contextlib.ExitStack) -> dict:
    """The body of `train`; the lock it enters into `held` is released when train returns or raises."""
    check_compatible(model_config, c)
    if c.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise TextVAEError("TrainConfig.tensorboard needs the tensorboard package: pip install tensorboard")
    keep_freed_memory()
    joined_group = not dist.is_initialized()  # the group is left at the end only where this call joined it
    rank, world_size, device = init_distributed(c.device)
    if world_size > 1 and c.crossing_weight > 0:
        raise TextVAEError("TrainConfig.crossing_weight runs in one process: its extra encoder and decoder passes are "
                           "outside the DDP-wrapped forward; train without torchrun, or without the crossing loss")
    is_main = rank == 0
    run_dir = Path(c.run_dir)
    check_run_dir(run_dir, Path(c.data_dir))
    if is_main:  # before recover() and remove_leftovers, which would undo the swaps of another writer
        held.enter_context(writer_lock(run_dir, "choose another --run-dir"))
    if resume:
        check_same_data(run_dir, c.data_dir)
    else:
        check_fresh_run_dir(run_dir)
    dataset, tokenizer = data.load(c.data_dir)
    check_data(dataset, model_config.max_len)
    model_config = dataclasses.replace(model_config, vocab_size=tokenizer.vocab_size)
    if is_main and run_dir.is_dir():  # what writes killed mid-write left behind (and a swap cut in two)
        remove_leftovers(*(run_dir / name for name in ("last", "best", "metrics.jsonl", "run_config.json")))
    if resume:
        model, state = load_checkpoint(run_dir, device)
        check_same_tokenizer(model.tokenizer, tokenizer, run_dir / "last", c.data_dir,
                             "Resume on the dataset the run was trained on, or start a new run with another --run-dir.")
    else:
        check_fits_memory(model_config, device)
        torch.manual_seed(c.seed)
        model, state = TextVAE(model_config, tokenizer).to(device).train(), None
        if c.encoder_from:
            start_encoder_from(model, Path(c.encoder_from), c.data_dir)
        if c.init_from:
            start_weights_from(model, Path(c.init_from), c.data_dir)
    batches = data.Batches(data.token_ids(dataset["train"]), c.batch_size, seed=c.seed, rank=rank,
                           world_size=world_size, max_len=model.config.max_len)
    if is_main:  # every check has passed: the run's first write
        run_dir.mkdir(parents=True, exist_ok=True)
        config = checkpoint.run_config_text(model.config.to_dict(), dataclasses.asdict(c))
        write_text(run_dir / "run_config.json", config)
    separators = tuple(model.decoder.positions.separators.tolist()) if c.crossing_weight > 0 else ()
    corruption = c.corruption
    valid = data.token_ids(dataset["validation"])
    valid = valid[:c.eval_examples] if c.eval_examples else valid
    # one fused kernel over all parameters: per-tensor AdamW took 79 of 368 ms of a PTB step on one CPU core, with its
    # two 10,002 x 256 embeddings (scripts/bench_optimizer.py); the update is the same up to rounding
    optimizer = torch.optim.AdamW(model.parameters(), lr=c.lr, weight_decay=c.weight_decay, fused=True)
    step, best_elbo, collapsed, warned, train_seconds = 0, -math.inf, 0, False, 0.0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        step, best_elbo, collapsed, warned = state["step"], state["best_elbo"], state["collapsed"], state["warned"]
        train_seconds = state["train_seconds"]
    trainer_state = lambda: dict(optimizer=optimizer.state_dict(), step=step, best_elbo=best_elbo,  # noqa: E731
                                 collapsed=collapsed, warned=warned, train_seconds=train_seconds)
    ddp_model = torch.nn.parallel.DistributedDataParallel(model) if world_size > 1 else model
    metrics_path = run_dir / "metrics.jsonl"
    if is_main and resume:
        trim_metrics(metrics_path, step)
    writer = None
    if is_main and c.tensorboard:
        from torch.utils.tensorboard import SummaryWriter  # optional dependency: pip install tensorboard
        writer = SummaryWriter(str(run_dir / "tb"))
    # a fresh run starts a fresh log; unbuffered, so that append_whole sees each record's write succeed or fail
    log = open(metrics_path, "ab" if resume else "wb", buffering=0) if is_main else None
    # closed on an error too, so that the error's line starts on a line of its own
    bar = held.enter_context(tqdm(total=c.max_steps, initial=step, desc="training", unit="step", disable=not is_main))
    bad_steps, last_valid, tick, tokens_since = 0, {}, time.perf_counter(), 0
    while step < c.max_steps:
        started = time.perf_counter()
        lr, beta = lr_at(step, c), kl_weight(step, c)
        for group in optimizer.param_groups:
            group["lr"] = lr
        seed_step(c.seed, step, rank)
        ids, mask = batches(step)
        ids, mask = ids.to(device), mask.to(device)
        encoder_input = corrupt(ids, mask, corruption) if corruption.active else None
        with autocast_for(c.precision, device):
            out = ddp_model(ids, mask, encoder_input=encoder_input)
            crossing = crossing_loss(model, out.q, ids, separators) if c.crossing_weight > 0 else None
        prior = model.prior(ids.size(0))
        kl_term = regularised_kl(out, prior, c) if out.q is not None else out.kl
        loss = (out.rec + beta * kl_term).mean()
        if crossing is not None:
            loss = loss + c.crossing_weight * crossing
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), c.grad_clip)
        if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
            # with DDP the gradients are already averaged, so every rank takes the same decision
            bad_steps += 1
            if bad_steps >= c.max_bad_steps:
                if is_main:
                    save_checkpoint(run_dir, model, trainer_state())
                raise TextVAEError(f"{bad_steps} non-finite losses or gradients in a row at step {step}: "
                                   f"stopping. The weights are the last good ones, saved in {run_dir / 'last'}. "
                                   "Try a lower --lr or --grad-clip, or --precision fp32.")
            step += 1
            continue
        optimizer.step()
        bad_steps = 0
        step += 1
        train_seconds += time.perf_counter() - started
        tokens_since += int(out.ntokens.sum()) * world_size
        if is_main and (step % c.log_every == 0 or step == c.max_steps):
            elapsed, tick = time.perf_counter() - tick, time.perf_counter()
            # per-token ELBO perplexity of the batch: per-sentence figures swing with the batch's poem length
            ppl = math.exp(((out.rec + out.kl).sum() / out.ntokens.sum()).item())
            record = dict(step=step, split="train", loss=loss.item(), rec=out.rec.mean().item(),
                          kl=out.kl.mean().item(), ppl=ppl, beta=beta, lr=lr, tokens_per_s=tokens_since / elapsed)
            if crossing is not None:
                record["crossing"] = crossing.item()
            tokens_since = 0
            append_whole(log, (json.dumps(record) + "\n").encode())
            bar.set_postfix(loss=f"{record['loss']:.2f}", rec=f"{record['rec']:.2f}", kl=f"{record['kl']:.2f}",
                            beta=f"{beta:.2f}", tok_s=f"{record['tokens_per_s']:.0f}")
            if writer:
                for key in ("loss", "rec", "kl", "ppl", "beta", "lr", "tokens_per_s"):
                    writer.add_scalar(f"train/{key}", record[key], step)
        bar.update(1)
        if step % c.eval_every == 0 or step == c.max_steps:
            if is_main:
                last_valid = validation_figures(model, valid, seed=c.seed, precision=c.precision)
                record = dict(step=step, split="validation", train_seconds=round(train_seconds, 3), **last_valid)
                append_whole(log, (json.dumps(record) + "\n").encode())
                if writer:
                    for key, value in last_valid.items():
                        writer.add_scalar(f"validation/{key}", value, step)
                collapsed = collapsed + 1 if model.config.has_latent and (
                    last_valid["kl"] < COLLAPSE_KL or last_valid["active_units"] == 0) else 0
                if collapsed >= c.collapse_evals and not warned:
                    warned = True
                    tqdm.write(collapse_warning(model.config.posterior), file=sys.stderr)
                if last_valid["elbo"] > best_elbo:
                    best_elbo = last_valid["elbo"]
                    model.save_pretrained(run_dir / "best")
                save_checkpoint(run_dir, model, trainer_state())
            if world_size > 1:
                check_in_sync(model)
            tick, tokens_since = time.perf_counter(), 0
    bar.close()
    if log:
        log.close()
    if writer:
        writer.close()
    if world_size > 1 and joined_group:  # a gloo group left to the interpreter's exit can abort a rank
        dist.barrier()
        dist.destroy_process_group()
    return last_valid
