"""Every generated table's caption agrees with the stored records of its rows: epochs, seeds, input size,
training samples and real vs synthetic data are read from the records, never typed."""
import re
from pathlib import Path

import pytest

from helpers import results
from helpers.runner import DESCRIPTION_HEADER, recipe_name
from helpers.repro import PROJECT_ROOT

# The claims tables (NN_claims.tex) list verdicts over runs whose own tables carry their profile.
TABLES = sorted(p for p in (PROJECT_ROOT / "report" / "generated").glob("*.tex")
                if "\\begin{table}" in p.read_text() and not p.stem.endswith("_claims"))
SOURCES = re.compile(r"^% rows from results: (.+)$", re.M)


def caption_of(tex: str) -> str:
    start = tex.index("\\caption{") + len("\\caption{")
    depth, end = 1, start
    while depth:
        depth += {"{": 1, "}": -1}.get(tex[end], 0)
        end += 1
    return tex[start:end - 1].replace("{,}", ",")


def stated(caption: str, unit: str) -> set:
    """Every number (or range a–b) the caption puts before `unit`."""
    found = set()
    for low, high in re.findall(rf"(\d[\d,]*)(?:–(\d[\d,]*))?\s*{unit}", caption):
        found |= {int(low.replace(",", "")), int((high or low).replace(",", ""))}
    return found


def seeds_stated(caption: str) -> set:
    found = set()
    for low, high in re.findall(r"seeds? (\d+)(?:–(\d+))?", caption):
        found |= {int(low), int(high or low)}
    return found


def span(values) -> set:
    values = [v for v in values if v is not None]
    return {min(values), max(values)} if values else set()


def records_of(tex: str, table: Path) -> list:
    match = SOURCES.search(tex)
    assert match, f"{table.name} does not name the results its rows come from (run.write_table(records=...))"
    files = [PROJECT_ROOT / "results" / f"{name.strip()}.json" for name in match.group(1).split(",")]
    missing = [f.name for f in files if not f.exists()]
    assert not missing, f"{table.name} names missing results {missing}"
    return [results.read_json(f) for f in files]


@pytest.mark.parametrize("table", TABLES, ids=[p.stem for p in TABLES])
def test_caption_states_what_the_rows_records_say(table):
    tex = table.read_text()
    if tex.startswith(DESCRIPTION_HEADER):  # describes code (a model's layers): it must not claim a profile
        assert "Profile" not in caption_of(tex) and "% rows from results" not in tex
        return
    caption, files = caption_of(tex), records_of(tex, table)
    rows = [f["results"] for f in files]
    data = [r.get("data") or {} for r in rows]
    assert stated(caption, "epochs") == span(results.epochs_run(r) for r in rows if "config" in r)
    assert seeds_stated(caption) == span(r.get("seed") for r in rows)
    assert stated(caption, "px") == span(d.get("input_size") for d in data)
    assert stated(caption, "training samples") == span(d.get("samples") for d in data)
    synthetic = [d.get("synthetic", f["budget"].get("synthetic", False)) for d, f in zip(data, files)]
    assert ("synthetic" in caption) == any(synthetic), "the caption must say which rows ran on a stand-in"
    assert ("real data" in caption) == (not all(synthetic))
    recipes = sorted({recipe_name(table.stem[:2], f) for f in files})
    assert f"recipe {' and '.join(recipes)}:" in caption, f"the caption must name the recipe(s) {recipes} its rows ran"


def test_epochs_run_are_the_history_not_the_cap():
    stopped = {"config": {"epochs": 30}, "history": {"epochs": [{}] * 12}}
    assert results.epochs_run(stopped) == 12 and results.epochs_run({"config": {"epochs": 30}}) == 30


def test_a_typed_caption_that_disagrees_is_caught(tmp_path):
    caption = "Fine-tuning at 288 px (Profile fast: real data, 160 px input, 4 epochs, seed 2023.)"
    assert stated(caption, "px") == {288, 160} != span([160])
    assert stated("3–4 epochs", "epochs") == {3, 4} and seeds_stated("seeds 2023–2025, seed 7") == {2023, 2025, 7}
