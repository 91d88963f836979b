from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from service.main import create_app


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def make_client(store: Path, **overrides) -> TestClient:
    values = {
        "model_store": store,
        "provider": "cpu",
        "intra_op_threads": 1,
        "max_batch_size": 4,
        **overrides,
    }
    settings = Settings(**values)
    return TestClient(create_app(settings), raise_server_exceptions=False)


@pytest.fixture
def client(tiny_store: Path) -> Iterator[TestClient]:
    with make_client(tiny_store) as c:
        yield c
