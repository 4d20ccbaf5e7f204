"""The progress switch of helpers without a ``progress`` argument (`latentatlas._util.progress`):
``execute(progress=False)`` (the CLI's ``--quiet``) must hide the transfer matrix's bar too."""

from __future__ import annotations

import numpy as np
import pytest

import latentatlas as la
from latentatlas._util import progress


def _points(n: int) -> np.ndarray:
    k, h = np.meshgrid(np.linspace(0.2, 0.6, n), np.linspace(-0.5, 0.5, n), indexing="ij")
    return np.stack([k.ravel(), h.ravel()], 1)


def test_quiet_hides_the_transfer_matrix_bar(capfd: pytest.CaptureFixture) -> None:
    source = la.sources.Ising2D(L=4, coords="natural")
    params = _points(48)  # 2304 points: 9 chunks of 256, enough for the bar
    shown = source.reference(params)
    assert "Ising transfer matrix" in capfd.readouterr().err
    with progress.quiet():
        assert not progress.enabled()
        hidden = source.reference(params)
    assert progress.enabled()
    assert "Ising transfer matrix" not in capfd.readouterr().err
    np.testing.assert_array_equal(shown["metric"], hidden["metric"])  # the same computation
    with progress.quiet(False):
        assert progress.enabled()


@pytest.mark.parametrize("flag", [False, True])
def test_execute_runs_its_stages_with_the_switch(flag: bool, monkeypatch: pytest.MonkeyPatch
                                                 ) -> None:
    from latentatlas.atlas import pipeline
    from latentatlas.atlas.stages import Stage

    seen: list[bool] = []

    class Probe(Stage):
        name = "probe"

        def compute(self, ctx: object) -> None:
            seen.append(progress.enabled())

    monkeypatch.setattr(pipeline, "stages_for", lambda config, report: [Probe()])
    source = la.sources.GaussianFamily()
    config = la.atlas.config.RunConfig.make(source, resolution=4, samples_per_point=4, bundle=2,
                                            analyses={})
    pipeline.execute(source, config, progress=flag, report=False)
    assert seen == [flag]
    assert progress.enabled()  # restored after the run
