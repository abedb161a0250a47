"""Where it looks, for the app: heat maps over the pictures a visitor gives, and the numbers behind
them, for a rotation answer (the upload and each further quarter-turn) and for a pair.

The maps come from `attribution` (class-activation maps of the encoder), and are shown only for a
checkpoint whose maps pass the deletion check of `faithfulness`; otherwise the explanation carries
no pictures and says why, with the figures.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from . import faithfulness
from .attribution import ExplainError, fine, pair_maps, rotation_maps
from .faithfulness import TOP_FRACTION, Faithfulness
from .images import ImageSource
# _display: a picture at the size the app shows it (small ones enlarged crisply), as the upright answer is shown
from .inference import _display, angle_name, card_threshold, model_input
from .registry import LoadedModel, ModelError

HEAT_ALPHA = 0.5  # the map's weight where it is blended over the picture


# The "jet" colour scale Grad-CAM pictures use: blue (nothing) through green to red (the most).
_JET = np.array([[0, 0, 128], [0, 0, 255], [0, 255, 255], [255, 255, 0], [255, 0, 0], [128, 0, 0]], dtype=np.float32)
_JET_AT = np.array([0.0, 0.125, 0.375, 0.625, 0.875, 1.0])
LEGEND_PX = 40  # the colour bar above each map: a gallery writes its captions over a picture's bottom


def _colours(heat: np.ndarray) -> np.ndarray:
    return np.stack([np.interp(heat, _JET_AT, _JET[:, c]) for c in range(3)], axis=-1).astype(np.uint8)


def overlay(picture: Image.Image, heat: np.ndarray, legend: str) -> Image.Image:
    """`heat` (S,S in [0,1]) stretched over `picture`, blended, under a colour bar saying what it shows.
    Pictures are made with PIL and numpy: small single-threaded steps cost nothing on a busy server,
    where each small multi-threaded torch call waits for a second core."""
    w, h = picture.size
    stretched = np.asarray(Image.fromarray(heat.astype(np.float32), mode="F").resize((w, h), Image.Resampling.BILINEAR))
    out = Image.new("RGB", (w, h + LEGEND_PX), "white")
    out.paste(Image.blend(picture.convert("RGB"), Image.fromarray(_colours(stretched.clip(0, 1))), HEAT_ALPHA), (0, LEGEND_PX))
    font = ImageFont.load_default(size=13)
    draw = ImageDraw.Draw(out)
    low, high = draw.textlength("low", font=font), draw.textlength("high", font=font)
    bar = _colours(np.tile(np.linspace(0, 1, max(int(w - low - high - 12), 8)), (10, 1)))
    out.paste(Image.fromarray(bar), (int(low) + 6, 4))
    draw.text((2, 1), "low", fill="black", font=font)
    draw.text((w - high - 2, 1), "high", fill="black", font=font)
    draw.text((w / 2, 16), legend, fill="black", font=font, anchor="ma")
    return out


def _backdrop(model: LoadedModel, picture: Image.Image, seen: torch.Tensor, turn: int) -> Image.Image:
    """What a map is laid over: the upload at display size, turned; a digits model redraws the digit
    (inference.model_input), so its map lies over the digit as redrawn."""
    if model.card.get("dataset") == "digits":
        return _display(Image.fromarray(seen.permute(1, 2, 0).numpy()))
    return _display(picture).rotate(90 * turn, expand=True)


def _top_share(heat: np.ndarray) -> float:
    """The share of the map's weight in its top 20% of pixels: 0.2 for a flat map, 1 for a spot."""
    flat = np.sort(heat.ravel())[::-1]
    return float(flat[: int(round(TOP_FRACTION * flat.size))].sum() / max(float(flat.sum()), 1e-12))


def _follows(heat: np.ndarray, first: np.ndarray, turn: int) -> float:
    """Correlation of a turn's map with the upload's map turned the same way: 1 when the map turns with the picture."""
    a, b = heat.ravel(), np.rot90(first, turn).ravel()  # np.rot90 turns counter-clockwise, as torch.rot90 does
    return float(np.nan_to_num(np.corrcoef(a, b)[0, 1])) if a.std() > 0 and b.std() > 0 else 0.0


@dataclass
class Explanation:
    """Maps as pictures (none when the check withholds them or no check can be made) and the numbers behind them."""

    about: str  # for people: which map, and why it is shown or withheld, with the deletion check's figures
    pictures: list[tuple[Image.Image, str]] = field(default_factory=list)  # (map over the picture, caption)
    numbers: dict = field(default_factory=dict)

    @property
    def shown(self) -> bool:
        return bool(self.pictures)


def _start(model: LoadedModel, question: str) -> tuple[Optional[Faithfulness], Explanation]:
    """The verdict when it lets maps be shown (else None), and the explanation so far: what the check found."""
    try:
        check = faithfulness.verdict(model, question)
    except ExplainError as exc:  # no map can be checked for this model: the other answers still stand
        return None, Explanation(str(exc), numbers={"model": model.name, "shown": False, "about": str(exc)})
    about = f"{check.method.title}. {check.sentence()}" if check.passed else check.sentence()
    numbers = {"model": model.name, "shown": check.passed, "method": check.method.title, "about": about,
               "deletion_check": asdict(check.check) | {"passed": check.passed, "held_out": check.held_out}}
    return (check if check.passed else None), Explanation(about, numbers=numbers)


def explain_rotation(model: LoadedModel, source: ImageSource) -> Explanation:
    """Where a rotation model looks for its answer, for the upload and each further quarter-turn."""
    if model.card["task"] != "rotation":
        raise ModelError(f"{model.name} is a {model.card['task']} model; this needs a rotation model.")
    picture, x = model_input(model.checkpoint, source)  # first: a bad upload is refused as the tab refuses it
    check, out = _start(model, "rotation")
    if check is None:
        return out
    turned = torch.stack([torch.rot90(x, k, (-2, -1)) for k in range(4)])
    cams, predicted, confidence = rotation_maps(model.checkpoint.model, turned, (check.method,))
    heat = fine(cams[check.method], x.shape[-1]).numpy()
    turns = []
    for k in range(4):
        answer = int(predicted[k])
        row = {"turn": angle_name(k), "predicted": angle_name(answer), "confidence": round(float(confidence[k]), 4),
               "consistent": answer == (int(predicted[0]) + k) % 4, "top_20_share": round(_top_share(heat[k]), 3),
               "follows_the_turn": round(_follows(heat[k], heat[0], k), 3)}
        turns.append(row)
        caption = f"{'as given' if k == 0 else 'turned ' + row['turn']} → guess {row['predicted']} ({row['confidence']:.0%})"
        out.pictures.append((overlay(_backdrop(model, picture, turned[k], k), heat[k], "what drove the answer"), caption))
    out.numbers["turns"] = turns
    return out


def explain_pair(model: LoadedModel, a: ImageSource, b: ImageSource) -> Explanation:
    """Where each of two pictures is like the other, in the model's embedding: one map per picture."""
    (pa, xa), (pb, xb) = model_input(model.checkpoint, a), model_input(model.checkpoint, b)  # bad uploads refused first
    check, out = _start(model, "pair")
    if check is None:
        return out
    cams, distance = pair_maps(model.checkpoint.model, xa[None], xb[None], (check.method,))
    heat = fine(torch.cat(cams[check.method]), xa.shape[-1]).numpy()
    if float(distance[0]) < 1e-4:  # a picture against itself: the gradient is zero and its map would be rounding noise
        heat[:] = 0.0
        out.about += " The two pictures are the same to this model (distance 0): no region pulls more than another."
    threshold = card_threshold(model.checkpoint)
    out.numbers |= {"about": out.about, "distance": round(float(distance[0]), 4), "threshold": threshold,
                    "same": None if threshold is None else bool(distance[0] <= threshold),
                    "top_20_share": [round(_top_share(h), 3) for h in heat]}
    for name, other, picture, seen, h in (("A", "B", pa, xa, heat[0]), ("B", "A", pb, xb, heat[1])):
        out.pictures.append((overlay(_backdrop(model, picture, seen, 0), h, f"what makes it like {other}"),
                             f"{name}: where it is like {other}"))
    return out


__all__ = ["ExplainError", "Explanation", "explain_pair", "explain_rotation", "overlay"]
