"""Validate an experiment config against the JSON schema and the names it uses.

Imported by the Snakefile before any job is scheduled, so it stays light: no torch here.
"""

from __future__ import annotations

import copy
import difflib
import math
import re
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jsonschema.exceptions import ValidationError, best_match

from .architectures import ARCHITECTURE_OPTIONS, feature_layers, is_user_architecture
from .datafiles import (
    LOADER_SOURCES,
    SOURCES,
    class_folders,
    download,
    expected_files,
    files_problem,
)
from .methodnames import MODIFIER_FORMS, NOISE_TUNNELS, MethodNameError, method_base, parse_method
from .plugins import (
    PluginError,
    captum_names,
    check_plugin,
    content_sha256,
    file_sha256,
    is_plugin,
    source_sha256,
    weights_format,
)
from .units import keep_count, ranked_units

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

# The pseudo-imputation of the mask-leakage control (diffroar.imputation): the retrained model sees
# the keep-mask alone. It has no retrain-free curve and is not a fill to compare methods with.
MASK_ONLY = "mask_only"
# Methods that keep only positive evidence (a ReLU on the attributions or on the gradients they
# pass back): with saliency.target 'loss' they would keep what raises the loss.
POSITIVE_EVIDENCE_METHODS = ("gradcam", "guided_backprop")
# Loaders that build BlockMNIST-style datasets (signal block + null block): localization applies.
BLOCK_LOADERS = ("blockdigits", "blockmnist", "blockmnist_top", "blockfashion")


# What a name (of a dataset, model, ...) may be; it appears in paths and tables.
NAME_RULE = "a letter, then letters, digits or _; ASCII only, matched whole"
METHOD_NAME_RULE = "a method, then modifiers each after a +, e.g. gradient+blur1; ASCII only"
# The largest seed (the schema's bound): every seed up to it gives different random numbers.
SEED_MAX = 2**32 - 1
NON_FINITE_TEXT = re.compile(r"[+-]?\.?(nan|inf|infinity)", re.IGNORECASE)


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


def _listed(expected) -> list[str]:
    """A schema `type` (a name or a list of names) as a list."""
    return [expected] if isinstance(expected, str) else list(expected)


def _names_non_finite(value: Any) -> bool:
    """Whether `value` is text that spells NaN or an infinity ('.nan', 'inf', '-.Inf', ...), as
    `--config` passes YAML's special floats."""
    return isinstance(value, str) and NON_FINITE_TEXT.fullmatch(value) is not None


def _non_finite(value: Any, path: tuple = ()) -> tuple[tuple, float] | None:
    """(path, value) of the first NaN or infinite number in `value`, depth first; else None."""
    if isinstance(value, float) and not math.isfinite(value):
        return path, value
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for part, item in items:
        found = _non_finite(item, (*path, part))
        if found:
            return found
    return None


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
        return f"{key}: the name {value!r} must match {expected} ({NAME_RULE})"
    if rule in ("oneOf", "anyOf"):
        kinds = [_option_text(_resolve(option, root)) for option in expected]
        return f"{key} = {value!r}: must be {' or '.join(kinds)}"
    if rule == "type":
        if _names_non_finite(value) and {"number", "integer"} & set(_listed(expected)):
            return f"{key} = {value!r}: must be a finite number ({value!r} is not one)"
        return f"{key} = {value!r}: must be {_type_text(expected)}"
    if rule == "uniqueItems":
        return f"{key} = {value!r}: must not contain duplicates ({_duplicate(value)!r} repeats)"
    if rule == "maximum" and expected == SEED_MAX:
        return (
            f"{key} = {value!r}: must be <= {SEED_MAX} (2**32 - 1: torch's generators keep a "
            "seed's low 32 bits, so a larger seed repeats a smaller one)"
        )
    rule_text = METHOD_NAME_RULE if key.startswith("experiment.methods") else NAME_RULE
    allowed = {
        "minimum": f"must be >= {expected}",
        "maximum": f"must be <= {expected}",
        "exclusiveMinimum": f"must be > {expected}",
        "exclusiveMaximum": f"must be < {expected}",
        "minItems": f"must have at least {expected} item(s)",
        "minLength": f"must have at least {expected} character(s)",
        "minProperties": f"must define at least {expected} entry",
        "pattern": f"must match {expected} ({rule_text})",
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
        classes = dataset_classes(config["datasets"][name])
        if split is None or split[0] < len(classes or ()):
            continue  # no split, or one too small for its classes: _check_split_sizes says so
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


# Images per class (0..9) of the official training and test files of the file-backed sources
# (MNIST's from its files; Fashion-MNIST and CIFAR-10 have equal classes). SVHN's and an image
# folder's are known only from their files.
OFFICIAL_CLASS_COUNTS = {
    "mnist": (
        (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
        (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009),
    ),
    "fashion_mnist": ((6000,) * 10, (1000,) * 10),
    "cifar10": ((5000,) * 10, (1000,) * 10),
}
# Image shape (C, H, W) of each loader's images; imagefolder's is (3, image_size, image_size).
LOADER_SHAPES = {
    "digits": (1, 8, 8),
    "blockdigits": (1, 16, 8),
    "mnist": (1, 28, 28),
    "fashion_mnist": (1, 28, 28),
    "blockmnist": (1, 56, 28),
    "blockmnist_top": (1, 56, 28),
    "blockfashion": (1, 56, 28),
    "cifar10": (3, 32, 32),
    "svhn": (3, 32, 32),
}
# The most parameters a model may have: training holds 16 bytes for each (float32 weights,
# gradients and Adam's two moments), so this bound is 16 GiB before any activation.
PARAMETER_BYTES = 16
MAX_PARAMETERS = 2**30


def image_shape(dataset: dict[str, Any]) -> tuple[int, int, int]:
    """(C, H, W) of the images of a checked `dataset` config, as its loader writes them."""
    if dataset["loader"] == "imagefolder":
        return (3, dataset["image_size"], dataset["image_size"])
    return LOADER_SHAPES[dataset["loader"]]


def dataset_classes(dataset: dict[str, Any]) -> list[int] | None:
    """The class indices a checked `dataset` config keeps (its loader's default when not given);
    None for an image folder without `classes` (its folders tell)."""
    if dataset.get("classes"):
        return list(dataset["classes"])
    if dataset["loader"] in BLOCK_LOADERS:
        return [0, 1]
    return None if dataset["loader"] == "imagefolder" else list(range(10))


def _stratified(
    key: str, value: Any, part: int, whole: int, classes: int, of: str, sides: tuple[str, str]
) -> None:
    """Refuse a stratified split of `whole` images (`of`) into `part` and the rest (named
    `sides`) unless each side holds at least one image per class, as scikit-learn's
    train_test_split would refuse it inside the job."""
    if part < classes or whole - part < classes:
        raise ConfigError(
            f"config error: {key} = {value!r}: splits {of} into {part} {sides[0]} and "
            f"{whole - part} {sides[1]} images, fewer than its {classes} classes on one side; "
            "each side needs one image per class"
        )


def _check_split_sizes(name: str, dataset: dict[str, Any]) -> None:
    """Refuse sizes and fractions of a checked `dataset` config that diffroar.data.dataset_splits
    cannot draw: a `train_size` or `test_size` larger than its pool, and a split (test,
    validation, training, subset) without one image of every class. Exact for digits and
    blockdigits (DIGITS_CLASS_COUNTS) and for the official files of mnist, fashion_mnist and
    cifar10 (OFFICIAL_CLASS_COUNTS); SVHN and image folders are checked by their data job."""
    classes = dataset_classes(dataset)
    if classes is None:
        return
    where = f"datasets.{name}"
    loader, val_fraction = dataset["loader"], dataset["val_fraction"]
    if loader in ("digits", "blockdigits"):
        total = sum(DIGITS_CLASS_COUNTS[c] for c in classes)
        test_fraction = dataset["test_fraction"]
        test = math.ceil(test_fraction * total)
        _stratified(
            f"{where}.test_fraction",
            test_fraction,
            test,
            total,
            len(classes),
            f"the {total} images of dataset {name!r}",
            ("test", "other"),
        )
        pool, pool_how = total - test, f"what test_fraction {test_fraction:g} leaves of {total}"
        val_share = val_fraction / (1 - test_fraction)
    else:
        counts = OFFICIAL_CLASS_COUNTS.get(LOADER_SOURCES[loader])
        if counts is None:
            return
        pool = sum(counts[0][c] for c in classes)
        test = sum(counts[1][c] for c in classes)
        pool_how = f"the official training images of classes {', '.join(map(str, classes))}"
        val_share = val_fraction
    for key, size, available, of in (
        ("train_size", dataset.get("train_size"), pool, f"training pool ({pool_how})"),
        ("test_size", dataset.get("test_size"), test, "test split"),
    ):
        if size is None or size == available:
            continue
        if size > available:
            raise ConfigError(
                f"config error: {where}.{key} = {size}: must be <= {available}, the images in "
                f"the {of} of dataset {name!r}"
            )
        _stratified(
            f"{where}.{key}",
            size,
            size,
            available,
            len(classes),
            f"the {available} images of the {of} of dataset {name!r}",
            ("drawn", "left"),
        )
    if dataset.get("train_size") is not None:
        pool = dataset["train_size"]
    val = math.ceil(val_share * pool)
    _stratified(
        f"{where}.val_fraction",
        val_fraction,
        val,
        pool,
        len(classes),
        f"the {pool}-image training pool of dataset {name!r}",
        ("validation", "training"),
    )


def parameter_count(model: dict[str, Any], shape: tuple[int, int, int], classes: int) -> int:
    """Trainable parameters of a checked mlp or cnn `model` config on images of `shape` (C, H, W)
    with `classes` classes, as diffroar.models builds it (resnet18: its fixed 11 million or so,
    not counted here, and a user architecture, known only by building it: 0)."""
    architecture = model["architecture"]
    if architecture not in ("mlp", "cnn"):  # resnet18, or a user architecture: unknown here
        return 0
    channels, height, width = shape
    count, features = 0, channels * height * width
    if architecture == "cnn":
        for out_channels in model["channels"]:
            count += 9 * channels * out_channels + out_channels
            channels = out_channels
        features = channels * (height // 2) * (width // 2)
    for width_out in [*model["hidden_sizes"], classes]:
        count += features * width_out + width_out
        features = width_out
    return count


def _check_model_sizes(config: dict[str, Any]) -> None:
    """Refuse a model of the experiment with more than MAX_PARAMETERS parameters on a dataset it
    is trained on (the memory estimate of training it: PARAMETER_BYTES a parameter)."""
    experiment = config["experiment"]
    retrain_model = config["retraining"].get("model")
    for dataset_name in experiment["datasets"]:
        dataset = config["datasets"][dataset_name]
        shape = image_shape(dataset)
        classes = len(dataset_classes(dataset) or [0, 1])
        names = experiment_models(experiment, dataset_name)
        for name in dict.fromkeys([*names, *([retrain_model] if retrain_model else [])]):
            model = config["models"][name]
            count = parameter_count(model, shape, classes)
            if count > MAX_PARAMETERS:
                options = {key: model[key] for key in ("channels", "hidden_sizes") if key in model}
                gib = count * PARAMETER_BYTES / 2**30
                raise ConfigError(
                    f"config error: models.{name} = {options!r}: a {model['architecture']} of "
                    f"{count:.3g} parameters on dataset {dataset_name!r} "
                    f"({'x'.join(map(str, shape))}) needs about {gib:.0f} GiB to train "
                    f"({PARAMETER_BYTES} bytes a parameter: weights, gradients, Adam's two "
                    f"moments); must have at most {MAX_PARAMETERS} parameters (16 GiB)"
                )


def _check_keep_counts(config: dict[str, Any]) -> None:
    """Refuse two keep fractions that keep the same number of ranked units (coordinates, or
    pixels with `masking.ranking: pixel`) of an image of a dataset of the experiment: they
    would be one masked dataset measured twice under two names."""
    experiment, ranking = config["experiment"], config["masking"]["ranking"]
    fractions = experiment["keep_fractions"]
    for name in experiment["datasets"]:
        shape = image_shape(config["datasets"][name])
        units = ranked_units(shape, ranking)
        counts = [keep_count(k, units) for k in fractions]
        for index, count in enumerate(counts):
            first = counts.index(count)
            if first != index:
                unit = "coordinates" if ranking == "coordinate" else "pixels"
                raise ConfigError(
                    f"config error: experiment.keep_fractions = {fractions!r}: "
                    f"{fractions[first]!r} and {fractions[index]!r} both keep {count} of the "
                    f"{units} {unit} of dataset {name!r} ({'x'.join(map(str, shape))}); "
                    "give fractions that keep different numbers"
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
    for option in ("hidden_sizes", "channels", "params"):
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


USER_ARCHITECTURE_TEXT = (
    "a user builder 'module:callable' (e.g. 'my_nets:build': a function "
    "build(input_shape, num_classes, **params) -> torch.nn.Module in my_nets.py)"
)


def _check_architecture_name(name: str, model: dict[str, Any]) -> None:
    """Refuse an architecture that is neither a built-in nor `module:callable`."""
    architecture = model["architecture"]
    if architecture in ARCHITECTURE_OPTIONS or is_plugin(architecture):
        return
    built_in = ", ".join(map(repr, ARCHITECTURE_OPTIONS))
    raise ConfigError(
        f"config error: models.{name}.architecture = {architecture!r}: must be one of "
        f"{built_in}{_suggestion(architecture, ARCHITECTURE_OPTIONS)} or {USER_ARCHITECTURE_TEXT}"
    )


def _check_user_architecture(name: str, model: dict[str, Any]) -> None:
    """Refuse the built-ins' options on a user architecture (its own go under `params`, default
    {}) and a builder whose module is not found or visibly lacks the callable (found without
    running it: diffroar.plugins.check_plugin)."""
    architecture = model["architecture"]
    for option in ("hidden_sizes", "channels"):
        if option in model:
            raise ConfigError(
                f"config error: models.{name}.{option} = {model[option]!r}: not used by the user "
                f"architecture {architecture!r}; give its builder's options under `params`"
            )
    model.setdefault("params", {})
    try:
        check_plugin(architecture)
    except PluginError as error:
        raise ConfigError(
            f"config error: models.{name}.architecture = {architecture!r}: {error}"
        ) from error


def _check_checkpoint(name: str, model: dict[str, Any]) -> None:
    """Refuse a `checkpoint` that is not a readable safetensors or torch.save file (relative
    paths are from the working directory); its weights are checked by the import job."""
    path = Path(model["checkpoint"])
    key = f"models.{name}.checkpoint = {model['checkpoint']!r}"
    where = "" if path.is_absolute() else f" (relative to the working directory {Path.cwd()})"
    if not path.exists():
        raise ConfigError(f"config error: {key}: no such file{where}")
    if not path.is_file():
        raise ConfigError(f"config error: {key}: not a file{where}")
    try:
        kind = weights_format(path)
    except OSError as error:
        raise ConfigError(f"config error: {key}: cannot read it ({error})") from error
    if kind is None:
        raise ConfigError(
            f"config error: {key}: neither a safetensors file nor a PyTorch state dict saved "
            "with torch.save (.pt, .pth): its first bytes are neither format's"
        )


def _check_user_models(config: dict[str, Any]) -> None:
    """Refuse gradcam on a user architecture without `gradcam_layer` (its layers are known only
    by building it), and an imported model (`checkpoint`) with more than one base seed: its
    weights are the same for every seed, so an interval over base seeds would be a fake one."""
    experiment = config["experiment"]
    for name in experiment_models(experiment):
        model = config["models"][name]
        architecture = model["architecture"]
        if (
            "gradcam" in experiment["methods"]
            and is_user_architecture(architecture)
            and "gradcam_layer" not in model
        ):
            raise ConfigError(
                f"config error: models.{name}: missing key 'gradcam_layer': gradcam (in "
                f"experiment.methods) needs it for the user architecture {architecture!r}, "
                "whose layers are known only when it is built; name a layer of its network with "
                "a spatial output (a name from network.named_modules(), e.g. 'conv2')"
            )
        seeds = experiment["base_seeds"]
        if "checkpoint" in model and len(seeds) > 1:
            raise ConfigError(
                f"config error: experiment.base_seeds = {seeds!r}: model {name!r} is imported "
                f"(models.{name}.checkpoint = {model['checkpoint']!r}), one set of weights for "
                "every base seed, so a spread over base seeds would repeat one model; give one "
                "base seed"
            )


def model_file_hashes(model: dict[str, Any]) -> dict[str, str]:
    """What a checked model config depends on outside the config, for its fingerprint:
    `source_sha256` of a user architecture's module and `checkpoint_sha256` of an imported
    checkpoint's file ({} for a built-in trained here). Nothing is imported or run."""
    hashes = {}
    if is_user_architecture(model["architecture"]):
        hashes["source_sha256"] = source_sha256(model["architecture"])
    if "checkpoint" in model:
        hashes["checkpoint_sha256"] = file_sha256(model["checkpoint"])
    return hashes


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
    so the saliency job reads them from the config and changing them reruns nothing. A derived
    method (`base+modifier...`) has its base's settings, and the noise settings and seed when it
    applies a noise tunnel; a blur's sigma is in its name."""
    base, modifiers = parse_method(method)
    if modifiers:
        settings = method_settings(base, saliency_cfg, model_cfg)
        if any(kind in NOISE_TUNNELS for kind, _ in modifiers):
            settings |= {key: saliency_cfg[key] for key in ("noise_std", "noise_samples", "seed")}
        return settings
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


# --- user methods: the `methods` section (diffroar.plugins finds and hashes their code) -------
# What an entry under `methods` is: a function `module:callable`, a Captum class by name, or
# precomputed attributions; exactly one of these keys.
USER_METHOD_KINDS = ("function", "captum", "attributions")
# Keyword arguments the saliency stage passes itself, so `params` may not set them.
RESERVED_PARAMS = {
    "function": ("model", "inputs", "targets", "seeds"),
    "captum": ("inputs", "target", "additional_forward_args"),
}
# Captum classes that explain something other than the input (a layer, a neuron) or wrap another
# method: they need constructor arguments a config cannot give.
CAPTUM_REFUSED = re.compile(r"\A(Layer|Neuron|Internal|NoiseTunnel\Z)")
# What a precomputed path may contain: one file per dataset, model or base seed.
PRECOMPUTED_FIELDS = ("dataset", "model", "seed")
PRECOMPUTED_SPLITS = ("train", "val", "test")  # diffroar.store.SPLITS (no zarr import here)


def user_method_kind(entry: dict[str, Any]) -> str:
    """Which of USER_METHOD_KINDS a checked `methods` entry is."""
    return next(kind for kind in USER_METHOD_KINDS if kind in entry)


def precomputed_path(entry: dict[str, Any], dataset: str, model: str, seed: int | str) -> str:
    """The path of a precomputed entry for one base model: `attributions` with `{dataset}`,
    `{model}` and `{seed}` filled in (a path without them serves every base model)."""
    return entry["attributions"].format(dataset=dataset, model=model, seed=seed)


def precomputed_layout(path: str | Path) -> tuple[str, list[str] | None]:
    """('zarr', None) for a zarr store with an `attributions` array in each of the groups train,
    val and test, ('npy', [train.npy, val.npy, test.npy]) for a directory of those files: the
    kind and the files that make its content (None: every file under it). ValueError saying
    what is missing."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{str(path)!r} does not exist")
    if (path / "zarr.json").is_file() or (path / ".zgroup").is_file():
        missing = [s for s in PRECOMPUTED_SPLITS if not (path / s / "attributions").is_dir()]
        if missing:
            raise ValueError(
                f"the zarr store {str(path)!r} has no {missing[0]}/attributions array (it "
                f"needs one per split: {', '.join(PRECOMPUTED_SPLITS)})"
            )
        return "zarr", None
    files = [f"{split}.npy" for split in PRECOMPUTED_SPLITS]
    if path.is_dir() and any((path / name).is_file() for name in files):
        missing = [name for name in files if not (path / name).is_file()]
        if missing:
            raise ValueError(f"{str(path)!r} has no {missing[0]} (it needs {', '.join(files)})")
        return "npy", files
    raise ValueError(
        f"{str(path)!r} is neither a zarr store (groups {', '.join(PRECOMPUTED_SPLITS)} each "
        f"holding an `attributions` array) nor a directory with {', '.join(files)}"
    )


def _check_user_method(name: str, entry: dict[str, Any], config: dict[str, Any]) -> None:
    """Refuse a `methods` entry that cannot run, before any job: its kind, its keys, and what
    its code or files tell without running them (diffroar.plugins)."""
    where = f"methods.{name}"
    kinds = [kind for kind in USER_METHOD_KINDS if kind in entry]
    if len(kinds) != 1:
        given = f"it gives {', '.join(kinds)}" if kinds else "it gives none"
        raise ConfigError(
            f"config error: {where} = {entry!r}: give exactly one of function (module:callable), "
            f"captum (a captum.attr class) or attributions (precomputed); {given}"
        )
    if name in METHODS:
        raise ConfigError(
            f"config error: {where}: {name!r} is a built-in method; give your method another "
            "name (a user method may not replace a built-in)"
        )
    kind = kinds[0]
    for key, allowed in (("init", ("captum",)), ("params", ("function", "captum"))):
        if key in entry and kind not in allowed:
            raise ConfigError(
                f"config error: {where}.{key} = {entry[key]!r}: not used by a {kind} method "
                f"(only {' and '.join(allowed)} methods take {key})"
            )
    for key in RESERVED_PARAMS.get(kind, ()):
        if key in entry.get("params", {}):
            raise ConfigError(
                f"config error: {where}.params.{key} = {entry['params'][key]!r}: set by the "
                f"saliency stage itself (it passes {', '.join(RESERVED_PARAMS[kind])})"
            )
    if kind == "function":
        try:
            check_plugin(entry["function"])
        except PluginError as error:
            raise ConfigError(
                f"config error: {where}.function = {entry['function']!r}: {error}"
            ) from error
    elif kind == "captum":
        names = captum_names()
        if names is not None and entry["captum"] not in names:
            raise ConfigError(
                f"config error: {where}.captum = {entry['captum']!r}: not a class of captum.attr"
                f"{_suggestion(entry['captum'], names)}"
            )
        if CAPTUM_REFUSED.match(entry["captum"]):
            raise ConfigError(
                f"config error: {where}.captum = {entry['captum']!r}: explains a layer or a "
                "neuron, or wraps another method; only classes that attribute the model's "
                "inputs and take just the model (Saliency, GradientShap, Occlusion, "
                "FeatureAblation, ...) can be named"
            )
    else:
        _check_precomputed(name, entry, config)


def _check_precomputed(name: str, entry: dict[str, Any], config: dict[str, Any]) -> None:
    """Refuse a precomputed path with other placeholders than PRECOMPUTED_FIELDS, or one that
    is missing or lacks a split for a base model of the experiment."""
    where = f"methods.{name}.attributions = {entry['attributions']!r}"
    for _, field, spec, _ in string.Formatter().parse(entry["attributions"]):
        if field is not None and (field not in PRECOMPUTED_FIELDS or spec):
            placeholder = "{" + field + (f":{spec}" if spec else "") + "}"
            raise ConfigError(
                f"config error: {where}: unknown placeholder {placeholder}; allowed: "
                f"{', '.join('{' + f + '}' for f in PRECOMPUTED_FIELDS)}"
            )
    experiment = config["experiment"]
    for dataset in experiment["datasets"]:
        for model in experiment_models(experiment, dataset):
            for seed in experiment["base_seeds"]:
                path = precomputed_path(entry, dataset, model, seed)
                try:
                    precomputed_layout(path)
                except ValueError as error:
                    raise ConfigError(
                        f"config error: {where}: {error} (the attributions of dataset "
                        f"{dataset!r}, model {model!r}, base seed {seed})"
                    ) from None


def _check_user_methods(config: dict[str, Any]) -> None:
    """Check every entry of `methods`, and that every name of experiment.methods is a built-in
    method or one of them (and a user function is not asked to explain the loss)."""
    for name, entry in config["methods"].items():
        _check_user_method(name, entry, config)
    user = config["methods"]  # every name of experiment.methods is known: _check_methods
    functions = [
        name
        for name in config["experiment"]["methods"]
        if method_base(name) in user and user_method_kind(user[method_base(name)]) == "function"
    ]
    if functions and config["saliency"]["target"] == "loss":
        raise ConfigError(
            f"config error: saliency.target = 'loss': the user functions {', '.join(functions)} "
            "(in experiment.methods) are given the classes to explain, not the loss; use "
            "target 'logit' or 'predicted', or a built-in or captum method for the loss"
        )


def user_method_settings(
    entry: dict[str, Any], saliency_cfg: dict[str, Any], dataset: str, model: str, seed: int
) -> dict[str, Any]:
    """What a user method's attributions of one base model depend on, as method_settings gives
    a built-in's (they are the saliency rule's params): the target and seed a function or a
    Captum class is given, and under `user_method` its entry, with the sha256 of the function's
    module file (found without importing it), or the precomputed path of this base model and
    the sha256 of its files. Editing the module or the files changes them, so the method's
    saliency and what follows it rerun, nothing else."""
    kind = user_method_kind(entry)
    if kind == "attributions":
        path = precomputed_path(entry, dataset, model, seed)
        _, names = precomputed_layout(path)
        return {"user_method": {"attributions": path, "sha256": content_sha256(path, names)}}
    user = {kind: entry[kind], "params": entry.get("params", {})}
    if kind == "function":
        user["source_sha256"] = source_sha256(entry["function"])
    else:
        user["init"] = entry.get("init", {})
    settings = {key: saliency_cfg[key] for key in ("target", "seed")}
    return settings | {"user_method": user}


def model_independent(method: str) -> bool:
    """Whether `method`'s attributions never look at the model: a control, with or without
    modifiers (they only transform what the control gives)."""
    return method_base(method) in CONTROL_METHODS


def _check_methods(config: dict[str, Any]) -> None:
    """Refuse a method whose base is not in the registry, an unknown modifier or a bad sigma, a
    derived method that is a built-in one under another name (`gradient+smoothgrad`), and a
    final `abs` that changes no ranking."""
    methods, user = config["experiment"]["methods"], config["methods"]
    for index, name in enumerate(methods):
        key = f"experiment.methods[{index}] = {name!r}"
        base = method_base(name)
        if base not in METHODS and base not in user:
            defined = f"defined: {', '.join(user)}" if user else "none defined"
            raise ConfigError(
                f"config error: {key}: must be one of {', '.join(map(repr, METHODS))} (built-in) "
                f"or a name under `methods` ({defined}), optionally followed by modifiers "
                f"+{', +'.join(MODIFIER_FORMS)} (e.g. 'gradient+blur1')"
                f"{_suggestion(base, [*METHODS, *user])}"
            )
        try:
            _, modifiers = parse_method(name)
        except MethodNameError as error:
            raise ConfigError(f"config error: {key}: {error}") from None
        if modifiers and base in user and user_method_kind(user[base]) == "attributions":
            raise ConfigError(
                f"config error: {key}: {base!r} is precomputed attributions, used as they are; "
                "modifiers apply to methods the saliency stage computes (a function, a Captum "
                "class or a built-in)"
            )
        if base == "gradient" and len(modifiers) == 1 and modifiers[0][0] in NOISE_TUNNELS:
            raise ConfigError(
                f"config error: {key}: is the built-in {modifiers[0][0]!r} (the noise tunnel "
                f"over the gradient); list it as {modifiers[0][0]!r}"
            )
        if modifiers and modifiers[-1][0] == "abs" and config["masking"]["ranking"] == "coordinate":
            before = name.rsplit("+", 1)[0]
            raise ConfigError(
                f"config error: {key}: ranks every coordinate as {before!r} does (masking.ranking "
                "'coordinate' ranks |attribution|); abs changes a method only before a blur or a "
                "noise tunnel (e.g. 'gradient+abs+blur1') or with masking.ranking 'pixel'"
            )


def _check_sanity(config: dict[str, Any]) -> None:
    """Refuse a `sanity.models` entry that is not a model of the experiment."""
    models = experiment_models(config["experiment"])
    for index, name in enumerate(config["sanity"].get("models", [])):
        if name not in models:
            raise ConfigError(
                f"config error: sanity.models[{index}] = {name!r}: not a model of the "
                f"experiment; its models: {', '.join(models)}{_suggestion(name, models)}"
            )


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
    found = _non_finite(config)
    if found:
        path, value = found
        raise ConfigError(
            f"config error: {_key(path)} = {value!r}: must be a finite number (NaN and "
            "infinities are refused everywhere)"
        )
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
        _check_architecture_name(name, model)
        if is_user_architecture(model["architecture"]):
            _check_user_architecture(name, model)
        else:
            _check_architecture(name, model)
        if "checkpoint" in model:
            _check_checkpoint(name, model)
    _check_user_models(config)
    _check_user_methods(config)
    _check_methods(config)
    _check_sanity(config)
    bases = {method_base(name) for name in experiment["methods"]}
    if "gradcam" in bases:
        for name in experiment_models(experiment):
            if not feature_layers(config["models"][name]):
                architecture = config["models"][name]["architecture"]
                raise ConfigError(
                    f"config error: experiment.methods = {experiment['methods']!r}: gradcam needs "
                    f"convolutional layers, and model {name!r} is an {architecture!r}; use it "
                    "with models whose architecture is cnn or resnet18"
                )
    if "deeplift" in bases and config["saliency"]["target"] == "loss":
        raise ConfigError(
            "config error: saliency.target = 'loss': deeplift (in experiment.methods) supports "
            "only 'logit' and 'predicted' (Captum's DeepLift has no rule for the cross-entropy)"
        )
    positive = [name for name in POSITIVE_EVIDENCE_METHODS if name in bases]
    if positive and config["saliency"]["target"] == "loss":
        raise ConfigError(
            f"config error: saliency.target = 'loss': {' and '.join(positive)} (in "
            "experiment.methods) keep positive evidence (ReLU); with the loss they keep what "
            f"raises it. Use target 'logit' or 'predicted', or drop {' and '.join(positive)} "
            "from experiment.methods"
        )
    if experiment["imputations"] == [MASK_ONLY]:
        raise ConfigError(
            "config error: experiment.imputations = ['mask_only']: mask_only is the control of "
            "the other imputations; list one of mean, channel_mean, noisy_linear beside it"
        )
    for name, dataset in config["datasets"].items():
        _check_dataset(name, dataset)
    _check_batch_sizes(config)
    for name in experiment["datasets"]:
        _check_split_sizes(name, config["datasets"][name])
    _check_model_sizes(config)
    texts = [format_k(k) for k in experiment["keep_fractions"]]
    for index, text in enumerate(texts):
        if texts.index(text) != index:
            raise ConfigError(
                f"config error: experiment.keep_fractions[{index}] = "
                f"{experiment['keep_fractions'][index]!r}: duplicates keep fraction {text}"
            )
    _check_keep_counts(config)
    # again, for the defaults filled in above
    config.update({key: _canonical(value) for key, value in config.items()})
    return config
