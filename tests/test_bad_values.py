"""Bad values over a finished run: numbers the schema alone would let through (NaN, infinities,
seeds that alias, values legal one by one but impossible together) and names that would become
paths (issue 17, classes 3, 4 and 5). Each stops with one `config error:` line that names the key,
the value and what is allowed, before any job, and leaves every file under results/ as it was.

The finished run is the small cut of tests/small_runs.py (shared with test_faults.py and
test_trust.py). Every case is merged over its tiny.yaml the way Snakemake merges configs and goes
through the Snakefile's parse-time checks in this process (`validate_config`, `check_environment`),
with the content hashes of results/ taken before and after. A representative subset also runs
through the real command line, `snakemake --configfile tiny.yaml bad.yaml --cores 1 <tables>` (or
`--config` overrides), each in its own copy of the finished run, a few at a time: exit status not
0, the same one line, no job started, and results/ byte for byte as before. A control with no bad
value proves that the copy is finished (Snakemake has nothing to do).
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from diffroar.config import SEED_MAX, validate_config
from diffroar.resources import check_environment
from small_runs import TABLES, clean_run, copy_run
from snakemake.cli import parse_config
from snakemake.common.configfile import load_configfile
from snakemake.utils import update_config
from workflow_helpers import JOB_LINES, snakemake, tree_state

pytestmark = pytest.mark.workflow

# command-line cases that run at once (each mostly waits for Snakemake's start-up)
PARALLEL = 4
NAN, INF = math.nan, math.inf


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # "number" (issue 17, class 3) or "name" (class 4)
    expected: list[str]  # substrings of the one `config error:` line
    config: dict = field(default_factory=dict)  # merged over the finished run's tiny.yaml
    overrides: tuple[str, ...] = ()  # --config KEY=VALUE
    cli: bool = False  # also run through the snakemake command line

    def __str__(self) -> str:
        return self.name


def number(name, expected, config=None, overrides=(), cli=False) -> Case:
    return Case(name, "number", expected, config or {}, tuple(overrides), cli)


def name_case(name, expected, config, cli=False) -> Case:
    return Case(name, "name", expected, config, (), cli)


FINITE = "must be a finite number"
BAD_NAME = "must match \\A[A-Za-z][A-Za-z0-9_]*\\Z (a letter, then letters, digits or _"
# The small cut's dataset: 360 blockdigits images of classes 0 and 1 (1x16x8), 72 of them the test
# split (test_fraction 0.2), 288 the training pool.


def blockdigits(**settings) -> dict:
    return {"datasets": {"blockdigits": {"loader": "blockdigits", **settings}}}


def mnist(**settings) -> dict:
    """A config whose experiment uses the official MNIST files (never read: the check is first)."""
    return {
        "datasets": {"mnist": {"loader": "mnist", "root": "data/mnist", **settings}},
        "experiment": {"datasets": ["mnist"]},
    }


NUMBER_CASES = [
    # NaN and infinities, from YAML files and as --config text
    number(
        "learning rate NaN",
        ["training.learning_rate = nan", FINITE],
        {"training": {"learning_rate": NAN}},
        cli=True,
    ),
    number(
        "retraining learning rate infinite",
        ["retraining.learning_rate = inf", FINITE],
        {"retraining": {"learning_rate": INF}},
    ),
    number(
        "weight decay minus infinity",
        ["training.weight_decay = -inf", FINITE],
        {"training": {"weight_decay": -INF}},
    ),
    number(
        "noise_std infinite (published a table before)",
        ["saliency.noise_std = inf", FINITE],
        {"saliency": {"noise_std": INF}},
        cli=True,
    ),
    number(
        "noise_std NaN as --config text",
        ["saliency.noise_std = '.nan'", FINITE, "'.nan' is not one"],
        overrides=["saliency={noise_std: .nan}"],
    ),
    number(
        "imputation noise NaN as --config text",
        ["masking.noise = 'nan'", FINITE],
        overrides=["masking={noise: nan}"],
    ),
    number(
        "keep fraction NaN",
        ["experiment.keep_fractions[0] = nan", FINITE],
        {"experiment": {"keep_fractions": [NAN]}},
    ),
    number(
        "keep fraction infinite",
        ["experiment.keep_fractions[1] = inf", FINITE],
        {"experiment": {"keep_fractions": [0.1, INF]}},
    ),
    number(
        "keep fraction infinite as --config text",
        ["experiment.keep_fractions[0] = '.inf'", FINITE],
        overrides=["experiment={keep_fractions: [.inf]}"],
        cli=True,
    ),
    number(
        "epochs infinite",
        ["retraining.epochs = inf", FINITE],
        {"retraining": {"epochs": INF}},
    ),
    number(
        "PGD radius NaN",
        ["models.tiny_l2.training.eps = nan", FINITE],
        {"models": {"tiny_l2": {"training": {"eps": NAN}}}},
    ),
    number(
        "gallery size NaN",
        ["figures.gallery_images = nan", FINITE],
        {"figures": {"gallery_images": NAN}},
    ),
    number(
        "memory infinite",
        ["resources.train.mem_mb = inf", FINITE],
        {"resources": {"train": {"mem_mb": INF}}},
    ),
    # ranges a run can complete with
    number(
        "learning rate above 1",
        ["training.learning_rate = 5", "must be <= 1"],
        {"training": {"learning_rate": 5}},
    ),
    number(
        "negative imputation noise",
        ["masking.noise = -0.1", "must be >= 0"],
        {"masking": {"noise": -0.1}},
    ),
    number(
        "noise_std above a pixel's range",
        ["saliency.noise_std = 3", "must be <= 1"],
        {"saliency": {"noise_std": 3}},
    ),
    number(
        "epochs no run finishes",
        ["training.epochs = 100000", "must be <= 1000"],
        {"training": {"epochs": 100000}},
    ),
    number(
        "integration steps absurd",
        ["saliency.steps = 1000000000", "must be <= 10000"],
        {"saliency": {"steps": 10**9}},
    ),
    # seeds that alias smaller ones (torch keeps 32 bits) or that scikit-learn refuses
    number(
        "retrain seed 2**32 aliases seed 0",
        ["experiment.retrain_seeds[1] = 4294967296", "must be <= 4294967295", "low 32 bits"],
        {"experiment": {"retrain_seeds": [0, 2**32]}},
    ),
    number(
        "base seed 2**64",
        ["experiment.base_seeds[0] = 18446744073709551616", "must be <= 4294967295"],
        {"experiment": {"base_seeds": [2**64]}},
    ),
    number(
        "saliency seed 2**32 as --config text",
        ["saliency.seed = 4294967296", "must be <= 4294967295"],
        overrides=["saliency={seed: 4294967296}"],
        cli=True,
    ),
    number(
        "split seed 2**32",
        ["datasets.blockdigits.split_seed = 4294967296", "must be <= 4294967295"],
        blockdigits(split_seed=2**32),
    ),
    number(
        "tie-break seed 2**40",
        ["masking.tiebreak_seed = 1099511627776", "must be <= 4294967295"],
        {"masking": {"tiebreak_seed": 2**40}},
    ),
    # legal one by one, impossible together
    number(
        "validation split smaller than one image per class",
        [
            "datasets.blockdigits.val_fraction = 0.001",
            "the 288-image training pool of dataset 'blockdigits'",
            "into 1 validation and 287 training images",
            "fewer than its 2 classes",
        ],
        blockdigits(val_fraction=0.001),
        cli=True,
    ),
    number(
        "held-out fractions leave no training image",
        ["datasets.blockdigits.val_fraction = 0.75", "into 270 validation and 0 training images"],
        blockdigits(val_fraction=0.75, test_fraction=0.249),
    ),
    number(
        "test split smaller than one image per class",
        ["datasets.blockdigits.test_fraction = 0.002", "into 1 test and 359 other images"],
        blockdigits(test_fraction=0.002),
    ),
    number(
        "train_size larger than its pool",
        [
            "datasets.blockdigits.train_size = 1000",
            "must be <= 288",
            "what test_fraction 0.2 leaves of 360",
        ],
        blockdigits(train_size=1000),
    ),
    number(
        "train_size leaving one image of its pool",
        ["datasets.blockdigits.train_size = 287", "into 287 drawn and 1 left images"],
        blockdigits(train_size=287),
    ),
    number(
        "test_size larger than the test split",
        ["datasets.blockdigits.test_size = 100", "must be <= 72", "test split"],
        blockdigits(test_size=100),
    ),
    number(
        "mnist test_size larger than its official test split",
        ["datasets.mnist.test_size = 20000", "must be <= 10000"],
        mnist(test_size=20000),
    ),
    number(
        "mnist train_size larger than the pool of its classes",
        ["datasets.mnist.train_size = 13000", "must be <= 12665", "classes 0, 1"],
        mnist(classes=[0, 1], train_size=13000),
    ),
    number(
        "hidden layers that cannot be allocated",
        [
            "models.tiny_standard = {'hidden_sizes': [60000, 60000]}",
            "3.61e+09 parameters on dataset 'blockdigits' (1x16x8)",
            "about 54 GiB",
            "must have at most 1073741824 parameters",
        ],
        {"models": {"tiny_standard": {"hidden_sizes": [60000, 60000]}}},
        cli=True,
    ),
    number(
        "a hidden width beyond any bound",
        ["models.tiny_standard.hidden_sizes[0] = 1000000000000", "must be <= 65536"],
        {"models": {"tiny_standard": {"hidden_sizes": [10**12]}}},
    ),
    number(
        "two keep fractions keep the same count",
        [
            "experiment.keep_fractions = [0.1, 0.102]",
            "0.1 and 0.102 both keep 13 of the 128 coordinates of dataset 'blockdigits' (1x16x8)",
        ],
        {"experiment": {"keep_fractions": [0.1, 0.102]}},
        cli=True,
    ),
    number(
        "keep fractions 1 and 0.999 keep every coordinate",
        ["1 and 0.999 both keep 128 of the 128 coordinates"],
        {"experiment": {"keep_fractions": [0.5, 1, 0.999]}},
    ),
]

NAME_CASES = [
    name_case(
        "dataset name with a final newline",
        ["experiment.datasets[0] = 'blockdigits\\n'", BAD_NAME],
        {"experiment": {"datasets": ["blockdigits\n"]}},
        cli=True,
    ),
    name_case(
        "model defined with a final newline",
        ["models: the name 'tiny_standard\\n'", BAD_NAME],
        {"models": {"tiny_standard\n": {"architecture": "mlp"}}},
    ),
    name_case(
        "retraining model with a final newline",
        ["retraining.model = 'tiny_standard\\n'", BAD_NAME],
        {"retraining": {"model": "tiny_standard\n"}},
    ),
    name_case(
        "control character",
        ["models: the name 'tiny\\x1bstd'", BAD_NAME],
        {"models": {"tiny\x1bstd": {"architecture": "mlp"}}},
    ),
    name_case(
        "tab inside",
        ["experiment.models[0] = 'tiny\\tstandard'", BAD_NAME],
        {"experiment": {"models": ["tiny\tstandard"]}},
    ),
    name_case(
        "path separator",
        ["datasets: the name 'data/blockdigits'", BAD_NAME],
        {"datasets": {"data/blockdigits": {"loader": "blockdigits"}}},
    ),
    name_case(
        "parent folder",
        ["models: the name '..'", BAD_NAME],
        {"models": {"..": {"architecture": "mlp"}}},
    ),
    name_case(
        "escape through the parent folder",
        ["experiment.datasets[0] = '../blockdigits'", BAD_NAME],
        {"experiment": {"datasets": ["../blockdigits"]}},
    ),
    name_case(
        "leading dash",
        ["models: the name '-tiny'", BAD_NAME],
        {"models": {"-tiny": {"architecture": "mlp"}}},
    ),
    name_case(
        "non-ASCII letter",
        ["models: the name 'tiny_é'", BAD_NAME],
        {"models": {"tiny_é": {"architecture": "mlp"}}},
    ),
    name_case(
        "non-ASCII digit",
        ["experiment.models[0] = 'tiny٣'", BAD_NAME],
        {"experiment": {"models": ["tiny٣"]}},
    ),
    name_case(
        "empty name",
        ["datasets: the name ''", BAD_NAME],
        {"datasets": {"": {"loader": "blockdigits"}}},
    ),
]

CASES = NUMBER_CASES + NAME_CASES


def merged_config(case: Case, workdir: Path) -> dict:
    """The config Snakemake builds in `workdir` for the command line of `run_case`: the
    Snakefile's config.yaml, then tiny.yaml and bad.yaml (--configfile), then --config."""
    config = load_configfile(str(workdir / "config.yaml"))
    overwrite = {}
    update_config(overwrite, load_configfile(str(workdir / "tiny.yaml")))
    update_config(overwrite, yaml.safe_load(yaml.safe_dump(case.config)))  # as bad.yaml
    if case.overrides:
        update_config(overwrite, parse_config(list(case.overrides)))
    update_config(config, overwrite)
    return config


def check_in_process(case: Case, workdir: Path) -> str | None:
    """The message of the Snakefile's parse-time checks on the case's config, None if it passes."""
    try:
        validate_config(merged_config(case, workdir))
        check_environment(os.environ)
    except ValueError as error:
        return str(error)
    return None


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """The shared finished small run (do not modify)."""
    return clean_run(tmp_path_factory)


@dataclass
class Outcome:
    returncode: int
    output: str
    before: dict
    after: dict


def run_case(case: Case | None, finished: Path, workdir: Path) -> Outcome:
    """`case` (None: the control, no bad value) through the command line, in a copy of the
    finished run, asking for its four tables."""
    copy_run(finished, workdir)
    configfiles = ["tiny.yaml"]
    args = ["--cores", "1", *TABLES]  # before --config, which takes every argument after it
    if case and case.config:
        (workdir / "bad.yaml").write_text(yaml.safe_dump(case.config, allow_unicode=True))
        configfiles.append("bad.yaml")
    if case and case.overrides:
        args += ["--config", *case.overrides]
    before = tree_state(workdir / "results")
    result = snakemake(workdir, "--configfile", *configfiles, *args, check=False, config=None)
    return Outcome(
        result.returncode, result.stdout + result.stderr, before, tree_state(workdir / "results")
    )


@pytest.fixture(scope="module")
def outcomes(finished, tmp_path_factory):
    """Case name -> future Outcome of every command-line case and of the control ("control"),
    run a few at a time."""
    root = tmp_path_factory.mktemp("bad_values")
    cases = {case.name: case for case in CASES if case.cli} | {"control": None}
    with ThreadPoolExecutor(PARALLEL) as pool:
        yield {
            name: pool.submit(run_case, case, finished, root / f"case{index}")
            for index, (name, case) in enumerate(cases.items())
        }


def test_cases_are_many_distinct_and_of_both_classes():
    names = [case.name for case in CASES]
    assert len(set(names)) == len(names)
    assert len(NUMBER_CASES) >= 25 and len(NAME_CASES) >= 10
    cli = [case for case in CASES if case.cli]
    assert 6 <= len(cli) <= 8
    assert {case.kind for case in cli} == {"number", "name"}
    assert any(case.overrides for case in cli) and any(case.config for case in cli)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_value_stops_with_one_line_and_changes_nothing(case, finished):
    before = tree_state(finished / "results")
    message = check_in_process(case, finished)
    assert message is not None, f"{case.name}: every check passed"
    assert "\n" not in message, message
    assert message.startswith("config error: "), message
    for fragment in case.expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert tree_state(finished / "results") == before


@pytest.mark.parametrize("case", [case for case in CASES if case.cli], ids=str)
def test_bad_value_over_a_finished_run_starts_no_job_and_keeps_every_output(
    case, finished, outcomes
):
    outcome = outcomes[case.name].result()
    output = outcome.output
    assert outcome.returncode != 0, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if "config error" in line]
    assert errors == [check_in_process(case, finished)], output
    assert not JOB_LINES.search(output), output
    assert outcome.after == outcome.before
    assert outcome.before == tree_state(finished / "results")


def test_the_finished_run_has_every_table_and_nothing_left_to_do(finished, outcomes):
    outcome = outcomes["control"].result()
    assert outcome.returncode == 0, outcome.output
    assert "Nothing to be done" in outcome.output, outcome.output
    assert outcome.after == outcome.before
    for table in TABLES:
        assert table.removeprefix("results/") in outcome.before


def test_every_seed_up_to_the_bound_is_distinct_for_torch():
    import torch

    def draws(seed: int) -> torch.Tensor:
        return torch.rand(4, generator=torch.Generator().manual_seed(seed))

    # the bound is the last seed that torch does not alias: the next one repeats seed 0
    assert not torch.equal(draws(SEED_MAX), draws(0))
    assert torch.equal(draws(SEED_MAX + 1), draws(0))
