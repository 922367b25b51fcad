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

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"
# Methods whose attributions depend on `saliency.seed`; only their saliency reruns when it changes.
SEEDED_METHODS = ("random",)
# Loaders that build BlockMNIST-style datasets (signal block + null block): localization applies.
BLOCK_LOADERS = ("blockdigits",)


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


def _describe(error: ValidationError) -> str:
    """One line: the key, the offending value and what the schema allows there."""
    key, value, rule = _key(error.absolute_path), error.instance, error.validator
    expected = error.validator_value
    if rule == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
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
        raise ConfigError(f"config error: {_describe(error)}")

    experiment = config["experiment"]
    for section in ("datasets", "models"):
        for index, name in enumerate(experiment[section]):
            if name not in config[section]:
                defined = ", ".join(sorted(config[section]))
                raise ConfigError(
                    f"config error: experiment.{section}[{index}] = {name!r}: not defined under "
                    f"`{section}`; defined: {defined}"
                )
    for name, dataset in config["datasets"].items():
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
