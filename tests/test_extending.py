"""docs/extending.md: its code blocks run as written, the names it documents are public, and the
tutorial notebook builds its task through public names only."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
DOC = ROOT / "docs" / "extending.md"


def code_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_doc_code_blocks_run_in_order():
    blocks = code_blocks(DOC.read_text())
    assert len(blocks) >= 6   # view set, sparse views, correlation, problem, strategy, denoiser
    ns: dict = {}
    for i, block in enumerate(blocks):
        try:
            exec(compile(block, f"{DOC.name}[block {i}]", "exec"), ns)
        except Exception as e:  # pragma: no cover - the message names the block
            pytest.fail(f"code block {i} of {DOC.name} fails: {type(e).__name__}: {e}")
    # the strategy and correlation written on the page did what they claim
    assert ns["res"].output.shape == (1, 6, 6)
    assert ns["views"].num_views == 2


def test_doc_names_exist():
    import syncsde.correlation as corr
    import syncsde.ops as ops
    import syncsde.sampler as sampler
    import syncsde.strategies as strategies
    import syncsde.tasks as tasks
    import syncsde.views as views

    text = DOC.read_text()
    for mod, names in ((views, ["ViewSet", "WindowViews", "PixelMapViews", "window_offsets"]),
                       (corr, ["Correlation", "PreviousView", "EarlierViews", "Explicit", "TwoSided"]),
                       (strategies, ["Strategy", "STRATEGIES", "make_strategy"]),
                       (sampler, ["Problem", "sample", "SamplingSchedule", "compose"]),
                       (tasks, ["SparseViews", "CoveredEarlierViews", "tileable_problem",
                                "panorama_problem", "hybrid_problem", "tileable_image",
                                "panorama_image", "hybrid_image"])):
        for n in names:
            assert hasattr(mod, n), f"{mod.__name__}.{n}"
    for op in ("crop_windows", "paste_windows_add", "paste_windows_on_top", "window_coverage",
               "window_average", "dihedral", "skew", "permute_pixels", "csr_apply",
               "csr_coverage", "normalize_accumulated", "nearest_seed", "rasterize", "ddim_step",
               "syncsde_step", "tweedie", "eps_from_x0", "eps_from_v", "cfg_combine", "lincomb"):
        assert op in text and hasattr(ops, op), op


def test_tutorial_notebook_uses_public_names_only():
    nb = json.loads((ROOT / "notebooks" / "new_task.ipynb").read_text())
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    private = re.findall(r"(?:from\s+syncsde[\w.]*\s+import\s+[^\n]*\b_\w+|syncsde[\w.]*\._\w+)", code)
    assert not private, private
    assert "Problem(" in code and "sample(" in code and "SparseViews" in code  # built from nothing
    # it is run end to end by tests/test_notebooks.py (which runs every notebook)
    import test_notebooks

    assert any(p.name == "new_task.ipynb" for p in test_notebooks.NOTEBOOKS)
