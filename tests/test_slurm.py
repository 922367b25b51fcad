"""The workflow through profiles/slurm on a real single-node Slurm (profiles/slurm/local/start.sh
starts it; it needs root or sudo). CI runs these; elsewhere they skip when Slurm cannot start."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from diffroar.data import read_attributes
from diffroar.models import load_checkpoint
from diffroar.saliency import Settings, gradient_x_input
from diffroar.store import SPLITS, read_split
from small_runs import CHECKPOINT, SALIENCY, SMALL, TABLES, clean_run, copy_run, small_workflow
from workflow_helpers import REPO, SNAKEMAKE, job_counts, set_config, snakemake

pytestmark = [pytest.mark.workflow, pytest.mark.slurm]

# Rules whose jobs go to Slurm; the others are local rules (Snakefile `localrules`).
SUBMITTED_RULES = {
    "data", "train", "saliency", "mask", "retrain", "noretrain", "localization", "sanity",
}  # fmt: skip
FIGURES = ["methods", "imputation", "noretrain", "attributions", "localization"]
# The local Slurm keeps no accounting: job states come from squeue, checked every few seconds.
PROFILE = [
    "--profile",
    "profiles/slurm",
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "2",
]
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+)")
# A user method (the config's `methods`) in a module of the run's working directory: on Slurm it
# runs as a built-in does. Input times the gradient of the target logit, by hand.
USER_METHOD = "by_hand"
USER_MODULE = """
import torch


def input_x_gradient(model, inputs, targets):
    inputs = inputs.detach().clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(model(inputs).gather(1, targets[:, None]).sum(), inputs)
    return inputs.detach() * gradient
"""


@pytest.fixture(scope="module")
def slurm():
    """A running local Slurm (started by the project's script, or found running)."""
    if shutil.which("sbatch") and subprocess.run(["sinfo"], capture_output=True).returncode == 0:
        return
    can_start = os.geteuid() == 0 or shutil.which("sudo")
    if not can_start and os.environ.get("CI") != "true":
        pytest.skip("starting the local Slurm needs root or sudo")
    start = subprocess.run(
        ["bash", str(REPO / "profiles" / "slurm" / "local" / "start.sh")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if start.returncode != 0:
        message = f"local Slurm did not start:\n{start.stdout}\n{start.stderr}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def slurm_jobs(output: str) -> dict[int, int]:
    """Snakemake job id -> Slurm job id of every job the executor submitted."""
    return {int(job): int(slurm_id) for job, slurm_id in SUBMITTED.findall(output)}


def slurm_state(slurm_id: int) -> str:
    """The job's state as slurmctld records it (kept for MinJobAge = 1 h)."""
    shown = subprocess.run(
        ["scontrol", "show", "job", str(slurm_id)], capture_output=True, text=True, check=True
    ).stdout
    return re.search(r"JobState=(\w+)", shown).group(1)


@pytest.fixture(scope="module")
def through_slurm(slurm, tmp_path_factory):
    """The small cut of the tiny config (tests/small_runs.py: one model, imputation and k) with
    the user method beside `gradient`, run to its default target (the randomisation check and
    the figures included) through the Slurm profile; its output and wall time."""
    workdir = small_workflow(tmp_path_factory.mktemp("slurm"))
    (workdir / "slurm_methods.py").write_text(USER_MODULE)
    set_config(
        workdir,
        methods={USER_METHOD: {"function": "slurm_methods:input_x_gradient"}},
        experiment={"methods": [*SMALL["methods"], USER_METHOD]},
    )
    planned = job_counts(snakemake(workdir, "--dry-run").stdout)
    started = time.monotonic()
    result = snakemake(workdir, *PROFILE)
    seconds = time.monotonic() - started
    (workdir / "run.log").write_text(result.stdout + result.stderr)
    return workdir, planned, result.stdout + result.stderr, seconds


def test_every_cluster_job_went_through_sbatch(through_slurm):
    workdir, planned, output, seconds = through_slurm
    submitted = slurm_jobs(output)
    assert len(submitted) == sum(planned[rule] for rule in SUBMITTED_RULES & set(planned))
    assert len(set(submitted.values())) == len(submitted)  # one Slurm job each
    assert {slurm_state(slurm_id) for slurm_id in submitted.values()} == {"COMPLETED"}
    # the tables and figures ran here, not in the queue
    for rule in ("metrics", "combine_table", "figure_methods", "figure_localization"):
        assert f"localrule {rule}:" in output
    assert "localrule train:" not in output
    print(f"through Slurm: {len(submitted)} sbatch jobs, {seconds:.0f} s")


def test_slurm_run_equals_the_local_run(through_slurm, tmp_path_factory):
    # the local run of the config without the user method is the session's shared one
    # (tests/small_runs.py)
    slurm_dir, local_dir = through_slurm[0], clean_run(tmp_path_factory)
    for path in TABLES:
        table = Path(path).stem
        columns = ["method", "test_accuracy"] if table == "metrics" else None
        remote = pd.read_parquet(slurm_dir / path, columns=columns)
        local = pd.read_parquet(local_dir / path, columns=columns)
        assert set(remote["method"]) == {*SMALL["methods"], USER_METHOD}, table
        remote = remote[remote["method"] != USER_METHOD].reset_index(drop=True)
        if table != "metrics":
            remote = remote.drop(columns=["package_version"], errors="ignore")
            local = local.drop(columns=["package_version"], errors="ignore")
        pd.testing.assert_frame_equal(remote, local)
    for kind in FIGURES:
        assert (
            slurm_dir / "results" / "figures" / f"{kind}-blockdigits.png"
        ).stat().st_size > 10_000
    print(f"small cut: {through_slurm[3]:.0f} s through Slurm")


@pytest.mark.filterwarnings("ignore::UserWarning")  # Captum's, on inputs without gradients
def test_a_user_method_runs_on_slurm_as_a_built_in(through_slurm):
    # its Slurm job imported the module from the run's working directory: input x gradient
    workdir = through_slurm[0]
    model, _ = load_checkpoint(workdir / CHECKPOINT)
    store = workdir / SALIENCY.parent / f"{USER_METHOD}.zarr"
    dataset = workdir / "results" / "data" / "blockdigits.zarr"
    pixel_max = np.float32(read_attributes(dataset)["pixel_max"])
    for split in SPLITS:
        stored = read_split(dataset, split)
        images = torch.from_numpy(stored["images"].astype(np.float32) / pixel_max)
        labels = torch.from_numpy(stored["labels"])
        seeds = np.zeros(len(images), dtype=np.uint64)
        expected = gradient_x_input(model, images, labels, Settings(), seeds=seeds).numpy()
        values = read_split(store, split)["attributions"]
        np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-7)
        assert np.abs(values).sum() > 0


def test_a_cancelled_job_fails_the_run_and_a_rerun_completes_it(slurm, tmp_path_factory, tmp_path):
    # a finished local run without its base model: the run (target: that checkpoint) is one train
    # job, cancelled in the queue as soon as it is submitted
    workdir = copy_run(clean_run(tmp_path_factory), tmp_path / "cancel")
    (workdir / CHECKPOINT).unlink()
    target = str(CHECKPOINT)
    command = [*SNAKEMAKE, "--configfile", "tiny.yaml", *PROFILE, "--retries", "0", target]
    run = subprocess.Popen(
        command, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output, cancelled = [], None
    for line in run.stdout:
        output.append(line)
        match = SUBMITTED.search(line)
        if match and cancelled is None and "rule train" in "".join(output[-30:]):
            cancelled = match.group(2)
            subprocess.run(["scancel", cancelled], check=True)
    run.wait(timeout=900)
    text = "".join(output)
    assert cancelled is not None, text
    assert run.returncode != 0
    assert "Error in rule train" in text and cancelled in text
    assert slurm_state(int(cancelled)) == "CANCELLED"
    assert not (workdir / CHECKPOINT).exists()
    rerun = snakemake(workdir, *PROFILE, target)
    rerun_output = rerun.stdout + rerun.stderr
    assert "rule train" in rerun_output
    rerun_jobs = slurm_jobs(rerun_output)
    assert len(rerun_jobs) == 1 and cancelled not in map(str, rerun_jobs.values())
    assert {slurm_state(slurm_id) for slurm_id in rerun_jobs.values()} == {"COMPLETED"}
    assert (workdir / CHECKPOINT).stat().st_size > 0
    assert "Nothing to be done" in snakemake(workdir, "--dry-run", target).stdout


def test_one_figure_submits_only_what_it_needs(through_slurm, tmp_path):
    workdir = shutil.copytree(through_slurm[0], tmp_path / "copy", symlinks=True)
    # the bottom-k retraining and what was made of it are gone (Snakemake regenerates a missing
    # intermediate file only when something downstream of it has to be rebuilt); one job
    # retrains the mask pair, so the top-k model is retrained with it, to the same numbers
    (bottom,) = (workdir / "results" / "retrain").rglob("gradient/mean/bottom-k0.1")
    (top,) = (workdir / "results" / "retrain").rglob("gradient/mean/top-k0.1")
    top_metrics = {path: json.loads(path.read_text()) for path in top.rglob("metrics.json")}
    assert top_metrics
    shutil.rmtree(bottom)
    for made in ("tables/blockdigits/diffroar.parquet", "figures/methods-blockdigits.png"):
        (workdir / "results" / made).unlink()
    (workdir / "results" / "figures" / "noretrain-blockdigits.png").unlink()
    target = "figure_methods_blockdigits"
    planned = job_counts(snakemake(workdir, "--dry-run", target).stdout)
    assert planned["retrain"] == 1 and SUBMITTED_RULES & set(planned) == {"retrain"}
    result = snakemake(workdir, *PROFILE, target)
    output = result.stdout + result.stderr
    submitted = slurm_jobs(output)
    assert len(submitted) == 1
    assert {slurm_state(slurm_id) for slurm_id in submitted.values()} == {"COMPLETED"}
    assert "figure_noretrain" not in output and "figure_attributions" not in output
    assert not (workdir / "results" / "figures" / "noretrain-blockdigits.png").exists()
    assert (workdir / "results" / "figures" / "methods-blockdigits.png").stat().st_size > 10_000
    assert bottom.is_dir()
    for path, metrics in top_metrics.items():
        again = json.loads(path.read_text())
        assert again["test_accuracy"] == metrics["test_accuracy"]
        assert again["config_fingerprint"] == metrics["config_fingerprint"]


def test_stop_then_start_again(slurm):
    # last in this module: stop.sh stops every daemon, start.sh brings the node back to idle
    local = REPO / "profiles" / "slurm" / "local"
    subprocess.run(["bash", str(local / "stop.sh")], check=True, timeout=120)
    running = subprocess.run(["pgrep", "-x", "slurmctld|slurmd|munged"], capture_output=True)
    assert running.stdout == b""
    subprocess.run(["bash", str(local / "stop.sh")], check=True, timeout=120)  # idempotent
    started = subprocess.run(
        ["bash", str(local / "start.sh")], capture_output=True, text=True, timeout=300
    )
    assert started.returncode == 0, started.stderr
    assert "is idle" in started.stderr
    state = subprocess.run(["sinfo", "--noheader", "--format=%T"], capture_output=True, text=True)
    assert state.stdout.split() == ["idle"]
