"""``latentatlas flows``: train a normalizing flow on a toy 2-D density."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from .._util import check_finite_positive, check_int
from .common import main

__all__ = ["flows"]

_MODELS = ("nsf", "realnvp", "maf", "iaf")
_DEFAULT_TRANSFORMS = {"nsf": 5, "realnvp": 8, "maf": 5, "iaf": 5}
_DATA = ("two-moons", "8-gaussians", "checkerboard", "pinwheel", "rings", "2-spirals")


@main.group()
def flows() -> None:
    """Normalizing flows (RealNVP, NSF, MAF, IAF) on toy densities."""


def _parse_hidden(value: str) -> tuple[int, ...]:
    try:
        hidden = tuple(int(v) for v in value.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise ValueError(f"--hidden: expected comma-separated positive ints, got {value!r}") from None
    if not hidden or min(hidden) <= 0:
        raise ValueError(f"--hidden: expected comma-separated positive ints, got {value!r}")
    return hidden


@flows.command("train")
@click.option("--data", type=click.Choice(_DATA), default="two-moons", show_default=True,
              help="Toy density to learn.")
@click.option("--model", type=click.Choice(_MODELS), default="nsf", show_default=True,
              help="Flow: nsf (spline coupling), realnvp (affine coupling), maf, iaf.")
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="Output directory (model.safetensors, flow.png, metrics.json); rerun the same "
              "command to resume an interrupted run.")
@click.option("--steps", type=int, default=2000, show_default=True, help="Optimisation steps.")
@click.option("--batch-size", "batch_size", type=int, default=256, show_default=True,
              help="Minibatch size.")
@click.option("--lr", type=float, default=3e-3, show_default=True,
              help="Adam learning rate (cosine decay to 0).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the data, the initial weights and the minibatches.")
@click.option("--samples", type=int, default=5000, show_default=True,
              help="Flow samples drawn for the figure.")
@click.option("--train-size", "train_size", type=int, default=20000, show_default=True,
              help="Training points (10% held out for validation / early stopping).")
@click.option("--test-size", "test_size", type=int, default=10000, show_default=True,
              help="Independent test points for the reported NLL.")
@click.option("--transforms", type=int, default=None,
              help="Number of layers [default: nsf 5, realnvp 8, maf 5, iaf 5].")
@click.option("--hidden", default="64,64", show_default=True,
              help="Hidden widths of each conditioner network, comma-separated.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train_cmd(
    data: str, model: str, out: str, steps: int, batch_size: int, lr: float, seed: int,
    samples: int, train_size: int, test_size: int, transforms: int | None, hidden: str,
    quiet: bool,
) -> None:
    """Train a flow on a toy density; save the model, a figure and the test NLL.

    \b
    Writes to OUT:
      model.safetensors   the trained flow (load it with latentatlas.load)
      flow.png            data | flow samples | learned density
      metrics.json        test NLL (nats per point), training history, timing
      checkpoint.pt       training state (resumes an interrupted run)

    \b
    Example:
      latentatlas flows train --data two-moons --model nsf --out runs/nsf
    """
    import torch

    import latentatlas as la
    from latentatlas.datasets import toy
    from latentatlas.flows import IAF, MAF, NSF, RealNVP, fit
    from latentatlas.report.flows import plot_flow

    for value, name in ((steps, "--steps"), (batch_size, "--batch-size"), (lr, "--lr"),
                        (samples, "--samples"), (train_size, "--train-size"),
                        (test_size, "--test-size")):
        check_finite_positive(value, name)
    if seed < 0:
        raise ValueError(f"--seed: expected a non-negative int, got {seed}")
    if transforms is not None:
        check_int(transforms, "--transforms", minimum=1)
    hidden_t = _parse_hidden(hidden)
    n_layers = transforms or _DEFAULT_TRANSFORMS[model]

    out_dir = Path(out)
    options = {"data": data, "model": model, "steps": steps, "batch_size": batch_size, "lr": lr,
               "seed": seed, "train_size": train_size, "transforms": n_layers,
               "hidden": list(hidden_t)}
    cfg_path = out_dir / "config.json"
    ckpt = out_dir / "checkpoint.pt"
    if ckpt.exists() and cfg_path.exists():
        previous = json.loads(cfg_path.read_text())
        if previous != options:
            diff = {k: (previous.get(k), v) for k, v in options.items() if previous.get(k) != v}
            raise ValueError(
                f"--out: {str(out_dir)!r} holds a run with other options {diff} "
                "(old, new); use another --out or delete it"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg_path.write_text(json.dumps(options, indent=2))

    x_train = toy(data, train_size, seed)
    x_test = toy(data, test_size, seed + 1_000_003)
    torch.manual_seed(seed)
    cls = {"nsf": NSF, "realnvp": RealNVP, "maf": MAF, "iaf": IAF}[model]
    flow = cls(2, transforms=n_layers, hidden=hidden_t)
    t0 = time.perf_counter()
    history = fit(flow, x_train, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                  progress=not quiet, checkpoint=ckpt, patience=None, val_every=100)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        test_nll = float(-torch.cat([flow.log_prob(x_test[i : i + 8192])
                                     for i in range(0, test_size, 8192)]).mean())
        torch.manual_seed(seed)
        drawn = flow.sample(samples)
    la.save(flow, out_dir / "model.safetensors")
    plot_flow(flow, x_test, drawn, title=f"{model} on {data}: test NLL {test_nll:.3f} nats",
              path=out_dir / "flow.png")
    metrics = {
        "test_nll": test_nll,
        "best_val_nll": history.best_val,
        "best_step": history.best_step,
        "steps_done": history.steps_done,
        "train_seconds": seconds,
        "history": {"step": history.step, "loss": history.loss,
                    "val_step": history.val_step, "val_loss": history.val_loss},
        **options,
    }
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    click.echo(f"{model} on {data}: test NLL {test_nll:.4f} nats ({test_size} points); "
               f"wrote {out_dir / 'model.safetensors'}, flow.png, metrics.json")
