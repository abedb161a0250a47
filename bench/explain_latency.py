"""Latency of the app's explanations (issue 26), per shipped model: `explain_rotation` for a rotation
model, `explain_pair` for every model (the Similarity tab offers them all), on the example pictures
the tabs offer, the verdict of the deletion check already known. Wall time and the process's CPU
time per call, medians over interleaved rounds; docs/benchmarks.md has the figures.

    python bench/explain_latency.py [--rounds 5] [--calls 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from ssl_core import explain  # noqa: E402
from ssl_core.registry import ModelRegistry  # noqa: E402

EXAMPLES = ROOT / "assets" / "examples"
# Per data set, what its tabs' examples offer: (a picture to turn, a pair to compare).
PICTURES = {"digits": ("digit-7-turned-90.png", "digit-3-upright.png", "digit-3-another.png"),
            "cifar10": ("cifar10-cat-turned-90.png", "cifar10-cat-a.png", "cifar10-cat-b.png"),
            "tiny-imagenet": ("rendered-meadow-turned-90.png", "photo-school-bus-a.png", "photo-school-bus-b.png")}


def calls(registry: ModelRegistry) -> dict:
    """(model, endpoint) -> a call on the pictures its tab's examples use."""
    out = {}
    for entry in registry.entries():
        if not entry.shipped:
            continue
        model = registry.load(entry.name)
        photo, a, b = (EXAMPLES / f for f in PICTURES.get(entry.card["dataset"], PICTURES["cifar10"]))
        if entry.card["task"] == "rotation":
            out[(entry.name, "explain_rotation")] = lambda m=model, p=photo: explain.explain_rotation(m, p)
        out[(entry.name, "explain_pair")] = lambda m=model, a=a, b=b: explain.explain_pair(m, a, b)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    todo = calls(ModelRegistry(runs_dir="/nonexistent"))
    for fn in todo.values():
        fn()  # warm-up: the verdict, the first pass through each model
    wall: dict = {k: [] for k in todo}
    cpu: dict = {k: [] for k in todo}
    for _ in range(args.rounds):
        for key, fn in todo.items():
            for _ in range(args.calls):
                t, c = time.perf_counter(), time.process_time()
                fn()
                wall[key].append(time.perf_counter() - t)
                cpu[key].append(time.process_time() - c)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of {args.rounds} x {args.calls} calls")
    print("| model | endpoint | wall ms (median) | wall ms (90th pct) | CPU ms (median) |\n|---|---|---:|---:|---:|")
    for (name, endpoint), w in wall.items():
        p90 = statistics.quantiles(w, n=10)[-1]
        print(f"| `{name}` | `{endpoint}` | {statistics.median(w) * 1000:.0f} | {p90 * 1000:.0f} | "
              f"{statistics.median(cpu[(name, endpoint)]) * 1000:.0f} |")


if __name__ == "__main__":
    main()
