# Paths, targets and per-rule params. Rules hold wiring only; the work is in workflow/diffroar.
import functools
import hashlib
import inspect
import json
from types import SimpleNamespace

from snakemake.settings.types import DeploymentMethod

from diffroar.config import (
    BLOCK_LOADERS,
    MASK_ONLY,
    experiment_models,
    format_k,
    method_settings,
    model_file_hashes,
    model_independent,
    user_method_kind,
    user_method_settings,
)
from diffroar.methodnames import NOISE_TUNNELS, method_base, parse_method
from diffroar.provenance import code_fingerprint, config_fingerprint
from diffroar.resources import SCALED, base_resources, for_attempt

EXPERIMENT = config["experiment"]
ORDERS = ["top", "bottom"]
# The imputations that fill the removed coordinates: every one but the mask-only control, which
# has no retrain-free curve (the base model never saw binary masks).
FILLS = [name for name in EXPERIMENT["imputations"] if name != MASK_ONLY]
# k as the jobs read it from their paths
KEEP_FRACTIONS = [float(format_k(k)) for k in EXPERIMENT["keep_fractions"]]


wildcard_constraints:
    dataset=r"[A-Za-z][A-Za-z0-9_]*",
    model=r"[A-Za-z][A-Za-z0-9_]*",
    # a method, then modifiers after a + (diffroar.methodnames): gradient+blur1
    method=r"[A-Za-z][A-Za-z0-9_]*(\+[A-Za-z][A-Za-z0-9_.]*)*",
    imputation=r"[a-z_]+",
    seed=r"\d+",
    rseed=r"\d+",
    order="top|bottom",
    k=r"[0-9.]+(e-?[0-9]+)?",


DATA = "results/data/{dataset}.zarr"
MODEL_DIR = "results/models/{dataset}/{model}/seed{seed}"
SALIENCY = "results/saliency/{dataset}/{model}/seed{seed}/{method}.zarr"
MASKED = "results/masked/{dataset}/{model}/seed{seed}/{method}/{imputation}/{order}-k{k}.zarr"
RETRAIN_DIR = "results/retrain/{dataset}/{model}/seed{seed}/{method}/{imputation}/{order}-k{k}/retrain{rseed}"
ROBUST = f"{MODEL_DIR}/robust.json"
NORETRAIN = "results/noretrain/{dataset}/{model}/seed{seed}.parquet"
SANITY = "results/sanity/{dataset}/{model}/seed{seed}.parquet"
TABLES = "results/tables/{dataset}"
FIGURES = "results/figures"


# Every rule runs its script (workflow/scripts/<rule>.py) through diffroar.client, a Python
# without site-packages that hands the job to the warm worker (diffroar/client.py): a Snakemake
# `script:` would import Snakemake in every job first. The script sees the `snakemake` object it
# would see under `script:` (input, output, log, params, wildcards, threads, resources), sent as
# the job's JSON in the `job` param; `runtime_settings` adds what changes no result (batch sizes, a
# checkpoint's path). `job` takes input and output, so Snakemake leaves it out of the params
# that decide reruns: those are the rule's other params, as before (and it does not ask for
# threads or resources, which would make Snakemake compute every job's resources in a dry run).
# The command names the script's sha256, so editing a script reruns its jobs (Snakemake's code
# trigger), and the job refuses to run a script that changed after Snakemake planned it.
SCRIPTS = Path(workflow.basedir) / "workflow" / "scripts"
# the command's Python: this one, or in `--sdm conda` the rule's environment's own (not a
# required variable of the user's, so no `envvars:` entry)
os.environ.update(
    DIFFROAR_PYTHON=(
        "python"
        if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
        else sys.executable
    )
)


def job_shell(script):
    """The shell command of a rule that runs workflow/scripts/`script`, the script named as the
    rule is. The command names the script's sha256, the job's threads, GPUs (resources.<name>.gpu)
    and log; the job's JSON goes to its stdin."""
    digest = hashlib.sha256((SCRIPTS / script).read_bytes()).hexdigest()[:16]
    asks_gpu = config["resources"].get(Path(script).stem, {}).get("gpu", 0)
    gpus = "{resources.gpu}" if asks_gpu else "0"
    return (
        f'"$DIFFROAR_PYTHON" -S -m diffroar.client {script} {digest} {{threads}} {gpus} '
        "{log:q} <<< {params.job:q}"
    )


# The attribution batch sizes: they change no attribution (tested), only how fast it runs.
BATCH_SIZES = {
    key: config["saliency"][key] for key in ("batch_size", "internal_batch_size")
}


def imported_checkpoint(wildcards):
    """Where an imported model's weights are read from: its sha256 decides what reruns (a param
    of the model's config), so moving the file reruns nothing."""
    return {"checkpoint": config["models"][wildcards.model]["checkpoint"]}


def job_params(runtime_settings=None, **params):
    """A rule's `params`: `params` (values, or functions of wildcards and optionally input and
    output, as Snakemake takes them) and `job`, the job's JSON for diffroar.client (JobRequest);
    `runtime_settings`: a dict or a function of wildcards that the script sees as
    snakemake.runtime_settings, no param: what changes how a job runs, not its result.
    """
    evaluate = {name: param_caller(value) for name, value in params.items()}
    settings_of = param_caller(runtime_settings or {})

    def job(wildcards, input, output):
        return JobRequest(evaluate, settings_of, wildcards, input, output)

    return {**params, "job": job}


def param_caller(value):
    """value -> a function of (wildcards, input, output) that gives the param's value."""
    if not callable(value):
        return lambda wildcards, input, output: value
    wanted = [
        name
        for name in inspect.signature(value).parameters
        if name in ("input", "output")
    ]
    return lambda wildcards, input, output: value(
        wildcards, **{name: {"input": input, "output": output}[name] for name in wanted}
    )


def named(files):
    """A Snakemake named list as JSON: its items and its named entries."""
    return {
        "items": [str(item) for item in files],
        "names": {
            name: value if isinstance(value, str) else [str(item) for item in value]
            for name, value in files.items()
        },
    }


class JobRequest:
    """The `job` param: built when Snakemake formats the job's shell command (str), not before."""

    def __init__(self, evaluate, settings_of, wildcards, input, output):
        self.parts = (evaluate, settings_of, wildcards, input, output)

    def __repr__(self):
        return f"JobRequest({dict(self.parts[2].items())})"

    def __str__(self):
        evaluate, settings_of, wildcards, input, output = self.parts
        params = {name: get(wildcards, input, output) for name, get in evaluate.items()}
        job = {
            "input": named(input),
            "output": named(output),
            "params": {"items": list(params.values()), "names": params},
            "wildcards": named(wildcards),
            "runtime_settings": settings_of(wildcards, input, output),
        }
        return json.dumps(job, sort_keys=True, separators=(",", ":"))


def block_datasets():
    """Datasets of the experiment with a signal and a null block (localization applies)."""
    return [
        name
        for name in EXPERIMENT["datasets"]
        if config["datasets"][name]["loader"] in BLOCK_LOADERS
    ]


def models_of(dataset):
    """The models trained on `dataset` (a name or a wildcards object)."""
    return experiment_models(EXPERIMENT, getattr(dataset, "dataset", dataset))


def dataset_config(wildcards):
    """A dataset's config without `download`, which changes how files arrive, not the data."""
    dataset = config["datasets"][wildcards.dataset]
    return {key: value for key, value in dataset.items() if key != "download"}


def rule_threads(rule, default=1):
    """Threads of `rule`'s jobs: `resources.<rule>.threads`, else `default`."""
    return config["resources"].get(rule, {}).get("threads", default)


def rule_resources(rule):
    """What `rule`'s jobs ask the scheduler for (diffroar.resources): memory and time limit
    growing with the attempt, GPUs where `resources.<rule>.gpu` asks, Slurm partition and
    account from the environment."""
    base = base_resources(config["resources"].get(rule, {}), os.environ)

    def at_attempt(name):
        return lambda wildcards, attempt: for_attempt(base, attempt)[name]

    return {
        name: at_attempt(name) if name in SCALED else value
        for name, value in base.items()
    }


def data_jobs_datasets(dag):
    """Datasets whose store the jobs to run in `dag` build (their files must be there)."""
    return sorted(
        {
            job.wildcards["dataset"]
            for job in dag.needrun_jobs()
            if job.rule.name == "data"
        }
    )


def sanity_models(dataset):
    """The models of `dataset` (a name or a wildcards object) whose base models the
    randomisation check covers (`sanity.models`, default all)."""
    chosen = config["sanity"].get("models")
    return [model for model in models_of(dataset) if chosen is None or model in chosen]


def sanity_datasets():
    """Datasets of the experiment with a model the randomisation check covers."""
    return [name for name in EXPERIMENT["datasets"] if sanity_models(name)]


def figure_targets():
    """Every figure of the experiment."""
    figures = expand(
        f"{FIGURES}/{{kind}}-{{dataset}}.png",
        kind=["methods", "imputation", "noretrain", "attributions", "ranking"],
        dataset=EXPERIMENT["datasets"],
    )
    figures += expand(f"{FIGURES}/sanity-{{dataset}}.png", dataset=sanity_datasets())
    return figures + expand(
        f"{FIGURES}/localization-{{dataset}}.png", dataset=block_datasets()
    )


def robust_targets():
    """Robust-accuracy JSON of every PGD-trained base model of the experiment."""
    return [
        path
        for dataset in EXPERIMENT["datasets"]
        for model in models_of(dataset)
        if config["models"][model]["training"]["mode"] == "pgd"
        for path in expand(
            ROBUST, dataset=dataset, model=model, seed=EXPERIMENT["base_seeds"]
        )
    ]


def final_targets():
    tables = [
        "results/metrics.parquet",
        "results/diffroar.parquet",
        "results/comparisons.parquet",
        "results/noretrain.parquet",
    ]
    if sanity_datasets():
        tables.append("results/sanity.parquet")
    if block_datasets():
        tables.append("results/localization.parquet")
    return tables + figure_targets() + robust_targets()


def retrain_metrics(wildcards):
    """Metrics JSON of every retrained model of one dataset."""
    return expand(
        f"{RETRAIN_DIR}/metrics.json",
        dataset=wildcards.dataset,
        model=models_of(wildcards),
        seed=EXPERIMENT["base_seeds"],
        method=EXPERIMENT["methods"],
        imputation=EXPERIMENT["imputations"],
        order=ORDERS,
        k=[format_k(k) for k in EXPERIMENT["keep_fractions"]],
        rseed=EXPERIMENT["retrain_seeds"],
    )


def noretrain_saliency(wildcards):
    """Attribution stores of every method of one base model: its noretrain job masks the test
    split with each."""
    return expand(
        SALIENCY,
        dataset=wildcards.dataset,
        model=wildcards.model,
        seed=wildcards.seed,
        method=EXPERIMENT["methods"],
    )


def noretrain_masking(wildcards):
    """The masking settings of a noretrain job: masking_settings of its imputations (the noise
    too if one of them draws it)."""
    return masking_config("noisy_linear" in FILLS)


def noretrain_tables(dataset):
    """Retrain-free tables of every base model of `dataset` (a name or a wildcards object)."""
    return expand(
        NORETRAIN,
        dataset=getattr(dataset, "dataset", dataset),
        model=models_of(dataset),
        seed=EXPERIMENT["base_seeds"],
    )


def sanity_tables(dataset):
    """Randomisation-check tables of the base models of `dataset` (a name or a wildcards
    object) that it covers."""
    return expand(
        SANITY,
        dataset=getattr(dataset, "dataset", dataset),
        model=sanity_models(dataset),
        seed=EXPERIMENT["base_seeds"],
    )


def combine_inputs(wildcards):
    """The per-dataset (or, for noretrain and sanity, per-base-model) tables of one kind."""
    per_base_model = {"noretrain": noretrain_tables, "sanity": sanity_tables}
    if wildcards.table in per_base_model:
        tables = per_base_model[wildcards.table]
        return [path for name in EXPERIMENT["datasets"] for path in tables(name)]
    datasets = (
        block_datasets()
        if wildcards.table == "localization"
        else EXPERIMENT["datasets"]
    )
    return expand(f"{TABLES}/{wildcards.table}.parquet", dataset=datasets)


def gallery_saliency(wildcards):
    """Saliency stores shown in the gallery: every model x method, first base seed."""
    return expand(
        SALIENCY,
        dataset=wildcards.dataset,
        model=models_of(wildcards),
        seed=EXPERIMENT["base_seeds"][0],
        method=EXPERIMENT["methods"],
    )


def localization_saliency(wildcards):
    return expand(
        SALIENCY,
        dataset=wildcards.dataset,
        model=models_of(wildcards),
        seed=EXPERIMENT["base_seeds"],
        method=EXPERIMENT["methods"],
    )


def model_config(name):
    """A model's config without what only its attributions use (`gradcam_layer`), with the
    sha256 of what it depends on outside the config (a user architecture's module source, an
    imported checkpoint's file) instead of the checkpoint's path: editing either reruns the
    model and what follows, moving the checkpoint file does not."""
    model = config["models"][name]
    settings = {
        key: value
        for key, value in model.items()
        if key not in ("gradcam_layer", "checkpoint")
    }
    return settings | file_hashes(name)


@functools.cache
def file_hashes(name):
    """model_file_hashes of model `name`, once per run (every job's fingerprint asks for it)."""
    return model_file_hashes(config["models"][name])


def base_model(wildcards):
    return model_config(wildcards.model)


def retrain_model(wildcards):
    """The config of the model that retrains: `retraining.model` or the base model, without an
    imported checkpoint's hash (retraining trains the architecture from scratch)."""
    model = model_config(config["retraining"].get("model", wildcards.model))
    return {key: value for key, value in model.items() if key != "checkpoint_sha256"}


def imported_models(imported=True):
    """A wildcard constraint matching the models imported from a `checkpoint` (or, with
    imported=False, the models trained here): rules train and import_checkpoint write the same
    checkpoint paths, each for its own models. `(?!)` matches nothing."""
    names = [
        name
        for name, model in config["models"].items()
        if ("checkpoint" in model) == imported
    ]
    return "|".join(sorted(names)) or "(?!)"


def training_settings():
    """The `training` section without `eval_attack`: the optimisation settings of the base models
    (the evaluation attack changes no weights; only the `robust` rule uses it)."""
    return {
        key: value for key, value in config["training"].items() if key != "eval_attack"
    }


def retraining_settings():
    """The `retraining` section without `model` and `group_seeds`: the optimisation settings
    (how seeds are grouped into jobs changes no model)."""
    return {
        key: value
        for key, value in config["retraining"].items()
        if key not in ("model", "group_seeds")
    }


def attribution_settings(wildcards):
    """The settings one method's attributions of one model depend on; for a user method (under
    `methods`) also its entry and the hash of its module file or precomputed files."""
    base = method_base(wildcards.method)
    entry = config["methods"].get(base)
    if entry is None:  # a built-in, with or without modifiers
        return method_settings(
            wildcards.method, config["saliency"], config["models"][wildcards.model]
        )
    settings = dict(
        user_settings(base, wildcards.dataset, wildcards.model, int(wildcards.seed))
    )
    if any(kind in NOISE_TUNNELS for kind, _ in parse_method(wildcards.method)[1]):
        keys = ("noise_std", "noise_samples", "seed")
        settings |= {key: config["saliency"][key] for key in keys}
    return settings


@functools.cache
def user_settings(method, dataset, model, seed):
    """user_method_settings of user method `method` for one base model, once per run: every
    saliency, retrain and sanity job's params and fingerprints ask for it, and it hashes
    the method's module file or precomputed files (as file_hashes does for models)."""
    return user_method_settings(
        config["methods"][method], config["saliency"], dataset, model, seed
    )


def precomputed(method):
    """Whether `method` is precomputed attributions (methods.<name>.attributions): they do not
    depend on the base model beyond their path and content."""
    entry = config["methods"].get(method)
    return entry is not None and user_method_kind(entry) == "attributions"


def sanity_methods(wildcards):
    """Method -> its settings (as attribution_settings gives them), for every method of the
    experiment the randomisation check can recompute: not precomputed attributions, which
    cannot follow a randomised model."""
    return {
        method: attribution_settings(
            SimpleNamespace(
                dataset=wildcards.dataset,
                model=wildcards.model,
                seed=wildcards.seed,
                method=method,
            )
        )
        for method in EXPERIMENT["methods"]
        if not precomputed(method)
    }


def masking_settings(wildcards):
    """The settings a masked copy depends on: ranking, seed and the imputation's own."""
    return masking_config(wildcards.imputation == "noisy_linear")


def masking_config(noise):
    """The `masking` section's ranking and tie-break seed, and its noise if `noise`."""
    keys = (
        ("ranking", "tiebreak_seed", "noise") if noise else ("ranking", "tiebreak_seed")
    )
    return {key: config["masking"][key] for key in keys}


def by_wildcards(*names):
    """Cache a function of wildcards (and further arguments) by the values of the wildcards
    `names` it reads: the config is fixed in a Snakemake process, and every dry run evaluates
    every job's params, in which the same fingerprints recur (a base model's in each of its
    retrain jobs, every run's in the metrics job's identities). For functions that return
    strings, which no caller can change."""

    def decorate(function):
        @functools.cache
        def cached(values, *args):
            return function(SimpleNamespace(**dict(zip(names, values))), *args)

        @functools.wraps(function)
        def wrapper(wildcards, *args):
            return cached(tuple(getattr(wildcards, name) for name in names), *args)

        return wrapper

    return decorate


@by_wildcards("dataset", "model", "seed")
def train_fingerprint(wildcards):
    """Fingerprint of everything in the config that a base model depends on (an imported one:
    not the `training` section, which trains nothing there)."""
    model = base_model(wildcards)
    return config_fingerprint(
        dataset_config(wildcards),
        model,
        "imported" if "checkpoint_sha256" in model else training_settings(),
        int(wildcards.seed),
    )


@by_wildcards("dataset", "model", "seed", "method")
def attribution_fingerprint(wildcards):
    """Fingerprint of what one saliency store's values depend on. Stores with equal fingerprints
    hold the same attributions, so their masks and retrained models are the same runs: the
    controls ignore the model, with or without modifiers (`random` and noise tunnels draw per base
    seed, `sobel` reads the image alone), as do precomputed attributions (their settings hold
    their files' hash), and the tables count such runs once."""
    settings = attribution_settings(wildcards)
    identity = [dataset_config(wildcards), wildcards.method, settings]
    if not model_independent(wildcards.method) and not precomputed(wildcards.method):
        identity.append(train_fingerprint(wildcards))
    elif "seed" in settings:  # a control that draws per image (random, a noise tunnel)
        identity.append(int(wildcards.seed))
    return config_fingerprint(*identity)


def of_order(path, order):
    """`path` (a pattern with `{order}`) for one order: the mask and retrain jobs make both."""
    return path.replace("{order}", order)


def retrain_outputs(name):
    """Named outputs `<order>_<name>` of a retrain job: `name` (model.safetensors or
    metrics.json) of every retrain seed of the job, per order."""
    seeds = (
        {"rseed": EXPERIMENT["retrain_seeds"]}
        if config["retraining"]["group_seeds"]
        else {}
    )
    return {
        f"{order}_{name.split('.')[0]}": expand(
            of_order(f"{RETRAIN_DIR}/{name}", order), **seeds, allow_missing=True
        )
        for order in ORDERS
    }


@by_wildcards("dataset", "model", "seed", "method", "imputation", "k")
def retrain_fingerprint(wildcards, order, rseed):
    """Fingerprint of everything in the config that a retrained model depends on."""
    return config_fingerprint(
        train_fingerprint(wildcards),
        wildcards.method,
        attribution_settings(wildcards),
        wildcards.imputation,
        masking_settings(wildcards),
        order,
        wildcards.k,
        retrain_model(wildcards),
        retraining_settings(),
        rseed,
    )


def job_retrain_seeds(wildcards):
    """The retrain seeds of one retrain job: its `rseed`, or every one with group_seeds."""
    if "rseed" in wildcards.keys():
        return [int(wildcards.rseed)]
    return list(EXPERIMENT["retrain_seeds"])


def retrain_fingerprints(wildcards):
    """The fingerprint of each retrained model of one retrain job: per order, in seed order."""
    return {
        order: [
            retrain_fingerprint(wildcards, order, rseed)
            for rseed in job_retrain_seeds(wildcards)
        ]
        for order in ORDERS
    }


# --- The identity each job expects of the artifacts it reads (diffroar.verify.expect_inputs):
# input path -> the values the artifact must record, from the wildcards and the config.
def dataset_identity(wildcards):
    return {"dataset": wildcards.dataset, "config": dataset_config(wildcards)}


def checkpoint_identity(wildcards):
    return {
        "dataset": wildcards.dataset,
        "model": wildcards.model,
        "seed": int(wildcards.seed),
        "config_fingerprint": train_fingerprint(wildcards),
    }


def saliency_identity(wildcards):
    return {
        "dataset": wildcards.dataset,
        "model": wildcards.model,
        "base_seed": int(wildcards.seed),
        "method": wildcards.method,
        "checkpoint_fingerprint": train_fingerprint(wildcards),
    }


def run_identity(wildcards, rseed):
    """What a retrained model's checkpoint and metrics JSON record."""
    return {
        "dataset": wildcards.dataset,
        "model": wildcards.model,
        "base_seed": int(wildcards.seed),
        "method": wildcards.method,
        "imputation": wildcards.imputation,
        "order": wildcards.order,
        "keep_fraction": float(wildcards.k),
        "retrain_seed": int(rseed),
        "config_fingerprint": retrain_fingerprint(
            wildcards, wildcards.order, int(rseed)
        ),
        "attribution_fingerprint": attribution_fingerprint(wildcards),
    }


def expected_inputs(*kinds):
    """A params function: input path -> expected identity, for inputs of `kinds` (data,
    checkpoint, saliency)."""
    patterns = {
        "data": (DATA, dataset_identity),
        "checkpoint": (f"{MODEL_DIR}/model.safetensors", checkpoint_identity),
        "saliency": (SALIENCY, saliency_identity),
    }

    def identities(wildcards):
        return {
            patterns[kind][0].format(**dict(wildcards.items())): patterns[kind][1](
                wildcards
            )
            for kind in kinds
        }

    return identities


def _combinations(wildcards, **fixed):
    """Namespaces of every run of one dataset (or base model, given in `fixed`)."""
    from itertools import product
    from types import SimpleNamespace

    axes = {
        "model": models_of(wildcards),
        "seed": [str(s) for s in EXPERIMENT["base_seeds"]],
        "method": EXPERIMENT["methods"],
        "imputation": EXPERIMENT["imputations"],
        "order": ORDERS,
        "k": [format_k(k) for k in EXPERIMENT["keep_fractions"]],
    } | {key: [value] for key, value in fixed.items()}
    for values in product(*axes.values()):
        yield SimpleNamespace(dataset=wildcards.dataset, **dict(zip(axes, values)))


def gallery_identities(wildcards):
    """The expected identity of every input of a gallery job: the dataset store and the saliency
    stores of gallery_saliency (every model x method, first base seed)."""
    from types import SimpleNamespace

    expected = expected_inputs("data")(wildcards)
    for model in models_of(wildcards):
        for method in EXPERIMENT["methods"]:
            run = SimpleNamespace(
                dataset=wildcards.dataset,
                model=model,
                seed=str(EXPERIMENT["base_seeds"][0]),
                method=method,
            )
            expected[SALIENCY.format(**vars(run))] = saliency_identity(run)
    return expected


def noretrain_identities(wildcards):
    """The expected identity of every input of a noretrain job."""
    expected = expected_inputs("data", "checkpoint")(wildcards)
    for run in _combinations(
        wildcards,
        model=wildcards.model,
        seed=wildcards.seed,
        imputation=None,
        order=None,
        k=None,
    ):
        expected[SALIENCY.format(**vars(run))] = saliency_identity(run)
    return expected


def localization_identities(wildcards):
    """The expected identity of every input of a localization job: the dataset store and the
    saliency store of every model x base seed x method."""
    expected = expected_inputs("data")(wildcards)
    for run in _combinations(wildcards, imputation=None, order=None, k=None):
        expected[SALIENCY.format(**vars(run))] = saliency_identity(run)
    return expected


def retrain_identities(wildcards):
    """The expected identity of every metrics JSON that one dataset's metrics job reads."""
    return {
        f"{RETRAIN_DIR}/metrics.json".format(**vars(run), rseed=rseed): run_identity(
            run, rseed
        )
        for run in _combinations(wildcards)
        for rseed in EXPERIMENT["retrain_seeds"]
    }


# --- What `snakemake verify` (rules/verify.smk) checks.
def verify_expectations():
    """Path -> (rule that writes it, identity it must record) of every artifact of the run."""
    from types import SimpleNamespace

    expected = {}
    for dataset in EXPERIMENT["datasets"]:
        wildcards = SimpleNamespace(dataset=dataset)
        expected[DATA.format(dataset=dataset)] = ("data", dataset_identity(wildcards))
        for run in _combinations(wildcards):
            model_dir = MODEL_DIR.format(**vars(run))
            writer = (
                "import_checkpoint"
                if "checkpoint" in config["models"][run.model]
                else "train"
            )
            expected[f"{model_dir}/model.safetensors"] = (
                writer,
                checkpoint_identity(run),
            )
            expected[f"{model_dir}/metrics.json"] = (writer, checkpoint_identity(run))
            expected[SALIENCY.format(**vars(run))] = (
                "saliency",
                saliency_identity(run),
            )
            expected[NORETRAIN.format(**vars(run))] = (
                "noretrain",
                {"dataset": dataset, "model": run.model, "base_seed": int(run.seed)},
            )
            if run.model in sanity_models(dataset):
                expected[SANITY.format(**vars(run))] = (
                    "sanity",
                    {
                        "dataset": dataset,
                        "model": run.model,
                        "base_seed": int(run.seed),
                    },
                )
            for rseed in EXPERIMENT["retrain_seeds"]:
                retrain_dir = RETRAIN_DIR.format(**vars(run), rseed=rseed)
                for name in ("model.safetensors", "metrics.json"):
                    expected[f"{retrain_dir}/{name}"] = (
                        "retrain",
                        run_identity(run, rseed),
                    )
        for table in ("metrics", "diffroar"):
            expected[f"{TABLES}/{table}.parquet".format(dataset=dataset)] = (
                "metrics",
                {"dataset": dataset},
            )
        expected[f"{TABLES}/comparisons.parquet".format(dataset=dataset)] = (
            "comparisons",
            {"dataset": dataset},
        )
    for dataset in block_datasets():
        expected[f"{TABLES}/localization.parquet".format(dataset=dataset)] = (
            "localization",
            {"dataset": dataset},
        )
    for path in robust_targets():
        fields = Path(
            path
        ).parts  # results/models/<dataset>/<model>/seed<seed>/robust.json
        expected[path] = (
            "robust",
            {
                "dataset": fields[2],
                "model": fields[3],
                "seed": int(fields[4][len("seed") :]),
            },
        )
    for path in final_targets():
        writer = "combine_table" if path.endswith(".parquet") else "figure"
        expected.setdefault(path, (writer, None))
    return expected
