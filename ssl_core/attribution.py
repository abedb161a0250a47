"""Where a model looks, as class-activation maps of its encoder: what drove a rotation answer, and
which regions of two pictures pull their embeddings together.

Two methods on each of the encoder's last two spatial stages (`METHODS`): Grad-CAM (Selvaraju et
al. 2017: each channel weighted by its mean gradient) and HiResCAM (Draelos & Carin 2020: gradient
times activation at each position; where average pooling and a linear layer follow, this is exactly
each position's share of the score). The score is the predicted turn's log-probability for a
rotation, and minus the embedding distance the Similarity tab reports for a pair.

Written on plain torch rather than taken from Captum or pytorch-grad-cam (README, "Where it looks":
they would add 77 MB and 245 MB to the Space): the encoder's layers are run one by one
(`_stages`) instead of hooking them, since hooks on a model that serves many requests at once
would also fire for the other requests' passes. Which method a checkpoint's maps use is decided
by the deletion check in `faithfulness.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .augment import normalize
from .errors import UserError
from .models import SSLModel


class ExplainError(UserError, ValueError):
    """No map for this model: an encoder whose stages are not known, or no held-out images to check it on."""


@dataclass(frozen=True)
class Method:
    """One way to make a map: a method on one stage of the encoder."""

    kind: str  # "gradcam" or "hirescam"
    stage: int  # 0: the encoder's last stage with a spatial map; 1: the stage before it (twice as fine)

    @property
    def title(self) -> str:
        name = {"gradcam": "Grad-CAM", "hirescam": "HiResCAM"}[self.kind]
        return f"{name} on the encoder's {'last' if self.stage == 0 else 'second-to-last'} stage"


METHODS = tuple(Method(kind, stage) for stage in (0, 1) for kind in ("gradcam", "hirescam"))


def _layers(encoder: nn.Module) -> list[nn.Module]:
    """The encoder's body as layers run in order, so its stages' activations are taken without hooks."""
    body = encoder.conv
    if isinstance(body, nn.Sequential):  # SimpleCNN, convnet
        return list(body)
    if hasattr(body, "layer4"):  # torchvision's ResNet, as ResNet.forward runs it
        return [body.conv1, body.bn1, body.relu, body.maxpool, body.layer1, body.layer2, body.layer3, body.layer4,
                body.avgpool, nn.Flatten(1)]
    raise ExplainError(f"No maps for a {type(encoder).__name__} encoder: its stages are not known.")


def _stages(model: SSLModel, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Encoder features of uint8 `images`, and the last activation at each spatial size, last stage first."""
    h, by_size = normalize(images.to(next(model.parameters()).device)), {}
    for layer in _layers(model.encoder):
        h = layer(h)
        if h.dim() == 4 and h.shape[-1] > 1:
            by_size[h.shape[-1]] = h  # a later layer at the same size ends that stage
    return model.encoder.fc(h), [by_size[s] for s in sorted(by_size)]


def _cam(method: Method, activation: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """(B,C,h,w) activation and its gradient -> (B,h,w) map; only what raises the score counts."""
    if method.kind == "gradcam":
        gradient = gradient.mean(dim=(2, 3), keepdim=True)
    return F.relu((gradient * activation).sum(1)).float().detach().cpu()


def _stage_of(method: Method, acts: list[torch.Tensor]) -> int:
    return min(method.stage, len(acts) - 1)  # an encoder with one spatial stage offers it to both


def _backward(score: torch.Tensor, acts: list[torch.Tensor], methods: tuple[Method, ...]) -> dict[Method, torch.Tensor]:
    """Every method's maps from one backward pass (the methods differ only in how they read it)."""
    stages = sorted({_stage_of(m, acts) for m in methods})
    grads = dict(zip(stages, torch.autograd.grad(score.sum(), [acts[s] for s in stages])))
    return {m: _cam(m, acts[_stage_of(m, acts)], grads[_stage_of(m, acts)]) for m in methods}


def rotation_maps(model: SSLModel, images: torch.Tensor, methods: tuple[Method, ...] = METHODS
                  ) -> tuple[dict[Method, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Coarse maps (B,h,w) of what drove each predicted turn, by method; the turns (B,) and their probabilities (B,)."""
    with torch.enable_grad():
        feats, acts = _stages(model, images)
        logp = torch.log_softmax(model.head(feats).float(), dim=1)
        predicted = logp.argmax(1)
        chosen = logp.gather(1, predicted[:, None]).squeeze(1)
        cams = _backward(chosen, acts, methods)
    return cams, predicted.cpu(), chosen.detach().exp().cpu()


def distance(ea: torch.Tensor, eb: torch.Tensor) -> torch.Tensor:
    """Euclidean distance of embeddings row by row, as the Similarity tab reports it."""
    # The tiny term keeps the gradient finite for a picture compared with itself (distance 0).
    return torch.sqrt(((ea.float() - eb.float()) ** 2).sum(1) + 1e-12)


def pair_maps(model: SSLModel, a: torch.Tensor, b: torch.Tensor, methods: tuple[Method, ...] = METHODS
              ) -> tuple[dict[Method, tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
    """Coarse maps (B,h,w) of the regions of `a` and of `b` that pull each pair's embeddings together,
    by method, and the pairs' distances (B,). One pass over both pictures."""
    with torch.enable_grad():
        feats, acts = _stages(model, torch.cat([a, b]))
        emb = model.embed_features(feats)
        apart = distance(emb[: len(a)], emb[len(a):])
        cams = _backward(-apart, acts, methods)
    return {m: (c[: len(a)], c[len(a):]) for m, c in cams.items()}, apart.detach().cpu()


def fine(cams: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Coarse maps (B,h,w) at `size` pixels (bilinear), each scaled to [0, 1] by its own peak."""
    size = (size, size) if isinstance(size, int) else size
    up = F.interpolate(cams[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0].clamp_min(0)
    peak = up.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    return up / peak


__all__ = ["ExplainError", "METHODS", "Method", "distance", "fine", "pair_maps", "rotation_maps"]
