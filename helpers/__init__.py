"""Tiny RL Workbook helpers: one flat module per concept, imported by the notebooks.

Modules that score text (`rewards`, `evaluate`'s checker, `data`, `dictionary_tool`) import no
torch, so `import helpers` stays light and `python -m helpers.workbook --help` starts fast.
"""

__version__ = "0.1.0"
