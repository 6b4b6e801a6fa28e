"""``evaluate`` modules shipped inside hf-select, loaded from the installed package with ``evaluate.load(path)``: no
Hub, no network.

- :data:`HELDOUT_LOSS`: the held-out completion loss of :func:`hf_select.heldout.heldout_loss` (every completion
  token's cross-entropy given its prompt, over the tokens scored) as an ``evaluate.Metric``, for the rows of your own
  code: ``instruction`` and ``output`` lists, and the model (a folder or Hub id, or a loaded model with its
  ``tokenizer``) as a keyword argument of ``compute``.

Example:
    >>> HELDOUT_LOSS.name, (HELDOUT_LOSS / "heldout_loss.py").is_file()
    ('heldout_loss', True)
    >>> import evaluate
    >>> metric = evaluate.load(str(HELDOUT_LOSS))  # doctest: +SKIP
    >>> metric.compute(instruction=["Add 2 and 3."], output=["5"], model="runs/quickstart-cpu/model")  # doctest: +SKIP
    {'heldout_loss': 1.91, 'row_mean_loss': 1.91, 'rows_scored': 1, 'tokens_scored': 3, 'rows_truncated': 0, ...}
"""

from __future__ import annotations

from pathlib import Path

METRICS_DIR = Path(__file__).resolve().parent
HELDOUT_LOSS = METRICS_DIR / "heldout_loss"
