"""`python -m ssl_core bench`: the seed's pipeline and the project's training step, timed side by side.

Both run in one process, one after the other in alternating rounds, on the same synthetic
CIFAR-10-shaped data written to a temporary folder in CIFAR-10's on-disk layout, so machine load
(other processes on a shared CPU) hits both alike and the ratio means something. Each pipeline
gets warm-up steps, then `--repeats` timed rounds of `--steps` steps; the medians are reported.

- seed: shared/seed's loops as `shared/tools/seed_bench.py` keeps them: torchvision CIFAR10,
  per-sample PIL rotate / random partner, ToTensor + Normalize, DataLoader (batch 64, no workers),
  its SimpleCNN in fp32, Adam 1e-3, its loss as written.
- project: `ssl_core.train`'s own step (`TrainStep`, the code `train()` runs): uint8 images held as one
  tensor on the device, batched augmentation, channels_last, autocast per `autocast_dtype`, the
  task's default batch size, the same optimiser update and divergence check.

Units: rotation counts rotated images through the network per second (the seed feeds one random
rotation per image, the project all four); siamese counts image pairs per second.

`--tsne` times t-SNE of 10,000 x 128 points: `ssl_core.projection` (openTSNE) against
scikit-learn's TSNE. `--epoch` times one full rotation epoch (GPU benchmark, see bench/gpu.sh).
`--to-accuracy` trains on CIFAR-10 until each task's held-out target (ssl_core/time_to_accuracy.py).
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import cifar_files
from .data import load_dataset
from .config import model_for
from .train import TrainConfig, TrainStep, resolve_device

BENCH_TASKS = ("rotation", "siamese")
UNITS = {"rotation": "img/s", "siamese": "pairs/s"}
SEED_BATCH = 64  # the seed's DataLoader batch size
WARMUP_STEPS = 5


# ------------------------------------------------------------------------------ synthetic data
@contextlib.contextmanager
def _md5_check_skipped() -> Iterator[None]:
    """torchvision's CIFAR10 refuses our synthetic files (wrong md5). Skip its check only inside this
    block, and put it back after, so nothing else in the process ever loads unchecked data."""
    import torchvision.datasets.cifar as cifar

    saved_fn, saved_method = cifar.check_integrity, cifar.CIFAR10._check_integrity
    cifar.check_integrity = lambda *args, **kwargs: True
    cifar.CIFAR10._check_integrity = lambda self: True
    try:
        yield
    finally:
        cifar.check_integrity, cifar.CIFAR10._check_integrity = saved_fn, saved_method


# ------------------------------------------------------------------------- the seed, as written
def seed_datasets(root: Path, task: str):  # noqa: ANN202 - torch Dataset subclasses, local on purpose
    """The seed's datasets, unchanged in substance (random.choice of angle, uniform random partner)."""
    import torchvision.datasets.cifar as cifar
    import torchvision.transforms as transforms
    from torch.utils.data import Dataset

    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])

    class RotatedCIFAR10(Dataset):
        def __init__(self) -> None:
            self.dataset = cifar.CIFAR10(root=str(root), train=True, transform=tf)
            self.rotations = [0, 90, 180, 270]

        def __len__(self) -> int:
            return len(self.dataset)

        def __getitem__(self, index):  # noqa: ANN001, ANN204
            img, _ = self.dataset[index]
            rotation = random.choice(self.rotations)
            return transforms.functional.rotate(img, rotation), rotation // 90

    class SiameseCIFAR10(Dataset):
        def __init__(self) -> None:
            self.dataset = cifar.CIFAR10(root=str(root), train=True, transform=tf)

        def __len__(self) -> int:
            return len(self.dataset)

        def __getitem__(self, index):  # noqa: ANN001, ANN204
            img1, label1 = self.dataset[index]
            img2, label2 = self.dataset[random.randint(0, len(self.dataset) - 1)]
            return img1, img2, torch.tensor(int(label1 == label2), dtype=torch.float32)

    with _md5_check_skipped():
        return RotatedCIFAR10() if task == "rotation" else SiameseCIFAR10()


def _seed_cnn(outputs: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 8 * 8, 128), nn.ReLU(), nn.Linear(128, outputs),
    )


def seed_stepper(task: str, root: Path, device: torch.device) -> tuple[Callable[[], int], str]:
    """One call = one step of the seed's loop (load a batch through the DataLoader, train on it);
    returns the units it processed. The loader restarts when an epoch runs out."""
    from torch.utils.data import DataLoader

    loader = DataLoader(seed_datasets(root, task), batch_size=SEED_BATCH, shuffle=True)
    model = _seed_cnn(4 if task == "rotation" else 128).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = iter(loader)

    def step() -> int:
        nonlocal batches
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(loader)
            batch = next(batches)
        batch = [t.to(device) for t in batch]
        if task == "rotation":
            loss = F.cross_entropy(model(batch[0]), batch[1])
        else:
            a, b, label = batch
            d = F.pairwise_distance(model(a), model(b))
            # The seed's loss exactly as written (its terms swapped; see ssl_core/losses.py).
            loss = torch.mean((1 - label) * d.pow(2) + label * torch.clamp(1.0 - d, min=0.0).pow(2))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return len(batch[0])

    return step, f"batch {SEED_BATCH}, fp32, PIL + DataLoader"


# --------------------------------------------------------------------------------- the project
def project_stepper(task: str, images: torch.Tensor, labels: torch.Tensor, device: torch.device,
                    batch_size: Optional[int] = None, seed: int = 0, arch: str = "simple") -> tuple[Callable[[], int], str]:
    """One call = one optimisation step exactly as `ssl_core.train.train` takes it (`TrainStep`, with
    the CIFAR-10 recipe's augmentations); returns the units processed (rotated images for rotation:
    4 per source image; pairs for siamese). `arch` defaults to the seed's SimpleCNN, so the ratio
    to the seed measures the pipeline, not a different network."""
    cfg = TrainConfig(task=task, dataset="cifar10", arch=arch, batch_size=batch_size, device=device.type, seed=seed)
    torch.manual_seed(seed)
    model = model_for(cfg).to(device).to(memory_format=torch.channels_last)
    gen = torch.Generator().manual_seed(seed)
    images, labels = images.to(device), labels.to(device)
    n, batch = len(images), min(cfg.batch_size, len(images))
    step_fn = TrainStep(cfg, model, images, labels, total_steps=10**9, gen=gen)  # the schedule stays near its peak
    order, pos = torch.randperm(n, generator=gen).to(device), 0

    def step() -> int:
        nonlocal order, pos
        if pos + batch > n:
            order, pos = torch.randperm(n, generator=gen).to(device), 0
        step_fn(order[pos : pos + batch])
        pos += batch
        return 4 * batch if task == "rotation" else batch

    precision = "bf16 autocast" if step_fn.amp == torch.bfloat16 else "fp32"
    return step, f"{cfg.arch} encoder, batch {batch}, {precision}, channels_last, batched tensor augmentation"


# -------------------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(step: Callable[[], int], steps: int, device: torch.device) -> float:
    """Units per second over `steps` steps."""
    _sync(device)
    start, units = time.perf_counter(), 0
    for _ in range(steps):
        units += step()
    _sync(device)
    return units / (time.perf_counter() - start)


@dataclass
class Comparison:
    task: str
    device: str
    project: float  # median units/s
    seed: float  # median units/s
    project_rounds: list[float]
    seed_rounds: list[float]
    project_setup: str
    seed_setup: str

    @property
    def ratio(self) -> float:
        return self.project / self.seed

    def line(self) -> str:
        unit = UNITS[self.task]
        return (f"{self.task} {self.device}: project {self.project:.0f} {unit}, "
                f"seed {self.seed:.0f} {unit}, ratio {self.ratio:.2f}")


def compare(task: str, device: torch.device, root: Path, steps: int = 20, repeats: int = 7,
            batch_size: Optional[int] = None, log: Callable[[str], None] = print) -> Comparison:
    """Seed and project on the same data, alternating rounds so both see the same machine load."""
    if task not in BENCH_TASKS:
        raise ValueError(f"task must be one of {', '.join(BENCH_TASKS)}")
    data = load_dataset("cifar10", root, verify=False)  # our synthetic files: no md5 to match
    n_train = 5 * (len(data) // 6)  # the five data batches, as the seed's CIFAR10(train=True) reads
    seed_step, seed_setup = seed_stepper(task, root, device)
    project_step, project_setup = project_stepper(task, data.images[:n_train], data.labels[:n_train], device, batch_size)
    for step in (seed_step, project_step):
        _timed(step, WARMUP_STEPS, device)
    seed_rounds, project_rounds = [], []
    for r in range(repeats):
        seed_rounds.append(_timed(seed_step, steps, device))
        project_rounds.append(_timed(project_step, steps, device))
        log(f"  {task} {device.type} round {r + 1}/{repeats}: project {project_rounds[-1]:.0f}, seed {seed_rounds[-1]:.0f} {UNITS[task]}")
    return Comparison(task, device.type, statistics.median(project_rounds), statistics.median(seed_rounds),
                      project_rounds, seed_rounds, project_setup, seed_setup)


def rotation_epoch_seconds(device: torch.device, images: int = 50_000, batch_size: int = 1024,
                           repeats: int = 3) -> tuple[float, list[float]]:
    """Seconds for one full rotation epoch over `images` synthetic CIFAR-sized images (each in all
    four rotations) with the project's step, data resident on `device`. One untimed warm-up epoch
    first (cuDNN autotuning, allocator growth); returns the median of `repeats` epochs and all of them.
    Like train(), an epoch drops the ragged last batch; the seconds are scaled to all `images`."""
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (images, 3, 32, 32), dtype=torch.uint8, generator=gen)
    step, _ = project_stepper("rotation", pixels, torch.zeros(images, dtype=torch.int64), device, batch_size)
    steps = max(1, images // min(batch_size, images))
    _timed(step, steps, device)
    times = [4 * images / _timed(step, steps, device) for _ in range(repeats)]
    return statistics.median(times), times


def tsne_compare(n: int = 10_000, dim: int = 128, seed: int = 0, repeats: int = 1,
                 log: Callable[[str], None] = print) -> dict:
    """t-SNE of the same n x dim points (10 Gaussian clusters): ssl_core.projection (openTSNE, FFT
    gradients, PCA to 50 dims first) against scikit-learn's TSNE (Barnes-Hut), same perplexity and
    number of iterations and threads (two from 10,000 points). Also the 5-NN accuracy of each map on the cluster
    labels, so a faster map is not a worse one. With `repeats` > 1 the two alternate and the
    medians are reported (the machine's load then hits both alike)."""
    from sklearn.datasets import make_blobs
    from sklearn.manifold import TSNE
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    from . import projection

    x, y = make_blobs(n_samples=n, n_features=dim, centers=10, cluster_std=4.0, random_state=seed)
    x = x.astype(np.float32)

    def knn(m: np.ndarray) -> float:
        return float(cross_val_score(KNeighborsClassifier(5), m, y, cv=3).mean())

    ours_s, theirs_s = [], []
    for r in range(repeats):
        start = time.perf_counter()
        ours = projection.tsne_map(x, key=None)
        ours_s.append(time.perf_counter() - start)
        log(f"  round {r + 1}/{repeats}: openTSNE (ssl_core.projection) {ours_s[-1]:.1f} s")
        start = time.perf_counter()
        theirs = TSNE(2, perplexity=projection.PERPLEXITY, max_iter=projection.TSNE_ITERATIONS, init="pca",
                      random_state=seed, n_jobs=projection.tsne_threads(n)).fit_transform(x)
        theirs_s.append(time.perf_counter() - start)
        log(f"  round {r + 1}/{repeats}: scikit-learn TSNE {theirs_s[-1]:.1f} s")
    t_ours, t_sk = statistics.median(ours_s), statistics.median(theirs_s)
    return {"n": n, "dim": dim, "opentsne_s": t_ours, "sklearn_s": t_sk, "ratio": t_ours / t_sk,
            "opentsne_knn": knn(ours), "sklearn_knn": knn(theirs)}


# ------------------------------------------------------------------------------------------ CLI
def comma_list(allowed: tuple[str, ...], both: bool = False) -> Callable[[str], list[str]]:
    """An argparse type: comma-separated names from `allowed` (with `both`, the word "both" is all of
    them), so a misspelt one is refused at once instead of being run under its wrong name."""
    def parse(text: str) -> list[str]:
        names = list(allowed) if both and text == "both" else [n.strip() for n in text.split(",") if n.strip()]
        wrong = [n for n in names if n not in allowed]
        if wrong or not names:
            raise argparse.ArgumentTypeError(f"{', '.join(wrong) or 'nothing'}: choose from {', '.join(allowed)}"
                                             + (" or both" if both else ""))
        return names
    return parse


def bench_command(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads or torch.get_num_threads())
    try:
        device = resolve_device(args.device)
    except RuntimeError as exc:
        print(f"error: {exc}")
        return 2
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device.type}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""), flush=True)
    if args.tsne:
        r = tsne_compare(args.tsne_points, repeats=args.repeats or 1)
        print(f"tsne {r['n']}x{r['dim']}: openTSNE {r['opentsne_s']:.1f} s (5-NN {r['opentsne_knn']:.3f}), "
              f"scikit-learn {r['sklearn_s']:.1f} s (5-NN {r['sklearn_knn']:.3f}), ratio {r['ratio']:.2f}")
        return 0
    if args.to_accuracy:
        from . import time_to_accuracy as tta
        from .speed import cpu_model

        print(f"CPU: {cpu_model()}", flush=True)
        results = tta.run(args.tasks, args.recipes, args.data_dir, args.minutes, args.precision,
                          log=lambda s: print(s, flush=True), dataset=args.dataset, image_size=args.image_size,
                          width=args.width, stem_stride=args.stem_stride, per_class=args.per_class, depth=args.depth,
                          batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                          label_smoothing=args.label_smoothing)
        print("\n".join(r.line() for r in results))
        return 0
    if args.epoch:
        median, times = rotation_epoch_seconds(device, args.epoch_images, args.batch_size or 1024)
        print(f"rotation epoch {device.type}: {args.epoch_images} images x 4 rotations in {median:.2f} s "
              f"(median of {', '.join(f'{t:.2f}' for t in times)}; batch {args.batch_size or 1024})")
        return 0
    tasks = [args.task] if args.task else list(BENCH_TASKS)
    results = []
    with tempfile.TemporaryDirectory(prefix="ssl-bench-") as tmp:
        root = cifar_files.write_fake(tmp, per_batch=max(1, args.images // 5))
        print(f"synthetic CIFAR-10 in {root}: {5 * max(1, args.images // 5)} training images", flush=True)
        for task in tasks:
            c = compare(task, device, root, args.steps, args.repeats or 7, args.batch_size,
                        log=lambda s: print(s, flush=True))
            print(f"  project: {c.project_setup}\n  seed: {c.seed_setup}", flush=True)
            results.append(c)
    for c in results:
        print(c.line())
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    b = subparsers.add_parser("bench", help="time the seed's pipeline against the project's training step",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("--task", choices=BENCH_TASKS, help="one task (default: both)")
    b.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="default cpu; cuda needs a GPU")
    b.add_argument("--steps", type=int, default=20, help="timed steps per round, per pipeline")
    b.add_argument("--repeats", type=int, help="timed rounds, medians reported (default 7; 1 with --tsne)")
    b.add_argument("--images", type=int, default=10_000, help="synthetic training images")
    b.add_argument("--batch-size", type=int, help="project batch (source images); default: the task's training default")
    b.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    b.add_argument("--tsne", action="store_true", help="instead: t-SNE of 10,000 x 128 points, openTSNE vs scikit-learn")
    b.add_argument("--tsne-points", type=int, default=10_000)
    b.add_argument("--epoch", action="store_true", help="instead: seconds for one full rotation epoch (see bench/gpu.sh)")
    b.add_argument("--epoch-images", type=int, default=50_000)
    b.add_argument("--to-accuracy", action="store_true",
                   help="instead: CIFAR-10 minutes to each task's target, the project's recipe beside the seed's")
    b.add_argument("--data-dir", help="--to-accuracy: the CIFAR-10 root (default: where the app keeps it), or the photo folder")
    b.add_argument("--dataset", choices=("cifar10", "folder"), default="cifar10",
                   help="--to-accuracy: CIFAR-10, or a folder of photos (the Tiny ImageNet copy; photo targets)")
    b.add_argument("--image-size", type=int, help="--to-accuracy: pixels a side (default 32)")
    b.add_argument("--width", type=int, help="--to-accuracy: encoder width (default: the recipe's)")
    b.add_argument("--stem-stride", type=int, choices=(1, 2), help="--to-accuracy: convnet's first-conv stride")
    b.add_argument("--depth", type=int, choices=(1, 2), help="--to-accuracy: convnet's convs in each of its last two stages")
    b.add_argument("--per-class", type=int, help="--to-accuracy: siamese batches in runs of this many images of a class")
    b.add_argument("--lr", type=float, help="--to-accuracy: peak learning rate (default: the recipe's)")
    b.add_argument("--weight-decay", type=float, help="--to-accuracy: weight decay (default: the recipe's)")
    b.add_argument("--label-smoothing", type=float, help="--to-accuracy: rotation's label smoothing (default: the recipe's)")
    b.add_argument("--tasks", type=comma_list(("rotation", "simclr", "siamese")), default="rotation,simclr,siamese",
                   help="--to-accuracy: comma-separated tasks")
    b.add_argument("--recipes", type=comma_list(("project", "seed"), both=True), default="both",
                   help="--to-accuracy: project, seed, or both (project,seed)")
    b.add_argument("--minutes", type=float, help="--to-accuracy: budget per run (default: per task, see --help)")
    b.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    b.set_defaults(func=bench_command)
