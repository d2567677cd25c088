"""The exact-score texture benchmark (syncsde.mesh.benchmark): a Gaussian field on the texture of
a cube and a sphere, 10 cameras (the authors' views), every texture strategy and the oracle.

    python benchmarks/texture.py --quick              # ~1 minute on 2 cores
    python benchmarks/texture.py --json out/tex.json  # the table of docs/models/texture.md
"""
from __future__ import annotations

import argparse
import time

import syncsde  # noqa: F401  (before torch: sets the OpenMP wait policy)
import torch

from syncsde.atomic import atomic_write_json
from syncsde.mesh import benchmark as B


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="500 samples, 15 steps")
    ap.add_argument("--samples", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--eta", type=float, default=1.0, help="1 = DDPM-like (the authors'), 0 = DDIM")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--meshes", default="cube,sphere")
    ap.add_argument("--texture-size", type=int, default=16,
                    help="texture side (16: pixels often share texels; 32+: finer than the views, "
                         "the real task's regime)")
    ap.add_argument("--strategies", default=None,
                    help="';'-separated labels of syncsde.mesh.benchmark.STRATEGIES (default all)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    n = args.samples or (500 if args.quick else 4000)
    steps = args.steps or (15 if args.quick else 30)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    print(f"texture benchmark: {n} samples, {steps} steps, eta {args.eta}, texture "
          f"{args.texture_size}^2", flush=True)
    results = {}
    for kind in args.meshes.split(","):
        bench = B.build(kind, texture_size=args.texture_size)
        print(f"{kind}: {len(bench.active)} texels, {bench.views.num_views} views of "
              f"{bench.views.size[0]}x{bench.views.size[1]}", flush=True)
        strategies = None
        if args.strategies:
            labels = [k.strip() for k in args.strategies.split(";") if k.strip()]
            unknown = [k for k in labels if k not in B.STRATEGIES]
            if unknown:
                raise SystemExit(f"--strategies: unknown {unknown}; expected some of "
                                 f"{list(B.STRATEGIES)}")
            strategies = {k: B.STRATEGIES[k] for k in labels}
        results[kind] = B.run(bench, n, steps, args.eta, args.seed, strategies,
                              log=lambda s: print(s, flush=True))
    print(f"\nFrechet distance W2^2 of the baked texture to the exact texture law; seam "
          f"statistics (1 is ideal); {n} samples, {steps} steps, eta {args.eta} "
          f"({time.perf_counter() - t0:.0f}s)\n")
    B.print_table(results)
    if args.json:
        atomic_write_json(args.json, {"samples": n, "steps": steps, "eta": args.eta,
                                      "texture_size": args.texture_size,
                                      "results": results})
    return results


if __name__ == "__main__":
    main()
