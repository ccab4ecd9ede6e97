#!/usr/bin/env python3
"""lrlab's reduce-on-plateau rule against torch.optim.lr_scheduler.ReduceLROnPlateau.

For each case, one sequence of validation metrics goes through
  - ReduceLROnPlateau on a one-parameter SGD at the base rate (the group's lr read after each
    scheduler.step(metric)),
  - lrlab's rule (benchmarks/plateau_replay: the rate base * scale after each evaluation).
The sequences are a noisy loss curve that flattens (cuts come from patience, cooldown, thresholds),
an accuracy curve for mode=max, a curve of negative metrics (PyTorch's relative threshold with a
negative best), and one with NaN and infinite losses among the values. Both sides are float64, so
equal rules give the same rates up to the rounding of the products (about 1e-16); a rule that cuts
one evaluation early or late, or skips a cut the other makes, differs by the factor itself.
min_lr is given to PyTorch as base * min_scale, lrlab's floor being relative to the rate.

Usage: compare_plateau.py --replay build/benchmarks/plateau_replay [--json FILE] [--tol 1e-12]
Exits 1 when a case differs by more than --tol, 2 when the tools cannot be run.
"""
import argparse
import math
import sys

from run_tool import run_tool, write_json

try:
    import torch
    from torch.optim.lr_scheduler import ReduceLROnPlateau
except ImportError as e:
    sys.stderr.write(f"error: this comparison needs PyTorch ({e}); Debian has python3-torch\n")
    sys.exit(2)


def sequences(n, seed):
    """Metric sequences of n evaluations each, from one seeded generator."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n, dtype=torch.float64)
    noise = torch.randn(n, generator=g, dtype=torch.float64)
    loss = 0.25 + 2.0 * torch.exp(-t / 25) + 0.004 * noise  # fast progress, then a noisy floor
    accuracy = 0.9 - 0.6 * torch.exp(-t / 30) + 0.003 * torch.randn(n, generator=g, dtype=torch.float64)
    negative = -3.0 + 2.0 * torch.exp(-t / 20) + 0.01 * noise  # a log-likelihood going down past 0
    diverging = loss.clone()
    diverging[n // 5::17] = math.nan
    diverging[n // 3::29] = math.inf
    return {"loss": loss.tolist(), "accuracy": accuracy.tolist(), "negative": negative.tolist(),
            "nan-inf": diverging.tolist()}


# (lrlab spec, base rate, sequence, ReduceLROnPlateau keyword arguments; min_lr as a multiple of base)
CASES = [
    ("plateau()", 0.1, "loss", dict()),
    ("plateau(factor=0.5,patience=2)", 1e-3, "loss", dict(factor=0.5, patience=2)),
    ("plateau(factor=0.5,patience=2,cooldown=3)", 1e-3, "loss", dict(factor=0.5, patience=2, cooldown=3)),
    ("plateau(factor=0.3,patience=1,min_scale=0.01)", 0.1, "loss", dict(factor=0.3, patience=1, min_scale=0.01)),
    ("plateau(factor=0.5,patience=3,threshold=0.01)", 0.1, "loss", dict(factor=0.5, patience=3, threshold=0.01)),
    ("plateau(factor=0.5,patience=3,threshold=0.002,threshold_mode=abs)", 0.1, "loss",
     dict(factor=0.5, patience=3, threshold=0.002, threshold_mode="abs")),
    ("plateau(factor=0.5,patience=0,eps=1e-8)", 1e-6, "loss", dict(factor=0.5, patience=0, eps=1e-8)),
    ("plateau(mode=max,factor=0.5,patience=2)", 0.01, "accuracy", dict(mode="max", factor=0.5, patience=2)),
    ("plateau(mode=max,factor=0.5,patience=1,threshold=0.001,threshold_mode=abs,cooldown=2)", 0.01, "accuracy",
     dict(mode="max", factor=0.5, patience=1, threshold=0.001, threshold_mode="abs", cooldown=2)),
    ("plateau(factor=0.5,patience=2,threshold=0.01)", 0.1, "negative", dict(factor=0.5, patience=2, threshold=0.01)),
    ("plateau(mode=max,factor=0.5,patience=2,threshold=0.01)", 0.1, "negative",
     dict(mode="max", factor=0.5, patience=2, threshold=0.01)),
    ("plateau(factor=0.5,patience=1)", 0.1, "nan-inf", dict(factor=0.5, patience=1)),
]


def torch_rates(lr, kw, metrics):
    kw = dict(kw)
    kw["min_lr"] = lr * kw.pop("min_scale", 0.0)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = ReduceLROnPlateau(opt, **kw)
    out = []
    for m in metrics:
        sched.step(m)
        out.append(opt.param_groups[0]["lr"])
    return out


def lrlab_rates(replay, spec, lr, metrics):
    cmd = [replay, "--plateau", spec, "--lr", repr(lr)]
    out = run_tool(cmd, stdin_text="\n".join(repr(m) for m in metrics) + "\n")
    rates = [float(v) for v in out.split()]
    if len(rates) != len(metrics):
        sys.stderr.write(f"error: {' '.join(cmd)} printed {len(rates)} rates, not {len(metrics)}\n")
        sys.exit(2)
    return rates


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replay", required=True, help="the plateau_replay binary (build/benchmarks/plateau_replay)")
    ap.add_argument("--evaluations", type=int, default=400)
    ap.add_argument("--tol", type=float, default=1e-12, help="largest relative difference accepted")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    seqs = sequences(args.evaluations, seed=3)
    rows = []
    print(f"{'lrlab spec':84} {'seq':8} {'cuts':>4} {'rel. diff':>9}  {'first differing evaluation'}")
    for spec, lr, seq, kw in CASES:
        ref = torch_rates(lr, kw, seqs[seq])
        ours = lrlab_rates(args.replay, spec, lr, seqs[seq])
        diffs = [abs(a - b) / b for a, b in zip(ours, ref)]
        worst = max(diffs)
        first = next((i for i, d in enumerate(diffs) if d > args.tol), None)
        cuts = sum(1 for a, b in zip(ref, ref[1:]) if b < a)
        ok = first is None
        rows.append({"spec": spec, "lr": lr, "sequence": seq, "torch": kw, "torch_cuts": cuts, "max_rel_diff": worst,
                     "first_differing_evaluation": first, "ok": ok})
        where = "" if ok else f"{first}: lrlab {ours[first]:.6g}, torch {ref[first]:.6g}  FAIL"
        print(f"{spec:84} {seq:8} {cuts:4d} {worst:9.1e}  {where}")
    bad = [r for r in rows if not r["ok"]]
    print(f"torch {torch.__version__}: {len(rows) - len(bad)} of {len(rows)} plateau cases within {args.tol:g} "
          f"over {args.evaluations} evaluations")
    if args.json:
        write_json(args.json, {"torch": torch.__version__, "evaluations": args.evaluations, "tol": args.tol,
                               "results": rows})
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
