"""The names of derived attribution methods: `base+modifier+modifier...`.

A method named in `experiment.methods` is a method of the registry (diffroar.saliency.METHODS)
followed by any number of modifiers, applied left to right to its attributions
(diffroar.modifiers implements them):

- `abs`: the absolute value of the attributions (methods are signed by default);
- `blur<sigma>`: Gaussian smoothing of each channel of the map, `sigma` in pixels, written as
  Python's `%g` writes it (`blur1`, `blur0.5`, `blur2.5`), so that one blur has one name;
- `smoothgrad`, `smoothgrad_sq`, `vargrad`: the noise tunnel over the method so far (noisy copies
  of each image, the method applied to each, reduced to their mean, mean of squares or variance),
  with `saliency.noise_std`, `noise_samples` and `seed`.

Every setting of a modifier is in the name (`integrated_gradients+blur2`), so each derived method
has its own paths, table rows and fingerprint, and two settings can sit side by side. Imported by
the config check (no torch here).
"""

from __future__ import annotations

import re

SEPARATOR = "+"
NOISE_TUNNELS = ("smoothgrad", "smoothgrad_sq", "vargrad")
# how each modifier is written, for messages
MODIFIER_FORMS = ("abs", "blur<sigma>", *NOISE_TUNNELS)
BLUR = re.compile(r"blur(\d+(?:\.\d+)?)")
BLUR_SIGMA_MAX = 100.0  # pixels: far wider than any image here


class MethodNameError(ValueError):
    """A derived method's name that does not parse; the message says what is allowed."""


Modifier = tuple[str, float | None]  # (kind, its parameter): ("blur", 2.0), ("abs", None)


def parse_modifier(text: str) -> Modifier:
    """(kind, parameter) of one modifier's text: `abs`, `blur<sigma>` or a noise tunnel."""
    if text == "abs" or text in NOISE_TUNNELS:
        return text, None
    match = BLUR.fullmatch(text)
    if match is None:
        raise MethodNameError(
            f"unknown modifier {text!r}; modifiers: {', '.join(MODIFIER_FORMS)} (blur's sigma in "
            "pixels, e.g. blur1)"
        )
    sigma = float(match.group(1))
    if not 0 < sigma <= BLUR_SIGMA_MAX:
        raise MethodNameError(
            f"modifier {text!r}: blur's sigma must be > 0 and <= {BLUR_SIGMA_MAX:g} pixels"
        )
    if text != f"blur{sigma:g}":
        raise MethodNameError(
            f"modifier {text!r}: write it blur{sigma:g}, so that one sigma has one name"
        )
    return "blur", sigma


def parse_method(name: str) -> tuple[str, list[Modifier]]:
    """(base method, its modifiers in order) of `name`; the base is not checked here."""
    base, *modifiers = name.split(SEPARATOR)
    return base, [parse_modifier(text) for text in modifiers]


def method_base(name: str) -> str:
    """The registry method a (possibly derived) method name starts from."""
    return name.split(SEPARATOR, 1)[0]


def has_noise_tunnel(name: str) -> bool:
    """Whether a derived method applies a noise tunnel (it then draws noise per image)."""
    return any(kind in NOISE_TUNNELS for kind, _ in parse_method(name)[1])
