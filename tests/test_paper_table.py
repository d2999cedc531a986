"""benchmarks/paper_table.py: exact counts on the 7B shape, real steps at a toy size, the fit."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "paper_table.py"
TOY = {"hidden_size": 64, "intermediate_size": 160, "num_attention_heads": 4,
       "num_key_value_heads": 2, "vocab_size": 256}


@pytest.fixture(scope="module")
def paper_table():
    spec = importlib.util.spec_from_file_location("paper_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lora_count_on_the_7b_shape_matches_the_formula_and_llama2_size(paper_table):
    args = paper_table.parse_args([])
    config = paper_table.llama2_7b_config()
    lora_trainable, lora_total = paper_table.count_on_meta(config, "lora", args)
    full_trainable, full_total = paper_table.count_on_meta(config, "full", args)
    assert lora_trainable == paper_table.lora_trainable_formula(
        config, args.rank, args.target_modules.split(","))
    assert full_trainable == full_total == 6_738_415_616  # LLaMA-2-7B's published size
    assert lora_total == full_total + lora_trainable
    assert lora_trainable < full_trainable / 100


def test_formula_follows_grouped_query_attention_and_chosen_targets(paper_table):
    args = paper_table.parse_args(["--rank", "4", "--target-modules", "q_proj,v_proj,down_proj"])
    config = paper_table.llama2_7b_config(2, **TOY)
    trainable, _ = paper_table.count_on_meta(config, "qlora", args)
    assert trainable == paper_table.lora_trainable_formula(config, 4, ["q_proj", "v_proj",
                                                                       "down_proj"])


def test_measured_steps_train_what_was_counted(paper_table, tmp_path):
    args = paper_table.parse_args(["--seq-len", "32", "--steps", "1", "--warmup", "0",
                                   "--grad-accum", "2", "--rank", "4"])
    config = paper_table.llama2_7b_config(1, **TOY)
    paper_table.build_base(config, tmp_path / "base", "cpu")
    runs = {m: [paper_table.measure(m, tmp_path / "base", "cpu", args)]
            for m in paper_table.METHODS}
    for method, (run,) in runs.items():
        assert run["trainable_params"] == paper_table.count_on_meta(config, method, args)[0]
        assert run["samples_per_second"] > 0 and len(run["step_seconds"]) == 1
        assert run["layers"] == 1 and run["memory_kind"] == "peak_rss_minus_idle"
    assert runs["lora"][0]["trainable_params"] < runs["full"][0]["trainable_params"]


def test_32_layer_figures_are_extrapolated_from_a_line_or_taken_as_measured(paper_table):
    shallow = [{"layers": 1, "peak_memory_bytes": 3e9, "seconds_per_sample": 2.0,
                "samples_per_second": 0.5},
               {"layers": 2, "peak_memory_bytes": 5e9, "seconds_per_sample": 3.0,
                "samples_per_second": 1 / 3}]
    fit = paper_table.at_full_depth(shallow + [{"layers": 4, "error": "exit code -9: killed"}])
    assert fit["kind"] == "extrapolated"
    assert fit["memory_bytes"] == pytest.approx(3e9 + 31 * 2e9)
    assert fit["samples_per_second"] == pytest.approx(1 / (2.0 + 31 * 1.0))
    deep = {"layers": 32, "peak_memory_bytes": 7e9, "seconds_per_sample": 1.0,
            "samples_per_second": 1.0}
    assert paper_table.at_full_depth(shallow + [deep])["kind"] == "measured"
    assert paper_table.at_full_depth(shallow[:1]) is None


def test_table_names_failures_and_compares_ratios_with_the_study(paper_table):
    args = paper_table.parse_args(["--device", "cpu"])
    run = {"layers": 1, "peak_memory_bytes": 2e9, "seconds_per_sample": 2.0,
           "samples_per_second": 0.5}
    runs = {"lora": [run, run | {"layers": 2, "peak_memory_bytes": 3e9}],
            "full": [run | {"peak_memory_bytes": 8e9}, run | {"layers": 2,
                                                               "peak_memory_bytes": 11e9}],
            "qlora": [{"layers": 1, "error": "exit code 1: TrainerError: 4-bit cannot run"}]}
    counts = {"lora": (40, 1040), "full": (1000, 1000), "qlora": (40, 1040)}
    summary = paper_table.summarize(runs, counts)
    table = paper_table.markdown(summary | {"device": "cpu"}, args)
    assert summary["ratios"]["lora_to_full_memory"] == pytest.approx(33e9 / 101e9)
    assert "failed: exit code 1: TrainerError" in table
    assert "0.205" in table and "33.0 GB (extrapolated)" in table
