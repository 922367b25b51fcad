"""`python -m bench`: run every benchmark, print the table, write results/bench/summary.json.

`--quick` runs each benchmark in a small form (what the test suite runs); `--only` picks some.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

from . import attribution, cpu, dag, pipeline, storage, suite, training
from .common import Row

BENCHMARKS = {
    "training": training,
    "attribution": attribution,
    "storage": storage,
    "pipeline": pipeline,
    "dag": dag,
    "cpu": cpu,
    "suite": suite,
}


def number(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def table(rows: list[Row]) -> str:
    """The rows as a Markdown table, then their notes."""
    lines = [
        "| benchmark | case | measured | baseline | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    notes = []
    for index, row in enumerate(rows, start=1):
        met = "" if row.met is None else ("yes" if row.met else "**no**")
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}x"
        baseline = "" if row.baseline is None else f"{number(row.baseline)} {row.unit}"
        case = f"{row.case} [{index}]" if row.note else row.case
        lines.append(
            f"| {row.benchmark} | {case} | {number(row.value)} {row.unit} | {baseline} | "
            f"{ratio} | {row.target or ''} | {met} |"
        )
        if row.note:
            notes.append(f"[{index}] {row.note}")
    return "\n".join(lines + [""] + notes)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, fewer repeats")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(BENCHMARKS),
        default=list(BENCHMARKS),
        metavar="NAME",
        help=f"run only these benchmarks: {', '.join(BENCHMARKS)}",
    )
    parser.add_argument("--output", type=Path, default=Path("results/bench/summary.json"))
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="cuda: run only the training benchmark, on the GPU (the GPU path: splits on the "
        "device; precision auto, bf16 autocast and channels-last on a GPU with bf16 arithmetic), "
        "against the textbook loop on the same GPU",
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)  # Captum's notes on every call
    import torch

    if args.device == "cuda":
        if not torch.cuda.is_available():
            parser.error("--device cuda: torch sees no CUDA device on this machine")
        args.only = ["training"]

    rows: list[Row] = []
    seconds = {}
    for name in args.only:
        print(f"bench: {name} ...", flush=True)
        started = time.perf_counter()
        if args.device == "cuda":
            rows += training.run(args.quick, torch.device("cuda"))
        else:
            rows += BENCHMARKS[name].run(args.quick)
        seconds[name] = round(time.perf_counter() - started, 1)
        print(f"bench: {name} took {seconds[name]} s", flush=True)
    summary = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cuda": torch.cuda.is_available(),
            "device": args.device,
            "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
        },
        "seconds": seconds,
        "rows": [row.as_dict() for row in rows],
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(summary, indent=2) + "\n")
    print(table(rows))
    print(f"\nbench: wrote {args.output}")


if __name__ == "__main__":
    main()
