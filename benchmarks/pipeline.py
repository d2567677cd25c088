"""Per-step cost of synchronisation in the real sampler, next to the model's own time.

A wide-image problem (``syncsde.tasks.wide_problem``: canvas 4x16x48, windows 4x16x16 every 8
columns, so N = 5 views) is sampled with ``syncsde.sampler.sample`` and the ``syncsde``
strategy, classifier-free guidance 7.5 (one model call per step on 2N inputs), under three
models:

- ``sd-unet``: a ``diffusers.UNet2DConditionModel`` built from the Stable Diffusion 1.x config
  (block_out_channels (320, 640, 1280, 1280), cross_attention_dim 768, layers_per_block 2,
  attention_head_dim 8; random weights, nothing downloaded), text conditioning as random
  ``[77, 768]`` embeddings through a ``FunctionDenoiser`` (``None`` = the "empty prompt"
  embedding). ``--small`` uses a reduced config (block_out_channels (32, 64, 128, 128), one layer
  per block, cross_attention_dim 64).
- ``exact-prior``: the shipped exact-score Gaussian field prior (``syncsde.priors.FieldDenoiser``).
- ``null``: returns a preallocated tensor (costs nothing), so the sampler time IS the overhead.

Measured per run (the denoiser is wrapped so every model call is timed inside the run):

- (a) ``step_ms``: sampler time per step (first model call to the last step's end, / steps);
- (b) ``model_ms``: time inside the model calls per step;
- ``overhead = (a - b) / a`` (everything the sampler does besides the model: CFG batching and
  combine, finiteness check, the SyncSDE references and fused update); the whole call of
  ``sample()`` (setup: initial noise, masks; the final composite) is reported too;
- ``plain_ms``: a plain model call on the same inputs (batch, conditions, timestep) made right
  after each sampler step (from the callback, timed apart), and the median over steps of
  ``(step - plain) / step`` (noisy: the model's call-to-call jitter is larger than the overhead);
- ``null_step_ms``: the sampler with the null model, per step: the overhead measured alone;
- peak memory: the peak RSS during a run above the RSS just before it (``VmHWM`` is reset
  through ``/proc/self/clear_refs``; elsewhere the ``getrusage`` max-RSS delta), for the
  sampler and for the plain model calls; and a check that memory does not grow with the number
  of steps (null model, canvas 4x64x512, 29 windows of 64x64, 5 vs 50 steps, fresh processes).

Target (design notes section 5): overhead under 1% for the SD-sized UNet.

    python benchmarks/pipeline.py                 # SD 1.x UNet, ~1-2 minutes on 2 cores
    python benchmarks/pipeline.py --small         # reduced UNet (< 1 minute)
    python benchmarks/pipeline.py --json out/pipeline.json
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import syncsde  # noqa: E402  (before torch: sets OMP_WAIT_POLICY=PASSIVE)
import torch  # noqa: E402

from syncsde.denoisers import FunctionDenoiser  # noqa: E402
from syncsde.priors import FieldDenoiser  # noqa: E402
from syncsde.sampler import SamplingSchedule, sample  # noqa: E402
from syncsde.tasks import wide_problem  # noqa: E402
from syncsde.atomic import atomic_write_json

SD_CONFIG = dict(block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768,
                 layers_per_block=2, attention_head_dim=8)
SMALL_CONFIG = dict(block_out_channels=(32, 64, 128, 128), cross_attention_dim=64,
                    layers_per_block=1, attention_head_dim=8)


# ---------------------------------------------------------------------------------------------
# memory

def _proc_status_mb() -> dict[str, float]:
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(("VmHWM:", "VmRSS:")):
                    k, v = line.split(":")
                    out[k] = int(v.split()[0]) / 1024.0
    except OSError:
        pass
    return out


def _maxrss_mb() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024.0 / (1024.0 if sys.platform == "darwin" else 1.0)


class PeakMemory:
    """Peak RSS during a block, above the RSS at its start (MB)."""

    def __enter__(self):
        self.reset_ok = False
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
            self.reset_ok = "VmHWM" in _proc_status_mb()
        except OSError:
            pass
        self.rss0 = _proc_status_mb().get("VmRSS", 0.0)
        self.maxrss0 = _maxrss_mb()
        return self

    def __exit__(self, *exc):
        st = _proc_status_mb()
        self.maxrss_delta_mb = _maxrss_mb() - self.maxrss0
        if self.reset_ok:
            self.peak_mb = st["VmHWM"] - self.rss0
            self.method = "VmHWM reset"
        else:
            self.peak_mb = self.maxrss_delta_mb
            self.method = "getrusage maxrss delta"
        return False


# ---------------------------------------------------------------------------------------------
# timing

class TimedDenoiser:
    """Forwards to a denoiser and records (start, end) of every call."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.prediction_type = getattr(inner, "prediction_type", "epsilon")
        self.calls: list[tuple[float, float]] = []

    def __call__(self, x_t, t, cond):
        t0 = time.perf_counter()
        out = self.inner(x_t, t, cond)
        self.calls.append((t0, time.perf_counter()))
        return out


def run_sampler(problem, model, steps: int, guidance: float, strategy: str = "syncsde",
                paired: Callable[[int], None] | None = None) -> dict:
    """One ``sample()`` run with every model call timed. ``paired(t)``, when given, runs right
    after each step (from the callback) and is timed apart: the step spans exclude it."""
    den = TimedDenoiser(model)
    ends: list[float] = []
    resumes: list[float] = []
    paired_s: list[float] = []

    def callback(i, t, y):
        ends.append(time.perf_counter())
        if paired is not None:
            paired(t)
            paired_s.append(time.perf_counter() - ends[-1])
        resumes.append(time.perf_counter())

    t0 = time.perf_counter()
    res = sample(problem, den, strategy, schedule="sd", num_steps=steps, guidance_scale=guidance,
                 progress=False, callback=callback)
    total = time.perf_counter() - t0 - sum(paired_s)
    assert torch.isfinite(res.canvas).all()
    calls = den.calls
    model_s = sum(b - a for a, b in calls)
    # step k spans (resume after step k-1, end of step k]; step 0 starts at its model call
    starts = [calls[0][0]] + resumes[:-1]
    per_step = []
    for a, b in zip(starts, ends):
        m = sum(e - s for s, e in calls if a <= s < b)
        per_step.append((b - a, m))
    loop = sum(sp for sp, _ in per_step)
    out = {
        "steps": steps, "model_calls": len(calls), "total_s": total, "loop_s": loop,
        "model_s": model_s, "step_ms": loop / steps * 1e3, "model_ms": model_s / steps * 1e3,
        "overhead": (loop - model_s) / loop,
        "overhead_whole_call": (total - model_s) / total,
        "sync_ms_per_step": (loop - model_s) / steps * 1e3,
        "setup_and_compose_ms": (total - loop) * 1e3,
        "per_step_ms": [sp * 1e3 for sp, _ in per_step],
        "per_step_overhead": [(sp - m) / sp for sp, m in per_step],
    }
    if paired is not None:
        out["paired_plain_ms"] = [p * 1e3 for p in paired_s]
        out["paired_vs_plain"] = [(sp - p) / sp for (sp, _), p in zip(per_step, paired_s)]
    return out


def run_plain(model, x: torch.Tensor, cond: list, timesteps: list[int]) -> dict:
    """The same model calls as the sampler makes (same batch, conditions, timesteps), alone."""
    t0 = time.perf_counter()
    with torch.no_grad():
        for t in timesteps:
            model(x, t, cond)
    total = time.perf_counter() - t0
    return {"total_s": total, "plain_ms": total / len(timesteps) * 1e3}


# ---------------------------------------------------------------------------------------------
# models

def build_unet(small: bool, sample_size: int):
    from diffusers import UNet2DConditionModel

    cfg = SMALL_CONFIG if small else SD_CONFIG
    unet = UNet2DConditionModel(sample_size=sample_size, in_channels=4, out_channels=4, **cfg)
    unet.eval().requires_grad_(False)
    return unet, cfg


def unet_denoiser(unet, emb_dim: int, seed: int = 0) -> tuple[FunctionDenoiser, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randn((77, emb_dim), generator=g)
    empty = torch.randn((77, emb_dim), generator=g)  # the "" prompt's embedding

    def fn(x, t, cond):
        enc = torch.stack([empty if c is None else c for c in cond])
        return unet(x, t, encoder_hidden_states=enc).sample

    return FunctionDenoiser(fn), prompt


def null_denoiser(max_batch: int, view_shape) -> FunctionDenoiser:
    buf = torch.randn((max_batch, *view_shape), generator=torch.Generator().manual_seed(1))
    return FunctionDenoiser(lambda x, t, cond: buf[: len(x)])


# ---------------------------------------------------------------------------------------------
# memory does not grow with steps (fresh processes)

def memprobe(steps: int) -> dict:
    """Null-model sampler on a large canvas; peak RSS above the RSS before the run."""
    prob = wide_problem((4, 64, 512), window=64, stride=16, cond="p")
    den = null_denoiser(2 * prob.views.num_views, prob.views.view_shape)
    sample(prob, den, "syncsde", schedule="sd", num_steps=1, guidance_scale=7.5, progress=False)
    with PeakMemory() as pm:
        sample(prob, den, "syncsde", schedule="sd", num_steps=steps, guidance_scale=7.5,
               progress=False)
    return {"steps": steps, "views": prob.views.num_views, "peak_mb": pm.peak_mb,
            "method": pm.method, "state_mb": prob.views.num_views * 4 * 64 * 64 * 4 / 2 ** 20}


def memory_scaling(threads: int) -> list[dict]:
    out = []
    for steps in (5, 50):
        cmd = [sys.executable, os.path.abspath(__file__), "--_memprobe", str(steps),
               "--threads", str(threads)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            raise RuntimeError(f"memory probe failed: {r.stderr[-2000:]}")
        out.append(json.loads(r.stdout.strip().splitlines()[-1]))
    return out


# ---------------------------------------------------------------------------------------------

def _med(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--small", action="store_true", help="reduced UNet config instead of SD 1.x")
    p.add_argument("--steps", type=int, default=4, help="sampler steps with the UNet (4)")
    p.add_argument("--repeats", type=int, default=3, help="sampler/plain runs with the UNet (3)")
    p.add_argument("--prior-steps", type=int, default=20, help="steps with the exact prior (20)")
    p.add_argument("--guidance", type=float, default=7.5)
    p.add_argument("--canvas-width", type=int, default=48, help="latent canvas width (48)")
    p.add_argument("--window", type=int, default=16, help="latent window size (16)")
    p.add_argument("--stride", type=int, default=8, help="window stride (8)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-memory-scaling", action="store_true", help="skip the 5 vs 50 steps check")
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--_memprobe", type=int, default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)

    torch.set_num_threads(a.threads)
    syncsde.set_num_threads(a.threads)
    if a._memprobe is not None:
        print(json.dumps(memprobe(a._memprobe)))
        return 0

    t_start = time.perf_counter()
    C, hw = 4, a.window
    canvas = (C, hw, a.canvas_width)
    print(f"# syncsde pipeline benchmark: torch {torch.__version__}, threads {torch.get_num_threads()} "
          f"(C core {syncsde.get_num_threads()}), OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")

    t0 = time.perf_counter()
    unet, cfg = build_unet(a.small, hw)
    n_params = sum(p.numel() for p in unet.parameters())
    model_name = "small-unet" if a.small else "sd-unet"
    print(f"# {model_name}: {n_params / 1e6:.1f} M parameters, config {cfg}, built in "
          f"{time.perf_counter() - t0:.1f} s (random weights)")
    den, prompt = unet_denoiser(unet, cfg["cross_attention_dim"])
    prob = wide_problem(canvas, window=hw, stride=a.stride, cond=prompt)
    n = prob.views.num_views
    cfg_on = a.guidance != 1.0
    batch = 2 * n if cfg_on else n
    print(f"# problem: canvas {'x'.join(map(str, canvas))}, windows {C}x{hw}x{hw} stride {a.stride} "
          f"-> N = {n} views; guidance {a.guidance} -> model batch {batch} per step; "
          f"{a.steps} steps x {a.repeats} runs")

    # the plain calls see exactly what the sampler's model call sees
    schedule = SamplingSchedule.preset("sd", a.steps)
    x_plain = torch.randn((batch, *prob.views.view_shape))
    cond_plain = ([None] * n + [prompt] * n) if cfg_on else [prompt] * n
    run_plain(den, x_plain, cond_plain, schedule.timesteps[:1])  # warm-up

    with PeakMemory() as mem_plain:
        plain = run_plain(den, x_plain, cond_plain, schedule.timesteps)
    print(f"  plain calls: {plain['plain_ms']:.1f} ms/call", flush=True)

    def paired(t):  # one plain model call on the same inputs right after each sampler step
        run_plain(den, x_plain, cond_plain, [t])

    sampler_runs, mem_sampler = [], None
    for r in range(a.repeats):
        if r == 0:  # alone, for its peak memory
            with PeakMemory() as mem_sampler:
                sampler_runs.append(run_sampler(prob, den, a.steps, a.guidance))
        else:
            sampler_runs.append(run_sampler(prob, den, a.steps, a.guidance, paired=paired))
        s = sampler_runs[-1]
        line = (f"  sampler run {r}: {s['step_ms']:.1f} ms/step (model {s['model_ms']:.1f}, "
                f"overhead {s['overhead']:.3%})")
        if "paired_plain_ms" in s:
            line += (f"; paired plain calls {statistics.median(s['paired_plain_ms']):.1f} ms, "
                     f"step vs paired call {statistics.median(s['paired_vs_plain']):+.2%}")
        print(line, flush=True)
    step_ms, model_ms = _med(sampler_runs, "step_ms"), _med(sampler_runs, "model_ms")
    overhead = _med(sampler_runs, "overhead")
    pairs = [v for s in sampler_runs for v in s.get("paired_vs_plain", [])]
    paired_plain = [v for s in sampler_runs for v in s.get("paired_plain_ms", [])]
    plain_ms = statistics.median(paired_plain) if paired_plain else plain["plain_ms"]
    overhead_vs_plain = statistics.median(pairs) if pairs else (step_ms - plain_ms) / step_ms
    peak_mb = mem_sampler.peak_mb
    peak_plain_mb = mem_plain.peak_mb

    # the null model: the sampler's own cost, alone, on the same problem
    null = null_denoiser(batch, prob.views.view_shape)
    run_sampler(prob, null, a.steps, a.guidance)
    null_runs = [run_sampler(prob, null, max(a.steps, 20), a.guidance) for _ in range(5)]
    null_step_ms = _med(null_runs, "step_ms")

    # the shipped exact-score prior as the model
    field = FieldDenoiser({"field": {"kernel": "se", "lengthscale": 2.0}},
                          SamplingSchedule.preset("sd").abar, channels=C)
    prob_f = wide_problem(canvas, window=hw, stride=a.stride, cond="field")
    run_sampler(prob_f, field, 2, a.guidance)  # builds and caches the prior
    prior_runs = [run_sampler(prob_f, field, a.prior_steps, a.guidance) for _ in range(3)]

    scaling = None if a.no_memory_scaling else memory_scaling(a.threads)

    res = {
        "overhead": overhead,
        "peak_mb": peak_mb,
        "model": model_name,
        "unet_params_m": n_params / 1e6,
        "unet_config": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
        "problem": {"canvas": list(canvas), "window": hw, "stride": a.stride, "views": n,
                    "guidance": a.guidance, "model_batch": batch, "steps": a.steps},
        "threads": a.threads,
        "step_ms": step_ms,
        "model_ms": model_ms,
        "sync_ms_per_step": _med(sampler_runs, "sync_ms_per_step"),
        "overhead_whole_call": _med(sampler_runs, "overhead_whole_call"),
        "plain_ms": plain_ms,
        "overhead_vs_plain": overhead_vs_plain,
        "paired_steps": len(pairs),
        "null_step_ms": null_step_ms,
        "overhead_null_estimate": null_step_ms / (null_step_ms + model_ms),
        "peak_plain_mb": peak_plain_mb,
        "peak_method": mem_sampler.method,
        "maxrss_delta_mb": mem_sampler.maxrss_delta_mb,
        "process_maxrss_mb": _maxrss_mb(),
        "sampler_runs": sampler_runs,
        "plain_run": plain,
        "exact_prior": {
            "steps": a.prior_steps,
            "step_ms": _med(prior_runs, "step_ms"),
            "model_ms": _med(prior_runs, "model_ms"),
            "sync_ms_per_step": _med(prior_runs, "sync_ms_per_step"),
            "overhead": _med(prior_runs, "overhead"),
        },
        "memory_vs_steps": scaling,
    }

    ep = res["exact_prior"]
    print()
    print(f"{'model':<12} {'step_ms':>10} {'model_ms':>10} {'sync_ms':>8} {'overhead':>9} {'sync/model':>10}")
    print(f"{model_name:<12} {step_ms:>10.2f} {model_ms:>10.2f} {res['sync_ms_per_step']:>8.3f} "
          f"{overhead:>9.3%} {res['sync_ms_per_step'] / model_ms:>10.3%}")
    print(f"{'exact-prior':<12} {ep['step_ms']:>10.3f} {ep['model_ms']:>10.3f} {ep['sync_ms_per_step']:>8.3f} "
          f"{ep['overhead']:>9.2%} {ep['sync_ms_per_step'] / ep['model_ms']:>10.2%}")
    print(f"{'null':<12} {null_step_ms:>10.3f} {0:>10.3f} {null_step_ms:>8.3f} {'100%':>9} {'-':>10}")
    print()
    print(f"{model_name}: overhead (a - b) / a = {overhead:.3%} per step "
          f"({res['sync_ms_per_step']:.2f} ms of {step_ms:.1f} ms); "
          f"whole sample() call incl. setup + final composite: {res['overhead_whole_call']:.3%}")
    print(f"{model_name}: sampler step vs a plain model call on the same inputs right after it "
          f"({plain_ms:.1f} ms): median {overhead_vs_plain:+.2%} over {len(pairs)} steps "
          f"(call-to-call noise of the model dominates this one)")
    print(f"{model_name}: null-model estimate null_step / (null_step + model) = "
          f"{res['overhead_null_estimate']:.3%} ({null_step_ms:.3f} ms/step)")
    print(f"exact prior (FieldDenoiser): overhead {ep['overhead']:.1%} per step "
          f"({ep['sync_ms_per_step']:.3f} ms sync vs {ep['model_ms']:.3f} ms model)")
    print(f"peak memory above the pre-run RSS ({res['peak_method']}): sampler {peak_mb:.1f} MB, "
          f"plain model calls {peak_plain_mb:.1f} MB, difference {peak_mb - peak_plain_mb:+.1f} MB; "
          f"getrusage max-RSS delta over the sampler runs {res['maxrss_delta_mb']:.1f} MB; "
          f"process max RSS {res['process_maxrss_mb']:.0f} MB")
    if scaling:
        s5, s50 = scaling
        print(f"memory vs steps (null model, {s5['views']} views of 4x64x64, state "
              f"{s5['state_mb']:.2f} MB): peak {s5['peak_mb']:.1f} MB at {s5['steps']} steps, "
              f"{s50['peak_mb']:.1f} MB at {s50['steps']} steps (a per-step history would add "
              f"~{(s50['steps'] - s5['steps']) * s5['state_mb']:.0f} MB)")
    met = overhead < 0.01
    print(f"target overhead < 1% for the {'SD-sized' if not a.small else 'reduced'} UNet: "
          f"{'MET' if met else 'NOT MET'} ({overhead:.3%})")
    print(f"# total {time.perf_counter() - t_start:.0f} s")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(a.json, res, indent=1)
        print(f"# wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
