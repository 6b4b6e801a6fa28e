"""The default models by id (offline copies are resolved by :mod:`hf_select.models`). Imports nothing, so that
config dataclasses and ``--help`` can name their defaults without loading torch.

Example:
    >>> DEFAULT_LM
    'HuggingFaceTB/SmolLM2-135M-Instruct'
"""

DEFAULT_LM = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEFAULT_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"
