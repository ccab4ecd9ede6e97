#!/usr/bin/env python3
"""lrlab's update rules against torch.optim's, fed the same gradients.

For each optimizer variant, one gradient sequence (n parameters, `--steps` steps; mixed signs and
magnitudes from 1e-3 to 10, a 100-fold drop halfway, some exact zeros) goes through
  - torch.optim in float64 (the reference),
  - torch.optim in float32 (PyTorch's own rounding: the yardstick),
  - lrlab's CPU path in float32 (benchmarks/optim_replay),
with the rate decaying as 0.999^t (LambdaLR in torch, `exp(gamma=0.999)` in lrlab), and two variants
with global-norm clipping (torch.nn.utils.clip_grad_norm_ before each step). Printed per
variant: the largest max-norm relative error over all steps of each float32 run against the
float64 one. Same rules give errors of the same size (float32 rounding, about 1e-7 to 1e-5); a rule
written differently (eps inside the root, a missing bias correction, the first momentum step)
gives 1e-3 or more. Fails when lrlab's error passes --tol.

Usage: compare_updates.py --replay build/benchmarks/optim_replay [--steps 300] [--json FILE]
Exits 1 when a variant is past --tol, 2 when the tools cannot be run.
"""
import argparse
import sys

from run_tool import run_tool, write_json

try:
    import torch
except ImportError as e:
    sys.stderr.write(f"error: this comparison needs PyTorch ({e}); Debian has python3-torch\n")
    sys.exit(2)

O = torch.optim
# (lrlab spec, lrlab base rate, torch class, torch keyword arguments)
VARIANTS = [
    ("sgd()", 0.05, O.SGD, dict()),
    ("sgd(wd=0.01,maximize=true)", 0.05, O.SGD, dict(weight_decay=0.01, maximize=True)),
    ("sgd(momentum=0.9)", 0.01, O.SGD, dict(momentum=0.9)),
    ("sgd(momentum=0.9,dampening=0.3)", 0.01, O.SGD, dict(momentum=0.9, dampening=0.3)),
    ("sgd(momentum=0.9,nesterov=true,wd=0.01)", 0.01, O.SGD, dict(momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("adam()", 1e-2, O.Adam, dict()),
    ("adam(beta1=0.8,beta2=0.99,eps=1e-6,wd=0.01)", 1e-2, O.Adam,
     dict(betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01)),
    ("adam(amsgrad=true)", 1e-2, O.Adam, dict(amsgrad=True)),
    ("adam(maximize=true)", 1e-2, O.Adam, dict(maximize=True)),
    ("adamw()", 1e-2, O.AdamW, dict()),
    ("adamw(wd=0.1,amsgrad=true)", 1e-2, O.AdamW, dict(weight_decay=0.1, amsgrad=True)),
    ("rmsprop()", 1e-3, O.RMSprop, dict()),
    ("rmsprop(alpha=0.9,eps=1e-6,wd=0.01)", 1e-3, O.RMSprop, dict(alpha=0.9, eps=1e-6, weight_decay=0.01)),
    ("rmsprop(momentum=0.9)", 1e-3, O.RMSprop, dict(momentum=0.9)),
    ("rmsprop(centered=true)", 1e-3, O.RMSprop, dict(centered=True)),
    ("rmsprop(momentum=0.9,centered=true)", 1e-3, O.RMSprop, dict(momentum=0.9, centered=True)),
    ("adagrad()", 0.1, O.Adagrad, dict()),
    ("adagrad(lr_decay=0.01,initial_accumulator=0.1,wd=0.01)", 0.1, O.Adagrad,
     dict(lr_decay=0.01, initial_accumulator_value=0.1, weight_decay=0.01)),
]
# Global-norm clipping: lrlab's `clip` key against torch.nn.utils.clip_grad_norm_ before each step.
# The gradients' norm is tens in the first half and below 1 after the drop, so both branches run.
CLIPPED = [
    ("adam(clip=1)", 1e-2, O.Adam, dict(), 1.0),
    ("sgd(momentum=0.9,clip=0.5)", 0.01, O.SGD, dict(momentum=0.9), 0.5),
]
GAMMA = 0.999


def gradients(n, steps, seed):
    """Mixed signs and magnitudes: each parameter has its own scale, 1e-3 to 10; every 7th step of
    every 5th parameter is exactly zero (a frozen unit's gradient). Halfway the gradients shrink
    100-fold, so running squares fall: without that, amsgrad's maximum would equal the running
    square at every step, and a rule that ignored it would pass."""
    g = torch.Generator().manual_seed(seed)
    scale = 10.0 ** (torch.rand(n, generator=g, dtype=torch.float64) * 4 - 3)
    drift = torch.randn(n, generator=g, dtype=torch.float64) * 0.3
    grads = (torch.randn(steps, n, generator=g, dtype=torch.float64) + drift) * scale
    grads[steps // 2:] *= 0.01
    grads[::7, ::5] = 0
    return grads.float()  # what both sides are given: float32 values


def torch_run(cls, kw, lr, p0, grads, dtype, clip=None):
    p = p0.clone().to(dtype).requires_grad_(True)
    opt = cls([p], lr=lr, **kw)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: GAMMA ** t)
    out = []
    for gt in grads:
        p.grad = gt.to(dtype).clone()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_([p], clip)
        opt.step()
        sched.step()
        out.append(p.detach().double().clone())
    return torch.stack(out)


def lrlab_run(replay, spec, lr, p0, grads):
    n, steps = p0.numel(), grads.shape[0]
    lines = [f"{n} {steps}", " ".join(repr(float(x)) for x in p0)]
    lines += [" ".join(repr(float(x)) for x in row) for row in grads]
    cmd = [replay, "--optimizer", spec, "--lr", repr(lr), "--schedule", f"exp(gamma={GAMMA})"]
    out = run_tool(cmd, stdin_text="\n".join(lines) + "\n")
    rows = [[float(v) for v in line.split()] for line in out.splitlines()]
    if len(rows) != steps or any(len(row) != n for row in rows):
        sys.stderr.write(f"error: {' '.join(cmd)} printed {len(rows)} rows, not {steps} of {n}\n")
        sys.exit(2)
    return torch.tensor(rows, dtype=torch.float64)


def max_rel_error(run, ref):
    """Largest over steps of max |run - ref| / max |ref| (a step at a time)."""
    return ((run - ref).abs().amax(dim=1) / ref.abs().amax(dim=1)).max().item()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replay", required=True, help="the optim_replay binary (build/benchmarks/optim_replay)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--params", type=int, default=257)
    ap.add_argument("--tol", type=float, default=2e-5, help="largest lrlab error accepted")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    p0 = torch.randn(args.params, generator=torch.Generator().manual_seed(7), dtype=torch.float64).float()
    grads = gradients(args.params, args.steps, seed=11)
    rows = []
    print(f"{'lrlab spec':58} {'torch fp32':>10} {'lrlab fp32':>10}   max-norm relative error against "
          f"torch.optim in float64, worst of {args.steps} steps")
    for spec, lr, cls, kw, clip in [v + (None,) for v in VARIANTS] + CLIPPED:
        try:
            ref = torch_run(cls, kw, lr, p0, grads, torch.float64, clip)
        except TypeError as e:  # a keyword this PyTorch lacks
            print(f"{spec:58} skipped: torch {torch.__version__}: {e}")
            continue
        t32 = max_rel_error(torch_run(cls, kw, lr, p0, grads, torch.float32, clip), ref)
        ours = max_rel_error(lrlab_run(args.replay, spec, lr, p0, grads), ref)
        ok = ours <= args.tol
        torch_call = f"{cls.__name__}({', '.join(f'{k}={v}' for k, v in kw.items())})"
        if clip is not None:
            torch_call = f"clip_grad_norm_(max_norm={clip}) + {torch_call}"
        rows.append({"spec": spec, "torch": torch_call, "lr": lr, "torch_fp32_error": t32, "lrlab_fp32_error": ours,
                     "ok": ok})
        print(f"{spec:58} {t32:10.2e} {ours:10.2e}" + ("" if ok else "  FAIL"))
    bad = [r for r in rows if not r["ok"]]
    print(f"torch {torch.__version__}: {len(rows) - len(bad)} of {len(rows)} variants within {args.tol:g}")
    if args.json:
        write_json(args.json, {"torch": torch.__version__, "steps": args.steps, "params": args.params,
                               "tol": args.tol, "results": rows})
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
