"""Features that several clinical rules read from the model's outputs, with the one threshold they share."""

from __future__ import annotations

# The model's spiculation score is on the LIDC 1-5 scale (1 none, 5 marked) but shrunk towards 1: on the held-out
# LIDC patients its highest value is 2.9, and the readers' own score is 3 or more for 10% of nodules. 2.5 flags the
# nodules the model itself sees as clearly spiculated (4 of 156 held-out nodules, 3 of them rated 3 or more by the
# readers); it is used both for Brock's binary "spiculation" and for suggesting Lung-RADS 4X review.
SPICULATION_THRESHOLD = 2.5

# Model type label -> Lung-RADS / Brock wording.
NODULE_TYPES = ("solid", "part_solid", "ground_glass")


def is_spiculated(score: float) -> bool:
    """Spiculated for Brock and 4X purposes: the model's 1-5 spiculation score at or above the threshold."""
    return score >= SPICULATION_THRESHOLD
