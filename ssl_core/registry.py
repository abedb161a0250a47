"""Which checkpoints answer: the shipped ones and this server's finished runs, each by one name.

Shipped checkpoints are named after their folders (`cifar10-rotation`, `digits-siamese`, ...);
runs trained in the app after theirs (`siamese-digits-20261129-141500`). The default of a task is
its shipped photo model (Tiny ImageNet, 64 px), or its CIFAR-10 model where a checkout has no photo
model yet (DEFAULT_FAMILIES). A finished run joins the list but never becomes anyone's default: on a
public Space, one visitor's one-epoch run must not answer for everybody else. A visitor picks it.

A checkpoint's identity is the SHA-256 of its weights (`LoadedModel.key`): every cache of
embeddings and maps is keyed by it, so a retrained model never meets a stale map.
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from . import TASKS, dataset_title, frames
from .checkpoints import CARD, Checkpoint, CheckpointError, load_checkpoint, read_card
from .errors import UserError
from .evaluate import METRIC_BY_KEY, format_metric
from .models import ARCH_TITLES
from .runs import default_runs_dir

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "checkpoints"
# Each task's default, the first of these shipped: the photo models (Tiny ImageNet, 64 px) answer
# the photographs people upload; CIFAR-10's 32-px models where a checkout has no photo model yet.
DEFAULT_FAMILIES = ("photos", "cifar10")
# The score in a label: what each task is judged by. The label-free model never learns what a class
# is, so one distance threshold separates classes poorly (pair ROC-AUC 0.68 on CIFAR-10); its neighbours are what
# it learned (5-NN 0.69, as the field measures SimCLR).
HEADLINE = {"rotation": "rotation_accuracy", "siamese": "pair_auc", "simclr": "knn_accuracy"}


class ModelError(UserError, ValueError):
    """An unknown model name, or a model of the wrong task for the question asked."""


def headline(card: dict) -> str:
    """The held-out score that says how good a checkpoint is at its task, e.g. "rotation accuracy 86.2%"."""
    metrics = card.get("metrics", {})
    for key in (HEADLINE.get(card.get("task", "")), "knn_accuracy"):
        if key in metrics:
            return f"{METRIC_BY_KEY[key].label.split(' (')[0]} {format_metric(key, metrics[key])}"
    return "no held-out score"


def _family_rank(name: str) -> int:
    """Where a shipped checkpoint stands in the pickers: DEFAULT_FAMILIES first, in order, then the rest."""
    family = name.rsplit("-", 1)[0]
    return DEFAULT_FAMILIES.index(family) if family in DEFAULT_FAMILIES else len(DEFAULT_FAMILIES)


@dataclass(frozen=True)
class Entry:
    """A checkpoint on offer, known from its card (the weights load only when it is asked)."""

    name: str
    path: Path
    card: dict
    shipped: bool

    @property
    def label(self) -> str:
        origin = "shipped" if self.shipped else "trained here"
        return f"{self.name} · {self.card['task']} on {dataset_title(self.card['dataset'])} · {headline(self.card)} ({origin})"


@dataclass(frozen=True)
class LoadedModel:
    """A checkpoint ready to answer, under the name it was asked by."""

    entry: Entry
    checkpoint: Checkpoint
    note: str = ""  # why this is not the model that was asked for (a damaged run fell back)

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def card(self) -> dict:
        return self.checkpoint.card

    @property
    def key(self) -> str:
        """The checkpoint's one identity: the hash of its weights."""
        return self.checkpoint.card["weights_sha256"]

    def describe(self) -> str:
        """Markdown: which model answered, on what data, and how good it is on held-out data."""
        card = self.card
        metrics = card.get("metrics", {})
        origin = "shipped" if self.entry.shipped else "trained in this app"
        arch = ARCH_TITLES.get(card.get("arch", "simple"), card.get("arch", "simple"))
        text = (f"Answered by `{self.name}` ({origin}): {card['task']} model ({arch} encoder) trained on "
                f"**{card.get('dataset_source', dataset_title(card['dataset']))}**. Held-out {headline(card)} "
                f"({dataset_title(card['dataset'])} test split, {metrics.get('test_images', '?')} images).")
        return text + (f"\n\n**Note:** {self.note}" if self.note else "")


class ModelRegistry:
    """The checkpoints on offer, by name, and the loaded models (each loaded once, thread-safe)."""

    def __init__(self, shipped_dir: str | os.PathLike = SHIPPED_DIR, runs_dir: Optional[str | os.PathLike] = None) -> None:
        self.shipped_dir = Path(shipped_dir)
        self.runs_dir = Path(runs_dir) if runs_dir is not None else default_runs_dir()
        self._lock = threading.RLock()
        self._loaded: dict[tuple[Path, float], Checkpoint] = {}
        self._cards: dict[Path, tuple[float, dict]] = {}  # card.json by folder, with its mtime

    # -------------------------------------------------------------------------- what is on offer
    def entries(self, task: Optional[str] = None) -> list[Entry]:
        """Shipped checkpoints (CIFAR-10 first), then this server's runs, newest first."""
        shipped = sorted(self._scan(self.shipped_dir, True), key=lambda e: (_family_rank(e.name), e.name))
        runs = sorted(self._scan(self.runs_dir, False), key=lambda e: e.path.stat().st_mtime, reverse=True)
        names = {e.name for e in shipped}
        out = shipped + [e for e in runs if e.name not in names]
        return [e for e in out if task is None or e.card["task"] == task]

    def _scan(self, folder: Path, shipped: bool) -> list[Entry]:
        if not folder.is_dir():
            return []
        out = []
        for d in folder.iterdir():
            if d.is_dir() and not d.name.startswith(".") and (d / CARD).is_file():
                try:
                    out.append(Entry(d.name, d, self._card(d), shipped))
                except (CheckpointError, OSError):
                    continue  # an unreadable card offers nothing to pick
        return out

    def _card(self, folder: Path) -> dict:
        """read_card, re-read only when card.json changed: every answer lists the models on offer."""
        stamp = (folder / CARD).stat().st_mtime
        with self._lock:
            cached = self._cards.get(folder)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        card = read_card(folder)
        with self._lock:
            self._cards[folder] = (stamp, card)
        return card

    def names(self, task: Optional[str] = None) -> list[str]:
        return [e.name for e in self.entries(task)]

    def choices(self, task: Optional[str] = None) -> list[tuple[str, str]]:
        """(label, name) pairs for a picker: name, task, dataset, held-out score, origin."""
        return [(e.label, e.name) for e in self.entries(task)]

    def default_name(self, task: str) -> str:
        if task not in TASKS:
            raise ModelError(f"Unknown task {task!r}; choose one of {', '.join(TASKS)}.")
        shipped = [e for e in self.entries(task) if e.shipped]  # in DEFAULT_FAMILIES' order
        if not shipped:
            raise ModelError(f"No shipped {task} model in {self.shipped_dir}.")
        return shipped[0].name

    def entry(self, model: Optional[str], task: Optional[str] = None) -> Entry:
        """The checkpoint `model` names: a name from `names()`, a bare task name (that task's
        default) or None/"" (the default of `task`). `task` also requires the model's task."""
        model = (model or "").strip() or task
        if model is None:
            raise ModelError("Name a model or a task.")
        name = self.default_name(model) if model in TASKS else model
        found = {e.name: e for e in self.entries()}
        if name not in found:
            raise ModelError(f"Unknown model {model!r}; choose one of: {', '.join(found)} (or a task: {', '.join(TASKS)}).")
        entry = found[name]
        if task is not None and entry.card["task"] != task:
            raise ModelError(f"{name} is a {entry.card['task']} model; this needs a {task} model, "
                             f"e.g. {', '.join(self.names(task))}.")
        return entry

    def learning_frames(self, model: Optional[str] = None) -> list[frames.Frame]:
        """The learning frames recorded while `model` trained ([] if none were); names as in `entry`,
        default the shipped CIFAR-10 SimCLR model. Raises FramesError for a damaged file."""
        return frames.load(self.entry(model or "simclr").path)

    # ----------------------------------------------------------------------------------- loading
    def load(self, model: Optional[str] = None, task: Optional[str] = None) -> LoadedModel:
        """The named model, loaded. A run that no longer loads (deleted, truncated, altered) falls
        back to the task's default and says so in `note`; a broken shipped model raises
        CheckpointError."""
        entry = self.entry(model, task)
        try:
            return LoadedModel(entry, self._checkpoint(entry.path))
        except CheckpointError as exc:
            if entry.shipped:
                raise
            fallback = self.entry(entry.card["task"])
            note = f"The trained model {entry.name} could not be loaded ({str(exc).rstrip('.')}); using the shipped {fallback.name}."
            print(f"ssl_core.registry: {note}", file=sys.stderr)
            return LoadedModel(fallback, self._checkpoint(fallback.path), note)

    def get(self, task: str) -> LoadedModel:
        """The default model of `task`: what a new visitor gets."""
        return self.load(task, task)

    def _checkpoint(self, path: Path) -> Checkpoint:
        try:
            stamp = (path / "model.safetensors").stat().st_mtime
        except OSError:
            stamp = 0.0
        with self._lock:
            key = (path.resolve(), stamp)
            if key not in self._loaded:
                self._loaded[key] = load_checkpoint(path)
            return self._loaded[key]
