"""Probes of faults and hostile input, one row each, through the command line.

Each probe runs ``python -m ndeconv ...`` on a tiny dataset written here and says what happened
(exit status, error lines, tracebacks, what was left behind). Run it against another checkout
to compare versions::

    python bench/probes/faults.py                         # this checkout
    python bench/probes/faults.py --repo ../old-ndeconv   # e.g. a worktree of an older commit

Nothing is timed; it takes a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from runstate import rank_process  # noqa: E402
from tinydata import write_tiny_parquet, write_tiny_recipe  # noqa: E402


class Planted:
    """Unpickling this creates the file ``marker``: what an attacker's checkpoint would do."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


class Probes:
    def __init__(self, repo: Path, work: Path):
        self.env = {**os.environ, "PYTHONPATH": str(repo), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                    "NDECONV_CACHE": str(work / "cache"), "HF_DATASETS_CACHE": str(work / "hf")}
        self.work = work
        self.data = write_tiny_parquet(self._dir("data"))
        self.recipe = write_tiny_recipe(work / "tiny.yaml", self.data)

    def _dir(self, name: str) -> Path:
        path = self.work / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def cli(self, *args: str, shell_prefix: str = "", timeout: float = 600) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "ndeconv", *args]
        if shell_prefix:
            cmd = ["bash", "-c", shell_prefix + " exec " + " ".join(map(_quote, cmd))]
        return subprocess.run(cmd, capture_output=True, text=True, env=self.env, cwd=self.work, timeout=timeout)

    def popen(self, cmd: list[str]) -> subprocess.Popen:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env,
                                cwd=self.work)

    def finished_run(self, name: str, *extra: str) -> Path:
        out = self.work / name
        proc = self.cli("train", str(self.recipe), "--epochs", "1", "--out", str(out), "-q", *extra)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return out


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def said(proc: subprocess.CompletedProcess | tuple[int, str]) -> str:
    """rc, the error lines (first one quoted, cut), whether a traceback showed."""
    rc, err = (proc.returncode, proc.stderr) if isinstance(proc, subprocess.CompletedProcess) else proc
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    first = (errors or lines or [""])[0][:110]
    trace = "Traceback" in err
    return (f"rc {rc}, {len(lines)} stderr line(s){', TRACEBACK' if trace else ''}"
            + (f': "{first}"' if first else ""))


def _results(run: Path) -> str:
    path = run / "results.json"
    if not path.is_file():
        return "no results.json"
    text = path.read_text()
    try:
        results = json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    except ValueError:
        return "results.json NOT strict JSON"
    return f"results status {results.get('status', '(none)')}, accuracy {results.get('accuracy')}"


def probe_planted_pickle(p: Probes) -> str:
    run = p.finished_run("planted")
    (run / "results.json").unlink()
    (run / "model.safetensors").unlink()
    marker = p.work / "pwned"
    (run / "checkpoint.pth").write_bytes(pickle.dumps({"model": Planted(str(marker)), "epoch": 1}))
    proc = p.cli("train", "--resume", str(run), "-q")
    return f"{said(proc)}; planted code {'RAN' if marker.exists() else 'did not run'}"


def probe_exponent_number(p: Probes) -> str:
    out = p.work / "exponent"
    proc = p.cli("train", str(p.recipe), "--epochs", "1", "--set", "optim.weight_decay=5e-4", "--out", str(out),
                 "-q")
    wd = None
    if (out / "config.yaml").is_file():
        import yaml

        wd = yaml.safe_load((out / "config.yaml").read_text())["optim"]["weight_decay"]
    return f"{said(proc)}; weight_decay {wd!r}"


def probe_huge_lr(p: Probes) -> str:
    out = p.work / "huge-lr"
    proc = p.cli("train", str(p.recipe), "--norm", "bn", "--lr", "1e6", "--epochs", "3", "--out", str(out), "-q")
    return f"{said(proc)}; {_results(out)}"


def probe_nan_lr(p: Probes) -> str:
    outs = []
    for args in (["--lr", "nan"], ["--set", "optim.lr=.nan"], ["--lr", "inf"]):
        proc = p.cli("train", str(p.recipe), *args, "--epochs", "1", "--out", str(p.work / f"nan{len(outs)}"), "-q")
        outs.append(f"{' '.join(args)}: rc {proc.returncode}")
    return "; ".join(outs)


def probe_compare_diverged(p: Probes) -> str:
    out = p.work / "compare"
    proc = p.cli("compare", str(p.recipe), "--models", "convnet3", "--epochs", "1", "--norms", "bn", "--grid",
                 "optim.lr=0.05,1000000", "--out", str(out), "-q")
    table = (out / "table.md").read_text() if (out / "table.md").is_file() else ""
    return f"{said(proc)}; table.md {'marks a cell diverged' if 'diverged' in table else 'marks nothing'}"


def probe_same_directory(p: Probes) -> str:
    out = p.work / "same"
    cmd = [sys.executable, "-m", "ndeconv", "train", str(p.recipe), "--epochs", "1", "--out", str(out), "-q"]
    procs = [p.popen(cmd + ["--seed", str(s)]) for s in (1, 2)]
    done = [(q.wait(timeout=600), q.stderr.read()) for q in procs]
    return " | ".join(said(d) for d in done)


def probe_file_size_limit(p: Probes) -> str:
    out = p.work / "ulimit"
    proc = p.cli("train", str(p.recipe), "--epochs", "2", "--out", str(out), "-q", shell_prefix="ulimit -f 300;")
    return said(proc)


def probe_truncated_checkpoint(p: Probes) -> str:
    run = p.finished_run("truncated")
    (run / "results.json").unlink()
    (run / "model.safetensors").unlink()
    data = (run / "checkpoint.pth").read_bytes()
    (run / "checkpoint.pth").write_bytes(data[: len(data) // 2])
    return said(p.cli("train", "--resume", str(run), "-q"))


def probe_truncated_weights(p: Probes) -> str:
    run = p.finished_run("weights")
    data = (run / "model.safetensors").read_bytes()
    (run / "model.safetensors").write_bytes(data[: len(data) // 2])
    return said(p.cli("export", str(run), "--format", "safetensors", "--out", str(p.work / "w.st")))


def probe_empty_split(p: Probes) -> str:
    import datasets

    data = p._dir("empty-data")
    for f in p.data.glob("*.parquet"):
        shutil.copy(f, data / f.name)
    train = next(data.glob("train*.parquet"))
    ds = datasets.Dataset.from_parquet(str(train))
    ds.select([]).to_parquet(str(train))
    out = p.work / "empty-run"
    proc = p.cli("train", str(p.recipe), "--data", str(data), "--epochs", "1", "--out", str(out), "-q")
    return f"{said(proc)}; run directory {'left behind' if out.exists() else 'not made'}"


def probe_undecodable_uncached(p: Probes) -> str:
    import datasets

    data = p._dir("bad-image-data")
    for f in p.data.glob("*.parquet"):
        shutil.copy(f, data / f.name)
    train = next(data.glob("train*.parquet"))
    ds = datasets.Dataset.from_parquet(str(train)).cast_column("img", datasets.Image(decode=False))
    rows = ds.to_list()
    rows[123]["img"] = {"bytes": b"not an image", "path": None}
    datasets.Dataset.from_list(rows, features=ds.features).to_parquet(str(train))
    out = p.work / "bad-image-run"
    proc = p.cli("train", str(p.recipe), "--data", str(data), "--epochs", "1", "--set", "data.cache=false", "--out",
                 str(out), "-q")
    return f"{said(proc)}; run directory {'left behind' if out.exists() else 'not made'}"


def probe_dead_rank(p: Probes) -> str:
    out = p.work / "dead-rank"
    proc = p.popen([sys.executable, "-m", "ndeconv", "train", str(p.recipe), "--epochs", "6", "--batch-size", "4",
                    "--num-processes", "2", "--out", str(out), "-q"])
    while not (out / "metrics.csv").is_file():
        if proc.poll() is not None:
            return "the run ended before its first epoch: " + said((proc.returncode, proc.stderr.read()))
        time.sleep(0.1)
    rank_process(proc.pid, 1).send_signal(signal.SIGKILL)
    killed = time.time()
    _, err = proc.communicate(timeout=600)
    gone = time.time() - killed
    resumed = p.cli("train", "--resume", str(out), "-q")
    world = json.loads((out / "results.json").read_text()).get("world_size") if (out / "results.json").is_file() \
        else None
    return (f"{said((proc.returncode, err))}; exit {gone:.1f} s after the kill; resume without --num-processes: "
            f"rc {resumed.returncode}, world_size {world}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def probe_two_machines_without_multi_gpu(p: Probes) -> str:
    out, port = p.work / "machines", _free_port()
    procs = [p.popen([sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "2", "--machine_rank",
                      str(rank), "--num_processes", "2", "--main_process_ip", "127.0.0.1", "--main_process_port",
                      str(port), "--dynamo_backend", "no", "--mixed_precision", "no", "-m", "ndeconv", "train",
                      str(p.recipe), "--epochs", "1", "--out", str(out), "-q"]) for rank in (0, 1)]
    done = [(q.wait(timeout=600), q.stderr.read()) for q in procs]
    return " | ".join(said(d) for d in done)


def probe_fuzz(p: Probes) -> str:
    (p.work / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p_}, *{p_}, *{p_}, *{p_}, *{p_}, *{p_}, *{p_}, *{p_}, *{p_}]\n"
        for p_, c in zip("abcde", "bcdef")) + "name: *f\n"
    (p.work / "bomb.yaml").write_text(bomb)
    cases = {"image_size 1e9": ["train", str(p.recipe), "--set", "data.image_size=1000000000"],
             "binary recipe": ["train", str(p.work / "binary.yaml")],
             "seed 1e20": ["train", str(p.recipe), "--set", "train.seed=99999999999999999999"],
             "alias bomb": ["train", str(p.work / "bomb.yaml")],
             "markup": ["train", str(p.recipe), "--set", "augment.zoom=[2, 1]"]}
    rows = []
    for name, args in cases.items():
        proc = p.cli(*args, "--out", str(p.work / "fuzz"), "-q")
        longest = max((len(line) for line in proc.stderr.splitlines()), default=0)
        rows.append(f"{name}: rc {proc.returncode}{', TRACEBACK' if 'Traceback' in proc.stderr else ''}, "
                    f"longest line {longest}{', [min, max] shown' if '[min, max]' in proc.stderr else ''}")
    return "; ".join(rows)


PROBES = [probe_planted_pickle, probe_exponent_number, probe_huge_lr, probe_nan_lr, probe_compare_diverged,
          probe_same_directory, probe_file_size_limit, probe_truncated_checkpoint, probe_truncated_weights,
          probe_empty_split, probe_undecodable_uncached, probe_dead_rank, probe_two_machines_without_multi_gpu,
          probe_fuzz]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=ROOT, help="checkout whose ndeconv to probe")
    parser.add_argument("--only", default="", help="comma-separated probe names (without probe_)")
    args = parser.parse_args()
    chosen = [f for f in PROBES if not args.only or f.__name__[len("probe_"):] in args.only.split(",")]
    with tempfile.TemporaryDirectory(prefix="ndeconv-probes-") as tmp:
        probes = Probes(args.repo.resolve(), Path(tmp))
        for probe in chosen:
            try:
                row = probe(probes)
            except Exception as e:  # a probe that breaks is a row too
                row = f"probe failed: {type(e).__name__}: {str(e)[:200]}"
            print(f"| {probe.__name__[len('probe_'):]} | {row} |", flush=True)


if __name__ == "__main__":
    main()
