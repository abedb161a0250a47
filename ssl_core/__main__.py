"""Command line: `python -m ssl_core train ...` (and `bench`, see ssl_core/bench.py)."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator, Optional

from . import DATASETS, TASKS
from .models import ARCHS


def format_metrics(metrics: dict) -> str:
    """One line of held-out metrics for the terminal, each trained value beside its random-init baseline."""
    from .evaluate import METRICS  # scikit-learn loads only when a summary is printed

    keys = [m.key for m in METRICS] + ["threshold"]
    parts = []
    for k in keys:
        if isinstance(metrics.get(k), float):
            base = metrics.get(f"{k}_random_init")
            parts.append(f"{k}={metrics[k]:.4f}" + (f" (random init {base:.4f})" if isinstance(base, float) else ""))
    return ", ".join(parts) if parts else metrics.get("note", "no metrics")


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """Ctrl-C or SIGTERM asks the run to stop at the next step (every process of a torchrun launch
    agrees on it), so nothing is left half-done; a second Ctrl-C aborts at once. The previous
    handlers come back afterwards (the CLI also runs inside other programs, such as the tests)."""
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():  # Python delivers signals there only
        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def stopped_message(result, cfg, argv: list[str]) -> str:  # noqa: ANN001 - TrainResult, TrainConfig: imported lazily
    """What a stopped run leaves: nothing, or a resumable state and the command that continues it."""
    done = f"stopped by request after {len(result.history)} of {cfg.epochs} epochs"
    if cfg.minutes is not None:
        done = f"stopped by request after {len(result.history)} epochs ({result.seconds / 60:.1f} of {cfg.minutes:g} minutes)"
    if result.state is None:
        return f"{done}: no checkpoint written."
    folder = result.state.parent
    again = list(argv)
    if "--resume" in again:  # the same command, resuming from where the state now is
        del again[again.index("--resume") : again.index("--resume") + 2]
    command = " ".join(["python -m ssl_core", *map(shlex.quote, again), "--resume", shlex.quote(str(folder))])
    return f"{done}: resumable state kept in {folder} ({command})"


def train_command(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from . import distributed
    from .errors import UserError
    from .jobs import run_and_save
    from .train import TrainConfig

    try:
        cfg = TrainConfig(task=args.task, dataset=args.dataset, data_dir=args.data_dir, arch=args.arch, width=args.width,
                          image_size=args.image_size, stem_stride=args.stem_stride, per_class=args.per_class,
                          depth=args.depth,
                          epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer, seed=args.seed,
                          weight_decay=args.weight_decay, label_smoothing=args.label_smoothing,
                          device=args.device, precision=args.precision, minutes=args.minutes,
                          max_folder_images=None)  # a user's own set: as big as their memory allows
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bar: Optional[tqdm] = None

    def on_event(e) -> None:  # noqa: ANN001
        nonlocal bar
        if e.kind == "data":
            print(f"\r{e.message}\033[K", end="", file=sys.stderr, flush=True)
        elif e.kind == "start":
            print(file=sys.stderr)
            print(e.message, file=sys.stderr)
            # A resumed run starts part-way: counting from its step keeps the rate and the time left true.
            bar = tqdm(total=e.total_steps, initial=e.step, unit="step", file=sys.stderr, dynamic_ncols=True)
        elif e.kind == "step" and bar is not None:
            if bar.total != e.total_steps:  # a minutes budget re-fits its length as it goes
                bar.total = e.total_steps
            bar.set_description(f"epoch {e.epoch}/{e.epochs}")
            bar.set_postfix(loss=f"{e.loss:.4f}", refresh=False)
            bar.update(1)
        elif e.kind == "epoch" and bar is not None:
            bar.write(f"epoch {e.epoch}/{e.epochs}: loss {e.loss:.4f}" + "".join(f", {k} {v:.4f}" for k, v in e.metrics.items()))

    rank = f"[rank {os.environ.get('RANK')}] " if distributed.launched_by_torchrun() else ""
    try:
        with stop_on_signals() as stop:
            result, path = run_and_save(cfg, args.out, on_event, stop, resume=args.resume)
    except UserError as exc:  # bad data, divergence, a launch that does not fit the machine
        print(f"\n{rank}error: {exc}", file=sys.stderr)
        return 1
    except RuntimeError as exc:
        if not rank:
            raise
        # gloo/NCCL report a process that died or was killed as a failed collective on the others.
        print(f"\n{rank}error: another process of this torchrun launch failed or was stopped, so the run "
              f"ended here; no checkpoint was written. ({' '.join(str(exc).split())[:300]})", file=sys.stderr)
        return 1
    finally:
        if bar is not None:
            bar.close()
        distributed.leave()
    if result.stopped:
        print(f"\n{rank}{stopped_message(result, cfg, args.argv)}", file=sys.stderr)
        return 130
    if not result.is_main:
        return 0
    print(f"{cfg.task} on {result.dataset.source or result.dataset.name} (test split, {result.metrics.get('test_images')} images), "
          f"{result.seconds:.1f} s: {format_metrics(result.metrics)} -> {path}")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ssl_core", description="SSL Playground: train and benchmark.")
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a model and write a checkpoint folder")
    t.add_argument("--task", choices=TASKS, required=True)
    t.add_argument("--dataset", choices=DATASETS, default="digits")
    t.add_argument("--data-dir", help="CIFAR-10 root (cifar-10-batches-py, or train/ and test/ class folders) or the image folder")
    t.add_argument("--arch", choices=sorted(ARCHS), help="encoder (default: simple for digits, convnet for photos)")
    length = t.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, help="default: the recipe's for this dataset and task")
    length.add_argument("--minutes", type=float, help="train for this wall-clock budget instead of --epochs (from the "
                        "first step to the last metric; the schedule is fitted to the steps that fit)")
    t.add_argument("--width", type=int, help="encoder channels in its first stage (convnet default 24; the shipped CIFAR-10 models: 32, rotation 48)")
    t.add_argument("--image-size", type=int, default=32, metavar="N", help="pixels a side every image is resized to "
                   "(default 32, CIFAR-10's; the shipped photo models: 64)")
    t.add_argument("--stem-stride", type=int, choices=(1, 2), help="convnet: 2 = a strided first conv, so a 64-px "
                   "image costs about what a 32-px one does (default 1)")
    t.add_argument("--depth", type=int, choices=(1, 2), help="convnet: 3x3 convs in each of its last two stages "
                   "(default 1; 2 deepens it where its maps are smallest)")
    t.add_argument("--per-class", type=int, metavar="M", help="siamese: batches in runs of M images of one class, so "
                   "every batch holds positives on data of many classes (default 0: drawn at random)")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--optimizer", choices=("adam", "sgd"))
    t.add_argument("--weight-decay", type=float, help="default: the recipe's (decoupled for adam, L2 for sgd)")
    t.add_argument("--label-smoothing", type=float, help="rotation: cross-entropy targets smoothed by this much "
                   "(default: the recipe's, 0.1 for photos)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    t.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="auto: bf16 on CUDA and on CPUs with AMX or AVX512-BF16, else fp32")
    t.add_argument("--out", required=True, help="checkpoint folder to write (a stopped run keeps a resumable state "
                   "in OUT/resume)")
    t.add_argument("--resume", metavar="DIR", help="continue the stopped run whose --out was DIR (same settings)")
    t.set_defaults(func=train_command)
    try:
        from .bench import add_parser as add_bench
    except ImportError:
        add_bench = None
    if add_bench is not None:
        add_bench(sub)
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)  # a stopped run's message repeats the command
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
