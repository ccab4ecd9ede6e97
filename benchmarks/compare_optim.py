#!/usr/bin/env python3
"""lrlab against PyTorch, per optimizer and case: reads bench_optim's JSON and
torch_optim_bench.py's JSON and prints step times, GB/s and the ratio lrlab GB/s / torch GB/s
(above 1: lrlab moves a parameter faster; GB/s rather than time because the mixed case has a few
more parameters in lrlab's padded buffer). Each run's own copy bandwidth is shown too, since the two
runs are separate processes on a possibly busy machine.

Usage: compare_optim.py LRLAB_JSON TORCH_JSON [--markdown]
Exits 1 when the files have no (device, optimizer, case) in common.
"""
import argparse
import json
import math
import sys


def load(path, what):
    try:
        with open(path) as f:
            return json.load(f)["results"]
    except (OSError, ValueError, KeyError) as e:
        sys.exit(f"error: cannot read {what} results from {path}: {e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("lrlab_json")
    ap.add_argument("torch_json")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = ap.parse_args()
    # Rows marked "variant" time a kernel the library does not use (bench_optim --variants).
    lrlab = {(r["device"], r["optimizer"], r["case"]): r for r in load(args.lrlab_json, "bench_optim")
             if "variant" not in r}
    torch_rows = load(args.torch_json, "torch_optim_bench")

    head = ["device", "optimizer", "case", "lrlab ms", "lrlab GB/s", "torch impl", "torch ms", "torch GB/s",
            "lrlab/torch", "copy GB/s (lrlab run / torch run)"]
    table, ratios = [], []
    for t in torch_rows:
        r = lrlab.get((t["device"], t["optimizer"], t["case"]))
        if r is None:
            continue
        ratio = r["gbps"] / t["gbps"]
        ratios.append(ratio)
        table.append([t["device"], t["optimizer"], t["case"], f"{r['step_ms']:.3f}", f"{r['gbps']:.1f}", t["impl"],
                      f"{t['step_ms']:.3f}", f"{t['gbps']:.1f}", f"{ratio:.2f}x",
                      f"{r['copy_gbps']:.1f} / {t['copy_gbps']:.1f}"])
    if not table:
        sys.exit("error: no (device, optimizer, case) in common between the two files")

    if args.markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for row in table:
            print("| " + " | ".join(row) + " |")
    else:
        widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(head)]
        for row in [head] + table:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    geo = math.exp(sum(math.log(x) for x in ratios) / len(ratios))
    print(f"lrlab/torch GB/s: geometric mean {geo:.2f}x over {len(ratios)} rows, "
          f"range {min(ratios):.2f}x-{max(ratios):.2f}x")


if __name__ == "__main__":
    main()
