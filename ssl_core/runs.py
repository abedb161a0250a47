"""A run on disk: training to a checkpoint folder, naming runs, starting one from form values,
and keeping the runs folder bounded.

`run_and_save` is the whole of a run for the CLI; the app's background job (jobs.py) calls it too,
after `config_from_form` has turned what a visitor typed (and a zip they uploaded) into a config.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Iterable, Optional

from .archive import resolve_data_folder, safe_extract_zip
from .checkpoints import CARD, CheckpointError, make_card, read_card, save_checkpoint
from .config import form_size_settings
from .data import TINY_IMAGENET
from .evaluate import PROTOCOL
from .frames import FRAMES_FILE, to_json
from .resume import has_state, remove_state, state_config
from .train import EventFn, TrainConfig, TrainResult, train

# Finished runs kept in the runs folder. A public demo trains all day; each run is ~2 MB plus its
# uploaded images, so without a bound the disk fills. Env SSL_MAX_RUNS.
MAX_RUNS = int(os.environ.get("SSL_MAX_RUNS", "12"))
UPLOADS = "uploads"  # runs_dir/uploads/zip-*: extracted zips, the data of folder runs
UPLOAD_GRACE_S = 120.0  # a zip extracted this recently may belong to a start in progress: keep it


def default_runs_dir() -> Path:
    return Path(os.environ.get("SSL_RUNS_DIR", Path(__file__).resolve().parent.parent / "runs"))


def run_and_save(cfg: TrainConfig, out: str | os.PathLike, on_event: Optional[EventFn] = None,
                 stop_event: Optional[threading.Event] = None,
                 resume: Optional[str | os.PathLike] = None) -> tuple[TrainResult, Optional[Path]]:
    """Train, then write the checkpoint atomically. A stopped run writes no checkpoint (path None)
    but keeps its last finished epoch in `out/resume` (`result.state`) to continue from with
    `resume=out`; under torchrun only rank 0 writes (the others get None). The checkpoint replaces
    the whole `out` folder, its resume state with it."""
    result = train(cfg, on_event, stop_event, out=out, resume=resume)
    if result.stopped or not result.is_main:
        return result, None
    config = cfg.to_dict()
    if result.distributed:
        config["distributed"] = result.distributed  # effective batch, sharding, SimCLR's negatives
    if result.dataset.name in ("cifar10", TINY_IMAGENET):
        config["data_dir"] = None  # a path of the training machine; the card names the data by dataset_source
    card = make_card(result.model, config, result.dataset.name, result.dataset.class_names,
                     result.metrics, result.history, result.seconds, result.dataset.source, PROTOCOL)
    card["machine"] = result.machine
    extra = {FRAMES_FILE: to_json(result.frames)} if result.frames else {}  # beside the weights, in the same swap
    path = save_checkpoint(out, result.model, card, extra)
    if resume is not None:
        remove_state(resume)  # continued from another folder: its state is used up
    return result, path


def dataset_name(cfg: TrainConfig) -> str:
    """How a run's data is named in messages and run folders: digits, cifar10, folder:<name>."""
    return cfg.dataset if cfg.dataset != "folder" else f"folder:{Path(cfg.data_dir or '').name}"


def run_name(cfg: TrainConfig) -> str:
    """`<task>-<data>-<time>`: never one of the shipped names, which start with the dataset."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", dataset_name(cfg)).strip("-") or "data"
    return f"{cfg.task}-{safe}-{time.strftime('%Y%m%d-%H%M%S')}"


def _whole(x: object) -> object:
    """Number fields arrive as floats; 3.0 is 3, while 2.5 stays 2.5 so validation refuses it."""
    if x is None or x == "":
        return None
    return int(x) if isinstance(x, (int, float)) and float(x).is_integer() else x


def config_from_form(task: str, dataset: str, epochs: object = None, batch_size: object = None, lr: object = None,
                     data_dir: Optional[str] = None, zip_file: Optional[str] = None,
                     runs_dir: str | os.PathLike = ".", minutes: object = None, image_size: object = None) -> TrainConfig:
    """A TrainConfig from the Train form: `dataset` is digits, cifar10 (data_dir: where it is or
    goes), folder (data_dir, confined by archive.resolve_data_folder) or zip (zip_file, extracted
    safely into runs_dir/uploads); `minutes`, when given, replaces `epochs`; `image_size` is 32 or,
    for photo folders, 64 (config.form_size_settings). Raises a UserError (or ValueError) with a
    message to show."""
    size = form_size_settings(dataset, image_size)  # before a zip is extracted for nothing
    folder: Optional[str] = None
    if dataset == "folder":
        folder = str(resolve_data_folder(data_dir or ""))
    elif dataset == "zip":
        if not zip_file:
            raise ValueError("Upload a .zip of images first (one sub-folder per class gives labels).")
        folder = str(safe_extract_zip(zip_file, Path(runs_dir) / UPLOADS))
        dataset = "folder"
    elif dataset == "cifar10":
        folder = data_dir or None
    budget = float(minutes) if minutes not in (None, "") else None
    return TrainConfig(task=task, dataset=dataset, data_dir=folder, epochs=None if budget else _whole(epochs),
                       batch_size=_whole(batch_size), lr=float(lr) if lr else None, minutes=budget, **size)


# ----------------------------------------------------------------------------------- housekeeping
def prune_runs(runs_dir: str | os.PathLike, keep: Iterable[Path] = (), max_runs: int = MAX_RUNS,
               grace_s: float = UPLOAD_GRACE_S) -> list[Path]:
    """Delete old runs and unneeded uploads from `runs_dir`; returns what was removed.

    Kept: the runs in `keep`, the newest `max_runs` other runs (a stopped run's resumable state
    counts as a run), every extracted
    zip a kept run was trained on (the app re-reads its held-out images for maps and neighbours),
    and zips extracted in the last `grace_s` seconds. Only folders this module and the app made are
    touched: run folders (with a card.json) directly inside, and `uploads/zip-*`.
    """
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    keep = {Path(p).resolve() for p in keep}
    runs = sorted((d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")
                   and ((d / CARD).is_file() or has_state(d))), key=lambda d: d.stat().st_mtime, reverse=True)
    others = [d for d in runs if d.resolve() not in keep]
    removed = others[max(max_runs, 0):]
    kept_runs = [d for d in runs if d not in removed]
    needed = {u for u in (_upload_of(root, _card_data_dir(d)) for d in kept_runs) if u is not None}
    now = time.time()
    uploads = root / UPLOADS
    if uploads.is_dir():
        removed += [u for u in uploads.iterdir() if u.is_dir() and u.name.startswith("zip-")
                    and u.resolve() not in needed and now - u.stat().st_mtime > grace_s]
    for d in removed:
        shutil.rmtree(d, ignore_errors=True)
    return removed


def _card_data_dir(run: Path) -> Optional[Path]:
    try:
        config = read_card(run).get("config") if (run / CARD).is_file() else state_config(run)
    except (CheckpointError, OSError, ValueError):
        return None  # an unreadable card names no data to keep
    value = config.get("data_dir") if isinstance(config, dict) else None
    return Path(value) if isinstance(value, str) and value else None


def _upload_of(runs_dir: Path, data_dir: Optional[Path]) -> Optional[Path]:
    """The uploads/zip-* folder holding `data_dir` (the folder itself or one inside it), else None."""
    if data_dir is None:
        return None
    uploads = (runs_dir / UPLOADS).resolve()
    path = data_dir.resolve()
    if not path.is_relative_to(uploads) or path == uploads:
        return None
    top = uploads / path.relative_to(uploads).parts[0]
    return top if top.name.startswith("zip-") else None


def remove_upload(runs_dir: Path, data_dir: Path) -> None:
    top = _upload_of(runs_dir, data_dir)
    if top is not None:
        shutil.rmtree(top, ignore_errors=True)
