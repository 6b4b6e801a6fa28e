"""Tiny offline models for tests and examples: a byte-level BPE tokenizer with a chat template and random
Llama / sequence-classification models built from configs. Nothing is downloaded.

Example:
    >>> from hf_select.testing import make_tiny_lm
    >>> path = make_tiny_lm("/tmp/tiny-lm")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<pad>", "<|im_start|>", "<|im_end|>", "<unk>"]

_CORPUS = [
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.",
    "### Instruction:",
    "### Input:",
    "### Response:",
    "USER: ASSISTANT:",
    "The answer is 42.",
    "What is the capital of France? Paris is the capital of France.",
    "Add 2 and 3. 2 + 3 = 5",
    "Sort the list: [3, 1, 2] -> [1, 2, 3]",
    "Reverse the string hello: olleh",
    "def f(x): return x * 2",
    "system user assistant tool",
    "Translate to French: cat -> chat",
    "0123456789 +-*/=()[]{}<>,.;:!?'\"",
]


def make_tiny_tokenizer(vocab_size: int = 384, chat_template: bool = True) -> Any:
    """A byte-level BPE tokenizer (any text encodes) with ChatML-style special tokens and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<pad>", unk_token="<unk>"
    )
    if chat_template:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def make_tiny_lm(
    path: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    hidden_size: int = 64,
    num_layers: int = 2,
    chat_template: bool = True,
) -> Any:
    """A random tiny ``LlamaForCausalLM`` and its tokenizer; saved to ``path`` (returned) when given."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = make_tiny_tokenizer(chat_template=chat_template)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    if path is None:
        return model, tok
    Path(path).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return Path(path)


def make_tiny_classifier(path: str | os.PathLike | None = None, *, seed: int = 0, pad_token: bool = True) -> Any:
    """A random tiny Llama sequence-classification (reward) model with one label, and its tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    tok = make_tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_labels=1,
        pad_token_id=tok.pad_token_id if pad_token else None,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForSequenceClassification(config).eval()
    if not pad_token:
        tok.pad_token = None
    if path is None:
        return model, tok
    Path(path).mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return Path(path)
