"""The default model's preprocessing and the fixed splits every script shares."""

from service.runtime.manifest import Preprocessing

# 32^3 voxels at 1.25 mm: a 40 mm field of view, so a 30 mm nodule fits with its margin.
PREPROCESSING = Preprocessing(patch_size=32, spacing_mm=1.25, hu_window=(-1000.0, 400.0), fill_hu=-1000.0)
VAL_FRACTION = 0.2  # of LIDC patients, held out from training (split seed 0)
PHANTOM_TEST_SEED = 10_000_000  # held-out phantoms use seeds from here; training seeds stay below 1e6
# Every ELONGATED_EVERY-th training phantom is cigar-like, one axis TRAIN_ELONGATION times the other two (the others'
# axes differ by at most about 1.4 times): without them the diameter head under-measures such nodules more.
ELONGATED_EVERY = 5
TRAIN_ELONGATION = (1.3, 2.8)
