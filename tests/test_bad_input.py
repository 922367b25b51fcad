"""Bad input: a bad config stops with one clear `config error:` line that names the key, the bad
value and what is allowed, before any job runs, and leaves results/ exactly as it was.

Every case goes through the checks the Snakefile runs, in this process: the config merged the way
Snakemake merges it (config.yaml, then the --configfile files and --config overrides, with
Snakemake's own functions), then `validate_config` and `check_environment` (the Snakefile's
parse-time checks) and `ensure_data_files` (its `onstart` check) of the datasets whose store is not
built yet. A handful of cases, one of each kind (a YAML file, --config overrides, an onstart data
check), also go through the real command line, `snakemake --cores 1` (not a dry run), which proves
the wiring: Snakemake prints exactly the same one line, starts no job, and leaves results/ as it
was.

Every command-line case runs in its own copy of a workflow whose results/ already holds real
outputs (the tiny config's blockdigits store and its log, built once) and a file of the user's. A
case is a YAML file merged over tests/data/tiny.yaml (a second --configfile) or `--config`
overrides. Snakemake spends most of its start-up waiting, so those cases run a few at a time.
"""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from diffroar.config import ConfigError, ensure_data_files, validate_config
from diffroar.resources import check_environment
from snakemake.cli import parse_config
from snakemake.common.configfile import load_configfile
from snakemake.utils import update_config
from workflow_helpers import JOB_LINES, copy_workflow, snakemake, tree_state

pytestmark = pytest.mark.workflow

# cases that run at once (each mostly waits)
PARALLEL = 4
# the cases that also run through the snakemake command line: a YAML file at each kind of check,
# --config overrides, and the onstart data-file check
CLI_CASES = {
    "text where an integer belongs",
    "typo keep_fracions",
    "gradcam with an mlp",
    "zero epochs",
    "batch larger than the training split",
    "mnist root without files",
    "mnist root that is a file",
}
# data paths of the copies, relative to the working directory (none under results/)
EMPTY_ROOT = "data/empty-mnist"
FILE_ROOT = "data/mnist.tar.gz"
MNIST_FILES = "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte"


@dataclass(frozen=True)
class Case:
    name: str
    expected: list[str]  # substrings of the one `config error:` line
    config: dict = field(default_factory=dict)  # merged over tiny.yaml
    overrides: tuple[str, ...] = ()  # --config KEY=VALUE

    def __str__(self) -> str:
        return self.name


def mnist(**settings) -> dict:
    """A config whose experiment uses one MNIST dataset `mnist` (files under `root`)."""
    return {
        "datasets": {"mnist": {"loader": "mnist", **settings}},
        "experiment": {"datasets": ["mnist"]},
    }


CASES = [
    # wrong types
    Case(
        "text where an integer belongs",
        ["training.epochs = 'three'", "must be an integer"],
        {"training": {"epochs": "three"}},
    ),
    Case(
        "a fraction where an integer belongs",
        ["retraining.batch_size = 32.5", "must be an integer"],
        {"retraining": {"batch_size": 32.5}},
    ),
    Case(
        "a list where a mapping belongs",
        ["models = ['tiny_standard']", "must be a mapping"],
        {"models": ["tiny_standard"]},
    ),
    Case(
        "a number where a list belongs",
        ["experiment.keep_fractions = 0.1", "must be a list"],
        {"experiment": {"keep_fractions": 0.1}},
    ),
    Case(
        "text where true or false belongs",
        ["datasets.mnist.download = 'yes'", "must be true or false"],
        mnist(root=EMPTY_ROOT, download="yes"),
    ),
    Case(
        "models neither a list nor a mapping",
        ["experiment.models = 3", "must be a list or a mapping"],
        {"experiment": {"models": 3}},
    ),
    # unknown keys, with the close match suggested
    Case(
        "typo keep_fracions",
        [
            "experiment.keep_fracions = [0.1]",
            "unknown key (did you mean 'keep_fractions'?)",
            "allowed keys here: base_seeds, datasets, imputations, keep_fractions",
        ],
        {"experiment": {"keep_fracions": [0.1]}},
    ),
    Case(
        "typo of a section",
        ["trainng = {'epochs': 3}", "unknown key (did you mean 'training'?)", "retraining"],
        {"trainng": {"epochs": 3}},
    ),
    Case(
        "typo of a retraining key",
        ["retraining.epoch = 3", "unknown key (did you mean 'epochs'?)", "group_seeds, learning"],
        {"retraining": {"epoch": 3}},
    ),
    Case(
        "typo of a model option",
        [
            "models.tiny_standard.hiden_sizes = [8]",
            "(did you mean 'hidden_sizes'?)",
            "architecture, channels, checkpoint, gradcam_layer, hidden_sizes, params, training",
        ],
        {"models": {"tiny_standard": {"hiden_sizes": [8]}}},
    ),
    # unknown names
    Case(
        "unknown dataset",
        [
            "experiment.datasets[0] = 'blockdigit'",
            "not defined under `datasets`; defined: blockdigits, digits",
            "(did you mean 'blockdigits'?)",
        ],
        {"experiment": {"datasets": ["blockdigit"]}},
    ),
    Case(
        "unknown method",
        ["experiment.methods[1] = 'lime'", "must be one of 'gradient'", "'sobel'"],
        {"experiment": {"methods": ["gradient", "lime"]}},
    ),
    Case(
        "misspelt method",
        ["experiment.methods[0] = 'gradeint'", "must be one of", "(did you mean 'gradient'?)"],
        {"experiment": {"methods": ["gradeint"]}},
    ),
    Case(
        "unknown model",
        [
            "experiment.models[1] = 'tiny_linf'",
            "not defined under `models`; defined: mlp_linf, mlp_standard, tiny_l2, tiny_standard",
        ],
        {"experiment": {"models": ["tiny_standard", "tiny_linf"]}},
    ),
    Case(
        "unknown imputation",
        [
            "experiment.imputations[0] = 'blur'",
            "must be one of 'mean', 'channel_mean', 'noisy_linear'",
        ],
        {"experiment": {"imputations": ["blur"]}},
    ),
    Case(
        "unknown loader",
        [
            "datasets.blockdigits.loader = 'blockdigitz'",
            "must be one of 'digits', 'blockdigits', 'mnist'",
            "(did you mean 'blockdigits'?)",
        ],
        {"datasets": {"blockdigits": {"loader": "blockdigitz"}}},
    ),
    Case(
        "unknown architecture",
        ["models.tiny_standard.architecture = 'vgg16'", "must be one of 'mlp', 'cnn', 'resnet18'"],
        {"models": {"tiny_standard": {"architecture": "vgg16"}}},
    ),
    Case(
        "unknown retraining model",
        [
            "retraining.model = 'resnet'",
            "not defined under `models`; defined: mlp_linf, mlp_standard, tiny_l2, tiny_standard",
        ],
        {"retraining": {"model": "resnet"}},
    ),
    Case(
        "model name with a hyphen",
        ["models: the name 'tiny-cnn'", "must match", "a letter, then letters, digits or _"],
        {"models": {"tiny-cnn": {"architecture": "cnn"}}},
    ),
    # keep fractions outside (0, 1] or repeated
    Case(
        "k zero",
        ["experiment.keep_fractions[0] = 0", "must be > 0"],
        {"experiment": {"keep_fractions": [0, 0.5]}},
    ),
    Case(
        "k above one",
        ["experiment.keep_fractions[1] = 1.5", "must be <= 1"],
        {"experiment": {"keep_fractions": [0.5, 1.5]}},
    ),
    Case(
        "k negative",
        ["experiment.keep_fractions[0] = -0.1", "must be > 0"],
        {"experiment": {"keep_fractions": [-0.1]}},
    ),
    Case(
        "k duplicated",
        [
            "experiment.keep_fractions = [0.1, 0.5, 0.1]",
            "must not contain duplicates (0.1 repeats)",
        ],
        {"experiment": {"keep_fractions": [0.1, 0.5, 0.1]}},
    ),
    Case(
        "k duplicated in paths",
        ["experiment.keep_fractions[1] = 0.50000000001", "duplicates keep fraction 0.5"],
        {"experiment": {"keep_fractions": [0.5, 0.50000000001]}},
    ),
    # numbers out of range
    Case(
        "negative eps",
        ["models.tiny_l2.training.eps = -0.5", "must be > 0"],
        {"models": {"tiny_l2": {"training": {"eps": -0.5}}}},
    ),
    Case(
        "zero epochs",
        ["training.epochs = 0", "must be >= 1"],
        overrides=("training={epochs: 0}",),
    ),
    Case(
        "negative retraining epochs",
        ["retraining.epochs = -2", "must be >= 1"],
        {"retraining": {"epochs": -2}},
    ),
    Case(
        "negative seed",
        ["experiment.retrain_seeds[1] = -1", "must be >= 0"],
        overrides=("experiment={retrain_seeds: [0, -1]}",),
    ),
    Case(
        "negative split seed",
        ["datasets.blockdigits.split_seed = -3", "must be >= 0"],
        {"datasets": {"blockdigits": {"split_seed": -3}}},
    ),
    Case(
        "held-out fractions leave no training images",
        ["datasets.blockdigits.val_fraction + test_fraction = 1", "must be < 1"],
        {"datasets": {"blockdigits": {"val_fraction": 0.5, "test_fraction": 0.5}}},
    ),
    Case(
        "too many gallery images",
        ["figures.gallery_images = 100", "must be <= 32"],
        {"figures": {"gallery_images": 100}},
    ),
    # batches larger than the training set
    Case(
        "batch larger than the training split",
        [
            "training.batch_size = 1000",
            "must be <= 234",
            "training split of dataset 'blockdigits'",
            "360 images of classes 0, 1",
        ],
        overrides=("training={batch_size: 1000}",),
    ),
    Case(
        "retraining batch larger than the training split",
        ["retraining.batch_size = 235", "must be <= 234", "dataset 'blockdigits'"],
        {"retraining": {"batch_size": 235}},
    ),
    Case(
        "batch larger than train_size allows",
        ["training.batch_size = 64", "must be <= 42", "train_size 50 less val_fraction 0.15"],
        mnist(root=EMPTY_ROOT, train_size=50),
    ),
    # classes
    Case(
        "empty class list",
        ["datasets.blockdigits.classes = []", "must have at least 2 item(s)"],
        {"datasets": {"blockdigits": {"classes": []}}},
    ),
    Case(
        "digit class above 9",
        ["datasets.blockdigits.classes[1] = 12", "must be <= 9", "the 10 classes 0..9"],
        {"datasets": {"blockdigits": {"classes": [0, 12]}}},
    ),
    # incompatible combinations
    Case(
        "gradcam with an mlp",
        [
            "experiment.methods = ['gradient', 'gradcam']",
            "gradcam needs convolutional layers",
            "model 'tiny_standard' is an 'mlp'",
            "cnn or resnet18",
        ],
        {"experiment": {"methods": ["gradient", "gradcam"]}},
    ),
    Case(
        "gradcam of the loss",
        [
            "saliency.target = 'loss'",
            "gradcam (in experiment.methods) keep positive evidence (ReLU)",
            "Use target 'logit' or 'predicted', or drop gradcam from experiment.methods",
        ],
        {
            "models": {"tiny_cnn": {"architecture": "cnn", "channels": [4]}},
            "experiment": {"models": ["tiny_cnn"], "methods": ["gradcam", "random"]},
            "saliency": {"target": "loss"},
        },
    ),
    Case(
        "root for bundled digits",
        ["datasets.blockdigits.root = 'data'", "not used by loader 'blockdigits'"],
        {"datasets": {"blockdigits": {"root": "data"}}},
    ),
    Case(
        "imagefolder without image_size",
        ["datasets.folder: missing required key 'image_size'", "loader 'imagefolder'"],
        {
            "datasets": {"folder": {"loader": "imagefolder", "root": EMPTY_ROOT}},
            "experiment": {"datasets": ["folder"]},
        },
    ),
    # data files, checked when the run starts (onstart), before the first job
    Case(
        "mnist root without files",
        [
            f"datasets.mnist.root = '{EMPTY_ROOT}'",
            f"lacks {MNIST_FILES}",
            "dataset 'mnist' needs mnist's files",
            "set `download: true`",
        ],
        mnist(root=EMPTY_ROOT),
    ),
    Case(
        "mnist root that is a file",
        [f"datasets.mnist.root = '{FILE_ROOT}'", "is a file, not a folder", MNIST_FILES],
        mnist(root=FILE_ROOT),
    ),
    Case(
        "mnist root that does not exist",
        ["datasets.mnist.root = 'data/nowhere'", "does not exist", MNIST_FILES],
        mnist(root="data/nowhere"),
    ),
]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A copy of the workflow whose results/ holds real outputs (the blockdigits store of the tiny
    config, with Snakemake's metadata, and its log) and a file of the user's, plus the data paths
    of the cases."""
    workdir = copy_workflow(tmp_path_factory.mktemp("prepared"))
    snakemake(workdir, "--cores", "1", "results/data/blockdigits.zarr")
    (workdir / "results" / "notes").mkdir()
    (workdir / "results" / "notes" / "readme.txt").write_text("kept by the user\n")
    (workdir / EMPTY_ROOT).mkdir(parents=True)
    (workdir / FILE_ROOT).write_bytes(b"not a folder")
    return workdir


@dataclass
class Outcome:
    returncode: int
    output: str
    before: dict
    after: dict


def run_case(case: Case, prepared: Path, workdir: Path) -> Outcome:
    shutil.copytree(prepared, workdir, symlinks=True)
    args = ["--cores", "1"]
    if case.config:
        (workdir / "bad.yaml").write_text(yaml.safe_dump(case.config))
        args = ["--configfile", "tiny.yaml", "bad.yaml", *args]
    if case.overrides:
        args += ["--config", *case.overrides]
    before = tree_state(workdir / "results")
    result = snakemake(workdir, *args, check=False, config=None if case.config else "tiny.yaml")
    return Outcome(
        result.returncode, result.stdout + result.stderr, before, tree_state(workdir / "results")
    )


@dataclass
class Checked:
    stage: str  # "parse" (validate_config, check_environment) or "onstart" (ensure_data_files)
    message: str


def check_in_process(case: Case, prepared: Path) -> Checked | None:
    """The Snakefile's checks on the config the command line of `run_case` would give Snakemake
    (read in `prepared`, which holds the case's data paths): the stage that stopped it and its
    message, or None when every check passed."""
    config = load_configfile(str(prepared / "config.yaml"))  # the Snakefile's `configfile:`
    overwrite = {}  # Snakemake: --configfile files in order, then --config
    configfiles = [prepared / "tiny.yaml"]
    for configfile in configfiles:
        update_config(overwrite, load_configfile(str(configfile)))
    update_config(overwrite, case.config)  # bad.yaml, written from this mapping
    if case.overrides:
        update_config(overwrite, parse_config(list(case.overrides)))
    update_config(config, overwrite)
    try:
        validate_config(config)
        check_environment(os.environ)
    except ValueError as error:
        return Checked("parse", str(error))
    # onstart: the datasets that a data job would build (their store is not there yet)
    unbuilt = [
        name
        for name in config["experiment"]["datasets"]
        if not (prepared / "results" / "data" / f"{name}.zarr").exists()
    ]
    cwd = os.getcwd()
    os.chdir(prepared)  # data roots are relative to the working directory, as for Snakemake
    try:
        ensure_data_files(config, unbuilt)
    except ConfigError as error:
        return Checked("onstart", str(error))
    finally:
        os.chdir(cwd)
    return None


@pytest.fixture(scope="module")
def outcomes(request, prepared, tmp_path_factory):
    """Case name -> future Outcome, for the command-line cases selected in this session, run a
    few at a time."""
    selected = {
        item.callspec.params["case"].name: item.callspec.params["case"]
        for item in request.session.items
        if item.module is request.module
        and hasattr(item, "callspec")
        and item.originalname == "test_the_command_line_stops_with_that_message_before_any_job"
    }
    root = tmp_path_factory.mktemp("cases")
    with ThreadPoolExecutor(PARALLEL) as pool:
        yield {
            name: pool.submit(run_case, case, prepared, root / f"case{index}")
            for index, (name, case) in enumerate(selected.items())
        }


def test_cases_are_many_and_distinct():
    names = [case.name for case in CASES]
    assert len(names) >= 24 and len(set(names)) == len(names)
    assert CLI_CASES <= set(names)
    kinds = {(bool(case.config), bool(case.overrides)) for case in CASES if case.name in CLI_CASES}
    assert kinds == {(True, False), (False, True)}  # YAML files and --config overrides


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_input_stops_with_one_message_before_any_job(case, prepared):
    checked = check_in_process(case, prepared)
    assert checked is not None, f"{case.name}: every check passed"
    message = checked.message
    assert "\n" not in message, message
    assert message.startswith("config error: "), message
    for fragment in case.expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    # a data-file problem is found when the run starts (a dry run needs no data), the others
    # when the Snakefile is read
    expected_stage = "onstart" if case.name.startswith("mnist root") else "parse"
    assert checked.stage == expected_stage, checked


@pytest.mark.parametrize("case", [case for case in CASES if case.name in CLI_CASES], ids=str)
def test_the_command_line_stops_with_that_message_before_any_job(case, prepared, outcomes):
    outcome = outcomes[case.name].result()
    output = outcome.output
    assert outcome.returncode != 0, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if "config error" in line]
    assert len(errors) == 1, output
    assert errors[0] == check_in_process(case, prepared).message, output
    assert not JOB_LINES.search(output), output
    assert outcome.after == outcome.before
    assert any(path.startswith("data/blockdigits.zarr/") for path in outcome.before)
