"""One training engine for every task: `train(config, on_event, stop_event) -> TrainResult`.

The CLI and the app's background job both call it. It never prints: progress goes to `on_event`,
so a terminal shows a progress bar and the browser shows curves from the same events.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from . import TASKS
from .augment import all_rotations, normalize, sample_pairs, shift_flip, simclr_views
from .data import ImageSet, Split, load_dataset, split
from .evaluate import embed, evaluate, knn_accuracy, rotation_accuracy
from .losses import contrastive_loss, nt_xent_loss
from .models import SSLModel, build_model

# Per-task defaults, tuned on digits to meet the quality floors within a minute on 2 CPU cores.
DEFAULT_EPOCHS = {"rotation": 20, "siamese": 12, "simclr": 20}
DEFAULT_LR = {"rotation": 1e-3, "siamese": 1e-3, "simclr": 2e-3}
DEFAULT_BATCH = {"rotation": 32, "siamese": 128, "simclr": 256}
EPOCH_EVAL_IMAGES = 2000  # per-epoch curves use at most this many images; the final eval uses all


@dataclass
class TrainConfig:
    task: str = "rotation"  # rotation | siamese | simclr
    dataset: str = "digits"  # digits | cifar10 | folder
    data_dir: Optional[str] = None  # CIFAR-10 root or the image folder
    epochs: Optional[int] = None  # passes over the training split; None = the task's default
    batch_size: Optional[int] = None  # source images per step (rotation sees 4x as many rotated)
    lr: Optional[float] = None  # Adam learning rate; None = the task's default
    seed: int = 0  # model init, split, shuffling and augmentation: same seed, same run on the CPU
    device: str = "auto"  # auto picks CUDA when present
    precision: str = "auto"  # auto | fp32 | bf16: bf16 autocast on CUDA and on CPUs with AMX units
    test_fraction: float = 0.2  # held out from training, for every metric shown
    margin: float = 1.0  # contrastive loss margin (siamese)
    temperature: float = 0.5  # NT-Xent temperature (simclr)
    positive_fraction: float = 0.5  # share of same-class pairs (siamese); the seed had ~10%
    max_shift: float = 0.06  # random shift, as a fraction of the side, of rotation-task inputs
    flip: bool = False  # horizontal flips in SimCLR views: off for digits (a flipped 2 is no 2)
    max_train_images: Optional[int] = None  # cap the training split (quick demos on big sets)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}; got {self.task!r}")
        self.epochs = DEFAULT_EPOCHS[self.task] if self.epochs is None else self.epochs
        self.batch_size = DEFAULT_BATCH[self.task] if self.batch_size is None else self.batch_size
        self.lr = DEFAULT_LR[self.task] if self.lr is None else self.lr
        validate(self)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


LIMITS = {"epochs": (1, 500), "batch_size": (2, 4096), "lr": (1e-6, 1.0)}


def validate(cfg: TrainConfig) -> None:
    """Range checks with messages a user can act on (the app shows them as they are)."""
    for name, (lo, hi) in LIMITS.items():
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (lo <= value <= hi) or (
            isinstance(value, float) and math.isnan(value)
        ):
            raise ValueError(f"{name} must be between {lo:g} and {hi:g}; got {value!r}")
    # A slider or a JSON client can send 2.5; range() and slicing would fail later, inside the thread.
    for name in ("epochs", "batch_size"):
        if int(getattr(cfg, name)) != getattr(cfg, name):
            raise ValueError(f"{name} must be a whole number; got {getattr(cfg, name)!r}")
        setattr(cfg, name, int(getattr(cfg, name)))
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise ValueError("device must be auto, cpu or cuda")
    if cfg.precision not in ("auto", "fp32", "bf16"):
        raise ValueError("precision must be auto, fp32 or bf16")


@dataclass
class Event:
    """A progress report. kind: start | step | epoch | done | stopped."""

    kind: str
    epoch: int  # 1-based epoch being run (or just finished, for "epoch")
    epochs: int
    step: int  # optimisation steps done so far
    total_steps: int
    elapsed: float  # seconds since training started
    loss: Optional[float] = None  # mean loss of the step, or of the epoch for "epoch"
    metrics: dict = field(default_factory=dict)  # held-out metrics ("epoch": quick probe, "done": full)
    message: str = ""

    @property
    def fraction(self) -> float:
        return self.step / max(1, self.total_steps)

    @property
    def eta(self) -> Optional[float]:
        """Seconds left, from the pace so far; None before the first step."""
        if self.step == 0:
            return None
        return self.elapsed / self.step * (self.total_steps - self.step)


EventFn = Callable[[Event], None]


class TrainingError(RuntimeError):
    """Training could not go on (diverged, out of memory, unusable data); the message says why."""


@dataclass
class TrainResult:
    model: SSLModel
    config: TrainConfig
    metrics: dict  # full held-out evaluation; empty if stopped
    history: list[dict]  # one entry per epoch: loss and the quick held-out probe
    dataset: ImageSet  # the training split's source set (name, class names)
    seconds: float
    stopped: bool = False


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("device 'cuda' was asked for, but no CUDA GPU is available; use auto or cpu.")
    return torch.device(name)


def cpu_has_amx() -> bool:
    return bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> Optional[torch.dtype]:
    """bf16 where it pays: on CUDA, and on CPUs whose AMX units run bf16 convolutions ~2x faster
    than fp32 (measured in docs/benchmarks.md); elsewhere fp32, where bf16 only adds conversions."""
    if cfg.precision == "bf16":
        return torch.bfloat16
    if cfg.precision == "auto" and (device.type == "cuda" or cpu_has_amx()):
        return torch.bfloat16
    return None


def prepare_data(cfg: TrainConfig, progress: Optional[Callable[[str, float], None]] = None) -> tuple[ImageSet, Split]:
    data = load_dataset(cfg.dataset, cfg.data_dir, progress=progress)
    parts = split(data, cfg.test_fraction, cfg.seed)
    if cfg.max_train_images and len(parts.train) > cfg.max_train_images:
        keep = torch.randperm(len(parts.train), generator=torch.Generator().manual_seed(cfg.seed))[: cfg.max_train_images]
        parts = Split(parts.train.subset(keep.sort().values), parts.test)
    if cfg.task == "siamese" and not parts.train.labeled:
        raise TrainingError("The siamese task learns from same/different-class pairs and needs labels: "
                            "put the images in one sub-folder per class, or choose rotation or simclr.")
    if cfg.task == "siamese" and len(torch.unique(parts.train.labels)) < 2:
        raise TrainingError("The siamese task needs at least two classes.")
    return data, parts


class _Step:
    """Builds one task batch from source indices and returns its loss; holds the task's randomness."""

    def __init__(self, cfg: TrainConfig, model: SSLModel, images: torch.Tensor, labels: Optional[torch.Tensor], gen: torch.Generator) -> None:
        self.cfg, self.model, self.images, self.labels, self.gen = cfg, model, images, labels, gen

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.images[idx]
        if self.cfg.task == "rotation":
            rotated, targets = all_rotations(shift_flip(normalize(x), self.gen, self.cfg.max_shift))
            return F.cross_entropy(self.model(rotated.contiguous(memory_format=torch.channels_last)), targets)
        if self.cfg.task == "siamese":
            partners, same = sample_pairs(self.labels, idx, self.cfg.positive_fraction, self.gen)
            both = self.model(normalize(torch.cat([x, self.images[partners]]))).float()
            a, b = both.chunk(2)
            return contrastive_loss(a, b, same.to(a.device), self.cfg.margin)
        unit = x.float().div_(255.0)
        v1 = simclr_views(unit, self.gen, flip=self.cfg.flip)
        v2 = simclr_views(unit, self.gen, flip=self.cfg.flip)
        z = self.model(torch.cat([v1, v2]).sub_(0.5).div_(0.5).contiguous(memory_format=torch.channels_last)).float()
        z1, z2 = z.chunk(2)
        return nt_xent_loss(z1, z2, self.cfg.temperature)


def _probe(model: SSLModel, parts: Split, gen_seed: int) -> dict:
    """A quick held-out number for the live curve: rotation accuracy, or kNN accuracy of the embedding."""
    test = parts.test
    if len(test) > EPOCH_EVAL_IMAGES:
        test = test.subset(torch.randperm(len(test), generator=torch.Generator().manual_seed(gen_seed))[:EPOCH_EVAL_IMAGES])
    if model.args.task == "rotation":
        return {"rotation_accuracy": rotation_accuracy(model, test.images)}
    if not parts.train.labeled:
        return {}
    train = parts.train
    if len(train) > EPOCH_EVAL_IMAGES:
        train = train.subset(torch.randperm(len(train), generator=torch.Generator().manual_seed(gen_seed))[:EPOCH_EVAL_IMAGES])
    return {"knn_accuracy": knn_accuracy(embed(model, train.images), train.labels, embed(model, test.images), test.labels)}


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA raises torch.OutOfMemoryError; the CPU allocator raises a plain RuntimeError saying
    "can't allocate memory", and numpy a MemoryError. All mean the same to the user: a smaller batch."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc)
    return "can't allocate memory" in text or "not enough memory" in text or "out of memory" in text.lower()


def train(cfg: TrainConfig, on_event: Optional[EventFn] = None, stop_event: Optional[threading.Event] = None) -> TrainResult:
    """Train `cfg.task` on `cfg.dataset`, evaluate on the held-out split, return the model and metrics.

    A set `stop_event` ends training before the next step (within one step); the result then has
    `stopped=True` and no metrics. Raises TrainingError for divergence, out-of-memory and bad data.
    """
    emit = on_event or (lambda e: None)
    stop = stop_event or threading.Event()
    device = resolve_device(cfg.device)
    amp = autocast_dtype(cfg, device)
    data, parts = prepare_data(cfg)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.task).to(device)
    baseline = copy.deepcopy(model).eval()  # the random-init encoder, for the side-by-side probe
    # channels_last lets oneDNN (CPU) and cuDNN (GPU) pick their fast NHWC kernels: ~1.9x here.
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    images = parts.train.images.to(device)
    labels = None if parts.train.labels is None else parts.train.labels.to(device)
    step_fn = _Step(cfg, model, images, labels, gen)
    n = len(images)
    batch = min(cfg.batch_size, n)
    steps_per_epoch = max(1, n // batch)  # drop the ragged last batch: NT-Xent and BatchNorm-free steps stay comparable
    total = steps_per_epoch * cfg.epochs
    # Cosine decay to zero: the last epochs settle instead of bouncing around at full rate.
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    history: list[dict] = []
    start = time.perf_counter()
    step = 0
    emit(Event("start", 1, cfg.epochs, 0, total, 0.0, message=f"{cfg.task} on {data.name}: {n} training images, {device.type}"))
    try:
        for epoch in range(1, cfg.epochs + 1):
            order = torch.randperm(n, generator=gen).to(device)
            losses = []
            model.train()
            for i in range(steps_per_epoch):
                if stop.is_set():
                    emit(Event("stopped", epoch, cfg.epochs, step, total, time.perf_counter() - start, message="stopped by request"))
                    return TrainResult(model.eval(), cfg, {}, history, data, time.perf_counter() - start, stopped=True)
                idx = order[i * batch : (i + 1) * batch]
                with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                    loss = step_fn(idx)
                if not torch.isfinite(loss):
                    raise TrainingError(
                        f"The loss became {loss.item()} at epoch {epoch}, step {step + 1}: training diverged. "
                        f"Try a lower learning rate than {cfg.lr:g}. The previous model is kept."
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                step += 1
                loss = loss.detach()
                losses.append(loss)
                emit(Event("step", epoch, cfg.epochs, step, total, time.perf_counter() - start, loss=float(loss)))
            epoch_loss = float(torch.stack(losses).mean())
            probe = _probe(model, parts, cfg.seed + epoch)
            history.append({"epoch": epoch, "loss": epoch_loss, **probe, "elapsed": time.perf_counter() - start})
            emit(Event("epoch", epoch, cfg.epochs, step, total, time.perf_counter() - start, loss=epoch_loss, metrics=probe))
        model.eval()
        metrics = evaluate(model, parts.train, parts.test, baseline=baseline.to(device))
    except (torch.OutOfMemoryError, RuntimeError, MemoryError) as exc:
        if not is_out_of_memory(exc):
            raise
        raise TrainingError(f"Out of memory at batch size {cfg.batch_size}: try a smaller batch size.") from exc
    seconds = time.perf_counter() - start
    emit(Event("done", cfg.epochs, cfg.epochs, step, total, seconds, metrics=metrics, message="finished"))
    return TrainResult(model, cfg, metrics, history, data, seconds)
