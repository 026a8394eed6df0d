"""``ndeconv push``: a finished run to the Hugging Face hub."""

from __future__ import annotations

from pathlib import Path

import typer

from .app import command
from .common import console, friendly_errors


@command("push")
@friendly_errors
def push_cmd(
    run_dir: Path = typer.Argument(..., help="A finished run directory (from `ndeconv train`)."),
    repo_id: str = typer.Argument(..., help="Hugging Face hub model repository, e.g. user/vgg16-deconv-cifar10."),
    private: bool = typer.Option(False, help="Create the repository as private."),
) -> None:
    """Upload a finished run (model, recipe, metrics, model card) to the Hugging Face hub; load it
    back with `ndeconv.load("hf-hub:REPO_ID")`."""
    from ..hub import push

    url = push(run_dir, repo_id, private=private)
    console.print(f"pushed {run_dir} to {url}")
