"""The folder ``evaluate.load`` reads the held-out loss metric from (``heldout_loss.py``); see
:mod:`hf_select.metrics`.

Example:
    >>> from hf_select.metrics import HELDOUT_LOSS
    >>> sorted(p.name for p in HELDOUT_LOSS.glob("*.py"))
    ['__init__.py', 'heldout_loss.py']
"""
