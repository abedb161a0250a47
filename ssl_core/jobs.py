"""The app's ONE background training run: a thread of the server process that every browser tab
and API client reads through the same snapshot. Runs on disk (naming, saving, pruning) are runs.py;
which checkpoints answer is registry.py: a finished run joins the models on offer, and the
defaults stay the shipped models.
"""

from __future__ import annotations

import copy
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Optional

from . import dataset_title
from .errors import UserError
from .registry import ModelRegistry
from .cost import cap_for_space, counted, record_pace, space_max_minutes
from .resume import has_state, load_state
from .runs import config_from_form, dataset_name, prune_runs, remove_upload, run_and_save, run_name
from .train import Event, TrainConfig

MAX_LOSS_POINTS = 400  # per-step losses kept for the live curve; older ones are averaged in pairs
MAX_LOG_LINES = 200

__all__ = ["JobSnapshot", "MAX_LOSS_POINTS", "ModelRegistry", "TrainingJob", "format_seconds", "run_and_save"]


# ----------------------------------------------------------------------------------------- job
@dataclass
class JobSnapshot:
    """A consistent copy of the job's live state; safe to read while training goes on."""

    status: str = "idle"  # idle | loading | running | stopping | finished | stopped | failed
    version: int = 0  # increases on every change, so pollers can skip redrawing unchanged state
    task: str = ""
    dataset: str = ""
    who: str = ""  # who started it ("browser tab 3f2a", "API client")
    config: dict = field(default_factory=dict)
    started: float = 0.0  # time.time() at start
    fraction: float = 0.0  # 0..1 of the optimisation steps (or of the download while loading)
    eta: Optional[float] = None  # seconds left, from the pace so far
    epoch: int = 0
    epochs: int = 0
    step: int = 0
    total_steps: int = 0
    elapsed: float = 0.0
    loss_steps: list = field(default_factory=list)  # step numbers of `losses` (each a mean over `loss_stride` steps)
    losses: list = field(default_factory=list)
    loss_stride: int = 1
    history: list = field(default_factory=list)  # per epoch: loss + held-out probe (rotation or kNN accuracy)
    log: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)  # final held-out metrics, incl. the random-init baseline
    checkpoint: str = ""  # where the finished model was saved
    model: str = ""  # its name among the models on offer (the run folder's name)
    resumable: str = ""  # a stopped run whose finished epochs are kept: start_training(resume=<this>) continues it
    error: str = ""
    frames: list = field(default_factory=list)  # frames.Frame so far (immutable: copies share them)

    @property
    def title(self) -> str:
        """The run as captions name it: "rotation on CIFAR-10"; "" before any run."""
        return f"{self.task} on {dataset_title(self.dataset)}" if self.task else ""

    @property
    def running(self) -> bool:
        return self.status in ("loading", "running", "stopping")

    def describe(self) -> str:
        """One line naming the run, for messages like 'X is already training'."""
        eta = f", about {format_seconds(self.eta)} left" if self.running and self.eta is not None else ""
        where = f"epoch {self.epoch}/{self.epochs}" if self.step else "starting"
        return f"{self.title} ({where}{eta}, started by {self.who or 'someone'})"

    def to_dict(self) -> dict:
        """JSON-ready: each frame in the API's shape (frames.Frame.to_dict)."""
        out = {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name != "frames"}
        return {**out, "frames": [f.to_dict() for f in self.frames]}


def format_seconds(seconds: Optional[float]) -> str:
    if seconds is None:
        return "?"
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _resumable_note(run: str, epochs: int) -> str:
    kept = f"{epochs} finished epoch{'s are' if epochs != 1 else ' is'} kept"
    return f"Its {kept}: start_training(..., resume=\"{run}\") continues it."


class TrainingJob:
    """The one background training run of this process.

    `start` refuses while a run is active; `stop` sets the event the engine checks before every
    step; `snapshot` returns a copy taken under the lock. When a run finishes, its checkpoint is
    saved atomically to `runs_dir/<task>-<dataset>-<time>`, where the registry finds it and offers
    it by that name. A failed or stopped run saves nothing.
    """

    def __init__(self, registry: ModelRegistry, runs_dir: Optional[str | os.PathLike] = None) -> None:
        self.registry = registry
        self.runs_dir = Path(runs_dir) if runs_dir is not None else registry.runs_dir
        self._lock = threading.Lock()
        self._state = JobSnapshot()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._pending: list[float] = []  # losses not yet folded into one curve point
        self._progress_line = False  # the last log line is a data-loading progress line

    # ------------------------------------------------------------------ public
    def snapshot(self) -> JobSnapshot:
        with self._lock:
            return copy.deepcopy(self._state)

    def start_from_form(self, task: str, dataset: str, epochs: object = None, batch_size: object = None,
                        lr: object = None, data_dir: Optional[str] = None, zip_file: Optional[str] = None,
                        who: str = "someone", minutes: object = None, resume: Optional[str] = None,
                        image_size: object = None) -> str:
        """The Train form's start button: refused while a run is active (naming it), else the form
        values become a config (a zip is extracted into runs_dir/uploads) and the run starts; with
        `minutes` it trains for that budget instead of `epochs`, at `image_size` px. `resume` names a stopped run (its
        folder in runs_dir), continued with its own settings. On a public Space a run is capped at
        cost.space_max_minutes(). Returns the message for the user; problems start with "Not started:"."""
        snap = self.snapshot()
        if snap.running:
            return self._refusal(snap)
        try:
            if resume:
                cfg = self._stopped_config(resume)
                note = ""
            else:
                cfg = config_from_form(task, dataset, epochs, batch_size, lr, data_dir, zip_file, self.runs_dir, minutes,
                                       image_size)
                note = cap_for_space(cfg, space_max_minutes())
        except (UserError, ValueError) as exc:
            return f"Not started: {exc}"
        return self.start(cfg, who, resume=resume or None)[1] + note

    def _stopped_config(self, name: str) -> TrainConfig:
        """The settings of the stopped run `name` (a folder directly in runs_dir holding a resume state)."""
        folder = self.runs_dir / name
        if Path(name).name != name or name.startswith(".") or not has_state(folder):
            raise ValueError(f"{name!r} is not a stopped run that can be resumed here.")
        return TrainConfig.from_dict(load_state(folder).config)

    @staticmethod
    def _refusal(snap: JobSnapshot) -> str:
        return f"Not started: {snap.describe()} is already training. Stop it first, or wait for it to finish."

    def start(self, cfg: TrainConfig, who: str = "someone", resume: Optional[str] = None) -> tuple[bool, str]:
        """Start training in the background; `resume` names a stopped run in runs_dir to continue
        (into the same folder). Returns (started, message for the user)."""
        with self._lock:
            if self._state.running:
                return False, self._refusal(self._state)
            dataset = dataset_name(cfg)
            self._stop = threading.Event()
            self._pending = []
            self._state = JobSnapshot(status="loading", version=self._state.version + 1, task=cfg.task, dataset=dataset,
                                      who=who, config=cfg.to_dict(), started=time.time(), epochs=int(cfg.epochs))
            length = counted(cfg.epochs, "epoch") if cfg.minutes is None else counted(cfg.minutes, "minute")
            again = f", resuming {resume}" if resume else ""
            self._log_locked(f"{cfg.task} on {dataset}: {length}, batch {cfg.batch_size}, lr {cfg.lr:g}{again} (started by {who})")
            out = self.runs_dir / (resume or run_name(cfg))
            self._thread = threading.Thread(target=self._run, args=(cfg, self._stop, out, resume), name="ssl-training",
                                            daemon=True)
            self._thread.start()
        return True, f"{'Resumed' if resume else 'Started'} {cfg.task} on {dataset_title(dataset)} for {length}."

    def stop(self, wait: float = 2.0) -> str:
        """Ask the run to end before its next step; waits up to `wait` seconds for it to do so."""
        with self._lock:
            if not self._state.running:
                return "Nothing is training."
            self._stop.set()
            self._state.status = "stopping"
            self._state.version += 1
            thread = self._thread
        if thread is not None:
            thread.join(wait)
        snap = self.snapshot()
        if snap.running:
            return "Stopping: the run ends after its current step (data loading and the final evaluation cannot be interrupted)."
        kept = f" {_resumable_note(snap.resumable, len(snap.history))}" if snap.resumable else ""
        return f"Stopped {snap.title} at epoch {snap.epoch}/{snap.epochs}; the previous model is kept.{kept}"

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until the current run (if any) ends; True if it has ended."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return not self.snapshot().running

    # ------------------------------------------------------------------ thread
    def _run(self, cfg: TrainConfig, stop: threading.Event, out: Path, resume: Optional[str]) -> None:
        try:
            result, path = run_and_save(cfg, out, self._on_event, stop, resume=out if resume else None)
            if result.history and not resume:  # the Train tab's next estimate uses this run's real pace
                record_pace(cfg, self._state.step, result.history[-1].get("train_seconds", 0.0))
            if path is None:
                kept = ""
                if result.state is not None:
                    with self._lock:
                        self._state.resumable = out.name
                    kept = f" {_resumable_note(out.name, len(result.history))}"
                self._finish("stopped", f"Stopped at epoch {self._state.epoch}/{self._state.epochs}; the previous model is kept.{kept}")
                return
            with self._lock:
                self._state.metrics = copy.deepcopy(result.metrics)
                self._state.checkpoint, self._state.model = str(path), path.name
            self._finish("finished", f"Finished in {format_seconds(result.seconds)}; saved as {path.name}, now on offer "
                                     "in the model pickers (the defaults stay the shipped models).")
        except (UserError, ValueError) as exc:
            self._finish("failed", f"Training failed: {exc}", error=str(exc))
        except Exception as exc:  # noqa: BLE001 - a thread must report, not die silently
            traceback.print_exc()
            self._finish("failed", f"Training failed unexpectedly: {type(exc).__name__}: {exc}. The previous model is kept.",
                         error=f"{type(exc).__name__}: {exc}")
        finally:
            # A start accepted from here on is not swept away: its zip is younger than the grace
            # period, and its checkpoint is written under a hidden temp name prune_runs skips.
            with self._lock:
                finished = self._state.status == "finished" or bool(self._state.resumable)  # its data are still needed
            if not finished and cfg.data_dir:
                remove_upload(self.runs_dir, Path(cfg.data_dir))  # nothing saved needs this run's zip
            try:
                prune_runs(self.runs_dir)
            except OSError as exc:  # housekeeping must never turn a finished run into a failure
                print(f"ssl_core.jobs: could not prune {self.runs_dir}: {exc}", file=sys.stderr)

    def _finish(self, status: str, message: str, error: str = "") -> None:
        with self._lock:
            self._state.status = status
            self._state.error = error
            if status == "finished":
                self._state.fraction, self._state.eta = 1.0, 0.0
            else:
                self._state.eta = None
            self._log_locked(message)

    def _on_data_progress(self, message: str, fraction: float) -> None:
        # A download reports every megabyte: one log line that updates in place, not 170 lines.
        with self._lock:
            self._state.fraction = float(fraction)
            if self._progress_line:
                self._state.log.pop()
            self._log_locked(message)
            self._progress_line = True

    def _on_event(self, e: Event) -> None:
        if e.kind == "data":
            self._on_data_progress(e.message, e.metrics.get("fraction", 0.0))
            return
        if e.kind == "frame":
            with self._lock:
                self._state.frames.append(e.metrics["frame"])
                self._state.version += 1
            return
        with self._lock:
            s = self._state
            if e.kind == "start":
                s.status = "stopping" if self._stop.is_set() else "running"
                s.total_steps = e.total_steps
                self._log_locked(e.message)
            s.epoch, s.epochs, s.step, s.elapsed = e.epoch, e.epochs, e.step, e.elapsed
            s.total_steps = e.total_steps
            s.fraction, s.eta = e.fraction, e.eta
            if e.kind == "step" and e.loss is not None:
                self._add_loss_locked(e.step, e.loss)
            elif e.kind == "epoch":
                s.history.append({"epoch": e.epoch, "loss": e.loss, **e.metrics, "elapsed": e.elapsed})
                probe = "".join(f", held-out {k.replace('_', ' ')} {v:.1%}" for k, v in e.metrics.items())
                self._log_locked(f"epoch {e.epoch}/{e.epochs}: loss {e.loss:.4f}{probe}")
            elif e.kind == "done":
                s.metrics = copy.deepcopy(e.metrics)
                self._log_locked("evaluated on the held-out test split")
            s.version += 1

    def _add_loss_locked(self, step: int, loss: float) -> None:
        # Keep at most MAX_LOSS_POINTS points however long the run: each point averages `stride`
        # steps, and when the list is full, neighbours merge and the stride doubles.
        s = self._state
        self._pending.append(loss)
        if len(self._pending) < s.loss_stride:
            return
        s.losses.append(sum(self._pending) / len(self._pending))
        s.loss_steps.append(step)
        self._pending = []
        if len(s.losses) >= MAX_LOSS_POINTS:
            s.losses = [(a + b) / 2 for a, b in zip(s.losses[0::2], s.losses[1::2])]
            s.loss_steps = s.loss_steps[1::2]
            s.loss_stride *= 2

    def _log_locked(self, message: str) -> None:
        self._progress_line = False
        self._state.log.append(f"[{time.strftime('%H:%M:%S')}] {message}")
        del self._state.log[:-MAX_LOG_LINES]
        self._state.version += 1


