"""An Ollama Modelfile for an exported GGUF: its chat template, default system prompt and stops.

Ollama templates are Go templates, not Jinja, so the model's Jinja template cannot be copied.
ChatML (SmolLM2, the tiny base, Qwen and many more) is written out here; for any other template
the Modelfile leaves TEMPLATE out and Ollama falls back on the template stored in the GGUF.
"""

from __future__ import annotations

from typing import Any

from publishing.gguf_file import chat_template

CHATML_START, CHATML_END = "<|im_start|>", "<|im_end|>"
# The system prompt goes first and only once; Ollama also passes it in .Messages.
CHATML_TEMPLATE = (
    '{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}'
    '{{- range .Messages }}{{- if ne .Role "system" }}<|im_start|>{{ .Role }}\n'
    '{{ .Content }}<|im_end|>\n{{ end }}{{- end }}<|im_start|>assistant\n'
)
# Turn-ending tokens that, if the template uses them, must stop generation.
STOP_CANDIDATES = (CHATML_END, CHATML_START, "<|eot_id|>", "<|end|>", "</s>")
MAX_CONTEXT = 4096  # Ollama allocates the whole window up front; users raise it if they need


def default_system(tokenizer: Any) -> str | None:
    """The system prompt the chat template adds when the conversation has none (SmolLM2's)."""
    try:
        shown = tokenizer.apply_chat_template([{"role": "user", "content": "\ue000"}],
                                              tokenize=False, add_generation_prompt=True)
    except (ValueError, TypeError, AttributeError):
        return None
    head = f"{CHATML_START}system\n"
    if not isinstance(shown, str) or not shown.startswith(head) or CHATML_END not in shown:
        return None
    return shown[len(head):shown.index(CHATML_END)] or None


def _quoted(text: str) -> str:
    return '"""' + text.replace('"""', '\\"\\"\\"') + '"""'


def modelfile(model_file: str, tokenizer: Any, *, adapter_file: str | None = None,
              context_length: int | None = None) -> str:
    """The Modelfile text; file names are as Ollama should read them (relative to the
    Modelfile's folder, or absolute)."""
    template = chat_template(tokenizer) or ""
    lines = ["# Made by LoRAForge: `ollama create NAME -f Modelfile`, then `ollama run NAME`.",
             f"FROM {model_file}"]
    if adapter_file:
        lines.append(f"ADAPTER {adapter_file}")
    if CHATML_START in template and CHATML_END in template:
        lines.append(f"TEMPLATE {_quoted(CHATML_TEMPLATE)}")
        system = default_system(tokenizer)
        if system:
            lines.append(f"SYSTEM {_quoted(system)}")
    else:
        lines.append("# No TEMPLATE: Ollama uses the chat template stored in the GGUF file.")
    stops = [tokenizer.eos_token] if getattr(tokenizer, "eos_token", None) else []
    stops += [s for s in STOP_CANDIDATES if s in template]
    for stop in dict.fromkeys(stops):
        lines.append(f'PARAMETER stop "{stop}"')
    if context_length:
        lines.append(f"PARAMETER num_ctx {min(context_length, MAX_CONTEXT)}")
    return "\n".join(lines) + "\n"
