"""Notebook conventions, checked on every committed notebook (cheap: no kernel is started)."""
import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
REQUIRED_KNOBS = {"PROFILE", "SMOKE", "SEED", "OUTPUT_DIR"}
# Upper-case names a notebook may define outside its parameters cell: not knobs.
NOT_KNOBS = {"ROOT", "NB"}
MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
DATED = re.compile(rf"\b\d{{1,2}} ({MONTHS})\b|\b({MONTHS}) \d{{1,2}}, 20\d\d\b|\b20\d\d-\d\d-\d\d\b")


def _nb(path):
    return json.loads(path.read_text())


def _code(nb):
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def _src(cell):
    return "".join(cell["source"])


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found"
    numbers = [p.name[:2] for p in NOTEBOOKS]
    assert numbers == sorted(set(numbers)), "notebook numbers must be unique"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
class TestConventions:
    def test_kernelspec(self, path):
        ks = _nb(path)["metadata"].get("kernelspec", {})
        assert ks.get("name") == "python3" and ks.get("language") == "python"

    def test_one_parameters_cell_with_every_knob(self, path):
        nb = _nb(path)
        tagged = [c for c in _code(nb) if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, "exactly one cell must be tagged 'parameters'"
        tree = ast.parse(_src(tagged[0]))
        names = set()
        for node in tree.body:
            assert isinstance(node, ast.Assign), f"the parameters cell holds plain assignments only: {ast.dump(node)[:80]}"
            ast.literal_eval(node.value)  # papermill overrides must be literals
            names |= {t.id for t in node.targets}
        assert REQUIRED_KNOBS <= names
        # no knob hides elsewhere: other cells may re-assign parameters (smoke shrinking) but define no new ones
        for cell in _code(nb):
            if cell is tagged[0]:
                continue
            for node in ast.walk(ast.parse(_src(cell))):
                if isinstance(node, ast.Assign):
                    for t in node.targets:
                        for n in ast.walk(t):
                            if isinstance(n, ast.Name) and n.id.isupper() and n.id not in names | NOT_KNOBS:
                                pytest.fail(f"{n.id} looks like a knob outside the parameters cell")

    def test_papermill_reads_every_knob(self, path, caplog):
        """papermill's own parser (what `papermill --help-notebook` and Colab's forms read) must see every
        knob; a comment it cannot parse only logs a warning, so the count is what fails."""
        from papermill.translators import PythonTranslator
        cell = next(c for c in _code(_nb(path)) if "parameters" in c.get("metadata", {}).get("tags", []))
        n_assign = sum(isinstance(node, ast.Assign) for node in ast.parse(_src(cell)).body)
        with caplog.at_level("WARNING"):
            parsed = PythonTranslator.inspect({"source": _src(cell)})
        assert len(parsed) == n_assign, [r.getMessage() for r in caplog.records]

    def test_colab_badge_points_at_this_notebook(self, path):
        md = "".join(_src(c) for c in _nb(path)["cells"] if c["cell_type"] == "markdown")
        m = re.search(r"colab\.research\.google\.com/github/[^)\s]+/blob/main/notebooks/([^)\s]+\.ipynb)", md)
        assert m and m.group(1) == path.name
        assert "colab-badge.svg" in md

    def test_repository_address_is_the_one_in_helpers(self, path):
        """Badge and setup cell use helpers.REPOSITORY, so a move of the repository is one edit plus this test."""
        from helpers import REPOSITORY
        text = "".join(_src(c) for c in _nb(path)["cells"])
        owner_repo = REPOSITORY.removeprefix("https://github.com/")
        badges = re.findall(r"colab\.research\.google\.com/github/([^/]+/[^/]+)/blob/", text)
        clones = re.findall(r'"git", "clone", "--depth", "1", "([^"]+)"', text)
        assert badges == [owner_repo] and clones == [REPOSITORY], (badges, clones)

    def test_no_dated_measurements_in_prose(self, path):
        """Numbers of a past run belong in docs/results.md; a notebook's reference numbers come from the
        committed snapshot (report.beside_reference), printed by code."""
        for cell in _nb(path)["cells"]:
            if cell["cell_type"] != "markdown":
                continue
            text = _src(cell)
            assert not DATED.search(text), DATED.search(text).group(0)
            assert "Reference numbers" not in text

    def test_shows_the_reference_run_beside_this_one(self, path):
        code = "".join(_src(c) for c in _code(_nb(path)))
        assert "report.beside_reference(OUTPUT_DIR, NB, rt.profile)" in code

    def test_setup_cell_works_everywhere(self, path):
        code = [_src(c) for c in _code(_nb(path))]
        setup = [s for s in code if '"google.colab" in sys.modules' in s]
        assert len(setup) == 1, "one setup cell that detects Colab"
        s = setup[0]
        assert "pip" in s and "torch" not in s.replace("# ", ""), "the Colab install must not reinstall torch"
        assert '(p / "helpers" / "__init__.py")' in s, "finds the repo root from any working directory"
        assert any("runtime.setup(" in c for c in code), "prints the profile and versions"
        assert any("write_metrics(" in c for c in code), "writes its metrics JSON for the report"

    def test_outputs_are_stripped(self, path):
        nb = _nb(path)
        for cell in _code(nb):
            assert cell.get("outputs") == [] and cell.get("execution_count") is None
        assert "widgets" not in nb["metadata"]

    def test_no_helper_code_in_notebooks(self, path):
        for cell in _code(_nb(path)):
            for node in ast.walk(ast.parse(_src(cell))):
                assert not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)), \
                    "functions and classes belong in helpers/, not in a notebook"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_parameters_cell_comments_are_one_line(path):
    """A lesson's knobs read at a glance: one comment line per knob; the history of a choice lives in docs/."""
    cell = next(c for c in _code(_nb(path)) if "parameters" in c.get("metadata", {}).get("tags", []))
    continued = [line for line in _src(cell).splitlines() if line.lstrip().startswith("#") and line.startswith(" ")]
    assert not continued, continued
