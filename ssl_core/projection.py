"""2-D maps of embeddings (t-SNE, PCA), cached per checkpoint, and new points placed on a map.

t-SNE is openTSNE's (FFT-accelerated gradients from 10,000 points, Barnes-Hut below),
after PCA to `PCA_DIMS` dimensions, which keeps the neighbour search cheap and loses little:
t-SNE only keeps neighbourhoods. Fixed `RANDOM_STATE`, so a map looks the same on every run.
How it compares with scikit-learn is in docs/benchmarks.md.

Maps are cached in memory and on disk (one atomic .npz per map under `cache_dir()`), keyed by the
caller's `key` - which model, which images; `map_key(card["weights_sha256"], "digits/test")` - plus
the method and its settings. Each entry records a fingerprint of the embeddings it was made from,
so a key reused for other embeddings recomputes instead of returning a stale map. A second view
of the same map is instant, also after a restart.

`place_points` puts embeddings of new images (an upload) onto an existing map: PCA projects them;
for t-SNE, openTSNE's `TSNEEmbedding.transform` places each near its neighbours among the mapped
points and optimises only the new points, leaving the map as the user saw it.

Arrays in and out are NumPy: (N, D) float embeddings in, (N, 2) float32 coordinates out.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

PCA_DIMS = 50  # t-SNE input dimensions after PCA
PERPLEXITY = 30.0  # lowered automatically for small sets (it must stay below N/3)
EXAGGERATION_ITERATIONS = 250  # openTSNE's and scikit-learn's early-exaggeration phase
TSNE_ITERATIONS = 750  # in all (openTSNE's default); the benchmark gives scikit-learn the same number
N_JOBS = min(2, os.cpu_count() or 1)
PARALLEL_FROM = 10_000  # points; below, one thread (see tsne_threads)
RANDOM_STATE = 0
# openTSNE's FFT gradients interpolate on a grid with this many boxes per unit of map width
# (its default is 1). Two halves the grid per axis, so the FFTs shrink 4x while the map keeps its
# neighbourhoods (docs/benchmarks.md has the measurement). Below PARALLEL_FROM, Barnes-Hut ignores it.
FFT_INTS_IN_INTERVAL = 2.0
MIN_TSNE_POINTS = 5  # fewer points have no neighbourhoods to keep: they get the PCA map
MEMORY_ENTRIES = 8  # maps kept in memory (a 10,000-point t-SNE entry is ~2.5 MB)
FORMAT = 2  # bump when the .npz layout or the algorithm changes: old files stop matching
METHODS = ("tsne", "pca")


def cache_dir() -> Path:
    """`$SSL_CACHE_DIR/maps` if set, else `~/.cache/ssl_playground/maps`."""
    root = os.environ.get("SSL_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "ssl_playground") / "maps"


def map_key(weights_sha256: str, data_id: str) -> str:
    """The cache key for one model's map of one image set, e.g. (card["weights_sha256"], "digits/test")."""
    return f"{weights_sha256}:{data_id}"


@dataclass
class _Entry:
    """A computed map and what placing new points on it needs."""

    method: str  # how the coordinates were made: "tsne" or "pca" (also for tiny t-SNE requests)
    coords: np.ndarray  # (N, 2) float32
    fingerprint: str  # of the embeddings the map was made from
    center: np.ndarray  # (D,) mean removed before projecting
    components: np.ndarray  # (K, D) PCA basis: K = 2 for a PCA map; (0, D) when t-SNE skipped PCA
    reference: np.ndarray  # t-SNE: the (N, K) points the map was fitted on; PCA: (0, 0)
    perplexity: float
    live: object = None  # the fitted openTSNE TSNEEmbedding, rebuilt lazily after a disk load

    def project(self, x: np.ndarray) -> np.ndarray:
        return (x - self.center) @ self.components.T if len(self.components) else x - self.center


class MapCache:
    """Maps by name, in memory (LRU) and as .npz files in `directory` (None: memory only)."""

    def __init__(self, directory: Optional[str | os.PathLike] = None, max_entries: int = MEMORY_ENTRIES) -> None:
        self.directory = None if directory is None else Path(directory)
        self.max_entries = max_entries
        self._memory: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._computing: dict[str, threading.Lock] = {}

    def lock_for(self, name: str) -> threading.Lock:
        """One lock per map, so two requests for the same map compute it once."""
        with self._lock:
            return self._computing.setdefault(name, threading.Lock())

    def get(self, name: str) -> Optional[_Entry]:
        with self._lock:
            entry = self._memory.get(name)
            if entry is not None:
                self._memory.move_to_end(name)
                return entry
        entry = self._read(name)
        if entry is not None:
            self._remember(name, entry)
        return entry

    def put(self, name: str, entry: _Entry) -> None:
        self._remember(name, entry)
        self._write(name, entry)

    def _remember(self, name: str, entry: _Entry) -> None:
        with self._lock:
            self._memory[name] = entry
            self._memory.move_to_end(name)
            while len(self._memory) > self.max_entries:
                self._memory.popitem(last=False)

    def _path(self, name: str) -> Optional[Path]:
        return None if self.directory is None else self.directory / f"{name}.npz"

    def _read(self, name: str) -> Optional[_Entry]:
        path = self._path(name)
        if path is None or not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as f:  # plain arrays only: nothing is unpickled
                return _Entry(str(f["method"]), f["coords"], str(f["fingerprint"]), f["center"], f["components"],
                              f["reference"], float(f["perplexity"]))
        except (OSError, ValueError, KeyError):  # damaged or from another layout: recompute
            return None

    def _write(self, name: str, entry: _Entry) -> None:
        """Write beside the final name and rename, so a reader never sees half a file. A cache that
        cannot be written (read-only home, full disk) only costs speed, so errors are dropped."""
        path = self._path(name)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as f:
                    np.savez(f, method=entry.method, coords=entry.coords, fingerprint=entry.fingerprint,
                             center=entry.center, components=entry.components, reference=entry.reference,
                             perplexity=entry.perplexity)
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        except OSError:
            pass


_DEFAULT: Optional[MapCache] = None
_DEFAULT_LOCK = threading.Lock()


def default_cache() -> MapCache:
    """The process-wide cache under `cache_dir()`, made on first use (so SSL_CACHE_DIR set before it counts)."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = MapCache(cache_dir())
        return _DEFAULT


# -------------------------------------------------------------------------------------- public
def tsne_map(embeddings: np.ndarray, key: Optional[str] = None, *, cache: Optional[MapCache] = None) -> np.ndarray:
    """t-SNE coordinates (N, 2) float32 of `embeddings` (N, D). With a `key`, cached (memory + disk).
    Fewer than MIN_TSNE_POINTS points get the PCA map: t-SNE has no neighbourhoods to keep there."""
    return _map("tsne", embeddings, key, cache).coords.copy()


def pca_map(embeddings: np.ndarray, key: Optional[str] = None, *, cache: Optional[MapCache] = None) -> np.ndarray:
    """The first two principal components (N, 2) float32: linear, so distances along them mean
    something, unlike t-SNE's. With a `key`, cached like `tsne_map`."""
    return _map("pca", embeddings, key, cache).coords.copy()


def place_points(key: str, new_embeddings: np.ndarray, method: str = "tsne", *,
                 cache: Optional[MapCache] = None) -> np.ndarray:
    """Coordinates (M, 2) float32 for new embeddings (M, D) on the map made earlier under `key`.

    Raises LookupError if no such map was made (call tsne_map / pca_map with the key first)."""
    cache = cache or default_cache()
    name = _name(method, key)
    entry = cache.get(name)
    if entry is None:
        raise LookupError(f"no {method} map for {key!r} yet: make it with {method}_map(embeddings, key) first")
    x = _check(new_embeddings, "new_embeddings")
    if x.shape[1] != entry.center.shape[0]:
        raise ValueError(f"new_embeddings have {x.shape[1]} dimensions; the map was made from {entry.center.shape[0]}")
    if entry.method == "pca":
        return _pad2(entry.project(x)).astype(np.float32)
    with cache.lock_for(name):
        if entry.live is None:
            entry.live = _rebuild_tsne(entry)
        placed = entry.live.transform(entry.project(x))
    return np.asarray(placed, dtype=np.float32)


# ------------------------------------------------------------------------------------ internals
def _check(embeddings: np.ndarray, what: str = "embeddings") -> np.ndarray:
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"{what} must be a non-empty (N, D) array; got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    return np.ascontiguousarray(x)


def _fingerprint(x: np.ndarray) -> str:
    return hashlib.sha256(f"{x.shape}".encode() + x.tobytes()).hexdigest()


def _name(method: str, key: str) -> str:
    """File-safe cache name: the key plus every setting that changes the picture."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    settings = f"v{FORMAT}|{method}|{PCA_DIMS}|{PERPLEXITY}|{EXAGGERATION_ITERATIONS}|{TSNE_ITERATIONS}|{RANDOM_STATE}|{FFT_INTS_IN_INTERVAL}"
    return f"{method}-{hashlib.sha256(f'{settings}|{key}'.encode()).hexdigest()[:40]}"


def _map(method: str, embeddings: np.ndarray, key: Optional[str], cache: Optional[MapCache]) -> _Entry:
    x = _check(embeddings)
    if key is None:
        return _compute(method, x, "")
    cache = cache or default_cache()
    name = _name(method, key)
    fingerprint = _fingerprint(x)
    with cache.lock_for(name):
        entry = cache.get(name)
        if entry is None or entry.fingerprint != fingerprint:
            entry = _compute(method, x, fingerprint)
            cache.put(name, entry)
    return entry


def _pad2(y: np.ndarray) -> np.ndarray:
    """Fewer than two components (one point, one dimension) still gives (N, 2): zeros fill in."""
    return y if y.shape[1] == 2 else np.hstack([y, np.zeros((len(y), 2 - y.shape[1]), dtype=y.dtype)])


def pca_basis(x: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and the top `dims` principal directions (K, D), K <= dims; signs fixed so maps don't flip."""
    center = x.mean(axis=0)
    _, _, vt = np.linalg.svd((x - center).astype(np.float64), full_matrices=False)
    vt = vt[: min(dims, len(vt))]
    signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)])
    return center.astype(np.float32), (vt * signs[:, None]).astype(np.float32)


def _compute(method: str, x: np.ndarray, fingerprint: str) -> _Entry:
    empty = np.zeros((0, 0), dtype=np.float32)
    if method == "pca" or len(x) < MIN_TSNE_POINTS:
        center, components = pca_basis(x, 2)
        coords = _pad2((x - center) @ components.T)
        return _Entry("pca", coords.astype(np.float32), fingerprint, center, components, empty, 0.0)
    if x.shape[1] > PCA_DIMS and len(x) > PCA_DIMS:
        center, components = pca_basis(x, PCA_DIMS)
    else:
        center, components = x.mean(axis=0), np.zeros((0, x.shape[1]), dtype=np.float32)
    entry = _Entry("tsne", empty, fingerprint, center, components, empty, min(PERPLEXITY, (len(x) - 1) / 3))
    reference = entry.project(x).astype(np.float32)
    fitted = make_tsne(len(x), entry.perplexity).fit(reference, affinities=affinities(reference, entry.perplexity))
    entry.coords, entry.reference, entry.live = np.asarray(fitted, dtype=np.float32), reference, fitted
    return entry


def make_tsne(n_points: int, perplexity: float, **overrides: object) -> object:
    """openTSNE's TSNE set up as every map here is made. `overrides` replace settings, only to
    measure alternatives against it (bench/tsne_grid.py)."""
    from openTSNE import TSNE

    settings = dict(n_components=2, perplexity=perplexity, early_exaggeration_iter=EXAGGERATION_ITERATIONS,
                    n_iter=TSNE_ITERATIONS - EXAGGERATION_ITERATIONS, initialization="pca",
                    n_jobs=tsne_threads(n_points), ints_in_interval=FFT_INTS_IN_INTERVAL, random_state=RANDOM_STATE)
    return TSNE(**{**settings, **overrides})


def tsne_threads(n: int) -> int:
    """Threads for a t-SNE of n points. Below PARALLEL_FROM openTSNE uses Barnes-Hut, whose
    per-iteration work is too small to split: a second thread mostly waits at barriers, the more so
    on a shared 2-core machine. Above it the FFT gradients do pay for two threads."""
    return N_JOBS if n >= PARALLEL_FROM else 1


def _rebuild_tsne(entry: _Entry) -> object:
    """A TSNEEmbedding over a map read from disk: the stored coordinates plus neighbour affinities
    recomputed from the stored reference points (seconds, once per process), so transform can run."""
    from openTSNE import TSNEEmbedding

    return TSNEEmbedding(entry.coords.astype(np.float64), affinities(entry.reference, entry.perplexity), n_jobs=tsne_threads(len(entry.reference)),
                         ints_in_interval=FFT_INTS_IN_INTERVAL, random_state=RANDOM_STATE)


def affinities(reference: np.ndarray, perplexity: float) -> object:
    """openTSNE's perplexity affinities over exact neighbours (see _exact_neighbours)."""
    from openTSNE.affinity import PerplexityBasedNN
    from openTSNE.nearest_neighbors import KNNIndex

    class ExactNeighbours(KNNIndex):
        VALID_METRICS = ["euclidean"]

        def build(self) -> tuple[np.ndarray, np.ndarray]:
            return _exact_neighbours(self.data, self.data, self.k, exclude_self=True)

        def query(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
            return _exact_neighbours(self.data, np.asarray(query, dtype=np.float32), k)

    k = min(len(reference) - 1, int(3 * perplexity))
    index = ExactNeighbours(reference, k, n_jobs=tsne_threads(len(reference)))
    return PerplexityBasedNN(knn_index=index, perplexity=perplexity, n_jobs=tsne_threads(len(reference)))


def _exact_neighbours(data: np.ndarray, query: np.ndarray, k: int, exclude_self: bool = False,
                      chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest rows of `data` for each row of `query`: indices and Euclidean distances.

    Brute force through one matrix product per chunk: exact, and at these sizes cheaper than
    building openTSNE's default approximate index (Annoy trees).
    """
    sq_data = np.einsum("ij,ij->i", data, data)
    indices = np.empty((len(query), k), dtype=np.int64)
    distances = np.empty((len(query), k), dtype=np.float32)
    for start in range(0, len(query), chunk):
        q = query[start : start + chunk]
        d2 = sq_data[None, :] - 2.0 * (q @ data.T) + np.einsum("ij,ij->i", q, q)[:, None]
        if exclude_self:
            rows = np.arange(len(q))
            d2[rows, start + rows] = np.inf
        part = np.argpartition(d2, k - 1, axis=1)[:, :k]
        part_d2 = np.take_along_axis(d2, part, axis=1)
        order = np.argsort(part_d2, axis=1)
        indices[start : start + len(q)] = np.take_along_axis(part, order, axis=1)
        distances[start : start + len(q)] = np.sqrt(np.maximum(np.take_along_axis(part_d2, order, axis=1), 0.0))
    return indices, distances
