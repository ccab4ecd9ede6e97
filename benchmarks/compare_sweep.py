#!/usr/bin/env python3
"""A learning-rate sweep, side by side: `lrlab sweep` against the same grid trained in PyTorch.

The grid is the demo's by default: Adam, RMSprop and Adagrad, each under a constant rate, a step
schedule (halved every epoch), exponential decay (x0.7 per epoch, smooth) and linear decay to 0,
at 4 rates from 3e-4 to 0.3, 3 epochs of Fashion-MNIST (784-256-128-10 relu, batch 128, 10% of the
training set held out). PyTorch trains each configuration with torch.optim and its lr_scheduler
equivalents (StepLR, ExponentialLR, PolynomialLR, stepped per minibatch), judged as lrlab judges a
run: best validation loss over the epochs, diverged when a loss is not finite or grows 4x.

Two figures:
- speed: lrlab's wall time for the whole sweep (its own process, data loading included) against
  PyTorch's, both one configuration after another (1 thread, PyTorch's fastest on a small machine)
  and with a pool of worker processes, one thread each (the best a PyTorch user can do on N cores);
  with --device cuda, lrlab's sweep on the GPU (packed) against PyTorch's eager training of one
  configuration after another on it, the data set on the GPU for both;
- the answer: each optimizer's best schedule and rate, and each schedule's best rate, from both;
  and the rank correlation of the configurations' best validation losses. The initial weights and
  data orders differ between the two, so losses agree only to within seed noise.

Prints a table and writes JSON. Needs torch and numpy (Debian: /usr/bin/python3); not a test.

usage: compare_sweep.py --lrlab build/lrlab [--epochs 3] [--lrs 3e-4,3e-3,3e-2,0.3]
                        [--optimizers adam,rmsprop,adagrad] [--schedules constant,step,exp,poly]
                        [--device cpu|cuda] [--workers N] [--torch-modes sequential,pool] [--json out.json]
"""
import argparse
import json
import math
import multiprocessing
import os
import platform
import tempfile
import time

import numpy as np

import fashion_mnist
from run_tool import run_tool, write_json

# The lrlab spec of each schedule name; {E} is the number of epochs.
SCHEDULES = {
    "constant": "constant",
    "step": "step(every=1ep,gamma=0.5)",
    "exp": "exp(gamma=0.7,every=1ep)",
    "poly": "poly(steps={E}ep)",
}
DIVERGE_FACTOR = 4.0  # lrlab sweep's default


def diverged(train_loss, initial_val, val):
    """lrlab's rule (sweep_diverged in src/sweep.cpp)."""
    last = train_loss[-1]
    if not math.isfinite(last) or not math.isfinite(val):
        return True
    if math.isfinite(initial_val) and val > DIVERGE_FACTOR * initial_val:
        return True
    if len(train_loss) == 1:
        return False
    return last > DIVERGE_FACTOR * min(train_loss[:-1]) and last > train_loss[0]


DATA = None  # (x_train, y_train, x_val, y_val) on DEVICE, set before the pool forks
DEVICE = "cpu"
OPTIMIZERS = {"adam": "Adam", "rmsprop": "RMSprop", "adagrad": "Adagrad"}  # torch.optim classes, resolved in main


def torch_run(cfg):
    import torch
    torch.set_num_threads(1)
    optimizer, schedule, lr, epochs, seed = cfg
    xtr, ytr, xva, yva = DATA
    torch.manual_seed(seed)
    net = fashion_mnist.lrlab_mlp().to(DEVICE)
    # On the GPU, PyTorch's multi-tensor (foreach) updates: its fastest for these three in 1.13.
    opt = OPTIMIZERS[optimizer](net.parameters(), lr=lr, **({"foreach": True} if DEVICE == "cuda" else {}))
    per_epoch = -(-len(xtr) // 128)
    sched = {
        "constant": lambda: None,
        "step": lambda: torch.optim.lr_scheduler.StepLR(opt, step_size=per_epoch, gamma=0.5),
        "exp": lambda: torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.7 ** (1.0 / per_epoch)),
        "poly": lambda: torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=epochs * per_epoch, power=1.0),
    }[schedule]()
    loss_fn = torch.nn.functional.cross_entropy

    def validate():
        with torch.no_grad():
            return loss_fn(net(xva), yva).item()

    initial = validate()
    train_loss, val_loss = [], []
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(xtr), generator=gen).to(DEVICE)
        total, batches = torch.zeros((), device=DEVICE), 0  # summed where it is: no sync per step
        for i in range(0, len(xtr), 128):
            b = order[i:i + 128]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(xtr[b]), ytr[b])
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            total += loss.detach()
            batches += 1
        train_loss.append(total.item() / batches)
        val_loss.append(validate())
        if diverged(train_loss, initial, val_loss[-1]):
            return {"diverged": True, "best_val_loss": math.inf}
    return {"diverged": False, "best_val_loss": min(val_loss)}


def best_answers(rows, key):
    """Each optimizer's best (schedule, lr) and each (optimizer, schedule)'s best lr, as lrlab picks them."""
    finished = [r for r in rows if math.isfinite(r[key])]
    per_opt, per_sched = {}, {}
    for r in finished:
        if r["optimizer"] not in per_opt or r[key] < per_opt[r["optimizer"]][key]:
            per_opt[r["optimizer"]] = r
        k = (r["optimizer"], r["schedule"])
        if k not in per_sched or r[key] < per_sched[k][key]:
            per_sched[k] = r
    return per_opt, per_sched


def ranks(values):
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    for rank, i in enumerate(order):
        out[i] = float(rank)
    return out


def spearman(a, b):
    if len(a) < 3:
        return float("nan")
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def main():
    global DATA, DEVICE, OPTIMIZERS
    ap = argparse.ArgumentParser()
    ap.add_argument("--lrlab", default="build/lrlab")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lrs", default="3e-4,3e-3,3e-2,0.3")
    ap.add_argument("--optimizers", default="adam,rmsprop,adagrad")
    ap.add_argument("--schedules", default="constant,step,exp,poly")
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--torch-modes", help="sequential and/or pool (CPU only); default: both on the CPU, sequential on the GPU")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json")
    ap.add_argument("--data-dir", default=fashion_mnist.DEFAULT_DIR)
    a = ap.parse_args()
    lrs = [float(v) for v in a.lrs.split(",")]
    optimizers = a.optimizers.split(",")
    schedules = a.schedules.split(",")
    for s in schedules:
        if s not in SCHEDULES:
            ap.error(f"unknown schedule {s}; one of {', '.join(SCHEDULES)}")
    for o in optimizers:
        if o not in OPTIMIZERS:
            ap.error(f"unknown optimizer {o}; one of {', '.join(OPTIMIZERS)}")
    modes = (a.torch_modes or ("sequential,pool" if a.device == "cpu" else "sequential")).split(",")
    for m in modes:
        if m not in ("sequential", "pool"):
            ap.error(f"unknown --torch-modes entry {m}; sequential or pool")
    if a.device == "cuda" and "pool" in modes:
        ap.error("--torch-modes pool is for the CPU: on one GPU PyTorch runs the configurations one after another")
    DEVICE = a.device

    # lrlab first: its own process, from loading the data to writing results.json.
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [a.lrlab, "sweep", "--data", "fashion-mnist", "--hidden", "256,128", "--device", a.device,
               "--lr", ",".join(str(v) for v in lrs), "--epochs", str(a.epochs), "--batch", "128",
               "--seed", str(a.seed), "--out", tmp, "--schedule"] + \
              [SCHEDULES[s].format(E=a.epochs) for s in schedules] + \
              ["--optimizer"] + [o + "()" for o in optimizers]
        if a.device == "cpu":  # as many threads as PyTorch's pool has processes
            cmd += ["--workers", str(a.workers)]
        t0 = time.perf_counter()
        run_tool(cmd, timeout=None)
        lrlab_s = time.perf_counter() - t0
        res = json.load(open(os.path.join(tmp, "results.json")))
    spec_name = {SCHEDULES[s].format(E=a.epochs): s for s in schedules}
    lrlab_rows = {}
    for r in res["runs"]:
        k = (r["optimizer"].rstrip("()"), spec_name[r["schedule"]], r["lr"])
        best = r["best_val_loss"]
        lrlab_rows[k] = math.inf if r["diverged"] or best is None else float(best)

    # The same split as lrlab's shape (10% held out), standardised with the training part's statistics.
    import torch
    OPTIMIZERS = {k: getattr(torch.optim, v) for k, v in OPTIMIZERS.items()}
    x, y = fashion_mnist.load(a.data_dir)
    perm = np.random.default_rng(a.seed).permutation(len(x))
    val, tr = perm[:len(x) // 10], perm[len(x) // 10:]
    mean, std = x[tr].mean(), x[tr].std()
    x = (x - mean) / std
    DATA = tuple(torch.from_numpy(v.copy()).to(DEVICE) for v in (x[tr], y[tr], x[val], y[val]))

    configs = [(o, s, lr, a.epochs, a.seed) for o in optimizers for s in schedules for lr in lrs]
    torch_times, torch_results = {}, None
    for mode in modes:
        t0 = time.perf_counter()
        if mode == "sequential":
            out = [torch_run(c) for c in configs]
        else:
            with multiprocessing.get_context("fork").Pool(a.workers) as pool:
                out = pool.map(torch_run, configs, chunksize=1)
        torch_times[mode] = time.perf_counter() - t0
        torch_results = torch_results or out

    rows = []
    for c, t in zip(configs, torch_results):
        if (c[0], c[1], c[2]) not in lrlab_rows:
            ap.exit(2, f"compare_sweep.py: error: lrlab's results have no run of {c[0]} {c[1]} at {c[2]}\n")
        rows.append({"optimizer": c[0], "schedule": c[1], "lr": c[2],
                     "lrlab": lrlab_rows[(c[0], c[1], c[2])], "torch": t["best_val_loss"]})

    print(f"{'optimizer':9} {'schedule':9} {'lr':>8} {'lrlab best val':>15} {'PyTorch':>9}")
    for r in rows:
        f = lambda v: "diverged" if v == math.inf else f"{v:.4f}"
        print(f"{r['optimizer']:9} {r['schedule']:9} {r['lr']:8.2g} {f(r['lrlab']):>15} {f(r['torch']):>9}")

    opt_l, sched_l = best_answers(rows, "lrlab")
    opt_t, sched_t = best_answers(rows, "torch")
    print("\nbest per optimizer (schedule, rate):")
    agree_opt = 0
    for o in optimizers:
        l, t = opt_l.get(o), opt_t.get(o)
        same = l is not None and t is not None and (l["schedule"], l["lr"]) == (t["schedule"], t["lr"])
        agree_opt += same
        desc = lambda r, key: "-" if r is None else f"{r['schedule']} {r['lr']:g} ({r[key]:.4f})"
        print(f"  {o:9} lrlab {desc(l, 'lrlab'):28} PyTorch {desc(t, 'torch'):28} {'same' if same else 'differs'}")
    cells = [(o, s) for o in optimizers for s in schedules]
    agree_rate = sum(1 for k in cells if k in sched_l and k in sched_t and sched_l[k]["lr"] == sched_t[k]["lr"])
    both = [r for r in rows if math.isfinite(r["lrlab"]) and math.isfinite(r["torch"])]
    div_agree = sum(1 for r in rows if math.isinf(r["lrlab"]) == math.isinf(r["torch"]))
    rho = spearman([r["lrlab"] for r in both], [r["torch"] for r in both])
    print(f"best rate per schedule: the same in {agree_rate} of {len(cells)} (optimizer, schedule) pairs")
    print(f"diverged or not: the same for {div_agree} of {len(rows)} configurations")
    print(f"rank correlation of best validation loss over the {len(both)} configurations both finished: {rho:.3f}")

    print(f"\n{len(configs)} configurations x {a.epochs} epochs, wall time:")
    print(f"  lrlab sweep (its process, --device {a.device}, mode {res.get('mode')}): {lrlab_s:7.1f} s")
    print(f"    of which training (the sweep's own clock; no start-up, data loading or reports): {res['seconds']:7.1f} s")
    for mode, s in torch_times.items():
        label = ("one after another on the GPU" if a.device == "cuda" else
                 "one after another, 1 thread" if mode == "sequential" else f"{a.workers} worker processes, 1 thread each")
        print(f"  PyTorch, {label:40}: {s:7.1f} s  (lrlab {s / lrlab_s:.2f}x faster)")
    best_torch = min(torch_times.values())
    doc = {"benchmark": "compare_sweep", "device": a.device, "date": time.strftime("%Y-%m-%d"),
           "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
           "torch": torch.__version__, "epochs": a.epochs, "configurations": len(configs),
           "lrlab_seconds": lrlab_s, "lrlab_training_seconds": res["seconds"], "lrlab_mode": res.get("mode"),
           "torch_seconds": torch_times,
           "speedup_vs_best_torch": best_torch / lrlab_s,
           "best_per_optimizer_agree": agree_opt, "best_rate_per_schedule_agree": agree_rate,
           "pairs": len(cells), "diverged_agree": div_agree, "rank_correlation": rho if math.isfinite(rho) else None, "rows": rows}
    for r in rows:  # JSON has no infinity: a diverged run's loss is null
        for k in ("lrlab", "torch"):
            r[k] = r[k] if math.isfinite(r[k]) else None
    if a.json:
        write_json(a.json, doc)


if __name__ == "__main__":
    main()
