"""A tiny LLaDA-style masked-diffusion LM: a Llama whose attention sees the whole sequence.

This file is copied next to the weights of every tiny diffusion base LoRAForge builds and is
loaded with ``trust_remote_code=True``, the same way LLaDA ships its ``modeling_llada.py``, so
the path that loads it is the path that loads a real LLaDA checkpoint. It imports nothing but
torch and transformers.
"""

from __future__ import annotations

import torch
from transformers import LlamaConfig
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_outputs import BaseModelOutput, CausalLMOutput
from transformers.models.llama.modeling_llama import LlamaModel, LlamaPreTrainedModel


class TinyMdmConfig(LlamaConfig):
    """Llama's config plus the id of the mask token the model denoises."""

    model_type = "tiny_mdm"

    def __init__(self, mask_token_id: int | None = None, **kwargs) -> None:
        self.mask_token_id = mask_token_id
        kwargs.setdefault("use_cache", False)  # nothing to cache: every step rereads everything
        super().__init__(**kwargs)


class TinyMdmModel(LlamaModel):
    """Llama's decoder stack without the causal mask (padding is still masked out)."""

    config_class = TinyMdmConfig

    def __init__(self, config: TinyMdmConfig) -> None:
        super().__init__(config)
        for layer in self.layers:
            layer.self_attn.is_causal = False

    def forward(self, input_ids=None, attention_mask=None, position_ids=None,
                inputs_embeds=None, **kwargs) -> BaseModelOutput:
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        if position_ids is None:
            position_ids = torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device)[None]
        mask = create_bidirectional_mask(config=self.config, inputs_embeds=inputs_embeds,
                                         attention_mask=attention_mask)
        hidden = inputs_embeds
        position_embeddings = self.rotary_emb(hidden, position_ids=position_ids)
        for layer in self.layers:
            hidden = layer(hidden, attention_mask=mask, position_ids=position_ids,
                           position_embeddings=position_embeddings, is_causal=False)
        return BaseModelOutput(last_hidden_state=self.norm(hidden))


class TinyMdmModelLM(LlamaPreTrainedModel):
    """Logits for every position of a partly masked sequence; it has no ``generate``."""

    config_class = TinyMdmConfig
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: TinyMdmConfig) -> None:
        super().__init__(config)
        self.model = TinyMdmModel(config)
        self.lm_head = torch.nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: torch.nn.Module) -> None:
        self.model.embed_tokens = value

    def forward(self, input_ids=None, attention_mask=None, position_ids=None,
                inputs_embeds=None, **kwargs) -> CausalLMOutput:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask,
                            position_ids=position_ids, inputs_embeds=inputs_embeds)
        return CausalLMOutput(logits=self.lm_head(hidden.last_hidden_state))


TinyMdmConfig.register_for_auto_class()
TinyMdmModelLM.register_for_auto_class("AutoModel")
