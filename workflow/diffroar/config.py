"""Validate an experiment config against the JSON schema and the names it uses.

Imported by the Snakefile before any job is scheduled, so it stays light: no torch here.
"""

from __future__ import annotations

import copy
import difflib
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jsonschema.exceptions import ValidationError, best_match

from .architectures import ARCHITECTURE_OPTIONS, feature_layers
from .datafiles import (
    LOADER_SOURCES,
    SOURCES,
    class_folders,
    download,
    expected_files,
    files_problem,
)

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"
# Attribution methods (diffroar.saliency.METHODS has one function per name).
METHODS = (
    "gradient",
    "gradient_x_input",
    "integrated_gradients",
    "smoothgrad",
    "smoothgrad_sq",
    "vargrad",
    "guided_backprop",
    "gradcam",
    "deeplift",
    "random",
    "sobel",
)
NOISE_METHODS = ("smoothgrad", "smoothgrad_sq", "vargrad")
# Methods whose attributions depend on `saliency.seed`.
SEEDED_METHODS = ("random", *NOISE_METHODS)
# Methods that never look at the model.
CONTROL_METHODS = ("random", "sobel")
# Loaders that build BlockMNIST-style datasets (signal block + null block): localization applies.
BLOCK_LOADERS = ("blockdigits", "blockmnist", "blockmnist_top", "blockfashion")


class ConfigError(ValueError):
    """A config value that the workflow cannot run with; the message names key, value and rule."""


def _with_defaults(validator_class: type) -> type:
    """A validator class that fills in each property's schema `default` before validating it."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema) -> Iterator[ValidationError]:
        if isinstance(instance, dict):
            for key, subschema in properties.items():
                if "default" in subschema and key not in instance:
                    instance[key] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    # YAML's 3.0 is a float: accept only true integers where the schema asks for one, since
    # range() and batch slicing fail on floats deep inside a job.
    type_checker = validator_class.TYPE_CHECKER.redefine(
        "integer", lambda checker, value: isinstance(value, int) and not isinstance(value, bool)
    )
    return jsonschema.validators.extend(
        validator_class, {"properties": set_defaults}, type_checker=type_checker
    )


def _suggestion(word: Any, candidates) -> str:
    """' (did you mean X?)' for the candidate closest to a misspelt `word`, else ''."""
    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, [str(name) for name in candidates], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# What the JSON Schema types are called in messages (a config is YAML: lists and mappings).
TYPE_NAMES = {
    "object": "a mapping (key: value entries)",
    "array": "a list",
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "boolean": "true or false",
    "null": "empty",
}


def _type_text(expected) -> str:
    """'must be ...' text for a schema `type` (a name or a list of names)."""
    names = [expected] if isinstance(expected, str) else list(expected)
    return " or ".join(TYPE_NAMES.get(name, name) for name in names)


def _option_text(option: dict[str, Any]) -> str:
    """'must be ...' text for one option of a oneOf or anyOf: its values, else its type."""
    if "enum" in option:
        return f"one of {', '.join(map(repr, option['enum']))}"
    return _type_text(option.get("type", "?"))


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """`schema` with a local `$ref` followed."""
    while schema.get("$ref", "").startswith("#/$defs/"):
        schema = root["$defs"][schema["$ref"].removeprefix("#/$defs/")]
    return schema


def _duplicate(values: list[Any]) -> Any:
    """The first item of `values` that an earlier one equals."""
    return next((item for index, item in enumerate(values) if item in values[:index]), None)


def _key(path) -> str:
    parts = []
    for part in path:
        parts.append(f"[{part}]" if isinstance(part, int) else f".{part}")
    return "".join(parts).lstrip(".") or "<config>"


def _properties(schema: dict[str, Any], root: dict[str, Any]) -> set[str]:
    """Property names that `schema` defines itself or through a local `$ref`."""
    names = set(schema.get("properties", {}))
    if schema.get("$ref", "").startswith("#/$defs/"):
        names |= _properties(root["$defs"][schema["$ref"].removeprefix("#/$defs/")], root)
    return names


def _describe(error: ValidationError, root: dict[str, Any]) -> str:
    """One line: the key, the offending value and what the schema allows there."""
    key, value, rule = _key(error.absolute_path), error.instance, error.validator
    expected = error.validator_value
    if rule in ("additionalProperties", "unevaluatedProperties"):
        allowed = sorted(_properties(error.schema, root))
        unknown = sorted(set(value) - set(allowed), key=str)
        return (
            f"{key + '.' if key != '<config>' else ''}{unknown[0]} = {value[unknown[0]]!r}: "
            f"unknown key{_suggestion(unknown[0], allowed)}; allowed keys here: "
            f"{', '.join(allowed)}"
        )
    if rule == "required":
        missing = [name for name in expected if name not in value]
        return f"{key}: missing required key {missing[0]!r}"
    if rule == "enum":
        return (
            f"{key} = {value!r}: must be one of {', '.join(map(repr, expected))}"
            f"{_suggestion(value, expected)}"
        )
    if rule == "pattern" and "propertyNames" in error.schema_path:
        return (
            f"{key}: the name {value!r} must match {expected} (a letter, then letters, digits or _)"
        )
    if rule in ("oneOf", "anyOf"):
        kinds = [_option_text(_resolve(option, root)) for option in expected]
        return f"{key} = {value!r}: must be {' or '.join(kinds)}"
    if rule == "type":
        return f"{key} = {value!r}: must be {_type_text(expected)}"
    if rule == "uniqueItems":
        return f"{key} = {value!r}: must not contain duplicates ({_duplicate(value)!r} repeats)"
    allowed = {
        "minimum": f"must be >= {expected}",
        "maximum": f"must be <= {expected}",
        "exclusiveMinimum": f"must be > {expected}",
        "exclusiveMaximum": f"must be < {expected}",
        "minItems": f"must have at least {expected} item(s)",
        "minLength": f"must have at least {expected} character(s)",
        "minProperties": f"must define at least {expected} entry",
        "pattern": f"must match {expected} (a letter, then letters, digits or _)",
    }.get(rule, error.message)
    return f"{key} = {value!r}: {allowed}"


def _check_dataset(name: str, dataset: dict[str, Any]) -> None:
    """Fill a file-backed loader's default `root` and refuse keys its loader does not use."""
    loader = dataset["loader"]
    source = SOURCES.get(LOADER_SOURCES.get(loader))
    unused = {
        "root": source is None,
        "download": source is None or source.downloader is None,
        "image_size": loader != "imagefolder",
        "test_fraction": source is not None,
    }
    for key, refused in unused.items():
        if refused and key in dataset:
            bundled = "its images are bundled with scikit-learn"
            why = {
                "root": bundled,
                "download": f"nothing to download: {source.how_to_obtain}" if source else bundled,
                "image_size": "only imagefolder resizes",
                "test_fraction": "its test split is the official one; `test_size` draws a "
                "subset of it",
            }[key]
            raise ConfigError(
                f"config error: datasets.{name}.{key} = {dataset[key]!r}: not used by loader "
                f"{loader!r} ({why})"
            )
    if loader == "imagefolder" and "image_size" not in dataset:
        raise ConfigError(
            f"config error: datasets.{name}: missing required key 'image_size' (loader "
            "'imagefolder'), the side in pixels the images are resized and cropped to"
        )
    if loader != "imagefolder":
        for index, value in enumerate(dataset.get("classes", [])):
            if value > 9:
                raise ConfigError(
                    f"config error: datasets.{name}.classes[{index}] = {value}: must be <= 9 "
                    f"(loader {loader!r} has the 10 classes 0..9)"
                )
    if source is None:
        dataset.setdefault("test_fraction", 0.2)
        held_out = dataset["val_fraction"] + dataset["test_fraction"]
        if held_out >= 1:
            raise ConfigError(
                f"config error: datasets.{name}.val_fraction + test_fraction = {held_out:g}: "
                "must be < 1 so that training images remain"
            )
        return
    if source.default_root:
        dataset.setdefault("root", source.default_root)
    if "root" not in dataset:
        raise ConfigError(
            f"config error: datasets.{name}: missing required key 'root' (loader {loader!r}), "
            f"the folder with {_obtaining(source)}"
        )


# Images per class (0..9) of scikit-learn's bundled digits (sklearn.datasets.load_digits), so that
# the split sizes of digits and blockdigits are known without loading them.
DIGITS_CLASS_COUNTS = (178, 182, 177, 183, 181, 182, 181, 179, 174, 180)


def train_split_size(dataset: dict[str, Any]) -> tuple[int, bool, str] | None:
    """The number of training images of a checked `dataset` config (defaults filled in) as
    diffroar.data.dataset_splits draws them: (size, exact, how it follows from the config).

    digits and blockdigits: exact, from the bundled digits' class counts and the fractions
    (sklearn's train_test_split holds out ceil(fraction * n) images). A file-backed loader with
    `train_size`: an upper bound, `train_size` less its validation share (its pool of training
    images may be smaller). None when only the data files can tell.
    """
    val_fraction, train_size = dataset["val_fraction"], dataset.get("train_size")
    if dataset["loader"] in ("digits", "blockdigits"):
        default = None if dataset["loader"] == "digits" else [0, 1]
        classes = dataset.get("classes", default)
        total = sum(DIGITS_CLASS_COUNTS[c] for c in classes or range(10))
        pool = total - math.ceil(dataset["test_fraction"] * total)
        if train_size is not None and train_size < pool:
            pool = train_size
        size = pool - math.ceil(val_fraction / (1 - dataset["test_fraction"]) * pool)
        which = f"of classes {', '.join(map(str, classes))}" if classes else "of all 10 classes"
        how = (
            f"{total} images {which}, less test_fraction {dataset['test_fraction']:g}"
            f"{f', subset to train_size {train_size}' if pool == train_size else ''}"
            f", less val_fraction {val_fraction:g}"
        )
        return size, True, how
    if train_size is not None:
        size = train_size - math.ceil(val_fraction * train_size)
        return size, False, f"train_size {train_size} less val_fraction {val_fraction:g}"
    return None


def _check_batch_sizes(config: dict[str, Any]) -> None:
    """Refuse a training or retraining batch larger than a training split whose size the config
    tells (train_split_size)."""
    for name in config["experiment"]["datasets"]:
        split = train_split_size(config["datasets"][name])
        if split is None:
            continue
        size, exact, how = split
        for section in ("training", "retraining"):
            batch_size = config[section]["batch_size"]
            if batch_size > size:
                split_of = f"the training split of dataset {name!r}"
                what = (
                    f"the number of images in {split_of}" if exact else f"the most {split_of} holds"
                )
                raise ConfigError(
                    f"config error: {section}.batch_size = {batch_size}: must be <= {size}, "
                    f"{what} ({how})"
                )


def _obtaining(source, offer_download: bool = True) -> str:
    """`source`'s files and how to obtain them, for messages."""
    hint = source.how_to_obtain
    if source.downloader and offer_download:
        hint = f"set `download: true` (torchvision's downloader, needs a network) or {hint}"
    return f"{source.name}'s {expected_files(source)}; to obtain them, {hint}"


def ensure_data_files(config: dict[str, Any], names) -> None:
    """Make sure the files of datasets `names` are there, downloading them where the config says
    `download: true`; raise ConfigError naming the dataset, the folder, the expected files and
    how to obtain them. Called before any job of a run that builds those datasets' stores."""
    for name in names:
        dataset = config["datasets"][name]
        source = SOURCES.get(LOADER_SOURCES.get(dataset["loader"]))
        if source is None:
            continue
        root = dataset["root"]
        problem = files_problem(source, root)
        if problem and dataset.get("download"):
            try:
                download(source, root)
            except Exception as error:  # noqa: BLE001 - any failure ends in the same message
                raise ConfigError(
                    f"config error: datasets.{name}.download = true: torchvision could not "
                    f"download {source.name} into {root!r} ({type(error).__name__}: {error}); "
                    f"without a network, put there {_obtaining(source, offer_download=False)}"
                ) from error
            problem = files_problem(source, root)
        if problem:
            raise ConfigError(
                f"config error: datasets.{name}.root = {root!r}: {problem}; dataset {name!r} "
                f"needs {_obtaining(source)}"
            )
        if source.name != "imagefolder":
            continue  # the others' 10 classes were checked with the config
        classes = len(class_folders(Path(root) / "train"))
        for index, value in enumerate(dataset.get("classes", [])):
            if value >= classes:
                raise ConfigError(
                    f"config error: datasets.{name}.classes[{index}] = {value}: must be < "
                    f"{classes}, the number of class folders in {root}/train"
                )


def missing_data_files(config: dict[str, Any]) -> list[str]:
    """One line per dataset of the experiment whose files are not (yet) in place."""
    notes = []
    for name in config["experiment"]["datasets"]:
        dataset = config["datasets"][name]
        source = SOURCES.get(LOADER_SOURCES.get(dataset["loader"]))
        problem = source and files_problem(source, dataset["root"])
        if problem:
            then = "downloads them" if dataset.get("download") else "stops"
            notes.append(
                f"note: dataset {name!r}: {dataset['root']} {problem}; a run that builds its "
                f"store first {then}"
            )
    return notes


def _check_architecture(name: str, model: dict[str, Any]) -> None:
    """Fill the architecture's option defaults and refuse options it does not use and unknown
    Grad-CAM layers."""
    options = ARCHITECTURE_OPTIONS[model["architecture"]]
    for option in ("hidden_sizes", "channels"):
        if option in model and option not in options:
            allowed = ", ".join(options) or "none"
            raise ConfigError(
                f"config error: models.{name}.{option} = {model[option]!r}: not used by "
                f"architecture {model['architecture']!r} (its options: {allowed})"
            )
    for option, default in options.items():
        model.setdefault(option, copy.deepcopy(default))
    layers = feature_layers(model)
    if "gradcam_layer" in model and model["gradcam_layer"] not in layers:
        allowed = ", ".join(layers) or "none (no convolutional layer)"
        raise ConfigError(
            f"config error: models.{name}.gradcam_layer = {model['gradcam_layer']!r}: not a layer "
            f"of a {model['architecture']}; allowed: {allowed}"
        )
    if layers:
        model.setdefault("gradcam_layer", layers[-1])


def _check_names(config: dict[str, Any], section: str, names: list[str], key: str) -> None:
    for index, name in enumerate(names):
        if name not in config[section]:
            defined = ", ".join(sorted(config[section]))
            raise ConfigError(
                f"config error: {key}[{index}] = {name!r}: not defined under `{section}`; "
                f"defined: {defined}{_suggestion(name, config[section])}"
            )


def experiment_models(experiment: dict[str, Any], dataset: str | None = None) -> list[str]:
    """The models trained on `dataset` (`experiment.models` is one list for all datasets or a
    list per dataset); with no dataset, every model of the experiment, in order of appearance
    (datasets in their experiment order)."""
    models = experiment["models"]
    if not isinstance(models, dict):
        return list(models)
    if dataset is not None:
        return list(models[dataset])
    return list(
        dict.fromkeys(name for dataset in experiment["datasets"] for name in models[dataset])
    )


def method_settings(
    method: str, saliency_cfg: dict[str, Any], model_cfg: dict[str, Any]
) -> dict[str, Any]:
    """The settings that `method`'s attributions depend on, from the `saliency` section and the
    model (diffroar.saliency.Settings fields, plus `seed` for seeded methods). They are the
    saliency rule's params, so changing a setting reruns only the methods that use it. The batch
    sizes are not among them: attributions do not depend on them (seeded methods draw per image),
    so the saliency job reads them from the config and changing them reruns nothing."""
    if method == "sobel":
        return {}
    if method == "random":
        return {"seed": saliency_cfg["seed"]}
    settings = {"target": saliency_cfg["target"]}
    if method in ("integrated_gradients", "deeplift"):
        settings["baseline"] = saliency_cfg["baseline"]
    if method == "integrated_gradients":
        settings["steps"] = saliency_cfg["steps"]
    if method in NOISE_METHODS:
        keys = ("noise_std", "noise_samples", "seed")
        settings |= {key: saliency_cfg[key] for key in keys}
    if method == "gradcam":
        settings["layer"] = model_cfg["gradcam_layer"]
    return settings


def format_k(keep_fraction: float) -> str:
    """The text of a keep-fraction in paths and tables: 0.05 -> '0.05', 1.0 -> '1'."""
    return f"{float(keep_fraction):g}"


BOOLEANS = {"true": True, "True": True, "false": False, "False": False}
NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _canonical(value: Any) -> Any:
    """`value` with dict keys sorted and numeric and boolean strings turned into numbers and
    booleans, recursively.

    Snakemake parses nested `--config` values as text (`experiment={keep_fractions: [0.1]}` gives
    '0.1', `{download: True}` 'True'; no name or enum of the schema looks like a number or a
    boolean, so converting is safe), and it compares dict params in key order (sorted keys make a
    reordered config file rerun nothing).
    """
    if isinstance(value, dict):
        return {key: _canonical(value[key]) for key in sorted(value, key=str)}
    if isinstance(value, list):
        return [_canonical(item) for item in value]
    if isinstance(value, str) and NUMBER.fullmatch(value):
        return float(value) if any(c in value for c in ".eE") else int(value)
    return BOOLEANS.get(value, value) if isinstance(value, str) else value


def validate_config(config: dict[str, Any], schema_path: Path = SCHEMA_PATH) -> dict[str, Any]:
    """Fill in defaults and check `config` in place; raise ConfigError with one line on the first
    problem. Returns the same dict."""
    config.update({key: _canonical(value) for key, value in config.items()})
    schema = yaml.safe_load(Path(schema_path).read_text())
    validator_class = _with_defaults(jsonschema.validators.validator_for(schema))
    error = best_match(validator_class(schema).iter_errors(config))
    if error is not None:
        raise ConfigError(f"config error: {_describe(error, schema)}")

    experiment = config["experiment"]
    _check_names(config, "datasets", experiment["datasets"], "experiment.datasets")
    models = experiment["models"]
    if isinstance(models, dict):
        for dataset, names in models.items():
            if dataset not in experiment["datasets"]:
                raise ConfigError(
                    f"config error: experiment.models.{dataset} = {names!r}: {dataset!r} is not "
                    f"in experiment.datasets ({', '.join(experiment['datasets'])})"
                )
            _check_names(config, "models", names, f"experiment.models.{dataset}")
        for dataset in experiment["datasets"]:
            if dataset not in models:
                raise ConfigError(
                    f"config error: experiment.models: no models for dataset {dataset!r}; give "
                    "every dataset of experiment.datasets its list, or one list for all"
                )
    else:
        _check_names(config, "models", models, "experiment.models")
    retrain_model = config["retraining"].get("model")
    if retrain_model is not None and retrain_model not in config["models"]:
        raise ConfigError(
            f"config error: retraining.model = {retrain_model!r}: not defined under `models`; "
            f"defined: {', '.join(sorted(config['models']))}"
            f"{_suggestion(retrain_model, config['models'])}"
        )
    for name, model in config["models"].items():
        _check_architecture(name, model)
    if "gradcam" in experiment["methods"]:
        for name in experiment_models(experiment):
            if not feature_layers(config["models"][name]):
                architecture = config["models"][name]["architecture"]
                raise ConfigError(
                    f"config error: experiment.methods = {experiment['methods']!r}: gradcam needs "
                    f"convolutional layers, and model {name!r} is an {architecture!r}; use it "
                    "with models whose architecture is cnn or resnet18"
                )
    if "deeplift" in experiment["methods"] and config["saliency"]["target"] == "loss":
        raise ConfigError(
            "config error: saliency.target = 'loss': deeplift (in experiment.methods) supports "
            "only 'logit' (Captum's DeepLift has no rule for the cross-entropy)"
        )
    for name, dataset in config["datasets"].items():
        _check_dataset(name, dataset)
    _check_batch_sizes(config)
    texts = [format_k(k) for k in experiment["keep_fractions"]]
    for index, text in enumerate(texts):
        if texts.index(text) != index:
            raise ConfigError(
                f"config error: experiment.keep_fractions[{index}] = "
                f"{experiment['keep_fractions'][index]!r}: duplicates keep fraction {text}"
            )
    # again, for the defaults filled in above
    config.update({key: _canonical(value) for key, value in config.items()})
    return config
