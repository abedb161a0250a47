"""The shipped photo models (issue 25): trained on the Tiny ImageNet copy at 64 px, each card meets its
floors on all 10,026 test photos, beside its random-init baseline, within its CPU budget, with its
learning frames. tests/test_shipped.py measures the weights again; this checks what the cards say.

A photo model still in training (its resumable state committed, no card yet) is skipped, saying so.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ssl_core import frames
from ssl_core.data import TINY_IMAGENET

SHIPPED = Path(__file__).resolve().parent.parent / "checkpoints"

# Issue 25's floors on the 10,026 test photos; rotation_accuracy_vote is the app's answer (the
# model's vote over the four turns of a photo).
FLOORS = {
    "rotation": {"rotation_accuracy": 0.75, "rotation_accuracy_vote": 0.78},
    "siamese": {"knn_accuracy": 0.30, "pair_auc": 0.85},
    "simclr": {"knn_accuracy": 0.20, "linear_probe_accuracy": 0.30},
}
MAX_MINUTES = {"rotation": 360, "siamese": 180, "simclr": 180}  # the CPU budgets


def _card(task: str) -> tuple[Path, dict]:
    folder = SHIPPED / f"photos-{task}"
    if not (folder / "card.json").is_file():
        state = " (a resumable state of its run is here: training goes on)" if (folder / "resume").is_dir() else ""
        pytest.skip(f"photos-{task} is not shipped yet{state}")
    return folder, json.loads((folder / "card.json").read_text())


@pytest.mark.parametrize("task", ["rotation", "siamese", "simclr"])
def test_shipped_photo_cards_meet_their_floors(task: str) -> None:
    folder, card = _card(task)
    m = card["metrics"]
    assert card["dataset"] == TINY_IMAGENET and card["config"]["data_dir"] is None  # named by source, not path
    assert "Tiny ImageNet" in card["dataset_source"] and card["metrics_split"] == "test"
    assert m["test_images"] == 10_026 and m["train_images"] == 100_118 and len(card["class_names"]) == 202
    assert card["config"]["image_size"] == 64 and card["model_args"]["image_size"] == 64
    for key in ("linear_probe_accuracy", "knn_accuracy"):  # the untrained encoder's figures are beside them
        assert m[key] > m[f"{key}_random_init"], key
    for key, floor in FLOORS[task].items():
        assert m[key] >= floor, (key, m[key], floor)
    # Within its budget, every stretch's machine named, and its learning frames shipped.
    assert 0 < card["config"]["minutes"] <= MAX_MINUTES[task] and card["seconds"] <= MAX_MINUTES[task] * 60
    stretches = card["machine"].get("sessions", [])
    assert card["machine"]["cpu"] and all(s["cpu"] and s["from_epoch"] >= 1 and s["minutes"] > 0 for s in stretches)
    assert sum(s["minutes"] for s in stretches) <= MAX_MINUTES[task]
    shots = frames.load(folder)
    assert shots[0].epoch == 0 and math.ceil(shots[-1].epoch) == card["config"]["epochs"]
    assert not (folder / "resume").exists()  # a finished run keeps no resumable state
