"""Run every benchmark and print one table: target, measured value, pass/fail.

Each benchmark script prints lines ``<measure> = <value>   (target <= X)`` (or ``>= X``); this runner
collects them, and times ``deepalign reproduce`` on a fresh temporary folder (target: 10 minutes); with
``--only smollm2-quick``, ``deepalign reproduce --suite smollm2 --quick`` too (target: 10 minutes, stage times
printed; SmolLM2 is converted into $DEEPALIGN_CACHE on first use, outside the timing only if already there).

    python bench/run_all.py                        # everything but smollm2-quick (15-20 minutes on 2 CPU cores)
    python bench/run_all.py --only kl generate     # some of: kl generate train reproduce smollm2-quick
    python bench/run_all.py --quick                # smaller settings, a smoke run (ratios are noisier)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import print_table

HERE = Path(__file__).parent
TARGET_LINE = re.compile(
    r"^(?P<measure>.+?)\s*=\s*(?P<value>[-+0-9.eE]+)x?\s+\(target (?P<op><=|>=) (?P<target>[0-9.]+)\)"
)
REPRODUCE_TARGET_S = 600.0
TIMED_RUNS = {"reproduce": ("reproduce wall time (s)", ()),
              "smollm2-quick": ("reproduce --suite smollm2 --quick wall time (s)", ("--suite", "smollm2", "--quick"))}

# name -> (script, full arguments, quick arguments)
SCRIPTS = {
    "kl": ("kl.py", ["--n", "64", "--batch-size", "16", "--short"], ["--n", "32", "--batch-size", "16", "--short"]),
    "generate": ("generate.py", [], ["--n", "16", "--max-new-tokens", "24", "--batch-size", "16"]),
    "train": ("train.py", [], ["--steps", "2", "--rounds", "2", "--repeats", "1"]),
}


def parse_targets(output: str) -> list[tuple[str, float, str, float]]:
    """``(measure, value, op, target)`` for each target line in a benchmark's output."""
    found = []
    for line in output.splitlines():
        m = TARGET_LINE.match(line.strip())
        if m:
            found.append((m["measure"].strip(), float(m["value"]), m["op"], float(m["target"])))
    return found


def run_script(name: str, quick: bool) -> tuple[list[tuple[str, float, str, float]], str]:
    script, full, small = SCRIPTS[name]
    cmd = [sys.executable, str(HERE / script), *(small if quick else full)]
    print(f"$ {' '.join(cmd[1:])}", flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    print(proc.stdout, end="", flush=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return [], f"exit {proc.returncode}: {tail}"
    return parse_targets(proc.stdout), ""


def time_reproduce(*extra: str) -> tuple[float | None, str]:
    """Seconds of ``deepalign reproduce [extra]`` on a fresh folder (a subprocess; the model caches are kept);
    each stage's seconds are printed from its summary.json."""
    with tempfile.TemporaryDirectory(prefix="deepalign-bench-") as tmp:
        cmd = [sys.executable, "-c", "import sys; from deepalign.cli import main; sys.exit(main())",
               "reproduce", *extra, "--out", str(Path(tmp) / "run"), "--no-progress"]
        print(" ".join(["$ deepalign reproduce", *extra, "--out <fresh temp folder> --no-progress"]), flush=True)
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        seconds = time.perf_counter() - start
        for summary in sorted(Path(tmp).glob("run/seed*/*/summary.json")):
            stage = json.loads(summary.read_text())
            if isinstance(stage.get("seconds"), (int, float)):
                print(f"  stage {summary.parent.name}: {stage['seconds']:.0f} s", flush=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return None, f"exit {proc.returncode} after {seconds:.0f} s: {tail}"
    return seconds, ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=[*SCRIPTS, *TIMED_RUNS], default=[*SCRIPTS, "reproduce"])
    ap.add_argument("--quick", action="store_true", help="smaller settings (a smoke run)")
    args = ap.parse_args()
    rows, failed = [], False
    for name in args.only:
        if name in TIMED_RUNS:
            measure, extra = TIMED_RUNS[name]
            seconds, error = time_reproduce(*extra)
            results = [] if seconds is None else [(measure, seconds, "<=", REPRODUCE_TARGET_S)]
        else:
            results, error = run_script(name, args.quick)
        if error or not results:
            rows.append([name, "(did not run)", "-", "-", f"ERROR {error or 'no target line in the output'}"])
            failed = True
        for measure, value, op, target in results:
            ok = value <= target if op == "<=" else value >= target
            failed |= not ok
            rows.append([name, measure, f"{value:.3g}", f"{op} {target:g}", "pass" if ok else "FAIL"])
    print()
    print_table(["benchmark", "measure", "measured", "target", "result"], rows)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
