"""The command line under bad input and interruption: one line, a non-zero exit, no traceback,
no half-written file under a final name."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from syncsde import __version__
from syncsde.cli import main


def _run(argv, capsys):
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own errors
        rc = e.code
    err = capsys.readouterr().err.strip()
    return rc, err


def _one_line_error(rc, err, *words):
    assert rc not in (0, None), err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines, "no message"
    last = lines[-1]
    for w in words:
        assert w in last, (w, last)


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"syncsde {__version__}"


@pytest.mark.parametrize("argv, words", [
    (["demo", "--steps", "0"], ["--steps", ">= 1"]),
    (["demo", "--steps", "abc"], ["--steps", "integer"]),
    (["demo", "--samples", "-3"], ["--samples"]),
    (["bench", "--samples", "0"], ["--samples", ">= 1"]),
    (["bench", "--steps", "2.5"], ["--steps", "integer"]),
    (["bench", "--tasks", "wide,nope"], ["--tasks", "nope"]),
    (["bench", "--tasks", ","], ["--tasks"]),
    (["wide", "--prompt", "x", "--steps", "0"], ["--steps"]),
    (["wide", "--prompt", "x", "--max-batch", "0"], ["--max-batch", ">= 1"]),
    (["wide", "--prompt", "x", "--guidance", "nan"], ["--guidance", "finite"]),
    (["wide", "--prompt", "x", "--inv-lambda", "inf"], ["--inv-lambda", "finite"]),
    (["wide", "--prompt", "x", "--width", "-8"], ["--width"]),
    (["wide", "--prompt", "x", "--device", "cuda:7"], ["--device"]),
    (["wide", "--prompt", "x", "--device", "banana"], ["--device", "banana"]),
    (["wide", "--prompt", "x", "--device", "meta"], ["--device", "meta"]),
])
def test_bad_numbers_and_devices(argv, words, capsys, tmp_path):
    if argv[0] != "bench":
        argv = argv + ["--out", str(tmp_path)]
    rc, err = _run(argv, capsys)
    _one_line_error(rc, err, *words)


def test_out_under_a_file_or_unwritable(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    rc, err = _run(["demo", "--out", str(f / "sub"), "--steps", "2", "--quiet"], capsys)
    _one_line_error(rc, err, "--out", "is a file")
    rc, err = _run(["wide", "--prompt", "x", "--out", str(f), "--device", "cpu"], capsys)
    _one_line_error(rc, err, "--out", "is a file")
    rc, err = _run(["bench", "--json", str(f / "x.json"), "--samples", "10"], capsys)
    _one_line_error(rc, err, "--json", "is a file")
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        rc, err = _run(["demo", "--out", str(ro / "x"), "--steps", "2", "--quiet"], capsys)
        _one_line_error(rc, err, "--out")


@pytest.mark.parametrize("mask, words", [
    ("missing.png", ["--mask", "no such file"]), ("text.png", ["--mask", "not a readable image"]),
    ("folder", ["--mask", "folder"])])
def test_mask_is_checked_before_the_model_loads(tmp_path, capsys, monkeypatch, mask, words):
    import syncsde.models as models

    def no_model(*a, **k):
        raise AssertionError("the model was loaded before the mask was checked")

    monkeypatch.setattr(models, "load_pipeline", no_model)
    (tmp_path / "text.png").write_text("hello")
    (tmp_path / "folder").mkdir()
    rc, err = _run(["mask", "--mask", str(tmp_path / mask), "--background", "a", "--object", "b",
                    "--combined", "c", "--out", str(tmp_path / "o"), "--device", "cpu"], capsys)
    _one_line_error(rc, err, *words)
    rc, err = _run(["edit", "--image", str(tmp_path / mask), "--source-prompt", "a cat",
                    "--out", str(tmp_path / "o"), "--device", "cpu"], capsys)
    _one_line_error(rc, err, "--image")


def test_missing_model_is_one_line(tmp_path, capsys):
    rc, err = _run(["wide", "--prompt", "x", "--model", str(tmp_path / "nomodel"),
                    "--out", str(tmp_path / "o"), "--device", "cpu"], capsys)
    _one_line_error(rc, err, "nomodel")


def test_ctrl_c_exits_130_with_one_line_and_no_partial_file(tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    p = subprocess.Popen([sys.executable, "-m", "syncsde", "bench", "--samples", "2000",
                          "--steps", "50", "--tasks", "wide,mask,edit", "--json", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        first = p.stdout.readline()  # the first progress line: the run is under way
        assert first, p.stderr.read()
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=120)
    finally:
        p.kill()
    assert p.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines() == ["syncsde bench: interrupted"]
    assert not out.exists()
    assert os.listdir(tmp_path) == []  # no temporary file left behind either


def test_atomic_writer_leaves_the_old_file_on_failure(tmp_path):
    from syncsde.atomic import atomic_save_npy, atomic_write_json

    path = tmp_path / "a.json"
    atomic_write_json(path, {"v": 1})

    class Boom:
        pass

    with pytest.raises(TypeError):
        atomic_write_json(path, {"v": Boom()})
    assert path.read_text().strip().replace(" ", "").replace("\n", "") == '{"v":1}'
    assert sorted(os.listdir(tmp_path)) == ["a.json"]
    atomic_save_npy(tmp_path / "x.npy", np.arange(4))
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), np.arange(4))
    with pytest.raises(ValueError):  # object arrays are never pickled
        atomic_save_npy(tmp_path / "y.npy", np.array([Boom()], dtype=object))
    assert not (tmp_path / "y.npy").exists()


def test_atomic_files_get_the_usual_permissions(tmp_path):
    from syncsde.atomic import atomic_write_text

    path = tmp_path / "plain.txt"
    with open(tmp_path / "reference.txt", "w") as f:  # what a plain open() gives
        f.write("x")
    atomic_write_text(path, "x")
    assert (path.stat().st_mode & 0o777) == ((tmp_path / "reference.txt").stat().st_mode & 0o777)
