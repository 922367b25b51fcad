"""Method modifiers (diffroar.modifiers) and derived method names (diffroar.methodnames): blur,
abs and the noise tunnel over any method, in any order."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
import torch
from diffroar.methodnames import MethodNameError, parse_method
from diffroar.modifiers import absolute, blurred, noise_tunnel, sample_seeds, with_modifiers
from diffroar.saliency import (
    METHODS,
    gradient,
    image_seeds,
    integrated_gradients,
    random,
    resolve_method,
)
from scipy import ndimage
from test_saliency import DEFAULT, _inputs, linear_model

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _seeds(images, base_seed=0):
    return image_seeds(0, base_seed, "test", range(len(images)))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("gradient", ("gradient", [])),
        ("gradient+blur1", ("gradient", [("blur", 1.0)])),
        ("sobel+abs+blur0.5", ("sobel", [("abs", None), ("blur", 0.5)])),
        ("deeplift+smoothgrad+vargrad", ("deeplift", [("smoothgrad", None), ("vargrad", None)])),
    ],
)  # fmt: skip
def test_derived_names_parse_into_a_base_and_its_modifiers(name, expected):
    assert parse_method(name) == expected


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("gradient+blur", "unknown modifier 'blur'"),
        ("gradient+blurr1", "unknown modifier 'blurr1'; modifiers: abs, blur<sigma>, smoothgrad"),
        ("gradient+blur0", "blur's sigma must be > 0 and <= 100 pixels"),
        ("gradient+blur101", "blur's sigma must be > 0 and <= 100 pixels"),
        ("gradient+blur1.0", "write it blur1, so that one sigma has one name"),
        ("gradient+blur0.50", "write it blur0.5"),
        ("gradient+", "unknown modifier ''"),
    ],
)
def test_bad_modifiers_are_named_with_what_is_allowed(name, message):
    with pytest.raises(MethodNameError, match=re.escape(message)):
        parse_method(name)


def test_blur_smooths_each_plane_alone_with_scipys_gaussian():
    images, labels = _inputs(count=4)
    model = linear_model(hidden_sizes=[5])
    seeds = _seeds(images)
    plain = gradient(model, images, labels, DEFAULT, seeds=seeds).numpy()
    smooth = blurred(gradient, 1.5)(model, images, labels, DEFAULT, seeds=seeds).numpy()
    for image in range(4):
        for channel in range(2):
            expected = ndimage.gaussian_filter(plain[image, channel], 1.5, mode="reflect")
            np.testing.assert_allclose(smooth[image, channel], expected, rtol=1e-5, atol=1e-7)
    # a spike in one channel stays in its channel and its image
    spike = np.zeros((2, 2, 5, 5), dtype=np.float32)
    spike[0, 0, 2, 2] = 1

    def constant(model, images, labels, settings, *, seeds):
        return torch.from_numpy(spike)

    values = blurred(constant, 1.0)(None, torch.zeros(2, 2, 5, 5), None, DEFAULT, seeds=seeds[:2])
    assert values.dtype == torch.float32
    assert values[0, 0].sum() == pytest.approx(1, rel=1e-5) and values[0, 0, 2, 2] < 1
    assert not values[0, 1].any() and not values[1].any()


def test_modifiers_apply_left_to_right():
    images, labels = _inputs(count=3)
    model = linear_model(hidden_sizes=[5])
    seeds = _seeds(images)
    plain = gradient(model, images, labels, DEFAULT, seeds=seeds)
    abs_then_blur = resolve_method("gradient+abs+blur1")(
        model, images, labels, DEFAULT, seeds=seeds
    )
    expected = ndimage.gaussian_filter(plain.abs().numpy(), (0, 0, 1, 1), mode="reflect")
    np.testing.assert_allclose(abs_then_blur.numpy(), expected, rtol=1e-5, atol=1e-7)
    blur_then_abs = with_modifiers(gradient, [("blur", 1.0), ("abs", None)])
    other = blur_then_abs(model, images, labels, DEFAULT, seeds=seeds)
    assert not torch.allclose(other, abs_then_blur)  # signed values cancel in the blur
    assert torch.equal(absolute(gradient)(model, images, labels, DEFAULT, seeds=seeds), plain.abs())


@pytest.mark.parametrize("nt_type", ["smoothgrad", "smoothgrad_sq", "vargrad"])
@pytest.mark.parametrize("sizes", [(64, 32), (3, 5), (2, 1)])
def test_the_noise_tunnel_over_the_gradient_is_the_built_in_method(nt_type, sizes):
    images, labels = _inputs(count=7)
    model = linear_model(hidden_sizes=[6])
    settings = replace(DEFAULT, batch_size=sizes[0], internal_batch_size=sizes[1], noise_samples=4)
    seeds = _seeds(images)
    built_in = METHODS[nt_type](model, images, labels, settings, seeds=seeds)
    derived = noise_tunnel(gradient, nt_type)(model, images, labels, settings, seeds=seeds)
    assert torch.equal(derived, built_in)


def test_the_noise_tunnel_over_integrated_gradients_reduces_its_maps_of_the_noisy_copies():
    images, labels = _inputs(count=3)
    model = linear_model(hidden_sizes=[6])
    settings = replace(DEFAULT, steps=4, noise_samples=3, noise_std=0.2, internal_batch_size=5)
    seeds = _seeds(images)
    derived = resolve_method("integrated_gradients+vargrad")(
        model, images, labels, settings, seeds=seeds
    )
    for image in range(3):
        noise = torch.randn(
            (3, 2, 3, 3), generator=torch.Generator().manual_seed(int(seeds[image]))
        )
        noisy = images[image : image + 1] + 0.2 * noise
        maps = integrated_gradients(
            model, noisy, labels[image].repeat(3), settings, seeds=seeds[:3]
        )
        expected = maps.pow(2).mean(0) - maps.mean(0).pow(2)
        torch.testing.assert_close(derived[image], expected, rtol=1e-4, atol=1e-6)


def test_a_stochastic_method_in_the_tunnel_draws_per_noisy_copy_and_image():
    images, labels = _inputs(count=5)
    settings = replace(DEFAULT, noise_samples=4)
    seeds = _seeds(images)
    per_copy = sample_seeds(seeds, 4)
    assert per_copy.shape == (20,) and len(set(per_copy.tolist()) | set(seeds.tolist())) == 25
    tunnel = noise_tunnel(random, "smoothgrad")
    whole = tunnel(None, images, labels, settings, seeds=seeds)
    # image i's values depend on its seed alone, not on the batch it is attributed in
    for batch_size in (1, 2):
        chunked = tunnel(
            None, images, labels, replace(settings, batch_size=batch_size), seeds=seeds
        )
        assert torch.equal(chunked, whole)
    expected = random(None, images[:1].repeat(4, 1, 1, 1), None, settings, seeds=per_copy[:4])
    torch.testing.assert_close(whole[0], expected.mean(0))


def test_a_derived_method_has_the_method_signature_and_wants_one_seed_per_image():
    images, labels = _inputs(count=3)
    method = resolve_method("gradient+smoothgrad+blur1")
    with pytest.raises(ValueError, match="got 2 seeds for 3 images"):
        method(linear_model(), images, labels, DEFAULT, seeds=_seeds(images)[:2])
    with pytest.raises(ValueError, match="no attribution method 'lime'"):
        resolve_method("lime+blur1")
