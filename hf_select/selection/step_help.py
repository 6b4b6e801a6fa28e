"""The meaning of each parameter of the built-in selection steps whose functions do not document their parameters
in an ``Args:`` section (the steps of :mod:`.filters`, :mod:`.length` and :mod:`.target`); :mod:`.steps` hands them
to :func:`~hf_select.selection.steps.register_step`. The steps :mod:`.steps` defines itself, ``consistency_gate`` and
``fused_diverse`` document theirs in their docstrings. ``tests/test_step_reference.py`` checks that every parameter
of every registered step has exactly one meaning and that no entry here names a parameter the step lacks.

Example:
    >>> PARAM_HELP["threshold"]["strict"]
    '``true``: ``min < value < max`` instead of ``<=``.'
"""

from __future__ import annotations

_BUDGET = {
    "count": "rows to keep.",
    "fraction": "or a share of the rows (what it counts: ``of``).",
}
_MAPPING = "your column names -> instruction/output/messages/... (as the scorers take it), for reading the texts."
PARAM_HELP: dict[str, dict[str, str]] = {
    "threshold": {
        "column": "the numeric column compared (required).",
        "min": "the lowest value kept (``None``: no lower bound).",
        "max": "the highest value kept (``None``: no upper bound).",
        "strict": "``true``: ``min < value < max`` instead of ``<=``.",
    },
    "top": {
        "column": "the numeric column ranked (required).",
        **_BUDGET,
        "of": "``all`` (a share of all input rows) or ``scored`` (of the rows with a score).",
        "descending": "``true``: the highest values; ``false``: the lowest.",
    },
    "ifd_rule": {
        **_BUDGET,
        "column": "the IFD column (``ifd``, or ``ifd_ppl`` for Superfiltering's perplexity ratio).",
        "status_column": "its status column: rows not ``ok`` are dropped as ``<status_column>:<status>``.",
        "max_ifd": "rows with IFD >= this are dropped (``ifd_ge_1``).",
        "of": "what ``fraction`` counts: ``all`` rows (Superfiltering), the ``eligible`` rows left after the IFD "
              "rule (Cherry LLM), or the ``scored`` rows.",
    },
    "token_budget": {
        "budget": "training tokens to fill (required).",
        "tokens_column": "the column of token counts (``response_tokens``, written by IFD scoring), or a list of "
                         "columns summed.",
        "tokenizer": "a loaded tokenizer object (from Python only) to count ``text`` when there is no such column.",
        "text": "what the tokenizer counts: ``row`` (prompt + response) or ``response``.",
        "template": "prompt template of the counted text (``plain``, ``alpaca``, ``vicuna``).",
        "order_by": "the column ranked, highest first (``None``: dataset order).",
        "descending": "with ``order_by``: ``false`` takes the lowest first.",
        "fill": "``true``: after a row that does not fit, later smaller rows may still fill the budget.",
        "column_mapping": _MAPPING,
    },
    "dedup_exact": {
        "text": "the text compared: ``row``, ``instruction``, ``prompt`` or ``response``.",
        "column": "or a text column read as it is.",
        "prefer": "a numeric column: of each group of duplicates the highest row is kept (``None``: the first).",
        "template": "prompt template of the compared text (``plain``, ``alpaca``, ``vicuna``).",
        "column_mapping": _MAPPING,
    },
    "dedup_near": {
        "threshold": "cosine similarity at or above which a row is a near duplicate of an earlier kept row.",
        "column": "the embedding column.",
        "prefer": "a numeric column: rows are visited highest first, so the best of near duplicates stays.",
        "block_size": "rows compared with the kept rows at once (memory: block x kept similarities).",
        "device": "torch device of the similarities (default: a GPU when there is one, else the CPU).",
    },
    "length_stratified_top": {
        "column": "the numeric column ranked (required).",
        **_BUDGET,
        "of": "``all`` (a share of all input rows) or ``scored`` (of the rows with a score).",
        "descending": "``true``: the highest values; ``false``: the lowest.",
        "mode": "``strata`` (the top inside equal-frequency response-length bins) or ``residual`` (rank by the "
                "score's residual after log length).",
        "bins": "length bins in ``strata`` mode.",
        "length_column": "the column holding each row's length (``None``: ``response_tokens`` when present, else "
                         "the response's characters).",
        "standardise": "``residual`` mode: divide the residual by its expected size at that length.",
        "column_mapping": _MAPPING,
    },
    "target_similarity": {
        "target": "the target set's embeddings: a matrix (list of vectors), a ``.npy`` file, or a dataset file or "
                  "folder with an embedding column; ``hf-select select --target FILE`` fills it in.",
        **_BUDGET,
        "of": "``all`` (a share of all input rows) or ``scored`` (of the rows with an embedding).",
        "aggregate": "similarity to the target set: ``max`` over targets, ``mean``, or ``round_robin`` (each "
                     "target in turn takes its nearest row).",
        "column": "the pool's embedding column.",
        "target_column": "the targets' embedding column (when the target is a dataset or a file).",
    },
}
