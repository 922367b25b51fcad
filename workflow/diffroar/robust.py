"""Stage `robust`: the robust test accuracy of an adversarially trained base model, with the attack
that measured it.

A separate stage from `train` because the evaluation attack (`training.eval_attack`) does not change
the weights: a stronger attack reruns this job only, not the training, the attributions or the
retrainings. The attack is PGD in the model's own threat model (`norm`, `eps` of its
`training` config) with `eval_attack.steps` steps (default: the training attack's) and
`eval_attack.restarts` random starts; an image counts as robust only if the model classifies it
correctly clean and after every restart.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from .checks import expect_inputs
from .models import load_checkpoint
from .runtime import device, log, package_version, write_json
from .train import EVAL_BATCH, accuracy, load_tensors, pgd, training_mode


def eval_attack_settings(model_cfg: dict[str, Any], eval_attack: dict[str, Any]) -> dict[str, Any]:
    """The attack that measures a PGD-trained model's robust accuracy: its training threat model
    (`norm`, `eps`) with `eval_attack`'s `steps` (default: the training steps) and `restarts`
    (default 1); `step_size` is the model's `training.step_size` if given, else 2.5 * eps / steps.
    Raises ValueError for a standard model (no threat model) or steps / restarts that are not
    integers >= 1."""
    training = model_cfg["training"]
    if training["mode"] != "pgd":
        raise ValueError(
            f"training mode {training['mode']!r} has no threat model: robust accuracy is measured "
            "for models with training mode 'pgd' only"
        )
    steps = eval_attack.get("steps", training["steps"])
    restarts = eval_attack.get("restarts", 1)
    for name, value in (("steps", steps), ("restarts", restarts)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"eval_attack {name} = {value!r}: must be an integer >= 1")
    eps = float(training["eps"])
    step_size = float(training.get("step_size") or 2.5 * eps / steps)
    return {
        "norm": training["norm"],
        "eps": eps,
        "steps": steps,
        "step_size": step_size,
        "restarts": restarts,
    }


def attack_label(attack: dict[str, Any]) -> str:
    """The attack in words for tables, e.g. 'PGD-linf eps=0.1 steps=20 restarts=1'."""
    return (
        f"PGD-{attack['norm']} eps={attack['eps']:g} steps={attack['steps']} "
        f"restarts={attack['restarts']}"
    )


@contextmanager
def _seeded(seed: int, on: torch.device) -> Iterator[None]:
    """Seed torch's global RNG (pgd draws its random start from it); restore it afterwards."""
    with torch.random.fork_rng(devices=[on] if on.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def robust_accuracy(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    attack: dict[str, Any],
    *,
    seed: int,
) -> float:
    """Share of `images` (N, C, H, W) in [0, 1] with `labels` (N,) that `model` (put in eval mode)
    classifies correctly clean and after each of `attack['restarts']` PGD attacks (`attack` as
    eval_attack_settings returns it), each from its own random start.

    Restart r of the batch starting at image b draws its start from seed (seed, r, b); later
    restarts attack only the images that survived the earlier ones (what is already broken stays
    broken). More restarts therefore never raise the result: restart 0 is the same attack whatever
    their number.
    """
    model.eval()
    pgd_settings = {key: attack[key] for key in ("norm", "eps", "steps", "step_size")}
    robust = 0
    for start in range(0, len(images), EVAL_BATCH):
        batch, target = images[start : start + EVAL_BATCH], labels[start : start + EVAL_BATCH]
        with torch.no_grad():
            survives = model(batch).argmax(1) == target
        for restart in range(attack["restarts"]):
            index = survives.nonzero().flatten()
            if len(index) == 0:
                break
            restart_seed = np.random.SeedSequence([seed, restart, start]).generate_state(1)[0]
            with _seeded(int(restart_seed), batch.device):
                adversarial = pgd(model, batch[index], target[index], **pgd_settings)
            with torch.no_grad():
                survives[index] = model(adversarial).argmax(1) == target[index]
        robust += int(survives.sum())
    return robust / len(images)


def run_robust(
    dataset_path: str,
    checkpoint_path: str,
    out_path: str,
    *,
    model_cfg: dict[str, Any],
    eval_attack: dict[str, Any],
    expected_fingerprint: str | None = None,
    expected: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Measure the clean and robust test accuracy of the PGD-trained base model at
    `checkpoint_path` and write them to the JSON `out_path` with the attack (`robust_attack`, a
    dict as eval_attack_settings returns it, and `robust_attack_label`, the same in words). The
    attack's random starts come from the model's seed. With `expected_fingerprint`, a checkpoint
    trained under another config is refused; with `expected` (input path -> identity), inputs
    that record another identity are refused."""
    expect_inputs(expected, [dataset_path, checkpoint_path])
    started = time.perf_counter()
    attack = eval_attack_settings(model_cfg, eval_attack)
    model, checkpoint = load_checkpoint(checkpoint_path, expected_fingerprint)
    on = device()
    model = model.to(on)
    images, labels = load_tensors(dataset_path, "test", on)
    clean = accuracy(model, images, labels)
    robust = robust_accuracy(model, images, labels, attack, seed=int(checkpoint["seed"]))
    label = attack_label(attack)
    log.info("test accuracy %.4f, robust %.4f under %s on %s", clean, robust, label, on)
    write_json(
        out_path,
        {
            "dataset": checkpoint["dataset"],
            "model": checkpoint["model"],
            "seed": checkpoint["seed"],
            "training_mode": training_mode(model_cfg),
            "test_accuracy": clean,
            "robust_test_accuracy": robust,
            "robust_attack": attack,
            "robust_attack_label": label,
            "n_images": len(labels),
            "checkpoint_fingerprint": checkpoint["config_fingerprint"],
            "package_version": package_version(),
            "wall_seconds": time.perf_counter() - started,
        },
    )
