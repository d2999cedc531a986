"""``adapters merge``: the adapter folded into its base gives the base-plus-adapter logits."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from publishing.errors import ExportError
from publishing.merge import merge_adapter
from registry.db import session_scope
from registry.models import Adapter
from tests.registry.conftest import LineageStore


def test_merged_model_logits_equal_base_plus_adapter(
    lineage_store: LineageStore, tmp_path: Path
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = merge_adapter("alpha", tmp_path / "merged")
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    assert (out / "tokenizer.json").is_file()

    ids = torch.tensor([[1, 5, 9, 42, 7, 3, 100, 64]])
    base = AutoModelForCausalLM.from_pretrained(lineage_store.files.base, dtype=torch.float32)
    with torch.no_grad():
        base_logits = base(ids).logits
        expected = PeftModel.from_pretrained(base, lineage_store.alpha_path).eval()(ids).logits
        merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
        actual = merged(ids).logits
    assert not torch.allclose(base_logits, expected, atol=1e-3)  # the adapter matters
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4)

    with pytest.raises(ExportError, match="not empty"):
        merge_adapter("alpha", out)
    with session_scope() as session:
        assert session.scalars(select(Adapter)).all()  # merging never touches the registry
