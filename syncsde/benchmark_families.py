r"""Exact-law benchmark families (issue 13): where synchronization is far from the exact law.

Every case has a target law of the canonical object and per-view exact denoisers; the oracle runs
the same steps with the exact score of the whole target. Families (parameters chosen to span
each family, not tuned to one case):

- ``grid``: 2-D grids of windows (tall and wide canvases), SE and separable-exponential
  (Markov) fields;
- ``cylinder``: circular canvases (the width is a loop; kernels with the chord distance,
  :func:`syncsde.priors.field_covariance` ``period``), 2-D and 1-D rings;
- ``long``: 1-D windows whose correlation is longer than the overlap (power law, long SE), with
  a Markov control (Matern-1/2);
- ``illusion``: ``p_A(x) p_B(P x)`` for rot90, rot180, flips, transpose, skew and a random
  permutation;
- ``mixture``: a two-component mixture of fields (one "mode" must hold over the whole canvas);
- ``conditional``: editing (``p_tgt(x | x = x_src outside the mask)``) and mask composition
  with a coherent target (the background's law outside, the object's law *given* that
  background inside, :func:`syncsde.priors.coherent_composition`), the three-trajectory
  problems of the mask / edit tasks.

Gaussian cases are scored on exact output laws (:func:`syncsde.exact_laws.push_forward_law`):
the Frechet distance W2^2 to the target, for strategies and oracle. Mixture cases on samples:
energy distance to exact target samples (its floor is the oracle's), the moment-matched Frechet
distance (which cannot see mode mixing) and the agreement of the mixture component between the
first and the last window (``mode_corr``: mean of the product of the two windows' +-1 labels,
each the side of the component means' midpoint; the target's value is estimated from exact
target samples).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from syncsde.exact_laws import CountingDenoiser, energy_distance, gaussian_kl, gaussian_w2, push_forward_law
from syncsde.metrics import frechet_to_law
from syncsde.priors import (FieldDenoiser, GaussianMixturePrior, GaussianPrior, MixtureFieldDenoiser,
                            PriorDenoiser, coherent_composition, gaussian_conditional,
                            gaussian_product)
from syncsde.sampler import Problem, SamplingSchedule, invert, sample
from syncsde.schedules import ConstantInvLambda
from syncsde.strategies import make_strategy
from syncsde.tasks import ambiguous_problem, edit_problem, masked_problem, wide_problem
from syncsde.views import PixelMapViews, WindowViews
from syncsde.window_limits import chain_completion_law, chain_order, sample_chain_completion

__all__ = ["FamilyCase", "FAMILIES", "FAMILY_STRATEGIES", "build_cases", "run_case", "oracle_problem"]


@dataclass
class FamilyCase:
    family: str
    name: str
    problem: Problem
    denoiser: Any
    target: Any                        # GaussianPrior/GaussianLaw, or GaussianMixturePrior
    note: str = ""
    window_law: Any = None             # mixture cases: per-window component laws (labels)
    extra: dict = field(default_factory=dict)
    strategies: dict | None = None     # label -> (name, options): replaces FAMILY_STRATEGIES

    @property
    def gaussian(self) -> bool:
        return not isinstance(self.target, GaussianMixturePrior)


def oracle_problem(shape) -> Problem:
    """One view that is the whole canvas: plain steps with the target's exact score."""
    C, H, W = shape
    return Problem(WindowViews((C, H, W), (H, W), [(0, 0)]), ["target"], init="independent")


def _window_case(family, name, shape, window, stride, kernel_kw, circular=False, note=""):
    C, H, W = shape
    kw = dict(kernel_kw)
    if circular:
        kw["period"] = float(W)
    kernel = kw.pop("kernel")
    target = GaussianPrior.field(kernel, (H, W), channels=C, **kw)
    prob = wide_problem(shape, window=window, stride=stride, cond="field", circular=circular)
    den_kw = dict(kernel_kw, **({"period": float(W)} if circular else {}))
    return lambda abar: FamilyCase(family, name, prob, FieldDenoiser({"field": den_kw}, abar, channels=C),
                                   target, note)


def _grid_cases():
    se = {"kernel": "se", "lengthscale": 1.5}
    sep = {"kernel": "exp_separable", "lengthscale": 3.0}
    return [
        _window_case("grid", "grid 16x16 / 8 s4, SE 1.5", (1, 16, 16), 8, 4, se, note="3x3 windows"),
        _window_case("grid", "grid 16x16 / 8 s4, sep-exp 3", (1, 16, 16), 8, 4, sep,
                     note="3x3 windows, Markov field"),
        _window_case("grid", "tall 24x12 / 8 s4, SE 2", (1, 24, 12), 8, 4,
                     {"kernel": "se", "lengthscale": 2.0}, note="5x2 windows"),
        _window_case("grid", "wide 12x28 / 8 s4, sep-exp 4", (1, 12, 28), 8, 4,
                     {"kernel": "exp_separable", "lengthscale": 4.0}, note="2x6 windows"),
    ]


def _cylinder_cases():
    return [
        _window_case("cylinder", "cyl 6x24 / 6 s3, SE 1.5", (1, 6, 24), 6, 3,
                     {"kernel": "se", "lengthscale": 1.5}, circular=True, note="8 windows round"),
        _window_case("cylinder", "cyl 6x24 / 6 s3, SE 4", (1, 6, 24), 6, 3,
                     {"kernel": "se", "lengthscale": 4.0}, circular=True, note="long correlation"),
        _window_case("cylinder", "ring 1x48 / 12 s6, Matern-1/2 6", (1, 1, 48), (1, 12), (1, 6),
                     {"kernel": "matern", "nu": 0.5, "lengthscale": 6.0}, circular=True,
                     note="Markov ring"),
    ]


def _long_cases():
    return [
        _window_case("long", "1x64 / 16 s8, Matern-1/2 4", (1, 1, 64), (1, 16), (1, 8),
                     {"kernel": "matern", "nu": 0.5, "lengthscale": 4.0}, note="Markov control"),
        _window_case("long", "1x64 / 16 s8, SE 6", (1, 1, 64), (1, 16), (1, 8),
                     {"kernel": "se", "lengthscale": 6.0}, note="smooth, longer than overlap"),
        _window_case("long", "1x64 / 16 s8, power 2 exp 0.5", (1, 1, 64), (1, 16), (1, 8),
                     {"kernel": "power", "lengthscale": 2.0, "exponent": 0.5}, note="power law"),
        _window_case("long", "1x64 / 16 s12, Matern-3/2 8", (1, 1, 64), (1, 16), (1, 12),
                     {"kernel": "matern", "nu": 1.5, "lengthscale": 8.0}, note="overlap 4"),
    ]


def _index_perm(view, shape) -> torch.Tensor:
    idx = torch.arange(math.prod(shape), dtype=torch.float64).reshape(shape)
    return PixelMapViews(shape, ["identity", view]).forward_one(1, idx).reshape(-1).round().long()


def _illusion_case(view, label):
    def build(abar):
        shape = (1, 8, 8)
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, 8), torch.linspace(-1, 1, 8), indexing="ij")
        a = GaussianPrior.field("se", shape[1:], lengthscale=1.0, mean=0.8 * xx)
        b = GaussianPrior.field("se", shape[1:], lengthscale=2.5, mean=-0.8 * yy)
        target = gaussian_product(a, b, _index_perm(view, shape))
        return FamilyCase("illusion", f"illusion {label}", ambiguous_problem(shape, view, "A", "B"),
                          PriorDenoiser({"A": a, "B": b}, abar), target)
    return build


def _illusion_cases():
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(7))
    return [_illusion_case(v, lab) for v, lab in
            [("rot90_cw", "rot90"), ("rot180", "rot180"), ("hflip", "hflip"), ("vflip", "vflip"),
             ("transpose", "transpose"), ("skew", "skew 1.5"), (perm, "permutation")]]


def _mixture_case(name, shape, window, stride, lengthscale, m, note=""):
    def build(abar):
        C, H, W = shape
        comps = [({"kernel": "se", "lengthscale": lengthscale, "mean": s * m}, 0.5) for s in (1, -1)]
        den = MixtureFieldDenoiser({"field": comps}, abar, channels=C)
        target = den.prior("field", (H, W))
        prob = wide_problem(shape, window=window, stride=stride, cond="field")
        return FamilyCase("mixture", name, prob, den, target, note, window_law=den.prior("field", prob.views.size))
    return build


def _mixture_cases():
    return [_mixture_case("mixture 4x32 / 4x8 s4, SE 2, +-1", (1, 4, 32), (4, 8), (1, 4), 2.0, 1.0),
            _mixture_case("mixture 1x64 / 16 s8, SE 3, +-0.7", (1, 1, 64), (1, 16), (1, 8), 3.0, 0.7)]


# the three-trajectory tasks: peers, SyncSDE (authors' 1/lambda and the per-task tuned one of
# docs/benchmarks.md section 1), and conditional sampling with correctors
def _conditional_strategies(tuned: dict) -> dict:
    return {"independent": ("independent", {}), "multidiffusion": ("multidiffusion", {}),
            "syncsde": ("syncsde", {"inv_lambda": 5.0}), "syncsde tuned": ("syncsde", tuned),
            "inpaint": ("inpaint", {"corrector_steps": 0}),
            "inpaint K1": ("inpaint", {"corrector_steps": 1, "snr": 1.0}),
            "inpaint K3": ("inpaint", {"corrector_steps": 3, "snr": 1.0}),
            "projection": ("projection", {"cg_steps": 3}),
            "projection warm": ("projection", {"cg_steps": 3, "warm_start": True}),
            "projection cg16": ("projection", {"cg_steps": 16})}


def _box(H, W, rows, cols) -> torch.Tensor:
    m = torch.zeros(H, W)
    m[rows[0]:rows[1], cols[0]:cols[1]] = 1
    return m


def _edit_case(name, size, mask, kernel_kw, src_mean, tgt_mean, seed):
    def build(abar):
        H, W = size
        kw = dict(kernel_kw)
        kernel = kw.pop("kernel")
        src = GaussianPrior.field(kernel, (H, W), mean=src_mean, **kw)
        tgt = GaussianPrior.field(kernel, (H, W), mean=tgt_mean, **kw)
        den = PriorDenoiser({"src": src, "tgt": tgt}, abar)
        x_src = src.sample(1, generator=torch.Generator().manual_seed(seed)).to(torch.float32)
        # the source's x_T by DDIM inversion (50 steps; the target law does not depend on it)
        x_T = invert(x_src, den, "src", SamplingSchedule.preset("sd", 50), progress=False)[0]
        target = gaussian_conditional(tgt, 1 - mask, x_src[0])
        strategies = _conditional_strategies({"inv_lambda": 50.0})
        # an edit has its source image: the projection conditions on it (the others cannot)
        strategies["projection, source trajectory"] = ("projection", {"cg_steps": 3})
        for label in ("projection", "projection warm", "projection cg16"):
            strategies[label][1]["clean_source"] = x_src[0]
        return FamilyCase("conditional", name, edit_problem(x_T, mask, "src", "tgt", null="src"),
                          den, target, "edit", strategies=strategies)
    return build


def _mask_case(name, size, mask, bg_kw, obj_kw):
    def build(abar):
        H, W = size
        bg = GaussianPrior.field(bg_kw["kernel"], (H, W), **{k: v for k, v in bg_kw.items() if k != "kernel"})
        obj = GaussianPrior.field(obj_kw["kernel"], (H, W), **{k: v for k, v in obj_kw.items() if k != "kernel"})
        den = PriorDenoiser({"bg": bg, "obj": obj, "both": GaussianMixturePrior([bg, obj], [0.5, 0.5])}, abar)
        return FamilyCase("conditional", name, masked_problem((1, H, W), mask, "bg", "obj", "both"), den,
                          coherent_composition(bg, obj, mask), "mask, coherent target",
                          strategies=_conditional_strategies({"inv_lambda": ConstantInvLambda(2.0)}))
    return build


def _conditional_cases():
    return [
        _edit_case("edit 8x8, centre 4x4, SE 2", (8, 8), _box(8, 8, (2, 6), (2, 6)),
                   {"kernel": "se", "lengthscale": 2.0}, -0.5, 1.0, 1234),
        _edit_case("edit 12x12, left third, Matern-3/2 3", (12, 12), _box(12, 12, (0, 12), (0, 4)),
                   {"kernel": "matern", "nu": 1.5, "lengthscale": 3.0}, 0.0, 0.8, 99),
        _mask_case("mask 8x8, centre 4x4 (coherent)", (8, 8), _box(8, 8, (2, 6), (2, 6)),
                   {"kernel": "se", "lengthscale": 3.0, "mean": -1.0},
                   {"kernel": "se", "lengthscale": 1.0, "mean": 1.0}),
        _mask_case("mask 12x12, bottom band (coherent)", (12, 12), _box(12, 12, (8, 12), (0, 12)),
                   {"kernel": "se", "lengthscale": 2.0, "mean": 0.5},
                   {"kernel": "matern", "nu": 1.5, "lengthscale": 2.0, "mean": -0.5}),
    ]


FAMILIES: dict[str, Callable[[], list]] = {
    "grid": _grid_cases, "cylinder": _cylinder_cases, "long": _long_cases,
    "illusion": _illusion_cases, "mixture": _mixture_cases, "conditional": _conditional_cases,
}

# label -> (strategy, options); strategies that do not apply to a case's views are left out
FAMILY_STRATEGIES: dict[str, tuple[str, dict]] = {
    "independent": ("independent", {}),
    "multidiffusion": ("multidiffusion", {}),
    "synctweedies": ("synctweedies", {}),
    "noise_average": ("noise_average", {}),
    "syncsde": ("syncsde", {"inv_lambda": 5.0}),
    "syncsde lin 2": ("syncsde", {"inv_lambda": 2.0}),
    "collage": ("collage", {}),
    "regiongraph": ("regiongraph", {}),
    "regiongraph K1": ("regiongraph", {"corrector_steps": 1, "snr": 1.0}),
    "regiongraph K3": ("regiongraph", {"corrector_steps": 3, "snr": 0.5}),
    "poe K1": ("poe", {"corrector_steps": 1, "snr": 1.0}),
    "poe K3": ("poe", {"corrector_steps": 3, "snr": 0.5}),
    "sequential K1": ("sequential", {"corrector_steps": 1, "snr": 1.0}),
    "sequential K3": ("sequential", {"corrector_steps": 3, "snr": 1.0}),
}


def is_stochastic(name: str, opts: dict) -> bool:
    """Strategies with their own noise (Langevin correctors, freshly noised known pixels):
    scored on samples, against the oracle's samples."""
    return name == "poe" and opts.get("corrector_steps", 1) > 0 or \
        name == "regiongraph" and opts.get("corrector_steps", 0) > 0 or \
        name in ("sequential", "inpaint")


def window_floor(case: FamilyCase, samples: int, seed: int = 0) -> dict | None:
    """The distance to the target of the maximum-entropy completion of the window marginals
    (:mod:`syncsde.window_limits`): what no strategy using only the window model is identified
    to beat. 1-D chains of windows only (None otherwise)."""
    views = case.problem.views
    if not isinstance(views, WindowViews):
        return None
    try:
        chain_order(views)
    except ValueError:
        return None
    if case.gaussian:
        law = chain_completion_law(views, case.target.spatial_covariance, case.target.mean_vector,
                                   views.canvas_shape[0])
        return {"w2": gaussian_w2(law, case.target)}
    x = sample_chain_completion(views, case.window_law, samples,
                                torch.Generator().manual_seed(seed + 31))
    ref = case.target.sample(samples, generator=torch.Generator().manual_seed(seed + 999))
    return {"energy": energy_distance(x, ref), "mode_corr": mode_corr(case, x)}


def _sample(problem, den, name, schedule, opts, **kw):
    """One sampled run: a lockstep strategy through :func:`sample`, a scheme (``sequential``)
    through its own ``run``."""
    strat = make_strategy(name, **opts)
    if hasattr(strat, "run"):
        return strat.run(problem, den, schedule, **kw).output
    return sample(problem, den, strat, schedule, **kw).output


def build_cases(families, abar) -> list[FamilyCase]:
    return [b(abar) for f in families for b in FAMILIES[f]()]


def _labels(case: FamilyCase, out: torch.Tensor) -> torch.Tensor:
    """+-1 component label of the first and last window of each sample, ``[n, 2]``: the side of
    the midpoint of the two component means along their difference (a likelihood-ratio label
    would hinge on the smooth kernels' near-null directions, which the jitter sets)."""
    views = case.problem.views
    order = views.offsets[:, 1].argsort()
    y = views.forward(out.to(torch.float64))            # [N, n, C, h, w]
    m0, m1 = (c.mean_vector for c in case.window_law.components[:2])
    d, mid = m0 - m1, 0.5 * (m0 + m1)
    labs = []
    for i in (int(order[0]), int(order[-1])):
        proj = (y[i].reshape(len(out), -1) - mid) @ d
        labs.append(torch.where(proj >= 0, 1.0, -1.0))
    return torch.stack(labs, -1)


def mode_corr(case: FamilyCase, out: torch.Tensor) -> float:
    lab = _labels(case, out)
    return float((lab[:, 0] * lab[:, 1]).mean())


# model inputs charged for one backward pass (reverse mode costs about twice a forward pass;
# measured on the scenes UNet in docs/composition.md section 7)
BACKWARD_COST = 2.0


def run_case(case: FamilyCase, schedule, strategies=None, samples: int = 2000, seed: int = 0,
             log: Callable[[str], None] = lambda s: None) -> dict:
    """label -> {w2, kl (Gaussian) or energy, w2_fit, mode_corr (mixture), inputs_per_step,
    pixels_per_step (in window areas), seconds}; ``oracle`` included, ``target`` for mixtures."""
    res: dict[str, dict] = {}
    steps = len(schedule.timesteps)
    win_px = math.prod(case.problem.views.view_shape[1:])
    ref = None
    if not case.gaussian:
        ref = case.target.sample(samples, generator=torch.Generator().manual_seed(seed + 999))
        res["target"] = {"mode_corr": mode_corr(case, ref),
                         "energy": energy_distance(ref, case.target.sample(
                             samples, generator=torch.Generator().manual_seed(seed + 1998)))}
    floor = window_floor(case, samples, seed)
    if floor is not None:
        res["window floor"] = floor
    runs = list((strategies or case.strategies or FAMILY_STRATEGIES).items()) + \
        [("oracle", ("independent", {}))]
    stochastic = case.gaussian and any(is_stochastic(n, o) for _, (n, o) in runs)
    if stochastic:  # the sampled oracle, and exact target samples: the floor of a sampled W2
        runs.append(("oracle (sampled)", ("independent", {})))
        xs = case.target.sample(samples, generator=torch.Generator().manual_seed(seed + 4242))
        res["target (sampled)"] = {"w2_sampled": frechet_to_law(xs.reshape(samples, -1),
                                                                case.target.mean_vector,
                                                                case.target.covariance)}
    for label, (name, opts) in runs:
        problem, den = (oracle_problem(tuple(case.target.event_shape)),
                        PriorDenoiser({"target": case.target}, case.denoiser.abar)) \
            if label.startswith("oracle") else (case.problem, case.denoiser)
        counter = CountingDenoiser(den)
        t0 = time.perf_counter()
        try:
            law = None
            if case.gaussian and not (is_stochastic(name, opts) or label == "oracle (sampled)"):
                try:
                    law = push_forward_law(problem, counter, name, schedule, **opts)
                except ValueError as e:  # not affine (a mixture prompt): scored on samples
                    if "not affine" not in str(e):
                        raise
                    counter = CountingDenoiser(den)
            if law is not None:
                r = {"w2": gaussian_w2(law, case.target), "kl": gaussian_kl(law, case.target)}
                batch = law.batch
            elif case.gaussian:
                out = _sample(problem, counter, name, schedule, opts, seed=seed, batch=samples,
                              dtype=torch.float64, progress=False)
                r = {"w2_sampled": frechet_to_law(out.reshape(samples, -1), case.target.mean_vector,
                                                  case.target.covariance)}
                batch = samples
            else:
                out = _sample(problem, counter, name, schedule, opts, seed=seed, batch=samples,
                              dtype=torch.float64, progress=False)
                r = {"energy": energy_distance(out, ref),
                     "w2_fit": frechet_to_law(out.reshape(samples, -1), case.target.mean_vector,
                                              case.target.covariance),
                     "mode_corr": mode_corr(case, out)}
                batch = samples
        except ValueError as e:  # the strategy does not apply to these views
            log(f"  {case.name:36s} {label:16s} n/a ({str(e)[:60]})")
            continue
        # a backward pass through the model (a vector-Jacobian product) is charged as
        # BACKWARD_COST model inputs; backward_per_step keeps the count itself
        r["backward_per_step"] = counter.backward_inputs / (steps * batch)
        r["inputs_per_step"] = (counter.inputs + BACKWARD_COST * counter.backward_inputs) / \
            (steps * batch)
        r["pixels_per_step"] = counter.pixels / (steps * batch * win_px)
        r["seconds"] = time.perf_counter() - t0
        res[label] = r
        log(f"  {case.name:36s} {label:16s} " + " ".join(
            f"{k}={v:.4g}" for k, v in r.items() if k != "seconds") + f" ({r['seconds']:.1f}s)")
    return res


# ---- tables ----------------------------------------------------------------------------------
TABLE_STRATEGIES = ("independent", "multidiffusion", "syncsde", "syncsde lin 2", "syncsde tuned",
                    "collage", "regiongraph", "regiongraph K1", "regiongraph K3", "poe K1", "poe K3",
                    "sequential K1", "sequential K3", "inpaint", "inpaint K1", "inpaint K3",
                    "projection", "projection warm", "projection cg16",
                    "projection, source trajectory")
_NOT_STRATEGIES = ("oracle", "oracle (sampled)", "target", "target (sampled)", "window floor")


def _views_per_step(res: dict) -> float:
    for lab in ("independent", "multidiffusion", "syncsde"):  # one model input per view
        if "inputs_per_step" in res.get(lab, {}):
            return res[lab]["inputs_per_step"]
    return float("nan")


def ratio(res: dict, label: str) -> float | None:
    """W2 / the oracle's: exact laws against the exact oracle, sampled against the sampled one."""
    r = res.get(label, {})
    if "w2" in r and "w2" in res.get("oracle", {}):
        return r["w2"] / res["oracle"]["w2"]
    if "w2_sampled" in r and "w2_sampled" in res.get("oracle (sampled)", {}):
        return r["w2_sampled"] / res["oracle (sampled)"]["w2_sampled"]
    return None


def best_of(res: dict) -> tuple[str, float]:
    """The strategy with the smallest ratio to the oracle, and that ratio."""
    cands = [(ratio(res, lab), lab) for lab in res if lab not in _NOT_STRATEGIES]
    v, lab = min((v, lab) for v, lab in cands if v is not None)
    return lab, v


def gaussian_table(results: dict, labels=TABLE_STRATEGIES) -> str:
    """Markdown: per case, the oracle's exact W2 and each strategy's W2 / oracle (model inputs
    per step in brackets, relative to the N views; * = on samples, against the sampled oracle)."""
    seen = {lab for e in results.values() for lab in e["strategies"]}
    cols = [lab for lab in labels if lab in seen] + sorted(
        seen - set(labels) - set(_NOT_STRATEGIES) - {"noise_average", "synctweedies"})
    lines = ["| family | case | oracle W2 | " + " | ".join(cols) + " | best / oracle | "
             "window-only floor / oracle |",
             "|---|---|---|" + "---|" * len(cols) + "---|---|"]
    for name, entry in results.items():
        res = entry["strategies"]
        if "w2" not in res.get("oracle", {}):
            continue
        o = res["oracle"]["w2"]
        n = _views_per_step(res)
        cells = []
        for lab in cols:
            q = ratio(res, lab)
            star = "*" if lab in res and "w2_sampled" in res[lab] else ""
            cells.append("-" if q is None else f"{q:.2f}{star} ({res[lab]['inputs_per_step'] / n:.1f}x)")
        blab, bv = best_of(res)
        fl = res.get("window floor", {}).get("w2")
        lines.append(f"| {entry['family']} | {name} | {o:.3f} | " + " | ".join(cells)
                     + f" | **{bv:.2f}** ({blab}) | " + ("-" if fl is None else f"{fl / o:.2f}") + " |")
    return "\n".join(lines)


def mixture_table(results: dict, labels=TABLE_STRATEGIES) -> str:
    lines = ["| case | strategy | energy distance | Frechet (moment fit) | "
             "mode agreement first/last window | inputs / step |", "|---|---|---|---|---|---|"]
    for name, entry in results.items():
        res = entry["strategies"]
        if "energy" not in res.get("oracle", {}):
            continue
        for lab in ("target",) + tuple(labels) + ("window floor", "oracle"):
            r = res.get(lab)
            if r is None:
                continue
            e = f"{r['energy']:.4f}"
            w = f"{r['w2_fit']:.3f}" if "w2_fit" in r else "-"
            c = f"{r['inputs_per_step']:.0f}" if "inputs_per_step" in r else "-"
            note = {"target": " (exact samples vs exact samples)",
                    "window floor": " (exact samples of the window-marginal completion)"}.get(lab, "")
            lines.append(f"| {name} | {lab}{note} "
                         f"| {e} | {w} | {r['mode_corr']:.3f} | {c} |")
    return "\n".join(lines)


def _family_rows(results: dict, max_cost: float | None = None) -> dict[str, list]:
    """Per family: (ratio, strategy, case, cost, floor ratio) of each case's best strategy,
    among those with at most ``max_cost`` model inputs per step per view (None: any cost)."""
    fam: dict[str, list] = {}
    for name, entry in results.items():
        res = entry["strategies"]
        o = res.get("oracle", {})
        n = _views_per_step(res)
        key = "w2" if "w2" in o else "energy" if "energy" in o else None
        if key is None:
            continue
        cands = []
        for lab, r in res.items():
            if lab in _NOT_STRATEGIES or "inputs_per_step" not in r:
                continue
            cost = r["inputs_per_step"] / n
            if max_cost is not None and cost > max_cost + 1e-9:
                continue
            v = ratio(res, lab) if key == "w2" else (r["energy"] / o["energy"] if "energy" in r else None)
            if v is not None:
                cands.append((v, lab, cost))
        if not cands:
            continue
        v, lab, cost = min(cands)
        fl = res.get("window floor", {}).get(key)
        label = name + (" (energy distance)" if key == "energy" else "")
        fam.setdefault(entry["family"], []).append((v, lab, label, cost, None if fl is None else fl / o[key]))
    return fam


def family_summary(results: dict, budget: float = 4.0) -> str:
    """Per family: the range over cases of (best strategy / oracle) at any cost and within
    ``budget`` x the views' model inputs per step (SyncSDE's cost), the worst case of each, and
    the window-only floor there (:mod:`syncsde.window_limits`)."""
    anyc, capped = _family_rows(results), _family_rows(results, budget)
    lines = ["| family | cases | best / oracle, any cost (worst case: strategy, inputs x N) | "
             f"best / oracle within {budget:g}x SyncSDE's model inputs (worst case: strategy, "
             "inputs x N) | window-only floor / oracle at that case |", "|---|---|---|---|---|"]
    for f, rows in anyc.items():
        lo, hi = min(r[0] for r in rows), max(rows, key=lambda r: r[0])
        cap = capped.get(f, [])
        if cap:
            clo, chi = min(r[0] for r in cap), max(cap, key=lambda r: r[0])
            ccell = f"{clo:.2f} - {chi[0]:.2f} ({chi[1]}, {chi[3]:.1f}x; {chi[2]})"
            fl = "-" if chi[4] is None else f"{chi[4]:.2f}"
        else:
            ccell, fl = "-", "-"
        lines.append(f"| {f} | {len(rows)} | {lo:.2f} - {hi[0]:.2f} ({hi[1]}, {hi[3]:.1f}x) | "
                     f"{ccell} | {fl} |")
    return "\n".join(lines)


def plot_frontier(results: dict, path) -> None:
    """Per family, every (case, strategy) as model inputs per step (x N views) against
    W2 / oracle (log), with the family's best ratio at each cost as a line: the measured
    frontier of distance against model calls."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from syncsde.atomic import atomic_savefig

    fams: dict[str, list] = {}
    floors: dict[str, list] = {}
    for name, entry in results.items():
        res = entry["strategies"]
        n = _views_per_step(res)
        fl, o = res.get("window floor", {}), res.get("oracle", {})
        key = "w2" if "w2" in fl else "energy"
        if key in fl and key in o and o[key] > 0 and fl[key] / o[key] >= 0.2:
            # floors far below the oracle's own error say nothing on a log axis: not drawn
            floors.setdefault(entry["family"], []).append(fl[key] / o[key])
        for lab in res:
            if lab in _NOT_STRATEGIES:
                continue
            q = ratio(res, lab)
            if q is None and "energy" in res[lab] and "energy" in res.get("oracle", {}):
                q = res[lab]["energy"] / res["oracle"]["energy"]
            if q is not None:
                fams.setdefault(entry["family"], []).append((res[lab]["inputs_per_step"] / n, q, lab, name))
    fig, axes = plt.subplots(1, len(fams), figsize=(3.4 * len(fams), 3.4), squeeze=False)
    every = list(FAMILY_STRATEGIES) + ["syncsde tuned", "inpaint", "inpaint K1", "inpaint K3"]
    markers = dict(zip(every, "os^v<>DphX*P12348"))
    colors = {lab: plt.get_cmap("tab20")(i) for i, lab in enumerate(every)}
    for ax, (fam, pts) in zip(axes[0], fams.items()):
        for k, f in enumerate(floors.get(fam, [])):  # what no window-only strategy can beat
            ax.axhline(f, color="purple", lw=0.8, ls="-.", alpha=0.7,
                       label="window-only floor" if k == 0 else None)
        for cost, q, lab, _ in pts:
            ax.scatter(cost, q, marker=markers.get(lab, "x"), s=18, alpha=0.8, color=colors.get(lab, "k"),
                       label=lab if lab not in ax.get_legend_handles_labels()[1] else None)
        cases = sorted({p[3] for p in pts})
        for case in cases:  # frontier per case: best ratio at or below each cost
            cp = sorted((c, q) for c, q, _, nm in pts if nm == case)
            best, xs, ys = np.inf, [], []
            for c, q in cp:
                best = min(best, q)
                xs.append(c)
                ys.append(best)
            ax.step(xs, ys, where="post", color="grey", lw=0.7, alpha=0.6)
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.axhline(2.0, color="r", lw=0.6, ls=":")
        ax.set_yscale("log")
        ax.set_title(fam)
        ax.set_xlabel("model inputs / step (x N views)")
    axes[0][0].set_ylabel("distance / oracle's (W2; mixtures: energy)")
    handles = {}
    for ax in axes[0]:
        for hdl, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, hdl)
    fig.tight_layout(rect=(0, 0, 0.9, 1))
    fig.legend(list(handles.values()), list(handles), fontsize=7, loc="center right")
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)
