"""Running a training to completion and keeping its result: shared by the CLI and the app's job.

`run_and_save` is the whole of it for the CLI. The app adds two process-wide objects on top:

- `ModelRegistry`: the active model per task. It starts from the shipped checkpoints, so the demo
  answers at once on a fresh machine, and a finished training run replaces the model for its task.
- `TrainingJob`: the ONE background training run of the server. Browser tabs come and go; the job
  lives in a thread of the server process, and every tab (and API client) reads the same snapshot.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import sys
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from . import TASKS
from .checkpoints import CARD, Checkpoint, CheckpointError, load_checkpoint, make_card, read_card, save_checkpoint
from .data import DataError
from .evaluate import PROTOCOL
from .train import Event, EventFn, TrainConfig, TrainingError, TrainResult, train

REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_DIR = REPO_ROOT / "checkpoints"
ACTIVE_FILE = "active.json"
MAX_LOSS_POINTS = 400  # per-step losses kept for the live curve; older ones are averaged in pairs
MAX_LOG_LINES = 200
# Finished runs kept in the runs folder besides the active ones. A public demo trains all day; each
# run is ~2 MB plus its uploaded images, so without a bound the disk fills. Env SSL_MAX_RUNS.
MAX_RUNS = int(os.environ.get("SSL_MAX_RUNS", "12"))
UPLOADS = "uploads"  # runs_dir/uploads/zip-*: extracted zips, the data of folder runs
UPLOAD_GRACE_S = 120.0  # a zip extracted this recently may belong to a start in progress: keep it


def run_and_save(cfg: TrainConfig, out: str | os.PathLike, on_event: Optional[EventFn] = None,
                 stop_event: Optional[threading.Event] = None) -> tuple[TrainResult, Optional[Path]]:
    """Train, then write the checkpoint atomically. A stopped run writes nothing (path None)."""
    result = train(cfg, on_event, stop_event)
    if result.stopped:
        return result, None
    card = make_card(result.model, cfg.to_dict(), result.dataset.name, result.dataset.class_names,
                     result.metrics, result.history, result.seconds, result.dataset.source, PROTOCOL)
    return result, save_checkpoint(out, result.model, card)


def default_runs_dir() -> Path:
    return Path(os.environ.get("SSL_RUNS_DIR", REPO_ROOT / "runs"))


# ------------------------------------------------------------------------------------ registry
@dataclass
class ActiveModel:
    checkpoint: Checkpoint
    note: str = ""  # why this is not the model that was asked for (e.g. a corrupt run fell back)

    @property
    def key(self) -> str:
        """Identifies the weights, for caches of embeddings and maps: a retrained model gets a new key."""
        return f"{self.checkpoint.card['task']}-{self.checkpoint.card['weights_sha256'][:16]}"


class ModelRegistry:
    """The active checkpoint per task, remembered in `runs_dir/active.json` across restarts.

    Loading is lazy and cached. A remembered run that no longer loads (deleted, truncated, altered)
    falls back to the shipped checkpoint for that task and says so in `ActiveModel.note`.
    """

    def __init__(self, shipped_dir: str | os.PathLike = SHIPPED_DIR, runs_dir: Optional[str | os.PathLike] = None) -> None:
        self.shipped_dir = Path(shipped_dir)
        self.runs_dir = Path(runs_dir) if runs_dir is not None else default_runs_dir()
        self._lock = threading.RLock()
        self._loaded: dict[str, ActiveModel] = {}
        self._chosen: dict[str, str] = self._read_active()

    def shipped_path(self, task: str) -> Path:
        return self.shipped_dir / f"digits-{task}"

    def _read_active(self) -> dict[str, str]:
        try:
            data = json.loads((self.runs_dir / ACTIVE_FILE).read_text())
            return {k: str(v) for k, v in data.items() if k in TASKS and isinstance(v, str)}
        except (OSError, ValueError, AttributeError):
            return {}  # no runs yet, or an unreadable file: the shipped models serve

    def _write_active(self) -> None:
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.runs_dir / f".{ACTIVE_FILE}.tmp{os.getpid()}"
        tmp.write_text(json.dumps(self._chosen, indent=2))
        os.replace(tmp, self.runs_dir / ACTIVE_FILE)

    def get(self, task: str) -> ActiveModel:
        """The model that answers for `task` now. Raises CheckpointError only if even the shipped one fails."""
        if task not in TASKS:
            raise ValueError(f"Unknown task {task!r}; choose one of {', '.join(TASKS)}.")
        with self._lock:
            if task in self._loaded:
                return self._loaded[task]
            chosen = self._chosen.get(task)
            note = ""
            if chosen:
                try:
                    active = ActiveModel(load_checkpoint(chosen))
                    self._loaded[task] = active
                    return active
                except CheckpointError as exc:
                    note = f"The trained model {Path(chosen).name} could not be loaded ({str(exc).rstrip('.')}); using the shipped one."
                    print(f"ssl_core.jobs: {note}", file=sys.stderr)
            active = ActiveModel(load_checkpoint(self.shipped_path(task)), note)
            self._loaded[task] = active
            return active

    def activate(self, task: str, path: str | os.PathLike) -> ActiveModel:
        """Make the checkpoint at `path` the one that answers for `task` (checked by loading it first)."""
        active = ActiveModel(load_checkpoint(path))
        with self._lock:
            self._loaded[task] = active
            self._chosen[task] = str(Path(path).resolve())
            self._write_active()
        return active

    def active_paths(self) -> set[Path]:
        """The runs chosen as active models (resolved); the shipped ones are not in runs_dir."""
        with self._lock:
            return {Path(p).resolve() for p in self._chosen.values()}

    def reset(self, task: str) -> ActiveModel:
        """Go back to the shipped checkpoint for `task`."""
        with self._lock:
            self._chosen.pop(task, None)
            self._loaded.pop(task, None)
            self._write_active()
        return self.get(task)


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
    error: str = ""

    @property
    def running(self) -> bool:
        return self.status in ("loading", "running", "stopping")

    def describe(self) -> str:
        """One line naming the run, for messages like 'X is already training'."""
        eta = f", about {format_seconds(self.eta)} left" if self.running and self.eta is not None else ""
        where = f"epoch {self.epoch}/{self.epochs}" if self.step else "starting"
        return f"{self.task} on {self.dataset} ({where}{eta}, started by {self.who or 'someone'})"

    def to_dict(self) -> dict:
        return asdict(self)


def format_seconds(seconds: Optional[float]) -> str:
    if seconds is None:
        return "?"
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class TrainingJob:
    """The one background training run of this process.

    `start` refuses while a run is active; `stop` sets the event the engine checks before every
    step; `snapshot` returns a copy taken under the lock. When a run finishes, its checkpoint is
    saved atomically to `runs_dir/<task>-<dataset>-<time>` and becomes the registry's active model
    for that task. A failed or stopped run leaves the previous model in place.
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

    def start(self, cfg: TrainConfig, who: str = "someone") -> tuple[bool, str]:
        """Start training in the background. Returns (started, message for the user)."""
        with self._lock:
            if self._state.running:
                return False, f"Not started: {self._state.describe()} is already training. Stop it first, or wait for it to finish."
            dataset = cfg.dataset if cfg.dataset != "folder" else f"folder:{Path(cfg.data_dir or '').name}"
            self._stop = threading.Event()
            self._pending = []
            self._state = JobSnapshot(status="loading", version=self._state.version + 1, task=cfg.task, dataset=dataset,
                                      who=who, config=cfg.to_dict(), started=time.time(), epochs=int(cfg.epochs))
            self._log_locked(f"{cfg.task} on {dataset}: {cfg.epochs} epochs, batch {cfg.batch_size}, lr {cfg.lr:g} (started by {who})")
            self._thread = threading.Thread(target=self._run, args=(cfg, self._stop), name="ssl-training", daemon=True)
            self._thread.start()
        return True, f"Started {cfg.task} on {dataset} for {cfg.epochs} epochs."

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
        return f"Stopped {snap.task} on {snap.dataset} at epoch {snap.epoch}/{snap.epochs}; the previous model is kept."

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until the current run (if any) ends; True if it has ended."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return not self.snapshot().running

    # ------------------------------------------------------------------ thread
    def _run(self, cfg: TrainConfig, stop: threading.Event) -> None:
        try:
            out = self.runs_dir / _run_name(cfg, self._state.dataset)
            result, path = run_and_save(cfg, out, self._on_event, stop)
            if path is None:
                self._finish("stopped", f"Stopped at epoch {self._state.epoch}/{self._state.epochs}; the previous model is kept.")
                return
            self.registry.activate(cfg.task, path)
            with self._lock:
                self._state.metrics = copy.deepcopy(result.metrics)
                self._state.checkpoint = str(path)
            self._finish("finished", f"Finished in {format_seconds(result.seconds)}; saved to {path} — now the active {cfg.task} model.")
        except (TrainingError, DataError, CheckpointError, ValueError) as exc:
            self._finish("failed", f"Training failed: {exc}", error=str(exc))
        except Exception as exc:  # noqa: BLE001 - a thread must report, not die silently
            traceback.print_exc()
            self._finish("failed", f"Training failed unexpectedly: {type(exc).__name__}: {exc}. The previous model is kept.",
                         error=f"{type(exc).__name__}: {exc}")
        finally:
            # A start accepted from here on is not swept away: its zip is younger than the grace
            # period, and its checkpoint is written under a hidden temp name prune_runs skips.
            with self._lock:
                finished = self._state.status == "finished"
            if not finished and cfg.data_dir:
                _remove_upload(self.runs_dir, Path(cfg.data_dir))  # nothing saved needs this run's zip
            try:
                prune_runs(self.runs_dir, self.registry.active_paths())
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


def _run_name(cfg: TrainConfig, dataset: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", dataset).strip("-") or "data"
    return f"{cfg.task}-{safe}-{time.strftime('%Y%m%d-%H%M%S')}"


# ----------------------------------------------------------------------------------- housekeeping
def prune_runs(runs_dir: str | os.PathLike, keep: set[Path], max_runs: int = MAX_RUNS,
               grace_s: float = UPLOAD_GRACE_S) -> list[Path]:
    """Delete old runs and unneeded uploads from `runs_dir`; returns what was removed.

    Kept: the runs in `keep` (the active models), the newest `max_runs` other runs, every extracted
    zip a kept run was trained on (the app re-reads its held-out images for maps and neighbours),
    and zips extracted in the last `grace_s` seconds. Only folders this module and the app made are
    touched: run folders (with a card.json) directly inside, and `uploads/zip-*`.
    """
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    keep = {Path(p).resolve() for p in keep}
    runs = sorted((d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") and (d / CARD).is_file()),
                  key=lambda d: d.stat().st_mtime, reverse=True)
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
        config = read_card(run).get("config")
    except (CheckpointError, OSError):
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


def _remove_upload(runs_dir: Path, data_dir: Path) -> None:
    top = _upload_of(runs_dir, data_dir)
    if top is not None:
        shutil.rmtree(top, ignore_errors=True)
