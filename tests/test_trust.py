"""Reproducibility and trust: the same config and seeds give bit-identical results, checkpoints
are tied to the config they were trained under, no pickle from results is ever loaded, and every
table row says which config and package version produced it.

The workflow tests (marked `workflow`) use the small cut of the tiny config of
tests/small_runs.py and share its clean run with tests/test_faults.py.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from diffroar.data import prepare, read_attributes
from diffroar.metrics import provenance
from diffroar.models import build_model, load_checkpoint, model_spec, save_checkpoint
from diffroar.noretrain import run_noretrain
from diffroar.provenance import config_fingerprint
from diffroar.runtime import package_version
from diffroar.saliency import run_saliency
from diffroar.store import open_store
from diffroar.train import train
from safetensors import safe_open
from small_runs import (
    CHECKPOINT,
    SALIENCY,
    SALIENCY_LOG,
    assert_same_checkpoints,
    clean_run,
    copy_run,
    killed_run,
    read_tables,
)
from workflow_helpers import REPO, set_config, snakemake

torch.set_num_threads(1)

MODEL_CFG = {"architecture": "mlp", "hidden_sizes": [8], "training": {"mode": "standard"}}
BLOCK_CFG = {
    "loader": "blockdigits",
    "classes": [0, 1],
    "null_patch": "square_outline",
    "val_fraction": 0.15,
    "test_fraction": 0.2,
    "split_seed": 0,
}
FINGERPRINT, OTHER = "0123456789abcdef", "fedcba9876543210"
HEX16 = re.compile(r"[0-9a-f]{16}")


# --- 6. Reproducibility at the level of train() -----------------------------------------------


def _trained(seed: int) -> torch.nn.Module:
    """An MLP initialised and trained (shuffling) with `seed` on a fixed toy problem."""
    generator = torch.Generator().manual_seed(100)
    images = torch.rand(96, 1, 2, 3, generator=generator)
    labels = (images[:, 0, 0, 0] > images[:, 0, 0, 1]).long()
    spec = model_spec(
        MODEL_CFG,
        {"shape": [1, 2, 3], "num_classes": 2, "channel_mean": [0.5], "channel_std": [0.3]},
    )
    torch.manual_seed(seed)
    model = build_model(spec)
    train(
        model,
        (images, labels),
        {},
        epochs=3,
        batch_size=16,
        learning_rate=0.01,
        weight_decay=0.0,
        seed=seed,
    )
    return model


def test_the_same_seed_gives_a_bit_identical_model_and_another_seed_a_different_one():
    first, again, other = _trained(0), _trained(0), _trained(1)
    for name, tensor in first.state_dict().items():
        assert torch.equal(again.state_dict()[name].view(torch.uint8), tensor.view(torch.uint8))
    assert not any(
        torch.equal(other.state_dict()[name], tensor)
        for name, tensor in first.state_dict().items()
        if name.startswith("network")
    )


# --- 7. Checkpoints are tied to their config; no pickle is loaded from results ------------------


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A dataset store and a checkpoint of an (untrained) model for it, trained under
    FINGERPRINT."""
    root = tmp_path_factory.mktemp("base")
    dataset = root / "blockdigits.zarr"
    prepare("blockdigits", dict(BLOCK_CFG), dataset)
    torch.manual_seed(0)
    spec = model_spec(MODEL_CFG, read_attributes(dataset))
    checkpoint = root / "model.safetensors"
    info = {"dataset": "blockdigits", "model": "tiny", "seed": 0}
    save_checkpoint(checkpoint, build_model(spec), spec, info | {"config_fingerprint": FINGERPRINT})
    return dataset, checkpoint


def test_a_checkpoint_of_another_config_is_refused_with_both_fingerprints(base):
    _, checkpoint = base
    with pytest.raises(ValueError) as raised:
        load_checkpoint(checkpoint, expected_fingerprint=OTHER)
    message = str(raised.value)
    assert str(checkpoint) in message
    assert f"trained under config fingerprint {FINGERPRINT}" in message
    assert f"this job's config gives {OTHER}" in message
    assert "Rerun its train rule" in message and "delete the checkpoint" in message
    _, metadata = load_checkpoint(checkpoint, expected_fingerprint=FINGERPRINT)
    assert metadata["config_fingerprint"] == FINGERPRINT


def test_saliency_refuses_a_checkpoint_of_another_config_and_writes_nothing(base, tmp_path):
    dataset, checkpoint = base
    out = tmp_path / "gradient.zarr"
    with pytest.raises(ValueError, match=f"trained under config fingerprint {FINGERPRINT}"):
        run_saliency(
            str(dataset),
            str(checkpoint),
            str(out),
            method="gradient",
            settings={},
            expected_fingerprint=OTHER,
        )
    assert list(tmp_path.iterdir()) == []
    run_saliency(
        str(dataset),
        str(checkpoint),
        str(out),
        method="gradient",
        settings={},
        expected_fingerprint=FINGERPRINT,
    )
    assert open_store(out).attrs["checkpoint_fingerprint"] == FINGERPRINT


def test_noretrain_refuses_a_checkpoint_of_another_config_and_writes_nothing(base, tmp_path):
    dataset, checkpoint = base
    saliency, out = tmp_path / "s.zarr", tmp_path / "n.parquet"
    run_saliency(str(dataset), str(checkpoint), str(saliency), method="random", settings={})
    arguments = (str(dataset), str(checkpoint), [str(saliency)], str(out))
    settings = dict(
        imputations=["mean"],
        keep_fractions=[0.1],
        masking_cfg={"ranking": "coordinate", "tiebreak_seed": 0},
        model_cfg=MODEL_CFG,
    )
    with pytest.raises(ValueError, match=f"this job's config gives {OTHER}"):
        run_noretrain(*arguments, config_fingerprint=OTHER, **settings)
    assert not out.exists()
    run_noretrain(*arguments, config_fingerprint=FINGERPRINT, **settings)
    table = pd.read_parquet(out)
    assert (table["config_fingerprint"] == FINGERPRINT).all()
    assert table["order"].tolist() == ["top", "bottom"] and set(table["method"]) == {"random"}


# Calls that can unpickle: pickle.load(s), torch.load, numpy.load (allow_pickle), pandas
# read_pickle, joblib/dill load, shelve.
UNPICKLERS = {"load", "loads", "read_pickle", "Unpickler", "open"}
PICKLE_MODULES = {"pickle", "torch", "np", "numpy", "pd", "pandas", "joblib", "dill", "shelve"}


def _safe(call: ast.Call) -> bool:
    """A load that cannot run pickled code: torch.load(..., weights_only=True) (a restricted
    unpickler of tensors and containers) or np.load(..., allow_pickle=False)."""
    keywords = {k.arg: k.value for k in call.keywords}
    for name, safe in (("weights_only", True), ("allow_pickle", False)):
        value = keywords.get(name)
        if isinstance(value, ast.Constant) and value.value is safe:
            return True
    return False


def _unpickling_calls(source: Path) -> list[tuple[str, str]]:
    """(innermost function, call) for every call of PICKLE_MODULES.UNPICKLERS in `source` that
    may unpickle (not the `_safe` forms)."""
    found = set()

    def visit(node: ast.AST, function: str) -> None:
        if isinstance(node, ast.FunctionDef):
            function = node.name
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in UNPICKLERS
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id in PICKLE_MODULES
            and not _safe(node)
        ):
            found.add((function, f"{node.func.value.id}.{node.func.attr}"))
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(ast.parse(source.read_text()), "<module>")
    return sorted(found)


def test_no_pickle_is_loaded_from_results():
    """The only unpickling in the package and the rule scripts is of CIFAR-10's own python
    batches (the dataset as distributed: an input the user provides, not a result). Checkpoints
    are safetensors (tests/test_faults.py: a torch pickle in their place is refused unread),
    stores zarr, tables parquet and JSON; an imported state dict is read with weights_only and
    precomputed .npy attributions without pickles."""
    calls = {}
    sources = [
        *(REPO / "workflow" / "diffroar").glob("*.py"),
        *(REPO / "workflow" / "scripts").glob("*.py"),
    ]
    for source in sources:
        for function, call in _unpickling_calls(source):
            calls.setdefault(f"{source.name}:{function}", set()).add(call)
    assert calls == {"data.py:unpickle": {"pickle.load"}}
    models = (REPO / "workflow" / "diffroar" / "models.py").read_text()
    assert "from safetensors.torch import load_file, safe_open, save_file" in models


def test_the_unpickling_scan_finds_every_form(tmp_path):
    source = tmp_path / "module.py"
    source.write_text(
        "import pickle, torch, numpy as np, pandas as pd\n"
        "def read(path):\n"
        "    a = pickle.load(open(path, 'rb'))\n"
        "    b = torch.load(path)\n"
        "    c = np.load(path, allow_pickle=True)\n"
        "    d = torch.load(path, weights_only=True), np.load(path, allow_pickle=False)\n"
        "    return pd.read_pickle(path), pickle.loads(b'')\n"
    )  # d: the safe forms, not listed
    assert _unpickling_calls(source) == [
        ("read", "np.load"),
        ("read", "pd.read_pickle"),
        ("read", "pickle.load"),
        ("read", "pickle.loads"),
        ("read", "torch.load"),
    ]


def test_diffroar_rows_trace_the_runs_they_aggregate():
    runs = pd.DataFrame(
        [
            {"config_fingerprint": "b", "package_version": "0.1.0"},
            {"config_fingerprint": "a", "package_version": "0.1.0"},
        ]
    )
    assert provenance(runs) == {
        "config_fingerprint": config_fingerprint("a", "b"),
        "package_version": "0.1.0",
    }


# --- workflow: reproducibility, fingerprints, provenance columns ------------------------------


@pytest.mark.workflow
def test_two_clean_runs_give_bit_identical_results(tmp_path_factory):
    # the second run is independent of the first (its own copy, from an empty tree); its train
    # job was killed once and rerun from scratch (tests/small_runs.py `killed_run`)
    first, killed = clean_run(tmp_path_factory), killed_run(tmp_path_factory)
    assert killed.rerun.returncode == 0, killed.rerun.stdout + killed.rerun.stderr
    second = killed.workdir
    expected, found = read_tables(first), read_tables(second)
    assert list(found) == list(expected) and "results/metrics.parquet" in found
    for name, table in expected.items():
        pd.testing.assert_frame_equal(found[name], table, check_exact=True, obj=name)
    assert_same_checkpoints(first, second)
    for checkpoint in (first / "results").rglob("*.safetensors"):  # byte for byte
        relative = checkpoint.relative_to(first)
        assert (second / relative).read_bytes() == checkpoint.read_bytes(), relative
    for metrics in (first / "results").rglob("metrics.json"):
        relative = metrics.relative_to(first)
        drop = ("wall_seconds", "sha256")  # the checksum covers wall_seconds
        old = {k: v for k, v in json.loads(metrics.read_text()).items() if k not in drop}
        new = {
            k: v for k, v in json.loads((second / relative).read_text()).items() if k not in drop
        }
        assert new == old, relative


@pytest.mark.workflow
def test_the_saliency_job_refuses_a_checkpoint_of_another_config(tmp_path_factory, tmp_path):
    """The checkpoint is kept although the training config changed (`--rerun-triggers mtime`
    does not look at params): the saliency job notices and stops."""
    workdir = copy_run(clean_run(tmp_path_factory), tmp_path / "run")
    with safe_open(str(workdir / CHECKPOINT), "pt") as handle:
        trained_under = json.loads(handle.metadata()["config_fingerprint"])
    set_config(workdir, training={"epochs": 4})
    shutil.rmtree(workdir / SALIENCY)
    result = snakemake(
        workdir, "--cores", "1", str(SALIENCY), "--rerun-triggers", "mtime", check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "Error in rule saliency" in output
    assert "rule train" not in output  # the stale checkpoint was not retrained
    # the identity the saliency rule expects of its checkpoint names the file and both values
    message = f"{CHECKPOINT} records config_fingerprint = '{trained_under}', but its path and "
    assert message in output and message in (workdir / SALIENCY_LOG).read_text()
    assert "expect config_fingerprint = '" in output and "rerun the rule that writes it" in output
    assert not (workdir / SALIENCY).exists()


@pytest.mark.workflow
def test_every_table_row_carries_its_config_fingerprint_and_package_version(tmp_path_factory):
    """Every table row names the config fingerprint and package version that made it; the run
    table's rows and the DiffROAR rows also the precision their runs trained in."""
    run = clean_run(tmp_path_factory)
    results = run / "results"
    tables = sorted(results.rglob("*.parquet"))
    names = {str(path.relative_to(results)) for path in tables}
    assert names == {
        "metrics.parquet",
        "diffroar.parquet",
        "noretrain.parquet",
        "localization.parquet",
        "tables/blockdigits/metrics.parquet",
        "tables/blockdigits/diffroar.parquet",
        "tables/blockdigits/localization.parquet",
        "noretrain/blockdigits/tiny_standard/seed0.parquet",
    }
    for path in tables:
        table = pd.read_parquet(path)
        assert len(table) > 0, path
        for column in ("config_fingerprint", "package_version"):
            assert column in table.columns, (path, column)
            assert table[column].notna().all(), (path, column)
        assert table["config_fingerprint"].map(lambda v: bool(HEX16.fullmatch(v))).all(), path
        assert (table["package_version"] == package_version()).all(), path

    runs = pd.read_parquet(results / "metrics.parquet")
    for row in runs.itertuples():
        run_dir = (
            f"retrain/{row.dataset}/{row.model}/seed{row.base_seed}/{row.method}/"
            f"{row.imputation}/{row.order}-k{row.keep_fraction:g}/retrain{row.retrain_seed}"
        )
        metrics = json.loads((results / run_dir / "metrics.json").read_text())
        assert row.config_fingerprint == metrics["config_fingerprint"]
        assert row.precision == metrics["precision"] in ("float32", "bfloat16")
    diffroar = pd.read_parquet(results / "diffroar.parquet")
    assert diffroar["config_fingerprint"].tolist() == [
        config_fingerprint(*sorted(runs["config_fingerprint"]))
    ]
    assert diffroar["precision"].tolist() == [", ".join(sorted(set(runs["precision"])))]
    _, checkpoint = load_checkpoint(run / CHECKPOINT)
    noretrain = pd.read_parquet(results / "noretrain.parquet")
    assert (noretrain["config_fingerprint"] == checkpoint["config_fingerprint"]).all()
    localization = pd.read_parquet(results / "localization.parquet")
    assert localization["config_fingerprint"].nunique() == 1  # one model x method
