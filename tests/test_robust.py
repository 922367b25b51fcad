"""The robust stage: the evaluation attack (training.eval_attack), restarts that never weaken it,
and the JSON that records which attack measured the robust accuracy."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffroar.models import build_model, save_checkpoint
from diffroar.robust import attack_label, eval_attack_settings, robust_accuracy, run_robust
from diffroar.store import SPLITS, create_store, write_array
from diffroar.train import accuracy, pgd, train

torch.set_num_threads(1)

SPEC = {
    "architecture": "mlp",
    "hidden_sizes": [16],
    "input_shape": [1, 2, 3],
    "num_classes": 2,
    "channel_mean": [0.5],
    "channel_std": [0.3],
}
LINF = {"mode": "pgd", "norm": "linf", "eps": 0.1, "steps": 7}


def toy_problem(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 1, 2, 3) in [0, 1]; the label says whether the first pixel exceeds the second
    (a margin of 0.05 at least)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(count, 1, 2, 3, generator=generator)
    difference = images[:, 0, 0, 0] - images[:, 0, 0, 1]
    keep = difference.abs() > 0.05
    return images[keep], (difference[keep] > 0).long()


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    fitted = build_model(SPEC)
    settings = {"epochs": 15, "batch_size": 32, "learning_rate": 0.01, "weight_decay": 0.0}
    train(fitted, toy_problem(256, seed=1), {}, seed=0, **settings)
    return fitted.eval()


def test_eval_attack_defaults_to_the_training_attack_with_one_restart():
    attack = eval_attack_settings({"training": LINF}, {})
    assert attack == {"norm": "linf", "eps": 0.1, "steps": 7, "step_size": 2.5 * 0.1 / 7} | {
        "restarts": 1
    }
    stronger = eval_attack_settings({"training": LINF}, {"steps": 20, "restarts": 3})
    assert (stronger["steps"], stronger["restarts"]) == (20, 3)
    assert stronger["step_size"] == pytest.approx(2.5 * 0.1 / 20)
    given = eval_attack_settings({"training": LINF | {"step_size": 0.02}}, {"steps": 20})
    assert given["step_size"] == 0.02
    assert attack_label(stronger) == "PGD-linf eps=0.1 steps=20 restarts=3"


@pytest.mark.parametrize("bad", [{"steps": 0}, {"restarts": 0}, {"restarts": 1.5}, {"steps": True}])
def test_eval_attack_refuses_steps_and_restarts_below_one_or_not_integers(bad):
    with pytest.raises(ValueError, match="must be an integer >= 1"):
        eval_attack_settings({"training": LINF}, bad)


def test_a_standard_model_has_no_robust_accuracy():
    with pytest.raises(ValueError, match="no threat model"):
        eval_attack_settings({"training": {"mode": "standard", "steps": 7}}, {})


def test_robust_accuracy_is_below_clean_and_restarts_never_raise_it(model):
    images, labels = toy_problem(400, seed=2)
    # a weak attack (one small step): what it finds depends on its random start
    weak = {"norm": "linf", "eps": 0.15, "steps": 1, "step_size": 0.01}
    by_restarts = [
        robust_accuracy(model, images, labels, weak | {"restarts": r}, seed=0) for r in (1, 2, 4, 8)
    ]
    assert by_restarts == sorted(by_restarts, reverse=True)
    assert by_restarts[-1] < by_restarts[0]  # more restarts find more adversarial images
    assert by_restarts[0] < accuracy(model, images, labels)
    # the same seed gives the same number; the attack is PGD, stronger with more steps
    assert robust_accuracy(model, images, labels, weak | {"restarts": 2}, seed=0) == by_restarts[1]
    strong = weak | {"steps": 10, "step_size": 0.04, "restarts": 1}
    assert robust_accuracy(model, images, labels, strong, seed=0) < by_restarts[0]


def test_one_restart_is_pgd_from_its_seeded_start(model):
    """An image is robust when the model is right on it clean and on pgd's image."""
    images, labels = toy_problem(300, seed=3)
    attack = {"norm": "l2", "eps": 0.2, "steps": 3, "step_size": 0.1, "restarts": 1}
    pgd_settings = {key: attack[key] for key in ("norm", "eps", "steps", "step_size")}
    seed = int(np.random.SeedSequence([5, 0, 0]).generate_state(1)[0])
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        adversarial = pgd(model, images, labels, **pgd_settings)
    with torch.no_grad():
        robust = (model(images).argmax(1) == labels) & (model(adversarial).argmax(1) == labels)
    expected = float(robust.float().mean())
    assert robust_accuracy(model, images, labels, attack, seed=5) == pytest.approx(expected)


def test_run_robust_records_the_attack(tmp_path, model):
    images, labels = toy_problem(200, seed=4)
    store = create_store(
        tmp_path / "data.zarr", {"shape": [1, 2, 3], "num_classes": 2, "pixel_max": 255.0}
    )
    for split in SPLITS:
        group = store.create_group(split)
        write_array(group, "images", (images.numpy() * 255).round().astype(np.uint8))
        write_array(group, "labels", labels.numpy())
    info = {"dataset": "toy", "model": "mlp_linf", "seed": 3, "config_fingerprint": "abc"}
    save_checkpoint(tmp_path / "model.safetensors", model, SPEC, info)
    out = tmp_path / "robust.json"
    model_cfg = {"architecture": "mlp", "training": LINF}
    run_robust(
        str(tmp_path / "data.zarr"),
        str(tmp_path / "model.safetensors"),
        str(out),
        model_cfg=model_cfg,
        eval_attack={"steps": 10, "restarts": 2},
        expected_fingerprint="abc",
    )
    record = json.loads(out.read_text())
    assert record["robust_attack"] == {
        "norm": "linf",
        "eps": 0.1,
        "steps": 10,
        "step_size": pytest.approx(0.025),
        "restarts": 2,
    }
    assert record["robust_attack_label"] == "PGD-linf eps=0.1 steps=10 restarts=2"
    assert (record["model"], record["seed"], record["training_mode"]) == ("mlp_linf", 3, "pgd_linf")
    assert 0 <= record["robust_test_accuracy"] <= record["test_accuracy"] <= 1
    assert record["n_images"] == len(labels)
    stored = torch.from_numpy((images.numpy() * 255).round().astype(np.float32) / 255)
    attack = eval_attack_settings(model_cfg, {"steps": 10, "restarts": 2})
    expected = robust_accuracy(model, stored, labels, attack, seed=3)  # the model's seed
    assert record["robust_test_accuracy"] == pytest.approx(expected)
