"""The model-parameter randomisation check (diffroar.sanity): the correlation formulas against
scipy, the layers and the order in which they are re-initialised, and the two controls on a
base model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffroar.checks import read_table
from diffroar.data import prepare, read_attributes
from diffroar.models import build_model, model_spec, save_checkpoint
from diffroar.sanity import (
    image_subset,
    parameter_layers,
    randomisations,
    randomised,
    rank_correlations,
    run_sanity,
)
from scipy import stats
from test_trust import BLOCK_CFG  # the blockdigits split the trust tests use
from torch import nn

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

CNN = {
    "architecture": "cnn",
    "channels": [3, 4],
    "hidden_sizes": [8],
    "training": {"mode": "standard"},
}


def test_rank_correlations_are_scipys_spearman_per_image():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(6, 2, 3, 4))
    other = 0.6 * reference + rng.normal(size=reference.shape)
    other[1] = -(reference[1] ** 3)  # a monotone decreasing map: -1
    other[2] = np.round(other[2])  # ties: average ranks
    reference[3] = np.where(reference[3] > 0, 0.0, reference[3])  # many tied zeros
    found = rank_correlations(reference, other)
    expected = [
        stats.spearmanr(a.ravel(), b.ravel()).statistic
        for a, b in zip(reference, other, strict=True)
    ]
    np.testing.assert_allclose(found, expected, rtol=1e-12, atol=1e-12)
    assert found[1] == pytest.approx(-1)
    # and of |A| as the table's spearman_abs computes it
    np.testing.assert_allclose(
        rank_correlations(np.abs(reference), np.abs(other)),
        [stats.spearmanr(np.abs(a).ravel(), np.abs(b).ravel()).statistic
         for a, b in zip(reference, other, strict=True)],
        rtol=1e-12,
    )  # fmt: skip


def test_a_constant_map_has_no_correlation():
    reference = np.arange(12.0).reshape(2, 6)
    other = np.vstack([np.zeros(6), np.arange(6.0)])
    found = rank_correlations(reference, other)
    assert np.isnan(found[0]) and found[1] == pytest.approx(1)


def test_randomisations_cascade_from_the_output_down_and_each_layer_alone():
    plans = randomisations(4)
    assert [(p.mode, p.step, p.positions) for p in plans] == [
        ("trained", 0, ()),
        ("cascading", 1, (3,)),
        ("cascading", 2, (2, 3)),
        ("cascading", 3, (1, 2, 3)),
        ("cascading", 4, (0, 1, 2, 3)),
        ("independent", 1, (3,)),
        ("independent", 2, (2,)),
        ("independent", 3, (1,)),
        ("independent", 4, (0,)),
    ]
    draws = [plan.draw for plan in plans]
    assert len(set(draws)) == len(draws)  # fresh draws for every randomised model


def _cnn(seed: int = 0) -> nn.Module:
    spec = model_spec(
        CNN, {"shape": [1, 8, 8], "num_classes": 3, "channel_mean": [0.5], "channel_std": [0.3]}
    )
    torch.manual_seed(seed)
    return build_model(spec).eval()


def test_layers_are_the_modules_with_parameters_in_forward_order():
    model = _cnn()
    assert parameter_layers(model, torch.rand(1, 1, 8, 8)) == [
        "network.conv1",
        "network.conv2",
        "network.fc1",
        "network.classifier",
    ]  # no Normalize (buffers only), ReLU, pooling or Flatten

    class Reversed(nn.Module):  # registered in one order, run in the other; one never runs
        def __init__(self):
            super().__init__()
            self.last = nn.Linear(4, 2)
            self.unused = nn.Linear(4, 4)
            self.norm = nn.BatchNorm1d(4)
            self.first = nn.Linear(3, 4)

        def forward(self, x):
            return self.last(self.norm(self.first(x)))

    assert parameter_layers(Reversed().eval(), torch.rand(2, 3)) == ["first", "norm", "last"]


def test_resnet_layers_include_batch_norms_and_the_shortcut_convolutions():
    spec = {
        "architecture": "resnet18",
        "input_shape": [1, 8, 8],
        "num_classes": 2,
        "channel_mean": [0.5],
        "channel_std": [0.3],
    }
    model = build_model(spec).eval()
    layers = parameter_layers(model, torch.rand(1, 1, 8, 8))
    kinds = [type(model.get_submodule(name)).__name__ for name in layers]
    assert layers[:2] == ["network.conv1", "network.bn1"] and layers[-1] == "network.fc"
    assert kinds.count("Conv2d") == 20 and kinds.count("BatchNorm2d") == 20  # 17 + 3 shortcuts
    # a block's shortcut runs before its two convolutions (diffroar.models' BasicBlock)
    assert layers.index("network.layer2.0.downsample.0") < layers.index("network.layer2.0.conv1")


def _differs(first: nn.Module, second: nn.Module, name: str) -> bool:
    one, two = first.get_submodule(name), second.get_submodule(name)
    return any(
        not torch.equal(a, b)
        for a, b in zip(one.parameters(recurse=False), two.parameters(recurse=False), strict=True)
    )


def test_randomised_re_initialises_exactly_the_planned_layers():
    model = _cnn()
    layers = parameter_layers(model, torch.rand(1, 1, 8, 8))
    state = torch.random.get_rng_state()
    variants = {plan: randomised(model, layers, plan.positions, 0, 0) for plan in randomisations(4)}
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator is untouched
    for plan, variant in variants.items():
        changed = [
            position for position, name in enumerate(layers) if _differs(model, variant, name)
        ]
        assert changed == list(plan.positions), plan
        assert not variant.training
    # a layer gets the same weights in both modes, and under the same seeds again
    cascading, independent = (
        {plan.step: variant for plan, variant in variants.items() if plan.mode == mode}
        for mode in ("cascading", "independent")
    )
    for step in range(1, 5):
        name = layers[4 - step]
        assert not _differs(cascading[4], independent[step], name)
    again = randomised(model, layers, (0, 3), 0, 0)
    assert not any(_differs(again, cascading[4], name) for name in (layers[0], layers[3]))
    other_seed = randomised(model, layers, (3,), 0, 1)  # another base model's draw
    assert _differs(other_seed, cascading[1], layers[3])


def test_a_layer_without_reset_parameters_is_refused_by_name():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(3))

        def forward(self, x):
            return x * self.weight

    model = nn.Sequential(Scale(), nn.Linear(3, 2))
    layers = parameter_layers(model, torch.rand(1, 3))
    assert layers == ["0", "1"]
    with pytest.raises(ValueError, match=r"layer '0' \(Scale\) has parameters but no reset"):
        randomised(model, layers, (0,), 0, 0)


def test_the_image_subset_is_seeded_sorted_and_all_of_a_small_split():
    subset = image_subset(100, 10, seed=3)
    assert len(set(subset)) == 10 and list(subset) == sorted(subset)
    assert np.array_equal(subset, image_subset(100, 10, seed=3))
    assert not np.array_equal(subset, image_subset(100, 10, seed=4))
    assert np.array_equal(image_subset(7, 10, seed=3), np.arange(7))


@pytest.fixture(scope="module")
def sanity_table(tmp_path_factory):
    """The randomisation check of an untrained cnn on blockdigits with the two controls, the
    gradient and a derived method, on 40 test images."""
    root = tmp_path_factory.mktemp("sanity")
    dataset = root / "blockdigits.zarr"
    prepare("blockdigits", dict(BLOCK_CFG), dataset)
    torch.manual_seed(0)
    spec = model_spec(CNN, read_attributes(dataset))
    checkpoint = root / "model.safetensors"
    info = {"dataset": "blockdigits", "model": "tiny", "seed": 0, "config_fingerprint": "f"}
    save_checkpoint(checkpoint, build_model(spec), spec, info)
    methods = {
        "gradient": {"target": "logit"},
        "gradient+blur1": {"target": "logit"},
        "random": {"seed": 0},
        "sobel": {},
    }
    out = root / "seed0.parquet"
    arguments = (str(dataset), str(checkpoint), str(out))
    options = {
        "methods": methods,
        "sanity": {"images": 40, "seed": 0},
        "batch": {"batch_size": 16},
        "model_cfg": CNN,
    }
    with pytest.raises(ValueError, match="trained under config fingerprint f"):
        run_sanity(*arguments, **options, checkpoint_fingerprint="other")
    assert not out.exists()
    run_sanity(*arguments, **options, checkpoint_fingerprint="f")
    return read_table(out, "sanity")


def test_the_table_has_a_row_per_method_randomisation_and_measure(sanity_table):
    table = sanity_table
    assert len(table) == 4 * (1 + 2 * 4) * 2
    assert set(table["n_images"]) == {40} and set(table["n_undefined"]) == {0}
    assert set(table["interval_over"]) == {"test_images"}
    cascading = table[(table["mode"] == "cascading") & (table["measure"] == "spearman_abs")]
    assert list(cascading[cascading["method"] == "gradient"]["layer"]) == [
        "network.classifier", "network.fc1", "network.conv2", "network.conv1",
    ]  # fmt: skip
    assert list(cascading[cascading["method"] == "gradient"]["randomised_layers"]) == [1, 2, 3, 4]
    assert set(table[table["mode"] == "independent"]["randomised_layers"]) == {1}


def test_sobel_ignores_the_model_and_random_draws_afresh(sanity_table):
    table = sanity_table
    sobel = table[table["method"] == "sobel"]
    assert (sobel["mean"] == 1).all() and (sobel["ci_low"] == 1).all()
    random = table[table["method"] == "random"]
    # independent draws of 128 coordinates: per image sd 1/sqrt(127), mean over 40 images ~0.014
    assert random["mean"].abs().max() < 0.06
    assert ((random["ci_low"] < 0) & (random["ci_high"] > 0)).mean() >= 0.8


def test_deterministic_methods_start_at_one_and_fall_with_the_weights(sanity_table):
    table = sanity_table[sanity_table["measure"] == "spearman_abs"]
    for method in ("gradient", "gradient+blur1"):
        rows = table[table["method"] == method].set_index(["mode", "layer_from_output"])["mean"]
        assert rows[("trained", 0)] == pytest.approx(1)
        assert rows[("cascading", 4)] < 0.5
        # cascading step 1 and independent step 1 are the same model
        assert rows[("cascading", 1)] == pytest.approx(rows[("independent", 1)])


def test_the_per_base_model_table_is_of_kind_sanity(sanity_table, tmp_path):
    path = tmp_path / "results" / "sanity" / "blockdigits" / "tiny" / "seed0.parquet"
    path.parent.mkdir(parents=True)
    sanity_table.drop(columns="measure").to_parquet(path)
    with pytest.raises(ValueError, match="the sanity table has no column measure"):
        read_table(path)
