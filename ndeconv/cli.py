"""The ``ndeconv`` command line (Typer): ``train``, ``recipes``, ``models``, ``compare``, ``export``, ``push``.

Bad input (recipe, data, run directory, unsupported layer) ends with one ``error: ...`` line on
stderr and exit status 2, never a traceback.

Floor: the top one: it may import every module; none imports it. The one place that speaks of
command-line options (``FLAG_KEYS``, ``ARGUMENT_FLAGS``).
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    name="ndeconv",
    help="Network deconvolution for timm models: train, compare and inspect.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)

DEFAULT_RECIPE = "digits"
MAX_ERROR = 2000  # characters of an error line
#: The library arguments an error may start with (``NdeconvError.argument``) and the option the user typed.
ARGUMENT_FLAGS = {"grid": "--grid", "norms": "--norms", "time_budgets": "--budget", "fmt": "--format"}


def friendly_errors(fn: Callable) -> Callable:
    """Turn ndeconv's input errors into one ``error:`` line and exit status 2, and Ctrl-C into
    ``interrupted`` and exit status 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from .errors import NdeconvError

        try:
            return fn(*args, **kwargs)
        except NdeconvError as e:
            from rich.markup import escape

            line = " ".join(str(e).split())  # one line, whatever the message held
            flag = ARGUMENT_FLAGS.get(e.argument or "")
            if flag and line.startswith(e.argument):  # the library names its argument, the user typed a flag
                line = flag + line[len(e.argument):]
            line = line if len(line) <= MAX_ERROR else line[: MAX_ERROR - 3] + "..."
            err_console.print(f"[red]error:[/red] {escape(line)}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("interrupted", highlight=False)
            raise typer.Exit(130) from None

    return wrapper


def _print_version(value: bool) -> None:
    if value:
        from . import __version__

        console.print(f"ndeconv {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Network deconvolution (Ye et al., ICLR 2020) for timm models, on fastai and Accelerate."""
    warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")


def _quiet_datasets(quiet: bool) -> None:
    """``--quiet`` also silences the progress bars of ``datasets``."""
    if quiet:
        import datasets

        datasets.disable_progress_bars()


def _params_m(model) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


@app.command("models")
def list_models(num_classes: int = typer.Option(10, help="Classes of the classifier.")) -> None:
    """List the paper's CIFAR models with their parameter counts, BN vs deconvolution."""
    import timm

    import ndeconv

    table = Table(title=f"CIFAR models ({num_classes} classes), parameters in millions")
    for column in ("model", "BN", "deconv", "paper (deconv)"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name in ndeconv.models.CIFAR_MODELS:
        model = timm.create_model(name, num_classes=num_classes)
        bn = _params_m(model)
        deconv = _params_m(ndeconv.deconvolve(model))
        paper = ndeconv.models.PAPER_PARAMS_M.get(name)
        table.add_row(name, f"{bn:.2f}", f"{deconv:.2f}", "-" if paper is None else f"{paper:.2f}")
    console.print(table)


@app.command("recipes")
@friendly_errors
def list_recipes() -> None:
    """List the bundled recipes (use a name or a path with 'ndeconv train')."""
    from .recipe import bundled_recipes, load_recipe

    table = Table(title="Bundled recipes")
    for column in ("name", "dataset", "model", "norm", "length", "batch", "lr", "schedule"):
        table.add_column(column, overflow="fold", no_wrap=column != "dataset")
    for name, path in bundled_recipes().items():
        r = load_recipe(path)
        source = r.data.builtin or r.data.hub_id or r.data.path
        t = r.train
        length = f"{t.epochs} epochs" if t.epochs is not None else str(t.budget or f"{t.steps} steps")
        table.add_row(name, source, r.model.name, r.model.norm, length, str(r.train.batch_size),
                      f"{r.optim.lr:g}", r.optim.schedule)
    console.print(table)


#: The options that set a recipe key, and the key each sets (the one table of them).
FLAG_KEYS = {"--model": "model.name", "--norm": "model.norm", "--budget": "train.budget", "--epochs": "train.epochs",
             "--lr": "optim.lr", "--batch-size": "train.batch_size", "--precision": "train.precision",
             "--data": "data.path", "--limit-train": "train.limit_train", "--seed": "train.seed",
             "--log-with": "train.log_with"}


def _flag_value(flag: str, value: Any) -> Any:
    """An option's value as its recipe key takes it: ``--data`` an absolute path, ``--log-with`` a list."""
    if flag == "--data":
        return str(Path(value).expanduser().resolve())
    if flag == "--log-with":
        return [t.strip() for t in value.split(",") if t.strip()]
    return value


def _overrides(flags: dict[str, Any], sets: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The recipe overrides of the given options (``{"--lr": 0.1, "--model": None, ...}``; None: not
    given) and ``--set`` items, and the option each came from (for errors)."""
    from .errors import RecipeError

    overrides = {FLAG_KEYS[flag]: _flag_value(flag, value) for flag, value in flags.items() if value is not None}
    sources = {FLAG_KEYS[flag]: flag for flag, value in flags.items() if value is not None}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"--set {item}: expected key.sub=value")
        overrides[key.strip()] = value
        sources[key.strip()] = f"--set {key.strip()}"
    return overrides, sources


def summary_table(run_dir: Path, results: dict) -> Table:
    """The one-row table printed after a run."""
    table = Table(title=f"{results['recipe']}: {results['model']} ({results['norm']})")
    score = results.get("score", "accuracy")
    length = f"{results['steps']} steps" if results.get("budget") is not None else str(results["epochs"])
    columns = {score: f"{results[score]:.4f}", "epochs": length,
               "seconds": f"{results['seconds']:.1f}", "params (M)": f"{results['params'] / 1e6:.3f}",
               "precision": results["precision"], "processes": str(results["world_size"])}
    for name in columns:
        table.add_column(name, justify="right", overflow="fold")
    table.add_row(*columns.values())
    table.caption = f"run directory: {run_dir}"
    return table


@app.command("train")
@friendly_errors
def train_cmd(
    recipe: str = typer.Argument(DEFAULT_RECIPE, help="Recipe file or bundled recipe name (see `ndeconv recipes`)."),
    model: Optional[str] = typer.Option(None, help="timm model name (model.name)."),
    norm: Optional[str] = typer.Option(None, help="bn or deconv (model.norm)."),
    epochs: Optional[int] = typer.Option(None, help="Epochs (train.epochs)."),
    budget: Optional[str] = typer.Option(None, help="Training time instead of epochs: 90s, 10m, 1h (train.budget; "
                                                    "validation not counted)."),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate (optim.lr)."),
    batch_size: Optional[int] = typer.Option(None, help="Batch size per process (train.batch_size)."),
    precision: Optional[str] = typer.Option(None, help="fp32, bf16 or fp16 (train.precision)."),
    data: Optional[Path] = typer.Option(None, help="Local data: a parquet directory or an image folder (data.path)."),
    out: Optional[Path] = typer.Option(None, help="Run directory (default: runs/<recipe>-<model>-<norm>-<time>)."),
    limit_train: Optional[int] = typer.Option(None, help="Train on a fixed subset of N training examples."),
    seed: Optional[int] = typer.Option(None, help="Random seed (train.seed)."),
    log_with: Optional[str] = typer.Option(None, help="Comma-separated Accelerate trackers, e.g. tensorboard, "
                                                      "trackio, wandb (train.log_with); files go to RUN_DIR/logs."),
    set_: list[str] = typer.Option([], "--set", help="Override any recipe key: --set optim.weight_decay=1e-3."),
    resume: Optional[Path] = typer.Option(None, help="Continue an interrupted run directory."),
    num_processes: Optional[int] = typer.Option(None, min=1, help="Data-parallel processes, launched with "
                                                "`accelerate launch` (default 1; a resume: the run's own)."),
    sync_stats: Optional[bool] = typer.Option(None, "--sync-stats/--no-sync-stats",
                                              help="All-reduce deconvolution statistics across processes "
                                                   "(default on; a resume: the run's own)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Train a recipe (default: the bundled digits recipe with deconvolution) into a run directory."""
    from .recipe import load_recipe
    from .train import default_run_dir
    from .train import resume as resume_run
    from .train import train

    from .errors import LaunchError, OutputError, RecipeError
    from .io import check_writable
    from .launch import LAUNCHED_ENV, LOST_PEER

    _quiet_datasets(quiet)
    launched = os.environ.get("WORLD_SIZE")  # this process is one of a launch's: it trains, it does not launch
    if launched is not None and num_processes is not None and str(num_processes) != launched:
        raise LaunchError(f"--num-processes {num_processes}: this process is one of {launched} launched processes")
    flags = {"--model": model, "--norm": norm, "--budget": budget, "--epochs": epochs, "--lr": lr,
             "--batch-size": batch_size, "--precision": precision, "--data": data, "--limit-train": limit_train,
             "--seed": seed, "--log-with": log_with}
    if resume is None:
        if budget is not None and epochs is not None:
            raise RecipeError("--budget and --epochs are exclusive: a run's length is one of them")
        r = load_recipe(recipe, *_overrides(flags, set_))
        run_dir = check_writable(out or default_run_dir(r), directory=True)
    else:
        given = {"a recipe": recipe != DEFAULT_RECIPE, **flags, "--out": out, "--set": set_}
        extra = [name for name, value in given.items() if value not in (None, False, [])]
        if extra:
            raise RecipeError(f"--resume continues {resume} with its own recipe; drop {', '.join(extra)} "
                              "(or start a new run)")
        run_dir = check_writable(resume, directory=True)
        num_processes, sync_stats = _resume_launch(run_dir, num_processes, sync_stats)
    num_processes = num_processes or 1
    sync_stats = True if sync_stats is None else sync_stats
    continue_hint = f"continue from the last finished epoch with `ndeconv train --resume {run_dir}`"
    if num_processes > 1 and launched is None:
        code = _launch(num_processes, run_dir, None if resume is not None else r, sync_stats, quiet, continue_hint)
        if code != 0:
            raise typer.Exit(code)
        return  # rank 0 of the launched processes printed the summary
    try:
        if resume is None:
            run_dir, results = train(r, run_dir, console=err_console, progress=not quiet, sync_stats=sync_stats)
        else:
            run_dir, results = resume_run(resume, console=err_console, progress=not quiet, sync_stats=sync_stats)
    except LaunchError as e:
        if not e.lost_peer:
            raise
        if os.environ.get(LAUNCHED_ENV):  # ndeconv's launcher names the process that died
            raise typer.Exit(LOST_PEER) from None
        raise LaunchError(f"{e}; once every process is back, continue from the last finished epoch with the same "
                          f"launch and `--resume {run_dir}`") from None
    except KeyboardInterrupt:
        err_console.print(f"interrupted: continue from the last finished epoch with `ndeconv train --resume "
                          f"{run_dir}`", soft_wrap=True, highlight=False)
        raise typer.Exit(130) from None
    except OutputError as e:  # a failed write mid-run (disk full, size limit): the last checkpoint is intact
        from .rundir import CONFIG

        if not (run_dir / CONFIG).is_file():
            raise
        raise OutputError(f"{e}; once there is room, {continue_hint}") from None
    from .train.learner import process_state

    if process_state().is_main_process:
        console.print(summary_table(run_dir, results))


def _launch(num_processes: int, run_dir: Path, recipe, sync_stats: bool, quiet: bool, continue_hint: str) -> int:
    """``ndeconv train`` on N processes: the resolved recipe travels to them as a file (so every
    override applies on every rank), or they resume ``run_dir`` (``recipe`` None)."""
    import tempfile

    from .errors import LaunchError
    from .io import write_yaml
    from .launch import launch_train
    from .recipe import recipe_to_dict

    with tempfile.TemporaryDirectory(prefix="ndeconv-recipe-") as tmp:
        args = ["--resume", str(run_dir)]
        if recipe is not None:
            args = [str(write_yaml(Path(tmp) / f"{recipe.name}.yaml", recipe_to_dict(recipe))), "--out", str(run_dir)]
        args += ["--sync-stats" if sync_stats else "--no-sync-stats"] + (["--quiet"] if quiet else [])
        try:
            return launch_train(num_processes, args)
        except LaunchError as e:
            raise LaunchError(f"{e}; {continue_hint}") from None


def _resume_launch(run_dir: Path, num_processes: int | None,
                   sync_stats: bool | None) -> tuple[int | None, bool | None]:
    """The process count and statistics synchronisation to resume ``run_dir`` with: the run's own,
    recorded when it started; a flag asking for other ones is refused."""
    from .errors import LaunchError
    from .train.processes import read_launch

    launch = read_launch(run_dir) if run_dir.is_dir() else None
    if launch is None:
        return num_processes, sync_stats
    if num_processes is not None and num_processes != launch["num_processes"]:
        raise LaunchError(f"--num-processes {num_processes}: {run_dir} was trained on {launch['num_processes']} "
                          "process(es) and resumes on them (other batches would give other numbers); drop "
                          "--num-processes")
    if sync_stats is not None and sync_stats != launch["sync_stats"]:
        flag = "--sync-stats" if sync_stats else "--no-sync-stats"
        raise LaunchError(f"{flag}: {run_dir} was trained with{'out' if sync_stats else ''} synchronised "
                          f"statistics and resumes so; drop {flag}")
    return launch["num_processes"], launch["sync_stats"]


def _csv_list(text: str, option: str, cast: type = str) -> list:
    from .errors import RecipeError

    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        values = [cast(t) for t in items]
    except ValueError:
        raise RecipeError(f"{option} {text}: expected a comma-separated list of {cast.__name__}s") from None
    if not values:
        raise RecipeError(f"{option}: empty list")
    return values


@app.command("compare")
@friendly_errors
def compare_cmd(
    recipe: str = typer.Argument(..., help="Recipe file or bundled recipe name."),
    models: Optional[str] = typer.Option(None, help="Comma-separated timm models (default: the recipe's)."),
    epochs: Optional[str] = typer.Option(None, help="Comma-separated epoch budgets, e.g. 1,20 "
                                         "(default: the recipe's)."),
    budget: Optional[str] = typer.Option(None, help="Comma-separated training-time budgets, e.g. 90s,3m,10m: "
                                         "every cell also trains for that long (an equal-time comparison)."),
    norms: str = typer.Option("bn,deconv", help="Comma-separated norms to train: bn, deconv."),
    grid: list[str] = typer.Option([], "--grid", help="Train every value of a recipe key: --grid optim.lr=0.1,0.03 "
                                   "(repeatable; every combination is a cell)."),
    seeds: Optional[str] = typer.Option(None, help="Comma-separated seeds; tables report the mean over them."),
    data: Optional[Path] = typer.Option(None, help="Local data: a parquet directory or an image folder."),
    limit_train: Optional[int] = typer.Option(None, help="Train on a fixed subset of N training examples."),
    out: Optional[Path] = typer.Option(None, help="Output directory (default: runs/compare-<recipe>)."),
    set_: list[str] = typer.Option([], "--set", help="Override any recipe key: --set optim.lr=0.05."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Train each model with BN and with deconvolution for each epoch budget (and grid setting and
    seed); write the paper's Table 1 and, with --grid, the best setting per model and norm."""
    from .compare import equal_time_table, parse_grid, rich_table, run_comparison, write_outputs
    from .errors import RecipeError
    from .recipe import load_recipe
    from .tasks import get_task

    _quiet_datasets(quiet)
    r = load_recipe(recipe, *_overrides({"--data": data, "--limit-train": limit_train}, set_))
    names = _csv_list(models, "--models") if models else [r.model.name]
    unknown = [m for m in names if not get_task(r.task).accepts_model(m)]
    if unknown:
        raise RecipeError(f"--models: unknown model '{unknown[0]}' for the {r.task} task (timm.list_models() lists "
                          "timm's)")
    time_budgets = _csv_list(budget, "--budget") if budget else []
    if epochs:
        budgets = _csv_list(epochs, "--epochs", int)
    else:  # the recipe's own length, unless the comparison is by time only
        budgets = [] if time_budgets else [r.train.epochs] if r.train.epochs is not None else []
    if any(b < 1 for b in budgets):
        raise RecipeError(f"--epochs {epochs}: budgets must be positive")
    if not budgets and not time_budgets:
        raise RecipeError("compare: the recipe has no epoch count; give --epochs or --budget")
    seed_list = _csv_list(seeds, "--seeds", int) if seeds else None
    out = out or Path("runs") / f"compare-{r.name}"
    cells = run_comparison(r, names, budgets, out, console=err_console, progress=not quiet, grid=parse_grid(grid),
                           seeds=seed_list, norms=_csv_list(norms, "--norms"), time_budgets=time_budgets)
    subset = f", {r.train.limit_train} training images" if r.train.limit_train else ""
    title = f"{r.name}: BN vs network deconvolution (ND){subset}"
    rows = write_outputs(cells, budgets, out, title, seeds=seed_list)
    if rows:
        console.print(rich_table(rows, budgets, title))
    if time_budgets:
        console.print(equal_time_table(cells, title))
    console.print(f"wrote {out / 'table.md'}, {out / 'table.csv'}, {out / 'curves.png'}", highlight=False)


VIZ_KINDS = ("kernels", "correlation", "sparsity", "linear", "segmentation")
NORM_LABEL = {"bn": "BN", "deconv": "ND"}


@app.command("viz")
@friendly_errors
def viz_cmd(
    kind: str = typer.Argument(..., help="kernels, correlation, sparsity, linear or segmentation."),
    out: Path = typer.Option(..., help="PNG file to write."),
    run: Optional[list[Path]] = typer.Option(None, help="kernels: the first layer's learned kernels of this run; "
                                                         "segmentation: the runs whose predictions to show "
                                                         "(repeatable)."),
    data: Optional[Path] = typer.Option(None, help="Images: a parquet directory or image folder (train split)."),
    image_column: str = typer.Option("img", help="Image column of --data parquet files."),
    kernel_size: int = typer.Option(5, help="Patch size for kernels and sparsity (correlation uses 3)."),
) -> None:
    """Render the paper's pictures from real images (default: scikit-learn's bundled photos)."""
    from . import viz
    from .errors import RecipeError
    from .io import check_writable

    if kind not in VIZ_KINDS:
        raise RecipeError(f"viz {kind}: choose one of {', '.join(VIZ_KINDS)}")
    check_writable(out)
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise RecipeError(f"--kernel-size {kernel_size}: must be a positive odd number")
    if kind == "segmentation":
        if not run:
            raise RecipeError("viz segmentation: give the runs to show with --run RUN_DIR (repeatable)")
        from .rundir import load_run_recipe

        labels = [f"{NORM_LABEL[load_run_recipe(r).model.norm]} ({r.name})" for r in run]
        console.print(f"wrote {viz.plot_segmentation(dict(zip(labels, run)), out)}", highlight=False)
        return
    images = _viz_images(data, image_column) if kind != "linear" else None
    if kind == "kernels":
        if run:
            path = viz.plot_kernels(viz.run_kernels(run[0]), out,
                                    f"learned deconvolution kernels, first layer of {run[0]}")
        else:
            kernels = viz.deconv_kernels(images, kernel_size)
            path = viz.plot_kernels(kernels, out, f"deconvolution kernels of {kernel_size}x{kernel_size} patches")
    elif kind == "correlation":
        path = viz.plot_correlation(images, out)
    elif kind == "sparsity":
        path = viz.plot_sparsity(images, out, kernel_size)
    else:
        losses = viz.linear_experiment()
        path = viz.plot_linear(losses, out)
        for name, (lr, history) in losses.items():
            console.print(f"{name}: best lr {lr:g}, loss after 20 iterations {history[19]:.3f}, "
                          f"final {sum(history[-20:]) / 20:.3f}", highlight=False)
    console.print(f"wrote {path}", highlight=False)


def _viz_images(data: Path | None, image_column: str):
    """The bundled photos, or up to 64 training images of a dataset directory as float [0, 1]."""
    from . import viz

    if data is None:
        return viz.sample_images()
    from .data import load_path
    from .data.tensors import decode_split
    from .errors import DataError

    ds, image_column, label_column, _ = load_path(data.expanduser().resolve(), image_column=image_column,
                                                  source="--data")
    columns = ds["train"].column_names
    missing = [c for c in (image_column, label_column) if c not in columns]
    if missing:
        raise DataError(f"--data {data}: its train split has no column '{missing[0]}' (columns: {', '.join(columns)})")
    subset = ds["train"].select(range(min(64, len(ds["train"]))))
    labels_ignored = 1 << 30
    images, _ = decode_split(subset, image_column, label_column, 3, 64, labels_ignored)
    return images.double() / 255.0


@app.command("export")
@friendly_errors
def export_cmd(
    run_dir: Path = typer.Argument(..., help="A finished run directory (from `ndeconv train`)."),
    format: str = typer.Option("onnx", "--format", "-f", help="onnx, torchscript or safetensors."),
    out: Optional[Path] = typer.Option(None, help="Output file (default: RUN_DIR/model.<format suffix>)."),
) -> None:
    """Fuse a trained run's deconvolution into plain convs and export it (ONNX checked with onnxruntime)."""
    from .export import export_run

    path, diff = export_run(run_dir, format, out)
    console.print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    if diff is not None:
        console.print(f"onnxruntime vs PyTorch: max abs difference {diff:.2e}")
        if diff > 1e-3:
            from .errors import RunDirError

            raise RunDirError(f"{path}: onnxruntime output differs from PyTorch by {diff:.2e}")


@app.command("push")
@friendly_errors
def push_cmd(
    run_dir: Path = typer.Argument(..., help="A finished run directory (from `ndeconv train`)."),
    repo_id: str = typer.Argument(..., help="Hugging Face hub model repository, e.g. user/vgg16-deconv-cifar10."),
    private: bool = typer.Option(False, help="Create the repository as private."),
) -> None:
    """Upload a finished run (model, recipe, metrics, model card) to the Hugging Face hub; load it
    back with ``ndeconv.load("hf-hub:REPO_ID")``."""
    from .hub import push

    url = push(run_dir, repo_id, private=private)
    console.print(f"pushed {run_dir} to {url}")


def main() -> None:
    """Run the command line (``python -m ndeconv``, ``python cli.py``); the ``ndeconv`` script goes
    through ``_ndeconv_entry``, which also catches Ctrl-C while the package is importing."""
    from _ndeconv_entry import main as entry

    entry()
