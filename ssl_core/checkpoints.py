"""Checkpoints: a folder with `model.safetensors` (weights only) and `card.json` (what they are).

Written atomically: the new folder is built beside the old one and swapped in with renames, so a
process killed mid-write leaves the previous checkpoint loadable. Loading never unpickles: the
weights are safetensors, checked against the SHA-256 the card recorded, and the model is rebuilt
from the card's arguments.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import struct
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from safetensors.torch import load_file, save_file

from . import TASKS, __version__
from .errors import UserError
from .models import ModelArgs, SSLModel

WEIGHTS = "model.safetensors"
CARD = "card.json"
FORMAT = 1
MAX_HEADER = 10 * 1024 * 1024  # a safetensors header larger than this is not one of ours


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be used; the message says what is wrong with it."""


@dataclass
class Checkpoint:
    model: SSLModel
    card: dict
    path: Path


def make_card(model: SSLModel, config: dict, dataset: str, class_names: list[str], metrics: dict,
              history: Optional[list] = None, seconds: float = 0.0, source: str = "",
              evaluation: Optional[dict] = None) -> dict:
    return {
        "format": FORMAT,
        "task": model.args.task,
        "dataset": dataset,
        "dataset_source": source or dataset,  # "CIFAR-10 (JPEG copy)": which copy the numbers come from
        "arch": model.args.arch,
        "image_size": model.args.image_size,  # what uploads are resized to for this model
        "class_names": list(class_names),
        "model_args": model.args.to_dict(),
        "config": config,
        "metrics": metrics,
        "metrics_split": "test",  # every number in metrics is measured on the held-out split
        "evaluation": evaluation or {},  # how each metric was measured
        "history": history or [],
        "seconds": round(seconds, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": {"ssl_core": __version__, "torch": torch.__version__, "python": platform.python_version()},
    }


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_folder(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Build a folder with `write(tmp)` beside `path`, then swap it in with renames: a process killed
    at any point leaves either the previous folder or the new one whole (`recover` finishes a swap
    killed between its two renames). Checkpoints and the engine's resume states are written so."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = dest.with_name(f".{dest.name}.tmp-{tag}")
    tmp.mkdir()
    try:
        write(tmp)
        for f in tmp.iterdir():
            _fsync(f)
            os.chmod(f, 0o644)  # shipped and shared checkpoints must be readable by other users
        os.chmod(tmp, 0o755)
        old = dest.with_name(f".{dest.name}.old-{tag}")
        if dest.exists():
            os.replace(dest, old)  # from here until the next rename, `recover` restores `old`
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def save_checkpoint(path: str | os.PathLike, model: SSLModel, card: dict, extra: Optional[dict[str, str]] = None) -> Path:
    """Write `path/` atomically; an existing checkpoint there is replaced only once the new one is whole.
    `extra`: more text files for the folder by name (frames.json), written inside the same swap."""

    def write(tmp: Path) -> None:
        # safetensors wants plain contiguous CPU tensors (training uses channels_last).
        state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS), metadata={"format": "ssl_core", "task": model.args.task})
        (tmp / CARD).write_text(json.dumps(dict(card, weights_sha256=sha256(tmp / WEIGHTS)), indent=2, default=float))
        for name, text in (extra or {}).items():
            (tmp / name).write_text(text)

    return write_folder(path, write)


def recover(dest: Path) -> Path:
    """If a save was killed between its two renames, the previous checkpoint sits in `.name.old-*`."""
    if dest.is_dir():
        return dest
    olds = sorted(dest.parent.glob(f".{dest.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds:
        os.replace(olds[-1], dest)
    return dest


def read_card(path: str | os.PathLike) -> dict:
    dest = recover(Path(path))
    card_path = dest / CARD
    if not card_path.is_file():
        raise CheckpointError(f"{dest.name}: no {CARD} found; this is not a checkpoint folder.")
    try:
        card = json.loads(card_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{dest.name}: {CARD} is not valid JSON ({exc}).") from exc
    if not isinstance(card, dict):
        raise CheckpointError(f"{dest.name}: {CARD} must hold a JSON object.")
    missing = [k for k in ("task", "dataset", "model_args", "weights_sha256") if k not in card]
    if missing:
        raise CheckpointError(f"{dest.name}: {CARD} lacks {', '.join(missing)}.")
    if card["task"] not in TASKS:
        raise CheckpointError(f"{dest.name}: unknown task {card['task']!r} in {CARD}.")
    return card


def check_safetensors_header(path: Path) -> None:
    """Refuse anything that is not a safetensors file before a library parses it (a renamed pickle,
    a zip, a truncated download), with a message that says so."""
    with open(path, "rb") as f:
        head = f.read(9)
    if head[:1] == b"\x80" or head[:2] == b"PK":
        raise CheckpointError(f"{path.name} is a pickle/zip file, not safetensors; it was not loaded.")
    if len(head) < 9:
        raise CheckpointError(f"{path.name} is truncated ({len(head)} bytes).")
    (n,) = struct.unpack("<Q", head[:8])
    if head[8:9] != b"{" or n > MAX_HEADER or 8 + n > path.stat().st_size:
        raise CheckpointError(f"{path.name} is not a valid safetensors file (damaged or truncated).")


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> Checkpoint:
    """Load and verify a checkpoint folder; raises CheckpointError with a readable reason."""
    dest = recover(Path(path))
    card = read_card(dest)
    weights = dest / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{dest.name}: {WEIGHTS} is missing.")
    check_safetensors_header(weights)
    if sha256(weights) != card["weights_sha256"]:
        raise CheckpointError(f"{dest.name}: {WEIGHTS} does not match its card (altered, truncated or from another run).")
    try:
        state = load_file(str(weights), device="cpu")
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise CheckpointError(f"{dest.name}: {WEIGHTS} could not be read ({exc}).") from exc
    try:
        args = ModelArgs(**card["model_args"])
        model = SSLModel(args)
        model.load_state_dict(state, strict=True)
    except (TypeError, RuntimeError, ValueError) as exc:
        # torch's message spans lines with tabs; one line reads better in the UI's status box.
        reason = " ".join(str(exc).split())[:200]
        raise CheckpointError(f"{dest.name}: weights do not fit the model its card describes ({reason}).") from exc
    return Checkpoint(model.to(device).eval(), card, dest)
