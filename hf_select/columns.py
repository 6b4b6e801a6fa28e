"""Column names that several stages share: selection adds them, training and the callbacks carry them on.

This module imports nothing, so any module (formats, selection, training, callbacks, recipes, report) can take a
name from it without adding an import edge between those modules.

Example:
    >>> from hf_select.columns import ROW_ID
    >>> ROW_ID
    '_row_id'
"""

ROW_ID = "_row_id"
"""The row's index in the dataset a selection started from; :func:`hf_select.selection.select` adds it, and
training and :class:`hf_select.callbacks.PerRowLossCallback` report losses by it."""
