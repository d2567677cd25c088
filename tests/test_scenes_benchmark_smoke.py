"""Smoke run of benchmarks/scenes.py (the full run is a script: docs/benchmarks.md)."""
from __future__ import annotations

import json

import pytest
from benchmark_scripts import load_benchmark


def _module():
    return load_benchmark("scenes")


def test_scenes_benchmark_runs_the_mask_and_ambiguous_tasks(tmp_path):
    mod = _module()
    out = tmp_path / "r.json"
    assert mod.main(["--n", "1", "--steps", "2", "--tasks", "mask,ambiguous", "--strategies",
                     "mask=syncsde;inpaint:corrector_steps=1,snr=1.0/ambiguous=poe:corrector_steps=1,snr=0.1",
                     "--json", str(out)]) == 0
    res = json.loads(out.read_text())["results"]
    assert set(res["mask"]) == {"syncsde", "inpaint:corrector_steps=1,snr=1.0"}
    for r in res["mask"].values():
        assert 0 <= r["object_inside_mask"] <= r["object_present"] <= 1
        assert 0 <= r["attribute_accuracy"] <= 1
    assert 0 <= res["ambiguous"]["poe:corrector_steps=1,snr=0.1"]["accuracy_both_readings"] <= 1


def test_strategy_specs_parse_options_and_refuse_bad_ones():
    mod = _module()
    label, strat = mod.parse_strategy("poe:corrector_steps=2,snr=0.25")
    assert label == "poe:corrector_steps=2,snr=0.25"
    assert strat.corrector_steps == 2 and strat.snr == 0.25
    assert mod.parse_strategy("syncsde") == ("syncsde", "syncsde")
    with pytest.raises(SystemExit, match="key=value"):
        mod.parse_strategy("poe:corrector_steps")
    with pytest.raises(ValueError, match="takes no option"):
        mod.parse_strategy("poe:bogus=1")


def test_wide_rows_do_not_depend_on_their_order_and_pictures_are_written(tmp_path):
    """Each row's crop KID uses its own crop positions (a row's figure does not change when
    other strategies run before it); --model takes a pipeline folder; --pictures writes a PNG."""
    from PIL import Image

    from syncsde.scenes.model import PIPELINE_DIR

    mod = _module()
    res = []
    for order in ("multidiffusion;regiongraph", "regiongraph;multidiffusion"):
        out = tmp_path / f"{len(res)}.json"
        args = ["--n", "1", "--steps", "2", "--tasks", "wide", "--strategies", f"wide={order}",
                "--model", str(PIPELINE_DIR), "--json", str(out)]
        if not res:
            args += ["--pictures", str(tmp_path / "wide.png")]
        assert mod.main(args) == 0
        rows = json.loads(out.read_text())["results"]["wide"]
        res.append({k: {m: v for m, v in r.items() if m != "seconds_per_sample"}
                    for k, r in rows.items()})
    assert res[0] == res[1]
    assert set(res[0]) == {"generator", "model windows", "multidiffusion", "regiongraph"}
    with Image.open(tmp_path / "wide.png") as im:
        assert im.size[0] > 300 and im.size[1] > 100


def test_edit_tau_is_checked():
    mod = _module()
    with pytest.raises(SystemExit, match="edit-tau"):
        mod.main(["--n", "1", "--tasks", "edit", "--edit-tau", "1.5"])


def test_wide_rows_carry_standard_errors_per_seed_values_and_the_guidance_scale(tmp_path):
    import numpy as np

    mod = _module()
    out = tmp_path / "g.json"
    assert mod.main(["--n", "2", "--steps", "2", "--tasks", "wide", "--guidance-scale", "1.5",
                     "--strategies", "wide=multidiffusion", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["guidance_scale"] == 1.5
    rows, per = doc["results"]["wide"], doc["wide_per_sample"]
    assert len(per["multidiffusion"]["suns"]) == 2 and len(per["generator"]["suns"]) == 8
    assert set(per) == {"generator", "multidiffusion"}
    for label in per:
        row = rows[label]
        for key in ("suns", "horizon_spread", "hue_intersection"):
            v = np.array(per[label][key])
            assert row[key] == pytest.approx(v.mean())
            assert row[key + "_se"] == pytest.approx(v.std(ddof=1) / np.sqrt(len(v)))
    # the window-law reference: the model's plain 32x32 samples, their KID floor and suns
    ref = rows["model windows"]
    assert ref["kid_windows"] >= 0 and ref["crop_suns"] >= 0
    for label in ("generator", "multidiffusion"):
        assert rows[label]["kid_windows"] >= 0 and rows[label]["crop_suns"] >= 0
    md = rows["multidiffusion"]
    assert md["suns_error"] == pytest.approx(abs(md["suns"] - rows["generator"]["suns"]))
    with pytest.raises(SystemExit, match="guidance-scale"):
        mod.main(["--n", "1", "--tasks", "wide", "--guidance-scale", "0.5"])


def test_wide_table_gives_paired_differences_from_the_baseline(tmp_path, capsys):
    mod = _module()
    per = {"multidiffusion": {"suns": [4, 2, 3], "horizon_spread": [3.0, 2.0, 2.5],
                              "hue_intersection": [0.8, 0.9, 0.85]},
           "regiongraph": {"suns": [5, 4, 3], "horizon_spread": [2.0, 2.0, 2.0],
                           "hue_intersection": [0.8, 0.9, 0.9]}}
    rows = {k: {"kid": 10.0, "kid_windows": 1.0, "crop_suns": 0.5, "seconds_per_sample": 1.0,
                **{f: float(sum(v) / 3) for f, v in per[k].items()}} for k in per}
    doc = {"n": 3, "results": {"wide": rows}, "wide_per_sample": per}
    table = mod.wide_table(doc)
    # regiongraph - multidiffusion, suns: (1, 2, 0): mean +1.000, SE 1/sqrt(3) = 0.577
    assert "4.00 (+1.000 ± 0.577)" in table
    assert "(-0.500 ± 0.289)" in table   # horizon: (-1, 0, -0.5)
    path = tmp_path / "doc.json"
    path.write_text(json.dumps(doc))
    assert mod.main(["--table-from", str(path)]) == 0
    assert "(+1.000 ± 0.577)" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="cannot read"):
        mod.main(["--table-from", str(tmp_path / "missing.json")])
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SystemExit, match="cannot read"):
        mod.main(["--table-from", str(tmp_path / "bad.json")])
    (tmp_path / "other.json").write_text("[1, 2]")
    with pytest.raises(SystemExit, match="no wide rows"):
        mod.main(["--table-from", str(tmp_path / "other.json")])


def test_sun_rates_cover_both_widths_and_scales(tmp_path):
    mod = _module()
    out = tmp_path / "rates.json"
    assert mod.main(["--sun-rates", "--n", "2", "--steps", "2", "--json", str(out)]) == 0
    rates = json.loads(out.read_text())["sun_rates"]
    assert set(rates) == {"16", "32"}
    for row in rates.values():
        assert set(row) == {"generator", "cfg 1.0", "cfg 3.0"}
        assert row["generator"] >= 0 and all(row[k][0] >= 0 for k in ("cfg 1.0", "cfg 3.0"))
