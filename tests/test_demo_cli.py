"""The newcomer's commands: `syncsde demo` writes its pictures, `syncsde bench` its table."""
from __future__ import annotations

import json
import subprocess
import sys

from PIL import Image

from syncsde.cli import main


def test_demo_writes_pictures(tmp_path):
    assert main(["demo", "--out", str(tmp_path), "--steps", "6", "--samples", "300", "--quiet"]) == 0
    for name in ("wide.png", "ambiguous.png", "mask.png", "edit.png", "benchmark.png"):
        im = Image.open(tmp_path / name)
        assert im.width > 100 and im.height > 100
    for name in ("wide.png", "ambiguous.png", "mask.png", "edit.png"):
        info = Image.open(tmp_path / name).text  # settings travel in the PNG metadata
        assert info["model"] == "scenes"
        runs = json.loads(info["syncsde"])["runs"]
        assert all(r["model"] == "scenes" and r["num_inference_steps"] == 6 for r in runs.values())
    wide = json.loads(Image.open(tmp_path / "wide.png").text["syncsde"])
    assert set(wide["runs"]) == {"independent", "multidiffusion", "synctweedies", "syncsde", "collage"}
    assert Image.open(tmp_path / "wide.png").width >= 4 * 256  # 32x256 panoramas shown 4x
    amb = json.loads(Image.open(tmp_path / "ambiguous.png").text["syncsde"])["runs"]
    assert amb["poe"]["strategy"] == "poe"
    mask = json.loads(Image.open(tmp_path / "mask.png").text["syncsde"])["runs"]
    assert set(mask) == {"multidiffusion", "syncsde", "inpaint"}
    edit = json.loads(Image.open(tmp_path / "edit.png").text["syncsde"])["runs"]
    assert all(r["strategy"] == "inpaint" for r in edit.values())  # the edit task's default
    data = json.loads((tmp_path / "benchmark.json").read_text())
    assert set(data) == {"wide", "ambiguous", "mask", "edit", "motion"}
    assert "oracle" in data["wide"] and data["wide"]["collage"]["w2"] >= 0


def test_bench_json_schema(tmp_path):
    out = tmp_path / "b.json"
    assert main(["bench", "--samples", "300", "--steps", "5", "--tasks", "motion,ambiguous",
                 "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert set(data["motion"]["syncsde"]) == {"w2", "seam"}
    assert set(data["ambiguous"]["oracle"]) == {"w2"}


def test_python_dash_m_entry_point():
    res = subprocess.run([sys.executable, "-m", "syncsde", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "demo" in res.stdout


def test_missing_weights_is_a_message_not_a_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_hf_home"))
    rc = main(["wide", "--prompt", "a beach", "--out", str(tmp_path), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "stabilityai/stable-diffusion-2-base" in err and "hf download" in err
