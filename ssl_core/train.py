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

from . import TASKS, distributed
from .augment import all_rotations, normalize, sample_pairs, shift_flip, simclr_views
from .data import ImageSet, Split, load_dataset, split
from .errors import UserError
from .evaluate import embed, evaluate, knn_accuracy, rotation_accuracy
from .losses import contrastive_loss, nt_xent_loss
from .models import ARCHS, SSLModel, build_model
from .recipes import recipe_for
from .speed import cpu_has_bf16, reuse_freed_memory

EPOCH_EVAL_IMAGES = 2000  # per-epoch curves use at most this many images; the final eval uses all

@dataclass
class TrainConfig:
    task: str = "rotation"  # rotation | siamese | simclr
    dataset: str = "digits"  # digits | cifar10 | folder
    data_dir: Optional[str] = None  # CIFAR-10 root or the image folder
    arch: Optional[str] = None  # encoder, one of models.ARCHS; None (like every None below) = the recipe's
    epochs: Optional[int] = None  # passes over the training split
    batch_size: Optional[int] = None  # source images per step (rotation sees 4x as many rotated)
    lr: Optional[float] = None  # peak learning rate
    optimizer: Optional[str] = None  # adam (AdamW) | sgd (momentum 0.9, Nesterov)
    weight_decay: Optional[float] = None  # decoupled (AdamW) for adam, L2 for sgd; 0 for digits
    warmup: Optional[float] = None  # share of steps with a linear warm-up before the cosine decay
    max_shift: Optional[float] = None  # random shift, as a fraction of the side (rotation inputs, siamese pairs)
    flip: Optional[bool] = None  # random left-right flips: on for photos, off for digits (a mirrored 2 is no 2)
    crop_min_scale: Optional[float] = None  # smallest area share of a SimCLR random resized crop
    seed: int = 0  # model init, split, shuffling and augmentation: same seed, same run on the CPU
    device: str = "auto"  # auto picks CUDA when present
    precision: str = "auto"  # auto | fp32 | bf16: auto = bf16 on CUDA and on CPUs with bf16 units (AMX, AVX512-BF16)
    test_fraction: float = 0.2  # held out when the data set has no test split of its own
    margin: float = 1.0  # contrastive loss margin (siamese)
    temperature: float = 0.5  # NT-Xent temperature (simclr)
    positive_fraction: float = 0.5  # share of same-class pairs (siamese)
    max_train_images: Optional[int] = None  # cap the training split (quick demos on big sets)
    # Set by the engine under torchrun (ssl_core/distributed.py), recorded on the card: the number of
    # processes that shared each step, and how they talked (gloo on CPUs, nccl on GPUs).
    world_size: int = 1
    backend: str = "none"

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}; got {self.task!r}")
        for name, value in recipe_for(self.dataset, self.task).items():
            if getattr(self, name) is None:
                setattr(self, name, value)
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
    if cfg.arch not in ARCHS:
        raise ValueError(f"arch must be one of {', '.join(ARCHS)}; got {cfg.arch!r}")
    if cfg.optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be adam or sgd; got {cfg.optimizer!r}")


@dataclass
class Event:
    """A progress report. kind: data (loading; metrics["fraction"]) | start | step | epoch | done | stopped."""

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


class TrainingError(UserError, RuntimeError):
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
    is_main: bool = True  # False on the ranks > 0 of a torchrun launch: they neither evaluate nor save
    distributed: dict = field(default_factory=dict)  # distributed.describe() of a multi-process run


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("device 'cuda' was asked for, but no CUDA GPU is available; use auto or cpu.")
    return torch.device(name)


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> Optional[torch.dtype]:
    """bf16 where the hardware runs it, else fp32 (where bf16 would only add slow conversions)."""
    if cfg.precision == "bf16":
        return torch.bfloat16
    if cfg.precision == "auto" and (device.type == "cuda" or cpu_has_bf16()):
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


class TrainStep:
    """One optimisation step of `cfg.task`, the same in `train()` and in every benchmark: build the
    task's batch from source indices (batched augmentation), forward under autocast, loss, finite
    check, backward, optimiser step, learning-rate schedule step.

    `images` (uint8) and `labels` live on the model's device; the step holds the task's randomness
    (`gen`), its optimiser and its schedule (warm-up, then cosine decay to zero at `total_steps`).
    """

    def __init__(self, cfg: TrainConfig, model: torch.nn.Module, images: torch.Tensor, labels: Optional[torch.Tensor],
                 total_steps: int, gen: Optional[torch.Generator] = None,
                 group: Optional[distributed.Group] = None) -> None:
        # `model` is the SSLModel, or its DistributedDataParallel wrapper in a torchrun launch (`group`).
        self.cfg, self.model, self.images, self.labels, self.group = cfg, model, images, labels, group
        self.gen = gen or torch.Generator().manual_seed(cfg.seed)
        self.device = images.device
        self.amp = autocast_dtype(cfg, self.device)
        self.optimizer = make_optimizer(cfg, model)
        warm = int(cfg.warmup * total_steps)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, warm, total_steps))
        self.steps = 0

    def loss(self, idx: torch.Tensor) -> torch.Tensor:
        """The task's loss on the source images `idx` (forward only)."""
        cfg, x = self.cfg, self.images[idx]
        if cfg.task == "rotation":
            rotated, targets = all_rotations(shift_flip(normalize(x), self.gen, cfg.max_shift, cfg.flip))
            return F.cross_entropy(self.model(rotated.contiguous(memory_format=torch.channels_last)), targets)
        if cfg.task == "siamese":
            partners, same = sample_pairs(self.labels, idx, cfg.positive_fraction, self.gen)
            pairs = normalize(torch.cat([x, self.images[partners]]))
            if cfg.max_shift > 0 or cfg.flip:
                pairs = shift_flip(pairs, self.gen, cfg.max_shift, cfg.flip)  # two augmented views per pair
            a, b = self.model(pairs.contiguous(memory_format=torch.channels_last)).float().chunk(2)
            return contrastive_loss(a, b, same.to(a.device), cfg.margin)
        unit = x.float().div_(255.0)
        views = [simclr_views(unit, self.gen, scale=(cfg.crop_min_scale, 1.0), flip=cfg.flip) for _ in range(2)]
        z = self.model(torch.cat(views).sub_(0.5).div_(0.5).contiguous(memory_format=torch.channels_last)).float()
        z1, z2 = z.chunk(2)
        if self.group is not None:  # every process's views: the negatives of the whole batch
            z1, z2 = distributed.gather_with_grad(z1), distributed.gather_with_grad(z2)
        return nt_xent_loss(z1, z2, cfg.temperature)

    def __call__(self, idx: torch.Tensor, epoch: int = 1) -> torch.Tensor:
        """Take one step; returns the (detached) loss, averaged over the processes of a torchrun launch.
        Raises TrainingError when the loss is not finite (on every process at once)."""
        with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
            loss = self.loss(idx)
        seen = loss.detach() if self.group is None else distributed.mean(loss)
        if not torch.isfinite(seen):
            raise TrainingError(
                f"The loss became {seen.item()} at epoch {epoch}, step {self.steps + 1}: training diverged. "
                f"Try a lower learning rate than {self.cfg.lr:g}. The previous model is kept."
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.schedule.step()
        self.steps += 1
        return seen


def make_optimizer(cfg: TrainConfig, model: SSLModel) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    # AdamW with weight_decay 0 takes exactly Adam's steps.
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up to the peak rate, then cosine decay to zero: the last epochs settle instead of
    bouncing around at full rate, and BatchNorm nets survive a high peak rate at the start."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay = max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(step - warmup_steps, decay) / decay))


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
    Under torchrun the same call trains one process's share with DDP (ssl_core/distributed.py);
    only rank 0 reports events and evaluates.
    """
    group = distributed.join(cfg.device)
    device = resolve_device(cfg.device)
    emit = on_event or (lambda e: None)
    if group is not None:
        device = distributed.device_of(group, device)
        cfg.world_size, cfg.backend = group.world_size, group.backend
        if not group.is_main:
            emit = lambda e: None  # noqa: E731 - one voice: rank 0 speaks for the run
    stop = stop_event or threading.Event()

    def on_data(message: str, fraction: float) -> None:
        emit(Event("data", 0, cfg.epochs, 0, 0, 0.0, message=message, metrics={"fraction": fraction}))

    data, parts = _prepare_in_turn(cfg, on_data, group)
    if device.type == "cpu":
        reuse_freed_memory()
    torch.manual_seed(cfg.seed)  # the same initial weights on every process
    model = build_model(cfg.task, arch=cfg.arch).to(device)
    baseline = copy.deepcopy(model).eval()  # the random-init encoder, for the side-by-side probe
    # channels_last lets oneDNN (CPU) and cuDNN (GPU) pick their fast NHWC kernels.
    model = model.to(memory_format=torch.channels_last)
    gen = torch.Generator().manual_seed(cfg.seed)  # the epochs' order: the same on every process
    images = parts.train.images.to(device)
    labels = None if parts.train.labels is None else parts.train.labels.to(device)
    n = len(images)
    batch = min(cfg.batch_size, n)
    net: torch.nn.Module = model
    augment_gen, info = gen, {}
    if group is not None:
        from torch.nn.parallel import DistributedDataParallel

        info = distributed.describe(group, batch, cfg.task)
        batch = info["batch_per_process"]
        augment_gen = torch.Generator().manual_seed(cfg.seed + 1 + group.rank)  # different views per process
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    world = 1 if group is None else group.world_size
    steps_per_epoch = max(1, n // world // batch)  # drop the ragged last batch: NT-Xent and BatchNorm see full batches
    total = steps_per_epoch * cfg.epochs
    step_fn = TrainStep(cfg, net, images, labels, total, augment_gen, group)
    history: list[dict] = []
    start = time.perf_counter()
    step = 0
    precision = "bf16" if step_fn.amp is not None else "fp32"
    scale = "" if group is None else (f", {world} processes ({group.backend}), batch {info['effective_batch']} "
                                      f"= {world} x {batch}, learning rate {cfg.lr:g}")
    emit(Event("start", 1, cfg.epochs, 0, total, 0.0,
               message=f"{cfg.task} on {data.source or data.name}: {n:,} training and {len(parts.test):,} test images, "
                       f"{cfg.arch} encoder, {device.type} {precision}{scale}"))
    main = group is None or group.is_main
    try:
        for epoch in range(1, cfg.epochs + 1):
            order = torch.randperm(n, generator=gen).to(device)
            if group is not None:
                order = distributed.shard(order, group.rank, world)
            losses = []
            model.train()
            for i in range(steps_per_epoch):
                if stop.is_set() if group is None else distributed.any_true(stop.is_set(), device):
                    emit(Event("stopped", epoch, cfg.epochs, step, total, time.perf_counter() - start, message="stopped by request"))
                    return TrainResult(model.eval(), cfg, {}, history, data, time.perf_counter() - start, stopped=True,
                                       is_main=main, distributed=info)
                loss = step_fn(order[i * batch : (i + 1) * batch], epoch)
                step += 1
                losses.append(loss)
                emit(Event("step", epoch, cfg.epochs, step, total, time.perf_counter() - start, loss=float(loss)))
            epoch_loss = float(torch.stack(losses).mean())
            probe = _probe(model, parts, cfg.seed + epoch) if main else {}
            history.append({"epoch": epoch, "loss": epoch_loss, **probe, "elapsed": time.perf_counter() - start})
            emit(Event("epoch", epoch, cfg.epochs, step, total, time.perf_counter() - start, loss=epoch_loss, metrics=probe))
        model.eval()
        metrics = evaluate(model, parts.train, parts.test, baseline=baseline.to(device)) if main else {}
    except (torch.OutOfMemoryError, RuntimeError, MemoryError) as exc:
        if not is_out_of_memory(exc):
            raise
        raise TrainingError(f"Out of memory at batch size {cfg.batch_size}: try a smaller batch size.") from exc
    seconds = time.perf_counter() - start
    emit(Event("done", cfg.epochs, cfg.epochs, step, total, seconds, metrics=metrics, message="finished"))
    return TrainResult(model, cfg, metrics, history, data, seconds, is_main=main, distributed=info)


def _prepare_in_turn(cfg: TrainConfig, progress: Callable[[str, float], None],
                     group: Optional[distributed.Group]) -> tuple[ImageSet, Split]:
    """`prepare_data`, under torchrun first on rank 0 alone: one process downloads and decodes and
    fills the tensor cache, the others then read the cache instead of decoding the same files."""
    if group is None:
        return prepare_data(cfg, progress)
    if group.is_main:
        out = prepare_data(cfg, progress)
        distributed.barrier()
        return out
    distributed.barrier()
    return prepare_data(cfg)
