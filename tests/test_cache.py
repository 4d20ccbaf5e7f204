"""The model cache: reuse on a matching key, retrain on a stale key or a corrupt file."""

from __future__ import annotations

import numpy as np
import pytest

from latentatlas.cache import cache_dir, cached, data_hash
from latentatlas.features import Pixels


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTATLAS_CACHE", str(tmp_path))
    return tmp_path


def test_cache_reuses_retrains_and_recovers(cache) -> None:
    calls = []

    def make(scale: float):
        def train():
            calls.append(scale)
            return Pixels(scale)
        return train

    assert cache_dir() == cache
    a = cached("m", {"v": 1}, make(2.0))
    b = cached("m", {"v": 1}, make(3.0))  # same key: loaded, not retrained
    assert calls == [2.0] and b.scale == 2.0 and a.scale == 2.0
    c = cached("m", {"v": 2}, make(3.0))  # stale key: retrained
    assert calls == [2.0, 3.0] and c.scale == 3.0
    (cache / "m.safetensors").write_bytes(b"\x00corrupt")  # corrupt file: retrained
    d = cached("m", {"v": 2}, make(4.0))
    assert calls == [2.0, 3.0, 4.0] and d.scale == 4.0


def test_data_hash_sees_content_shape_and_dtype() -> None:
    x = np.arange(6.0)
    assert data_hash(x) == data_hash(x.copy())
    assert data_hash(x) != data_hash(x.reshape(2, 3))
    assert data_hash(x) != data_hash(x.astype(np.float32))
    y = x.copy()
    y[3] += 1e-9
    assert data_hash(x) != data_hash(y)
