"""MkDocs hooks of the documentation site: the recipe and command-line references are generated from
the recipe schema and the Typer app when the site builds (so they cannot drift from the code), the
home page is the README, and the notebooks of ``nbs/`` are rendered with their stored outputs
(mkdocs-jupyter, not executed)."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import textwrap
import typing
from pathlib import Path

from mkdocs.plugins import event_priority

ROOT = Path(__file__).resolve().parents[1]


def field_docs(cls: type) -> dict[str, str]:
    """The description of each field of a dataclass, by field name: its metadata's (``DeconvConfig``'s
    settings, with their valid range) or the docstring written under it (an attribute docstring)."""
    described = {f.name: f.metadata["doc"] + (f" Valid: {f.metadata['range'].text()}." if f.metadata["range"] else "")
                 for f in dataclasses.fields(cls) if "doc" in f.metadata}
    if described:
        return described
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, after in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def _type_text(tp: object) -> str:
    text = str(tp).replace("typing.", "").replace("NoneType", "None")
    return getattr(tp, "__name__", text) if isinstance(tp, type) else text


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return "`null`" if f.default is None else f"`{f.default!r}`".replace("'", "")
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        return "(below)" if dataclasses.is_dataclass(value) else f"`{value!r}`"
    return "required"


def recipe_reference() -> str:
    """Every recipe key by section: its type, default and meaning, from the schema's dataclasses."""
    from ndeconv.recipe import AugmentSpec, DataSpec, DeconvConfig, ModelSpec, OptimSpec, Recipe, TrainSpec

    sections = [("", Recipe), ("data.", DataSpec), ("model.", ModelSpec), ("model.deconv.", DeconvConfig),
                ("optim.", OptimSpec), ("train.", TrainSpec), ("augment.", AugmentSpec)]
    lines = []
    for prefix, cls in sections:
        docs, hints = field_docs(cls), typing.get_type_hints(cls)
        title = prefix.rstrip(".") or "top level"
        summary = (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " ")
        lines += [f"## `{title}`", "", summary, "", "| key | type | default | meaning |", "|---|---|---|---|"]
        for f in dataclasses.fields(cls):
            if f.name not in docs:
                raise ValueError(f"{cls.__name__}.{f.name} has no docstring: the recipe reference needs one")
            kind = "mapping" if dataclasses.is_dataclass(hints[f.name]) else _type_text(hints[f.name])
            kind = kind.replace("|", "or")
            lines.append(f"| `{prefix}{f.name}` | {kind} | {_default(f)} | {docs[f.name].replace('|', 'or')} |")
        lines.append("")
    from ndeconv.recipe import PRESETS

    lines += ["The presets of `model.deconv.preset`:", "", "| preset | settings |", "|---|---|"]
    lines += [f"| `{name}` | {', '.join(f'`{k}: {v}`' for k, v in settings.items()) or 'the defaults'} |"
              for name, settings in PRESETS.items()]
    return "\n".join(lines) + "\n"


def cli_reference() -> str:
    """Every command of ``ndeconv``: its help, arguments and options, from the Typer app."""
    import typer.main

    from ndeconv.cli import app

    root = typer.main.get_command(app)
    lines = []
    for name, command in sorted(root.commands.items()):
        lines += [f"## `ndeconv {name}`", "", inspect.cleandoc(command.help or ""), ""]
        args = [p for p in command.params if p.param_type_name == "argument"]
        if args:
            lines += ["| argument | meaning |", "|---|---|"]
            lines += [f"| `{p.name.upper()}` | {(getattr(p, 'help', '') or '').replace('|', 'or')} |" for p in args]
            lines.append("")
        options = [p for p in command.params if p.param_type_name == "option" and p.name != "help"]
        if options:
            lines += ["| option | default | meaning |", "|---|---|---|"]
            for p in options:
                flags = " / ".join(f"`{o}`" for o in [*p.opts, *p.secondary_opts])
                default = "" if p.default in (None, [], ()) or p.is_flag and not p.default else f"`{p.default}`"
                lines.append(f"| {flags} | {default} | {(p.help or '').replace('|', 'or')} |")
            lines.append("")
    return "\n".join(lines)


def readme() -> str:
    """The README as the site's home page: its links into ``docs/`` made relative to the site."""
    return re.sub(r"\]\(docs/", "](", (ROOT / "README.md").read_text())


GENERATED = {"{{ recipe_reference }}": recipe_reference, "{{ cli_reference }}": cli_reference, "{{ readme }}": readme}


def on_page_markdown(markdown: str, page, config, files) -> str:
    for marker, generate in GENERATED.items():
        if marker in markdown:
            markdown = markdown.replace(marker, generate())
    return markdown


@event_priority(50)  # before mkdocs-jupyter's own on_files, which turns the added notebooks into pages
def on_files(files, config):
    """Add the notebooks of ``nbs/`` as pages under ``nbs/`` (rendered with their stored outputs)."""
    from mkdocs.structure.files import File

    for notebook in sorted((ROOT / "nbs").glob("*.ipynb")):
        files.append(File(f"nbs/{notebook.name}", str(ROOT), config["site_dir"], config["use_directory_urls"]))
    return files
