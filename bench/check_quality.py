#!/usr/bin/env python3
"""Train every task on digits with the project's defaults and check the held-out quality floors.

Used by bench/gpu.sh to show that bf16 mixed precision on CUDA keeps the quality the CPU runs have.
Each task must meet its floors within MAX_SECONDS. Exit status 1 if any floor is missed.

Usage: python bench/check_quality.py [--device cuda|cpu|auto] [--out DIR] [--epochs N --no-gate]
(--epochs shortens every run, for a smoke test of this script; floors are then reported, not enforced.)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ssl_core.jobs import run_and_save  # noqa: E402
from ssl_core.train import TrainConfig, autocast_dtype, resolve_device  # noqa: E402

MAX_SECONDS = 60.0
# (metric, floor) per task; "knn_gain" is knn_accuracy - knn_accuracy_random_init.
FLOORS = {
    "rotation": [("rotation_accuracy", 0.96)],
    "siamese": [("pair_auc", 0.995), ("knn_accuracy", 0.98)],
    "simclr": [("knn_accuracy", 0.97), ("knn_gain", 0.015)],
}


def check(task: str, metrics: dict, seconds: float) -> list[str]:
    """The floors this run missed, in words (empty: all met)."""
    values = dict(metrics, knn_gain=metrics.get("knn_accuracy", 0.0) - metrics.get("knn_accuracy_random_init", 1.0))
    missed = [f"{name} {values.get(name, float('nan')):.4f} < {floor}" for name, floor in FLOORS[task]
              if not values.get(name, float("-inf")) >= floor]
    if seconds > MAX_SECONDS:
        missed.append(f"took {seconds:.1f} s > {MAX_SECONDS:.0f} s")
    return missed


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", choices=("auto", "cpu", "cuda"))
    p.add_argument("--out", default=None, help="write each checkpoint to OUT/<task> (default: not kept)")
    p.add_argument("--epochs", type=int, help="override every task's epochs (smoke test)")
    p.add_argument("--no-gate", action="store_true", help="report the floors but exit 0")
    args = p.parse_args()
    import tempfile

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="ssl-quality-"))
    failed = False
    summary = {}
    for task in FLOORS:
        cfg = TrainConfig(task=task, dataset="digits", device=args.device, epochs=args.epochs)
        device = resolve_device(cfg.device)
        amp = autocast_dtype(cfg, device)
        result, _ = run_and_save(cfg, out / task)
        missed = check(task, result.metrics, result.seconds)
        failed |= bool(missed)
        shown = {k: round(v, 4) for k, v in result.metrics.items() if isinstance(v, float)}
        summary[task] = {"seconds": round(result.seconds, 2), "device": device.type,
                         "precision": "bf16" if amp is not None else "fp32", "metrics": shown, "missed": missed}
        print(f"{task} {device.type} ({summary[task]['precision']}): {result.seconds:.1f} s, {shown} -> "
              + ("PASS" if not missed else "FAIL: " + "; ".join(missed)), flush=True)
    (out / "quality.json").write_text(json.dumps(summary, indent=2))
    return 1 if failed and not args.no_gate else 0


if __name__ == "__main__":
    sys.exit(main())
