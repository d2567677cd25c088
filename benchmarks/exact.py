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
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import syncsde  # noqa: F401  (before torch: sets the OpenMP wait policy)
import torch

from syncsde.benchmark import STRATEGIES, TASKS, print_table, run_task
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
    args = ap.parse_args(argv)
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


if __name__ == "__main__":
    main()
