"""validate_config: defaults, one-line errors naming key, value and rule; schema vs registries."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import yaml
from diffroar import config as config_module
from diffroar.config import ConfigError, experiment_models, format_k, validate_config

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = yaml.safe_load((REPO / "config.yaml").read_text())
SCHEMA = yaml.safe_load(config_module.SCHEMA_PATH.read_text())


def default_config() -> dict:
    return copy.deepcopy(DEFAULT_CONFIG)


def test_default_config_is_valid_and_returned_in_place():
    config = default_config()
    assert validate_config(config) is config


def test_defaults_are_filled_in():
    config = default_config()
    del config["training"]
    del config["retraining"]
    del config["experiment"]["retrain_seeds"]
    del config["experiment"]["base_seeds"]
    del config["experiment"]["imputations"]
    del config["models"]["mlp_standard"]["training"]
    del config["models"]["mlp_standard"]["hidden_sizes"]
    validate_config(config)

    expected_optimisation = {
        "epochs": 30,
        "batch_size": 64,
        "learning_rate": 0.001,
        "weight_decay": 0.0,
        "precision": "auto",
    }
    assert config["training"] == expected_optimisation | {"eval_attack": {"restarts": 1}}
    assert config["retraining"] == expected_optimisation | {"group_seeds": False}
    assert config["experiment"]["retrain_seeds"] == [0, 1]
    assert config["experiment"]["base_seeds"] == [0]
    assert config["models"]["mlp_standard"]["training"] == {"mode": "standard", "steps": 7}
    assert config["models"]["mlp_standard"]["hidden_sizes"] == [256, 256]
    assert config["models"]["mlp_linf"]["training"]["steps"] == 7
    assert config["saliency"] == {
        "batch_size": "auto",
        "baseline": "zero",
        "internal_batch_size": "auto",
        "noise_samples": 16,
        "noise_std": 0.15,
        "seed": 0,
        "steps": 32,
        "target": "logit",
    }
    assert config["masking"] == {"noise": 0.01, "ranking": "coordinate", "tiebreak_seed": 0}
    assert config["experiment"]["imputations"] == ["mean", "mask_only"]  # the control is on
    assert "model" not in config["retraining"]
    assert config["figures"] == {"gallery_images": 6}
    assert config["sanity"] == {"images": 200, "seed": 0}  # every model: no `models`
    for dataset in config["datasets"].values():
        assert dataset["val_fraction"] == 0.15
        assert dataset["test_fraction"] == 0.2
        assert dataset["split_seed"] == 0
        assert dataset["null_patch"] == "square_outline"


def test_defaults_do_not_override_given_values():
    config = default_config()
    config["training"] = {"epochs": 3}
    config["experiment"]["retrain_seeds"] = [5]
    validate_config(config)
    assert config["training"]["epochs"] == 3
    assert config["training"]["batch_size"] == 64
    assert config["experiment"]["retrain_seeds"] == [5]


def test_default_values_are_not_shared_between_configs():
    first, second = default_config(), default_config()
    del first["experiment"]["retrain_seeds"]
    del second["experiment"]["retrain_seeds"]
    validate_config(first)
    validate_config(second)
    first["experiment"]["retrain_seeds"].append(7)
    assert second["experiment"]["retrain_seeds"] == [0, 1]


def _set(*path_and_value):
    """An edit that sets config[path...] = value."""
    *path, key, value = path_and_value

    def edit(config):
        node = config
        for part in path:
            node = node[part]
        node[key] = value

    return edit


def _delete(*path):
    def edit(config):
        node = config
        for part in path[:-1]:
            node = node[part]
        del node[path[-1]]

    return edit


def _rename_key(*path_and_names):
    *path, old, new = path_and_names

    def edit(config):
        node = config
        for part in path:
            node = node[part]
        node[new] = node.pop(old)

    return edit


def _rename_model(old, new):
    def edit(config):
        config["models"][new] = config["models"].pop(old)
        models = config["experiment"]["models"]
        models[models.index(old)] = new

    return edit


# (id, edit of the default config, substrings the one-line message must contain: key path, bad
# value, what is allowed)
BAD_CONFIGS = [
    (
        "the mask-only control alone",
        _set("experiment", "imputations", ["mask_only"]),
        ["experiment.imputations", "'mask_only'", "mean, channel_mean, noisy_linear"],
    ),
    (
        "unknown loader",
        _set("datasets", "digits", "loader", "cifar100"),
        ["datasets.digits.loader", "'cifar100'", "'digits'", "'blockdigits'", "'mnist'"],
    ),
    (
        "unknown method",
        _set("experiment", "methods", ["gradient", "lime"]),
        ["experiment.methods[1]", "'lime'", "'gradient'", "'random'"],
    ),
    (
        "unknown base of a derived method",
        _set("experiment", "methods", ["gradeint+blur1"]),
        [
            "experiment.methods[0] = 'gradeint+blur1'",
            "'sobel'",
            "+blur<sigma>",
            "(did you mean 'gradient'?)",
        ],
    ),
    (
        "unknown modifier",
        _set("experiment", "methods", ["gradient", "gradient+sharpen"]),
        [
            "experiment.methods[1] = 'gradient+sharpen'",
            "unknown modifier 'sharpen'",
            "abs, blur<sigma>, smoothgrad, smoothgrad_sq, vargrad",
        ],
    ),
    (
        "blur without its sigma",
        _set("experiment", "methods", ["gradient+blur"]),
        ["experiment.methods[0] = 'gradient+blur'", "unknown modifier 'blur'", "e.g. blur1"],
    ),
    (
        "blur of sigma 0",
        _set("experiment", "methods", ["gradient+blur0"]),
        ["experiment.methods[0] = 'gradient+blur0'", "sigma must be > 0 and <= 100 pixels"],
    ),
    (
        "a sigma written two ways",
        _set("experiment", "methods", ["gradient+blur2.0"]),
        ["experiment.methods[0] = 'gradient+blur2.0'", "write it blur2"],
    ),
    (
        "a method name that is no name",
        _set("experiment", "methods", ["gradient+blur-1"]),
        [
            "experiment.methods[0] = 'gradient+blur-1'",
            "must match",
            "a method, then modifiers each after a +",
        ],
    ),
    (
        "the built-in smoothgrad under another name",
        _set("experiment", "methods", ["gradient+smoothgrad"]),
        ["experiment.methods[0] = 'gradient+smoothgrad'", "the built-in 'smoothgrad'"],
    ),
    (
        "a final abs under coordinate ranking",
        _set("experiment", "methods", ["integrated_gradients+abs"]),
        [
            "experiment.methods[0] = 'integrated_gradients+abs'",
            "ranks every coordinate as 'integrated_gradients' does",
            "'gradient+abs+blur1'",
        ],
    ),
    (
        "gradcam with a modifier on an mlp",
        _set("experiment", "methods", ["gradcam+blur1"]),
        ["experiment.methods", "gradcam needs convolutional layers", "'mlp_standard'"],
    ),
    (
        "a sanity model that is not in the experiment",
        _set("sanity", {"models": ["mlp_standard", "mlp_l2"]}),
        [
            "sanity.models[1] = 'mlp_l2'",
            "not a model of the experiment",
            "mlp_standard, mlp_linf",
            "(did you mean 'mlp_linf'?)",
        ],
    ),
    (
        "a sanity check on one image",
        _set("sanity", {"images": 1}),
        ["sanity.images = 1", "must be >= 2"],
    ),
    (
        "k zero",
        _set("experiment", "keep_fractions", [0, 0.5]),
        ["experiment.keep_fractions[0]", "= 0", "> 0"],
    ),
    (
        "k above one",
        _set("experiment", "keep_fractions", [0.1, 1.5]),
        ["experiment.keep_fractions[1]", "1.5", "<= 1"],
    ),
    (
        "k duplicated",
        _set("experiment", "keep_fractions", [0.1, 0.10]),
        ["experiment.keep_fractions", "0.1", "duplicate"],
    ),
    (
        "k duplicated after formatting",
        _set("experiment", "keep_fractions", [0.1, 0.1000000001]),
        ["experiment.keep_fractions[1]", "0.1000000001", "duplicate"],
    ),
    (
        "negative eps",
        _set("models", "mlp_linf", "training", "eps", -0.1),
        ["models.mlp_linf.training.eps", "-0.1", "> 0"],
    ),
    (
        "zero eps",
        _set("models", "mlp_linf", "training", "eps", 0),
        ["models.mlp_linf.training.eps", "= 0", "> 0"],
    ),
    (
        "pgd without eps",
        _delete("models", "mlp_linf", "training", "eps"),
        ["models.mlp_linf.training", "'eps'", "missing"],
    ),
    (
        "pgd without norm",
        _set("models", "mlp_standard", "training", {"mode": "pgd", "eps": 0.1}),
        ["models.mlp_standard.training", "'norm'", "missing"],
    ),
    (
        "key typo",
        _rename_key("experiment", "keep_fractions", "keep_fracions"),
        ["experiment.keep_fracions", "unknown key", "keep_fractions"],
    ),
    (
        "unknown top-level key",
        _set("trainng", {"epochs": 3}),
        ["trainng", "{'epochs': 3}", "unknown key", "training"],
    ),
    (
        "model not defined",
        _set("experiment", "models", ["mlp_standard", "cnn"]),
        ["experiment.models[1]", "'cnn'", "not defined", "mlp_linf", "mlp_standard"],
    ),
    (
        "dataset not defined",
        _set("experiment", "datasets", ["mnist"]),
        ["experiment.datasets[0]", "'mnist'", "not defined", "blockdigits", "digits"],
    ),
    (
        "zero epochs",
        _set("training", "epochs", 0),
        ["training.epochs", "= 0", ">= 1"],
    ),
    (
        "zero retraining epochs",
        _set("retraining", "epochs", 0),
        ["retraining.epochs", "= 0", ">= 1"],
    ),
    (
        "batch size as text",
        _set("training", "batch_size", "sixty-four"),
        ["training.batch_size", "'sixty-four'", "integer"],
    ),
    (
        "empty methods",
        _set("experiment", "methods", []),
        ["experiment.methods", "[]", "at least 1"],
    ),
    (
        "held-out fractions sum to one",
        _set("datasets", "digits", "val_fraction", 0.8),
        ["datasets.digits", "val_fraction + test_fraction", "= 1:", "< 1"],
    ),
    (
        "held-out fractions above one",
        lambda config: config["datasets"]["blockdigits"].update(
            val_fraction=0.6, test_fraction=0.5
        ),
        ["datasets.blockdigits", "val_fraction + test_fraction", "1.1", "< 1"],
    ),
    (
        "bad norm",
        _set("models", "mlp_linf", "training", "norm", "l3"),
        ["models.mlp_linf.training.norm", "'l3'", "'linf'", "'l2'"],
    ),
    (
        "model name with hyphen",
        _rename_model("mlp_linf", "mlp-linf"),
        ["models", "'mlp-linf'", "must match"],
    ),
    (
        "unknown architecture",
        _set("models", "mlp_standard", "architecture", "vgg16"),
        ["models.mlp_standard.architecture", "'vgg16'", "'mlp'", "'cnn'", "'resnet18'"],
    ),
    (
        "unknown imputation",
        _set("experiment", "imputations", ["mean", "blur"]),
        ["experiment.imputations[1]", "'blur'", "'mean'", "'channel_mean'", "'noisy_linear'"],
    ),
    (
        "gradcam on an mlp",
        _set("experiment", "methods", ["gradient", "gradcam"]),
        ["experiment.methods", "'gradcam'", "'mlp_standard'", "'mlp'", "cnn or resnet18"],
    ),
    (
        "unknown gradcam layer",
        _set("models", "mlp_standard", {"architecture": "cnn", "gradcam_layer": "conv5"}),
        ["models.mlp_standard.gradcam_layer", "'conv5'", "conv1, conv2"],
    ),
    (
        "gradcam layer of an mlp",
        _set("models", "mlp_standard", "gradcam_layer", "fc1"),
        ["models.mlp_standard.gradcam_layer", "'fc1'", "no convolutional layer"],
    ),
    (
        "option the architecture does not use",
        _set("models", "mlp_standard", {"architecture": "resnet18", "hidden_sizes": [64]}),
        ["models.mlp_standard.hidden_sizes", "[64]", "not used by architecture 'resnet18'"],
    ),
    (
        "cnn channels on an mlp",
        _set("models", "mlp_standard", "channels", [8]),
        ["models.mlp_standard.channels", "[8]", "'mlp'", "hidden_sizes"],
    ),
    (
        "retraining model not defined",
        _set("retraining", "model", "resnet"),
        ["retraining.model", "'resnet'", "not defined", "mlp_linf, mlp_standard"],
    ),
    (
        "retraining key typo",
        _set("retraining", "epoch", 3),
        ["retraining.epoch", "unknown key", "epochs", "model"],
    ),
    (
        "training key typo",
        _set("training", "learning_rat", 0.1),
        ["training.learning_rat", "unknown key", "learning_rate"],
    ),
    (
        "unknown target",
        _set("saliency", {"target": "probability"}),
        ["saliency.target", "'probability'", "'logit'", "'loss'", "'predicted'"],
    ),
    (
        "deeplift of the loss",
        lambda config: config.update(
            saliency={"target": "loss"},
            experiment=config["experiment"] | {"methods": ["gradient", "deeplift"]},
        ),
        ["saliency.target", "'loss'", "deeplift", "'logit'", "'predicted'"],
    ),
    (
        "guided_backprop of the loss",
        lambda config: config.update(
            saliency={"target": "loss"},
            experiment=config["experiment"] | {"methods": ["gradient", "guided_backprop"]},
        ),
        [
            "saliency.target = 'loss'",
            "guided_backprop (in experiment.methods)",
            "raises it",
            "'logit' or 'predicted'",
            "drop guided_backprop from experiment.methods",
        ],
    ),
    (
        "gradcam and guided_backprop of the loss",
        lambda config: config.update(
            saliency={"target": "loss"},
            models={"small_cnn": {"architecture": "cnn"}},
            experiment=config["experiment"]
            | {"models": ["small_cnn"], "methods": ["gradcam", "guided_backprop", "random"]},
        ),
        [
            "saliency.target = 'loss'",
            "gradcam and guided_backprop (in experiment.methods)",
            "'logit' or 'predicted'",
            "drop gradcam and guided_backprop from experiment.methods",
        ],
    ),
    (
        "eval attack without steps",
        _set("training", "eval_attack", {"steps": 0}),
        ["training.eval_attack.steps = 0", "must be >= 1"],
    ),
    (
        "eval attack with fractional restarts",
        _set("training", "eval_attack", {"restarts": 2.5}),
        ["training.eval_attack.restarts = 2.5", "must be an integer"],
    ),
    (
        "eval attack with infinite restarts",
        _set("training", "eval_attack", {"restarts": float("inf")}),
        ["training.eval_attack.restarts = inf", "must be a finite number"],
    ),
    (
        "eval attack key typo",
        _set("training", "eval_attack", {"restart": 2}),
        ["training.eval_attack.restart", "(did you mean 'restarts'?)", "restarts, steps"],
    ),
    (
        "eval attack of retraining",
        _set("retraining", "eval_attack", {"restarts": 2}),
        ["retraining.eval_attack", "unknown key"],
    ),
    (
        "unknown ranking",
        _set("masking", {"ranking": "superpixel"}),
        ["masking.ranking", "'superpixel'", "'coordinate'", "'pixel'"],
    ),
    (
        "negative imputation noise",
        _set("masking", {"noise": -0.01}),
        ["masking.noise", "-0.01", ">= 0"],
    ),
    (
        "zero integration steps",
        _set("saliency", {"steps": 0}),
        ["saliency.steps", "= 0", ">= 1"],
    ),
    (
        "a batch size neither an integer nor auto",
        _set("saliency", {"internal_batch_size": "large"}),
        ["saliency.internal_batch_size", "'large'", "'auto'"],
    ),
    (
        "a fractional batch size",
        _set("saliency", {"batch_size": 1.5}),
        ["saliency.batch_size", "1.5", "an integer or one of 'auto'"],
    ),
    (
        "negative seed",
        _set("experiment", "retrain_seeds", [0, -1]),
        ["experiment.retrain_seeds[1]", "-1", ">= 0"],
    ),
    (
        "one class",
        _set("datasets", "blockdigits", "classes", [0]),
        ["datasets.blockdigits.classes", "[0]", "at least 2"],
    ),
    (
        "missing section",
        _delete("models"),
        ["'models'", "missing"],
    ),
    (
        "models of a dataset outside the experiment",
        _set("experiment", "models", {"digits": ["mlp_standard"], "mnist": ["mlp_linf"]}),
        ["experiment.models.mnist", "['mlp_linf']", "not in experiment.datasets"],
    ),
    (
        "a dataset without models",
        _set("experiment", "models", {"digits": ["mlp_standard"]}),
        ["experiment.models", "no models for dataset 'blockdigits'"],
    ),
    (
        "an undefined model of one dataset",
        _set("experiment", "models", {"digits": ["mlp_l2"], "blockdigits": ["mlp_linf"]}),
        ["experiment.models.digits[0]", "'mlp_l2'", "not defined", "mlp_linf, mlp_standard"],
    ),
    (
        "resources of an unknown rule",
        _set("resources", {"training": {"gpu": 1}}),
        ["resources.training", "unknown key", "data, import_checkpoint, localization, mask"],
    ),
    (
        "a negative gpu count",
        _set("resources", {"train": {"gpu": -1}}),
        ["resources.train.gpu", "-1", ">= 0"],
    ),
    (
        "key typo gets a suggestion",
        _set("experiment", "keep_fracions", [0.1]),
        ["experiment.keep_fracions", "[0.1]", "unknown key (did you mean 'keep_fractions'?)"],
    ),
    (
        "misspelt method gets a suggestion",
        _set("experiment", "methods", ["gradeint"]),
        ["experiment.methods[0]", "'gradeint'", "must be one of", "(did you mean 'gradient'?)"],
    ),
    (
        "misspelt loader gets a suggestion",
        _set("datasets", "blockdigits", "loader", "blockdigit"),
        ["datasets.blockdigits.loader", "'blockdigit'", "(did you mean 'blockdigits'?)"],
    ),
    (
        "misspelt dataset gets a suggestion",
        _set("experiment", "datasets", ["digit"]),
        ["experiment.datasets[0]", "'digit'", "not defined", "(did you mean 'digits'?)"],
    ),
    (
        "misspelt retraining model gets a suggestion",
        _set("retraining", "model", "mlp_lnf"),
        ["retraining.model", "'mlp_lnf'", "not defined", "(did you mean 'mlp_linf'?)"],
    ),
    (
        "list where a mapping belongs",
        _set("models", ["mlp_standard"]),
        ["models = ['mlp_standard']", "must be a mapping"],
    ),
    (
        "text where a list belongs",
        _set("experiment", "methods", "gradient"),
        ["experiment.methods = 'gradient'", "must be a list"],
    ),
    (
        "text where a boolean belongs",
        _set("datasets", "digits", {"loader": "mnist", "root": "/data/mnist", "download": "yes"}),
        ["datasets.digits.download = 'yes'", "must be true or false"],
    ),
    (
        "models neither a list nor a mapping",
        _set("experiment", "models", 3),
        ["experiment.models = 3", "must be a list or a mapping"],
    ),
    (
        "duplicated seed names the duplicate",
        _set("experiment", "retrain_seeds", [0, 1, 0]),
        ["experiment.retrain_seeds = [0, 1, 0]", "must not contain duplicates (0 repeats)"],
    ),
    (
        "digits class above 9",
        _set("datasets", "digits", "classes", [0, 12]),
        ["datasets.digits.classes[1] = 12", "must be <= 9", "'digits'"],
    ),
    (
        "batch larger than the training split",
        _set("training", "batch_size", 300),
        ["training.batch_size = 300", "must be <= 234", "dataset 'blockdigits'", "360 images"],
    ),
    (
        "retraining batch larger than the training split",
        _set("retraining", "batch_size", 1168),
        ["retraining.batch_size = 1168", "must be <= 1167", "dataset 'digits'"],
    ),
    (
        "batch larger than a file-backed train_size",
        _set("datasets", "digits", {"loader": "mnist", "root": "/data/mnist", "train_size": 20}),
        ["training.batch_size = 64", "must be <= 17", "train_size 20", "val_fraction 0.15"],
    ),
    (
        "training precision without autocast support",
        _set("training", "precision", "float16"),
        ["training.precision = 'float16'", "must be one of 'auto', 'float32', 'bfloat16'"],
    ),
    (
        "retraining precision misspelt",
        _set("retraining", "precision", "bf16"),
        ["retraining.precision = 'bf16'", "must be one of", "did you mean 'bfloat16'?"],
    ),
]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [pytest.param(edit, expected, id=name) for name, edit, expected in BAD_CONFIGS],
)
def test_bad_config_raises_one_line_error(edit, expected):
    config = default_config()
    edit(config)
    with pytest.raises(ConfigError) as raised:
        validate_config(config)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("config error: ")
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"


@pytest.mark.parametrize("target", ["logit", "predicted"])
def test_logit_targets_are_accepted_by_every_method(target):
    """gradcam, guided_backprop and deeplift refuse only `loss`; `predicted` is a logit target."""
    config = default_config()
    config["models"] = {"small_cnn": {"architecture": "cnn"}}
    config["experiment"]["models"] = ["small_cnn"]
    config["experiment"]["methods"] = list(config_module.METHODS)
    config["saliency"] = {"target": target}
    validate_config(config)
    assert config["saliency"]["target"] == target


def test_the_loss_target_is_accepted_without_the_positive_evidence_methods():
    config = default_config()
    config["experiment"]["methods"] = ["gradient", "smoothgrad", "integrated_gradients", "random"]
    config["saliency"] = {"target": "loss"}
    assert validate_config(config)["saliency"]["target"] == "loss"


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize("key", ["epochs", "batch_size"])
def test_integer_settings_given_as_floats_are_rejected_or_made_integers(key):
    # 3.0 is an integer to JSON Schema, but train() uses these in range(): a float that passes
    # validation unchanged fails later, inside a job.
    config = default_config()
    config["training"][key] = 3.0
    try:
        validate_config(config)
    except ConfigError as error:
        assert f"training.{key}" in str(error)
    else:
        assert type(config["training"][key]) is int


def _schema_enum(*path):
    node = SCHEMA
    for part in path:
        node = node[part]
    return node["enum"]


def test_schema_methods_match_saliency_registry():
    from diffroar.saliency import METHODS

    methods = _schema_enum("$defs", "method")
    assert methods == list(config_module.METHODS)
    assert sorted(methods) == sorted(METHODS)
    # experiment.methods also takes the names defined under `methods` (config.py checks them)
    schema = SCHEMA["properties"]["experiment"]["properties"]["methods"]
    assert "`methods`" in schema["description"]
    assert set(config_module.SEEDED_METHODS) <= set(METHODS)
    assert set(config_module.CONTROL_METHODS) <= set(METHODS)


def test_schema_precisions_match_the_training_loop():
    from diffroar.train import DEFAULT_PRECISION, PRECISIONS

    assert _schema_enum("$defs", "optimisation", "properties", "precision") == list(PRECISIONS)
    assert (
        SCHEMA["$defs"]["optimisation"]["properties"]["precision"]["default"] == DEFAULT_PRECISION
    )


def test_schema_imputations_match_imputation_registry():
    from diffroar.imputation import IMPUTATIONS

    imputations = _schema_enum("properties", "experiment", "properties", "imputations", "items")
    assert imputations == list(IMPUTATIONS)
    from diffroar.imputation import MASK_ONLY

    assert config_module.MASK_ONLY == MASK_ONLY in IMPUTATIONS


def test_architecture_options_get_their_defaults_and_gradcam_its_last_layer():
    config = default_config()
    config["models"] = {
        "small_cnn": {"architecture": "cnn"},
        "wide_cnn": {"architecture": "cnn", "channels": [8, 16, 32], "hidden_sizes": []},
        "resnet": {"architecture": "resnet18", "gradcam_layer": "layer3"},
        "mlp": {"architecture": "mlp"},
    }
    config["experiment"]["models"] = ["small_cnn", "wide_cnn", "resnet"]
    config["experiment"]["methods"] = ["gradcam", "gradient"]
    validate_config(config)
    models = config["models"]
    assert models["small_cnn"]["channels"] == [32, 64]
    assert models["small_cnn"]["hidden_sizes"] == [128]
    assert models["small_cnn"]["gradcam_layer"] == "conv2"
    assert (
        models["wide_cnn"]["hidden_sizes"] == [] and models["wide_cnn"]["gradcam_layer"] == "conv3"
    )
    assert models["resnet"]["gradcam_layer"] == "layer3"
    assert "hidden_sizes" not in models["resnet"]
    assert models["mlp"]["hidden_sizes"] == [256, 256] and "gradcam_layer" not in models["mlp"]


def test_method_settings_hold_only_what_each_method_uses():
    config = validate_config(default_config())
    saliency, model = config["saliency"], {"architecture": "cnn", "gradcam_layer": "conv2"}
    settings = {
        method: config_module.method_settings(method, saliency, model)
        for method in config_module.METHODS
    }
    assert settings["sobel"] == {}
    assert settings["random"] == {"seed": 0}
    assert settings["gradient"] == {"target": "logit"}
    assert settings["integrated_gradients"]["steps"] == 32
    assert settings["integrated_gradients"]["baseline"] == "zero"
    assert settings["deeplift"]["baseline"] == "zero" and "steps" not in settings["deeplift"]
    assert settings["gradcam"]["layer"] == "conv2"
    for method in config_module.METHODS:
        uses_noise = method in ("smoothgrad", "smoothgrad_sq", "vargrad")
        assert ("noise_std" in settings[method]) == uses_noise, method
        assert ("seed" in settings[method]) == (method in config_module.SEEDED_METHODS), method
        # attributions do not depend on the batch sizes: changing them reruns nothing
        assert not {"batch_size", "internal_batch_size"} & set(settings[method]), method


def test_derived_methods_are_accepted_with_their_base_and_noise_settings():
    config = default_config()
    methods = [
        "gradient+blur1",
        "integrated_gradients+smoothgrad+blur0.5",
        "sobel+vargrad",
        "random+blur2",
        "gradient+abs+blur1",
    ]
    config["experiment"]["methods"] = methods
    validate_config(config)
    saliency, model = config["saliency"], config["models"]["mlp_standard"]
    settings = {name: config_module.method_settings(name, saliency, model) for name in methods}
    assert settings["gradient+blur1"] == {"target": "logit"}  # sigma is in the name
    assert settings["integrated_gradients+smoothgrad+blur0.5"] == config_module.method_settings(
        "integrated_gradients", saliency, model
    ) | {"noise_std": 0.15, "noise_samples": 16, "seed": 0}
    assert settings["sobel+vargrad"] == {"noise_std": 0.15, "noise_samples": 16, "seed": 0}
    assert settings["random+blur2"] == {"seed": 0}
    assert [config_module.model_independent(name) for name in methods] == [
        False, False, True, True, False,
    ]  # fmt: skip


def test_a_final_abs_is_accepted_where_it_changes_the_ranking():
    config = default_config()
    config["experiment"]["methods"] = ["integrated_gradients+abs"]
    config["masking"] = {"ranking": "pixel"}  # channels summed before the absolute value
    validate_config(config)


def test_schema_loaders_match_data_registry():
    from diffroar.data import LOADERS

    loaders = _schema_enum("properties", "datasets", "additionalProperties", "properties", "loader")
    assert sorted(loaders) == sorted(LOADERS)
    assert set(config_module.BLOCK_LOADERS) <= set(LOADERS)


def test_schema_architectures_match_model_registry():
    from diffroar.architectures import ARCHITECTURE_OPTIONS
    from diffroar.models import ARCHITECTURES

    # the schema takes any string (a built-in or a user `module:callable`): config.py checks it
    schema = SCHEMA["properties"]["models"]["additionalProperties"]["properties"]["architecture"]
    assert sorted(ARCHITECTURE_OPTIONS) == sorted(ARCHITECTURES)
    for name in ARCHITECTURES:
        assert f"`{name}`" in schema["description"], name


def test_schema_null_patches_match_data_registry():
    from diffroar.data import NULL_PATCHES

    patches = _schema_enum(
        "properties", "datasets", "additionalProperties", "properties", "null_patch"
    )
    assert sorted(patches) == sorted(NULL_PATCHES)


@pytest.mark.parametrize(
    ("keep_fraction", "text"),
    [
        (0.05, "0.05"),
        (0.1, "0.1"),
        (0.10, "0.1"),
        (0.5, "0.5"),
        (0.9, "0.9"),
        (1.0, "1"),
        (1, "1"),
        (0.25, "0.25"),
        (0.001, "0.001"),
    ],
)
def test_format_k(keep_fraction, text):
    assert format_k(keep_fraction) == text


def test_numeric_text_becomes_numbers_as_from_snakemake_config():
    # `snakemake --config 'experiment={keep_fractions: [0.1, 0.5]}'` delivers text values
    config = default_config()
    config["experiment"]["keep_fractions"] = ["0.1", "5e-1"]
    config["training"] = {"epochs": "3"}
    validate_config(config)
    assert config["experiment"]["keep_fractions"] == [0.1, 0.5]
    assert config["training"]["epochs"] == 3
    assert isinstance(config["training"]["epochs"], int)


def test_boolean_text_becomes_booleans_as_from_snakemake_config():
    config = default_config()
    config["datasets"]["mnist"] = {"loader": "mnist", "root": "/data/mnist", "download": "True"}
    assert validate_config(config)["datasets"]["mnist"]["download"] is True


def test_models_per_dataset():
    config = default_config()
    config["experiment"]["models"] = {
        "digits": ["mlp_linf", "mlp_standard"],
        "blockdigits": ["mlp_standard"],
    }
    experiment = validate_config(config)["experiment"]
    assert experiment_models(experiment, "blockdigits") == ["mlp_standard"]
    assert experiment_models(experiment) == ["mlp_linf", "mlp_standard"]
    default = validate_config(default_config())["experiment"]
    assert experiment_models(default, "blockdigits") == experiment_models(default)


def test_reordered_keys_give_identical_config():
    config = default_config()
    reordered = {key: config[key] for key in reversed(config)}
    reordered["models"] = {
        name: dict(reversed(model.items())) for name, model in config["models"].items()
    }
    validate_config(reordered)
    validate_config(config)
    for section in config:  # each section, in the exact form given to rules as params
        assert repr(reordered[section]) == repr(config[section])


def test_digits_class_counts_are_those_of_the_bundled_digits():
    from sklearn.datasets import load_digits

    counts = np.bincount(load_digits().target, minlength=10)
    assert tuple(counts) == config_module.DIGITS_CLASS_COUNTS


@pytest.mark.parametrize(
    "dataset",
    [
        {"loader": "digits"},
        {"loader": "blockdigits"},
        {"loader": "digits", "classes": [3, 8, 5]},
        {"loader": "blockdigits", "classes": [1, 7], "val_fraction": 0.3, "test_fraction": 0.1},
        {"loader": "digits", "train_size": 101, "val_fraction": 0.11},
        {"loader": "digits", "classes": [0, 1], "train_size": 288},  # all of its pool
        {"loader": "blockdigits", "test_fraction": 0.33, "val_fraction": 0.27, "split_seed": 4},
    ],
)
def test_train_split_size_of_digits_is_that_of_the_drawn_split(dataset):
    from diffroar.data import LOADERS, dataset_splits

    config = default_config()
    config["datasets"] = {"checked": dataset}
    config["experiment"]["datasets"] = ["checked"]
    dataset = validate_config(config)["datasets"]["checked"]
    size, exact, _ = config_module.train_split_size(dataset)
    assert exact
    assert size == len(dataset_splits(LOADERS[dataset["loader"]](dataset), dataset)["train"])


def test_train_split_size_of_file_backed_loaders_is_a_bound_from_train_size():
    config = default_config()
    config["datasets"]["mnist"] = {"loader": "mnist", "root": "/data/mnist"}
    validate_config(config)
    assert config_module.train_split_size(config["datasets"]["mnist"]) is None
    config["datasets"]["mnist"]["train_size"] = 1000
    size, exact, how = config_module.train_split_size(config["datasets"]["mnist"])
    assert (size, exact) == (850, False) and "train_size 1000" in how


def test_batch_as_large_as_the_training_split_is_accepted():
    config = default_config()
    config["experiment"]["datasets"] = ["blockdigits"]
    config["training"]["batch_size"] = config["retraining"]["batch_size"] = 234
    validate_config(config)
