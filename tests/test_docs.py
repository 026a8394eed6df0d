"""The documentation site: the generated references cover every recipe key and every command option,
and the site builds (strict: no broken link) when the ``docs`` extra is installed."""

import dataclasses
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

import ndeconv
from ndeconv.cli import app
from ndeconv.recipe import AugmentSpec, DataSpec, DeconvConfig, ModelSpec, OptimSpec, Recipe, TrainSpec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs"))
import hooks  # noqa: E402


def test_the_recipe_reference_has_every_key_with_its_meaning():
    text = hooks.recipe_reference()
    for prefix, cls in [("", Recipe), ("data.", DataSpec), ("model.", ModelSpec), ("model.deconv.", DeconvConfig),
                        ("optim.", OptimSpec), ("train.", TrainSpec), ("augment.", AugmentSpec)]:
        docs = hooks.field_docs(cls)
        for f in dataclasses.fields(cls):
            row = next(line for line in text.splitlines() if line.startswith(f"| `{prefix}{f.name}` |"))
            assert docs[f.name] and docs[f.name].split()[0] in row
    assert "| `model.deconv.preset` |" in text and "`fast`" in text


def test_field_docs_are_the_strings_under_the_fields():
    @dataclasses.dataclass
    class Undocumented:
        documented: int = 1
        """Has one."""
        bare: int = 2

    assert hooks.field_docs(Undocumented) == {"documented": "Has one."}


def test_the_command_line_reference_has_every_command_and_option():
    text = hooks.cli_reference()
    root = typer.main.get_command(app)
    for name, command in root.commands.items():
        assert f"## `ndeconv {name}`" in text
        for param in command.params:
            for opt in param.opts:
                if opt.startswith("--") and opt != "--help":
                    assert f"`{opt}`" in text, (name, opt)


def test_the_api_page_has_every_public_name():
    text = (ROOT / "docs" / "reference" / "api.md").read_text()
    documented = set(re.findall(r"^::: ndeconv\.(?:hub\.)?(\w+)$", text, flags=re.M))
    assert set(ndeconv.__all__) - {"__version__"} <= documented


def build_site(root: Path, out: Path) -> subprocess.CompletedProcess:
    """``mkdocs build --strict`` of the site under ``root`` into ``out``."""
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)],
                          cwd=root, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = build_site(ROOT, out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_the_site_builds_with_generated_references(site):
    recipe_page = (site / "reference" / "recipe.html").read_text()
    assert "model.deconv.update_every" in recipe_page and "{{ recipe_reference }}" not in recipe_page
    cli_page = (site / "reference" / "cli.html").read_text()
    assert "--limit-train" in cli_page and "{{ cli_reference }}" not in cli_page
    api_page = (site / "reference" / "api.html").read_text()
    for name in set(ndeconv.__all__) - {"__version__"}:
        assert f"ndeconv.{name}" in api_page or f"ndeconv.hub.{name}" in api_page, name


def test_every_notebook_has_a_page_with_its_pictures(site):
    for notebook in sorted((ROOT / "nbs").glob("*.ipynb")):
        stored = json.loads(notebook.read_text())
        outputs = [out for cell in stored["cells"] for out in cell.get("outputs", [])]
        pictures = sum("image/png" in out.get("data", {}) for out in outputs)
        page = (site / "nbs" / f"{notebook.stem}.html").read_text()
        assert page.count("data:image/png;base64") >= pictures, notebook.name
    assert any("data:image/png;base64" in p.read_text() for p in (site / "nbs").glob("*.html"))


def test_every_picture_a_page_shows_is_in_the_site(site):
    for page in site.rglob("*.html"):
        for src in re.findall(r'<img[^>]+src="([^"]+\.png)"', page.read_text()):
            if not src.startswith(("http", "data:")):
                assert (page.parent / src).resolve().is_file(), (page, src)


def test_the_site_is_browsable_from_the_file_system(site):
    """Every link between pages names a file (``decision.html``), not a folder a browser would list."""
    links = 0
    for page in set(site.rglob("*.html")) - {site / "404.html"}:  # the server's error page links from the root
        for href in re.findall(r'<a[^>]+href="([^"#?]+)', page.read_text()):
            if not href.startswith(("http:", "https:", "mailto:", "data:", "javascript:")):
                links += 1
                assert (page.parent / href).resolve().is_file(), (page.relative_to(site), href)
    assert links > 100


def test_a_broken_link_fails_the_build(tmp_path):
    copy = tmp_path / "repo"
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".git", "site", "runs", "__pycache__", "*.egg-info"))
    page = copy / "docs" / "training.md"
    page.write_text(page.read_text() + "\nSee [the missing page](no-such-page.md).\n")
    result = build_site(copy, tmp_path / "site")
    assert result.returncode != 0 and "no-such-page.md" in result.stderr


def test_the_readme_is_a_front_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    for target in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (ROOT / target).exists(), target
