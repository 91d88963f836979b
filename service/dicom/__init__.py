"""CT series uploads: DICOM files (or one .zip) in memory -> a sorted, validated series -> HU cubes around nodules.

Modules, one reason to change each: sources (files out of the upload, limits enforced while reading), headers
(what pydicom reads from each file, without pixel data), series (grouping, selection, consistency), geometry
(slice order, spacing, world <-> voxel), pixels (decoding only the slices a patch needs), centers (the client's
nodule centres), pipeline (the whole preparation for the route).

Nothing here logs, echoes or labels a value that could identify a patient or a study: errors carry counts, indices
and geometry only.
"""

from pydicom import config as _pydicom_config

# Values are never validated while reading: validation warnings quote tag values (names, dates) and slow the scan.
_pydicom_config.settings.reading_validation_mode = _pydicom_config.IGNORE

import warnings as _warnings  # noqa: E402

# pydicom's other warnings (an unknown character set, a damaged element) may quote what a file holds, and Python
# prints warnings to stderr, the container's log: never shown. What matters about a file reaches the client as a
# counted, value-free warning or error instead.
_warnings.filterwarnings("ignore", module=r"pydicom(\..*)?$")
_warnings.filterwarnings("ignore", module=r"highdicom(\..*)?$")  # e.g. it quotes a PatientName it finds odd

import logging as _logging  # noqa: E402

# pydicom also logs what it warns about (warn_and_log), and highdicom logs values too: neither reaches the service's
# log handlers.
for _name in ("pydicom", "highdicom"):
    _logger = _logging.getLogger(_name)
    _logger.propagate = False
    _logger.setLevel(_logging.CRITICAL + 1)
