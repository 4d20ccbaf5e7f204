"""``latentatlas flows train``: files written, reported NLL reproducible from the saved model,
one-line errors with exit code 2."""

from __future__ import annotations

import json

import pytest
import torch

import latentatlas as la
from latentatlas.cli import main
from latentatlas.datasets import toy


def _run(argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
        raise SystemExit(0)
    return exc.value.code


@pytest.mark.parametrize("model", ["realnvp", "iaf"])
def test_flows_train_writes_model_figure_metrics(tmp_path, capsys, model):
    out = tmp_path / "run"
    argv = ["flows", "train", "--data", "8-gaussians", "--model", model, "--out", str(out),
            "--steps", "40", "--train-size", "2000", "--test-size", "1000", "--samples", "500",
            "--transforms", "2", "--hidden", "16,16", "--quiet"]
    assert _run(argv) == 0
    printed = capsys.readouterr().out
    for name in ("model.safetensors", "flow.png", "metrics.json", "checkpoint.pt"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert f"test NLL {metrics['test_nll']:.4f}" in printed
    assert metrics["steps_done"] == 40
    # The saved model reproduces the reported test NLL on the same test set.
    flow = la.load(out / "model.safetensors")
    x_test = toy("8-gaussians", 1000, 0 + 1_000_003)
    with torch.no_grad():
        nll = -flow.log_prob(x_test).mean().item()
    assert abs(nll - metrics["test_nll"]) < 1e-5
    assert (out / "flow.png").read_bytes()[:4] == b"\x89PNG"
    # Rerunning the same command resumes from the finished checkpoint: same result, no training.
    assert _run(argv) == 0
    again = json.loads((out / "metrics.json").read_text())
    assert abs(again["test_nll"] - metrics["test_nll"]) < 1e-6


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--steps", "0"], "--steps: expected a positive number, got 0"),
        (["--lr", "-1"], "--lr: expected a positive number, got -1.0"),
        (["--hidden", "64,zero"], "--hidden: expected comma-separated positive ints"),
        (["--model", "glow"], "Invalid value for '--model'"),
        (["--data", "spiral"], "Invalid value for '--data'"),
    ],
)
def test_flows_train_bad_options_exit_2_with_one_line(tmp_path, capsys, extra, needle):
    code = _run(["flows", "train", "--out", str(tmp_path / "x"), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and needle in err
    assert "Traceback" not in err


def test_flows_train_refuses_to_mix_runs(tmp_path, capsys):
    out = str(tmp_path / "run")
    base = ["flows", "train", "--out", out, "--steps", "5", "--train-size", "300", "--test-size",
            "100", "--samples", "100", "--transforms", "1", "--hidden", "8", "--quiet"]
    assert _run(base) == 0
    capsys.readouterr()
    assert _run([*base, "--model", "maf"]) == 2
    err = capsys.readouterr().err
    assert "holds a run with other options" in err and "'model': ('nsf', 'maf')" in err


def test_flows_help_lists_the_options(capsys):
    assert _run(["flows", "train", "--help"]) == 0
    text = capsys.readouterr().out
    for option in ("--data", "--model", "--out", "--steps", "--batch-size", "--lr", "--seed",
                   "--samples", "two-moons", "realnvp"):
        assert option in text
