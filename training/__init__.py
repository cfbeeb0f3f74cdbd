"""Separator training recipes: corpus builders, the trainer and their scripts (outside the runtime package).

Run from the repository root, e.g. ``python -m training.corpus build --out DIR`` or
``python -m training.train ...``. Needs ``pip install -e .[train]``; nothing here is shipped in the wheel.
"""
