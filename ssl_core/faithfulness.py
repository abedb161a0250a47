"""Honest maps: a checkpoint's maps are offered only if a deletion check on held-out images finds
them faithful.

Blurring the 20% of pixels a map ranks highest must lower the model's confidence in its answer
(rotation) or the pair's similarity (minus their distance) clearly more than blurring a random 20%:
at least `MIN_RATIO` times as much, `MIN_Z` standard errors clear. The random 20% is the more
damaging of scattered pixels and random blobs as coarse as the map. Which of the four maps
(attribution.METHODS) a checkpoint gets is picked on one half of its held-out images and checked on
the other half, so the figures that decide are not those it was picked on.

A check takes seconds to a minute on two cores, so it runs once per checkpoint identity (its weights'
SHA-256): the shipped models' checks are recorded in `explain_checks.json` (`python -m
ssl_core.faithfulness` rewrites it and prints the table in docs/benchmarks.md), any other's is
cached on disk beside the maps' cache.
"""

from __future__ import annotations

import json
import math
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from . import dataset_title, projection
from .attribution import METHODS, ExplainError, Method, distance, fine, pair_maps, rotation_maps
from .augment import normalize
from .data import DataError
from .models import SSLModel
from .registry import LoadedModel, ModelRegistry

FORMAT = 1  # bump when a method, the check or its criteria change: cached and recorded checks then stop matching
TOP_FRACTION = 0.2  # the share of pixels a deletion check blurs
CHECK_IMAGES = 256  # held-out images (rotation) or pairs in each half: one half picks the map, the other checks it
RANDOM_DRAWS = 4  # random masks per image, averaged, so the baseline's own noise is small beside the map's
MIN_RATIO = 1.5  # "clearly more": the map's blur costs at least 1.5x what a random blur costs ...
MIN_Z = 3.0  # ... and beats it by 3 standard errors of the difference, paired over the held-out images
BLUR_SIGMA = 0.1  # of the image side: removes detail at the scale of object parts and keeps the colours, so
# what is left is still a picture like those the model learned from (a black hole is not)
RECORDED = Path(__file__).with_name("explain_checks.json")
QUESTIONS = ("rotation", "pair")  # what a map explains: the predicted turn, or a pair's similarity


def blur_top(images: torch.Tensor, ranking: torch.Tensor, fraction: float = TOP_FRACTION) -> torch.Tensor:
    """uint8 images (B,3,S,S) with the `fraction` of pixels `ranking` (B,h,w, any h) puts highest blurred."""
    from torchvision.transforms.functional import gaussian_blur  # here: 1.5 s to import, and the app rarely checks

    side = images.shape[-1]
    flat = fine(ranking, side).flatten(1)
    top = flat.topk(int(round(fraction * side * side)), dim=1).indices
    mask = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, top, True).view(-1, 1, side, side)
    sigma = BLUR_SIGMA * side
    kernel = 2 * math.ceil(2.5 * sigma) + 1
    blurred = gaussian_blur(images.float(), [kernel, kernel], [sigma, sigma]).round().to(torch.uint8)
    return torch.where(mask, blurred, images)


@dataclass(frozen=True)
class Deletion:
    """One deletion check: how much blurring the map's top pixels lowers the score, against random ones."""

    images: int  # held-out images (rotation) or pairs
    score: float  # mean score before: confidence in the answer, or similarity (minus the distance)
    map_drop: float  # mean fall of the score when the map's top 20% is blurred
    random_drop: float  # the same for random 20%s: the more damaging of scattered pixels and random blobs
    random_kind: str  # "pixels" or "blobs" (random maps as coarse as the map)
    z: float  # (map drop - random drop) over its standard error, paired per image

    @property
    def passed(self) -> bool:
        clearly = self.random_drop <= 0 or self.map_drop >= MIN_RATIO * self.random_drop
        return self.map_drop > 0 and clearly and self.z >= MIN_Z


def _deletions(score: Callable[[list[torch.Tensor]], torch.Tensor], inputs: list[torch.Tensor],
               cams: dict[Method, list[torch.Tensor]]) -> dict[Method, Deletion]:
    """`score(inputs)` per item before and after blurring each input's top pixels by each method's
    maps, and by random masks: scattered pixels, and random maps as coarse as each method's."""
    with torch.no_grad():
        before = score(inputs)
        drops = {m: before - score([blur_top(x, c) for x, c in zip(inputs, maps)]) for m, maps in cams.items()}
        g = torch.Generator().manual_seed(0)
        shapes = {"pixels": tuple(inputs[0].shape[-2:])} | {f"blobs {tuple(c[0].shape[-2:])}": tuple(c[0].shape[-2:])
                                                            for c in cams.values()}
        randoms = {kind: torch.stack([before - score([blur_top(x, torch.rand((len(x), *shape), generator=g)) for x in inputs])
                                      for _ in range(RANDOM_DRAWS)]).mean(0) for kind, shape in shapes.items()}
    out = {}
    for m, drop in drops.items():
        kind = max(("pixels", f"blobs {tuple(cams[m][0].shape[-2:])}"), key=lambda k: float(randoms[k].mean()))
        diff = drop - randoms[kind]
        se = float(diff.std()) / math.sqrt(len(diff)) if len(diff) > 1 else float("inf")
        out[m] = Deletion(len(before), float(before.mean()), float(drop.mean()), float(randoms[kind].mean()),
                          kind.split()[0], float(diff.mean()) / max(se, 1e-12))
    return out


def _rotation_checks(model: SSLModel, images: torch.Tensor, methods: tuple[Method, ...]) -> dict[Method, Deletion]:
    cams, predicted, _ = rotation_maps(model, images, methods)

    def confidence(xs: list[torch.Tensor]) -> torch.Tensor:
        probs = torch.softmax(model(normalize(xs[0].to(next(model.parameters()).device))).float(), 1).cpu()
        return probs.gather(1, predicted[:, None]).squeeze(1)

    return _deletions(confidence, [images], {m: [c] for m, c in cams.items()})


def _pair_checks(model: SSLModel, pairs: tuple[torch.Tensor, torch.Tensor], methods: tuple[Method, ...]) -> dict[Method, Deletion]:
    a, b = pairs
    cams, _ = pair_maps(model, a, b, methods)

    def similarity(xs: list[torch.Tensor]) -> torch.Tensor:
        emb = model.embed(normalize(torch.cat(xs).to(next(model.parameters()).device)))
        return -distance(emb[: len(a)], emb[len(a):]).cpu()

    return _deletions(similarity, [a, b], {m: list(c) for m, c in cams.items()})


def _halves(model: LoadedModel, question: str) -> tuple[list, str]:
    """Two disjoint sets of held-out inputs (pick, check): images at turns 0-3 for a rotation, same-class
    pairs for a pair (an unlabeled set pairs each image with its mirror image)."""
    from . import maps  # the held-out images of a checkpoint; maps imports inference, as this module does

    try:
        held, _ = maps.held_out(model.card)
    except DataError as exc:
        raise ExplainError(f"No held-out images to check the map on ({exc}).") from exc
    images, labels = held.images, held.labels
    about = f"drawn from {len(held):,} held-out images: {held.source or dataset_title(held.name) + ' test split'}"
    if question == "rotation":
        rows = torch.linspace(0, len(images) - 1, min(2 * CHECK_IMAGES, len(images))).long()
        turned = torch.stack([torch.rot90(images[r], i // 2 % 4, (-2, -1)) for i, r in enumerate(rows)])
        return [turned[0::2], turned[1::2]], about
    if labels is None:
        rows = torch.linspace(0, len(images) - 1, min(2 * CHECK_IMAGES, len(images))).long()
        pairs = [(int(r), -1 - int(r)) for r in rows]  # a negative partner: the image mirrored
    else:
        per_class = [torch.nonzero(labels == c).flatten() for c in torch.unique(labels)]
        pairs = [(int(r[i]), int(r[i + 1])) for r in per_class for i in range(0, len(r) - 1, 2)]
        step = max(1, len(pairs) // (2 * CHECK_IMAGES))
        pairs = pairs[::step][: 2 * CHECK_IMAGES]
    flipped = lambda j: images[j] if j >= 0 else images[-1 - j].flip(-1)  # noqa: E731
    halves = []
    for half in (pairs[0::2], pairs[1::2]):
        halves.append((torch.stack([images[i] for i, _ in half]), torch.stack([flipped(j) for _, j in half])))
    return halves, about


@dataclass(frozen=True)
class Faithfulness:
    """Whether a checkpoint's maps may be shown for a question, and the figures behind the decision."""

    question: str  # "rotation" or "pair"
    method: Method  # the map picked on the first half of the held-out images
    check: Deletion  # that map's deletion check on the other half: the decision
    candidates: dict[str, Deletion]  # every method on the first half: why this one was picked
    held_out: str  # which images

    @property
    def passed(self) -> bool:
        return self.check.passed

    def _moved(self, drop: float) -> str:
        if self.question == "rotation":
            return f"{'lowered' if drop >= 0 else 'raised'} the model's confidence in its answer by {abs(drop):.3f}"
        return f"moved the two pictures {abs(drop):.3f} {'further apart' if drop >= 0 else 'closer'}"

    def sentence(self) -> str:
        """For people: what the check measured, and whether the map is shown."""
        c = self.check
        figures = (f"on {c.images} held-out {'images' if self.question == 'rotation' else 'pairs'} ({self.held_out}), blurring the "
                   f"{TOP_FRACTION:.0%} of pixels the map ranks highest {self._moved(c.map_drop)} on average; blurring a random "
                   f"{TOP_FRACTION:.0%} {self._moved(c.random_drop)}")
        if self.passed:
            return f"Shown because it is faithful: {figures}."
        return (f"No map for this model: {figures}; the map must remove at least {MIN_RATIO:g}x as much, "
                f"{MIN_Z:g} standard errors clear, to show where the model looks.")

    def to_dict(self) -> dict:
        return {"format": FORMAT, "question": self.question, "method": asdict(self.method), "passed": self.passed,
                "check": asdict(self.check), "held_out": self.held_out,
                "candidates": {k: asdict(v) for k, v in self.candidates.items()}}

    @staticmethod
    def from_dict(d: dict) -> "Faithfulness":
        return Faithfulness(d["question"], Method(**d["method"]), Deletion(**d["check"]),
                            {k: Deletion(**v) for k, v in d["candidates"].items()}, d["held_out"])


def measure(model: LoadedModel, question: str, method: Optional[Method] = None) -> Faithfulness:
    """Run the deletion check for `question` ("rotation" or "pair") on the checkpoint's held-out images.
    `method`: judge that map on the deciding half without picking again (a third of the work; no candidates)."""
    if question not in QUESTIONS:
        raise ValueError(f"question must be one of {QUESTIONS}; got {question!r}")
    net = model.checkpoint.model
    (choose, decide), about = _halves(model, question)
    run = _rotation_checks if question == "rotation" else _pair_checks
    candidates = run(net, choose, METHODS) if method is None else {}
    best = method or max(METHODS, key=lambda m: candidates[m].map_drop - candidates[m].random_drop)
    return Faithfulness(question, best, run(net, decide, (best,))[best], {m.title: d for m, d in candidates.items()}, about)


_VERDICTS: dict[tuple[str, str], Faithfulness] = {}
_LOCKS: dict[tuple[str, str], threading.Lock] = {}
_LOCK = threading.Lock()


def _cache_file(key: str, question: str) -> Path:
    return projection.cache_dir().parent / "explain" / f"{key}-{question}-v{FORMAT}.json"


def _recorded(key: str, question: str) -> Optional[Faithfulness]:
    try:
        entry = json.loads(RECORDED.read_text()).get(key, {}).get(question)
    except (OSError, json.JSONDecodeError):
        return None
    return Faithfulness.from_dict(entry) if entry and entry.get("format") == FORMAT else None


def verdict(model: LoadedModel, question: str) -> Faithfulness:
    """The checkpoint's deletion check for `question`: recorded (shipped models), cached on disk, or
    run now (seconds, once per checkpoint and server). Raises ExplainError."""
    key = (model.key, question)
    with _LOCK:
        lock = _LOCKS.setdefault(key, threading.Lock())
    with lock:  # a second visitor waits for the first one's check of this model instead of repeating it
        if key not in _VERDICTS:
            found = _recorded(*key) or _cached(*key)
            if found is None:
                found = measure(model, question)
                _write(_cache_file(*key), found.to_dict())
            _VERDICTS[key] = found
        return _VERDICTS[key]


def _cached(key: str, question: str) -> Optional[Faithfulness]:
    try:
        return Faithfulness.from_dict(json.loads(_cache_file(key, question).read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # not checked yet, or a damaged file: checked again


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)  # a reader never sees half a file


def questions(task: str) -> tuple[str, ...]:
    """The maps a checkpoint of `task` is asked for: every encoder answers pairs, rotation models turns too."""
    return QUESTIONS if task == "rotation" else ("pair",)


def record(registry: ModelRegistry) -> dict:
    """Measure every shipped checkpoint and write the verdicts to RECORDED, keyed by weights SHA-256."""
    out = {}
    for entry in registry.entries():
        if entry.shipped:
            model = registry.load(entry.name)
            out[model.key] = {"name": entry.name} | {q: measure(model, q).to_dict() for q in questions(entry.card["task"])}
    _write(RECORDED, out)
    return out


def table(recorded: dict) -> str:
    """The recorded verdicts as the markdown table of docs/benchmarks.md: a turn's figures are
    confidences, a pair's are distances (the similarity's fall is the distance's rise)."""
    rows = ["| checkpoint | map of | method picked | held-out | before | change, map's blur | change, random blur | ratio | z | shown |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for entry in recorded.values():
        for q in QUESTIONS:
            if q in entry:
                f = Faithfulness.from_dict(entry[q])
                c = f.check
                before = f"confidence {c.score:.3f}" if q == "rotation" else f"distance {-c.score:.3f}"
                sign = -1 if q == "rotation" else 1
                ratio = f"{c.map_drop / c.random_drop:.1f}x" if c.random_drop > 0 else "random blur moves it the other way"
                rows.append(f"| `{entry['name']}` | {'turn' if q == 'rotation' else 'pair'} | {f.method.title} | {c.images} | "
                            f"{before} | {sign * c.map_drop:+.3f} | {sign * c.random_drop:+.3f} ({c.random_kind}) | {ratio} | "
                            f"{c.z:.1f} | {'yes' if f.passed else '**no**'} |")
    return "\n".join(rows)


if __name__ == "__main__":  # python -m ssl_core.faithfulness [--table]: record the shipped models' checks
    import sys

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    print(table(json.loads(RECORDED.read_text()) if "--table" in sys.argv else record(ModelRegistry(runs_dir=os.devnull))))


__all__ = ["Deletion", "Faithfulness", "QUESTIONS", "blur_top", "measure", "questions", "record", "table", "verdict"]
