"""Runs one of lrlab's executables for a comparison script: its standard output, or one `error:`
line and exit status 2 when it cannot be started or fails (a comparison without lrlab's side has
nothing to say)."""
import subprocess
import sys


def run_tool(cmd, stdin_text=None, timeout=300):
    try:
        r = subprocess.run(cmd, input=stdin_text, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        sys.stderr.write(f"error: cannot run {cmd[0]}: {e}\n")
        sys.exit(2)
    if r.returncode != 0:
        sys.stderr.write(f"error: {' '.join(cmd)} exited {r.returncode}: {r.stderr.strip()}\n")
        sys.exit(2)
    return r.stdout
