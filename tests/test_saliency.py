"""Attribution methods: closed forms on linear and one-hidden-layer models, Grad-CAM by hand,
the Sobel and random controls, seeds, chunking, every method on every architecture, and the
saliency stage end to end."""

from __future__ import annotations

import inspect
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffroar import saliency
from diffroar.models import build_model, save_checkpoint
from diffroar.saliency import (
    METHODS,
    Settings,
    deeplift,
    gradcam,
    gradient,
    gradient_x_input,
    guided_backprop,
    integrated_gradients,
    random,
    run_saliency,
    smoothgrad,
    smoothgrad_sq,
    sobel,
    vargrad,
)
from diffroar.store import SPLITS, create_store, open_store, read_split, write_array
from scipy import ndimage
from torch import nn

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

MEAN, STD = [0.2, 0.5], [0.25, 4.0]
SPEC = {
    "architecture": "mlp",
    "hidden_sizes": [],
    "input_shape": [2, 3, 3],
    "num_classes": 4,
    "channel_mean": MEAN,
    "channel_std": STD,
}
DEFAULT = Settings(batch_size=64, channel_mean=tuple(MEAN))
MODEL_METHODS = sorted(set(METHODS) - {"random", "sobel"})


def linear_model(seed: int = 0, hidden_sizes: list[int] | None = None) -> nn.Sequential:
    """build_model's Normalize in front of an mlp (default: one Linear layer): 2x3x3 inputs, 4
    classes."""
    torch.manual_seed(seed)
    return build_model({**SPEC, "hidden_sizes": hidden_sizes or []}).eval()


def _inputs(count=10, seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(count, 2, 3, 3, generator=generator)
    labels = torch.randint(0, 4, (count,), generator=generator)
    return images, labels


def _std():
    return torch.tensor(STD).view(1, 2, 1, 1)


def _linear_gradient(model, labels):
    """d logit_y / d x of the linear model: W[y] / std."""
    weight = model.network[-1].weight.detach()  # (4, 18)
    return weight[labels].view(-1, 2, 3, 3) / _std()


def _loss_gradient(model, images, labels):
    """d CE(f(x), y) / d x of the linear model: (softmax(z) - onehot(y)) @ W / std."""
    weight = model.network[-1].weight.detach()
    with torch.no_grad():
        logits = model(images)
    residual = logits.softmax(dim=1) - F.one_hot(labels, 4).float()
    return (residual @ weight).view(-1, 2, 3, 3) / _std()


# --- closed forms on a linear model ------------------------------------------------------------


def test_gradient_of_a_linear_model_is_the_weight_row_over_std():
    model = linear_model()
    images, labels = _inputs()
    attributions = gradient(model, images, labels, DEFAULT, seed=0)
    assert attributions.shape == images.shape
    assert attributions.dtype == torch.float32
    assert attributions.device.type == "cpu"
    torch.testing.assert_close(attributions, _linear_gradient(model, labels))
    # signed, not absolute values
    assert (attributions < 0).any()


def test_gradient_of_a_plain_linear_model():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(18, 3))
    images, _ = _inputs(6)
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    attributions = gradient(model, images, labels, replace(DEFAULT, batch_size=4), seed=0)
    expected = model[1].weight.detach()[labels].view(-1, 2, 3, 3)
    torch.testing.assert_close(attributions, expected)


@pytest.mark.parametrize("batch_size", [1, 3, 7])
def test_gradient_does_not_depend_on_batching(batch_size):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(18, 8), nn.Tanh(), nn.Linear(8, 4)).eval()
    images, labels = _inputs(10)
    whole = gradient(model, images, labels, replace(DEFAULT, batch_size=100), seed=0)
    small = replace(DEFAULT, batch_size=batch_size)
    torch.testing.assert_close(gradient(model, images, labels, small, seed=0), whole)
    one_by_one = torch.cat(
        [gradient(model, images[i : i + 1], labels[i : i + 1], small, seed=0) for i in range(10)]
    )
    torch.testing.assert_close(one_by_one, whole)


def test_gradient_targets_the_given_label():
    model = linear_model()
    images, _ = _inputs(4)
    zeros = gradient(model, images, torch.zeros(4, dtype=torch.long), DEFAULT, seed=0)
    ones = gradient(model, images, torch.ones(4, dtype=torch.long), DEFAULT, seed=0)
    assert not torch.allclose(zeros, ones)


def test_gradient_x_input_of_a_linear_model():
    model = linear_model()
    images, labels = _inputs()
    attributions = gradient_x_input(model, images, labels, DEFAULT, seed=0)
    torch.testing.assert_close(attributions, images * _linear_gradient(model, labels))


@pytest.mark.parametrize("method", [integrated_gradients, deeplift])
@pytest.mark.parametrize("baseline", ["zero", "mean"])
def test_path_methods_of_a_linear_model_are_input_minus_baseline_times_gradient(method, baseline):
    model = linear_model()
    images, labels = _inputs()
    settings = replace(DEFAULT, baseline=baseline, steps=5)
    attributions = method(model, images, labels, settings, seed=0)
    reference = (
        torch.zeros(1, 2, 1, 1) if baseline == "zero" else torch.tensor(MEAN).view(1, 2, 1, 1)
    )
    expected = (images - reference) * _linear_gradient(model, labels)
    torch.testing.assert_close(attributions, expected)


def test_mean_baseline_needs_one_channel_mean_per_channel():
    model = linear_model()
    images, labels = _inputs(2)
    settings = Settings(baseline="mean", channel_mean=(0.5,))
    for method in (integrated_gradients, deeplift):
        with pytest.raises(ValueError, match="channel_mean"):
            method(model, images, labels, settings, seed=0)


def test_noise_methods_of_a_linear_model():
    model = linear_model()
    images, labels = _inputs()
    expected = _linear_gradient(model, labels)
    settings = replace(DEFAULT, noise_std=0.5, noise_samples=5)
    # the noise does not change a constant gradient
    torch.testing.assert_close(smoothgrad(model, images, labels, settings, seed=1), expected)
    torch.testing.assert_close(smoothgrad_sq(model, images, labels, settings, seed=1), expected**2)
    torch.testing.assert_close(
        vargrad(model, images, labels, settings, seed=1),
        torch.zeros_like(images),
        atol=1e-6,
        rtol=0,
    )


def test_loss_gradient_of_a_linear_model_is_the_softmax_residual_times_w():
    model = linear_model()
    images, labels = _inputs()
    settings = replace(DEFAULT, target="loss")
    expected = _loss_gradient(model, images, labels)
    torch.testing.assert_close(gradient(model, images, labels, settings, seed=0), expected)
    torch.testing.assert_close(
        gradient_x_input(model, images, labels, settings, seed=0), images * expected
    )
    # differs from the logit gradient (same magnitude class, another direction)
    assert not torch.allclose(expected, _linear_gradient(model, labels), atol=1e-3)


def test_loss_noise_methods_pass_each_image_its_own_label():
    """With tiny noise, SmoothGrad of the loss is the loss gradient at the image: a label
    expanded in the wrong order over the noisy samples would give another image's gradient."""
    model = linear_model()
    images, labels = _inputs(6)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    settings = replace(DEFAULT, target="loss", noise_std=1e-4, noise_samples=4)
    expected = _loss_gradient(model, images, labels)
    smooth = smoothgrad(model, images, labels, settings, seed=0)
    torch.testing.assert_close(smooth, expected, atol=1e-3, rtol=0)
    squared = smoothgrad_sq(model, images, labels, settings, seed=0)
    torch.testing.assert_close(squared, expected**2, atol=1e-3, rtol=0)
    small = replace(settings, internal_batch_size=6)  # one noisy sample per forward pass
    torch.testing.assert_close(
        smoothgrad(model, images, labels, small, seed=0), smooth, atol=1e-3, rtol=0
    )


@pytest.mark.parametrize("baseline", ["zero", "mean"])
def test_loss_integrated_gradients_is_the_path_integral_of_the_loss_gradient(baseline):
    model = linear_model()
    images, labels = _inputs(6)
    settings = replace(DEFAULT, target="loss", baseline=baseline, steps=32)
    attributions = integrated_gradients(model, images, labels, settings, seed=0)
    reference = torch.zeros_like(images) + (
        0.0 if baseline == "zero" else torch.tensor(MEAN).view(1, 2, 1, 1)
    )
    alphas = (torch.arange(400) + 0.5) / 400  # midpoint rule on the closed-form gradient
    path = torch.stack(
        [_loss_gradient(model, reference + a * (images - reference), labels) for a in alphas]
    )
    expected = (images - reference) * path.mean(0)
    torch.testing.assert_close(attributions, expected, atol=1e-5, rtol=1e-4)
    # completeness: the attributions sum to loss(x) - loss(baseline)
    with torch.no_grad():
        delta = F.cross_entropy(model(images), labels, reduction="none") - F.cross_entropy(
            model(reference), labels, reduction="none"
        )
    torch.testing.assert_close(attributions.sum((1, 2, 3)), delta, atol=1e-5, rtol=1e-4)


def test_deeplift_refuses_the_loss_target():
    model = linear_model()
    images, labels = _inputs(2)
    with pytest.raises(ValueError, match="deeplift supports only targets 'logit' and 'predicted'"):
        deeplift(model, images, labels, replace(DEFAULT, target="loss"), seed=0)


def test_deeplift_attributions_sum_to_the_logit_difference():
    model = linear_model(3, hidden_sizes=[6])
    images, labels = _inputs(8)
    attributions = deeplift(model, images, labels, DEFAULT, seed=0)
    with torch.no_grad():
        rows = torch.arange(8)
        delta = model(images)[rows, labels] - model(torch.zeros_like(images))[rows, labels]
    torch.testing.assert_close(attributions.sum((1, 2, 3)), delta, atol=1e-5, rtol=1e-4)
    # not plain gradient x input on a ReLU network
    plain = gradient_x_input(model, images, labels, DEFAULT, seed=0)
    assert not torch.allclose(attributions, plain, atol=1e-4)


# --- guided backprop -------------------------------------------------------------------------


def test_guided_backprop_of_a_one_hidden_layer_relu_mlp():
    model = linear_model(2, hidden_sizes=[7])
    first, last = model.network[1], model.network[3]
    images, labels = _inputs(8)
    attributions = guided_backprop(model, images, labels, DEFAULT, seed=0)
    with torch.no_grad():
        hidden = first(model.normalize(images).flatten(1))
    output_gradient = F.one_hot(labels, 4).float()
    # only positive gradients pass back through the ReLU, only where its input was positive
    hidden_gradient = (output_gradient @ last.weight.detach() * (hidden > 0)).clamp(min=0)
    expected = (hidden_gradient @ first.weight.detach()).view(-1, 2, 3, 3) / _std()
    torch.testing.assert_close(attributions, expected)
    plain = gradient(model, images, labels, DEFAULT, seed=0)
    assert not torch.allclose(attributions, plain, atol=1e-4)


@pytest.mark.parametrize("name", ["gradcam", "guided_backprop"])
def test_positive_evidence_methods_refuse_the_loss_target(name):
    """Their ReLU keeps positive evidence: for the loss, what raises it (issue 14, item 6)."""
    model = small_cnn()
    images, labels = _cnn_inputs(2)
    settings = replace(DEFAULT, layer="conv2", target="loss")
    with pytest.raises(ValueError, match=rf"^{name} supports only targets 'logit' and 'predicted'"):
        METHODS[name](model, images, labels, settings, seed=0)


# --- Grad-CAM --------------------------------------------------------------------------------


def small_cnn(seed: int = 0, channels: int = 1, size: int = 4) -> nn.Sequential:
    torch.manual_seed(seed)
    spec = {
        "architecture": "cnn",
        "channels": [3, 5],
        "hidden_sizes": [],
        "input_shape": [channels, size, size],
        "num_classes": 3,
        "channel_mean": [0.4] * channels,
        "channel_std": [0.3] * channels,
    }
    return build_model(spec).eval()


def _cnn_inputs(count=5, channels=1, size=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(count, channels, size, size, generator=generator)
    labels = torch.randint(0, 3, (count,), generator=generator)
    return images, labels


def _grad_cam_by_hand(model, images, labels, layer):
    """relu(sum_k mean_ij(dY/dA_k) A_k) with A the output of network[:layer], Y the logit of
    `labels`."""
    network = model.network
    index = list(dict(network.named_children())).index(layer)
    activations = network[: index + 1](model.normalize(images)).detach().requires_grad_()
    outputs = network[index + 1 :](activations)[torch.arange(len(labels)), labels]
    (grads,) = torch.autograd.grad(outputs.sum(), activations)
    weights = grads.mean(dim=(2, 3), keepdim=True)
    return (weights * activations).sum(1, keepdim=True).relu().detach()


def test_gradcam_of_a_same_size_conv_layer_is_the_grad_cam_formula():
    model = small_cnn()
    images, labels = _cnn_inputs()
    attributions = gradcam(model, images, labels, replace(DEFAULT, layer="conv2"), seed=0)
    expected = _grad_cam_by_hand(model, images, labels, "conv2")  # (N, 1, 4, 4)
    assert (expected > 0).any() and (expected == 0).any()
    torch.testing.assert_close(attributions, expected)


def test_gradcam_upsamples_bilinearly_and_repeats_over_channels():
    model = small_cnn(1, channels=3)
    images, labels = _cnn_inputs(channels=3)
    attributions = gradcam(model, images, labels, replace(DEFAULT, layer="pool"), seed=0)
    assert attributions.shape == images.shape
    assert attributions.dtype == torch.float32
    assert (attributions >= 0).all()
    for channel in (1, 2):
        torch.testing.assert_close(attributions[:, channel], attributions[:, 0])
    cam = _grad_cam_by_hand(model, images, labels, "pool")  # (N, 1, 2, 2)
    expected = F.interpolate(cam, size=(4, 4), mode="bilinear", align_corners=False)
    torch.testing.assert_close(attributions[:, :1], expected)


@pytest.mark.parametrize("layer", [None, "", "conv9", "layer4"])
def test_gradcam_names_the_missing_layer_and_lists_the_conv_layers(layer):
    model = small_cnn()
    images, labels = _cnn_inputs(2)
    with pytest.raises(ValueError, match=rf"layer {layer!r} .*conv1, conv2$"):
        gradcam(model, images, labels, replace(DEFAULT, layer=layer), seed=0)


def test_gradcam_refuses_mlps_and_layers_without_a_feature_map():
    images, labels = _inputs(2)
    with pytest.raises(ValueError, match="no convolutional layers"):
        gradcam(linear_model(), images, labels, replace(DEFAULT, layer="conv1"), seed=0)
    cnn_images, cnn_labels = _cnn_inputs(2)
    with pytest.raises(ValueError, match="no feature map"):
        gradcam(small_cnn(), cnn_images, cnn_labels, replace(DEFAULT, layer="flatten"), seed=0)


# --- model-independent controls --------------------------------------------------------------


def test_sobel_of_a_vertical_step_edge_is_scipys_edge_magnitude_and_ignores_the_model():
    image = np.zeros((6, 6))
    image[:, 3:] = 1.0
    images = torch.zeros(2, 2, 6, 6)
    images[0, 0] = torch.from_numpy(image)
    images[1, 1] = torch.from_numpy(image.T.copy())  # horizontal edge
    labels = torch.tensor([0, 1])
    attributions = sobel(linear_model(), images, labels, replace(DEFAULT, batch_size=1), seed=0)
    assert attributions.shape == images.shape
    assert attributions.dtype == torch.float32
    expected = np.hypot(ndimage.sobel(image, axis=0), ndimage.sobel(image, axis=1))
    assert expected[:, 2:4].min() > 0 and expected[:, [0, 1, 4, 5]].max() == 0
    np.testing.assert_allclose(attributions[0, 0].numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(attributions[1, 1].numpy(), expected.T, rtol=1e-6)
    # channels and images do not mix: blank planes have no edges
    assert attributions[0, 1].abs().max() == 0 and attributions[1, 0].abs().max() == 0
    other = sobel(None, images, labels.flip(0), DEFAULT, seed=5)
    torch.testing.assert_close(other, attributions, rtol=0, atol=0)


def test_random_is_deterministic_per_seed_and_independent_of_the_model():
    images, labels = _inputs(5)
    first = random(linear_model(0), images, labels, replace(DEFAULT, batch_size=2), seed=3)
    again = random(linear_model(1), images * 0, labels, replace(DEFAULT, batch_size=5), seed=3)
    other = random(linear_model(0), images, labels, replace(DEFAULT, batch_size=2), seed=4)
    assert first.shape == images.shape
    assert first.dtype == torch.float32
    assert first.min() >= 0 and first.max() < 1
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.equal(first, other)
    # different coordinates and images get different scores
    assert len(torch.unique(first)) == first.numel()
    expected = torch.rand(images.shape, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(first, expected, rtol=0, atol=0)


# --- seeds, chunking, registry, settings -----------------------------------------------------


@pytest.mark.parametrize("method", [smoothgrad, smoothgrad_sq, vargrad])
def test_noise_methods_are_reproducible_per_seed_and_leave_the_global_rng_alone(method):
    model = linear_model(0, hidden_sizes=[6])
    images, labels = _inputs(6)
    settings = replace(DEFAULT, noise_samples=4)
    state = torch.get_rng_state()
    first = method(model, images, labels, settings, seed=7)
    torch.rand(3)  # the global RNG moves on
    again = method(model, images, labels, settings, seed=7)
    other = method(model, images, labels, settings, seed=8)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.allclose(first, other)
    torch.set_rng_state(state)
    method(model, images, labels, settings, seed=9)
    assert torch.equal(torch.get_rng_state(), state)


CHUNKED = [
    "gradient",
    "gradient_x_input",
    "integrated_gradients",
    "guided_backprop",
    "gradcam",
    "deeplift",
    "sobel",
]


@pytest.mark.parametrize("name", CHUNKED)
def test_deterministic_methods_do_not_depend_on_chunking(name):
    model = small_cnn(2)
    images, labels = _cnn_inputs(10)
    settings = replace(DEFAULT, layer="conv1", steps=6, channel_mean=(0.4,), baseline="mean")
    whole = METHODS[name](model, images, labels, replace(settings, batch_size=64), seed=0)
    chunked = METHODS[name](model, images, labels, replace(settings, batch_size=3), seed=0)
    torch.testing.assert_close(chunked, whole)
    assert whole.abs().sum() > 0


@pytest.mark.parametrize("target", ["logit", "loss"])
def test_integrated_gradients_does_not_depend_on_the_internal_batch_size(target):
    model = small_cnn(3)
    images, labels = _cnn_inputs(10)
    settings = replace(DEFAULT, steps=8, target=target)
    large = integrated_gradients(model, images, labels, settings, seed=0)
    for internal in (1, 4, 25):
        small = replace(settings, internal_batch_size=internal)
        torch.testing.assert_close(
            integrated_gradients(model, images, labels, small, seed=0), large
        )


def test_methods_registry_and_signature():
    from diffroar.config import METHODS as CONFIG_NAMES

    assert list(METHODS) == list(CONFIG_NAMES)  # the config's names, in the schema's order
    assert METHODS["gradient"] is gradient
    assert METHODS["random"] is random
    for name, method in METHODS.items():
        parameters = inspect.signature(method).parameters
        assert list(parameters) == ["model", "images", "labels", "settings", "seed"], name
        assert parameters["seed"].kind is inspect.Parameter.KEYWORD_ONLY, name


def test_settings_defaults_and_validation():
    settings = Settings()
    assert (settings.batch_size, settings.internal_batch_size, settings.steps) == (512, 4096, 32)
    assert (settings.target, settings.baseline, settings.layer) == ("logit", "zero", None)
    assert (settings.noise_std, settings.noise_samples) == (0.15, 16)
    assert Settings(channel_mean=[0.5, 1]).channel_mean == (0.5, 1.0)
    for bad in ({"target": "probability"}, {"baseline": "blur"}, {"steps": 0}, {"noise_std": -1}):
        with pytest.raises(ValueError):
            Settings(**bad)


# --- every method on every architecture ------------------------------------------------------

ARCHITECTURES = {
    "mlp": {"architecture": "mlp", "hidden_sizes": [8]},
    "cnn": {"architecture": "cnn", "channels": [4, 4], "hidden_sizes": [8]},
    "resnet18": {"architecture": "resnet18"},
}
GRADCAM_LAYERS = {"mlp": None, "cnn": "conv2", "resnet18": "layer4"}


@pytest.fixture(scope="module")
def models():
    built = {}
    for name, spec in ARCHITECTURES.items():
        torch.manual_seed(0)
        full = {
            **spec,
            "input_shape": [1, 8, 8],
            "num_classes": 3,
            "channel_mean": [0.3],
            "channel_std": [0.2],
        }
        built[name] = build_model(full).eval()
    return built


def _hooks(model: nn.Module) -> int:
    return sum(
        len(module._forward_hooks)
        + len(module._forward_pre_hooks)
        + len(module._backward_hooks)
        + len(module._backward_pre_hooks)
        for module in model.modules()
    )


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("target", ["logit", "loss"])
def test_every_method_runs_on_every_architecture(models, architecture, target):
    model = models[architecture]
    before = {name: value.clone() for name, value in model.state_dict().items()}
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(3, 1, 8, 8, generator=generator)
    labels = torch.tensor([0, 2, 1])
    settings = Settings(
        batch_size=2,
        internal_batch_size=8,
        target=target,
        baseline="mean",
        steps=4,
        noise_samples=3,
        layer=GRADCAM_LAYERS[architecture],
        channel_mean=(0.3,),
    )
    ran = []
    for name, method in METHODS.items():
        refused = (name == "gradcam" and architecture == "mlp") or (
            name in ("deeplift", "gradcam", "guided_backprop") and target == "loss"
        )
        if refused:
            with pytest.raises(ValueError):
                method(model, images, labels, settings, seed=0)
            continue
        first = method(model, images, labels, settings, seed=0)
        assert first.shape == images.shape, name
        assert first.dtype == torch.float32, name
        assert first.device.type == "cpu", name
        assert torch.isfinite(first).all(), name
        if name in MODEL_METHODS:
            assert first.abs().sum() > 0, name
        assert _hooks(model) == 0, name
        assert not images.requires_grad, name
        torch.testing.assert_close(method(model, images, labels, settings, seed=0), first)
        ran.append(name)
    expected = set(METHODS) - ({"gradcam"} if architecture == "mlp" else set())
    expected -= {"deeplift", "gradcam", "guided_backprop"} if target == "loss" else set()
    assert set(ran) == expected
    assert not model.training
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name


# --- target `predicted` ----------------------------------------------------------------------


def test_predicted_classes_are_the_argmax_in_eval_mode_in_batches():
    torch.manual_seed(0)
    model = build_model(
        {
            "architecture": "resnet18",
            "input_shape": [1, 8, 8],
            "num_classes": 3,
            "channel_mean": [0.3],
            "channel_std": [0.2],
        }
    )
    model.train()  # batch norm on batch statistics: the predictions would depend on the batch
    images = torch.rand(7, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    classes = saliency.predicted_classes(model, images, batch_size=3)
    assert model.training  # left as it was
    with torch.no_grad():
        expected = model.eval()(images).argmax(1)
    assert classes.dtype == torch.int64
    torch.testing.assert_close(classes, expected)
    empty = saliency.predicted_classes(model, images[:0], batch_size=3)
    assert empty.shape == (0,) and empty.dtype == torch.int64


def _right_and_wrong(model, images):
    """Labels that the model gets right on the even images and wrong on the odd ones."""
    with torch.no_grad():
        predicted = model(images).argmax(1)
    classes = model(images[:1]).shape[1]
    wrong = (predicted + 1) % classes
    odd = torch.arange(len(images)) % 2 == 1
    return torch.where(odd, wrong, predicted), predicted, ~odd


@pytest.mark.parametrize("name", MODEL_METHODS)
def test_predicted_target_is_the_logit_target_where_the_model_is_right(name):
    """With target `predicted` every method that takes a class target explains the predicted
    class: the logit target's attributions where the label is the prediction, others where it is
    not; explained_classes lets no label through."""
    model = small_cnn(4)
    images, _ = _cnn_inputs(8, seed=3)
    labels, predicted, right = _right_and_wrong(model, images)
    logit = replace(DEFAULT, layer="conv2", channel_mean=(0.4,), steps=8, noise_samples=4)
    settings = replace(logit, target="predicted")
    classes = saliency.explained_classes(model, images, labels, settings)
    torch.testing.assert_close(classes, predicted)
    torch.testing.assert_close(saliency.explained_classes(model, images, labels, logit), labels)
    method = METHODS[name]
    explained = method(model, images, classes, settings, seed=0)
    of_labels = method(model, images, labels, logit, seed=0)
    torch.testing.assert_close(explained[right], of_labels[right])
    torch.testing.assert_close(explained, method(model, images, predicted, logit, seed=0))
    differs = (explained - of_labels).flatten(1).abs().amax(1) > 1e-6
    assert differs[~right].any(), name  # a wrong label changes the explanation


# --- the stage -------------------------------------------------------------------------------


def test_block_seeds_differ_by_split_and_start_and_seed():
    seeds = {
        (seed, split, start): saliency.block_seed(seed, split, start)
        for seed in (0, 1)
        for split in ("train", "val", "test")
        for start in (0, 8192)
    }
    assert len(set(seeds.values())) == len(seeds)
    assert saliency.block_seed(0, "val", 8192) == seeds[(0, "val", 8192)]


@pytest.fixture
def tiny_stores(tmp_path):
    model = linear_model()
    checkpoint = tmp_path / "model.safetensors"
    save_checkpoint(
        checkpoint,
        model,
        SPEC,
        {"dataset": "tiny", "model": "lin", "seed": 0, "config_fingerprint": "f"},
    )
    dataset = create_store(tmp_path / "dataset.zarr", {"pixel_max": 4.0, "channel_mean": MEAN})
    rng = np.random.default_rng(0)
    for split in SPLITS:
        group = dataset.create_group(split)
        write_array(group, "images", rng.integers(0, 5, size=(5, 2, 3, 3), dtype=np.uint8))
        write_array(group, "labels", rng.integers(0, 4, size=5).astype(np.int64))
    return model, tmp_path / "dataset.zarr", checkpoint


@pytest.mark.parametrize(
    "method, settings",
    [
        ("gradient", {"batch_size": 2, "seed": 0}),
        ("integrated_gradients", {"batch_size": 2, "baseline": "mean", "steps": 4, "seed": 1}),
        ("gradient", {"batch_size": 3, "target": "loss"}),
        ("gradient", {"batch_size": 2, "target": "predicted"}),
        ("random", {"seed": 5}),
    ],
)
def test_run_saliency_writes_closed_form_attributions(tmp_path, tiny_stores, method, settings):
    model, dataset, checkpoint = tiny_stores
    out = tmp_path / "saliency.zarr"
    run_saliency(str(dataset), str(checkpoint), str(out), method=method, settings=settings)
    weight = model.network[-1].weight.detach().numpy()
    std = np.array(STD, dtype=np.float32).reshape(1, 2, 1, 1)
    attributes = dict(open_store(out).attrs)
    assert attributes["method"] == method
    assert attributes["seed"] == settings.get("seed", 0)
    assert attributes["target"] == settings.get("target", "logit")
    assert attributes["settings"] == settings  # what the config gave, nothing filled in
    differs = []  # target predicted: where the prediction is not the label
    for split in SPLITS:
        stored_split = read_split(dataset, split)
        images = stored_split["images"].astype(np.float32) / 4.0
        labels = stored_split["labels"]
        stored = read_split(out, split)["attributions"]
        assert stored.dtype == np.float32
        if settings.get("target") == "predicted":
            with torch.no_grad():
                predicted = model(torch.from_numpy(images)).argmax(1).numpy()
            differs.append(predicted != labels)
            labels = predicted  # the predicted class's logit; no label enters
        gradient_rows = weight[labels].reshape(-1, 2, 3, 3) / std
        if method == "random":
            seed = saliency.block_seed(settings["seed"], split, 0)
            expected = torch.rand(images.shape, generator=torch.Generator().manual_seed(seed))
            np.testing.assert_array_equal(stored, expected.numpy())
        elif settings.get("target") == "loss":
            expected = _loss_gradient(model, torch.from_numpy(images), torch.from_numpy(labels))
            np.testing.assert_allclose(stored, expected.numpy(), rtol=1e-5, atol=1e-6)
        elif method == "integrated_gradients":
            mean = np.array(MEAN, dtype=np.float32).reshape(1, 2, 1, 1)
            np.testing.assert_allclose(
                stored, (images - mean) * gradient_rows, rtol=1e-4, atol=1e-6
            )
        else:
            np.testing.assert_allclose(stored, gradient_rows, rtol=1e-5)
    if settings.get("target") == "predicted":  # the case tells the targets apart
        assert np.concatenate(differs).any()
