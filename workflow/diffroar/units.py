"""What a keep fraction keeps of an image: its ranked units (coordinates or pixels) and how many
of them a fraction k keeps. The config check (diffroar.config, at every Snakemake start) and the
mask stage (diffroar.mask) count with these, so this module imports nothing heavy."""

from __future__ import annotations

import math
from collections.abc import Sequence

RANKINGS = ("coordinate", "pixel")


def ranked_units(shape: Sequence[int], ranking: str) -> int:
    """Number of ranked units of one image (C, H, W): C*H*W coordinates or H*W pixels."""
    if ranking not in RANKINGS:
        raise ValueError(f"ranking {ranking!r}: must be one of {', '.join(RANKINGS)}")
    return int(math.prod(shape if ranking == "coordinate" else shape[1:]))


def keep_count(keep_fraction: float, units: int) -> int:
    """Units kept per image: round(k * d), at least 1 and at most d."""
    return int(min(units, max(1, round(keep_fraction * units))))
