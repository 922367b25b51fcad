"""Validate an experiment config against the JSON schema and the names it uses.

Imported by the Snakefile before any job is scheduled, so it stays light: no torch here.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jsonschema.exceptions import ValidationError, best_match

from .architectures import ARCHITECTURE_OPTIONS, feature_layers
from .datafiles import DEFAULT_ROOTS, HOW_TO_OBTAIN, IDX_FILES, IDX_SOURCES, idx_problem

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
        unknown = sorted(set(value) - set(allowed))
        return (
            f"{key + '.' if key != '<config>' else ''}{unknown[0]} = {value[unknown[0]]!r}: "
            f"unknown key; allowed keys here: {', '.join(allowed)}"
        )
    if rule == "required":
        missing = [name for name in expected if name not in value]
        return f"{key}: missing required key {missing[0]!r}"
    if rule == "enum":
        return f"{key} = {value!r}: must be one of {', '.join(map(repr, expected))}"
    allowed = {
        "type": f"must be of type {expected}",
        "minimum": f"must be >= {expected}",
        "maximum": f"must be <= {expected}",
        "exclusiveMinimum": f"must be > {expected}",
        "exclusiveMaximum": f"must be < {expected}",
        "minItems": f"must have at least {expected} item(s)",
        "minProperties": f"must define at least {expected} entry",
        "uniqueItems": "must not contain duplicates",
        "pattern": f"must match {expected} (a letter, then letters, digits or _)",
    }.get(rule, error.message)
    return f"{key} = {value!r}: {allowed}"


def _check_data_files(name: str, dataset: dict[str, Any]) -> None:
    """Fill the default `root` of an IDX loader and stop when its files are not there."""
    if dataset["loader"] not in IDX_SOURCES:
        if "root" in dataset:
            raise ConfigError(
                f"config error: datasets.{name}.root = {dataset['root']!r}: not used by loader "
                f"{dataset['loader']!r} (its images are bundled with scikit-learn)"
            )
        return
    source = IDX_SOURCES[dataset["loader"]]
    if source in DEFAULT_ROOTS:
        dataset.setdefault("root", DEFAULT_ROOTS[source])
    files = ", ".join(name for names in IDX_FILES.values() for name in names)
    if "root" not in dataset:
        raise ConfigError(
            f"config error: datasets.{name}: missing required key 'root' (loader "
            f"{dataset['loader']!r}), the folder with {source}'s IDX files {files} (plain or "
            f".gz); to obtain them, {HOW_TO_OBTAIN[source]}"
        )
    problem = idx_problem(dataset["root"])
    if problem:
        raise ConfigError(
            f"config error: datasets.{name}.root = {dataset['root']!r}: {problem}; dataset "
            f"{name!r} ({source}) needs {files} there (plain or .gz); to obtain them, "
            f"{HOW_TO_OBTAIN[source]}"
        )


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


def method_settings(
    method: str, saliency_cfg: dict[str, Any], model_cfg: dict[str, Any]
) -> dict[str, Any]:
    """The settings that `method`'s attributions depend on, from the `saliency` section and the
    model (diffroar.saliency.Settings fields, plus `seed` for seeded methods). They are the
    saliency rule's params, so changing a setting reruns only the methods that use it."""
    if method == "sobel":
        return {}
    if method == "random":
        return {"seed": saliency_cfg["seed"]}
    settings = {key: saliency_cfg[key] for key in ("batch_size", "target")}
    if method in ("integrated_gradients", "deeplift"):
        settings["baseline"] = saliency_cfg["baseline"]
    if method == "integrated_gradients":
        settings |= {key: saliency_cfg[key] for key in ("steps", "internal_batch_size")}
    if method in NOISE_METHODS:
        keys = ("noise_std", "noise_samples", "internal_batch_size", "seed")
        settings |= {key: saliency_cfg[key] for key in keys}
    if method == "gradcam":
        settings["layer"] = model_cfg["gradcam_layer"]
    return settings


def format_k(keep_fraction: float) -> str:
    """The text of a keep-fraction in paths and tables: 0.05 -> '0.05', 1.0 -> '1'."""
    return f"{float(keep_fraction):g}"


NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _canonical(value: Any) -> Any:
    """`value` with dict keys sorted and numeric strings turned into numbers, recursively.

    Snakemake parses nested `--config` values as text (`experiment={keep_fractions: [0.1]}` gives
    '0.1'; no name or enum of the schema looks like a number, so converting is safe), and it
    compares dict params in key order (sorted keys make a reordered config file rerun nothing).
    """
    if isinstance(value, dict):
        return {key: _canonical(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [_canonical(item) for item in value]
    if isinstance(value, str) and NUMBER.fullmatch(value):
        return float(value) if any(c in value for c in ".eE") else int(value)
    return value


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
    for section in ("datasets", "models"):
        for index, name in enumerate(experiment[section]):
            if name not in config[section]:
                defined = ", ".join(sorted(config[section]))
                raise ConfigError(
                    f"config error: experiment.{section}[{index}] = {name!r}: not defined under "
                    f"`{section}`; defined: {defined}"
                )
    retrain_model = config["retraining"].get("model")
    if retrain_model is not None and retrain_model not in config["models"]:
        raise ConfigError(
            f"config error: retraining.model = {retrain_model!r}: not defined under `models`; "
            f"defined: {', '.join(sorted(config['models']))}"
        )
    for name, model in config["models"].items():
        _check_architecture(name, model)
    if "gradcam" in experiment["methods"]:
        for name in experiment["models"]:
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
    for name in experiment["datasets"]:
        _check_data_files(name, config["datasets"][name])
    for name, dataset in config["datasets"].items():
        if dataset["loader"] in IDX_SOURCES:
            if "test_fraction" in dataset:
                raise ConfigError(
                    f"config error: datasets.{name}.test_fraction = {dataset['test_fraction']!r}: "
                    f"not used by loader {dataset['loader']!r}, whose test split is the official "
                    "one; `test_size` draws a subset of it"
                )
            continue
        dataset.setdefault("test_fraction", 0.2)
        held_out = dataset["val_fraction"] + dataset["test_fraction"]
        if held_out >= 1:
            raise ConfigError(
                f"config error: datasets.{name}.val_fraction + test_fraction = {held_out:g}: "
                "must be < 1 so that training images remain"
            )
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
