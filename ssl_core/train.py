"""One training engine for every task: `train(config, on_event, stop_event) -> TrainResult`.

The CLI and the app's background job both call it. It never prints: progress goes to `on_event`,
so a terminal shows a progress bar and the browser shows curves from the same events.
"""

from __future__ import annotations

import copy
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from . import distributed, frames
from .augment import all_rotations, normalize, random_rotations, sample_pairs, shift_flip, simclr_views
from .data import ImageSet, Split, load_dataset, split
from .errors import UserError
from .config import TrainConfig, model_for
from .evaluate import embed, evaluate, quick_probe
from .losses import contrastive_loss, nt_xent_loss
from .models import SSLModel
from .resume import (TrainState, check_matches, load_state, machine_record, restore, rng_states, save_state,
                     state_folder)
from .sampling import epoch_order
from .schedule import Schedule, TimeBudget, evaluation_seconds
from .speed import cpu_has_bf16, machine, reuse_freed_memory


@dataclass
class Event:
    """A progress report. kind: data (loading; metrics["fraction"]) | start | step | epoch | frame
    (metrics["frame"]: a frames.Frame) | done | stopped."""

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
    state: Optional[Path] = None  # a stopped run's resumable state (the last finished epoch), if any
    frames: list = field(default_factory=list)  # frames.Frame: the held-out sample as training went
    machine: dict = field(default_factory=dict)  # speed.machine(): device, CPU, precision, threads; "sessions" if resumed


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
    data = load_dataset(cfg.dataset, cfg.data_dir, progress, max_images=cfg.max_folder_images, image_size=cfg.image_size)
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
        self.plan = Schedule.make(cfg.warmup, total_steps)  # a minutes budget re-fits its end as it goes
        self.factor = (lambda s: 1.0) if cfg.schedule == "constant" else (lambda s: self.plan.factor(s))  # share of the peak rate
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.factor)
        self.steps = 0

    def loss(self, idx: torch.Tensor) -> torch.Tensor:
        """The task's loss on the source images `idx` (forward only)."""
        cfg, x = self.cfg, self.images[idx]
        if cfg.task == "rotation":
            shifted = shift_flip(normalize(x), self.gen, cfg.max_shift, cfg.flip)
            rotated, targets = all_rotations(shifted) if cfg.turns == 4 else random_rotations(shifted, self.gen)
            logits = self.model(rotated.contiguous(memory_format=torch.channels_last))
            return F.cross_entropy(logits, targets, label_smoothing=cfg.label_smoothing)
        if cfg.task == "siamese" and cfg.pair_loss == "hadsell":
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
        # Siamese (SupCon): every same-class view in the batch is a positive; SimCLR: the other view only.
        labels = self.labels[idx] if cfg.task == "siamese" else None
        if self.group is not None:  # every process's views: the negatives of the whole batch
            z1, z2 = distributed.gather_with_grad(z1), distributed.gather_with_grad(z2)
            labels = None if labels is None else distributed.gather(labels)
        return nt_xent_loss(z1, z2, cfg.temperature, labels)

    def forward_precision(self) -> torch.autocast:
        """The step's autocast, for forward passes outside it (probes, evaluation)."""
        return torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None)

    def __call__(self, idx: torch.Tensor, epoch: int = 1) -> torch.Tensor:
        """Take one step; returns the (detached) loss, averaged over the processes of a torchrun launch.
        Raises TrainingError when the loss is not finite (on every process at once)."""
        with self.forward_precision():
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


def make_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    # Weight decay on the weights of convolutions and linear layers only: decaying BatchNorm's scales
    # and the biases only shrinks what the next BatchNorm undoes.
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() > 1], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() <= 1], "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)
    # AdamW with weight_decay 0 takes exactly Adam's steps.
    return torch.optim.AdamW(groups, lr=cfg.lr)


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA raises torch.OutOfMemoryError; the CPU allocator raises a plain RuntimeError saying
    "can't allocate memory", and numpy a MemoryError. All mean the same to the user: a smaller batch."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc)
    return "can't allocate memory" in text or "not enough memory" in text or "out of memory" in text.lower()


def train(cfg: TrainConfig, on_event: Optional[EventFn] = None, stop_event: Optional[threading.Event] = None,
          out: Optional[str | os.PathLike] = None, resume: Optional[str | os.PathLike] = None) -> TrainResult:
    """Train `cfg.task` on `cfg.dataset`, evaluate on the held-out split, return the model and metrics.

    A set `stop_event` ends training before the next step (within one step); the result then has
    `stopped=True` and no metrics. With `out`, every finished epoch leaves a resumable state in
    `out/resume` (resume.py; the final checkpoint written into `out` replaces it), and `state`
    names it in a stopped result; `resume` names a folder holding such a state to continue from.
    `cfg.minutes` trains for a wall-clock budget instead of `cfg.epochs` (schedule.py).
    Raises TrainingError for divergence, out-of-memory and bad data, ResumeError for a state that
    is damaged or from another run. Under torchrun the same call trains one process's share with
    DDP (ssl_core/distributed.py); only rank 0 reports events, evaluates and writes states.
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

    state = load_state(resume) if resume is not None else None  # a damaged state fails before the data load
    data, parts = _prepare_in_turn(cfg, on_data, group)
    if device.type == "cpu":
        reuse_freed_memory()
    torch.manual_seed(cfg.seed)  # the same initial weights on every process, and in a resumed run
    model = model_for(cfg).to(device)
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
    # A budgeted run starts on the recipe's length and re-fits it once its first steps are paced.
    step_fn = TrainStep(cfg, net, images, labels, steps_per_epoch * cfg.epochs, augment_gen, group)
    plan, rngs = step_fn.plan, {"epoch_order": gen, "augment": augment_gen}
    history, step, epoch, elapsed0, kept = [], 0, 0, 0.0, None
    if state is not None:
        check_matches(state, cfg.to_dict(), n, steps_per_epoch, resume)
        restore(state, model, step_fn.optimizer, step_fn.schedule, step_fn.plan, rngs, step_fn.device,
                cfg.seed + 7919 * state.epoch if group is not None and not group.is_main else None)
        step_fn.steps = state.step
        history, step, epoch, elapsed0, kept = list(state.history), state.step, state.epoch, state.elapsed, state_folder(resume)
    budget = None if cfg.minutes is None else TimeBudget(cfg.minutes * 60, step, timed=group is None)
    start = time.perf_counter() - elapsed0  # a resumed run's clock (and budget) goes on from where it stopped

    def since() -> float:
        return time.perf_counter() - start

    def planned() -> int:  # epochs, the last one perhaps partial (a minutes budget)
        return max(epoch, math.ceil(plan.total / steps_per_epoch))

    def refit(total: Optional[int]) -> None:
        if total is not None and budget is not None:
            if not budget.reserve:  # the first fit: time a forward pass, set the final evaluation aside
                with step_fn.forward_precision():
                    budget.set_reserve(_evaluation_estimate(model, parts))
                total = budget.fit()
            plan.refit(step, total if group is None else int(distributed.mean(torch.tensor(float(total), device=device))))

    precision = "bf16" if step_fn.amp is not None else "fp32"
    scale = "" if group is None else (f", {world} processes ({group.backend}), batch {info['effective_batch']} "
                                      f"= {world} x {batch}, learning rate {cfg.lr:g}")
    again = f"; resumed after epoch {epoch} ({step} steps)" if state is not None else ""
    machines = (list(state.machines) if state is not None else []) + [dict(machine(device, precision), from_epoch=epoch + 1)]
    emit(Event("start", epoch + 1, planned(), step, plan.total, since(),
               message=f"{cfg.task} on {data.source or data.name}: {n:,} training and {len(parts.test):,} test images, "
                       f"{cfg.arch} encoder, {device.type} {precision}{scale}{again}"))
    main = group is None or group.is_main
    overhead = [elapsed0 - history[-1].get("train_seconds", elapsed0) if history else 0.0]  # seconds not spent in steps
    # Learning frames (frames.py): before the first step, at every epoch end, within short runs' epochs.
    recorder = frames.Recorder(cfg.task, parts, steps_per_epoch, device, cfg.seed, step_fn.amp) if main else None
    if recorder is not None and state is not None:
        recorder.restore(state.frames)

    def frame(epoch: int, end: bool = False) -> None:
        if recorder is not None and (end or recorder.due(step, planned())):
            emit(Event("frame", epoch, planned(), step, plan.total, since(), metrics={"frame": recorder.take(model, step, since())}))
            overhead[0] += recorder.frames[-1].seconds

    try:
        frame(epoch + 1)
        while step < plan.total:
            epoch += 1
            order = epoch_order(n, gen, labels if cfg.task == "siamese" else None, cfg.per_class).to(device)
            if group is not None:
                order = distributed.shard(order, group.rank, world)
            losses = []
            model.train()
            for i in range(steps_per_epoch):
                if step >= plan.total:  # the last epoch of a minutes budget ends where its schedule does
                    break
                if stop.is_set() if group is None else distributed.any_true(stop.is_set(), device):
                    emit(Event("stopped", epoch, planned(), step, plan.total, since(), message="stopped by request"))
                    return TrainResult(model.eval(), cfg, {}, history, data, since(), stopped=True,
                                       is_main=main, distributed=info, state=kept)
                loss = step_fn(order[i * batch : (i + 1) * batch], epoch)
                step += 1
                losses.append(loss)
                if budget is not None:
                    refit(budget.record(since()))
                emit(Event("step", epoch, planned(), step, plan.total, since(), loss=float(loss)))
                frame(epoch)
            epoch_loss, mark = float(torch.stack(losses).mean()), since()
            with step_fn.forward_precision():
                probe = quick_probe(model, parts.train, parts.test, cfg.seed + epoch) if main else {}
            if budget is not None:  # a budget that would leave a sliver of an epoch ends here instead
                total = budget.fit()
                refit(step if total is not None and total - step < steps_per_epoch // 10 else total)
            lr = cfg.lr * step_fn.factor(step)  # the rate the next step would take: 0 once the schedule has ended
            # train_seconds: the steps' own time, without probes, frames and saved states (time to accuracy)
            history.append({"epoch": epoch, "loss": epoch_loss, **probe, "lr": lr, "elapsed": since(),
                            "train_seconds": round(mark - overhead[0], 2)})
            emit(Event("epoch", epoch, planned(), step, plan.total, since(), loss=epoch_loss, metrics=probe))
            frame(epoch, end=True)
            if out is not None and main:
                kept = save_state(out, _capture(cfg, epoch, step, history, since(), n, steps_per_epoch, model, step_fn, rngs,
                                                recorder, machines))
            overhead[0] += since() - mark - (recorder.frames[-1].seconds if recorder else 0.0)
        model.eval()
        if cfg.minutes is not None:
            cfg.epochs = epoch  # derived from the budget; the card records the epochs run
        with step_fn.forward_precision():  # bf16 forward passes where training used them: 2.5x faster on AMX
            metrics = evaluate(model, parts.train, parts.test, baseline=baseline.to(device)) if main else {}
    except (torch.OutOfMemoryError, RuntimeError, MemoryError) as exc:
        if not is_out_of_memory(exc):
            raise
        raise TrainingError(f"Out of memory at batch size {cfg.batch_size}: try a smaller batch size.") from exc
    seconds = since()
    emit(Event("done", epoch, epoch, step, step, seconds, metrics=metrics, message="finished"))
    return TrainResult(model, cfg, metrics, history, data, seconds, is_main=main, distributed=info,
                       frames=recorder.frames if recorder else [], machine=machine_record(machines, history))


def _evaluation_estimate(model: SSLModel, parts: Split) -> float:
    """Seconds the final evaluation will take, from timing the encoder on a few test images."""
    sample = parts.test.images[:256]
    embed(model, sample, features=True)  # the first call picks kernels for the new shape: slow
    t = time.perf_counter()
    embed(model, sample, features=True)
    forward_s = (time.perf_counter() - t) / max(1, len(sample))
    return evaluation_seconds(model.args.task, len(parts.train), len(parts.test), parts.train.labeled, forward_s)


def _capture(cfg: TrainConfig, epoch: int, step: int, history: list, elapsed: float, n: int, steps_per_epoch: int,
             model: SSLModel, step_fn: TrainStep, rngs: dict[str, torch.Generator],
             recorder: Optional[frames.Recorder], machines: list[dict]) -> TrainState:
    """Everything random or learned at the end of an epoch, for resume.save_state."""
    return TrainState(cfg.to_dict(), epoch, step, step_fn.plan.to_dict(), step_fn.schedule.state_dict(), history,
                      elapsed, n, steps_per_epoch, model.state_dict(), step_fn.optimizer.state_dict(),
                      rng_states(rngs, step_fn.device), frames.to_json(recorder.frames) if recorder and recorder.frames else "",
                      machines)


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
