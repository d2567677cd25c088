"""``syncsde`` (also ``python -m syncsde``): the demo, the benchmark, and one subcommand per task.

    syncsde demo --out out/          # the newcomer's main job (no download, < 1 minute)
    syncsde bench --quick            # the exact-score benchmark table
    syncsde wide|mask|edit|ambiguous|motion ...   # real models (diffusers / MDM weights)
"""
from __future__ import annotations

import argparse
import sys


def _demo(args) -> int:
    from syncsde.demo import run_demo

    run_demo(args.out, steps=args.steps, seed=args.seed, samples=args.samples,
             progress=not args.quiet, benchmark=not args.no_benchmark)
    return 0


def _bench(args) -> int:
    import json
    from pathlib import Path

    from syncsde.benchmark import STRATEGIES, TASKS, print_table, run_task
    from syncsde.sampler import SamplingSchedule

    n = args.samples or (4000 if args.quick else 20000)
    steps = args.steps or (20 if args.quick else 50)
    schedule = SamplingSchedule.preset("sd", steps)
    results = {}
    for name in args.tasks.split(","):
        if name not in TASKS:
            print(f"unknown task {name!r}; expected some of {list(TASKS)}", file=sys.stderr)
            return 2
        results[name] = run_task(TASKS[name](schedule), schedule, n, args.seed, STRATEGIES,
                                 lambda s: print(s, flush=True))
    print()
    print_table(results)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="syncsde", description="Diffusion synchronization (SyncSDE and peers).")
    sub = ap.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="run the demo on the built-in exact-score prior and write PNGs")
    d.add_argument("--out", default="out", help="output folder (default: out)")
    d.add_argument("--steps", type=int, default=25, help="DDIM steps (default 25)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--samples", type=int, default=1000, help="samples per benchmark cell")
    d.add_argument("--no-benchmark", action="store_true", help="skip the benchmark figure")
    d.add_argument("--quiet", action="store_true", help="no progress output")
    d.set_defaults(func=_demo)
    b = sub.add_parser("bench", help="the exact-score benchmark (every task x strategy)")
    b.add_argument("--quick", action="store_true")
    b.add_argument("--samples", type=int, default=None)
    b.add_argument("--steps", type=int, default=None)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--tasks", default="wide,ambiguous,mask,edit,motion")
    b.add_argument("--json", default=None)
    b.set_defaults(func=_bench)
    try:
        from syncsde.cli_models import add_model_commands
    except ImportError:  # the model commands are optional (diffusers extras)
        pass
    else:
        add_model_commands(sub)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.func(args)
    except Exception as e:  # a missing model is a user-facing message, not a traceback
        if type(e).__name__ == "ModelNotAvailableError":
            print(f"syncsde {args.command}: {e}", file=sys.stderr)
            return 2
        raise
    if isinstance(result, int):
        return result
    return 0


if __name__ == "__main__":
    sys.exit(main())
