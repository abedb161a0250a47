"""Encoders with a head per task.

Every task trains the same kind of encoder, so every checkpoint yields an embedding for kNN, pair
distances and t-SNE, and results compare across tasks. Three encoders (`ARCHS`):

- `simple`: the seed's SimpleCNN (conv 32 -> conv 64 -> Linear 128), the digits models' encoder.
- `convnet`: four conv-BatchNorm-ReLU stages with pooling and a global average pool, the CIFAR-10
  models' encoder; BatchNorm lets it train at a high learning rate, which a short CPU budget needs.
- `resnet18`: ResNet-18 with the CIFAR stem, the field's reference encoder, for training on GPUs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class ModelArgs:
    """Everything needed to rebuild a model from its checkpoint card."""

    task: str  # rotation | siamese | simclr: which head, and which vector is "the embedding"
    arch: str = "simple"  # encoder: one of ARCHS (cards written before there was a choice are "simple")
    width: int = 32  # channels of the first conv; each later stage doubles them (the seed: 32, 64)
    feature_dim: int = 128  # encoder output (the seed's fc width)
    out_dim: int = 128  # head output: 4 for rotation, embedding size otherwise
    # "linear", or "mlp": Linear-BatchNorm-ReLU-Linear, the projector of SimCLR v2 / SupCon. NT-Xent
    # then shapes the projector's output, and the features before it stay general (linear probe, kNN).
    head: str = "linear"
    # Siamese only: distances between L2-normalised head outputs (trained with the batch-wide,
    # cosine NT-Xent) instead of raw ones (trained with Hadsell's margin). Old cards: raw.
    unit_embedding: bool = False
    image_size: int = 32  # input side in pixels (cards written before it was a setting: 32)
    # convnet: stride of the first conv. 2 halves a large input before the first stage, so a 64-px
    # photo costs about what a 32-px one does at 1 (docs/benchmarks.md, "Image size").
    stem_stride: int = 1
    # convnet: 3x3 convs in each of the last two stages (8 and 4 px at 32-px input). 2 deepens the
    # network where its maps are smallest, so a layer costs least there (cards before it: 1).
    depth: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


class Encoder(nn.Module):
    """The seed's SimpleCNN body: two conv+ReLU+pool stages, then Linear(64*8*8, 128) + ReLU (at
    32 px; the Linear layer grows with the image: it sees every position of the last map)."""

    def __init__(self, width: int = 32, feature_dim: int = 128, image_size: int = 32) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        side = image_size // 4
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * side * side, feature_dim), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x))


def _conv_bn(c_in: int, c_out: int) -> list[nn.Module]:
    # No conv bias: BatchNorm's shift replaces it.
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


def _more_convs(channels: int, depth: int) -> list[nn.Module]:
    return [layer for _ in range(depth - 1) for layer in _conv_bn(channels, channels)]


class ConvNetEncoder(nn.Module):
    """Four conv-BN-ReLU stages (width, 2w, 4w, 8w channels at 32, 16, 8, 4 pixels), global average
    pool, then Linear(8w, feature_dim) + ReLU, or nothing when `feature_dim` is 8w: the pooled
    channels themselves, which probe better after SimCLR than a ReLU layer on top of them. The
    average pool makes its features independent of where in the picture an object sits, and of
    the picture's size. `stem_stride` 2 makes the first conv strided: a 64-px input then reaches the
    second stage at 16 px, as a 32-px one does, for a little more than a 32-px input's cost."""

    def __init__(self, width: int = 24, feature_dim: int = 128, stem_stride: int = 1, depth: int = 1) -> None:
        super().__init__()
        w = width
        stem = nn.Conv2d(3, w, 3, stride=stem_stride, padding=1, bias=False)
        self.conv = nn.Sequential(
            stem, nn.BatchNorm2d(w), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            *_conv_bn(w, 2 * w), nn.MaxPool2d(2),
            *_conv_bn(2 * w, 4 * w), *_more_convs(4 * w, depth), nn.MaxPool2d(2),
            *_conv_bn(4 * w, 8 * w), *_more_convs(8 * w, depth), nn.AdaptiveAvgPool2d(1),
        )
        pooled = feature_dim == 8 * w
        self.fc = nn.Flatten() if pooled else nn.Sequential(nn.Flatten(), nn.Linear(8 * w, feature_dim), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x))


class ResNet18Encoder(nn.Module):
    """torchvision's ResNet-18 with the CIFAR stem the SSL literature uses for 32x32 images (SimCLR's
    CIFAR-10 runs, lightly, solo-learn): a 3x3 stride-1 first conv and no max-pool, so the last stage
    still sees 4x4 maps instead of 1x1. Features are the 512 average-pooled channels, followed by
    Linear + ReLU only when another `feature_dim` is asked for. About 11M parameters and 0.56 GFLOPs
    per image: for GPUs; a CIFAR-10 SimCLR epoch takes about 70 minutes on two CPU cores."""

    def __init__(self, width: int = 64, feature_dim: int = 512) -> None:
        super().__init__()
        from torchvision.models import resnet18

        if width != 64:
            raise ValueError(f"resnet18 has 64 channels in its first stage; got width {width}")
        net = resnet18(weights=None)
        net.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
        net.fc = nn.Identity()  # type: ignore[assignment]
        self.conv = net
        self.fc = nn.Identity() if feature_dim == 512 else nn.Sequential(nn.Linear(512, feature_dim), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x))


PROJECTOR_WIDTH = 512  # SimCLR's CIFAR projector is 2048 wide for ResNet-50's 2048 features; ours see 192


def make_head(kind: str, feature_dim: int, out_dim: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(feature_dim, out_dim)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(feature_dim, PROJECTOR_WIDTH, bias=False), nn.BatchNorm1d(PROJECTOR_WIDTH),
                             nn.ReLU(inplace=True), nn.Linear(PROJECTOR_WIDTH, out_dim))
    raise ValueError(f"unknown head {kind!r}; choose linear or mlp")


ARCHS = {"simple": Encoder, "convnet": ConvNetEncoder, "resnet18": ResNet18Encoder}


def make_encoder(args: ModelArgs) -> nn.Module:
    """The encoder `args` names, with the arguments only its kind takes."""
    if (args.stem_stride != 1 or args.depth != 1) and args.arch != "convnet":
        raise ValueError(f"a strided stem and depth are convnet options; {args.arch} has its own layers")
    if args.arch == "simple":
        return Encoder(args.width, args.feature_dim, args.image_size)
    if args.arch == "convnet":
        return ConvNetEncoder(args.width, args.feature_dim, args.stem_stride, args.depth)
    return ARCHS[args.arch](args.width, args.feature_dim)
ARCH_TITLES = {"simple": "SimpleCNN", "convnet": "4-stage ConvNet", "resnet18": "ResNet-18"}  # for people


class SSLModel(nn.Module):
    """Encoder + head. `forward` is what the task's loss sees; `embed` is the vector users explore.

    - rotation: head = 4 logits; embedding = encoder features.
    - siamese: head = the seed's Linear(128, 128); embedding = head output (distances are trained there).
    - simclr: head = projection Linear(128, 128) used only by NT-Xent; embedding = L2-normalised
      encoder features, as SimCLR found the pre-projection representation transfers best.
    """

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.args = args
        if args.arch not in ARCHS:
            raise ValueError(f"unknown encoder {args.arch!r}; choose one of {', '.join(ARCHS)}")
        self.encoder = make_encoder(args)
        self.head = make_head(args.head, args.feature_dim, args.out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed_features(self.encoder(x))

    def embed_features(self, features: torch.Tensor) -> torch.Tensor:
        """The embedding from encoder features, so a probe that needs both runs the encoder once."""
        if self.args.task == "siamese":
            out = self.head(features)
            return F.normalize(out, dim=1) if self.args.unit_embedding else out
        if self.args.task == "simclr":
            return F.normalize(features, dim=1)
        return features


DEFAULT_WIDTH = {"simple": 32, "convnet": 24, "resnet18": 64}  # convnet at 24 costs a CPU about what SimpleCNN at 32 does
DEFAULT_FEATURES = {"simple": 128, "convnet": 128, "resnet18": 512}  # ResNet-18's pooled channels, as published


def build_model(task: str, arch: str = "simple", **overrides: int | str | bool) -> SSLModel:
    out_dim = 4 if task == "rotation" else 128
    overrides.setdefault("width", DEFAULT_WIDTH.get(arch, 32))
    overrides.setdefault("feature_dim", DEFAULT_FEATURES.get(arch, 128))
    return SSLModel(ModelArgs(task=task, arch=arch, out_dim=overrides.pop("out_dim", out_dim), **overrides))
