"""Tiny RL Workbook helpers: one flat module per concept, imported by the notebooks.

Modules that score text (`rewards`, `evaluate`'s checker, `data`, `dictionary_tool`) import no
torch, so `import helpers` stays light and `python -m helpers.workbook --help` starts fast.
"""

__version__ = "0.1.0"
# The one place the repository's address lives: Colab badges and the notebooks' setup cells must use it
# (tests/test_notebooks.py checks every notebook against it), and so does pyproject.toml's [project.urls].
REPOSITORY = "https://github.com/tiny-rl-workbook/tiny-rl-workbook"
