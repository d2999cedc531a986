"""The route when one process is not enough: the exact ``vllm serve`` command for a base and
its adapters, from the registry, so the same OpenAI clients work against vLLM unchanged.

The registry's adapter labels become vLLM's ``--lora-modules`` names, hence the ``model`` ids.
vLLM serves plain LoRA only: DoRA adapters, full fine-tunes and masked-diffusion bases are
refused with the reason.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from core.errors import LoraForgeError
from registry.adapter_files import not_plain_lora, read_adapter_config
from registry.adapters import list_adapters
from registry.bases import find_base

# vLLM accepts only these values for --max-lora-rank.
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


class VllmError(LoraForgeError):
    """The registry's records for a base cannot be served by vLLM as asked."""


@dataclass(frozen=True)
class VllmPlan:
    base: str
    model: str  # what vLLM loads: the base's local copy, else its Hub id
    adapters: dict[str, str]  # model id (adapter label) -> adapter folder
    max_lora_rank: int
    max_loras: int
    argv: list[str]

    @property
    def command(self) -> str:
        return shlex.join(self.argv)


def vllm_plan(base_name: str, *, host: str = "127.0.0.1", port: int = 8000,
              max_loras: int | None = None) -> VllmPlan:
    """The plan for one base; a key is given to vLLM through VLLM_API_KEY, never the argv."""
    base = find_base(base_name)
    if base is None:
        raise VllmError(f"no base model called {base_name!r}; see `loraforge base list`")
    if base.kind != "causal":
        raise VllmError(f"{base_name!r} is a {base.kind} base; vLLM serves causal LMs only")
    adapters: dict[str, str] = {}
    ranks = []
    for adapter in list_adapters():
        if adapter.base_name != base_name:
            continue
        config = read_adapter_config(Path(adapter.path), f"adapter {adapter.label}")
        problem = not_plain_lora(config)
        if problem:
            raise VllmError(f"{adapter.label} is {problem}, which vLLM cannot serve; merge it "
                            "(`loraforge adapters merge`) and serve that model instead")
        ranks.append(max([int(config.get("r", 8)), *map(int, (config.get("rank_pattern")
                                                               or {}).values())]))
        adapters[adapter.label] = adapter.path
    if not adapters:
        raise VllmError(f"base {base_name!r} has no adapters to serve; train or pull one first")
    rank = next((r for r in VLLM_LORA_RANKS if r >= max(ranks)), None)
    if rank is None:
        raise VllmError(f"an adapter of {base_name!r} has rank {max(ranks)}, above vLLM's "
                        f"largest --max-lora-rank ({VLLM_LORA_RANKS[-1]})")
    loras = max_loras or len(adapters)
    argv = ["vllm", "serve", base.model_path, "--served-model-name", base_name, "--host", host,
            "--port", str(port), "--enable-lora", "--lora-modules",
            *(f"{label}={path}" for label, path in adapters.items()),
            "--max-lora-rank", str(rank), "--max-loras", str(loras)]
    return VllmPlan(base_name, base.model_path, adapters, rank, loras, argv)
