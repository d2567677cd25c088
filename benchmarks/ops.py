"""C kernels vs the same math in PyTorch eager, at Stable Diffusion latent sizes.

Every op of :mod:`syncsde.ops` is run through its public wrapper (what the sampler calls, output
buffer given with ``out=`` where the op has one) and compared with the same math written as
plain PyTorch on the same tensors. Each torch variant is first checked against the C result
(``torch.allclose``), then both are timed: warm-up, then the median of many single calls
(``time.perf_counter``), C and torch interleaved in rounds so that drifts hit both alike. Where
more than one natural torch formulation exists (a slicing loop vs ``index_add_``, ``gather`` vs
``index_select``, ...) all are timed and the FASTEST is the reference (``torch code`` column).

A plain ``dst.copy_(src)`` moving the same traffic is timed too: traffic is the bytes of every
tensor argument the op reads plus every tensor it writes, each counted once (a tensor updated in
place counts twice: read and written); the copy uses a buffer of traffic / 2 bytes, so it reads
and writes as many bytes in total. ``memcpy_ratio = c_ms / copy_ms``.

Sizes: a view ``C x h x w`` in {4x64x64, 4x96x96, 4x96x256} and N views in {2, 4, 16}. Per-view
ops (steps, pixel maps) act on ``[N, C, h, w]``; window ops use N windows of ``h x w`` every
``w / 4`` columns along a canvas ``C x h x (w + (N-1) w/4)`` (the wide-image layout).

Targets (design notes section 5): speedup >= 1 on every op; streaming kernels (marked ``*``)
within 1.5x of the copy.

    python benchmarks/ops.py                  # full grid (~1 minute on 2 cores)
    python benchmarks/ops.py --quick          # small grid (~10 s)
    python benchmarks/ops.py --json out/ops.json --threads 2
    python benchmarks/ops.py --device cuda    # cost of staging CUDA tensors through host memory
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import syncsde  # noqa: E402  (before torch: sets OMP_WAIT_POLICY=PASSIVE)
import torch  # noqa: E402

from syncsde import ops  # noqa: E402
from syncsde.atomic import atomic_write_json

warnings.filterwarnings("ignore", message=".*[Ss]parse.*")

F32 = 4  # bytes per element (all data here is float32)
I64 = 8

FULL_SIZES = [(4, 64, 64), (4, 96, 96), (4, 96, 256)]
FULL_NS = [2, 4, 16]
QUICK_SIZES = [(4, 64, 64), (4, 96, 256)]
QUICK_NS = [2, 16]


@dataclass
class Bench:
    """One op at one size: the C call, the torch variants, and what to compare."""

    op: str
    c: Callable[[], Any]                       # runs the C op, returns its output
    torch: dict[str, Callable[[], Any]]        # variant name -> runs the torch math, returns output
    traffic: int                               # bytes read + bytes written (see module doc)
    streaming: bool = True
    reset: Callable[[], None] | None = None    # restores in-place state before a check
    atol: float = 1e-5
    rtol: float = 1e-5
    notes: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# builders: one per op family. Each returns a list of Bench on fresh tensors of one size.

def _g(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def _randn(shape, seed):
    return torch.randn(shape, generator=_g(seed), dtype=torch.float32)


def step_benches(N: int, C: int, h: int, w: int) -> list[Bench]:
    X = (N, C, h, w)
    nb = math.prod(X) * F32
    x, eps, ref, z = _randn(X, 1), _randn(X, 2), _randn(X, 3), _randn(X, 4)
    eu, ec = eps, ref
    mask = (torch.rand((N, 1, h, w), generator=_g(5)) > 0.5).to(torch.float32)
    out = torch.empty(X)
    at, as_ = 0.5, 0.6          # abar at t (noisier) and at s
    s = 7.5                     # guidance scale
    inv_lam = 2.5               # inv_lambda(t)
    eta = 1.0

    def tweedie_t():
        return (x - math.sqrt(1 - at) * eps) / math.sqrt(at)

    def cfg_t():
        return eu + s * (ec - eu)

    def ddim_t():
        x0 = (x - math.sqrt(1 - at) * eps) / math.sqrt(at)
        return math.sqrt(as_) * x0 + math.sqrt(1 - as_) * eps

    def ddim_eta_t():
        sigma = eta * math.sqrt((1 - as_) / (1 - at) * (1 - at / as_))
        x0 = (x - math.sqrt(1 - at) * eps) / math.sqrt(at)
        return math.sqrt(as_) * x0 + math.sqrt(1 - as_ - sigma ** 2) * eps + sigma * z

    gamma = math.sqrt(as_ / at) - math.sqrt((1 - as_) / (1 - at))

    def syncsde_t():
        x0 = (x - math.sqrt(1 - at) * eps) / math.sqrt(at)
        return math.sqrt(as_) * x0 + math.sqrt(1 - as_) * eps - gamma * inv_lam * mask * (x - ref)

    return [
        Bench("tweedie", lambda: ops.tweedie(x, eps, at, out=out), {"expr": tweedie_t}, 3 * nb),
        Bench("cfg_combine", lambda: ops.cfg_combine(eu, ec, s, out=out), {"expr": cfg_t}, 3 * nb),
        Bench("ddim_step", lambda: ops.ddim_step(x, eps, at, as_, out=out), {"expr": ddim_t}, 3 * nb),
        Bench("ddim_step_eta1", lambda: ops.ddim_step(x, eps, at, as_, eta, noise=z, out=out),
              {"expr": ddim_eta_t}, 4 * nb),
        Bench("syncsde_step", lambda: ops.syncsde_step(x, eps, ref, mask, at, as_, inv_lam, out=out),
              {"expr": syncsde_t}, 4 * nb + mask.numel() * F32),
    ]


def window_benches(N: int, C: int, h: int, w: int) -> list[Bench]:
    sw = max(1, w // 4)
    H, W = h, w + (N - 1) * sw
    offs_list = [(0, i * sw) for i in range(N)]
    offs = torch.tensor(offs_list, dtype=torch.int64)
    ob = offs.numel() * I64
    views = _randn((N, C, h, w), 11)
    vb = views.numel() * F32
    canvas0 = _randn((C, H, W), 12)
    cb = canvas0.numel() * F32
    canvas_c = canvas0.clone()
    canvas_t = canvas0.clone()
    crop_out = torch.empty((N, C, h, w))
    # flat canvas index of every view pixel (precomputed once, as a user of index_add_ would)
    rows = torch.arange(h).view(1, h, 1)
    cols = torch.arange(w).view(1, 1, w)
    lefts = offs[:, 1].view(N, 1, 1)
    flat_idx = (rows * W + lefts + cols).reshape(-1)  # [N*h*w]

    def reset():
        canvas_c.copy_(canvas0)
        canvas_t.copy_(canvas0)

    # crop
    def crop_slices():
        return torch.stack([canvas_t[:, t:t + h, l:l + w] for t, l in offs_list])

    def crop_unfold():  # regular grids only: a strided window view, then one copy
        return canvas_t.unfold(-1, w, sw).permute(2, 0, 1, 3).contiguous()

    # paste add (adjoint)
    def paste_add_loop():
        for i, (t, l) in enumerate(offs_list):
            canvas_t[:, t:t + h, l:l + w] += views[i]
        return canvas_t

    def paste_add_index_add():
        src = views.transpose(0, 1).reshape(C, -1)
        canvas_t.view(C, -1).index_add_(1, flat_idx, src)
        return canvas_t

    # paste on top
    def on_top_loop():
        for i, (t, l) in enumerate(offs_list):
            canvas_t[:, t:t + h, l:l + w] = views[i]
        return canvas_t

    # window average
    def average_loop():
        num = torch.zeros_like(canvas_t)
        den = torch.zeros((H, W))
        for i, (t, l) in enumerate(offs_list):
            num[:, t:t + h, l:l + w] += views[i]
            den[t:t + h, l:l + w] += 1
        return torch.where(den > 0, num / den, canvas_t)

    def average_index_add():
        num = torch.zeros((C, H * W)).index_add_(1, flat_idx, views.transpose(0, 1).reshape(C, -1))
        den = torch.zeros(H * W).index_add_(0, flat_idx, torch.ones(flat_idx.numel()))
        return torch.where(den > 0, num / den, canvas_t.view(C, -1)).view(C, H, W)

    # normalize_accumulated on a canvas-sized numerator, some pixels uncovered (den = 0)
    num = _randn((C, H, W), 13)
    den = torch.rand((H, W), generator=_g(14)) * 4
    den[torch.rand((H, W), generator=_g(15)) < 0.1] = 0
    norm_c = canvas0.clone()

    def normalize_t():
        return torch.where(den > 0, num / den, canvas0)

    # coverage
    cov_out = torch.empty((H, W))

    def coverage_loop():
        cov = torch.zeros((H, W))
        for t, l in offs_list:
            cov[t:t + h, l:l + w] += 1
        return cov

    def coverage_index_add():
        return torch.zeros(H * W).index_add_(0, flat_idx, torch.ones(flat_idx.numel())).view(H, W)

    return [
        Bench("crop_windows", lambda: ops.crop_windows(canvas_c, offs, (h, w), out=crop_out),
              {"slices+stack": crop_slices, "unfold": crop_unfold}, cb + ob + vb),
        Bench("paste_windows_add", lambda: ops.paste_windows_add(views, offs, canvas_c),
              {"slice loop +=": paste_add_loop, "index_add_": paste_add_index_add},
              vb + ob + 2 * cb, reset=reset),
        Bench("paste_windows_on_top", lambda: ops.paste_windows_on_top(views, offs, canvas_c),
              {"slice loop =": on_top_loop}, vb + ob + cb, reset=reset),
        Bench("window_average", lambda: ops.window_average(views, offs, canvas_c),
              {"slice loop + where": average_loop, "index_add_ + where": average_index_add},
              vb + ob + cb, reset=reset),
        Bench("normalize_accumulated",
              lambda: ops.normalize_accumulated(num, den, out=norm_c, uncovered="keep"),
              {"where": normalize_t}, 2 * cb + den.numel() * F32,
              reset=lambda: norm_c.copy_(canvas0)),
        Bench("window_coverage",
              lambda: ops.window_coverage(offs, (h, w), (H, W), out=cov_out),
              {"slice loop +=": coverage_loop, "index_add_": coverage_index_add},
              ob + H * W * F32, streaming=False),
    ]


def _bilinear_warp_csr(h: int, w: int, angle: float = 0.17, scale: float = 0.97):
    """CSR of a bilinear resampling (rotation + zoom about the centre): 4 entries per row."""
    P = h * w
    i = torch.arange(h, dtype=torch.float64).view(h, 1).expand(h, w)
    j = torch.arange(w, dtype=torch.float64).view(1, w).expand(h, w)
    ci, cj = (h - 1) / 2, (w - 1) / 2
    ca, sa = math.cos(angle), math.sin(angle)
    si = ci + scale * (ca * (i - ci) - sa * (j - cj))
    sj = cj + scale * (sa * (i - ci) + ca * (j - cj))
    si = si.clamp(0, h - 1 - 1e-9).reshape(-1)
    sj = sj.clamp(0, w - 1 - 1e-9).reshape(-1)
    i0, j0 = si.floor().long(), sj.floor().long()
    fi, fj = si - i0, sj - j0
    i1, j1 = (i0 + 1).clamp(max=h - 1), (j0 + 1).clamp(max=w - 1)
    cols = torch.stack([i0 * w + j0, i0 * w + j1, i1 * w + j0, i1 * w + j1], 1).reshape(-1)
    vals = torch.stack([(1 - fi) * (1 - fj), (1 - fi) * fj, fi * (1 - fj), fi * fj], 1).reshape(-1)
    indptr = torch.arange(0, 4 * P + 1, 4, dtype=torch.int64)
    return indptr, cols.contiguous(), vals.to(torch.float32).contiguous(), P


def pixelmap_benches(N: int, C: int, h: int, w: int) -> list[Bench]:
    X = (N, C, h, w)
    nb = math.prod(X) * F32
    x = _randn(X, 21)
    out_same = torch.empty(X)
    out_swap = torch.empty((N, C, w, h))
    benches = []

    def dihedral_bench(name, op, variants, out):
        return Bench(f"dihedral_{name}", lambda: ops.dihedral(x, op, out=out), variants, 2 * nb)

    benches.append(dihedral_bench("rot90_cw", "rot90_cw", {
        "rot90().contiguous()": lambda: torch.rot90(x, -1, (-2, -1)).contiguous(),
        "transpose.flip.contiguous()": lambda: x.transpose(-1, -2).flip(-1).contiguous()}, out_swap))
    benches.append(dihedral_bench("hflip", "hflip", {"flip": lambda: torch.flip(x, (-1,))}, out_same))
    benches.append(dihedral_bench("vflip", "vflip", {"flip": lambda: torch.flip(x, (-2,))}, out_same))
    benches.append(dihedral_bench("transpose", "transpose", {
        "transpose().contiguous()": lambda: x.transpose(-1, -2).contiguous()}, out_swap))

    # skew: column w rolled by d_w along the height == a gather with a precomputed index
    d = torch.tensor(ops.skew_shifts(h, w, 1.5), dtype=torch.int64)
    skew_idx = (torch.arange(h).view(h, 1) - d.view(1, w)) % h  # [h, w]

    benches.append(Bench("skew", lambda: ops.skew(x, 1.5, out=out_same), {
        "gather(idx)": lambda: torch.gather(x, -2, skew_idx.expand(X))}, 2 * nb))

    # pixel permutation: gather and scatter with a random permutation of the h*w pixels
    P = h * w
    perm = torch.randperm(P, generator=_g(22))
    xf = x.view(N, C, P)

    def scatter_index_put():
        o = torch.empty_like(xf)
        o[..., perm] = xf
        return o.view(X)

    benches.append(Bench("permute_pixels_gather", lambda: ops.permute_pixels(x, perm, "gather", out=out_same), {
        "gather": lambda: torch.gather(xf, -1, perm.expand(N, C, P)).view(X),
        "index_select": lambda: xf.index_select(-1, perm).view(X)}, 2 * nb + P * I64,
        streaming=False))
    benches.append(Bench("permute_pixels_scatter", lambda: ops.permute_pixels(x, perm, "scatter", out=out_same), {
        "scatter_": lambda: torch.empty_like(xf).scatter_(-1, perm.expand(N, C, P), xf).view(X),
        "index_put": scatter_index_put,
        "index_copy_": lambda: torch.empty_like(xf).index_copy_(-1, perm, xf).view(X)},
        2 * nb + P * I64, streaming=False))

    # CSR: bilinear resampling of the h*w pixels (4 nnz per row), applied to the last dim
    indptr, indices, values, P = _bilinear_warp_csr(h, w)
    A = torch.sparse_csr_tensor(indptr, indices, values, (P, P))
    AT = A.to_sparse_coo().t().coalesce().to_sparse_csr()  # transpose precomputed once
    csr_out = torch.empty((N, C, P))
    mat_b = indptr.numel() * I64 + indices.numel() * I64 + values.numel() * F32

    def fwd_t():
        return torch.sparse.mm(A, xf.reshape(-1, P).T).T.reshape(N, C, P)

    def adj_csc():
        return (A.t() @ xf.reshape(-1, P).T).T.reshape(N, C, P)

    def adj_pre():
        return torch.sparse.mm(AT, xf.reshape(-1, P).T).T.reshape(N, C, P)

    benches.append(Bench("csr_apply_forward",
                         lambda: ops.csr_apply(xf, indptr, indices, values, P, out=csr_out),
                         {"sparse.mm(A, x.T).T": fwd_t}, 2 * nb + mat_b, streaming=False,
                         atol=1e-5, rtol=1e-4))
    benches.append(Bench("csr_apply_adjoint",
                         lambda: ops.csr_apply(xf, indptr, indices, values, P, adjoint=True, out=csr_out),
                         {"A.t() @ x.T (CSC)": adj_csc, "sparse.mm(A^T pre-built CSR)": adj_pre},
                         2 * nb + mat_b, streaming=False, atol=1e-5, rtol=1e-4))
    return benches


def all_benches(N, C, h, w):
    return step_benches(N, C, h, w) + window_benches(N, C, h, w) + pixelmap_benches(N, C, h, w)


# ----------------------------------------------------------------------------------------------
# timing

def _sync_none():
    pass


def measure(fns: dict[str, Callable[[], Any]], min_time: float, rounds: int = 7,
            sync: Callable[[], None] = _sync_none) -> dict[str, float]:
    """Median seconds per call of each fn; fns are interleaved in ``rounds`` blocks."""
    est = {}
    for k, f in fns.items():  # warm up (allocator, caches, thread pools) and estimate
        for _ in range(3):
            f()
        sync()
        t0 = time.perf_counter()
        for _ in range(3):
            f()
        sync()
        est[k] = max((time.perf_counter() - t0) / 3, 1e-7)
    per_round = {k: max(4, min(400, int(min_time / rounds / e))) for k, e in est.items()}
    samples: dict[str, list[float]] = {k: [] for k in fns}
    pc = time.perf_counter
    for _ in range(rounds):
        for k, f in fns.items():
            ts = samples[k]
            for _ in range(per_round[k]):
                t0 = pc()
                f()
                sync()
                ts.append(pc() - t0)
    return {k: statistics.median(v) for k, v in samples.items()}


_copy_cache: dict[int, float] = {}


def copy_time(traffic: int, min_time: float) -> float:
    """Median seconds of ``dst.copy_(src)`` over buffers of traffic/2 bytes (reads + writes =
    traffic)."""
    n = max(1, traffic // 2 // F32)
    if n not in _copy_cache:
        src = torch.randn(n)
        dst = torch.empty(n)
        _copy_cache[n] = measure({"copy": lambda: dst.copy_(src)}, min_time)["copy"]
    return _copy_cache[n]


def check(b: Bench) -> tuple[bool, str]:
    """C output vs every torch variant (allclose), each from the same starting state."""
    msgs = []
    ok = True
    if b.reset:
        b.reset()
    ref = b.c().clone()
    for name, f in b.torch.items():
        if b.reset:
            b.reset()
        got = f()
        if got.shape != ref.shape:
            ok = False
            msgs.append(f"{name}: shape {tuple(got.shape)} != {tuple(ref.shape)}")
            continue
        if not torch.allclose(ref, got, rtol=b.rtol, atol=b.atol):
            ok = False
            err = (ref - got).abs().max().item()
            msgs.append(f"{name}: max abs diff {err:.3g}")
    return ok, "; ".join(msgs)


def call_floor(min_time: float) -> dict[str, float]:
    """Per-call cost on 1-element tensors: the wrapper + binding floor vs torch's dispatch."""
    a, b, o = torch.randn(1), torch.randn(1), torch.empty(1)
    t = measure({"c": lambda: ops.tweedie(a, b, 0.5, out=o),
                 "c_raw": lambda: syncsde._C.lincomb2(o, a, b, 1.0, -1.0),
                 "torch": lambda: (a - 0.5 * b) / 0.7}, min_time)
    return {k: v * 1e3 for k, v in t.items()}


def warm_up(sizes, ns, seconds: float = 0.5) -> None:
    """Runs every op of the smallest case untimed (thread pools, allocator, page faults)."""
    (C, h, w), N = sizes[0], ns[0]
    t_end = time.perf_counter() + seconds
    benches = all_benches(N, C, h, w)
    while time.perf_counter() < t_end:
        for b in benches:
            b.c()
            for f in b.torch.values():
                f()


def run_grid(sizes, ns, min_time, threads, only=None) -> list[dict]:
    rows = []
    warm_up(sizes, ns)
    for (C, h, w) in sizes:
        for N in ns:
            for b in all_benches(N, C, h, w):
                if only and not any(o in b.op for o in only):
                    continue
                ok, msg = check(b)
                if not ok:
                    print(f"CHECK FAILED {b.op} {C}x{h}x{w} N={N}: {msg}", file=sys.stderr)
                fns = {"c": b.c}
                fns.update({f"torch:{k}": f for k, f in b.torch.items()})
                t = measure(fns, min_time)
                if b.reset:
                    b.reset()
                torch_times = {k[6:]: v for k, v in t.items() if k.startswith("torch:")}
                best = min(torch_times, key=torch_times.get)
                cp = copy_time(b.traffic, min_time)
                c_ms, t_ms, cp_ms = t["c"] * 1e3, torch_times[best] * 1e3, cp * 1e3
                rows.append({
                    "op": b.op, "size": f"{C}x{h}x{w}", "N": N, "c_ms": c_ms, "torch_ms": t_ms,
                    "speedup": t_ms / c_ms, "copy_ms": cp_ms, "memcpy_ratio": c_ms / cp_ms,
                    "traffic_bytes": b.traffic, "streaming": b.streaming, "torch_code": best,
                    "torch_variants_ms": {k: v * 1e3 for k, v in torch_times.items()},
                    "check": "ok" if ok else f"FAILED: {msg}", "threads": threads,
                })
                r = rows[-1]
                print(_fmt_row(r), flush=True)
    return rows


HEADER = (f"{'op':<24} {'size':>9} {'N':>3} {'c_ms':>9} {'torch_ms':>9} {'speedup':>8} "
          f"{'memcpy_ratio':>12}  {'check':<5} torch code")


def _fmt_row(r: dict) -> str:
    star = "*" if r["streaming"] else " "
    return (f"{r['op'] + star:<24} {r['size']:>9} {r['N']:>3} {r['c_ms']:>9.4f} {r['torch_ms']:>9.4f} "
            f"{r['speedup']:>7.2f}x {r['memcpy_ratio']:>12.2f}  {'ok' if r['check'] == 'ok' else 'FAIL':<5} "
            f"{r['torch_code']}")


def summarize(rows: list[dict]) -> tuple[list[str], dict]:
    lines = []
    by_op: dict[str, list[dict]] = {}
    for r in rows:
        by_op.setdefault(r["op"], []).append(r)
    n_fast = n_copy = n_stream = 0
    fails = []
    for op, rs in by_op.items():
        sp = [r["speedup"] for r in rs]
        mr = [r["memcpy_ratio"] for r in rs]
        fast = min(sp) >= 1.0
        n_fast += fast
        k_fast = sum(v >= 1.0 for v in sp)
        line = (f"{op:<24} speedup min {min(sp):5.2f}x median {statistics.median(sp):5.2f}x "
                f"max {max(sp):5.2f}x | memcpy_ratio median {statistics.median(mr):5.2f} "
                f"max {max(mr):5.2f} | faster: {'yes' if fast else 'NO '} ({k_fast}/{len(sp)})")
        if rs[0]["streaming"]:
            n_stream += 1
            within = max(mr) <= 1.5
            n_copy += within
            k_within = sum(v <= 1.5 for v in mr)
            line += f" | <=1.5x copy: {'yes' if within else 'NO '} ({k_within}/{len(mr)})"
        else:
            line += " | (not streaming)"
        if any(r["check"] != "ok" for r in rs):
            fails.append(op)
            line += " | CHECK FAILED"
        lines.append(line)
    n_rows = len(rows)
    k_rows = sum(r["speedup"] >= 1.0 for r in rows)
    st = [r for r in rows if r["streaming"]]
    k_st = sum(r["memcpy_ratio"] <= 1.5 for r in st)
    lines.append(f"targets: faster than torch on every case for {n_fast}/{len(by_op)} ops "
                 f"({k_rows}/{n_rows} cases); streaming ops within 1.5x of copy on every case: "
                 f"{n_copy}/{n_stream} ({k_st}/{len(st)} cases); "
                 f"correctness checks failed: {fails or 'none'}")
    result = {}
    for op, rs in by_op.items():
        big = max(rs, key=lambda r: (r["traffic_bytes"], r["N"]))
        result[op] = {k: big[k] for k in ("c_ms", "torch_ms", "speedup", "memcpy_ratio", "size", "N",
                                          "torch_code", "streaming")}
        result[op]["cases"] = rs
    return lines, result


# ----------------------------------------------------------------------------------------------
# --device cuda: what staging through host memory costs

def run_cuda(sizes, ns, min_time, device: str = "cuda") -> list[dict]:
    """C ops on CUDA tensors (the wrapper copies inputs to host, runs the C kernel, copies the
    output back) vs the same math in torch on the GPU, and the staging copies alone."""
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else _sync_none
    rows = []
    print(f"{'op':<16} {'size':>9} {'N':>3} {'c_staged_ms':>11} {'staging_ms':>10} {'torch_gpu_ms':>12} "
          f"{'staging share':>13}")
    for (C, h, w) in sizes:
        for N in ns:
            X = (N, C, h, w)
            x = torch.randn(X, device=dev)
            eps = torch.randn(X, device=dev)
            out = torch.empty(X, device=dev)
            at = 0.5
            sw = max(1, w // 4)
            canvas = torch.randn((C, h, w + (N - 1) * sw), device=dev)
            offs = torch.tensor([(0, i * sw) for i in range(N)], dtype=torch.int64)
            crop_out = torch.empty(X, device=dev)
            host_out = torch.empty(X)

            def stage_tweedie():  # the copies the wrapper does: 2 inputs down, 1 output down+up
                a, b = x.cpu(), eps.cpu()
                o = out.cpu()
                out.copy_(o)
                return a, b

            def stage_crop():
                a = canvas.cpu()
                o = crop_out.cpu()
                crop_out.copy_(o)
                return a

            cases = [
                ("tweedie", lambda: ops.tweedie(x, eps, at, out=out), stage_tweedie,
                 lambda: (x - math.sqrt(1 - at) * eps) / math.sqrt(at)),
                ("crop_windows", lambda: ops.crop_windows(canvas, offs, (h, w), out=crop_out),
                 stage_crop,
                 lambda: torch.stack([canvas[:, 0:h, i * sw:i * sw + w] for i in range(N)])),
                ("dihedral_hflip", lambda: ops.dihedral(x, "hflip", out=out),
                 lambda: out.copy_(host_out.copy_(x)), lambda: torch.flip(x, (-1,))),
            ]
            for name, cf, sf, tf in cases:
                t = measure({"c": cf, "stage": sf, "torch": tf}, min_time, sync=sync)
                r = {"op": name, "size": f"{C}x{h}x{w}", "N": N, "c_staged_ms": t["c"] * 1e3,
                     "staging_ms": t["stage"] * 1e3, "torch_gpu_ms": t["torch"] * 1e3,
                     "staging_share": t["stage"] / t["c"]}
                rows.append(r)
                print(f"{name:<16} {r['size']:>9} {N:>3} {r['c_staged_ms']:>11.4f} {r['staging_ms']:>10.4f} "
                      f"{r['torch_gpu_ms']:>12.4f} {r['staging_share']:>12.0%}", flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small grid, shorter timing")
    p.add_argument("--threads", type=int, default=2, help="threads for torch and the C core (2)")
    p.add_argument("--json", metavar="PATH", help="write results as JSON")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="cuda: time the host staging of CUDA tensors instead")
    p.add_argument("--min-time", type=float, default=None,
                   help="seconds of timed calls per function and case (0.15; 0.04 with --quick)")
    p.add_argument("--only", nargs="*", help="run only ops whose name contains one of these")
    a = p.parse_args(argv)

    torch.set_num_threads(a.threads)
    syncsde.set_num_threads(a.threads)
    sizes = QUICK_SIZES if a.quick else FULL_SIZES
    ns = QUICK_NS if a.quick else FULL_NS
    min_time = a.min_time if a.min_time is not None else (0.04 if a.quick else 0.15)
    print(f"# syncsde ops benchmark: torch {torch.__version__}, threads torch={torch.get_num_threads()} "
          f"C={syncsde.get_num_threads()}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, "
          f"cpu_count={os.cpu_count()}, device={a.device}")

    if a.device == "cuda":
        if not torch.cuda.is_available():
            print("no CUDA device available (torch.cuda.is_available() is False): skipping the "
                  "--device cuda measurements")
            return 0
        rows = run_cuda(sizes, ns, min_time)
        if a.json:
            Path(a.json).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(a.json, {"cuda_staging": rows}, indent=1)
        return 0

    fl = call_floor(min_time)
    print(f"# per-call floor on 1-element tensors (ms): ops.tweedie {fl['c']:.4f}, raw _C.lincomb2 "
          f"{fl['c_raw']:.4f}, torch (a - s*b)/c {fl['torch']:.4f}")
    print("# times are medians per call in ms; speedup = torch_ms / c_ms; memcpy_ratio = c_ms / "
          "copy_ms of the same traffic; * = streaming op")
    print(HEADER)
    t0 = time.perf_counter()
    rows = run_grid(sizes, ns, min_time, a.threads, a.only)
    lines, result = summarize(rows)
    print("\n# summary per op (over all sizes and N)")
    for line in lines:
        print(line)
    print(f"# total {time.perf_counter() - t0:.0f} s")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(a.json, result, indent=1)
        print(f"# wrote {a.json}")
    return 1 if any(r["check"] != "ok" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
