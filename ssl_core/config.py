"""What a training run is: `TrainConfig`, its fields filled from the recipes and checked with
messages a user can act on. The engine (train.py) runs it; the card records it."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Optional

from . import TASKS
from .data import MAX_FOLDER_IMAGES
from .models import ARCHS, DEFAULT_WIDTH, SSLModel, build_model
from .recipes import recipe_for


@dataclass
class TrainConfig:
    task: str = "rotation"  # rotation | siamese | simclr
    dataset: str = "digits"  # digits | cifar10 | folder
    data_dir: Optional[str] = None  # CIFAR-10 root or the image folder
    image_size: int = 32  # pixels a side the images are resized to (data, model, frames, uploads); the card keeps it
    arch: Optional[str] = None  # encoder, one of models.ARCHS; None (like every None below) = the recipe's
    epochs: Optional[int] = None  # passes over the training split
    batch_size: Optional[int] = None  # source images per step (rotation sees 4x as many rotated)
    lr: Optional[float] = None  # peak learning rate
    optimizer: Optional[str] = None  # adam (AdamW) | sgd (momentum 0.9, Nesterov)
    weight_decay: Optional[float] = None  # decoupled (AdamW) for adam, L2 for sgd; 0 for digits
    warmup: Optional[float] = None  # share of steps with a linear warm-up before the cosine decay
    max_shift: Optional[float] = None  # random shift, as a fraction of the side (rotation inputs, siamese pairs)
    flip: Optional[bool] = None  # random left-right flips: on for photos, off for digits (a mirrored 2 is no 2)
    crop_min_scale: Optional[float] = None  # smallest area share of a SimCLR random resized crop
    width: Optional[int] = None  # encoder channels in its first stage; None = the arch's (models.DEFAULT_WIDTH)
    stem_stride: Optional[int] = None  # convnet: 2 = a strided first conv (large images at a small image's cost)
    depth: Optional[int] = None  # convnet: convs in each of the last two stages (2: deeper where it costs least)
    pooled: Optional[bool] = None  # convnet: the pooled channels are the features, no Linear+ReLU on top
    head: Optional[str] = None  # on the features: linear | mlp (projector Linear-BN-ReLU-Linear)
    label_smoothing: Optional[float] = None  # rotation: cross-entropy targets smoothed by this much
    turns: Optional[int] = None  # rotation: 4 = each image in all four turns (RotNet) | 1 = one random turn (the seed)
    pair_loss: Optional[str] = None  # siamese: supcon (every pair in the batch) | hadsell (sampled pairs, margin)
    per_class: Optional[int] = None  # siamese: batches in runs of this many images of one class (0: drawn at random)
    schedule: Optional[str] = None  # cosine (warm-up, then cosine decay to 0) | constant (the seed's)
    seed: int = 0  # model init, split, shuffling and augmentation: same seed, same run on the CPU
    device: str = "auto"  # auto picks CUDA when present
    precision: str = "auto"  # auto | fp32 | bf16: auto = bf16 on CUDA and on CPUs with bf16 units (AMX, AVX512-BF16)
    test_fraction: float = 0.2  # held out when the data set has no test split of its own
    margin: float = 1.0  # contrastive loss margin (siamese)
    temperature: Optional[float] = None  # NT-Xent temperature (simclr; siamese with pair_loss supcon)
    positive_fraction: float = 0.5  # share of same-class pairs (siamese)
    max_train_images: Optional[int] = None  # cap the training split (quick demos on big sets)
    # Refuse a folder of more images than this (the app's guard against huge uploads); None: no cap (the CLI).
    max_folder_images: Optional[int] = MAX_FOLDER_IMAGES
    # A wall-clock budget for train() from its first step to its last metric: when set it replaces
    # `epochs` (the schedule is fitted to the steps that fit, the epochs run are then recorded here).
    minutes: Optional[float] = None
    # Set by the engine under torchrun (ssl_core/distributed.py), recorded on the card: the number of
    # processes that shared each step, and how they talked (gloo on CPUs, nccl on GPUs).
    world_size: int = 1
    backend: str = "none"

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}; got {self.task!r}")
        for name, value in recipe_for(self.dataset, self.task).items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        validate(self)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# A minutes budget below 0.1 leaves no time to measure the pace; above 720 (12 h) it is surely a typo.
LIMITS = {"image_size": (8, 256), "width": (4, 256), "epochs": (1, 500), "batch_size": (2, 4096), "lr": (1e-6, 1.0), "minutes": (0.1, 720.0),
          "weight_decay": (0.0, 0.1), "label_smoothing": (0.0, 0.5)}


def validate(cfg: TrainConfig) -> None:
    """Range checks with messages a user can act on (the app shows them as they are)."""
    for name, (lo, hi) in LIMITS.items():
        value = getattr(cfg, name)
        if name in ("minutes", "width") and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (lo <= value <= hi) or (
            isinstance(value, float) and math.isnan(value)
        ):
            raise ValueError(f"{name} must be between {lo:g} and {hi:g}; got {value!r}")
    # A slider or a JSON client can send 2.5; range() and slicing would fail later, inside the thread.
    for name in ("epochs", "batch_size", "width", "image_size"):
        if getattr(cfg, name) is None:
            continue
        if int(getattr(cfg, name)) != getattr(cfg, name):
            raise ValueError(f"{name} must be a whole number; got {getattr(cfg, name)!r}")
        setattr(cfg, name, int(getattr(cfg, name)))
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise ValueError("device must be auto, cpu or cuda")
    if cfg.precision not in ("auto", "fp32", "bf16"):
        raise ValueError("precision must be auto, fp32 or bf16")
    if cfg.arch not in ARCHS:
        raise ValueError(f"arch must be one of {', '.join(ARCHS)}; got {cfg.arch!r}")
    if cfg.optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be adam or sgd; got {cfg.optimizer!r}")
    for name, allowed in CHOICES.items():
        if getattr(cfg, name) not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(map(str, allowed))}; got {getattr(cfg, name)!r}")
    if cfg.arch == "simple" and cfg.image_size % 4:
        raise ValueError(f"the simple encoder pools twice, so image_size must be a multiple of 4; got {cfg.image_size}")
    if not isinstance(cfg.per_class, int) or isinstance(cfg.per_class, bool) or not 0 <= cfg.per_class <= cfg.batch_size:
        raise ValueError(f"per_class must be a whole number from 0 to the batch size ({cfg.batch_size}); got {cfg.per_class!r}")
    if cfg.per_class and cfg.task != "siamese":
        raise ValueError("per_class groups a batch by class: only the siamese task learns from classes")
    if cfg.stem_stride != 1 and cfg.arch != "convnet":
        raise ValueError(f"stem_stride 2 is a convnet option; the {cfg.arch} encoder has its own stem")
    if cfg.depth != 1 and cfg.arch != "convnet":
        raise ValueError(f"depth 2 is a convnet option; the {cfg.arch} encoder has its own layers")


CHOICES = {"stem_stride": (1, 2), "depth": (1, 2), "head": ("linear", "mlp"), "turns": (1, 4), "pair_loss": ("supcon", "hadsell"), "schedule": ("cosine", "constant")}


def model_for(cfg: TrainConfig) -> SSLModel:
    """The untrained model `cfg` describes (seeded by the caller): encoder, features and head."""
    width = cfg.width or DEFAULT_WIDTH[cfg.arch]
    extra = {"feature_dim": 8 * width} if cfg.pooled and cfg.arch == "convnet" else {}
    return build_model(cfg.task, arch=cfg.arch, width=width, head=cfg.head, image_size=cfg.image_size,
                       stem_stride=cfg.stem_stride, depth=cfg.depth, unit_embedding=cfg.task == "siamese" and cfg.pair_loss == "supcon", **extra)


# The Train form's image sizes. 64 px takes a strided first convolution, so a photo costs what a
# 32-px one does: the encoder the photo models train with (docs/benchmarks.md, "image size").
FORM_IMAGE_SIZES = (32, 64)
PHOTO_FORM_DATASETS = ("folder", "zip")  # a user's own photos: the only data with pixels for more than 32 px


def form_size_settings(dataset: str, image_size: object = None) -> dict:
    """TrainConfig fields for the form's image size on `dataset` (digits, cifar10, folder, zip).
    Digits are 8 px and CIFAR-10 32 px, so only photo folders have the pixels for more."""
    size = int(image_size) if image_size not in (None, "") else FORM_IMAGE_SIZES[0]
    if size not in FORM_IMAGE_SIZES:
        raise ValueError(f"image size must be one of {', '.join(map(str, FORM_IMAGE_SIZES))} px; got {image_size!r}")
    if size != FORM_IMAGE_SIZES[0] and dataset not in PHOTO_FORM_DATASETS:
        raise ValueError(f"{size} px is for folders of photos: {dataset} images are smaller, so they would only be enlarged")
    return {"image_size": size, "stem_stride": 2 if size >= 64 else None}
