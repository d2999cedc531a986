"""Diverse subsets: every cluster is drawn from, small clusters are topped up from others."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from curation.build import build_snapshot
from curation.diversity import choose_per_cluster, cluster, default_encoder_path
from registry.snapshots import find_snapshot


def test_small_cluster_gives_all_it_has_and_the_rest_is_topped_up():
    labels = [0] * 10 + [1] * 2 + [2] * 10
    choice = choose_per_cluster(labels, per_cluster=4, seed=0)
    assert choice.per_cluster == {0: 5, 1: 2, 2: 5}
    assert choice.topped_up == 2 and len(choice.chosen) == 12
    assert {labels[i] for i in choice.chosen} == {0, 1, 2}


def test_kmeans_on_separated_blobs_draws_from_every_blob():
    rng = np.random.default_rng(0)
    centres = np.eye(5, 16) * 10
    points = np.vstack([c + rng.normal(0, 0.1, (30, 16)) for c in centres])
    labels = cluster(points, k=5, seed=0)
    choice = choose_per_cluster(labels, per_cluster=3, seed=0)
    blobs = {i // 30 for i in choice.chosen}
    assert blobs == {0, 1, 2, 3, 4} and len(choice.chosen) == 15


def test_bundled_minilm_is_found_offline():
    assert (default_encoder_path() / "model.safetensors").is_file()


def test_snapshot_subset_draws_from_every_cluster_and_plots_them(qa_store):
    seen: list[tuple[int, int]] = []
    build_snapshot(name="diverse", clusters=4, per_cluster=3, test_fraction=0.25,
                   embed_progress=lambda done, total: seen.append((done, total)))
    snap = find_snapshot("diverse")
    assert sorted(snap.counts["clusters"]) == ["0", "1", "2", "3"]
    assert all(n >= 1 for n in snap.counts["clusters"].values())
    assert snap.counts["total"] == 12 and snap.params["clusters"] == 4
    assert seen[-1] == (40, 40)
    png = Path(snap.path) / "clusters.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
