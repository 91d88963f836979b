"""The service never imports torch or training; training reuses the service's schema and preprocessing."""

import subprocess
import sys

from tests.conftest import REPO


def test_service_imports_neither_torch_nor_training():
    code = (
        "import sys, service.main, service.__main__;"
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'training'))];"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_training_uses_the_single_copy_of_preprocessing():
    import training.data.lidc as lidc
    import training.data.phantoms as phantoms
    from service.imaging import preprocess

    assert phantoms.preprocess is preprocess.preprocess
    assert lidc.resample_patch is preprocess.resample_patch
