"""LoRA with peft's default initialization (Init[A] of Hayou et al. 2024).

Paper: Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022, arXiv 2106.09685.
Code: peft ``LoraLayer.reset_lora_parameters`` with ``init_lora_weights=True``:
A ~ Kaiming-uniform(a=sqrt(5)), B = 0, so the model starts unchanged.
"""

from initbench.api import InitMethod


class LoRA(InitMethod):
    summary = "peft default: A Kaiming-uniform (a=sqrt(5)), B = 0; starts at the base model."
    paper = "Hu et al. 2022, arXiv:2106.09685"
    code = "https://github.com/huggingface/peft (init_lora_weights=True)"
    peft_init = True
