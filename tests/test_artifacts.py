"""Artifacts are checked, not trusted (issue 17, classes 1, 2, 6 and 7).

Every case damages or swaps one artifact of a copy of the small finished run
(tests/small_runs.py) and calls the stage that reads it, as its rule does (with the identity the
rule expects of each input): each must end in a refusal that names the file, and the content
hashes of `results/` must be the same before and after the refused call. A few Snakemake runs
prove the wiring: a swapped attribution store (the issue's swapped masked store: the retrain
jobs now mask in memory from it), `snakemake verify`, and the recovery after `kill -9` of
Snakemake itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from diffroar.checks import ArtifactError, check_table, read_table
from diffroar.compare import run_comparisons
from diffroar.figures import plot_attributions, plot_methods, plot_noretrain
from diffroar.mask import run_mask
from diffroar.metrics import collect_runs, concatenate
from diffroar.models import build_model, load_checkpoint, save_checkpoint
from diffroar.noretrain import run_noretrain
from diffroar.retrain import run_retrain
from diffroar.robust import run_robust
from diffroar.runtime import JSON_CHECKSUM, json_checksum, read_json, write_json
from diffroar.saliency import run_saliency
from diffroar.store import METADATA_DIGEST, IdentityError, StoreError, open_store
from diffroar.verify import path_identity, verify_run
from small_runs import (
    CHECKPOINT,
    SALIENCY,
    TABLES,
    clean_run,
    copy_run,
    job_processes,
    read_tables,
    run_tables,
    small_workflow,
    start_snakemake,
    stop_group,
    wait_for,
)
from workflow_helpers import REPO, snakemake, tree_digest

torch.set_num_threads(1)

DATA = Path("results/data/blockdigits.zarr")
RUN = "blockdigits/tiny_standard/seed0/gradient/mean"
TOP = Path(f"results/masked/{RUN}/top-k0.1.zarr")
BOTTOM = Path(f"results/masked/{RUN}/bottom-k0.1.zarr")
TOP_METRICS = Path(f"results/retrain/{RUN}/top-k0.1/retrain0/metrics.json")
BOTTOM_METRICS = Path(f"results/retrain/{RUN}/bottom-k0.1/retrain0/metrics.json")
NORETRAIN = Path("results/noretrain/blockdigits/tiny_standard/seed0.parquet")
DATASET_METRICS = Path("results/tables/blockdigits/metrics.parquet")
DATASET_DIFFROAR = Path("results/tables/blockdigits/diffroar.parquet")
FINAL_METRICS = Path("results/metrics.parquet")
RETRAIN_CFG = {"epochs": 1, "batch_size": 64, "learning_rate": 1e-3, "weight_decay": 0.0}
MODEL_CFG = {"architecture": "mlp", "hidden_sizes": [32]}


@pytest.fixture
def run(tmp_path_factory, tmp_path) -> Path:
    """A private copy of the small finished run (the working directory of the calls)."""
    workdir = copy_run(clean_run(tmp_path_factory), tmp_path / "run")
    previous = Path.cwd()
    os.chdir(workdir)
    yield workdir
    os.chdir(previous)


def identity(relative: Path | str, **changes) -> dict:
    """The identity the path `relative` promises (as its rule passes it), with `changes`."""
    return path_identity(str(Path(relative).relative_to("results")))[1] | changes


def refused(call, error, *patterns: str, root: Path = Path("results")) -> str:
    """Call `call()`; it must raise `error` with every regex of `patterns` in its message and
    leave every file under `root` as it was. The message."""
    before = tree_digest(root)
    with pytest.raises(error) as raised:
        call()
    message = str(raised.value)
    for pattern in patterns:
        assert re.search(pattern, message), (pattern, message)
    assert tree_digest(root) == before, "a refused call changed results/"
    return message


def _edit_json(path: Path, change) -> None:
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document, indent=2))


MASKING_CFG = {"ranking": "coordinate", "tiebreak_seed": 0}


def _retrain(
    expected: dict | None,
    out: Path = TOP_METRICS.parent,
    retraining_cfg: dict = RETRAIN_CFG,
    base_model_cfg: dict = MODEL_CFG,
):
    return lambda: run_retrain(
        str(DATA),
        str(SALIENCY),
        {"top": [(str(out / "model.safetensors"), str(out / "metrics.json"))]},
        keep_fraction=0.1,
        imputation="mean",
        masking_cfg=MASKING_CFG,
        base_model_cfg=base_model_cfg,
        model_cfg=MODEL_CFG,
        retraining_cfg=retraining_cfg,
        retrain_seeds=[0],
        config_fingerprints={"top": ["f"]},
        attribution_fingerprint="a",
        expected=expected,
    )


def _mask(expected: dict, saliency: Path = SALIENCY, out: Path = TOP, order: str = "top"):
    return lambda: run_mask(
        str(DATA),
        str(saliency),
        {order: str(out)},
        keep_fraction=0.1,
        imputation="mean",
        ranking="coordinate",
        tiebreak_seed=0,
        expected=expected,
    )


def _noretrain(expected: dict):
    return lambda: run_noretrain(
        str(DATA),
        str(CHECKPOINT),
        [str(SALIENCY)],
        str(NORETRAIN),
        imputations=["mean"],
        keep_fractions=[0.1],
        masking_cfg=MASKING_CFG,
        model_cfg=MODEL_CFG,
        config_fingerprint=None,
        expected=expected,
    )


def _saliency(expected: dict):
    return lambda: run_saliency(
        str(DATA), str(CHECKPOINT), str(SALIENCY), method="gradient", settings={}, expected=expected
    )


def _mask_expected(**saliency_changes) -> dict:
    """What the mask and retrain rules expect of their inputs (with `saliency_changes`)."""
    dataset = open_store(DATA).attrs.asdict()
    return {
        str(DATA): {"dataset": "blockdigits", "config": dataset["config"]},
        str(SALIENCY): identity(SALIENCY, **saliency_changes),
    }


def _swap_in_random_attributions(destination: Path = SALIENCY) -> None:
    """Attributions of method `random` for the same base model put where the gradient store
    is, with the gradient store's mtimes (Snakemake sees nothing new)."""
    other = Path("results/other/random.zarr")
    run_saliency(str(DATA), str(CHECKPOINT), str(other), method="random", settings={"seed": 0})
    stamp = destination.stat()
    shutil.rmtree(destination)
    shutil.copytree(other, destination)
    shutil.rmtree(other.parent)
    for path in [destination, *destination.rglob("*")]:
        os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))


# --- class 1: an artifact is what its path says -----------------------------------------------


@pytest.mark.workflow
def test_a_retrained_model_records_the_precision_it_was_trained_in(run, tmp_path):
    standard = MODEL_CFG | {"training": {"mode": "standard"}}
    # auto is float32 on a CPU
    for precision, resolved in (
        ("auto", "float32"),
        ("float32", "float32"),
        ("bfloat16", "bfloat16"),
    ):
        out = tmp_path / precision
        _retrain(_mask_expected(), out, RETRAIN_CFG | {"precision": precision}, standard)()
        metrics = json.loads((out / "metrics.json").read_text())
        _, metadata = load_checkpoint(out / "model.safetensors")
        assert metrics["precision"] == metadata["precision"] == resolved
        assert metrics["config"]["retraining"]["precision"] == precision


@pytest.mark.workflow
def test_attributions_of_another_method_over_this_one_are_refused_by_retrain_and_noretrain(run):
    """The issue's example, a masked store of another k copied over, has become attributions of
    another method copied over: the retrain and noretrain jobs mask from them in memory."""
    _swap_in_random_attributions()
    for call in (
        _retrain(_mask_expected()),
        _noretrain(_mask_expected() | {str(CHECKPOINT): None}),
    ):
        refused(
            call, IdentityError, str(SALIENCY), "method = 'random'", "expect method = 'gradient'"
        )


@pytest.mark.workflow
def test_a_saliency_store_of_another_base_seed_is_refused_by_retrain_and_noretrain(run):
    expected = _mask_expected(base_seed=1)
    refused(_retrain(expected), IdentityError, str(SALIENCY), "base_seed = 0")
    refused(_noretrain(expected | {str(CHECKPOINT): None}), IdentityError, str(SALIENCY),
            "base_seed = 0")  # fmt: skip


@pytest.mark.workflow
def test_a_saliency_store_of_another_method_is_refused_by_mask(run):
    refused(_mask(_mask_expected(method="random")), IdentityError, str(SALIENCY), "'gradient'")


@pytest.mark.workflow
def test_a_saliency_store_of_another_base_seed_is_refused_by_mask(run):
    refused(_mask(_mask_expected(base_seed=1)), IdentityError, str(SALIENCY), "base_seed = 0")


@pytest.mark.workflow
def test_a_dataset_store_of_another_dataset_config_is_refused(run):
    expected = _mask_expected()
    expected[str(DATA)]["config"] = expected[str(DATA)]["config"] | {"split_seed": 7}
    refused(_mask(expected), IdentityError, str(DATA), "config")


@pytest.mark.workflow
def test_a_checkpoint_of_another_seed_is_refused_by_saliency(run):
    expected = {
        str(DATA): None,
        str(CHECKPOINT): {"dataset": "blockdigits", "model": "tiny_standard", "seed": 1},
    }
    refused(
        _saliency(expected),
        IdentityError,
        str(CHECKPOINT),
        "seed = 0",
        "seed = 1",
    )


@pytest.mark.workflow
def test_a_saliency_store_of_another_method_is_refused_by_the_gallery(run):
    expected = {str(DATA): None, str(SALIENCY): identity(SALIENCY, method="random")}
    refused(
        lambda: plot_attributions(
            str(DATA), [str(SALIENCY)], "results/figures/gallery.png", 2, expected=expected
        ),
        IdentityError,
        str(SALIENCY),
        "'gradient'",
        "'random'",
    )


@pytest.mark.workflow
def test_a_checkpoint_of_another_seed_is_refused_by_the_robust_accuracy(run):
    expected = {
        str(DATA): None,
        str(CHECKPOINT): {"dataset": "blockdigits", "model": "tiny_standard", "seed": 1},
    }
    pgd = {"training": {"mode": "pgd", "norm": "l2", "eps": 0.5, "steps": 2}}
    refused(
        lambda: run_robust(
            str(DATA),
            str(CHECKPOINT),
            "results/robust.json",
            model_cfg=MODEL_CFG | pgd,
            eval_attack={},
            expected=expected,
        ),
        IdentityError,
        str(CHECKPOINT),
        "seed = 0",
        "seed = 1",
    )


@pytest.mark.workflow
def test_a_metrics_json_of_another_run_is_refused_by_metrics(run):
    shutil.copy(BOTTOM_METRICS, TOP_METRICS)
    expected = {
        str(TOP_METRICS): identity(TOP_METRICS.parent / "model.safetensors"),
        str(BOTTOM_METRICS): identity(BOTTOM_METRICS.parent / "model.safetensors"),
    }
    refused(
        lambda: collect_runs([str(TOP_METRICS), str(BOTTOM_METRICS)], expected),
        IdentityError,
        str(TOP_METRICS),
        "order = 'bottom'",
    )


# --- class 2: metadata under a checksum, values in their ranges --------------------------------


@pytest.mark.workflow
@pytest.mark.parametrize(
    "store, document, to, reader",
    [
        (SALIENCY, "train/attributions/zarr.json", "int32", "mask"),
        (SALIENCY, "test/attributions/zarr.json", "int32", "retrain"),
        (SALIENCY, "test/attributions/zarr.json", "int32", "noretrain"),
        (DATA, "train/images/zarr.json", "int16", "retrain"),
    ],
    ids=["saliency by mask", "saliency by retrain", "saliency by noretrain", "dataset by retrain"],
)
def test_an_edited_array_dtype_is_refused_naming_the_store(run, store, document, to, reader):
    call = {
        "mask": _mask(_mask_expected()),
        "retrain": _retrain(_mask_expected()),
        "noretrain": _noretrain(_mask_expected() | {str(CHECKPOINT): None}),
    }[reader]
    _edit_json(store / document, lambda d: d.update(data_type=to))
    refused(call, StoreError, str(store), METADATA_DIGEST)


@pytest.mark.workflow
def test_an_edited_store_attribute_is_refused(run):
    _edit_json(SALIENCY / "zarr.json", lambda d: d["attributes"].update(method="random"))
    refused(_retrain(_mask_expected()), StoreError, str(SALIENCY), METADATA_DIGEST)


@pytest.mark.workflow
def test_a_store_without_its_metadata_digest_is_refused_where_an_identity_is_expected(run):
    _edit_json(SALIENCY / "zarr.json", lambda d: d["attributes"].pop(METADATA_DIGEST))
    refused(_retrain(_mask_expected()), StoreError, str(SALIENCY), "no metadata_sha256")


@pytest.mark.workflow
def test_edited_checkpoint_metadata_are_refused(run):
    """The model name in a checkpoint's metadata edited (a valid safetensors file)."""
    data = CHECKPOINT.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    header["__metadata__"]["model"] = json.dumps("tiny_l2")
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    CHECKPOINT.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + length :])
    refused(lambda: load_checkpoint(CHECKPOINT), ValueError, str(CHECKPOINT), "metadata_sha256")
    expected = {str(DATA): None, str(CHECKPOINT): {"model": "tiny_standard"}}
    refused(
        _saliency(expected),
        ValueError,
        str(CHECKPOINT),
        "metadata_sha256",
    )


def _metrics_with(path: Path, checksum: bool, **values) -> None:
    body = json.loads(path.read_text()) | values
    if checksum:
        body[JSON_CHECKSUM] = json_checksum(body)
    path.write_text(json.dumps(body))


@pytest.mark.workflow
@pytest.mark.parametrize(
    "values, checksum, message",
    [
        ({"test_accuracy": 7.5}, True, r"test_accuracy = 7\.5: must be in \[0, 1\]"),
        ({"test_accuracy": 7.5}, False, "does not match the sha256"),
        ({"epochs": 0}, True, "epochs = 0: must be a whole number >= 1"),
        ({"selected_epoch": 99}, True, "selected_epoch = 99 is after the last epoch"),
        ({"test_accuracy": float("nan")}, True, "test_accuracy = nan"),
        ({"keep_fraction": 0.0}, True, r"keep_fraction = 0\.0: must be in \(0, 1\]"),
    ],
    ids=[
        "accuracy 7.5",
        "edited, checksum stale",
        "no epoch",
        "epoch after the last",
        "nan",
        "k 0",
    ],  # fmt: skip
)
def test_a_metrics_json_out_of_range_or_edited_is_refused(run, values, checksum, message):
    _metrics_with(TOP_METRICS, checksum, **values)
    refused(lambda: collect_runs([str(TOP_METRICS), str(BOTTOM_METRICS)]), ValueError,
            str(TOP_METRICS), message)  # fmt: skip


@pytest.mark.workflow
def test_an_invalid_metrics_json_is_refused_naming_it(run):
    TOP_METRICS.write_text('{"test_accuracy": 0.5,')
    refused(lambda: collect_runs([str(TOP_METRICS)]), ValueError, str(TOP_METRICS), "not valid")


def test_write_json_records_a_checksum_and_read_json_returns_the_body(tmp_path):
    write_json(tmp_path / "a.json", {"b": 1, "a": [0.5]})
    assert json.loads((tmp_path / "a.json").read_text())[JSON_CHECKSUM]
    assert read_json(tmp_path / "a.json") == {"a": [0.5], "b": 1}
    (tmp_path / "b.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"b\.json: holds a list"):
        read_json(tmp_path / "b.json")


# --- class 6: tables' readers, verify ---------------------------------------------------------


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.workflow
def test_a_truncated_noretrain_table_is_refused_by_combine_and_the_figure(run, tmp_path):
    _truncate(NORETRAIN)
    refused(lambda: concatenate([str(NORETRAIN)], str(tmp_path / "out.parquet")), ArtifactError,
            str(NORETRAIN), "cannot read the table")  # fmt: skip
    refused(lambda: plot_noretrain(str(DATASET_DIFFROAR), [str(NORETRAIN)],
                                   str(tmp_path / "f.png"), "blockdigits", "mean"),
            ArtifactError, str(NORETRAIN))  # fmt: skip


@pytest.mark.workflow
def test_a_noretrain_table_with_an_accuracy_above_one_is_refused(run, tmp_path):
    table = pd.read_parquet(NORETRAIN)
    table.loc[0, "test_accuracy"] = 1.5
    table.to_parquet(NORETRAIN, index=False)
    refused(lambda: concatenate([str(NORETRAIN)], str(tmp_path / "out.parquet")), ArtifactError,
            str(NORETRAIN), r"row 0, column test_accuracy = 1\.5")  # fmt: skip


@pytest.mark.workflow
def test_a_truncated_dataset_table_is_refused_by_comparisons(run, tmp_path):
    _truncate(DATASET_METRICS)
    refused(lambda: run_comparisons(str(DATASET_METRICS), [0.1], str(tmp_path / "c.parquet")),
            ArtifactError, str(DATASET_METRICS))  # fmt: skip


@pytest.mark.workflow
def test_a_dataset_table_without_its_diffroar_column_is_refused_by_the_figure(run, tmp_path):
    pd.read_parquet(DATASET_DIFFROAR).drop(columns="diffroar").to_parquet(DATASET_DIFFROAR)
    refused(lambda: plot_methods(str(DATASET_DIFFROAR), str(tmp_path / "m.png"), "blockdigits",
                                 ["mean"]),
            ArtifactError, str(DATASET_DIFFROAR), "no column diffroar")  # fmt: skip


@pytest.mark.workflow
def test_a_final_table_with_a_missing_name_is_refused(run):
    table = pd.read_parquet(FINAL_METRICS)
    table["method"] = table["method"].astype(object)
    table.loc[0, "method"] = ""
    table.to_parquet(FINAL_METRICS, index=False)
    refused(lambda: read_table(FINAL_METRICS), ArtifactError, str(FINAL_METRICS),
            "must be a non-empty string")  # fmt: skip


def test_a_k_may_be_missing_only_where_a_table_has_rows_without_k():
    """Comparisons of areas over k and localization measures have no k; runs always have one."""
    rows = pd.DataFrame({"dataset": ["d", "d"], "keep_fraction": [0.1, float("nan")]})
    check_table("results/tables/d/comparisons.parquet", rows)
    check_table("results/tables/d/localization.parquet", rows)
    with pytest.raises(ArtifactError, match=r"runs\.parquet: row 1, column keep_fraction = nan"):
        check_table("results/runs.parquet", rows)


def _verify(*args: str) -> subprocess.CompletedProcess:
    environment = os.environ | {"PYTHONPATH": str(REPO / "workflow")}
    return subprocess.run([sys.executable, "-m", "diffroar.verify", *args], capture_output=True,
                          text=True, env=environment)  # fmt: skip


@pytest.mark.workflow
def test_verify_passes_a_clean_run_and_lists_each_damaged_artifact_with_the_command(run):
    # a masked store asked for by hand (no rule reads one) is checked like every artifact
    _mask(_mask_expected(), out=BOTTOM, order="bottom")()
    clean = _verify("results")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "all intact" in clean.stdout
    _truncate(FINAL_METRICS)
    _edit_json(SALIENCY / "train/attributions/zarr.json", lambda d: d.update(data_type="int32"))
    _metrics_with(TOP_METRICS, True, test_accuracy=7.5)
    chunk = next(path for path in (BOTTOM / "test/images/c").rglob("*") if path.is_file())
    chunk.write_bytes(b"\0" * chunk.stat().st_size)
    before = tree_digest(Path("results"))
    found = _verify("results")
    assert found.returncode == 1
    for path, rule in [(FINAL_METRICS, "combine_table"), (SALIENCY, "saliency"),
                       (TOP_METRICS, "retrain"), (BOTTOM, "mask")]:  # fmt: skip
        assert f"{path} (rule {rule}): damaged" in found.stdout, found.stdout
    assert "snakemake --cores all --forcerun " in found.stdout
    assert str(TOP_METRICS.parent / "model.safetensors") + " (rule" not in found.stdout
    assert tree_digest(Path("results")) == before  # verify changes nothing


def test_verify_names_the_rule_and_the_identity_of_each_path():
    assert path_identity("masked/d/m/seed3/gradient/mean/bottom-k0.25.zarr") == (
        "mask",
        {
            "dataset": "d",
            "masking.model": "m",
            "masking.base_seed": 3,
            "masking.method": "gradient",
            "masking.imputation": "mean",
            "masking.order": "bottom",
            "masking.keep_fraction": 0.25,
        },
    )
    assert path_identity("tables/d/diffroar.parquet") == ("metrics", {"dataset": "d"})
    assert path_identity("logs/train/d.log") is None


def test_verify_run_of_an_empty_directory_lists_what_is_expected(tmp_path):
    problems, checked = verify_run(tmp_path, {"results/x.parquet": ("combine_table", None)})
    assert checked == 1 and [(p.path, p.what) for p in problems] == [
        ("results/x.parquet", "missing")
    ]


# --- class 7: checkpoints byte for byte; the recovery of a killed Snakemake --------------------

SPEC = {
    "architecture": "mlp",
    "hidden_sizes": [8],
    "input_shape": [1, 2, 3],
    "num_classes": 2,
    "channel_mean": [0.5],
    "channel_std": [0.3],
}


def test_saving_the_same_model_twice_gives_identical_bytes(tmp_path):
    info = {"dataset": "d", "model": "m", "seed": 0, "config_fingerprint": "f", "z": 1, "a": 2}
    digests = set()
    for attempt in range(3):
        torch.manual_seed(0)
        path = tmp_path / f"{attempt}.safetensors"
        # metadata given in another key order each time
        order = dict(reversed(info.items())) if attempt % 2 else info
        save_checkpoint(path, build_model(SPEC), SPEC, order)
        digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
        assert load_checkpoint(path)[1]["model"] == "m"
    assert len(digests) == 1
    torch.manual_seed(1)
    save_checkpoint(tmp_path / "other.safetensors", build_model(SPEC), SPEC, info)
    assert hashlib.sha256((tmp_path / "other.safetensors").read_bytes()).hexdigest() not in digests


def test_saving_in_another_process_gives_identical_bytes(tmp_path):
    script = (
        "import sys, torch; from diffroar.models import build_model, save_checkpoint; "
        f"torch.manual_seed(0); spec = {SPEC!r}; "
        "save_checkpoint(sys.argv[1], build_model(spec), spec, "
        "{'dataset': 'd', 'model': 'm', 'seed': 0, 'b': 1, 'a': 2, 'c': 3})"
    )
    environment = os.environ | {"PYTHONPATH": str(REPO / "workflow")}
    for name in ("a", "b"):
        subprocess.run([sys.executable, "-c", script, str(tmp_path / name)], check=True,
                       env=environment)  # fmt: skip
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()


@pytest.mark.workflow
def test_after_kill_9_of_snakemake_unlock_then_rerun_incomplete_finishes_the_run(
    tmp_path_factory, tmp_path
):
    clean = clean_run(tmp_path_factory)
    workdir = small_workflow(tmp_path / "run")
    first = start_snakemake(workdir, "--cores", "2", *TABLES)
    try:
        wait_for(lambda: any(job_processes(workdir, job) for job in ("saliency.py", "retrain.py")),
                 timeout=300, what="a saliency or retrain job")  # fmt: skip
        os.kill(first.pid, signal.SIGKILL)  # Snakemake itself, not its jobs
        first.communicate(timeout=60)
        # its orphaned jobs run to their end
        wait_for(lambda: not any(job_processes(workdir, name) for name in
                                 ("train.py", "saliency.py", "retrain.py", "noretrain.py")),
                 timeout=300, what="the orphaned jobs to end")  # fmt: skip
    finally:
        if first.poll() is None:
            stop_group(first)
    assert (workdir / ".snakemake" / "locks").is_dir() and any(
        (workdir / ".snakemake" / "locks").iterdir()
    )
    alone = run_tables(workdir, "--rerun-incomplete", check=False)
    assert alone.returncode != 0
    assert "LockException" in alone.stdout + alone.stderr or "cannot be locked" in (
        alone.stdout + alone.stderr
    )
    snakemake(workdir, "--unlock", *TABLES)
    run_tables(workdir, "--rerun-incomplete")
    expected, found = read_tables(clean), read_tables(workdir)
    assert list(found) == list(expected)
    for name, table in expected.items():
        pd.testing.assert_frame_equal(found[name], table, check_exact=True, obj=name)
    for checkpoint in (clean / "results").rglob("*.safetensors"):
        relative = checkpoint.relative_to(clean)
        assert (workdir / relative).read_bytes() == checkpoint.read_bytes(), relative


@pytest.mark.workflow
def test_snakemake_verify_lists_a_deleted_intermediate_and_its_command_rebuilds_it(
    tmp_path_factory, tmp_path
):
    workdir = copy_run(clean_run(tmp_path_factory), tmp_path / "run")
    (workdir / TOP_METRICS).unlink()
    assert "Nothing to be done" in run_tables(workdir, "--dry-run").stdout  # not noticed
    found = snakemake(workdir, "--cores", "1", "verify", check=False)
    output = found.stdout + found.stderr
    assert found.returncode != 0
    assert f"{TOP_METRICS} (rule retrain): missing" in output
    assert "masked/" not in output  # masked stores are made on request only: none is missing
    command = next(line.strip() for line in output.splitlines()
                   if line.strip().startswith("snakemake --cores all --forcerun"))  # fmt: skip
    assert str(TOP_METRICS) in command.split()
    # the targets before --forcerun, which takes every path after it
    snakemake(workdir, "--cores", "2", *TABLES, "--forcerun", str(TOP_METRICS))
    assert read_json(workdir / TOP_METRICS)["order"] == "top"
    expected = read_tables(clean_run(tmp_path_factory))
    found_tables = read_tables(workdir)
    for name, table in expected.items():
        pd.testing.assert_frame_equal(found_tables[name], table, check_exact=True, obj=name)


@pytest.mark.workflow
def test_swapped_attributions_fail_their_retrain_job_and_publish_nothing(
    tmp_path_factory, tmp_path
):
    workdir = copy_run(clean_run(tmp_path_factory), tmp_path / "run")
    tables = {path: (workdir / path).read_bytes() for path in TABLES}
    previous = Path.cwd()
    os.chdir(workdir)
    try:
        _swap_in_random_attributions()  # with the mtimes of the store it replaces
    finally:
        os.chdir(previous)
    assert "Nothing to be done" in run_tables(workdir, "--dry-run").stdout
    # the targets before --forcerun, which takes every path after it
    result = snakemake(
        workdir, "--cores", "2", *TABLES, "--forcerun", str(TOP_METRICS), check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Error in rule retrain" in output, output
    # one retrain job serves the pair (top-k and bottom-k of k = 0.1): its log is per k
    job = Path("results/logs/retrain", RUN, "k0.1")
    log = next((workdir / job).glob("*.log")).read_text()
    assert str(SALIENCY) in log and "method = 'random'" in log and "'gradient'" in log
    for path, content in tables.items():
        assert (workdir / path).read_bytes() == content, path


def test_the_empty_comparisons_of_a_one_method_run_pass_verify(tmp_path):
    """One method: no pair to compare. The table is empty, with its columns, and verify takes it
    as the comparisons of its dataset (it was reported damaged: no row of that dataset)."""
    from diffroar.compare import COLUMNS, comparisons_table
    from diffroar.verify import check_artifact

    runs = pd.DataFrame(
        [
            {"dataset": "d", "model": "m", "architecture": "mlp", "training_mode": "standard",
             "ranking": "coordinate", "retrain_architecture": "mlp", "imputation": "mean",
             "method": "gradient", "keep_fraction": 0.1, "base_seed": seed, "retrain_seed": 0,
             "order": order,
             "test_accuracy": 0.5 + 0.1 * (order == "top"), "attribution_fingerprint": "a"}
            for seed in (0, 1) for order in ("top", "bottom")
        ]
    )  # fmt: skip
    table = comparisons_table(runs, [0.1])
    assert table.empty and list(table.columns) == COLUMNS
    path = tmp_path / "tables" / "d" / "comparisons.parquet"
    path.parent.mkdir(parents=True)
    table.to_parquet(path)
    check_artifact(path, {"dataset": "d"})  # no error
    other = pd.concat([runs, runs.assign(method="random", test_accuracy=0.5)])
    comparisons_table(other.assign(dataset="e"), [0.1]).to_parquet(path)
    with pytest.raises(Exception, match="holds rows of dataset"):
        check_artifact(path, {"dataset": "d"})
