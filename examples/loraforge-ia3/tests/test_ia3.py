"""The ia3 trainer passes LoRAForge's conformance kit and is registered by the entry point."""

from __future__ import annotations

import json
from importlib.metadata import entry_points

import pytest
from loraforge_ia3.backend import Ia3Backend, Ia3Config

from trainers.testing import check_backend


def test_ia3_passes_the_conformance_kit(tmp_path):
    result = check_backend(Ia3Backend(), tmp_path)
    config = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert config["peft_type"] == "IA3"
    assert 0 < result.metrics["trainable_percent"] < 1  # a vector per layer, not matrices


def test_ia3_is_found_through_the_entry_point_group():
    from trainers.discovery import discover_backends

    assert "ia3" in {ep.name for ep in entry_points(group="loraforge.trainers")}, \
        "install the package first: pip install -e ."
    discover_backends.cache_clear()
    assert isinstance(discover_backends()["ia3"], Ia3Backend)


def test_feedforward_modules_must_be_targets():
    with pytest.raises(ValueError, match="subset"):
        Ia3Config(target_modules=["k_proj"], feedforward_modules=["down_proj"])
