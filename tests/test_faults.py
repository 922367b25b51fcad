"""Faults: crashes while writing, corrupted inputs, diverging training, a killed job, two runs
on one directory.

Unit tests inject each fault into the function that writes or reads the artifact; the workflow
tests (marked `workflow`) inject them into Snakemake runs of a small cut of the tiny config
(tests/small_runs.py).
"""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import matplotlib.figure
import numpy as np
import pandas as pd
import pytest
import safetensors.torch
import torch
import zarr
from diffroar.data import prepare, read_images
from diffroar.figures import _save
from diffroar.mask import run_mask
from diffroar.models import build_model, load_checkpoint, save_checkpoint, tensor_digest
from diffroar.runtime import atomic_output, read_json, write_json, write_parquet
from diffroar.store import StoreError, new_store, open_store, read_split, write_array
from diffroar.train import train
from small_runs import (
    CHECKPOINT,
    MODEL_DIR,
    SALIENCY,
    SALIENCY_LOG,
    TRAIN_LOG,
    assert_same_checkpoints,
    clean_run,
    copy_run,
    job_processes,
    killed_run,
    leftovers,
    read_tables,
    run_tables,
    small_workflow,
    start_snakemake,
    stop_group,
    wait_for,
)
from workflow_helpers import REPO, set_config, snakemake

torch.set_num_threads(1)

SPEC = {
    "architecture": "mlp",
    "hidden_sizes": [8],
    "input_shape": [1, 2, 3],
    "num_classes": 2,
    "channel_mean": [0.5],
    "channel_std": [0.3],
}
BLOCK_CFG = {
    "loader": "blockdigits",
    "classes": [0, 1],
    "null_patch": "square_outline",
    "val_fraction": 0.15,
    "test_fraction": 0.2,
    "split_seed": 0,
}


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(SPEC)


def _temporaries(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir() if ".tmp-" in path.name)


def _half_then_fail(write, path_argument: int = 0):
    """A writer that writes the first half of what `write(...)` would (its positional argument
    `path_argument` is the path), then fails: a full disk, a crash in the middle."""

    def writer(*args, **kwargs):
        write(*args, **kwargs)
        path = Path(args[path_argument])
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    return writer


# --- 1. Atomic outputs ------------------------------------------------------------------------


def test_atomic_output_keeps_the_previous_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "table.txt"
    path.write_text("previous")
    with pytest.raises(RuntimeError, match="crash"):
        with atomic_output(path) as temporary:
            assert temporary.parent == path.parent and temporary.name.startswith("table.txt.tmp-")
            temporary.write_text("half of the new conte")
            raise RuntimeError("crash in the middle")
    assert path.read_text() == "previous"
    assert _temporaries(tmp_path) == []


def test_atomic_output_leaves_no_file_when_there_was_none(tmp_path):
    path = tmp_path / "sub" / "metrics.json"
    with pytest.raises(RuntimeError):
        with atomic_output(path) as temporary:
            temporary.write_text("{")
            raise RuntimeError("crash")
    assert not path.exists() and _temporaries(path.parent) == []


def test_atomic_output_replaces_on_success_and_clears_leftovers_of_killed_attempts(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    (tmp_path / "out.txt.tmp-99999").write_text("left by a killed attempt")
    with atomic_output(path) as temporary:
        temporary.write_text("new")
    assert path.read_text() == "new" and _temporaries(tmp_path) == []


def test_write_json_failing_mid_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    write_json(path, {"test_accuracy": 0.5})
    monkeypatch.setattr(Path, "write_text", _half_then_fail(Path.write_text))
    with pytest.raises(OSError, match="No space left"):
        write_json(path, {"test_accuracy": 0.9, "history": list(range(100))})
    monkeypatch.undo()
    assert read_json(path) == {"test_accuracy": 0.5}
    assert _temporaries(tmp_path) == []


def test_write_json_of_an_unserialisable_payload_writes_nothing(tmp_path):
    with pytest.raises(TypeError):
        write_json(tmp_path / "metrics.json", {"model": object()})
    assert list(tmp_path.iterdir()) == []


def test_save_checkpoint_failing_mid_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    previous = _model(0)
    save_checkpoint(path, previous, SPEC, {"seed": 0})
    monkeypatch.setattr(
        "diffroar.models.save_file", _half_then_fail(safetensors.torch.save_file, 1)
    )
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, _model(1), SPEC, {"seed": 1})
    monkeypatch.undo()
    loaded, metadata = load_checkpoint(path)
    assert metadata["seed"] == 0
    for name, tensor in previous.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    assert _temporaries(tmp_path) == []


def _store(path: Path, version: int, groups=("train", "old")) -> None:
    with new_store(path, {"version": version}) as root:
        for group in groups:
            write_array(root.create_group(group), "values", np.full((5, 2), version, np.float32))


def test_new_store_failing_mid_write_keeps_the_previous_store(tmp_path):
    path = tmp_path / "saliency.zarr"
    _store(path, 1)
    with pytest.raises(RuntimeError, match="crash"):
        with new_store(path, {"version": 2}) as root:
            write_array(root.create_group("train"), "values", np.zeros((5, 2), np.float32))
            assert open_store(path).attrs["version"] == 1  # the new store is built elsewhere
            raise RuntimeError("crash in the middle")
    assert open_store(path).attrs["version"] == 1
    np.testing.assert_array_equal(read_split(path, "train")["values"], np.ones((5, 2)))
    assert _temporaries(tmp_path) == []


def test_new_store_replaces_an_existing_store_entirely(tmp_path):
    path = tmp_path / "masked.zarr"
    _store(path, 1)
    _store(path, 2, groups=("train",))
    root = open_store(path)
    assert root.attrs["version"] == 2 and "old" not in root  # nothing of the old store is left
    np.testing.assert_array_equal(read_split(path, "train")["values"], np.full((5, 2), 2))
    assert _temporaries(tmp_path) == []


def test_new_store_without_a_previous_one_leaves_nothing_on_failure(tmp_path):
    with pytest.raises(RuntimeError):
        with new_store(tmp_path / "data.zarr", {}) as root:
            write_array(root.create_group("train"), "images", np.zeros((3, 1), np.uint8))
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


def test_write_parquet_failing_mid_write_keeps_the_previous_table(tmp_path, monkeypatch):
    path = tmp_path / "metrics.parquet"
    write_parquet(pd.DataFrame({"test_accuracy": [0.5]}), path)
    monkeypatch.setattr(pd.DataFrame, "to_parquet", _half_then_fail(pd.DataFrame.to_parquet, 1))
    with pytest.raises(OSError, match="No space left"):
        write_parquet(pd.DataFrame({"test_accuracy": np.linspace(0, 1, 1000)}), path)
    monkeypatch.undo()
    assert pd.read_parquet(path)["test_accuracy"].tolist() == [0.5]
    assert _temporaries(tmp_path) == []


def test_figure_failing_mid_write_keeps_the_previous_figure(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    path = tmp_path / "methods-digits.png"
    _save(plt.figure(), str(path))
    previous = path.read_bytes()
    assert previous.startswith(b"\x89PNG")
    monkeypatch.setattr(
        matplotlib.figure.Figure, "savefig", _half_then_fail(matplotlib.figure.Figure.savefig, 1)
    )
    with pytest.raises(OSError, match="No space left"):
        figure = plt.figure()
        figure.gca().plot([0, 1], [1, 0])
        _save(figure, str(path))
    assert path.read_bytes() == previous
    assert _temporaries(tmp_path) == []


KILLED_WRITER = """
import os, signal, sys
import numpy as np
from diffroar.store import new_store, write_array
with new_store(sys.argv[1], {"version": 2}) as root:
    write_array(root.create_group("train"), "values", np.zeros((5, 2), np.float32))
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_writer_killed_with_sigkill_leaves_the_previous_store_and_its_leftover_is_cleared(
    tmp_path,
):
    path = tmp_path / "saliency.zarr"
    _store(path, 1)
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(path)], cwd=tmp_path)
    assert killed.returncode == -signal.SIGKILL
    assert open_store(path).attrs["version"] == 1  # the final path never held the half store
    assert len(_temporaries(tmp_path)) == 1  # what the killed process was writing
    _store(path, 3)  # the rerun
    assert open_store(path).attrs["version"] == 3 and _temporaries(tmp_path) == []


WRITERS = {
    "to_parquet", "to_csv", "savefig", "write_text", "write_bytes", "save_file", "save", "savez",
    "tofile", "dump", "create_store",
}  # fmt: skip


def test_stages_write_outputs_only_through_atomic_output():
    """Every call that writes a file in the package and the rule scripts writes to the
    `temporary` path of `atomic_output` (zarr stores are created only by `create_store`, which
    stages call through `new_store`; a user's precomputed store is opened read-only)."""
    offenders = []
    sources = [
        *(REPO / "workflow" / "diffroar").glob("*.py"),
        *(REPO / "workflow" / "scripts").glob("*.py"),
    ]
    for source in sources:
        for node in ast.walk(ast.parse(source.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "attr", getattr(node.func, "id", None))
            if name == "open_group" and source.name == "store.py":
                continue  # inside create_store
            if name == "open" and source.name == "client.py" and _mode(node) == "ab":
                continue  # the warm worker's own log, in the temp dir, never under results/
            if name == "open" and source.name == "worker.py" and _names(node, "autogroup"):
                continue  # the kernel's setting of the server's priority (keep_niceness)
            receiver = [node.func.value] if isinstance(node.func, ast.Attribute) else []
            writes_temporary = any(_is_temporary(value) for value in [*receiver, *node.args])
            if name in WRITERS and not writes_temporary:
                offenders.append(f"{source.name}:{node.lineno} {name}")
            if (name == "open_group" and _mode(node) != "r") or (
                name == "open" and _mode(node) not in (None, "r", "rb")
            ):  # zarr's open_group and open write unless their mode reads
                offenders.append(f"{source.name}:{node.lineno} {name}")
    assert offenders == []


def _names(call: ast.Call, name: str) -> bool:
    """Whether the call's first argument is the variable `name`."""
    return bool(call.args) and isinstance(call.args[0], ast.Name) and call.args[0].id == name


def _is_temporary(node: ast.AST) -> bool:
    """`temporary` or `str(temporary)`: the path that atomic_output yields."""
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "str" and node.args:
        node = node.args[0]
    return isinstance(node, ast.Name) and node.id == "temporary"


def _mode(call: ast.Call) -> str | None:
    for keyword in call.keywords:
        if keyword.arg == "mode" and isinstance(keyword.value, ast.Constant):
            return keyword.value.value
    if len(call.args) > 1 and isinstance(call.args[1], ast.Constant):
        return call.args[1].value
    return None


# --- 2. Corrupted inputs ----------------------------------------------------------------------


def _chunk_files(array_dir: Path) -> list[Path]:
    return sorted(path for path in (array_dir / "c").rglob("*") if path.is_file())


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garble(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 8] = bytes(255 - b for b in data[middle : middle + 8])
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """A blockdigits dataset store and a saliency store of random attributions for it."""
    root = tmp_path_factory.mktemp("stores")
    dataset = root / "blockdigits.zarr"
    prepare("blockdigits", dict(BLOCK_CFG), dataset)
    saliency = root / "gradient.zarr"
    rng = np.random.default_rng(0)
    with new_store(saliency, {"model": "tiny", "base_seed": 0, "method": "gradient"}) as group:
        for split in ("train", "val", "test"):
            shape = zarr.open_group(str(dataset), mode="r")[split]["images"].shape
            write_array(
                group.create_group(split), "attributions", rng.normal(size=shape).astype("f4")
            )
    return dataset, saliency


def _mask(dataset: Path, saliency: Path, out: Path) -> None:
    run_mask(
        str(dataset),
        str(saliency),
        {"top": str(out)},
        keep_fraction=0.1,
        imputation="mean",
        ranking="coordinate",
        tiebreak_seed=0,
    )


def _set_value(array_dir: Path, value) -> None:
    """Write `value` into the first element of the zarr array at `array_dir` (a valid chunk)."""
    array = zarr.open_array(str(array_dir), mode="r+")
    array[(0,) * array.ndim] = value


def _replace_array(group_dir: Path, name: str, values: np.ndarray) -> None:
    group = zarr.open_group(str(group_dir), mode="r+")
    del group[name]
    write_array(group, name, values)


SALIENCY_FAULTS = {
    # name: (how the store is damaged, what the message says)
    "truncated chunk": (
        lambda s: _truncate(_chunk_files(s / "test" / "attributions")[0]),
        r"cannot read samples 0:\d+ of test/attributions .*truncated or corrupted",
    ),
    "garbled chunk": (
        lambda s: _garble(_chunk_files(s / "train" / "attributions")[0]),
        r"cannot read samples 0:\d+ of train/attributions .*checksum",
    ),
    "deleted chunk": (
        lambda s: _chunk_files(s / "val" / "attributions")[0].unlink(),
        r"array val/attributions has 0 of its 1 chunks \(the store is incomplete\)",
    ),
    "NaN attributions": (
        lambda s: _set_value(s / "train" / "attributions", np.nan),
        r"train/attributions holds 1 NaN or infinite values in samples 0:\d+",
    ),
    "infinite attribution": (
        lambda s: _set_value(s / "test" / "attributions", -np.inf),
        r"test/attributions holds 1 NaN or infinite values",
    ),
    "no zarr.json": (
        lambda s: (s / "zarr.json").unlink(),
        r"is not a zarr store \(no zarr.json\)",
    ),
    "garbled zarr.json": (
        lambda s: (s / "zarr.json").write_text('{"zarr_format": 3, "node_t'),
        r"cannot open the zarr store \(JSONDecodeError",
    ),
    "missing attribute": (
        lambda s: zarr.open_group(str(s), mode="r+").attrs.__delitem__("method"),
        r"the store's attributes lack method",
    ),
    "missing array": (
        lambda s: __import__("shutil").rmtree(s / "val" / "attributions"),
        # the metadata digest (diffroar.store.METADATA_DIGEST) misses the array's zarr.json
        r"no readable array val/attributions|do not match the metadata_sha256",
    ),
}


@pytest.mark.parametrize("fault", list(SALIENCY_FAULTS))
def test_mask_refuses_a_damaged_saliency_store_naming_it(stores, tmp_path, fault):
    dataset, good = stores
    saliency = copy_run(good, tmp_path / "gradient.zarr")
    damage, message = SALIENCY_FAULTS[fault]
    damage(saliency)
    out = tmp_path / "top-k0.1.zarr"
    with pytest.raises(StoreError, match=message) as raised:
        _mask(dataset, saliency, out)
    assert str(saliency) in str(raised.value)
    assert not out.exists() and _temporaries(tmp_path) == []  # no half masked store


def test_an_undamaged_saliency_store_masks(stores, tmp_path):
    dataset, saliency = stores
    _mask(dataset, saliency, tmp_path / "top-k0.1.zarr")
    images, labels = read_images(tmp_path / "top-k0.1.zarr", "train")
    assert images.dtype == np.float32 and np.isfinite(images).all() and len(labels) == len(images)


@pytest.fixture(scope="module")
def masked(stores, tmp_path_factory):
    dataset, saliency = stores
    out = tmp_path_factory.mktemp("masked") / "top-k0.1.zarr"
    _mask(dataset, saliency, out)
    return out


MASKED_FAULTS = {
    "truncated chunk": (
        lambda m: _truncate(_chunk_files(m / "train" / "images")[0]),
        r"cannot read all samples of train/images .*truncated or corrupted",
    ),
    "garbled chunk": (
        lambda m: _garble(_chunk_files(m / "train" / "labels")[0]),
        r"cannot read all samples of train/labels .*checksum",
    ),
    "NaN image": (
        lambda m: _set_value(m / "train" / "images", np.nan),
        r"train/images holds 1 NaN or infinite values",
    ),
    "label out of range": (
        lambda m: _set_value(m / "train" / "labels", 7),
        r"train labels outside 0\.\.1",
    ),
    "labels of another length": (
        lambda m: _replace_array(m / "train", "labels", np.zeros(3, np.int64)),
        r"train images \(\d+, 1, 16, 8\) and labels \(3,\) do not fit|metadata_sha256",
    ),
    "missing shape attribute": (
        lambda m: zarr.open_group(str(m), mode="r+").attrs.__delitem__("shape"),
        r"the store's attributes lack shape",
    ),
}


@pytest.mark.parametrize("fault", list(MASKED_FAULTS))
def test_training_refuses_a_damaged_masked_store_naming_it(masked, tmp_path, fault):
    """read_images is how a store of images is read (train.load_tensors; a masked store asked for
    by hand)."""
    shard = copy_run(masked, tmp_path / "top-k0.1.zarr")
    damage, message = MASKED_FAULTS[fault]
    damage(shard)
    with pytest.raises(StoreError, match=message) as raised:
        read_images(shard, "train")
    assert str(shard) in str(raised.value)


def _checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, _model(), SPEC, {"seed": 0, "config_fingerprint": "0123456789abcdef"})
    return path


class _Payload:
    """Unpickling this creates a file: proof that a pickle was loaded."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path(self.marker).touch, ())


CHECKPOINT_FAULTS = {
    "truncated": (
        _truncate,
        r"(?s)cannot read checkpoint .* \(missing, truncated or not a safetensors",
    ),
    "garbled weights": (
        lambda p: p.write_bytes(p.read_bytes()[:-8] + bytes(8)),
        r"checkpoint .* is corrupted: its tensors do not match the sha256",
    ),
    "empty": (lambda p: p.write_bytes(b""), r"cannot read checkpoint"),
    "a torch pickle": (
        lambda p: torch.save({"weights": _Payload(str(p.parent / "unpickled"))}, p),
        r"(?s)cannot read checkpoint .*not a safetensors file",
    ),
    "no checksum": (
        lambda p: safetensors.torch.save_file(
            _model().state_dict(), str(p), metadata={"spec": json.dumps(SPEC)}
        ),
        r"has no tensor_sha256 in its metadata: not written by diffroar's save_checkpoint",
    ),
    "NaN weights": (
        lambda p: _save_raw(p, {k: v * np.nan for k, v in _model().state_dict().items()}),
        r"has NaN or infinite weights in network.1.bias, network.1.weight",
    ),
}


def _save_raw(path: Path, tensors: dict) -> None:
    tensors = {name: tensor.contiguous() for name, tensor in tensors.items()}
    metadata = {"spec": json.dumps(SPEC), "tensor_sha256": json.dumps(tensor_digest(tensors))}
    safetensors.torch.save_file(tensors, str(path), metadata=metadata)


@pytest.mark.parametrize("fault", list(CHECKPOINT_FAULTS))
def test_a_damaged_checkpoint_is_refused_naming_it(tmp_path, fault):
    path = _checkpoint(tmp_path)
    damage, message = CHECKPOINT_FAULTS[fault]
    damage(path)
    with pytest.raises(ValueError, match=message) as raised:
        load_checkpoint(path)
    assert str(path) in str(raised.value)
    assert not (tmp_path / "unpickled").exists()  # the pickle was never unpickled


def test_save_checkpoint_refuses_non_finite_weights(tmp_path):
    model = _model()
    with torch.no_grad():
        model.network[-1].weight[0, 0] = float("nan")
    path = tmp_path / "model.safetensors"
    with pytest.raises(FloatingPointError, match=r"NaN or infinite weights in network.\d.weight"):
        save_checkpoint(path, model, SPEC, {"seed": 0})
    assert list(tmp_path.iterdir()) == []


# --- 3. Diverging training --------------------------------------------------------------------


def test_divergence_names_the_epoch_and_the_loss():
    torch.manual_seed(0)
    images = torch.rand(64, 1, 2, 3)
    labels = (images[:, 0, 0, 0] > images[:, 0, 0, 1]).long()
    with pytest.raises(FloatingPointError, match=r"training diverged at epoch 1: mean loss nan"):
        train(
            build_model(SPEC),
            (images, labels),
            {},
            epochs=3,
            batch_size=16,
            learning_rate=1e30,
            weight_decay=0.0,
            seed=0,
        )


# --- workflow faults --------------------------------------------------------------------------


@pytest.mark.workflow
def test_a_truncated_checkpoint_fails_the_saliency_job_naming_it(tmp_path_factory, tmp_path):
    workdir = copy_run(clean_run(tmp_path_factory), tmp_path / "run")
    _truncate(workdir / CHECKPOINT)
    result = snakemake(workdir, "--cores", "1", str(SALIENCY), check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Error in rule saliency" in output
    message = f"cannot read checkpoint {CHECKPOINT}: "
    assert message in output and message in (workdir / SALIENCY_LOG).read_text()
    assert "truncated" in output
    assert not (workdir / SALIENCY).exists() and leftovers(workdir / "results") == []


@pytest.mark.workflow
def test_diverging_training_fails_loudly_and_writes_no_metrics(tmp_path):
    # The config check refuses learning rates that would blow up (> 1), so the loss of this
    # copy's training code is made NaN, as a diverging optimisation makes it
    workdir = small_workflow(tmp_path / "run")
    code = workdir / "workflow" / "diffroar" / "train.py"
    line = "                loss = F.cross_entropy(logits.float(), target)\n"
    assert line in code.read_text()
    code.write_text(code.read_text().replace(line, line.replace(")\n", ') * float("nan")\n')))
    result = run_tables(workdir, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Error in rule train" in output
    line = "CRITICAL job failed: FloatingPointError: training diverged at epoch 1: mean loss nan"
    assert line in (workdir / TRAIN_LOG).read_text() and line in output
    assert not (workdir / MODEL_DIR / "metrics.json").exists()
    assert not (workdir / CHECKPOINT).exists()
    assert not list((workdir / "results").rglob("metrics.parquet"))
    assert not (workdir / "results" / "retrain").exists()
    assert leftovers(workdir / "results") == []


@pytest.mark.workflow
def test_a_killed_training_job_reruns_to_bit_identical_results(tmp_path_factory):
    clean, killed = clean_run(tmp_path_factory), killed_run(tmp_path_factory)
    workdir, output = killed.workdir, killed.first.stdout
    assert killed.first.returncode != 0
    assert "Error in rule train" in output
    assert not killed.checkpoint_after_kill

    rerun = killed.rerun
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "rule train" in rerun.stdout + rerun.stderr
    assert leftovers(workdir / "results") == []
    expected, found = read_tables(clean), read_tables(workdir)
    assert list(found) == list(expected)
    for name, table in expected.items():
        pd.testing.assert_frame_equal(found[name], table, check_exact=True, obj=name)
    assert_same_checkpoints(clean, workdir)


@pytest.mark.workflow
def test_a_second_snakemake_on_the_same_directory_is_refused(tmp_path_factory, tmp_path):
    workdir = copy_run(clean_run(tmp_path_factory), tmp_path / "run")
    # the most epochs allowed, one image per step: the first run keeps training for minutes
    set_config(workdir, training={"epochs": 1000, "batch_size": 1})
    first = start_snakemake(workdir, "--cores", "1", str(CHECKPOINT))
    try:
        wait_for(
            lambda: job_processes(workdir, "train.py"), timeout=120, what="the first run's job"
        )
        second = snakemake(workdir, "--cores", "1", str(CHECKPOINT), check=False)
        assert first.poll() is None  # still running: the second run did not disturb it
    finally:
        stop_group(first)
        for pid in job_processes(workdir, "train.py"):  # the job, if it escaped the group
            os.kill(pid, signal.SIGKILL)
    output = second.stdout + second.stderr
    assert second.returncode != 0
    assert "LockException" in output or "Directory cannot be locked" in output
    assert "rule train" not in output  # it ran nothing
