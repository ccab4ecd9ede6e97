#!/usr/bin/env python3
"""Test accuracy of lrlab's Fashion-MNIST setup in PyTorch, under variants of choices a trainer makes.

784-256-128-10 relu MLP, Adam 1e-3, batch 128, 10 epochs; for each combination of initialisation
(`he`: He uniform hidden layers and Glorot uniform output, zero biases, as lrlab; `torch`: PyTorch's
default), input scaling (`std`: standardised with the training set's mean and deviation, as lrlab;
`01`: divided by 255) and training set (54k with 10% held out, as lrlab's default; or all 60k),
prints the test accuracy per seed. `--schedule step` halves the rate every 2 epochs, as
`lrlab train --schedule "step(every=2ep,gamma=0.5)"` does; `--schedule cosine` and `--schedule poly`
decay it to 0 over the whole run, stepped per minibatch, as `cosine(steps=10ep)` and
`poly(steps=10ep)` do (10 being --epochs); `--variants lrlab` runs only lrlab's setup.
Needs torch and numpy (Debian: /usr/bin/python3); not a test.

usage: torch_accuracy.py [--data-dir DIR] [--seeds 0,1] [--epochs 10] [--schedule constant|step|cosine|poly]
                         [--variants all|lrlab]
"""
import argparse
import itertools

import numpy as np
import torch

import fashion_mnist


def run(data, init, scaling, full, seed, epochs, schedule):
    xtr, ytr, xte, yte = data
    perm = np.random.default_rng(seed).permutation(len(xtr))
    rows = perm if full else perm[len(xtr) // 10:]
    x, y = xtr[rows], ytr[rows]
    if scaling == "std":
        mean, std = x.mean(), x.std()
        scale = lambda a: (a - mean) / std
    else:
        scale = lambda a: a / 255.0
    x, y = torch.tensor(scale(x)), torch.tensor(y)
    xt, yt = torch.tensor(scale(xte)), torch.tensor(yte)
    torch.manual_seed(seed)
    if init == "he":
        net = fashion_mnist.lrlab_mlp()
    else:
        net = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 128),
                                  torch.nn.ReLU(), torch.nn.Linear(128, 10))
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    steps = epochs * -(-len(x) // 128)
    per_epoch, per_step = None, None
    if schedule == "step":
        per_epoch = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    elif schedule == "cosine":
        per_step = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    elif schedule == "poly":
        per_step = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=steps, power=1.0)
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for i in range(0, len(x), 128):
            b = order[i:i + 128]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x[b]), y[b]).backward()
            opt.step()
            if per_step:
                per_step.step()
        if per_epoch:
            per_epoch.step()
    with torch.no_grad():
        return (net(xt).argmax(1) == yt).float().mean().item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default=fashion_mnist.DEFAULT_DIR)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--schedule", choices=["constant", "step", "cosine", "poly"], default="constant")
    ap.add_argument("--variants", choices=["all", "lrlab"], default="all")
    a = ap.parse_args()
    torch.set_num_threads(1)
    data = fashion_mnist.load(a.data_dir) + fashion_mnist.load(a.data_dir, "test")
    seeds = [int(s) for s in a.seeds.split(",")]
    print("init   scaling  train  test accuracy per seed")
    variants = itertools.product(["he", "torch"], ["std", "01"], [False, True])
    if a.variants == "lrlab":
        variants = [("he", "std", False)]
    for init, scaling, full in variants:
        accs = [run(data, init, scaling, full, s, a.epochs, a.schedule) for s in seeds]
        print(f"{init:6} {scaling:8} {'60k' if full else '54k':6}", " ".join(f"{100 * v:.2f}%" for v in accs), flush=True)


if __name__ == "__main__":
    main()
