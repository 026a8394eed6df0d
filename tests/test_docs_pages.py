"""The documentation as a reader meets it: short pages, results pages that open with their answer and
a picture, every results table followed by the command that reproduces it and the commit it was
recorded in, the decision table in agreement with the results pages, glossary words linked."""

import csv
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RESULTS = ["results.md", "equal-time.md", "norms.md", "speedrun.md", "finetune.md", "fidelity.md", "speed.md"]
PAGES = sorted(p.name for p in DOCS.glob("*.md") if p.name not in ("index.md", "glossary.md"))
#: Words a page must not use: they describe the project's history or its machines, not the results.
LOG_WORDS = re.compile(r"second (cpu|machine)|this machine|earlier run|the goal|now fixed|was fixed", re.I)


def words(text: str) -> int:
    return len(text.split())


def prose(text: str) -> str:
    """``text`` without fenced code blocks and headings."""
    return re.sub(r"^#.*$", "", re.sub(r"```.*?```", "", text, flags=re.S), flags=re.M)


def tables(text: str) -> list[tuple[int, int]]:
    """``(first line, line after)`` of every markdown table of ``text``."""
    lines, spans, start = text.splitlines(), [], None
    for i, line in enumerate([*lines, ""]):
        if line.startswith("|") and start is None:
            start = i
        elif not line.startswith("|") and start is not None:
            spans.append((start, i))
            start = None
    return spans


def test_pages_are_short_and_the_results_pages_shorter_together():
    for page in [*PAGES, "../README.md"]:
        assert words((DOCS / page).read_text()) <= 2000, page
    assert sum(words((DOCS / page).read_text()) for page in RESULTS) < 7000


@pytest.mark.parametrize("page", RESULTS)
def test_a_results_page_opens_with_its_answer_and_a_picture(page):
    lines = (DOCS / page).read_text().splitlines()
    assert lines[0].startswith("# ")
    picture = next(i for i, line in enumerate(lines) if line.startswith("!["))
    summary = [line for line in lines[1:picture] if line.strip()]
    assert 1 <= len(summary) <= 10 and not any(line.startswith(("|", "#", "```")) for line in summary), page
    assert (DOCS / re.search(r"\]\(([^)]+)\)", lines[picture]).group(1)).is_file()


@pytest.mark.parametrize("page", RESULTS)
def test_every_results_table_is_followed_by_its_command_and_commit(page):
    text = (DOCS / page).read_text()
    lines = text.splitlines()
    spans = tables(text)
    for n, (start, end) in enumerate(spans):
        if not re.search(r"\d\.\d", "\n".join(lines[start:end])):
            continue  # a table of words (what each norm becomes), not of measurements
        after = "\n".join(lines[end: spans[n + 1][0] if n + 1 < len(spans) else len(lines)])
        assert re.search(r"```bash\n(ndeconv|python bench/)", after), (page, lines[start])
        assert re.search(r"[Rr]ecorded in commits? [0-9a-f]{7}", after), (page, lines[start])


def test_the_pages_speak_of_results_not_of_their_history():
    for page in [*PAGES, "glossary.md", "../README.md"]:
        found = LOG_WORDS.search((DOCS / page).read_text())
        assert found is None, (page, found and found.group())


def test_every_page_with_cifar10_numbers_names_the_jpeg_copy():
    """The results pages, and any page with a CIFAR-10 accuracy, say what the images were."""
    for page in [*PAGES, "../README.md"]:
        text = (DOCS / page).read_text()
        if page in RESULTS or re.search(r"CIFAR-10[^\n]*\d\.\d+ ?%", text):
            assert "glossary.md#jpeg-copy" in text, page


def _glossary_terms() -> dict[str, str]:
    """``{term: anchor}`` of the glossary's headings."""
    headings = re.findall(r"^## (.+)$", (DOCS / "glossary.md").read_text(), flags=re.M)
    return {h: re.sub(r"[^a-z0-9]+", "-", h.lower()).strip("-") for h in headings}


def _first_use(text: str, term: str) -> re.Match | None:
    """The first use of a glossary term in the prose of a page, code spans aside (``D`` only as the
    code `D`, the way the pages write it)."""
    if term == "D":
        return re.search(r"`D`", prose(text))
    blanked = re.sub(r"`[^`]+`", lambda m: " " * len(m.group()), prose(text))
    return re.search(r"(?<![\w-])" + re.escape(term) + r"(?![\w-])", blanked, flags=re.I)


@pytest.mark.parametrize("page", [*PAGES, "../README.md"])
def test_the_first_use_of_a_glossary_word_links_it(page):
    text = prose((DOCS / page).read_text())
    for term, anchor in _glossary_terms().items():
        found = _first_use(text, term)
        if found is None:
            continue
        link = re.match(r"[^\[\]]*\]\((docs/)?glossary\.md#" + anchor + r"\)", text[found.end():])
        assert link is not None and "[" in text[max(0, found.start() - 40):found.start() + 1], (page, term)


def _rows(text: str, n: int) -> list[dict[str, str]]:
    """The rows of the ``n``-th markdown table of ``text``, each ``{header: cell}``."""
    lines = text.splitlines()
    start, end = tables(text)[n]
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[start + 2:end]]


def _decision_rows() -> list[dict[str, str]]:
    return _rows((DOCS / "decision.md").read_text(), 0)


def _number(cell: str) -> float | None:
    found = re.match(r"\*{0,2}(-?\d+\.\d+)", cell)
    return float(found.group(1)) if found else None


def _section(text: str, anchor: str) -> str:
    """The part of a page under the heading whose anchor is ``anchor``, to the next heading."""
    parts = re.split(r"^(#+ .+)$", text, flags=re.M)
    for heading, body in zip(parts[1::2], parts[2::2]):
        if re.sub(r"[^a-z0-9]+", "-", heading.lstrip("#").strip().lower().replace("'", "")).strip("-") == anchor:
            return body
    raise AssertionError(f"no heading #{anchor}")


REGIME = "regime (batch 128 unless named)"
NORMS = ["BN", "GN", "ND `paper`", "ND `fast`", "none"]


@pytest.mark.parametrize("row", _decision_rows(), ids=lambda row: re.sub(r"\W+", "-", row[REGIME])[1:40])
def test_the_decision_table_agrees_with_the_results_pages(row):
    """Each row's numbers are one row of a table on the page it links to, and its winner and margin
    follow from them."""
    target = re.search(r"\]\(([\w-]+\.md)#([\w-]+)\)", row[REGIME])
    page_text = (DOCS / target.group(1)).read_text()
    assert re.search(r"^#+ .*$", page_text, flags=re.M)
    headings = {re.sub(r"[^a-z0-9]+", "-", h.lower().replace("'", "")).strip("-")
                for h in re.findall(r"^#+ (.+)$", page_text, flags=re.M)}
    assert target.group(2) in headings, (target.group(1), target.group(2))
    values = {n: _number(row[n]) for n in NORMS if _number(row[n]) is not None}
    assert len(values) >= 2
    section = _section(page_text, target.group(2))
    cells = {float(c) for line in section.splitlines() if line.startswith("|")
             for c in re.findall(r"(?<![\d.])(\d+\.\d\d)(?![\d])", line)}
    assert set(values.values()) <= cells, (row[REGIME], set(values.values()) - cells)
    ranked = sorted(values.items(), key=lambda kv: -kv[1])
    (winner, best), (_, second) = ranked[0], ranked[1]
    assert row["winner (margin)"] == f"{winner} (+{best - second:.2f})"
    assert row[winner].startswith(f"**{best:.2f}**")


#: The full-scale protocol's runs (``bench/protocol_full.sh``): label, recorded setting, step-time key.
PROTOCOL = {"BN lr 0.1": ("bn-lr0.1", ("bn", 0.1, None), "bn"),
            "BN lr 0.01": ("bn-lr0.01", ("bn", 0.01, None), "bn"),
            "ND `paper`": ("nd-paper", ("deconv", 0.1, None), "nd-paper"),
            "ND `fast`": ("nd-fast", ("deconv", 0.1, "fast"), "nd-fast")}


def test_the_full_protocol_tables_are_the_kept_runs():
    """Both tables of the full-scale protocol are recomputed from the kept runs: each trained VGG-11
    with its setting for 20 whole epochs of 50,000 images, one curve row per epoch (a resumed run
    continued the interrupted one); the minutes are its steps times its setting's measured step."""
    kept = DOCS / "protocol-full"
    step = json.loads((kept / "step_seconds.json").read_text())["step_seconds"]
    section = _section((DOCS / "results.md").read_text(), "the-papers-20-epoch-protocol-on-the-full-training-set")
    curves, minutes = {}, {}
    by_epoch = [row for row in _rows(section, 0) if not row["run"].startswith(("paper", "reproduction"))]
    assert [row["run"] for row in by_epoch] == list(PROTOCOL)
    for row in by_epoch:
        name, setting, key = PROTOCOL[row["run"]]
        results = json.loads((kept / name / "results.json").read_text())
        config = yaml.safe_load((kept / name / "config.yaml").read_text())
        assert (config["model"]["norm"], config["optim"]["lr"], config["model"]["deconv"]["preset"]) == setting
        assert (config["model"]["name"], config["train"]["seed"], config["train"]["limit_train"]) == ("vgg11_cifar", 0, None)
        assert (results["train_images"], results["epochs"], results["status"]) == (50000, 20, "finished")
        with open(kept / name / "metrics.csv") as f:
            rows = list(csv.DictReader(f))
        assert [int(r["epoch"]) for r in rows] == list(range(1, 21))
        curves[row["run"]] = [100 * float(r["accuracy"]) for r in rows]
        minutes[row["run"]] = results["steps"] / 20 * step[key] / 60
        for epoch in (1, 5, 10, 20):
            assert row[f"epoch {epoch}"] == f"{curves[row['run']][epoch - 1]:.2f}", (name, epoch)
        assert row["training minutes"] == f"{20 * minutes[row['run']]:.0f}"
    budget = 20 * minutes["BN lr 0.1"]
    at_time = _rows(section, 1)
    assert [row["run"] for row in at_time] == list(PROTOCOL)
    for row in at_time:
        done = min(20, int(budget / minutes[row["run"]] + 1e-9))
        assert row[f"epochs in BN's {budget:.0f} minutes"] == str(done)
        assert row["accuracy then"] == f"{curves[row['run']][done - 1]:.2f}"
