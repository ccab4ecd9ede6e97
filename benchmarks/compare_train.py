#!/usr/bin/env python3
"""Training speed, side by side: lrlab train against eager PyTorch on the same model, data and batch.

Fashion-MNIST, 784-256-128-10 relu MLP, Adam 1e-3, batch 128. On the CPU PyTorch runs at 1 and 2
threads (its best counts on a 2-core machine); on the GPU (--device cuda) the data set sits on the GPU
for both. lrlab's figure is its training time per epoch (samples / samples-per-second from its
JSON). Prints a table and writes JSON. Needs torch and numpy; not part of the tests.

usage: compare_train.py --lrlab build/lrlab [--device cpu|cuda] [--epochs 3] [--json out.json]
"""
import argparse
import json
import os
import platform
import tempfile
import time

import fashion_mnist
from run_tool import run_tool


def torch_epochs(x, y, epochs, threads, device="cpu"):
    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 128),
                                torch.nn.ReLU(), torch.nn.Linear(128, 10)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    times = []
    for _ in range(epochs):
        perm = torch.randperm(len(xt), device=device)
        sync()
        t0 = time.perf_counter()
        for i in range(0, len(xt), 128):
            idx = perm[i:i + 128]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lrlab", default="build/lrlab")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--json")
    ap.add_argument("--data-dir", default=fashion_mnist.DEFAULT_DIR)
    a = ap.parse_args()

    x, y = fashion_mnist.load(a.data_dir)
    x /= 255
    x = (x - x.mean()) / x.std()
    x, y = x[:54000], y[:54000]  # lrlab trains on 54000 (10% held out for validation)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "r.json")
        run_tool([a.lrlab, "train", "--data", "fashion-mnist", "--hidden", "256,128", "--optimizer", "adam()",
                  "--lr", "1e-3", "--epochs", str(a.epochs), "--batch", "128", "--device", a.device, "--quiet",
                  "--json", out], timeout=None)
        rep = json.load(open(out))
    lr_times = [54000 / e["samples_per_s"] for e in rep["epochs"]]
    rows.append({"impl": "lrlab", "threads": "GPU" if a.device == "cuda" else f"{os.environ.get('OMP_NUM_THREADS') or len(os.sched_getaffinity(0))} (OMP_NUM_THREADS or affinity)",
                 "epoch_s": lr_times, "test_accuracy": rep["test"]["accuracy"]})
    for threads in ((1,) if a.device == "cuda" else (1, 2)):
        t = torch_epochs(x, y, a.epochs, threads, a.device)
        rows.append({"impl": "pytorch", "threads": "GPU, eager" if a.device == "cuda" else threads, "epoch_s": t})
    best_torch = min(min(r["epoch_s"]) for r in rows if r["impl"] == "pytorch")
    best_lrlab = min(lr_times)
    print(f"{'impl':8} {'threads':>26} {'best s/epoch':>13} {'median':>8}")
    for r in rows:
        ts = sorted(r["epoch_s"])
        print(f"{r['impl']:8} {str(r['threads']):>26} {ts[0]:13.3f} {ts[len(ts) // 2]:8.3f}")
    print(f"lrlab / best PyTorch time per epoch: {best_lrlab / best_torch:.2f} "
          f"(samples/s: lrlab {best_torch / best_lrlab:.2f}x PyTorch's)")
    doc = {"benchmark": "compare_train", "device": a.device, "date": time.strftime("%Y-%m-%d"),
           "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "rows": rows,
           "ratio_lrlab_to_best_torch": best_lrlab / best_torch}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(doc, f, indent=2)


if __name__ == "__main__":
    main()
