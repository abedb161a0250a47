"""What the app asks of a trained checkpoint: the rotation of an upload, the distance of a pair.

Every picture goes through `model_input`, which prepares it as the checkpoint's training data
was: a digits model gets the digit redrawn dark-on-light and framed like the set (images.as_digit),
a photo model gets the photo made square by `PHOTO_FIT` (measured on photos outside CIFAR-10,
docs/reliability.md), then both go through `images.to_model_image` as the training data did.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from PIL import Image

from .augment import all_rotations, normalize
from .checkpoints import Checkpoint
from .evaluate import embed, vote_over_turns
from .images import ImageSource, as_digit, open_image, to_model_image
from .models import ModelArgs, SSLModel

PHOTO_FIT = "squash"  # how a non-square photo becomes square for a photo model (images.fit_square)

ANGLES = ("0°", "90°", "180°", "270°")  # label k = k quarter-turns counter-clockwise
DISPLAY_SIZE = 256  # longest side of the pictures shown back to the user


def angle_name(k: int) -> str:
    return ANGLES[k % 4]


@dataclass
class RotationGuess:
    turn: int  # how many quarter-turns counter-clockwise the input was turned before asking
    predicted: int  # the model's answer, in quarter-turns
    confidence: float  # probability of that answer
    image: torch.Tensor  # uint8 (3,S,S): what the model saw
    consistent: bool  # the answer follows the turn: predicted == (answer for the upload + turn) % 4


@dataclass
class RotationPrediction:
    # "0°".."270°" -> probability that the upload is turned so far: the vote over its four turns
    # (evaluate.vote_over_turns), measured better than one view (card: rotation_accuracy_vote)
    probabilities: dict[str, float]
    k: int  # most likely quarter-turns the upload is away from upright
    model_input: torch.Tensor  # uint8 (3,S,S)
    upright: Image.Image  # the upload (display size) turned back by -k quarter-turns
    guesses: list[RotationGuess]  # the upload turned by 0..3 more quarter-turns, and what the model says
    single: dict[str, float]  # the upload's own view alone, before the vote

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


def model_input(ckpt: Checkpoint, source: ImageSource) -> tuple[Image.Image, torch.Tensor]:
    """The picture as displayed (EXIF applied) and the uint8 (3,S,S) input for this checkpoint, S
    the image size it was trained at."""
    picture, size = open_image(source), ckpt.model.args.image_size
    if ckpt.card.get("dataset") == "digits":
        return picture, to_model_image(as_digit(picture, size), size=size)
    return picture, to_model_image(picture, fit=PHOTO_FIT, size=size)


@torch.no_grad()
def predict_rotation(ckpt: Checkpoint, source: ImageSource) -> RotationPrediction:
    """How far the picture is turned from upright, by a rotation checkpoint. Raises ImageError."""
    model = ckpt.model
    if model.args.task != "rotation":
        raise ValueError(f"predict_rotation needs a rotation model, not a {model.args.task} model.")
    picture, x = model_input(ckpt, source)
    # One batch of the four turns: the vote over them answers for the upload, and each row shows
    # whether the model follows when the same picture is turned further.
    rotated, _ = all_rotations(x.unsqueeze(0))
    device = next(model.parameters()).device
    probs = torch.softmax(model(normalize(rotated.to(device))).float(), dim=1).cpu()
    voted = vote_over_turns(probs.unsqueeze(0))[0]
    k = int(voted.argmax())
    guesses = [RotationGuess(j, int(probs[j].argmax()), float(probs[j].max()), rotated[j], int(probs[j].argmax()) == (k + j) % 4)
               for j in range(4)]
    # PIL's rotate(angle) is counter-clockwise too, so turning by -90k degrees undoes label k.
    upright = _display(picture).rotate(-90 * k, expand=True)
    return RotationPrediction({a: float(p) for a, p in zip(ANGLES, voted)}, k, x, upright, guesses,
                              {a: float(p) for a, p in zip(ANGLES, probs[0])})


@torch.no_grad()
def embed_image(ckpt: Checkpoint, source: ImageSource) -> torch.Tensor:
    """One picture -> its embedding (D,), as `evaluate.embed` computes them for the test split."""
    return embed(ckpt.model, model_input(ckpt, source)[1].unsqueeze(0))[0]


@dataclass
class PairResult:
    distance: float  # Euclidean distance of the two embeddings
    threshold: Optional[float]  # calibrated "same class" cut-off from the card; None if the model has none
    same: Optional[bool]  # distance <= threshold, or None without a threshold
    emb_a: torch.Tensor
    emb_b: torch.Tensor


def compare_pair(ckpt: Checkpoint, a: ImageSource, b: ImageSource) -> PairResult:
    """Distance between two pictures in the checkpoint's embedding, and the verdict at the
    same/different threshold calibrated for it (none for a rotation model)."""
    threshold = card_threshold(ckpt)
    ea, eb = embed_image(ckpt, a), embed_image(ckpt, b)
    d = float(torch.linalg.vector_norm(ea - eb))
    same = None if threshold is None else d <= threshold
    return PairResult(d, threshold, same, ea, eb)


def card_threshold(ckpt: Checkpoint) -> Optional[float]:
    t = ckpt.card.get("metrics", {}).get("threshold")
    return float(t) if isinstance(t, (int, float)) else None



def random_init_model(ckpt: Checkpoint) -> SSLModel:
    """The untrained model the run started from: same arguments and seed, as train() builds it."""
    seed = int(ckpt.card.get("config", {}).get("seed", 0))
    # fork_rng: seeding here must not disturb the global RNG a training thread may be using.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SSLModel(ModelArgs(**ckpt.card["model_args"]))
    return model.eval()


__all__ = [
    "ANGLES", "PHOTO_FIT", "PairResult", "RotationGuess", "RotationPrediction", "angle_name", "card_threshold",
    "compare_pair", "embed_image", "model_input", "predict_rotation", "random_init_model",
]
