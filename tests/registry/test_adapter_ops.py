"""Registry operations on adapters, through the Python API and the CLI."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from loraforge.cli import app
from registry.adapter_ops import (
    compare_adapters,
    delete_adapter,
    show_adapter,
    tag_adapter,
)
from registry.adapters import get_adapter
from registry.db import session_scope
from registry.errors import RegistryError
from registry.lineage import adapter_lineage
from registry.models import HubPublication, TrainingRun
from tests.publishing.test_hub import store_state
from tests.registry.conftest import ARTICLE_URLS, LineageStore

runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, list(args), catch_exceptions=True)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def test_list_show_and_compare_report_metrics_and_lora_settings(
    lineage_store: LineageStore,
) -> None:
    listing = invoke("adapters", "list").stdout
    assert "alpha:v1" in listing and "beta:v1" in listing and "1.234" in listing

    detail = show_adapter("alpha")
    assert detail.lora_config["r"] == 8 and detail.lora_config["lora_alpha"] == 32
    assert detail.snapshot_name == "health-qa-s0" and detail.tags == ["medical"]
    assert "adapter_model.safetensors" in detail.files
    shown = invoke("adapters", "show", "alpha:v1").stdout
    assert "metric.rouge_l" in shown and "health-qa-s0" in shown

    side_by_side = compare_adapters(["alpha", "beta:v1"])
    assert [d.label for d in side_by_side] == ["alpha:v1", "beta:v1"]
    compared = invoke("adapters", "compare", "alpha", "beta").stdout
    assert "rouge_l" in compared and "0.31" in compared and "2.5" in compared
    with pytest.raises(RegistryError, match="at least two"):
        compare_adapters(["alpha"])


def test_tags_are_added_and_removed_and_bad_tags_change_nothing(
    lineage_store: LineageStore,
) -> None:
    assert tag_adapter("alpha", add=["prod", "medical"]) == ["medical", "prod"]
    assert tag_adapter("alpha", remove=["medical"]) == ["prod"]
    before = store_state(lineage_store.home)
    for bad in ({"add": ["has space"]}, {"add": [""]}, {"remove": ["never-added"]}):
        with pytest.raises(RegistryError):
            tag_adapter("alpha", **bad)
    assert store_state(lineage_store.home) == before
    assert "alpha: prod, v-best" in invoke("adapters", "tag", "alpha", "--add", "v-best").stdout


def test_delete_removes_row_files_and_publications_together(
    lineage_store: LineageStore,
) -> None:
    with session_scope() as session:
        session.add(HubPublication(adapter_id=get_adapter("alpha").id, repo_id="alice/a"))
    assert delete_adapter("alpha") == ("alpha:v1", True)
    assert not lineage_store.alpha_path.exists()
    assert not list(lineage_store.alpha_path.parent.glob(".alpha-v1.deleting-*"))
    with pytest.raises(RegistryError, match="no adapter 'alpha'"):
        get_adapter("alpha")
    with session_scope() as session:
        assert session.scalars(select(HubPublication)).all() == []
        # The training run stays: it is history, not part of the adapter.
        assert session.get(TrainingRun, lineage_store.run_id) is not None


def test_delete_keeps_files_outside_the_home_and_unknown_names_change_nothing(
    lineage_store: LineageStore,
) -> None:
    result = invoke("adapters", "delete", "beta", "--yes")
    assert "files outside LORAFORGE_HOME left in place" in result.stdout
    assert (lineage_store.files.adapter_b / "adapter_model.safetensors").exists()
    before = store_state(lineage_store.home)
    with pytest.raises(RegistryError, match="no adapter 'gamma'"):
        delete_adapter("gamma")
    assert store_state(lineage_store.home) == before


def test_lineage_walks_from_adapter_to_crawl_runs_and_urls(lineage_store: LineageStore) -> None:
    lineage = adapter_lineage("alpha:v1")
    assert lineage.run is not None and lineage.run.id == lineage_store.run_id
    assert lineage.snapshot is not None and lineage.snapshot.name == "health-qa-s0"
    assert lineage.snapshot.split_sizes == {"train": 3, "test": 3}
    assert (lineage.qa_pairs, lineage.articles) == (6, 3)
    assert [c.id for c in lineage.crawl_runs] == [lineage_store.crawl_run_id]
    assert lineage.crawl_runs[0].source == "demo-health"
    assert lineage.urls == sorted(ARTICLE_URLS)
    assert lineage.languages == ["en"] and lineage.topics == ["health"]

    printed = invoke("adapters", "lineage", "alpha", "--urls", "2").stdout
    assert f"crawl run #{lineage_store.crawl_run_id}" in printed
    assert ARTICLE_URLS[0] in printed and "1 more" in printed
    assert adapter_lineage("beta").snapshot is None
