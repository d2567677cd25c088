"""Smoke run of benchmarks/exact.py --families with --regiongraph-mix (the full run is a script:
docs/benchmarks.md)."""
from __future__ import annotations

import json

from benchmark_scripts import load_benchmark


def _module():
    return load_benchmark("exact")


def test_regiongraph_mix_rows_on_the_long_family(tmp_path, capsys):
    out = tmp_path / "mix.json"
    _module().main(["--families", "long", "--regiongraph-mix", "0.5", "--steps", "5",
                    "--samples", "50", "--json", str(out)])
    res = json.loads(out.read_text())
    assert len(res) >= 3
    for case in res.values():
        st = case["strategies"]
        assert {"oracle", "multidiffusion", "regiongraph", "regiongraph mix 0.5"} <= set(st)
        # the mix is a different strategy from both of its ends
        assert st["regiongraph mix 0.5"]["w2"] not in (st["regiongraph"]["w2"],
                                                       st["multidiffusion"]["w2"])
    text = capsys.readouterr().out
    assert "| case | multidiffusion | regiongraph | regiongraph mix 0.5 |" in text


def test_regiongraph_start_rows_cost_less_than_the_full_region_graph(tmp_path, capsys):
    out = tmp_path / "start.json"
    _module().main(["--families", "long", "--regiongraph-start", "0.5", "--steps", "4",
                    "--samples", "50", "--json", str(out)])
    res = json.loads(out.read_text())
    for case in res.values():
        st = case["strategies"]
        late = st["regiongraph start 0.5"]
        assert late["w2"] not in (st["regiongraph"]["w2"], st["multidiffusion"]["w2"])
        # region inputs on half the steps: halfway between the two in model inputs
        expected = 0.5 * (st["regiongraph"]["inputs_per_step"] + st["multidiffusion"]["inputs_per_step"])
        assert abs(late["inputs_per_step"] - expected) < 1e-9
    assert "| regiongraph start 0.5 |" in capsys.readouterr().out
