#!/usr/bin/env python3
"""lrlab's schedules against PyTorch's torch.optim.lr_scheduler, value by value.

For each case, `lrlab schedule SPEC --format csv` prints base*m(t) for t = 0..N-1; PyTorch's
scheduler is stepped N times on a one-parameter SGD, reading the group's lr before each step (the
rate step t trains with). The two columns are compared as |lrlab - torch| / base. lrlab's table is
float32 and printed with 9 significant digits, PyTorch's is float64, so agreement means a gap of a
few float32 roundings (a few 1e-8) at most; anything past --tol fails.

Schedules PyTorch has no class for (invtime, invsqrt, range, poly's end and cycle keys) are not
compared here; tests/test_schedule.cpp checks them against their closed forms.

Usage: compare_schedules.py --lrlab build/lrlab [--json FILE] [--tol 1e-6]
Exits 1 when a case differs by more than --tol, 2 when lrlab or torch cannot be run.
"""
import argparse
import math
import sys

from run_tool import run_tool, write_json

try:
    import torch
    from torch.optim import lr_scheduler as S
except ImportError as e:  # an optional comparison: say what is missing and stop
    sys.stderr.write(f"error: this comparison needs PyTorch ({e}); Debian has python3-torch\n")
    sys.exit(2)

BASE = 0.1


def cases():
    """(label, lrlab spec, steps per epoch, N, factory of the PyTorch scheduler given an optimizer)."""
    return [
        ("StepLR", "step(every=7,gamma=0.5)", 1, 40, lambda o: S.StepLR(o, step_size=7, gamma=0.5)),
        ("StepLR, epoch units", "step(every=2ep,gamma=0.5)", 10, 70,
         lambda o: S.StepLR(o, step_size=20, gamma=0.5)),
        ("MultiStepLR, repeated milestone", "multistep(at=10;25;25,gamma=0.3)", 1, 40,
         lambda o: S.MultiStepLR(o, milestones=[10, 25, 25], gamma=0.3)),
        ("ExponentialLR", "exp(gamma=0.97)", 1, 200, lambda o: S.ExponentialLR(o, gamma=0.97)),
        ("PolynomialLR", "poly(steps=60,power=2)", 1, 80, lambda o: S.PolynomialLR(o, total_iters=60, power=2.0)),
        # PyTorch's cosine keeps going past T_max (back up towards the base); lrlab holds at min, as
        # optax does, so the comparison stops at T_max.
        ("CosineAnnealingLR", "cosine(steps=50,min=0.1)", 1, 51,
         lambda o: S.CosineAnnealingLR(o, T_max=50, eta_min=0.1 * BASE)),
        ("CosineAnnealingWarmRestarts", "restarts(period=10,min=0.05)", 1, 55,
         lambda o: S.CosineAnnealingWarmRestarts(o, T_0=10, eta_min=0.05 * BASE)),
        ("CosineAnnealingWarmRestarts, T_mult=2", "restarts(period=10,mult=2,min=0.05)", 1, 150,
         lambda o: S.CosineAnnealingWarmRestarts(o, T_0=10, T_mult=2, eta_min=0.05 * BASE)),
        ("LinearLR", "linear(from=0.25,to=1,steps=4)", 1, 12,
         lambda o: S.LinearLR(o, start_factor=0.25, end_factor=1.0, total_iters=4)),
        ("LinearLR, decay", "linear(from=1,to=0.1,steps=30)", 1, 40,
         lambda o: S.LinearLR(o, start_factor=1.0, end_factor=0.1, total_iters=30)),
        ("ConstantLR, as a composition", "constant(value=0.5,steps=5) + constant", 1, 12,
         lambda o: S.ConstantLR(o, factor=0.5, total_iters=5)),
        ("OneCycleLR", "onecycle(steps=100)", 1, 100, lambda o: S.OneCycleLR(o, max_lr=BASE, total_steps=100)),
        ("OneCycleLR, linear anneal", "onecycle(steps=100,pct=0.25,anneal=linear)", 1, 100,
         lambda o: S.OneCycleLR(o, max_lr=BASE, total_steps=100, pct_start=0.25, anneal_strategy="linear")),
        ("OneCycleLR, warm-up shorter than a step", "onecycle(steps=3)", 1, 3,
         lambda o: S.OneCycleLR(o, max_lr=BASE, total_steps=3)),
        ("OneCycleLR, no warm-up", "onecycle(steps=50,pct=0,anneal=linear)", 1, 50,
         lambda o: S.OneCycleLR(o, max_lr=BASE, total_steps=50, pct_start=0.0, anneal_strategy="linear")),
        ("OneCycleLR, three phases, third never reached", "onecycle(steps=100,pct=0.6,three_phase=true)", 1, 100,
         lambda o: S.OneCycleLR(o, max_lr=BASE, total_steps=100, pct_start=0.6, three_phase=True)),
        ("OneCycleLR, three phases", "onecycle(steps=120,three_phase=true,div=10,final_div=100)", 1, 120,
         lambda o: S.OneCycleLR(o, max_lr=BASE, total_steps=120, three_phase=True, div_factor=10,
                                final_div_factor=100)),
        ("SequentialLR: LinearLR warm-up, then CosineAnnealingLR", "warmup(steps=10,from=0.1) + cosine(steps=40)",
         1, 51, lambda o: S.SequentialLR(o, [S.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=10),
                                              S.CosineAnnealingLR(o, T_max=40)], milestones=[10])),
    ]


def lrlab_values(binary, spec, spe, n):
    cmd = [binary, "schedule", spec, "--lr", repr(BASE), "--steps", str(n), "--steps-per-epoch", str(spe),
           "--format", "csv"]
    lines = run_tool(cmd, timeout=60).strip().splitlines()
    if not lines or lines[0] != "step,lr":
        sys.stderr.write(f"error: {' '.join(cmd)} printed no step,lr header\n")
        sys.exit(2)
    values = [float(line.split(",")[1]) for line in lines[1:]]
    if len(values) != n:
        sys.stderr.write(f"error: {' '.join(cmd)} printed {len(values)} rows, not {n}\n")
        sys.exit(2)
    return values


def torch_values(factory, n):
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=BASE)
    # OneCycleLR and LinearLR's warm-up overwrite the group's lr in their constructor.
    sched = factory(opt)
    values = []
    for _ in range(n):
        values.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return values


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lrlab", required=True, help="the lrlab binary (build/lrlab)")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--tol", type=float, default=1e-6, help="largest |lrlab - torch| / base accepted")
    args = ap.parse_args()

    rows, worst = [], 0.0
    for label, spec, spe, n, factory in cases():
        ours = lrlab_values(args.lrlab, spec, spe, n)
        theirs = torch_values(factory, n)
        errs = [abs(a - b) / BASE for a, b in zip(ours, theirs)]
        at = max(range(n), key=lambda t: errs[t])
        err = errs[at] if all(math.isfinite(a) for a in ours) else math.inf
        worst = max(worst, err)
        rows.append({"torch": label, "spec": spec, "steps_per_epoch": spe, "steps": n, "max_error": err,
                     "at_step": at, "lrlab": ours[at], "torch_lr": theirs[at], "ok": err <= args.tol})

    head = ["PyTorch scheduler", "lrlab spec", "steps", "max |diff|/base", "at step"]
    table = [[r["torch"], r["spec"] + (f" (--steps-per-epoch {r['steps_per_epoch']})" if r["steps_per_epoch"] > 1
                                       else ""), str(r["steps"]), f"{r['max_error']:.1e}"
              + ("" if r["ok"] else "  FAIL"), str(r["at_step"])] for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(head)]
    for row in [head] + table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    bad = [r for r in rows if not r["ok"]]
    print(f"torch {torch.__version__}, base lr {BASE}: {len(rows) - len(bad)} of {len(rows)} cases within "
          f"{args.tol:g}; largest difference {worst:.1e} of the base rate")
    if args.json:
        write_json(args.json, {"torch": torch.__version__, "base_lr": BASE, "tol": args.tol, "results": rows})
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
