#!/usr/bin/env python3
"""PyTorch's optimizers on bench_optim's cases, timed the way bench_optim times lrlab's, so that
benchmarks/compare_optim.py can put the two side by side.

Cases (same --sizes syntax and labels as bench_optim): N, NK, NM parameters as one tensor, and
"mixed": 1000 tensors whose sizes are drawn exactly as bench_optim draws them (lrlab::Rng seed 1,
log-uniform between 1K and 64K floats), each its own torch tensor, unpadded (bench_optim pads each to a
multiple of 4 floats in its flat buffer; GB/s counts each run's own parameters).

Implementations: on CUDA `fused=True` where the optimizer has it (else foreach), on the CPU foreach
and single-tensor (foreach=False); --impls chooses others. On CUDA: CUDA events around each step, the
L2 cache flushed before each (as bench_optim), so the figures include torch's host-side work whenever
the GPU waits for it. On the CPU: the median wall time. Next to each, a copy of bytes/2 (it reads and
writes the same total) measured in the same run. Bytes per parameter follow docs/OPTIMIZERS.md.
"""
import argparse
import datetime
import json
import math
import os
import re
import statistics
import sys
import time

import torch

ALL_SPECS = ["sgd()", "sgd(momentum=0.9)", "adam()", "adamw()", "adam(amsgrad=true)", "rmsprop()",
             "rmsprop(momentum=0.9,centered=true)", "adagrad()"]
CLASSES = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
           "rmsprop": torch.optim.RMSprop, "adagrad": torch.optim.Adagrad}
MASK = (1 << 64) - 1


def parse_spec(spec):
    """'rmsprop(momentum=0.9,centered=true)' -> ('rmsprop', {'momentum': 0.9, 'centered': True})."""
    m = re.fullmatch(r"\s*(\w+)\s*\((.*)\)\s*", spec)
    if not m or m.group(1) not in CLASSES:
        sys.exit(f"error: bad optimizer spec '{spec}' (expected one of {', '.join(CLASSES)} with (key=value,...))")
    kw = {}
    for item in filter(None, (s.strip() for s in m.group(2).split(","))):
        key, _, value = item.partition("=")
        value = value.strip().lower()
        kw[key.strip()] = value == "true" if value in ("true", "false") else float(value)
    if "beta1" in kw or "beta2" in kw:
        kw["betas"] = (kw.pop("beta1", 0.9), kw.pop("beta2", 0.999))
    return m.group(1), kw


def bytes_per_param(name, kw):
    """docs/OPTIMIZERS.md's table: fp32 bytes each step must read and write per parameter."""
    if name == "sgd":
        return 20 if kw.get("momentum", 0) else 12
    if name in ("adam", "adamw"):
        return 36 if kw.get("amsgrad") else 28
    if name == "rmsprop":
        return 20 + 8 * bool(kw.get("momentum", 0)) + 8 * bool(kw.get("centered"))
    return 20  # adagrad


def mix64(z):
    z = (z + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


class Rng:
    """lrlab::Rng (include/lrlab/rng.hpp), for bench_optim's mixed tensor sizes."""

    def __init__(self, seed, stream=0):
        self.s = mix64(seed ^ mix64(stream + 0x1234567))

    def uniform(self, lo, hi):
        z = mix64(self.s)
        self.s = (self.s + 0x9E3779B97F4A7C15) & MASK
        return lo + (hi - lo) * ((z >> 11) * (1.0 / 9007199254740992.0))


def mixed_sizes():
    rng = Rng(1)
    return [int(math.exp(rng.uniform(math.log(1024.0), math.log(65536.0)))) for _ in range(1000)]


def cases_from(sizes):
    out = []
    for tok in filter(None, sizes.split(",")):
        if tok == "mixed":
            out.append(("1000 tensors", mixed_sizes()))
            continue
        mult = {"M": 1 << 20, "K": 1 << 10}.get(tok[-1], 1)
        number = tok[:-1] if mult > 1 else tok
        out.append((tok, [int(float(number) * mult)]))
    return out


def cpu_median_s(fn, warmup, reps, budget_s=5.0):
    for _ in range(warmup):
        fn()
    t = []
    start = time.perf_counter()
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
        if len(t) >= 3 and time.perf_counter() - start > budget_s:
            break
    return statistics.median(t)


def gpu_median_s(fn, flush, reps):
    for _ in range(3):
        fn()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    t = []
    for _ in range(reps):
        flush.zero_()
        a.record()
        fn()
        b.record()
        b.synchronize()
        t.append(a.elapsed_time(b) / 1e3)
    return statistics.median(t)


def make_optimizer(name, kw, params, impl):
    cls = CLASSES[name]
    kw = dict(kw, lr=kw.get("lr", 1e-3))
    if impl == "fused":
        opt = cls(params, fused=True, **kw)
        opt.step()  # some versions accept fused=True and refuse it only at the first step
        return opt
    return cls(params, foreach=(impl == "foreach"), **kw)


def run_case(device, spec, impl, label, sizes, reps, flush):
    name, kw = parse_spec(spec)
    gen = torch.Generator(device=device).manual_seed(0)
    params = []
    for n in sizes:
        p = torch.rand(n, device=device, generator=gen).mul_(0.01).requires_grad_()
        p.grad = torch.rand(n, device=device, generator=gen).sub_(0.5).mul_(1e-3)
        params.append(p)
    used = impl
    try:
        opt = make_optimizer(name, kw, params, impl)
    except (TypeError, RuntimeError, ValueError) as e:
        if impl != "fused":
            raise
        used = "foreach"  # this optimizer (or torch version, or device) has no fused kernel
        print(f"  {spec}: no fused implementation ({str(e).splitlines()[0][:80]}); using foreach", file=sys.stderr)
        opt = make_optimizer(name, kw, params, "foreach")
    n = sum(sizes)
    bpp = bytes_per_param(name, kw)
    nbytes = bpp * n
    copy_n = nbytes // 2 // 4
    src, dst = torch.ones(copy_n, device=device), torch.empty(copy_n, device=device)
    with torch.no_grad():
        if device == "cuda":
            t = gpu_median_s(opt.step, flush, reps)
            tc = gpu_median_s(lambda: dst.copy_(src), flush, reps)
        else:
            t = cpu_median_s(opt.step, 2, reps)
            tc = cpu_median_s(lambda: dst.copy_(src), 2, reps)
    row = {"device": device, "optimizer": spec, "impl": used, "case": label, "params": n,
           "tensors": len(sizes), "bytes_per_param": bpp, "step_ms": t * 1e3, "gbps": nbytes / t / 1e9,
           "copy_gbps": nbytes / tc / 1e9, "fraction_of_copy": tc / t}
    if device == "cuda":
        row["gpu"] = torch.cuda.get_device_name()
    print(f"torch {device:4} {spec:36} {used:8} {label:13} {t * 1e3:8.3f} ms  {row['gbps']:7.1f} GB/s  "
          f"copy {row['copy_gbps']:7.1f} GB/s  {row['fraction_of_copy']:.2f} of copy", file=sys.stderr)
    return row


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--sizes", default="1M,16M,256M,mixed", help="comma-separated counts (K, M suffixes) and 'mixed'")
    ap.add_argument("--optimizers", default="adam()", help="';'-separated specs as bench_optim's, or 'all'")
    ap.add_argument("--impls", help="comma-separated: fused, foreach, single (default: fused on cuda, "
                                    "foreach,single on cpu)")
    ap.add_argument("--reps", type=int, default=20, help="timed repetitions (at least 3)")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                    help="CPU threads for torch (default: the cores this process may use, as OpenMP)")
    ap.add_argument("--json", help="write results here (default: stdout)")
    args = ap.parse_args()
    if args.reps < 3:
        ap.error("--reps must be at least 3")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: torch has no CUDA device here")
    specs = ALL_SPECS if args.optimizers == "all" else [s for s in args.optimizers.split(";") if s.strip()]
    impls = (args.impls or ("fused" if args.device == "cuda" else "foreach,single")).split(",")
    for impl in impls:
        if impl not in ("fused", "foreach", "single"):
            ap.error(f"unknown implementation '{impl}'")
    torch.set_num_threads(args.threads)

    flush = None
    if args.device == "cuda":
        l2 = getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 0) or 64 << 20
        flush = torch.empty(2 * max(l2, 1 << 20) // 4, device="cuda")
    rows = []
    for label, sizes in cases_from(args.sizes):
        for spec in specs:
            for impl in impls:
                rows.append(run_case(args.device, spec, impl, label, sizes, args.reps, flush))
                if args.device == "cuda":
                    torch.cuda.empty_cache()
    doc = {"benchmark": "torch_optim_bench", "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
           "cpu": cpu_model(), "threads": torch.get_num_threads(), "torch": torch.__version__, "results": rows}
    text = json.dumps(doc, indent=2) + "\n"
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, args.json)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
