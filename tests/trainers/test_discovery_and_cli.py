"""Plugin discovery rejects misshapen backends by package; the CLI groups work and show help."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest
from typer.testing import CliRunner

from curation.cli import data_app
from trainers import discovery
from trainers.cli import base_app, train_app
from trainers.errors import TrainerError

runner = CliRunner()


class NotABackend:
    name = "broken"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (EntryPoint("Lora2", "trainers.backends.lora:LoraBackend", discovery.GROUP), "lowercase"),
        (EntryPoint("broken", f"{__name__}:NotABackend", discovery.GROUP), "config_class"),
        (EntryPoint("gone", "no_such_module:Backend", discovery.GROUP), "failed to load"),
    ],
)
def test_misshapen_plugins_are_rejected_with_their_name(monkeypatch, entry, message):
    monkeypatch.setattr(discovery, "entry_points", lambda group: [entry])
    discovery.discover_backends.cache_clear()
    try:
        with pytest.raises(TrainerError, match=message) as info:
            discovery.discover_backends()
        assert entry.name in str(info.value) and "package" in str(info.value)
    finally:
        discovery.discover_backends.cache_clear()


def test_data_build_and_list_from_the_command_line(qa_store):
    result = runner.invoke(data_app, ["build", "--name", "cli", "--limit", "10", "--seed", "2"])
    assert result.exit_code == 0, result.output
    assert "9 train" in result.output and "1 test" in result.output
    listing = runner.invoke(data_app, ["list"])
    assert listing.exit_code == 0 and "cli" in listing.output


def test_base_add_and_list_from_the_command_line(home):
    assert runner.invoke(base_app, ["add", "smol", "HuggingFaceTB/SmolLM2-135M"]).exit_code == 0
    listing = runner.invoke(base_app, ["list"])
    assert "smol" in listing.output


def test_train_help_shows_every_option_with_its_default():
    result = runner.invoke(train_app, ["--help"], terminal_width=200)
    assert result.exit_code == 0
    for option in ("--method", "--base", "--dataset", "--name", "--rank", "--alpha", "--lr",
                   "--max-steps", "--epochs", "--batch-size", "--max-length"):
        assert option in result.output
    assert "default: lora" in result.output and "default: 0.003" in result.output


def test_set_reads_exponents_without_a_dot_as_numbers():
    """YAML 1.1 reads 2e-3 as a string; `--set learning_rate=2e-3` must still be a number."""
    from trainers.run import parse_settings

    assert parse_settings(["learning_rate=2e-3", "rank=16", "alpha=3.5e1", "report_to=none",
                           "target_modules=[q_proj, v_proj]"]) == {
        "learning_rate": 0.002, "rank": 16, "alpha": 35.0, "report_to": "none",
        "target_modules": ["q_proj", "v_proj"]}
