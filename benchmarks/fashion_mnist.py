"""Shared by the PyTorch comparison scripts: Fashion-MNIST as lrlab reads it, and lrlab's MLP in
PyTorch. Needs numpy (and torch for lrlab_mlp)."""
import gzip
import os

import numpy as np

DEFAULT_DIR = os.environ.get("LRLAB_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")


def load_idx(path):
    """An IDX file (gzip), as a uint8 array of its dimensions."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(magic & 0xFF)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * len(dims)).reshape(dims)


def load(data_dir=DEFAULT_DIR, split="train"):
    """Images as float32 rows of 784 (unscaled) and labels as int64."""
    prefix = "train" if split == "train" else "t10k"
    x = load_idx(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte.gz")).reshape(-1, 784).astype(np.float32)
    y = load_idx(os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte.gz")).astype(np.int64)
    return x, y


def lrlab_mlp(widths=(784, 256, 128, 10)):
    """lrlab's relu MLP and its initialisation: He uniform for the hidden layers, Glorot uniform for
    the output, zero biases. Seed torch before calling."""
    import torch
    layers = [torch.nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:])]
    modules = []
    for i, layer in enumerate(layers):
        if i < len(layers) - 1:
            torch.nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
            modules += [layer, torch.nn.ReLU()]
        else:
            torch.nn.init.xavier_uniform_(layer.weight)
            modules.append(layer)
        torch.nn.init.zeros_(layer.bias)
    return torch.nn.Sequential(*modules)
