"""Re-measures the pair metrics on a shipped card with the current protocol (evaluate.pair_metrics):
pair ROC-AUC, pair accuracy, the calibrated threshold and the random-init pair ROC-AUC, on the
card's own data and split, and rewrites card.json in place (weights untouched, their hash checked).

Why: cards written before 2026-12-06 measured pairs on 2,000 balanced pairs whose same-class
partner could be the anchor itself. Both biased the figures of weak embeddings on many classes
(docs/reliability.md, "pair metrics"); the kNN and linear probes, measured the same way then and
now, are left as they are. The card records when and why in `remeasured`.

Run from the repository root:
  PYTHONPATH=. python assets/remeasure_pairs.py checkpoints/NAME [--data-dir DIR]
(DIR: the CIFAR-10 copy or the photo folder the card was trained on; digits needs none.)
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from ssl_core.checkpoints import CARD, load_checkpoint
from ssl_core.config import TrainConfig
from ssl_core.evaluate import PROTOCOL, embed, pair_metrics
from ssl_core.inference import random_init_model
from ssl_core.models import SSLModel
from ssl_core.train import prepare_data

PAIR_KEYS = ("pair_auc", "pair_accuracy", "threshold")


@torch.no_grad()
def _pairs(model: SSLModel, train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor, test_labels: torch.Tensor) -> dict:
    return pair_metrics(embed(model, train), train_labels, embed(model, test), test_labels)


def remeasure(folder: Path, data_dir: str | None) -> dict:
    ckpt = load_checkpoint(folder)
    card = ckpt.card
    cfg = TrainConfig.from_dict(card["config"])
    cfg.data_dir = data_dir
    cfg.image_size = int(card.get("image_size", 32))
    _, parts = prepare_data(cfg)
    m = card["metrics"]
    if (len(parts.test), len(parts.train)) != (m["test_images"], m["train_images"]):
        raise SystemExit(f"{folder.name}: this data gives {len(parts.test)} test / {len(parts.train)} training "
                         f"images, its card {m['test_images']} / {m['train_images']}: not the card's data")
    trained = _pairs(ckpt.model, parts.train.images, parts.train.labels, parts.test.images, parts.test.labels)
    baseline = _pairs(random_init_model(ckpt), parts.train.images, parts.train.labels, parts.test.images, parts.test.labels)
    before = {k: m[k] for k in (*PAIR_KEYS, "pair_auc_random_init")}
    m.update({k: trained[k] for k in PAIR_KEYS}, pair_auc_random_init=baseline["pair_auc"])
    card["evaluation"]["pair_auc"] = PROTOCOL["pair_auc"]
    card.setdefault("remeasured", []).append({
        "date": time.strftime("%Y-%m-%d"),
        "what": "pair metrics: more pairs, a same-class partner never the image itself",
        "before": before,
    })
    tmp = folder / f".{CARD}.tmp"
    tmp.write_text(json.dumps(card, indent=2, default=float))
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, folder / CARD)  # a reader sees the old card or the new one, never half of one
    return {k: (round(before[k], 4), round(m[k], 4)) for k in before}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()
    print(args.checkpoint.name, remeasure(args.checkpoint, args.data_dir))


if __name__ == "__main__":
    main()
