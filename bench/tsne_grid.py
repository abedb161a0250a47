"""openTSNE's FFT grid settings on 10,000 x 128 points: time, 5-NN of the map, KL divergence.

The measurement behind projection.FFT_INTS_IN_INTERVAL (docs/benchmarks.md, t-SNE section).
Same PCA'd points and the same affinities for every setting, so only the gradient step differs.

    python bench/tsne_grid.py [--std 6 14] [--points 10000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.datasets import make_blobs
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ssl_core import projection  # noqa: E402

# Each replaces settings of projection.make_tsne; ints_in_interval=1 is openTSNE's own default.
SETTINGS = [{"ints_in_interval": 1}, {"ints_in_interval": 1.5}, {"ints_in_interval": 2},
            {"n_interpolation_points": 2, "ints_in_interval": 1}, {"min_num_intervals": 20, "ints_in_interval": 2}]


def knn(x: np.ndarray, y: np.ndarray) -> float:
    return float(cross_val_score(KNeighborsClassifier(5), x, y, cv=5).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--std", type=float, nargs="+", default=[6.0, 14.0], help="cluster spreads to try")
    ap.add_argument("--points", type=int, default=10_000)
    args = ap.parse_args()
    for std in args.std:
        x, y = make_blobs(args.points, 128, centers=10, cluster_std=std, random_state=0)
        x = x.astype(np.float32)
        center, components = projection.pca_basis(x, projection.PCA_DIMS)
        ref = ((x - center) @ components.T).astype(np.float32)
        affinities = projection.affinities(ref, projection.PERPLEXITY)
        print(f"cluster_std={std}: raw-space 5-NN {knn(x, y):.3f}", flush=True)
        for kw in SETTINGS:
            t = time.perf_counter()
            e = projection.make_tsne(len(x), projection.PERPLEXITY, **kw).fit(ref, affinities=affinities)
            seconds = time.perf_counter() - t
            print(f"  {kw}: {seconds:.1f} s, 5-NN {knn(np.asarray(e), y):.3f}, "
                  f"KL {float(e.kl_divergence):.4f}", flush=True)


if __name__ == "__main__":
    main()
