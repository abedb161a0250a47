"""What the app asks of a trained model: rotation of an upload, distance of a pair, nearest images.

Every picture goes through `images.to_model_image`, exactly as the training data did. Reference
images (for nearest neighbours and maps) are the held-out test split of the checkpoint's own
dataset, rebuilt from its card with the same seed, so nothing shown was trained on.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Optional

import torch
from PIL import Image

from .augment import all_rotations, normalize
from .checkpoints import Checkpoint
from .data import ImageSet, load_dataset, split
from .evaluate import embed
from .images import ImageSource, open_image, to_model_image
from .models import ModelArgs, SSLModel

ANGLES = ("0°", "90°", "180°", "270°")  # label k = k quarter-turns counter-clockwise
DISPLAY_SIZE = 256  # longest side of the pictures shown back to the user
MAX_MAP_POINTS = 2000  # t-SNE of the CIFAR-10 test split (12,000) would take minutes; a fixed sample suffices


def angle_name(k: int) -> str:
    return ANGLES[k % 4]


@dataclass
class RotationGuess:
    turn: int  # how many quarter-turns counter-clockwise the input was turned before asking
    predicted: int  # the model's answer, in quarter-turns
    confidence: float  # probability of that answer
    image: torch.Tensor  # uint8 (3,32,32): what the model saw


@dataclass
class RotationPrediction:
    probabilities: dict[str, float]  # "0°".."270°" -> probability, for the image as uploaded
    k: int  # most likely quarter-turns the upload is away from upright
    model_input: torch.Tensor  # uint8 (3,32,32)
    upright: Image.Image  # the upload (display size) turned back by -k quarter-turns
    guesses: list[RotationGuess]  # the upload turned by 0..3 more quarter-turns, and what the model says

    @property
    def angle(self) -> str:
        return angle_name(self.k)


def _display(img: Image.Image) -> Image.Image:
    img = img.copy()
    img.thumbnail((DISPLAY_SIZE, DISPLAY_SIZE), Image.Resampling.LANCZOS)
    if max(img.size) < DISPLAY_SIZE:  # tiny inputs (8x8 digits, 32x32) are enlarged crisply
        scale = max(1, DISPLAY_SIZE // max(img.size))
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    return img


@torch.no_grad()
def predict_rotation(model: SSLModel, source: ImageSource) -> RotationPrediction:
    """How far the picture is turned from upright, by a rotation-task model. Raises ImageError."""
    if model.args.task != "rotation":
        raise ValueError(f"predict_rotation needs a rotation model, not a {model.args.task} model.")
    picture = open_image(source)
    x = to_model_image(picture)
    # One batch of the four turns: the first row answers for the upload itself, the other three
    # show whether the model follows when the same picture is turned further.
    rotated, _ = all_rotations(x.unsqueeze(0))
    device = next(model.parameters()).device
    probs = torch.softmax(model(normalize(rotated.to(device))).float(), dim=1).cpu()
    k = int(probs[0].argmax())
    guesses = [RotationGuess(j, int(probs[j].argmax()), float(probs[j].max()), rotated[j]) for j in range(4)]
    # PIL's rotate(angle) is counter-clockwise too, so turning by -90k degrees undoes label k.
    upright = _display(picture).rotate(-90 * k, expand=True)
    return RotationPrediction({a: float(p) for a, p in zip(ANGLES, probs[0])}, k, x, upright, guesses)


@torch.no_grad()
def embed_image(model: SSLModel, source: ImageSource) -> torch.Tensor:
    """One picture -> its embedding (D,), as `evaluate.embed` computes them for the test split."""
    return embed(model, to_model_image(source).unsqueeze(0))[0]


@dataclass
class PairResult:
    distance: float  # Euclidean distance of the two embeddings
    threshold: Optional[float]  # calibrated "same class" cut-off from the card; None if the model has none
    same: Optional[bool]  # distance <= threshold, or None without a threshold
    emb_a: torch.Tensor
    emb_b: torch.Tensor


def compare_pair(model: SSLModel, a: ImageSource, b: ImageSource, threshold: Optional[float] = None) -> PairResult:
    """Distance between two pictures in the model's embedding, and the verdict at `threshold`."""
    ea, eb = embed_image(model, a), embed_image(model, b)
    d = float(torch.linalg.vector_norm(ea - eb))
    same = None if threshold is None else d <= threshold
    return PairResult(d, threshold, same, ea, eb)


def card_threshold(ckpt: Checkpoint) -> Optional[float]:
    t = ckpt.card.get("metrics", {}).get("threshold")
    return float(t) if isinstance(t, (int, float)) else None


# ------------------------------------------------------------------------- reference test split
@dataclass
class Reference:
    """The checkpoint's held-out images with their embeddings (trained and random-init)."""

    test: ImageSet
    embeddings: torch.Tensor  # (N, D) by the checkpoint's model
    random_embeddings: torch.Tensor  # (N, D) by an untrained model of the same shape and seed
    map_index: torch.Tensor  # indices into `test` used for maps (all, or a fixed sample)

    def class_name(self, i: int) -> str:
        if self.test.labels is None:
            return "unlabeled"
        label = int(self.test.labels[i])
        return self.test.class_names[label] if label < len(self.test.class_names) else str(label)


_REF_CACHE: dict[str, Reference] = {}
_REF_LOCK = threading.Lock()


def random_init_model(ckpt: Checkpoint) -> SSLModel:
    """The untrained model the run started from: same arguments and seed, as train() builds it."""
    seed = int(ckpt.card.get("config", {}).get("seed", 0))
    # fork_rng: seeding here must not disturb the global RNG a training thread may be using.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SSLModel(ModelArgs(**ckpt.card["model_args"]))
    return model.eval()


def test_split(ckpt: Checkpoint) -> ImageSet:
    """The held-out split of the checkpoint's dataset, exactly as its metrics were measured."""
    cfg = ckpt.card.get("config", {})
    data = load_dataset(cfg.get("dataset", ckpt.card["dataset"]), cfg.get("data_dir"))
    return split(data, float(cfg.get("test_fraction", 0.2)), int(cfg.get("seed", 0))).test


def reference(ckpt: Checkpoint, key: str) -> Reference:
    """Test split + embeddings for this checkpoint, computed once per `key` (weights hash).

    Raises DataError when the dataset is not on this machine (e.g. a folder since deleted).
    """
    with _REF_LOCK:
        if key in _REF_CACHE:
            return _REF_CACHE[key]
    test = test_split(ckpt)
    emb = embed(ckpt.model, test.images)
    rnd = embed(random_init_model(ckpt), test.images)
    n = len(test)
    index = torch.arange(n)
    if n > MAX_MAP_POINTS:
        index = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:MAX_MAP_POINTS].sort().values
    ref = Reference(test, emb, rnd, index)
    with _REF_LOCK:
        _REF_CACHE[key] = ref
    return ref


@dataclass
class Neighbour:
    index: int  # index in the test split
    class_name: str
    distance: float
    image: torch.Tensor  # uint8 (3,32,32)


def nearest(ref: Reference, emb: torch.Tensor, k: int = 5) -> list[Neighbour]:
    """The k held-out images closest to `emb` in the model's embedding."""
    d = torch.linalg.vector_norm(ref.embeddings - emb.unsqueeze(0), dim=1)
    order = torch.argsort(d)[:k]
    return [Neighbour(int(i), ref.class_name(int(i)), float(d[i]), ref.test.images[i]) for i in order]


__all__ = [
    "ANGLES", "Neighbour", "PairResult", "Reference", "RotationGuess", "RotationPrediction",
    "angle_name", "card_threshold", "compare_pair", "embed_image", "nearest", "predict_rotation",
    "random_init_model", "reference", "test_split",
]
