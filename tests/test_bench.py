"""The benchmark harness in its small form (`python -m bench --quick`): every benchmark runs,
measures something real and writes the summary the table in docs/benchmarks.md comes from."""

from __future__ import annotations

import json
import math

import pytest
from background import run_of

pytestmark = pytest.mark.workflow

BENCHMARKS = {
    "training throughput",
    "attribution throughput",
    "masking throughput",
    "bytes on disk",
    "pipeline overhead",
    "DAG scaling",
    "CPU efficiency",
}


@pytest.fixture(scope="module")
def quick_bench():
    """The summary and printed table of `python -m bench --quick`, run in the background while
    the rest of the suite runs (tests/background.py)."""
    run = run_of("quick_bench")
    printed = run.wait()
    return json.loads((run.folder / "summary.json").read_text()), printed


def test_every_benchmark_reports_finite_measurements(quick_bench):
    summary, printed = quick_bench
    rows = summary["rows"]
    assert {row["benchmark"] for row in rows} == BENCHMARKS
    for row in rows:
        assert math.isfinite(row["value"]) and row["value"] > 0, row
        if row["baseline"] is not None:
            assert math.isclose(row["ratio"], row["value"] / row["baseline"]), row
        assert (row["target"] is None) == (row["met"] is None), row
    assert printed.count("\n| ") == len(rows) + 1  # header and one line per row
    assert summary["machine"]["cpus"] >= 1 and summary["quick"] is True


def test_training_is_measured_at_the_default_precision_and_at_bfloat16(quick_bench):
    rows = [r for r in quick_bench[0]["rows"] if r["benchmark"] == "training throughput"]
    assert [r["case"] for r in rows] == [
        f"{architecture}, batch 64{precision}"
        for architecture in ("mlp", "cnn")
        for precision in ("", ", precision bfloat16")
    ]
    assert [r["target"] for r in rows] == [">= 3x", ">= 3x", ">= 1.5x", ">= 1.5x"]
    for auto, bfloat16 in (rows[:2], rows[2:]):
        assert "training.precision auto (float32)" in auto["note"]
        assert "training.precision bfloat16 (bfloat16)" in bfloat16["note"]
        # one textbook loop measured for both precisions
        assert auto["baseline"] == bfloat16["baseline"]


def test_every_attribution_method_and_target_is_measured(quick_bench):
    from diffroar.saliency import METHODS

    rows = quick_bench[0]["rows"]
    every = "batched >= per image, every method and architecture"
    attribution = [r for r in rows if r["benchmark"] == "attribution throughput"]
    cases = {f"cnn {name}" for name in METHODS} | {
        f"mlp {name}" for name in METHODS if name != "gradcam"
    }
    assert {r["case"] for r in attribution} == cases | {every}
    # every method has the target batched >= per image; the last row is the lowest ratio
    summary = attribution[-1]
    assert summary["case"] == every and summary["target"] == ">= 1x"
    ratios = [r["ratio"] for r in attribution[:-1]]
    assert summary["value"] == min(ratios) and summary["met"] == (min(ratios) >= 1)
    for row in attribution[:-1]:
        assert row["met"] == (row["ratio"] >= float(row["target"][3:-1])), row
        assert row["target"] == (">= 10x" if row["case"].endswith(" gradient") else ">= 1x")
    targets = {r["case"]: r["target"] for r in rows if r["target"]}
    assert targets["mlp, batch 64"] == ">= 3x" and targets["cnn, batch 64"] == ">= 1.5x"
    assert targets["mlp gradient"] == targets["cnn gradient"] == ">= 10x"
    dag = sorted(int(r["case"].split()[2]) for r in rows if r["case"].endswith("jobs up to date"))
    assert 100 <= dag[0] <= 120 and 1000 <= dag[1] <= 1050  # the synthetic sizes, ungrouped
    overhead = [r for r in rows if r["benchmark"] == "pipeline overhead" and r["unit"] == "share"]
    assert len(overhead) == 1 and 0 < overhead[0]["value"] < 1
    wall = [r for r in rows if r["benchmark"] == "pipeline overhead" and r["unit"] == "s"]
    assert len(wall) == 1 and wall[0]["target"] is None  # the 10-minute limit is the full run's


def test_the_gpu_case_says_when_there_is_no_gpu():
    import subprocess
    import sys

    import torch
    from workflow_helpers import REPO

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: `python -m bench --device cuda` measures it")
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--device", "cuda"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "--device cuda: torch sees no CUDA device on this machine" in result.stderr
