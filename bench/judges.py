"""Cost of the offline judges on pyrit's 564 human-labelled rows (read from the installed wheel).

    python bench/judges.py                 # keyword (ours, paper) and the probe (built on first use)
    python bench/judges.py --threads 1     # torch threads for the probe (default: torch's own)

Prints judgments per second and seconds for all rows (model loading timed apart), the CPU seconds used, and
the machine's load average: on a shared machine the wall-clock figure depends on the load, and with one
thread the CPU seconds estimate the wall-clock time on an idle core.
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    import torch

    from deepalign.data.labels import DEFAULT_SETS, load_pyrit_set
    from deepalign.judges import JudgeInput, make_judge
    from deepalign.pipeline.probe import ensure_probe

    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [r for name in DEFAULT_SETS for r in load_pyrit_set(name).rows]
    items = [JudgeInput(r.prompt, r.response, r.prefill) for r in rows]
    print(f"{len(items)} rows; torch threads {torch.get_num_threads()}; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs")
    ensure_probe(progress=False)  # built before the timing (first use only)
    for spec in ("keyword", "keyword:paper", "probe"):
        t0 = time.perf_counter()
        judge = make_judge(spec, **({"progress": False, "batch_size": args.batch_size} if spec == "probe" else {}))
        loaded = time.perf_counter() - t0
        t0, c0 = time.perf_counter(), time.process_time()
        judge.judge(items)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        name = spec.replace(":", " ")
        print(f"{name} load seconds = {loaded:.1f}")
        print(f"{name} CPU seconds (all threads) = {cpu:.2f}")
        print(f"{name} seconds for {len(items)} rows = {seconds:.2f}   (target <= 60)")
        print(f"{name} judgments per second = {len(items) / seconds:.1f}   (target >= {len(items) / 60:.1f})")


if __name__ == "__main__":
    main()
