#!/usr/bin/env python3
"""How far PyTorch's own fp32 optimizers drift from float64 over 1000 steps: the yardstick for the
tolerances of lrlab's reference tests (tests/optim_long_run.hpp, run by OptimizerReference on the CPU
path and OptimizerReferenceGpu on the GPU).

The same problem as the test: 1031 parameters, gradients of a noisy quadratic around a random
target, rate decaying as 0.999^t, 1000 steps. Prints the max-norm relative error per optimizer.
Needs torch; not part of the tests.
"""
import torch

VARIANTS = [
    ("sgd()", torch.optim.SGD, dict(lr=0.05)),
    ("sgd(momentum=0.9)", torch.optim.SGD, dict(lr=0.01, momentum=0.9)),
    ("sgd(momentum=0.9,nesterov=true,wd=0.01)", torch.optim.SGD, dict(lr=0.01, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("adam()", torch.optim.Adam, dict(lr=1e-2)),
    ("adam(amsgrad=true)", torch.optim.Adam, dict(lr=1e-2, amsgrad=True)),
    ("adamw()", torch.optim.AdamW, dict(lr=1e-2)),
    ("adamw(wd=0.1,amsgrad=true)", torch.optim.AdamW, dict(lr=1e-2, weight_decay=0.1, amsgrad=True)),
    ("rmsprop()", torch.optim.RMSprop, dict(lr=1e-3)),
    ("rmsprop(momentum=0.9)", torch.optim.RMSprop, dict(lr=1e-3, momentum=0.9)),
    ("rmsprop(centered=true)", torch.optim.RMSprop, dict(lr=1e-3, centered=True)),
    ("adagrad()", torch.optim.Adagrad, dict(lr=0.1)),
]


def run(cls, kw, seed=42, n=1031, steps=1000):
    """fp32 and float64 optimizers fed the same gradients (computed from the fp32 weights and rounded
    to fp32, as lrlab's test does); returns the max-norm relative error of the fp32 weights."""
    g = torch.Generator().manual_seed(seed)
    p0 = torch.randn(n, generator=g, dtype=torch.float64).float()
    target = torch.randn(n, generator=g, dtype=torch.float64).float()
    p32 = p0.clone().requires_grad_(True)
    p64 = p0.clone().double().requires_grad_(True)
    o32, o64 = cls([p32], **kw), cls([p64], **kw)
    s32 = torch.optim.lr_scheduler.LambdaLR(o32, lambda t: 0.999 ** t)
    s64 = torch.optim.lr_scheduler.LambdaLR(o64, lambda t: 0.999 ** t)
    for _ in range(steps):
        grad = (p32.detach() - target) + 0.5 * torch.randn(n, generator=g, dtype=torch.float64).float()
        p32.grad = grad.clone()
        p64.grad = grad.double()
        o32.step()
        o64.step()
        s32.step()
        s64.step()
    return ((p32.detach().double() - p64.detach()).abs().max() / p64.detach().abs().max()).item()


def main():
    print(f"{'optimizer':44} max-norm relative error, fp32 vs float64 (PyTorch {torch.__version__})")
    for name, cls, kw in VARIANTS:
        print(f"{name:44} {run(cls, kw):.2e}")


if __name__ == "__main__":
    main()
