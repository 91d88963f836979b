"""Features that several clinical rules read from the model's outputs, with the one threshold they share."""

from __future__ import annotations

# The model's spiculation score is on the LIDC 1-5 scale (1 none, 5 marked) but shrunk towards 1: on the held-out
# LIDC patients its highest value is 2.9, and the readers' own score is 3 or more for 10% of nodules. 2.5 flags the
# nodules the model itself sees as clearly spiculated (7 of 156 held-out nodules, 5 of them rated 3 or more by the
# readers, who rated 16 so: the model card's figures); it is used both for Brock's binary "spiculation" and for
# suggesting Lung-RADS 4X review.
SPICULATION_THRESHOLD = 2.5
SCORE_DECIMALS = 6  # as the answer shows every head's values

# Model type label -> Lung-RADS / Brock wording.
NODULE_TYPES = ("solid", "part_solid", "ground_glass")


def shown_score(score: float) -> float:
    """A score as the answer shows it."""
    return round(float(score), SCORE_DECIMALS)


def is_spiculated(score: float) -> bool:
    """Spiculated for Brock and 4X purposes: the model's 1-5 spiculation score, as the answer shows it, at or above
    the threshold (a reader comparing the shown score with the threshold gets the same answer)."""
    return shown_score(score) >= SPICULATION_THRESHOLD
