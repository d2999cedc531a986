"""Masked-diffusion LMs (LLaDA-style): the tiny test base, the objective, the sampler."""
