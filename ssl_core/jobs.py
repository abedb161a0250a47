"""Running a training to completion and keeping its result: shared by the CLI and the app's job."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Optional

from .checkpoints import make_card, save_checkpoint
from .train import EventFn, TrainConfig, TrainResult, train


def run_and_save(cfg: TrainConfig, out: str | os.PathLike, on_event: Optional[EventFn] = None,
                 stop_event: Optional[threading.Event] = None) -> tuple[TrainResult, Optional[Path]]:
    """Train, then write the checkpoint atomically. A stopped run writes nothing (path None)."""
    result = train(cfg, on_event, stop_event)
    if result.stopped:
        return result, None
    card = make_card(result.model, cfg.to_dict(), result.dataset.name, result.dataset.class_names,
                     result.metrics, result.history, result.seconds)
    return result, save_checkpoint(out, result.model, card)
