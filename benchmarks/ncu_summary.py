#!/usr/bin/env python3
"""Summaries of Nsight Compute (ncu) CSV logs, for gpu_check.sh's profile part. Standard library only.

  ncu_summary.py kernel CSV...            each profiled kernel's section metrics (--section runs):
                                          duration, DRAM throughput, occupancy, registers, waves
  ncu_summary.py step CSV --marker NAME   the GPU time of each kernel in one step of a loop whose
                                          every step launches kernel NAME once (a --metrics
                                          gpu__time_duration.sum run over a window of launches)

Both print a table and, last, one line of key figures; --json FILE writes the numbers. The CSV is
what `ncu --csv --log-file FILE` writes: ncu's own "==PROF==" lines, then a header naming "ID",
"Kernel Name", "Metric Name", "Metric Unit" and "Metric Value" among others, then one row per kernel
launch and metric. Values may carry thousands separators; times may come in any of ncu's units.
"""
import argparse
import collections
import csv
import json
import os
import sys

# To microseconds. Nsight Compute has written both spellings: "usecond" and, in later versions' CSV,
# "us" (a GPU machine's ncu is whichever its CUDA toolkit ships).
TIME_UNITS = {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3, "second": 1e6,
              "ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}


def short_name(name):
    """A kernel's name without its return type, namespaces and parameter list, keeping template
    arguments: ncu prints demangled names such as
    'void lrlab::(anonymous namespace)::update_kernel<(lrlab::OptimKind)1, 2>(lrlab::FusedArgs, ...)'."""
    name = name.strip()
    if name.endswith(")"):  # drop the parameter list: the last parenthesis group at depth 0
        depth = 0
        for i in range(len(name) - 1, -1, -1):
            depth += {")": 1, "(": -1}.get(name[i], 0)
            if depth == 0:
                if name[:i].rstrip():
                    name = name[:i].rstrip()
                break
    depth, cut = 0, 0
    for i, c in enumerate(name):
        if c in "<(":
            depth += 1
        elif c in ">)":
            depth -= 1
        elif depth == 0 and c == " ":
            cut = i + 1  # after a return type such as "void "
        elif depth == 0 and name.startswith("::", i):
            cut = i + 2
    return name[cut:] or name


class Launch:
    def __init__(self, launch_id, name):
        self.id = launch_id
        self.name = name
        self.metrics = {}  # metric name -> (value, unit)


def read_launches(path):
    """The launches of one ncu CSV log, in launch order."""
    with open(path, newline="") as f:
        lines = [line for line in f if not line.startswith("==")]
    start = next((i for i, line in enumerate(lines) if line.startswith('"ID"')), None)
    if start is None:
        raise SystemExit(f"error: {path}: no ncu CSV header (a line starting with \"ID\")")
    launches = collections.OrderedDict()
    for row in csv.DictReader(lines[start:]):
        try:
            launch_id = int(row["ID"])
        except (KeyError, TypeError, ValueError):
            continue
        launch = launches.setdefault(launch_id, Launch(launch_id, short_name(row.get("Kernel Name", "?"))))
        text = (row.get("Metric Value") or "").replace(",", "")
        try:
            value = float(text)
        except ValueError:
            continue  # a rule's message or a metric with no number
        launch.metrics[row.get("Metric Name", "")] = (value, row.get("Metric Unit", ""))
    return sorted(launches.values(), key=lambda l: l.id)


def microseconds(launch, metric):
    value, unit = launch.metrics[metric]
    if unit not in TIME_UNITS:
        raise SystemExit(f"error: launch {launch.id}: {metric} in unknown unit {unit!r}")
    return value * TIME_UNITS[unit]


def kernel_summary(paths):
    rows = []
    for path in paths:
        for launch in read_launches(path):
            row = {"file": path, "kernel": launch.name}
            if "Duration" in launch.metrics:
                row["duration_us"] = microseconds(launch, "Duration")
            for metric, key in [("DRAM Throughput", "dram_pct"), ("Memory Throughput", "memory_pct"),
                                ("Achieved Occupancy", "achieved_occupancy_pct"),
                                ("Theoretical Occupancy", "theoretical_occupancy_pct"),
                                ("Registers Per Thread", "registers"), ("Waves Per SM", "waves_per_sm"),
                                ("Block Limit Registers", "block_limit_registers"), ("Grid Size", "grid"),
                                ("Block Size", "block")]:
                if metric in launch.metrics:
                    row[key] = launch.metrics[metric][0]
            row["all_metrics"] = {m: v for m, (v, _) in launch.metrics.items()}
            rows.append(row)
            print(f"{path}: launch {launch.id}, {launch.name}")
            for m, (v, unit) in sorted(launch.metrics.items()):
                print(f"  {m:<45} {v:>14g} {unit}")
    if not rows:
        raise SystemExit("error: no profiled launches")

    def fmt(r):
        parts = [r["kernel"]]
        if "duration_us" in r:
            parts.append(f"{r['duration_us']:.1f} us")
        for key, label in [("dram_pct", "DRAM {:.0f}%"), ("achieved_occupancy_pct", "occupancy {:.0f}%"),
                           ("theoretical_occupancy_pct", "of {:.0f}%"), ("registers", "{:.0f} regs"),
                           ("waves_per_sm", "{:.2f} waves")]:
            if key in r:
                parts.append(label.format(r[key]))
        return " ".join(parts)

    print("; ".join(fmt(r) for r in rows))
    return {"kernels": rows}


def step_summary(path, marker):
    launches = [l for l in read_launches(path) if "gpu__time_duration.sum" in l.metrics]
    marks = [i for i, l in enumerate(launches) if marker in l.name]
    if len(marks) < 2:
        raise SystemExit(f"error: {path}: fewer than two launches of {marker!r} in the window "
                         f"({len(launches)} launches): no whole step to measure")
    # Whole steps only: after one marker up to and including the last.
    window = launches[marks[0] + 1: marks[-1] + 1]
    steps = len(marks) - 1
    per_name = collections.OrderedDict()
    for l in window:
        entry = per_name.setdefault(l.name, {"kernel": l.name, "launches": 0, "total_us": 0.0})
        entry["launches"] += 1
        entry["total_us"] += microseconds(l, "gpu__time_duration.sum")
    rows = sorted(per_name.values(), key=lambda e: -e["total_us"])
    step_us = sum(e["total_us"] for e in rows) / steps
    print(f"{path}: {steps} whole steps, {len(window)} launches ({len(window) / steps:g} a step)")
    print(f"  {'kernel':<60} {'a step':>8} {'us a step':>10} {'share':>6}")
    for e in rows:
        e["per_step"] = e["launches"] / steps
        e["us_per_step"] = e["total_us"] / steps
        print(f"  {e['kernel'][:60]:<60} {e['per_step']:>8g} {e['us_per_step']:>10.2f} "
              f"{100 * e['us_per_step'] / step_us:>5.1f}%")
    top = ", ".join(f"{e['kernel'][:28]} {e['us_per_step']:.1f}" for e in rows[:3])
    print(f"{len(window) / steps:g} kernels, {step_us:.1f} us of kernel time a step (top: {top})")
    return {"file": path, "marker": marker, "steps": steps, "launches_per_step": len(window) / steps,
            "kernel_us_per_step": step_us, "kernels": rows}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["kernel", "step"])
    ap.add_argument("csv", nargs="+")
    ap.add_argument("--marker", help="step: the kernel launched once a step")
    ap.add_argument("--json", help="write the summary here")
    a = ap.parse_args()
    if a.mode == "step":
        if not a.marker or len(a.csv) != 1:
            ap.error("step takes one CSV file and --marker")
        out = step_summary(a.csv[0], a.marker)
    else:
        out = kernel_summary(a.csv)
    if a.json:
        with open(a.json + ".tmp", "w") as f:
            json.dump(out, f, indent=1)
        os.replace(a.json + ".tmp", a.json)


if __name__ == "__main__":
    sys.exit(main())
