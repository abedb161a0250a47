"""The seed's SimpleCNN as a shared encoder, with a head per task.

Every task trains the same encoder (conv 32 -> conv 64 -> 128-d), so every checkpoint yields an
embedding for kNN, pair distances and t-SNE, and results compare across tasks.
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
    width: int = 32  # channels of the first conv; the second has twice as many (the seed: 32, 64)
    feature_dim: int = 128  # encoder output (the seed's fc width)
    out_dim: int = 128  # head output: 4 for rotation, embedding size otherwise

    def to_dict(self) -> dict:
        return asdict(self)


class Encoder(nn.Module):
    """The seed's SimpleCNN body: two conv+ReLU+pool stages, then Linear(64*8*8, 128) + ReLU."""

    def __init__(self, width: int = 32, feature_dim: int = 128) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 8 * 8, feature_dim), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x))


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
        self.encoder = Encoder(args.width, args.feature_dim)
        self.head = nn.Linear(args.feature_dim, args.out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)
        if self.args.task == "siamese":
            return self.head(features)
        if self.args.task == "simclr":
            return F.normalize(features, dim=1)
        return features


def build_model(task: str, **overrides: int) -> SSLModel:
    out_dim = 4 if task == "rotation" else 128
    return SSLModel(ModelArgs(task=task, out_dim=overrides.pop("out_dim", out_dim), **overrides))
