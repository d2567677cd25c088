"""The ground-truth benchmark: every task x strategy on exact-score Gaussian priors.

For each task the exact target law of the canonical object is known (design notes section 4):
the field on the whole canvas (wide, motion), the product p_A(x) p_B(f(x)) (ambiguous), the
masked composition (mask), the conditional law given the kept region (edit). Each strategy's
output is compared with that law by the Frechet distance (W2^2, the FID formula without a
network) fitted on a few thousand samples; the oracle runs the same DDIM steps with the exact
score of the target itself. A seam statistic (variance of differences across window boundaries
over that across interior columns; 1 is ideal) is reported for the window tasks.

    python benchmarks/exact.py --quick                 # < 3 minutes on 2 cores
    python benchmarks/exact.py --json out/exact.json   # the full table (docs/benchmarks.md)

Exact output laws (issue 13; docs/benchmarks.md "Exact output laws"): on a Gaussian prior every
strategy is an affine map of the initial noise, so its output law is computed exactly
(``syncsde.exact_laws``) instead of fitted on samples:

    python benchmarks/exact.py --exact-laws --steps 50 --json docs/exact_laws_tasks.json
    python benchmarks/exact.py --families all --steps 50 --samples 8000 \
        --json docs/exact_families.json --plot docs/exact_families.png
    python benchmarks/exact.py --scheduler ddim,ddpm,euler,euler_a,dpmpp_2m --json docs/exact_schedulers.json
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import syncsde  # noqa: F401  (before torch: sets the OpenMP wait policy)
import torch

from syncsde.benchmark import (SOLVERS, STRATEGIES, TASKS, print_table, run_solver_table, run_task,
                               solver_table)
from syncsde.benchmark_families import (FAMILIES, build_cases, family_summary, gaussian_table,
                                        mixture_table, ratio, run_case)
from syncsde.sampler import SamplingSchedule
from syncsde.schedules import ConstantInvLambda
from syncsde.atomic import atomic_write_json

# SyncSDE over 1/lambda schedules: "lin k" = k t / T (the authors' form), "const k" = k.
SWEEP = {f"syncsde lin {k}": ("syncsde", {"inv_lambda": float(k)}) for k in (2, 5, 10, 20, 50)}
SWEEP.update({f"syncsde const {k}": ("syncsde", {"inv_lambda": ConstantInvLambda(float(k))})
              for k in (1, 2, 5)})


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer samples and steps (< 3 minutes)")
    ap.add_argument("--samples", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--json", default=None, help="write {task: {strategy: {w2, seam}}} here")
    ap.add_argument("--plot", default=None, help="write a bar chart (PNG) here")
    ap.add_argument("--sweep", action="store_true",
                    help="instead: SyncSDE over 1/lambda schedules (docs/benchmarks.md sweep)")
    ap.add_argument("--exact-laws", action="store_true",
                    help="instead: exact output laws of the affine strategies on these tasks, "
                         "beside the sampled Frechet distance")
    ap.add_argument("--families", default=None,
                    help="instead: the issue-13 families (comma list of "
                         f"{','.join(FAMILIES)}, or 'all') on exact laws / samples")
    ap.add_argument("--tables-from", default=None,
                    help="instead: print the --families tables of a saved JSON (no sampling)")
    ap.add_argument("--poe-snr", default=None,
                    help="with --families: instead of the family strategies, SyncSDE and poe with "
                         "one corrector at each of these snr (comma list), e.g. 0.1,0.3,1.0")
    ap.add_argument("--regiongraph-mix", default=None,
                    help="with --families: instead of the family strategies, MultiDiffusion, the "
                         "region graph and regiongraph with each of these mix (comma list), e.g. "
                         "0.25,0.5 (docs/composition.md, eq. (3))")
    ap.add_argument("--regiongraph-start", default=None,
                    help="with --families: instead of the family strategies, MultiDiffusion, the "
                         "region graph and regiongraph with the region terms from each of these "
                         "fractions of the steps on (comma list), e.g. 0.3,0.5")
    ap.add_argument("--scheduler", default=None,
                    help=f"instead: one row per solver ({','.join(SOLVERS)}) and step count "
                         "(--steps-list) for these tasks, the strategy of --solver-strategy and the oracle")
    ap.add_argument("--steps-list", default="10,20,50", help="step counts of --scheduler")
    ap.add_argument("--solver-strategy", default="syncsde", help="strategy label of --scheduler")
    args = ap.parse_args(argv)
    if args.tables_from:
        import json

        res = json.loads(Path(args.tables_from).read_text())
        print(family_summary(res) + "\n\n" + gaussian_table(res) + "\n\n" + mixture_table(res))
        if args.plot:
            from syncsde.benchmark_families import plot_frontier

            plot_frontier(res, args.plot)
        return res
    if args.families or args.scheduler or args.exact_laws:
        return exact_modes(args)
    n = args.samples or (4000 if args.quick else 20000)
    steps = args.steps or (20 if args.quick else 50)
    schedule = SamplingSchedule.preset("sd", steps)
    torch.manual_seed(args.seed)
    results = {}
    t0 = time.perf_counter()
    print(f"exact-score benchmark: {n} samples, {steps} DDIM steps (SD schedule)", flush=True)
    strategies = SWEEP if args.sweep else STRATEGIES
    for name in args.tasks.split(","):
        if name not in TASKS:
            raise SystemExit(f"unknown task {name!r}; expected some of {list(TASKS)}")
        task = TASKS[name](schedule)
        results[name] = run_task(task, schedule, n, args.seed, strategies,
                                 lambda s: print(s, flush=True))
    print(f"\nFrechet distance W2^2 to the exact target law (lower is better), {n} samples, "
          f"{steps} steps; total {time.perf_counter() - t0:.0f}s\n")
    print_table(results)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.json, results)
    if args.plot:
        from syncsde.benchmark import plot_results

        plot_results(results, args.plot, f"exact-score benchmark ({n} samples, {steps} steps; "
                                         "lower is better)")
    return results


# issue-13 strategies added to the --exact-laws table (docs/composition.md)
NEW_STRATEGIES = {"regiongraph": ("regiongraph", {}),
                  "regiongraph K3": ("regiongraph", {"corrector_steps": 3, "snr": 0.5}),
                  "poe K3": ("poe", {"corrector_steps": 3, "snr": 0.5})}


def _tasks(arg: str) -> list[str]:
    names = [t for t in arg.split(",") if t]
    bad = [t for t in names if t not in TASKS]
    if bad:
        raise SystemExit(f"unknown task(s) {bad}; expected some of {list(TASKS)}")
    return names


def exact_modes(args) -> dict:
    """--exact-laws, --families, --scheduler (module docstring)."""
    from syncsde.exact_laws import gaussian_w2, push_forward_law
    from syncsde.metrics import frechet_to_law
    from syncsde.sampler import sample

    log = lambda s: print(s, flush=True)  # noqa: E731
    t0 = time.perf_counter()
    steps = args.steps or 50
    n = args.samples or 4000
    if args.scheduler:
        solvers = [s for s in args.scheduler.split(",") if s]
        bad = [s for s in solvers if s not in SOLVERS]
        if bad:
            raise SystemExit(f"unknown solver(s) {bad}; expected some of {list(SOLVERS)}")
        if args.solver_strategy not in STRATEGIES:
            raise SystemExit(f"--solver-strategy must be one of {list(STRATEGIES)}")
        steps_list = [int(v) for v in args.steps_list.split(",") if v]
        res = run_solver_table(_tasks(args.tasks), solvers, steps_list, args.solver_strategy, n,
                               args.seed, log)
        print(f"\n{args.solver_strategy} W2 / oracle W2 per solver (exact laws; * = {n} samples); "
              f"{time.perf_counter() - t0:.0f}s\n")
        print(solver_table(res))
    elif args.families:
        names = list(FAMILIES) if args.families == "all" else [f for f in args.families.split(",") if f]
        bad = [f for f in names if f not in FAMILIES]
        if bad:
            raise SystemExit(f"unknown families {bad}; expected some of {list(FAMILIES)} or 'all'")
        schedule = SamplingSchedule.preset("sd", steps)
        strategies = None
        if args.poe_snr:
            strategies = {"syncsde": ("syncsde", {"inv_lambda": 5.0})}
            strategies.update({f"poe K1 snr {v}": ("poe", {"corrector_steps": 1, "snr": float(v)})
                               for v in args.poe_snr.split(",") if v})
        if args.regiongraph_mix:
            strategies = {"multidiffusion": ("multidiffusion", {}), "regiongraph": ("regiongraph", {})}
            strategies.update({f"regiongraph mix {v}": ("regiongraph", {"mix": float(v)})
                               for v in args.regiongraph_mix.split(",") if v})
        if args.regiongraph_start:
            strategies = {"multidiffusion": ("multidiffusion", {}), "regiongraph": ("regiongraph", {})}
            strategies.update({f"regiongraph start {v}": ("regiongraph", {"start": float(v)})
                               for v in args.regiongraph_start.split(",") if v})
        res = {}
        for case in build_cases(names, schedule.abar):
            res[case.name] = {"family": case.family, "note": case.note,
                              "strategies": run_case(case, schedule, strategies, samples=n,
                                                     seed=args.seed, log=log)}
        print(f"\nexact laws, {steps} DDIM steps (mixtures: {n} samples); "
              f"{time.perf_counter() - t0:.0f}s\n")
        if strategies is not None:   # the chosen strategies' W2 / the oracle's, per case
            labels = list(strategies)
            print("| case | " + " | ".join(labels) + " |\n|---|" + "---|" * len(labels))
            for name, r in res.items():
                st = r["strategies"]
                cells = [f"{ratio(st, k):.2f}x" if ratio(st, k) is not None else "-" for k in labels]
                print(f"| {name} | " + " | ".join(cells) + " |")
        else:
            print(family_summary(res) + "\n")
            print(gaussian_table(res) + "\n")
            print(mixture_table(res))
        if args.plot:
            from syncsde.benchmark_families import plot_frontier

            plot_frontier(res, args.plot)
    else:
        schedule = SamplingSchedule.preset("sd", steps)
        res = {}
        for tname in _tasks(args.tasks):
            task = TASKS[tname](schedule)
            row = {}
            items = list(STRATEGIES.items()) + list(NEW_STRATEGIES.items()) + \
                [("oracle", ("independent", {}))]
            for label, (name, opts) in items:
                if label == "syncsde_tuned":
                    opts = dict(opts, **task.syncsde_options)
                if name in ("collage", "regiongraph") and not task.seams:
                    continue  # window tasks only
                if name == "poe" and tname != "ambiguous":
                    continue  # its target is the product of the views' laws: the illusion task
                prob, den = task.problem, task.denoiser
                if label == "oracle":
                    from syncsde.benchmark import _oracle_problem
                    from syncsde.priors import PriorDenoiser

                    prob = _oracle_problem(tuple(task.target.event_shape))
                    den = PriorDenoiser({"target": task.target}, schedule.abar)
                ex = None  # not affine: Langevin correctors, mixture prompts (mask), gradient guidance
                if not opts.get("corrector_steps"):
                    try:
                        law = push_forward_law(prob, den, name, schedule, guidance_scale=task.guidance,
                                               **opts)
                        ex = gaussian_w2(law, task.target)
                    except ValueError:
                        pass
                r = sample(prob, den, name, schedule, seed=args.seed, batch=n,
                           guidance_scale=task.guidance, progress=False, **opts)
                o = r.output if r.output.dim() > len(task.target.event_shape) else r.output[None]
                sampled = frechet_to_law(o.reshape(len(o), -1).double(), task.target.mean_vector,
                                         task.target.covariance)
                row[label] = {"exact": ex, "sampled": sampled}
                log(f"  {tname:10s} {label:16s} exact W2={'n/a' if ex is None else f'{ex:.3f}'}"
                    f" sampled ({n}) W2={sampled:.3f}")
            res[tname] = row
        print(f"\nexact W2 (sampled, {n} samples), {steps} steps; "
              f"{time.perf_counter() - t0:.0f}s\n")
        labels = list(dict.fromkeys(k for row in res.values() for k in row if k != "oracle")) + ["oracle"]
        print("| strategy | " + " | ".join(res) + " |\n|---|" + "---|" * len(res))
        for lab in labels:
            cells = []
            for t in res:
                r = res[t].get(lab)
                cells.append("-" if r is None else
                             ("n/a" if r["exact"] is None else f"{r['exact']:.3f}") + f" ({r['sampled']:.3f})")
            print(f"| {lab} | " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.json, res)
    return res


if __name__ == "__main__":
    main()
