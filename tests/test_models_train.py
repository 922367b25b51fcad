"""Models, checkpoints, PGD and the training loop on tiny problems."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffroar.models import (
    Normalize,
    build_model,
    load_checkpoint,
    model_spec,
    save_checkpoint,
)
from diffroar.retrain import select_epoch
from diffroar.train import accuracy, attack_settings, pgd, train, training_mode
from torch import nn

torch.set_num_threads(1)

SPEC = {
    "architecture": "mlp",
    "hidden_sizes": [16],
    "input_shape": [1, 2, 3],
    "num_classes": 2,
    "channel_mean": [0.5],
    "channel_std": [0.3],
}


def toy_problem(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (count, 1, 2, 3) in [0, 1]; the label says whether the first pixel exceeds the
    second by a margin (linearly separable)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(count, 1, 2, 3, generator=generator)
    difference = images[:, 0, 0, 0] - images[:, 0, 0, 1]
    keep = difference.abs() > 0.1
    images, difference = images[keep], difference[keep]
    return images, (difference > 0).long()


def fit(seed: int = 0, train_seed: int = 0, epochs: int = 15, **overrides):
    torch.manual_seed(seed)
    model = build_model(SPEC)
    settings = {
        "epochs": epochs,
        "batch_size": 32,
        "learning_rate": 0.01,
        "weight_decay": 0.0,
        "seed": train_seed,
    } | overrides
    history = train(
        model,
        toy_problem(256, seed=1),
        {"val": toy_problem(128, seed=2)},
        **settings,
    )
    return model, history


@pytest.fixture(scope="module")
def trained():
    return fit()


def test_build_model_output_shape():
    torch.manual_seed(0)
    model = build_model(SPEC)
    assert isinstance(model[0], Normalize)
    logits = model(torch.rand(5, 1, 2, 3))
    assert logits.shape == (5, 2)


CONV_SPECS = {
    "cnn": {"architecture": "cnn", "channels": [4, 6], "hidden_sizes": [8]},
    "resnet18": {"architecture": "resnet18"},
}


def _conv_spec(architecture: str, shape=(3, 8, 6), classes: int = 5) -> dict:
    return CONV_SPECS[architecture] | {
        "input_shape": list(shape),
        "num_classes": classes,
        "channel_mean": [0.5] * shape[0],
        "channel_std": [0.25] * shape[0],
    }


@pytest.mark.parametrize("architecture", ["cnn", "resnet18"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 8, 6), (1, 16, 8), (3, 32, 32)])
def test_conv_models_take_small_images_of_any_channel_count(architecture, shape):
    torch.manual_seed(0)
    model = build_model(_conv_spec(architecture, shape)).eval()
    assert list(dict(model.named_children())) == ["normalize", "network"]
    with torch.no_grad():
        assert model(torch.rand(2, *shape)).shape == (2, 5)


@pytest.mark.parametrize("architecture", ["mlp", "cnn", "resnet18"])
def test_feature_layers_of_the_config_are_spatial_layers_of_the_model(architecture):
    from diffroar.architectures import ARCHITECTURE_OPTIONS, feature_layers

    spec = SPEC if architecture == "mlp" else _conv_spec(architecture)
    cfg = {"architecture": architecture, **ARCHITECTURE_OPTIONS[architecture]}
    cfg |= {key: spec[key] for key in ARCHITECTURE_OPTIONS[architecture]}
    layers = feature_layers(cfg)
    model = build_model(spec).eval()
    convolutions = [
        name for name, module in model.network.named_modules() if isinstance(module, nn.Conv2d)
    ]
    if architecture == "mlp":
        assert layers == [] and convolutions == []
        return
    outputs = {}
    hooks = [
        model.network.get_submodule(name).register_forward_hook(
            lambda module, inputs, output, name=name: outputs.__setitem__(name, output)
        )
        for name in layers
    ]
    with torch.no_grad():
        model(torch.rand(2, *spec["input_shape"]))
    for hook in hooks:
        hook.remove()
    assert set(outputs) == set(layers)
    assert all(output.dim() == 4 for output in outputs.values())
    # the default Grad-CAM layer is the last convolutional stage
    assert layers[-1] == (convolutions[-1] if architecture == "cnn" else "layer4")


def test_resnet18_is_torchvisions_with_a_small_image_stem():
    from torchvision.models import resnet18

    torch.manual_seed(0)
    ours = build_model(_conv_spec("resnet18", (3, 32, 32), 10)).network
    reference = resnet18(num_classes=10)
    # the same parameters apart from the stem: 3x3 stride-1 first convolution, no max pool
    shapes = {name: p.shape for name, p in ours.named_parameters()}
    expected = {name: p.shape for name, p in reference.named_parameters()}
    assert shapes.keys() == expected.keys()
    assert {name for name in shapes if shapes[name] != expected[name]} == {"conv1.weight"}
    assert ours.conv1.kernel_size == (3, 3) and ours.conv1.stride == (1, 1)
    assert isinstance(ours.maxpool, nn.Identity)
    relus = [m for m in ours.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == len(set(map(id, relus))) == 1 + 8 * 2  # stem + two per block
    assert not any(relu.inplace for relu in relus)


def test_resnet18_trains_with_batch_norm_and_a_trailing_single_sample():
    # 33 images in batches of 16 would leave a last batch of one, which batch norm refuses
    torch.manual_seed(0)
    model = build_model(_conv_spec("resnet18", (1, 8, 8), 2))
    images = torch.rand(33, 1, 8, 8)
    labels = (images[:, 0, :4].mean(dim=(1, 2)) > images[:, 0, 4:].mean(dim=(1, 2))).long()
    history = train(
        model, (images, labels), {}, epochs=1, batch_size=16, learning_rate=1e-3,
        weight_decay=0.0, seed=0,
    )  # fmt: skip
    assert len(history) == 1 and history[0]["loss"] > 0


@pytest.mark.parametrize("architecture", ["cnn", "resnet18"])
def test_conv_checkpoint_round_trip(tmp_path, architecture):
    torch.manual_seed(0)
    spec = _conv_spec(architecture, (1, 8, 8), 3)
    model = build_model(spec).eval()
    save_checkpoint(tmp_path / "m.safetensors", model, spec, {"seed": 0})
    loaded, metadata = load_checkpoint(tmp_path / "m.safetensors")
    images = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), model(images))
    assert metadata["spec"] == spec


def test_build_model_without_hidden_layers_is_linear():
    spec = SPEC | {"hidden_sizes": [], "input_shape": [3, 4, 4], "num_classes": 7}
    model = build_model(spec)
    linear_layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear_layers] == [(48, 7)]
    assert model(torch.rand(2, 3, 4, 4)).shape == (2, 7)


def test_normalize_uses_per_channel_statistics():
    normalize = Normalize([0.5, 0.25], [0.5, 0.125])
    x = torch.ones(1, 2, 1, 1)
    torch.testing.assert_close(normalize(x).flatten(), torch.tensor([1.0, 6.0]))


def test_model_spec_reads_dataset_attributes_and_floors_std():
    attributes = {
        "shape": [2, 4, 4],
        "num_classes": 3,
        "channel_mean": [0.1, 0.2],
        "channel_std": [0.0, 0.4],
    }
    spec = model_spec({"architecture": "mlp", "hidden_sizes": [8]}, attributes)
    assert spec["input_shape"] == [2, 4, 4]
    assert spec["num_classes"] == 3
    assert spec["channel_mean"] == [0.1, 0.2]
    assert spec["channel_std"] == [1e-6, 0.4]
    model = build_model(spec)
    assert torch.isfinite(model(torch.rand(2, 2, 4, 4))).all()


def test_checkpoint_round_trip(tmp_path, trained):
    model, _ = trained
    path = tmp_path / "sub" / "model.safetensors"
    info = {"dataset": "toy", "seed": 3, "history": [{"epoch": 1, "loss": 0.5}]}
    save_checkpoint(path, model, SPEC, info)
    loaded, metadata = load_checkpoint(path)
    assert not loaded.training
    assert metadata["spec"] == SPEC
    assert metadata["dataset"] == "toy"
    assert metadata["seed"] == 3
    assert metadata["history"] == [{"epoch": 1, "loss": 0.5}]
    images = torch.rand(7, 1, 2, 3)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), model(images), rtol=0, atol=0)
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, rtol=0, atol=0)


def test_truncated_checkpoint_names_the_file(tmp_path, trained):
    model, _ = trained
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, model, SPEC, {"seed": 0})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="model.safetensors"):
        load_checkpoint(path)


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(ValueError, match="absent.safetensors"):
        load_checkpoint(tmp_path / "absent.safetensors")


def _attack_inputs():
    images, labels = toy_problem(64, seed=5)
    # corners of the box: clamping to [0, 1] must bind
    images[:8] = 0.0
    images[8:16] = 1.0
    return images, labels


@pytest.mark.parametrize(
    ("norm", "eps"),
    [("linf", 0.1), ("linf", 0.3), ("l2", 0.2), ("l2", 0.6)],
)
def test_pgd_stays_in_the_ball_and_the_box_and_raises_the_loss(trained, norm, eps):
    model, _ = trained
    images, labels = _attack_inputs()
    torch.manual_seed(0)
    adversarial = pgd(model, images, labels, norm=norm, eps=eps, steps=10, step_size=eps / 4)
    assert adversarial.shape == images.shape
    assert not adversarial.requires_grad
    assert adversarial.min() >= 0.0 and adversarial.max() <= 1.0
    delta = (adversarial - images).flatten(1)
    if norm == "linf":
        assert delta.abs().max() <= eps + 1e-6
    else:
        assert delta.norm(dim=1).max() <= eps + 1e-5
    assert delta.abs().max() > 0
    with torch.no_grad():
        clean_loss = F.cross_entropy(model(images), labels)
        attacked_loss = F.cross_entropy(model(adversarial), labels)
    assert attacked_loss > clean_loss


def test_pgd_restores_the_training_mode(trained):
    model, _ = trained
    images, labels = _attack_inputs()
    model.train()
    pgd(model, images, labels, norm="linf", eps=0.1, steps=1, step_size=0.05)
    assert model.training
    model.eval()
    pgd(model, images, labels, norm="linf", eps=0.1, steps=1, step_size=0.05)
    assert not model.training


def test_accuracy_under_attack_is_lower(trained):
    model, _ = trained
    images, labels = toy_problem(128, seed=2)
    clean = accuracy(model, images, labels)
    torch.manual_seed(0)
    adversarial = pgd(model, images, labels, norm="linf", eps=0.3, steps=10, step_size=0.05)
    attacked = accuracy(model, adversarial, labels)
    assert 0 <= attacked < clean <= 1


def test_attack_settings_and_training_mode():
    standard = {"training": {"mode": "standard", "steps": 7}}
    robust = {"training": {"mode": "pgd", "norm": "l2", "eps": 0.5, "steps": 5}}
    explicit = {
        "training": {"mode": "pgd", "norm": "linf", "eps": 0.1, "steps": 7, "step_size": 0.02}
    }
    assert attack_settings(standard) is None
    assert attack_settings(robust) == {"norm": "l2", "eps": 0.5, "steps": 5, "step_size": 0.25}
    assert attack_settings(explicit)["step_size"] == 0.02
    assert training_mode(standard) == "standard"
    assert training_mode(robust) == "pgd_l2"
    assert training_mode(explicit) == "pgd_linf"


def test_train_learns_a_separable_problem(trained):
    model, history = trained
    assert len(history) == 15
    assert [record["epoch"] for record in history] == list(range(1, 16))
    for record in history:
        assert set(record) == {"epoch", "loss", "train_accuracy", "val_accuracy"}
        assert 0 <= record["train_accuracy"] <= 1 and 0 <= record["val_accuracy"] <= 1
    assert history[-1]["val_accuracy"] >= 0.9
    assert history[-1]["train_accuracy"] >= 0.9
    assert history[-1]["loss"] < history[0]["loss"]
    images, labels = toy_problem(128, seed=2)
    assert accuracy(model, images, labels) == history[-1]["val_accuracy"]


def test_train_is_reproducible_per_seed():
    first_model, first = fit(epochs=3)
    second_model, second = fit(epochs=3)
    assert first == second
    for name, tensor in first_model.state_dict().items():
        assert torch.equal(second_model.state_dict()[name], tensor), name


def test_train_depends_on_the_seed():
    first_model, first = fit(epochs=3)
    # the same initial weights, another shuffling seed
    other_model, other = fit(train_seed=1, epochs=3)
    assert [r["loss"] for r in first] != [r["loss"] for r in other]
    assert not all(
        torch.equal(other_model.state_dict()[name], tensor)
        for name, tensor in first_model.state_dict().items()
    )


def test_train_with_pgd_returns_a_history():
    _, history = fit(epochs=2, attack={"norm": "linf", "eps": 0.05, "steps": 2, "step_size": 0.025})
    assert len(history) == 2
    assert all(0 <= r["val_accuracy"] <= 1 for r in history)


def test_train_reports_divergence_with_its_epoch():
    with pytest.raises(FloatingPointError, match="epoch 1"):
        fit(epochs=3, learning_rate=1e30)


def _record(epoch, val):
    return {"epoch": epoch, "loss": 1.0 / epoch, "val_accuracy": val, "test_accuracy": epoch / 10}


def test_select_epoch_picks_the_best_validation_accuracy():
    history = [_record(1, 0.5), _record(2, 0.8), _record(3, 0.7)]
    assert select_epoch(history)["epoch"] == 2
    assert select_epoch(history)["test_accuracy"] == 0.2


def test_select_epoch_takes_the_earliest_on_ties():
    history = [_record(1, 0.5), _record(2, 0.9), _record(3, 0.6), _record(4, 0.9), _record(5, 0.9)]
    assert select_epoch(history)["epoch"] == 2
    assert select_epoch([_record(1, 0.3)])["epoch"] == 1
    assert select_epoch([_record(e, 0.4) for e in range(1, 6)])["epoch"] == 1


def _conv_problem(count: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    """(count, 1, 8, 8) noise images whose left half (label 1) or right half (label 0) is
    brightened by 0.5."""
    generator = torch.Generator().manual_seed(count)
    labels = torch.randint(0, 2, (count,), generator=generator)
    images = torch.rand(count, 1, 8, 8, generator=generator) * 0.5
    images[labels == 1, ..., :4] += 0.5
    images[labels == 0, ..., 4:] += 0.5
    return images, labels


def _fit_conv(precision: str, architecture: str = "cnn") -> tuple[nn.Module, list[dict]]:
    torch.manual_seed(0)
    model = build_model(_conv_spec(architecture, (1, 8, 8), 2))
    history = train(
        model, _conv_problem(), {"val": _conv_problem(32)}, epochs=3, batch_size=16,
        learning_rate=1e-2, weight_decay=0.0, seed=0, precision=precision,
    )  # fmt: skip
    return model, history


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


def test_resolve_precision_auto_is_float32_on_every_cpu_and_bf16_only_on_capable_gpus(
    monkeypatch,
):
    from diffroar import train as train_module

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for capable in (True, False):
        monkeypatch.setattr(train_module, "native_bf16", lambda on, capable=capable: capable)
        assert train_module.resolve_precision("auto", cpu) == "float32"
        assert train_module.resolve_precision("auto", cuda) == (
            "bfloat16" if capable else "float32"
        )
        for written in ("float32", "bfloat16"):
            assert train_module.resolve_precision(written, cpu) == written
            assert train_module.resolve_precision(written, cuda) == written
    with pytest.raises(
        ValueError, match=r"precision 'float16' is not one of auto, float32, bfloat16"
    ):
        train_module.resolve_precision("float16", cpu)


@pytest.mark.parametrize("capable", [True, False], ids=["native", "emulated"])
def test_bfloat16_training_warns_only_where_bf16_is_emulated(monkeypatch, caplog, capable):
    """Emulated bf16 is far slower than float32 (9x for the cnn on an AVX2 CPU): the log says so
    there, and only there, whatever this machine's CPU has."""
    from diffroar import train as train_module

    monkeypatch.setattr(train_module, "native_bf16", lambda on: capable)
    _fit_conv("bfloat16")
    assert ("no bf16 arithmetic" in caplog.text) is not capable
    caplog.clear()
    _fit_conv("float32")
    assert "no bf16 arithmetic" not in caplog.text


def test_native_bf16_on_the_cpu_follows_its_instruction_set():
    from diffroar.train import native_bf16

    probes = [getattr(torch.cpu, name, lambda: False)() for name in
              ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]  # fmt: skip
    assert native_bf16(torch.device("cpu")) is any(probes)


@pytest.mark.parametrize("architecture", ["mlp", "cnn"])
def test_auto_precision_on_a_cpu_trains_exactly_as_float32(architecture):
    if architecture == "mlp":
        auto, float32 = fit(precision="auto")[0], fit(precision="float32")[0]
    else:
        auto, float32 = _fit_conv("auto")[0], _fit_conv("float32")[0]
    assert all(
        torch.equal(a, b)
        for a, b in zip(_weights(auto).values(), _weights(float32).values(), strict=True)
    )


def test_bfloat16_training_is_reproducible_learns_and_keeps_float32_weights(tmp_path):
    model, history = _fit_conv("bfloat16")
    again, _ = _fit_conv("bfloat16")
    float32, _ = _fit_conv("float32")
    weights = _weights(model)
    assert all(t.dtype == torch.float32 for t in weights.values())
    assert all(torch.equal(weights[name], t) for name, t in _weights(again).items())
    assert any(not torch.equal(weights[name], t) for name, t in _weights(float32).items())
    assert history[-1]["loss"] < history[0]["loss"] / 10 and history[-1]["val_accuracy"] == 1.0
    # trained in channels-last memory, saved and loaded as any checkpoint
    spec = _conv_spec("cnn", (1, 8, 8), 2)
    save_checkpoint(tmp_path / "m.safetensors", model, spec, {"precision": "bfloat16"})
    loaded, metadata = load_checkpoint(tmp_path / "m.safetensors")
    images = _conv_problem(8)[0]
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(images), model.eval()(images))
    assert metadata["precision"] == "bfloat16"


def test_float32_training_is_the_textbook_arithmetic_bit_for_bit():
    """precision float32 (auto on a CPU) keeps today's numbers: per-tensor Adam, no autocast, the
    batches `train` cuts from its seeded permutation."""
    from diffroar.train import _batches

    images, labels = _conv_problem()
    torch.manual_seed(0)
    ours = build_model(_conv_spec("cnn", (1, 8, 8), 2))
    reference = build_model(_conv_spec("cnn", (1, 8, 8), 2))
    reference.load_state_dict(ours.state_dict())
    train(ours, (images, labels), {}, epochs=2, batch_size=16, learning_rate=1e-2,
          weight_decay=1e-3, seed=5, precision="float32")  # fmt: skip
    optimizer = torch.optim.Adam(reference.parameters(), lr=1e-2, weight_decay=1e-3)
    shuffle = torch.Generator().manual_seed(5)
    reference.train()
    for _ in range(2):
        for index in _batches(torch.randperm(len(images), generator=shuffle), 16):
            loss = F.cross_entropy(reference(images[index]), labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    for name, tensor in reference.state_dict().items():
        assert torch.equal(ours.state_dict()[name], tensor), name
