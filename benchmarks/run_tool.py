"""Helpers the comparison scripts share: running one of lrlab's executables, and writing a JSON
result so that an earlier one is never left half-written."""
import json
import os
import subprocess
import sys


def run_tool(cmd, stdin_text=None, timeout=300):
    """The tool's standard output, or one `error:` line and exit status 2 when it cannot be started
    or fails (a comparison without lrlab's side has nothing to say). timeout=None waits as long as
    the tool runs."""
    try:
        r = subprocess.run(cmd, input=stdin_text, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        sys.stderr.write(f"error: cannot run {cmd[0]}: {e}\n")
        sys.exit(2)
    if r.returncode != 0:
        sys.stderr.write(f"error: {' '.join(cmd)} exited {r.returncode}: {r.stderr.strip()}\n")
        sys.exit(2)
    return r.stdout


def write_json(path, doc):
    """Writes doc to path through a temporary file and a rename."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)
