"""syncsde eval: seeds, manifest validation, resume after SIGKILL, config changes, sharding."""
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from syncsde.eval.config import EvalConfigError, config_from_dict, load_config
from syncsde.eval.manifest import MANIFEST
from syncsde.eval.runner import run_eval, shard

TINY = """
name = "tiny"
seed = 1
num_inference_steps = 2
samples_per_prompt = 2
kid_subsets = 5
threads = 1

[strategies.syncsde]
name = "syncsde"
[strategies.md]
name = "multidiffusion"

[[tasks]]
name = "wide"
prompts = ["a sunset over the sea with mountains", "a snowy night with a moon"]
height = 32
width = 64
stride = 16
reference = {{ source = "{ref}", per_prompt = 2 }}
"""


def _write(tmp: Path, ref: str = "model", name: str = "tiny.toml") -> Path:
    p = tmp / name
    p.write_text(TINY.format(ref=ref))
    return p


def _state(out: Path) -> dict:
    """What must be equal between two runs: image bytes, manifest lines (without timings),
    tables (without the timing column)."""
    files = {str(p.relative_to(out)): p.read_bytes() for p in sorted((out / "images").rglob("*"))
             if p.is_file()}
    lines = [json.loads(ln) for ln in (out / MANIFEST).read_text().splitlines()]
    for e in lines:
        e.pop("seconds")
    with open(out / "results" / "wide.csv") as f:
        rows = [{k: v for k, v in r.items() if k != "s / image"} for r in csv.DictReader(f)]
    others = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()
                    and "images" not in p.parts)
    return {"files": files, "manifest": lines, "table": rows, "others": others}


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval_ref")
    cfg = _write(tmp)
    out = tmp / "out"
    res = run_eval(str(cfg), str(out), progress=False)
    return tmp, cfg, out, res


# ---- config and items ---------------------------------------------------------------------
def test_seed_depends_only_on_config_seed_task_prompt_strategy_index(tmp_path):
    base = load_config(_write(tmp_path))
    raw = {"seed": 1, "strategies": {"md": {"name": "multidiffusion"},
                                     "extra": {"name": "synctweedies"},
                                     "syncsde": {"name": "syncsde"}},
           "tasks": [{"name": "wide", "prompts": ["a snowy night with a moon",
                                                   "a day with trees",
                                                   "a sunset over the sea with mountains"],
                      "height": 32, "width": 64, "stride": 16, "samples_per_prompt": 3,
                      "num_inference_steps": 2, "reference": {"per_prompt": 2}}]}
    other = config_from_dict(raw)
    seeds = {(i.task, i.strategy, i.prompt, i.index): i.seed for i in other.items()}
    for it in base.items():
        assert seeds[(it.task, it.strategy, it.prompt, it.index)] == it.seed
    assert len({i.seed for i in other.items()}) == len(other.items())


def test_config_errors_name_the_key(tmp_path):
    bad = [("[strategies.a]\nname='nope'\n[[tasks]]\nprompts=['a day']", "strategies.a.name"),
           ("[strategies.a]\nname='syncsde'\n[[tasks]]\nprompt=['a day']", "tasks[0]: unknown key"),
           ("[strategies.a]\nname='syncsde'\n[[tasks]]\nprompts=[]", "tasks[0].prompts"),
           ("[strategies.a]\nname='syncsde'\n[[tasks]]\nprompts=['a day']\nstrategies=['b']",
            "tasks[0].strategies"),
           ("[strategies.a]\nname='syncsde'\n[[tasks]]\nprompts=['a day']\nwidth=16", "tasks[0].window"),
           ("colour = 1\n[strategies.a]\nname='syncsde'", "config: unknown key"),
           ("[strategies.reference]\n[[tasks]]\nprompts=['a day']", "reserved"),
           ("x = [", "not valid TOML")]
    for text, msg in bad:
        p = tmp_path / "c.toml"
        p.write_text(text)
        with pytest.raises(EvalConfigError, match=msg.replace("[", r"\[").replace("]", r"\]")):
            load_config(p)
    with pytest.raises(EvalConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")


def test_shards_partition_the_items(tmp_path):
    items = load_config(_write(tmp_path)).items()
    parts = [shard(items, r, 3) for r in range(3)]
    assert sorted(i.key for p in parts for i in p) == sorted(i.key for i in items)
    assert sum(len(p) for p in parts) == len(items)


# ---- runs ---------------------------------------------------------------------------------
def test_run_writes_manifest_tables_and_plots(reference_run):
    tmp, cfg, out, res = reference_run
    lines = (out / MANIFEST).read_text().splitlines()
    assert len(lines) == 2 * 2 * 2 + 2 * 2   # strategies x prompts x samples + references
    from syncsde.eval.manifest import sha256_file
    for ln in lines:
        e = json.loads(ln)
        assert sha256_file(out / e["file"]) == e["sha256"]
        assert e["config_hash"] == load_config(cfg).config_hash
    assert not (out / "manifest").exists()
    for name in ("wide.csv", "wide.md", "wide_metrics.png", "wide_quality_vs_time.png"):
        assert (out / "results" / name).is_file()
    assert [r["strategy"] for r in res["wide"]] == ["syncsde", "md"]
    md = (out / "results" / "wide.md").read_text()
    assert "KID x1e3" in md and "CLIP-S (cos)" in md and "CLIP-S x100" in md
    assert "Intra-Style-L (sum over pairs)" in md


def test_rerun_does_nothing(reference_run, tmp_path):
    tmp, cfg, out, _ = reference_run
    out2 = tmp_path / "out"
    shutil.copytree(out, out2)
    made = []
    run_eval(str(cfg), str(out2), progress=False, after_item=made.append)
    assert made == []
    assert _state(out2) == _state(out)


def test_corrupt_manifest_line_and_truncated_png_are_redone(reference_run, tmp_path):
    tmp, cfg, out, _ = reference_run
    out2 = tmp_path / "out"
    shutil.copytree(out, out2)
    lines = (out2 / MANIFEST).read_text().splitlines()
    lines[0] = lines[0][: len(lines[0]) // 2]                  # a torn line
    lines[1] = lines[1].replace('"sha256": "', '"sha256": "00')  # a mismatching hash
    (out2 / MANIFEST).write_text("\n".join(lines) + "\n{not json\n")
    victim = out2 / json.loads(lines[3])["file"]
    victim.write_bytes(victim.read_bytes()[:40])                # a truncated PNG
    made = []
    run_eval(str(cfg), str(out2), progress=False, after_item=made.append)
    assert len(made) == 3
    assert _state(out2) == _state(out)


def test_config_change_is_refused_unless_forced_or_new(reference_run, tmp_path):
    tmp, cfg, out, _ = reference_run
    out2 = tmp_path / "out"
    shutil.copytree(out, out2)
    changed = tmp_path / "changed.toml"
    changed.write_text(cfg.read_text().replace('name = "multidiffusion"', 'name = "synctweedies"'))
    with pytest.raises(EvalConfigError, match="--force"):
        run_eval(str(changed), str(out2), progress=False)
    made = []
    run_eval(str(changed), str(out2), progress=False, force=True, after_item=made.append)
    assert len(made) == 4          # only the changed strategy's images
    st = _state(out2)
    old = _state(out)
    assert all(st["files"][f] == old["files"][f] for f in st["files"] if "/md/" not in f)
    made = []
    run_eval(str(cfg), str(out2), progress=False, new=True, after_item=made.append)
    assert len(made) == 12
    assert _state(out2) == old


def test_sharded_run_merges_to_the_single_process_result(reference_run, tmp_path):
    """Two ranks run one after the other (barriers are no-ops): rank 1 makes its share, rank 0
    its own and merges; the result equals the single-process run."""
    tmp, cfg, out, _ = reference_run

    class Stub:
        def __init__(self, rank):
            self.rank, self.world = rank, 2

        def barrier(self):
            pass

    out2 = tmp_path / "out"
    made1, made0 = [], []
    assert run_eval(str(cfg), str(out2), progress=False, dist=Stub(1), after_item=made1.append) == {}
    assert (out2 / "manifest" / "rank1.jsonl").is_file() and not (out2 / MANIFEST).exists()
    run_eval(str(cfg), str(out2), progress=False, dist=Stub(0), after_item=made0.append)
    assert len(made0) == len(made1) == 6
    assert _state(out2) == _state(out)


def test_resume_after_sigkill_matches_uninterrupted_run(reference_run, tmp_path):
    tmp, cfg, out, _ = reference_run
    out2 = tmp_path / "out"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "syncsde.eval", str(cfg), "--out", str(out2),
                             "--no-progress"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    log = out2 / "manifest" / "rank0.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline:
        if log.is_file() and log.read_text().count("\n") >= 3:
            break
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    n_before = log.read_text().count("\n")
    assert 3 <= n_before < 12 and not (out2 / MANIFEST).exists()
    made = []
    run_eval(str(cfg), str(out2), progress=False, after_item=made.append)
    assert len(made) == 12 - n_before
    assert _state(out2) == _state(out)


def test_cli_generator_reference_and_errors(tmp_path, capsys):
    from syncsde.eval.cli import main

    cfg = tmp_path / "g.toml"
    cfg.write_text(TINY.format(ref="generator").replace('"a snowy night with a moon"', "")
                   .replace("with mountains\", ", "with mountains\"")
                   .replace("[strategies.md]\nname = \"multidiffusion\"\n", ""))
    assert load_config(cfg).tasks[0]["prompts"] == ["a sunset over the sea with mountains"]
    assert main([str(cfg), "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "reference: generator" in text and "| syncsde | 2 |" in text
    refs = sorted((tmp_path / "o" / "images" / "wide" / "reference").iterdir())
    assert len(refs) == 2                      # the generator's ground truth, not the model
    bad = tmp_path / "bad.toml"
    bad.write_text("[strategies.a]\nname = 'nope'\n[[tasks]]\nprompts = ['a day']\n")
    assert main([str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "strategies.a.name" in capsys.readouterr().err


def test_two_processes_under_accelerate_launch_equal_one(reference_run, tmp_path):
    pytest.importorskip("accelerate")
    tmp, cfg, out, _ = reference_run
    out2 = tmp_path / "out"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "syncsde.eval", str(cfg), "--out", str(out2), "--no-progress"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert _state(out2) == _state(out)
    assert "process 0 of 2: 6 images made" in r.stderr
    assert "process 1 of 2: 6 images made" in r.stderr
    assert "| syncsde | 4 |" in r.stdout


def test_per_prompt_fid_kid_scope(reference_run, tmp_path):
    """fid_scope = "per_prompt": FID/KID per prompt against that prompt's references, then the
    mean and std over prompts (recomputed here from the images on disk)."""
    import numpy as np
    import torch

    from syncsde.eval.generate import load_png
    from syncsde.metrics.features import ScenesFeatureNet
    from syncsde.metrics.fid_kid import fid

    tmp, cfg, out, _ = reference_run
    out2 = tmp_path / "out"
    shutil.copytree(out, out2)
    per = tmp_path / "per.toml"
    per.write_text(cfg.read_text().replace('stride = 16', 'stride = 16\nfid_scope = "per_prompt"'))
    made = []
    res = run_eval(str(per), str(out2), progress=False, after_item=made.append)
    assert made == []                      # the scope changes scores, not images
    net = ScenesFeatureNet()
    entries = [json.loads(ln) for ln in (out2 / MANIFEST).read_text().splitlines()]
    fids = []
    for p in range(2):
        gen, ref = [], []
        for e in entries:
            if e["prompt_index"] != p or e["strategy"] not in ("md", "reference"):
                continue
            img = load_png(out2 / e["file"])
            if e["strategy"] == "md":
                x0 = int(np.random.default_rng(e["seed"]).integers(0, img.shape[-1] - 32 + 1))
                gen.append(img[:, :, x0:x0 + 32])
            else:
                ref.append(img)
        fids.append(fid(net.features(torch.stack(gen)).numpy(), net.features(torch.stack(ref)).numpy()))
    row = next(r for r in res["wide"] if r["strategy"] == "md")
    assert row["FID"] == pytest.approx(np.mean(fids), rel=1e-6)
    assert row["FID std"] == pytest.approx(np.std(fids), rel=1e-6)


def test_separate_lpips_and_style_nets_from_weight_files(tmp_path):
    from safetensors.torch import save_file

    from syncsde.eval.runner import _feature_nets
    from syncsde.metrics.features import WeightsNotFoundError, _vgg_layers

    body = _vgg_layers("vgg19")
    save_file({f"features.{k}": v for k, v in body.state_dict().items()}, str(tmp_path / "v19.safetensors"))
    heads = {f"lin{l}.model.1.weight": torch_ones(c) for l, c in enumerate((64, 128, 256, 512, 512))}
    save_file(heads, str(tmp_path / "h.safetensors"))
    text = _write(tmp_path).read_text().replace(
        "threads = 1", "threads = 1\nstyle_net = { net = 'vgg19', weights = 'PLACE', taps = 'style' }\n"
        "lpips_heads = 'HEADS'").replace("PLACE", str(tmp_path / "v19.safetensors")).replace(
        "HEADS", str(tmp_path / "h.safetensors"))
    (tmp_path / "c.toml").write_text(text)
    cfg = load_config(tmp_path / "c.toml")
    assert cfg.config_hash == load_config(_write(tmp_path, name="plain.toml")).config_hash
    nets = _feature_nets(cfg)
    assert nets["style"].name == "vgg19-style" and nets["lpips"] is nets["features"]
    assert [h.shape[0] for h in nets["lpips_heads"]] == [64, 128, 256, 512, 512]
    (tmp_path / "c.toml").write_text(text.replace("v19.safetensors", "gone.safetensors"))
    with pytest.raises(WeightsNotFoundError, match="gone.safetensors"):
        _feature_nets(load_config(tmp_path / "c.toml"))


def torch_ones(c):
    import torch

    return torch.ones(1, c, 1, 1)


def test_new_weights_under_the_same_model_name_are_another_config(reference_run, tmp_path,
                                                                   monkeypatch):
    from syncsde.eval import config as config_mod

    tmp, cfg, out, _ = reference_run
    out2 = tmp_path / "out"
    shutil.copytree(out, out2)
    monkeypatch.setattr(config_mod, "model_fingerprint", lambda name: "sha256:other")
    with pytest.raises(EvalConfigError, match="model_fingerprint"):
        run_eval(str(cfg), str(out2), progress=False)


def test_model_fingerprint_follows_the_folder_bytes(tmp_path):
    from syncsde.eval.config import model_fingerprint

    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "w.safetensors").write_bytes(b"\0" * 100)
    (tmp_path / "model_index.json").write_text("{}")
    a = model_fingerprint(str(tmp_path))
    assert a == model_fingerprint(str(tmp_path))
    (tmp_path / "unet" / "w.safetensors").write_bytes(b"\0" * 99 + b"\1")
    assert model_fingerprint(str(tmp_path)) != a
    assert model_fingerprint("scenes").startswith("sha256:")
