"""A run's resumable state: what the engine needs to go on after its last finished epoch.

Written at the end of every epoch into `<out>/resume/`, atomically (checkpoints.write_folder), so a
run stopped by Ctrl-C, SIGTERM or the app's Stop - or killed outright - loses at most the epoch in
progress. Two files, nothing that unpickles:

- `state.safetensors`: the model's weights and buffers (`model/<name>`), the optimiser's tensors
  (`optimizer/<param index>/<key>`: Adam's moments and step counts, SGD's momentum) and the random
  generators' states as uint8 tensors (`rng/epoch_order`, `rng/augment`, `rng/global`, `rng/cuda/<i>`);
- `state.json`: `format`, the run's `config`, finished `epoch`, global `step`, the LR `schedule`
  (schedule.Schedule) and the torch scheduler's state, the optimiser's param groups and non-tensor
  state, `history`, `elapsed` seconds, the training split's size and steps per epoch, and the
  SHA-256 of the tensors file (a truncated or altered copy is refused).

The final checkpoint replaces the whole `<out>` folder, so a finished run leaves no state behind.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file, save_file

from .checkpoints import CheckpointError, check_safetensors_header, recover, sha256, write_folder
from .errors import UserError
from .frames import FRAMES_FILE

STATE_DIR = "resume"
TENSORS = "state.safetensors"
META = "state.json"
FORMAT = 1
# What must be the same for a resumed run to be the run it continues. The device and precision may
# change (a run stopped on a laptop can finish on a GPU); the data are checked by their size.
COMPARED = ("task", "dataset", "arch", "epochs", "minutes", "batch_size", "lr", "optimizer", "weight_decay", "warmup",
            "max_shift", "flip", "crop_min_scale", "seed", "test_fraction", "margin", "temperature",
            "positive_fraction", "max_train_images", "world_size", "width", "pooled", "head", "label_smoothing", "turns",
            "pair_loss", "schedule", "image_size", "stem_stride", "per_class", "depth")
# Settings added after states were first saved: a state without one was saved with this value.
BEFORE = {"image_size": 32, "stem_stride": 1, "per_class": 0, "depth": 1}


class ResumeError(UserError, ValueError):
    """A resume state that is missing, damaged or from a different run; the message says which."""


@dataclass
class TrainState:
    config: dict  # TrainConfig.to_dict() of the run
    epoch: int  # epochs finished
    step: int  # optimisation steps taken
    schedule: dict  # schedule.Schedule fields: where the LR curve is and where it ends
    scheduler: dict  # the torch LambdaLR's state_dict
    history: list  # one entry per finished epoch
    elapsed: float  # seconds of training so far (a minutes budget counts them)
    train_images: int  # size of the training split: other data cannot continue this run
    steps_per_epoch: int
    model: dict  # state_dict of the unwrapped model
    optimizer: dict  # the optimiser's state_dict
    rng: dict = field(default_factory=dict)  # generator name -> its uint8 state
    frames: str = ""  # the learning frames so far (frames.to_json), so a resumed run's replay starts at its start
    # speed.machine() of each stretch of the run, with the first epoch it trained ("from_epoch"): a run
    # carried across sessions may have run on different CPUs, and its card says which epochs ran where.
    machines: list = field(default_factory=list)


def state_folder(out: str | os.PathLike) -> Path:
    return Path(out) / STATE_DIR


def has_state(out: str | os.PathLike) -> bool:
    return (recover(state_folder(out)) / META).is_file()


def state_config(out: str | os.PathLike) -> dict:
    """The config a stopped run's state records (state.json only; load_state verifies the rest)."""
    config = json.loads((recover(state_folder(out)) / META).read_text()).get("config")
    if not isinstance(config, dict):
        raise ResumeError(f"resume state in {out}: {META} has no config.")
    return config


def remove_state(out: str | os.PathLike) -> None:
    shutil.rmtree(state_folder(out), ignore_errors=True)


def save_state(out: str | os.PathLike, state: TrainState) -> Path:
    """Write `<out>/resume/` atomically, replacing the previous epoch's state only once whole."""
    tensors = {f"model/{k}": v for k, v in state.model.items()}
    opt_state: dict = {}
    for index, values in state.optimizer["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{index}/{key}"] = value
            else:
                opt_state.setdefault(str(index), {})[key] = value
    tensors.update({f"rng/{name}": value for name, value in state.rng.items()})
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta = {"format": FORMAT, "config": state.config, "epoch": state.epoch, "step": state.step,
            "schedule": state.schedule, "scheduler": state.scheduler, "history": state.history,
            "elapsed": state.elapsed, "train_images": state.train_images, "steps_per_epoch": state.steps_per_epoch,
            "optimizer": {"param_groups": state.optimizer["param_groups"], "state": opt_state},
            "machines": state.machines}

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp / TENSORS), metadata={"format": "ssl_core resume"})
        (tmp / META).write_text(json.dumps(dict(meta, tensors_sha256=sha256(tmp / TENSORS)), indent=1, default=float))
        if state.frames:
            (tmp / FRAMES_FILE).write_text(state.frames)

    return write_folder(state_folder(out), write)


def load_state(out: str | os.PathLike) -> TrainState:
    """Read and verify `<out>/resume/`; raises ResumeError naming what is missing or damaged."""
    folder = recover(state_folder(out))
    where = f"resume state in {folder}"
    if not (folder / META).is_file():
        raise ResumeError(f"no resume state in {Path(out)} (looked for {STATE_DIR}/{META}): only a run stopped "
                          "after at least one finished epoch leaves one.")
    try:
        meta = json.loads((folder / META).read_text())
        missing = [k for k in ("format", "config", "epoch", "step", "schedule", "scheduler", "history", "elapsed",
                               "train_images", "steps_per_epoch", "optimizer", "tensors_sha256") if k not in meta]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError) as exc:
        raise ResumeError(f"{where}: {META} is damaged ({' '.join(str(exc).split())}); start afresh without --resume.") from exc
    if missing:
        raise ResumeError(f"{where}: {META} lacks {', '.join(missing)}; start afresh without --resume.")
    if meta["format"] != FORMAT:
        raise ResumeError(f"{where}: format {meta['format']!r}, this version reads {FORMAT}; start afresh.")
    tensors_path = folder / TENSORS
    try:
        if not tensors_path.is_file():
            raise CheckpointError(f"{TENSORS} is missing")
        check_safetensors_header(tensors_path)
        if sha256(tensors_path) != meta["tensors_sha256"]:
            raise CheckpointError(f"{TENSORS} does not match {META} (truncated, altered or from another epoch)")
        tensors = load_file(str(tensors_path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise ResumeError(f"{where} is damaged: {exc}; start afresh without --resume.") from exc
    groups = [{k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()}
              for g in meta["optimizer"]["param_groups"]]  # JSON made lists of the tuples (Adam's betas)
    opt_state: dict = {int(i): dict(v) for i, v in meta["optimizer"]["state"].items()}
    model, rng = {}, {}
    for name, value in tensors.items():
        kind, _, rest = name.partition("/")
        if kind == "model":
            model[rest] = value
        elif kind == "rng":
            rng[rest] = value
        elif kind == "optimizer":
            index, _, key = rest.partition("/")
            opt_state.setdefault(int(index), {})[key] = value
    return TrainState(meta["config"], int(meta["epoch"]), int(meta["step"]), meta["schedule"], meta["scheduler"],
                      meta["history"], float(meta["elapsed"]), int(meta["train_images"]), int(meta["steps_per_epoch"]),
                      model, {"state": opt_state, "param_groups": groups}, rng, _read_frames(folder, where),
                      list(meta.get("machines", [])))  # states written before machines were recorded lack them


def _read_frames(folder: Path, where: str) -> str:
    path = folder / FRAMES_FILE
    try:
        return path.read_text() if path.is_file() else ""
    except (OSError, UnicodeDecodeError) as exc:
        raise ResumeError(f"{where} is damaged: {FRAMES_FILE} unreadable ({exc}); start afresh without --resume.") from exc


def check_matches(state: TrainState, config: dict, train_images: int, steps_per_epoch: int,
                  folder: Optional[str | os.PathLike] = None) -> None:
    """Refuse to continue a different run: one line naming every setting that differs."""
    saved = {**BEFORE, **state.config}
    diffs = [f"{k} ({saved.get(k)!r} there, {config.get(k)!r} here)" for k in COMPARED
             if saved.get(k) != config.get(k) and not (k == "epochs" and config.get("minutes") is not None)]
    if state.train_images != train_images:
        diffs.append(f"training images ({state.train_images:,} there, {train_images:,} here)")
    elif state.steps_per_epoch != steps_per_epoch:
        diffs.append(f"steps per epoch ({state.steps_per_epoch} there, {steps_per_epoch} here)")
    if diffs:
        raise ResumeError(f"cannot resume from {folder or 'that folder'}: it holds a different run; "
                          f"{', '.join(diffs)}. Give the same settings as the stopped run, or start afresh without --resume.")


def rng_states(rngs: dict[str, torch.Generator], device: torch.device) -> dict[str, torch.Tensor]:
    states = {name: g.get_state() for name, g in rngs.items()}
    states["global"] = torch.get_rng_state()
    if device.type == "cuda":
        states.update({f"cuda/{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return states


def restore(state: TrainState, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
            plan: object, rngs: dict[str, torch.Generator], device: torch.device, reseed: Optional[int]) -> None:
    """Put a saved epoch end back: weights, optimiser, schedule and every generator. `reseed`: the
    ranks > 0 of a torchrun launch draw fresh augmentations (rank 0 saved only its own)."""
    try:
        model.load_state_dict(state.model, strict=True)
        optimizer.load_state_dict(state.optimizer)
        scheduler.load_state_dict(state.scheduler)
        vars(plan).update(state.schedule)
        for name, g in rngs.items():
            g.set_state(state.rng[name])
        torch.set_rng_state(state.rng["global"])
        cuda = f"cuda/{device.index or 0}"
        if device.type == "cuda" and cuda in state.rng:
            torch.cuda.set_rng_state(state.rng[cuda], device)
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise ResumeError(f"the resume state does not fit this model ({' '.join(str(exc).split())[:200]}); "
                          "start afresh without --resume.") from exc
    if reseed is not None:
        rngs["augment"].manual_seed(reseed)


def machine_record(machines: list[dict], history: list[dict]) -> dict:
    """The card's `machine`: where the run finished, plus every stretch when it was resumed."""
    record = {k: v for k, v in machines[-1].items() if k != "from_epoch"}
    if len(machines) > 1 or machines[0]["from_epoch"] > 1:
        record["sessions"] = stretch_minutes(machines, history)
    return record


def stretch_minutes(machines: list[dict], history: list[dict]) -> list[dict]:
    """Each stretch of a resumed run with the training minutes it spent (from the epochs' clocks),
    so a card says how long each CPU trained, not only from which epoch."""
    clock = {h["epoch"]: h["elapsed"] for h in history}
    ends = [m["from_epoch"] - 1 for m in machines[1:]] + [max(clock, default=0)]
    return [dict(m, minutes=round((clock.get(end, 0.0) - clock.get(m["from_epoch"] - 1, 0.0)) / 60, 1))
            for m, end in zip(machines, ends)]
