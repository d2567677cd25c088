"""The exact-score benchmark's tasks, strategies and scoring (used by ``benchmarks/exact.py``
and by ``syncsde demo``).

For each task the exact target law of the canonical object is known (design notes section 4):
the field on the whole canvas (wide, motion), the product p_A(x) p_B(f(x)) (ambiguous), the
masked composition (mask), the conditional law given the kept region (edit). Each strategy's
output is compared with that law by the Frechet distance (W2^2, the FID formula without a
network) fitted on many samples; the oracle runs the same DDIM steps with the exact score of
the target itself. A seam statistic (variance of differences across window boundaries over
that across interior columns; 1 is ideal) is reported for the window tasks.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from syncsde import ops
from syncsde.atomic import atomic_savefig
from syncsde.metrics import frechet_to_law, seam_statistic
from syncsde.priors import (FieldDenoiser, GaussianMixturePrior, GaussianPrior, PriorDenoiser,
                            gaussian_conditional, gaussian_product, masked_composition)
from syncsde.sampler import Problem, invert, sample
from syncsde.schedules import ConstantInvLambda
from syncsde.tasks import (ambiguous_problem, edit_problem, masked_problem, sequence_problem,
                           wide_problem)
from syncsde.views import WindowViews


@dataclass
class BenchTask:
    name: str
    problem: Problem
    denoiser: Any
    target: Any                      # law with mean_vector / covariance / eps
    seams: list[int] | None = None   # seam columns of the canvas (window tasks)
    guidance: float = 1.0
    syncsde_options: dict = field(default_factory=dict)


def _oracle_problem(shape) -> Problem:
    """One view that is the whole canvas: plain DDIM with the target's exact score."""
    C, H, W = shape
    return Problem(WindowViews((C, H, W), (H, W), [(0, 0)]), ["target"], init="independent")


def _window_seams(problem: Problem) -> list[int]:
    v = problem.views
    W = v.canvas_shape[2]
    w = v.size[1]
    cols = set()
    for left in v.offsets[:, 1].tolist():
        for c in (left, left + w):
            if 0 < c < W:
                cols.add(c)
    return sorted(cols)


def build_wide(schedule) -> BenchTask:
    C, H, W, h, w, stride = 1, 8, 32, 8, 8, 4
    field = {"kernel": "se", "lengthscale": 2.0}
    canvas_prior = GaussianPrior.field("se", (H, W), channels=C, lengthscale=2.0)
    prob = wide_problem((C, H, W), window=(h, w), stride=(1, stride), cond="field")
    return BenchTask("wide", prob, FieldDenoiser({"field": field}, schedule.abar, channels=C),
                     canvas_prior, _window_seams(prob),
                     syncsde_options={"inv_lambda": 20.0})


def build_motion(schedule) -> BenchTask:
    C, L, win, overlap = 2, 80, 32, 24  # windows 32, stride 8 (the design's first look)
    field = {"kernel": "matern", "lengthscale": 4.0, "nu": 1.5}
    canvas_prior = GaussianPrior.field("matern", (1, L), channels=C, lengthscale=4.0, nu=1.5)
    prob = sequence_problem(C, L, window=win, overlap=overlap, cond="motion")
    return BenchTask("motion", prob, FieldDenoiser({"motion": field}, schedule.abar, channels=C),
                     canvas_prior, _window_seams(prob),
                     syncsde_options={"inv_lambda": 2.0})


def _perm_of(view: str, shape) -> torch.Tensor:
    idx = torch.arange(math.prod(shape), dtype=torch.float64).reshape(shape)
    return ops.dihedral(idx, view).reshape(-1).round().long()


def build_ambiguous(schedule) -> BenchTask:
    shape = (1, 8, 8)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 8), torch.linspace(-1, 1, 8), indexing="ij")
    a = GaussianPrior.field("se", shape[1:], channels=1, lengthscale=1.0, mean=0.8 * xx)
    b = GaussianPrior.field("se", shape[1:], channels=1, lengthscale=2.5, mean=-0.8 * yy)
    target = gaussian_product(a, b, _perm_of("rot90_cw", shape))
    prob = ambiguous_problem(shape, "rot90_cw", "A", "B")
    return BenchTask("ambiguous", prob, PriorDenoiser({"A": a, "B": b}, schedule.abar), target,
                     syncsde_options={"inv_lambda": 2.0})


def _mask(H, W):
    m = torch.zeros(H, W)
    m[H // 4: 3 * H // 4, W // 4: 3 * W // 4] = 1
    return m


def build_mask(schedule) -> BenchTask:
    shape = (1, 8, 8)
    bg = GaussianPrior.field("se", shape[1:], lengthscale=3.0, mean=-1.0)
    obj = GaussianPrior.field("se", shape[1:], lengthscale=1.0, mean=1.0)
    combined = GaussianMixturePrior([bg, obj], [0.5, 0.5])
    m = _mask(*shape[1:])
    target = masked_composition(bg, obj, m)
    prob = masked_problem(shape, m, "bg", "obj", "both")
    den = PriorDenoiser({"bg": bg, "obj": obj, "both": combined}, schedule.abar)
    return BenchTask("mask", prob, den, target,
                     syncsde_options={"inv_lambda": ConstantInvLambda(2.0)})


def build_edit(schedule) -> BenchTask:
    shape = (1, 8, 8)
    src = GaussianPrior.field("se", shape[1:], lengthscale=2.0, mean=-0.5)
    tgt = GaussianPrior.field("se", shape[1:], lengthscale=2.0, mean=1.0)
    den = PriorDenoiser({"src": src, "tgt": tgt}, schedule.abar)
    g = torch.Generator().manual_seed(1234)
    x_src = src.sample(1, generator=g).to(torch.float32)
    x_T = invert(x_src, den, "src", schedule, progress=False)[0]
    m = _mask(*shape[1:])
    target = gaussian_conditional(tgt, 1 - m, x_src[0])
    prob = edit_problem(x_T, m, "src", "tgt", null="src")
    return BenchTask("edit", prob, den, target, syncsde_options={"inv_lambda": 50.0})


TASKS: dict[str, Callable] = {"wide": build_wide, "ambiguous": build_ambiguous,
                              "mask": build_mask, "edit": build_edit, "motion": build_motion}

# strategy label -> (strategy name, options)
STRATEGIES: dict[str, tuple[str, dict]] = {
    "independent": ("independent", {}),
    "multidiffusion": ("multidiffusion", {}),
    "synctweedies": ("synctweedies", {}),
    "noise_average": ("noise_average", {}),
    "syncsde": ("syncsde", {"inv_lambda": 5.0}),
    "syncsde_tuned": ("syncsde", {}),   # per-task best 1/lambda schedule (BenchTask.syncsde_options)
    "collage": ("collage", {}),         # window tasks only (junction-tree score)
    "syncdiffusion": ("syncdiffusion", {}),  # published: w 20, decay 0.95, every step (Gram distance)
    "syncvc": ("syncvc", {}),                # paper: 5 Adam iterations per view, greedy order
}
# the gradient-based strategies cost several times more: the demo and `syncsde bench` leave
# them out unless asked (`syncsde bench --guidance`; benchmarks/exact.py runs them all)
GUIDANCE = ("syncdiffusion", "syncvc")
FAST_STRATEGIES = {k: v for k, v in STRATEGIES.items() if k not in GUIDANCE}


def evaluate(task: BenchTask, samples: torch.Tensor) -> dict:
    flat = samples.reshape(len(samples), -1).to(torch.float64)
    out = {"w2": frechet_to_law(flat, task.target.mean_vector, task.target.covariance)}
    if task.seams:
        out["seam"] = seam_statistic(samples.to(torch.float64), task.seams)
    return out


def run_task(task: BenchTask, schedule, n: int, seed: int, strategies, log) -> dict:
    res = {}
    for label, (name, opts) in strategies.items():
        if label == "syncsde_tuned":
            opts = dict(opts, **task.syncsde_options)
        if name == "collage" and not task.seams:
            continue  # needs a chain of windows
        t0 = time.perf_counter()
        r = sample(task.problem, task.denoiser, name, schedule, seed=seed, batch=n,
                   guidance_scale=task.guidance, progress=False, **opts)
        res[label] = evaluate(task, r.output)
        log(f"  {task.name:10s} {label:24s} W2={res[label]['w2']:8.3f}"
            + (f" seam={res[label]['seam']:6.2f}" if "seam" in res[label] else "")
            + f"  ({time.perf_counter() - t0:.1f}s)")
    shape = tuple(task.target.event_shape)
    oracle_den = PriorDenoiser({"target": task.target}, schedule.abar)
    r = sample(_oracle_problem(shape), oracle_den, "independent", schedule, seed=seed, batch=n,
               progress=False)
    res["oracle"] = evaluate(task, r.output[None] if r.output.dim() == len(shape) else r.output)
    log(f"  {task.name:10s} {'oracle':24s} W2={res['oracle']['w2']:8.3f}"
        + (f" seam={res['oracle']['seam']:6.2f}" if "seam" in res["oracle"] else ""))
    return res


def print_table(results: dict, file=None) -> None:
    file = sys.stdout if file is None else file  # looked up now, not at import
    labels = [k for k in next(iter(results.values())) if k != "oracle"] + ["oracle"]
    print("| strategy | " + " | ".join(results) + " |", file=file)
    print("|---|" + "---|" * len(results), file=file)
    for lab in labels:
        cells = []
        for task in results:
            r = results[task].get(lab, {})
            c = f"{r['w2']:.3f}" if "w2" in r else "-"
            if "seam" in r:
                c += f" (seam {r['seam']:.2f})"
            cells.append(c)
        print(f"| {lab} | " + " | ".join(cells) + " |", file=file)




def plot_results(results: dict, path, title: str) -> None:
    """Bar charts (log scale) of each strategy's Frechet distance per task, oracle in grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = list(STRATEGIES) + ["oracle"]
    fig, axes = plt.subplots(1, len(results), figsize=(3.2 * len(results), 3.6))
    for ax, (task, res) in zip(np.atleast_1d(axes), results.items()):
        vals = [res[lab]["w2"] if lab in res else np.nan for lab in labels]
        colors = ["#999999" if lab == "oracle" else "#3b75af" for lab in labels]
        ax.bar(range(len(labels)), vals, color=colors)
        ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
        ax.set_title(task)
        ax.set_yscale("log")
    np.atleast_1d(axes)[0].set_ylabel("Frechet distance W2^2 to the exact law")
    fig.suptitle(title)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)


# ---- solvers (issue 9): every task with a diffusers scheduler driving the steps -------------------
#: name -> diffusers scheduler class; SD's training betas, "leading" spacing with offset 1 (the
#: SD config: integer timesteps, which the exact priors need)
SOLVERS = {"ddim": "DDIMScheduler", "ddpm": "DDPMScheduler", "euler": "EulerDiscreteScheduler",
           "euler_a": "EulerAncestralDiscreteScheduler", "dpmpp_2m": "DPMSolverMultistepScheduler"}
DETERMINISTIC_SOLVERS = ("ddim", "euler", "dpmpp_2m")


def make_solver(name: str, steps: int):
    """A :class:`~syncsde.solvers.DiffusersSolver` for ``name`` in :data:`SOLVERS` at ``steps``."""
    import diffusers

    from syncsde.solvers import DiffusersSolver

    if name not in SOLVERS:
        raise ValueError(f"unknown solver {name!r}; expected one of {list(SOLVERS)}")
    kw = dict(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
              beta_end=0.012, timestep_spacing="leading", steps_offset=1)
    if name == "ddim":
        kw.update(set_alpha_to_one=False, clip_sample=False)
    if name == "ddpm":
        kw.update(clip_sample=False)
    return DiffusersSolver(getattr(diffusers, SOLVERS[name])(**kw), int(steps))


def run_solver_table(tasks, solvers, steps_list, strategy, n: int, seed: int, log) -> dict:
    """``{task: {f"{solver} {steps}": {"strategy": w2, "oracle": w2, "exact": bool}}}``: the task's
    ``strategy`` (a label of :data:`STRATEGIES`) and the oracle, both stepped by the solver.
    Deterministic solvers on Gaussian tasks are scored on exact output laws; the rest (DDPM,
    Euler-ancestral, the mixture-prompt mask task) on ``n`` samples."""
    from syncsde.exact_laws import gaussian_w2, push_forward_law

    out: dict = {}
    for tname in tasks:
        for steps in steps_list:
            base = _sd_schedule(steps)
            task = TASKS[tname](base)
            for sname in solvers:
                solver = make_solver(sname, steps)
                row = {}
                label, (name, opts) = strategy, STRATEGIES[strategy]
                if label == "syncsde_tuned":
                    opts = dict(opts, **task.syncsde_options)
                shape = tuple(task.target.event_shape)
                oracle_den = PriorDenoiser({"target": task.target}, base.abar)
                for key, prob, den, nm, op in (("strategy", task.problem, task.denoiser, name, opts),
                                               ("oracle", _oracle_problem(shape), oracle_den,
                                                "independent", {})):
                    exact = sname in DETERMINISTIC_SOLVERS
                    try:
                        if exact:
                            row[key] = gaussian_w2(push_forward_law(prob, den, nm, solver,
                                                                    guidance_scale=task.guidance, **op),
                                                   task.target)
                    except ValueError:
                        exact = False  # not affine (mixture prompts): sample
                    if not exact:
                        r = sample(prob, den, nm, solver, seed=seed, batch=n, guidance_scale=task.guidance,
                                   dtype=torch.float64, progress=False, **op)
                        o = r.output if r.output.dim() > len(shape) else r.output[None]
                        row[key] = frechet_to_law(o.reshape(len(o), -1), task.target.mean_vector,
                                                  task.target.covariance)
                    row[f"{key}_exact"] = exact
                out.setdefault(tname, {})[f"{sname} {steps}"] = row
                log(f"  {tname:10s} {sname:9s} {steps:3d} steps  {strategy} W2={row['strategy']:.3f}"
                    f" oracle W2={row['oracle']:.3f}" + ("" if row["strategy_exact"] else " (sampled)"))
    return out


def _sd_schedule(steps: int):
    from syncsde.sampler import SamplingSchedule

    return SamplingSchedule.preset("sd", steps)


def solver_table(results: dict) -> str:
    tasks = list(results)
    keys = list(next(iter(results.values())))
    lines = ["| solver, steps | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for k in keys:
        cells = []
        for t in tasks:
            r = results[t][k]
            star = "" if r["strategy_exact"] else "*"
            cells.append(f"{r['strategy']:.3f}{star} / {r['oracle']:.3f}")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
