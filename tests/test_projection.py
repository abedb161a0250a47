"""t-SNE / PCA maps of real digits embeddings: classes stay apart, caches hit, new points land right."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier

from ssl_core import projection as P


@pytest.fixture(scope="module")
def digits_embeddings(digits_split, shipped_checkpoints: Path):  # noqa: ANN001, ANN201
    """A few hundred training and test embeddings from the shipped Siamese digits encoder."""
    from ssl_core.checkpoints import load_checkpoint
    from ssl_core.evaluate import embed

    ck = load_checkpoint(shipped_checkpoints / "digits-siamese")
    train, test = digits_split.train, digits_split.test
    return (embed(ck.model, train.images[:400]).numpy(), train.labels[:400].numpy(),
            embed(ck.model, test.images[:100]).numpy(), test.labels[:100].numpy(), ck.card["weights_sha256"])


@pytest.fixture(scope="module")
def fitted(digits_embeddings, tmp_path_factory):  # noqa: ANN001, ANN201
    """One t-SNE map, made once and cached on disk, shared by the tests that read it."""
    x, y, _, _, sha = digits_embeddings
    cache = P.MapCache(tmp_path_factory.mktemp("maps"))
    key = P.map_key(sha, "digits/train[:400]")
    start = time.perf_counter()
    coords = P.tsne_map(x, key, cache=cache)
    return cache, key, coords, time.perf_counter() - start


def knn_cv(coords: np.ndarray, labels: np.ndarray) -> float:
    return float(cross_val_score(KNeighborsClassifier(5), coords, labels, cv=4).mean())


def test_tsne_map_separates_digit_classes(digits_embeddings, fitted) -> None:  # noqa: ANN001
    x, y, *_ = digits_embeddings
    _, _, coords, _ = fitted
    assert coords.shape == (len(x), 2) and coords.dtype == np.float32 and np.isfinite(coords).all()
    # The 128-d embedding's own 5-NN accuracy on these 400 images is ~0.98 (0.99 measured on the
    # map): the map must keep the classes as apart as the embedding does.
    assert knn_cv(coords, y) >= max(0.95, knn_cv(x, y) - 0.03)


def test_cache_hit_is_identical_and_instant(digits_embeddings, fitted) -> None:  # noqa: ANN001
    x, *_ = digits_embeddings
    cache, key, coords, _ = fitted
    start = time.perf_counter()
    again = P.tsne_map(x, key, cache=cache)
    assert time.perf_counter() - start < 1.0
    assert np.array_equal(again, coords)
    again[:] = 0  # callers get a copy: the cached map is not theirs to change
    assert np.array_equal(P.tsne_map(x, key, cache=cache), coords)


def test_disk_cache_survives_a_restart(digits_embeddings, fitted, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    x, *_ = digits_embeddings
    cache, key, coords, _ = fitted
    fresh = P.MapCache(cache.directory)  # a new process: empty memory, same folder
    monkeypatch.setattr(P, "_compute", lambda *a: pytest.fail("recomputed instead of reading the disk cache"))
    start = time.perf_counter()
    assert np.array_equal(P.tsne_map(x, key, cache=fresh), coords)
    assert time.perf_counter() - start < 1.0
    assert list(cache.directory.glob("*.tmp")) == []  # atomic writes leave no temporary files


def test_placed_points_land_near_their_class(digits_embeddings, fitted) -> None:  # noqa: ANN001
    x, y, x_new, y_new, _ = digits_embeddings
    cache, key, coords, _ = fitted
    placed = P.place_points(key, x_new, cache=cache)
    assert placed.shape == (len(x_new), 2) and placed.dtype == np.float32
    knn = KNeighborsClassifier(5).fit(coords, y)
    assert knn.score(placed, y_new) >= 0.9  # 0.98 measured
    # After a restart the map's affinities are rebuilt from the stored points: same quality.
    assert knn.score(P.place_points(key, x_new, cache=P.MapCache(cache.directory)), y_new) >= 0.9
    # Placing does not move the map the user already sees.
    assert np.array_equal(P.tsne_map(x, key, cache=cache), coords)


def test_key_reused_for_other_embeddings_recomputes(digits_embeddings, tmp_path: Path) -> None:  # noqa: ANN001
    x, *_ = digits_embeddings
    cache = P.MapCache(tmp_path)
    first = P.pca_map(x[:50], "model:data", cache=cache)
    second = P.pca_map(x[50:120], "model:data", cache=cache)
    assert second.shape == (70, 2) and first.shape == (50, 2)


def test_pca_map_and_placement(digits_embeddings, tmp_path: Path) -> None:  # noqa: ANN001
    x, y, x_new, y_new, _ = digits_embeddings
    cache = P.MapCache(tmp_path)
    coords = P.pca_map(x, "k", cache=cache)
    assert coords.shape == (len(x), 2)
    assert np.allclose(coords.mean(axis=0), 0, atol=1e-3)  # centred, so the map sits at the origin
    assert np.var(coords[:, 0]) >= np.var(coords[:, 1])  # first axis = most variance
    # A mapped point placed again lands where it is on the map (PCA is a fixed linear projection).
    assert np.allclose(P.place_points("k", x[:5], "pca", cache=cache), coords[:5], atol=1e-4)
    assert P.place_points("k", x_new, "pca", cache=P.MapCache(tmp_path)).shape == (len(x_new), 2)


def test_small_and_bad_inputs(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for n in (1, 3, 6):  # below MIN_TSNE_POINTS t-SNE falls back to PCA; 6 points run t-SNE itself
        assert P.tsne_map(rng.normal(size=(n, 8))).shape == (n, 2)
    with pytest.raises(ValueError, match="non-empty"):
        P.tsne_map(np.zeros((0, 8)))
    with pytest.raises(ValueError, match="NaN"):
        P.pca_map(np.full((4, 8), np.nan))
    with pytest.raises(LookupError):
        P.place_points("never-made", rng.normal(size=(2, 8)), cache=P.MapCache(tmp_path))
    P.pca_map(rng.normal(size=(10, 8)), "eight", cache=P.MapCache(tmp_path))
    with pytest.raises(ValueError, match="dimensions"):
        P.place_points("eight", rng.normal(size=(2, 9)), "pca", cache=P.MapCache(tmp_path))
    with pytest.raises(ValueError, match="method"):
        P.place_points("eight", rng.normal(size=(2, 8)), "umap", cache=P.MapCache(tmp_path))


def test_cache_dir_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SSL_CACHE_DIR", str(tmp_path))
    assert P.cache_dir() == tmp_path / "maps"
    monkeypatch.delenv("SSL_CACHE_DIR")
    assert P.cache_dir() == Path.home() / ".cache" / "ssl_playground" / "maps"


def test_unwritable_cache_dir_still_returns_maps(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cache = P.MapCache(blocker / "maps")  # mkdir fails: memory-only caching, no error for the user
    x = np.random.default_rng(1).normal(size=(20, 8))
    assert np.array_equal(P.pca_map(x, "k", cache=cache), P.pca_map(x, "k", cache=cache))
