"""Every notebook under notebooks/ runs under papermill in the smoke profile, twice identically,
again with TRAIN=False from the weights and results of the first run (the demo path), and once more
with one section re-computed (RETRAIN) while the rest replays."""
import json
from pathlib import Path

import nbformat
import papermill
import pytest

from helpers import reproduce
from helpers.runner import COMMON_PARAMETERS

pytestmark = pytest.mark.notebooks
NOTEBOOKS = reproduce.find_notebooks()
IDS = [p.name[:2] for p in NOTEBOOKS]
# The section each notebook re-computes in the smoke test while the rest replays: one with a value stored through
# run.measured (04 has none: a family of trials retrains instead).
RETRAIN_SECTION = {"01": "strong", "02": "target", "03": "challenge", "04": "elu", "05": "generation"}


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no numbered notebook"
    assert set(IDS) <= set(RETRAIN_SECTION), "name a section to re-run in RETRAIN_SECTION for every notebook"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_committed_clean_with_a_parameters_cell(path):
    notebook = nbformat.read(path, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "strip outputs before committing"
    raw_cells = json.loads(path.read_text())["cells"]  # nbformat.read would mend missing ids silently
    ids = [c.get("id") for c in raw_cells]
    assert None not in ids and len(set(ids)) == len(ids), "every cell needs a unique id: run nbformat's normalize()"
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell must be tagged `parameters`"
    assert set(COMMON_PARAMETERS) <= set(papermill.inspect_notebook(str(path)))


def smoke(path, out: Path, train=True, **extra):
    parameters = {"PROFILE": "smoke", "SEED": 2023, "OUTPUT_DIR": str(out), "DEVICE": "cpu", "TRAIN": train, **extra}
    outcome = reproduce.execute(path, parameters, out / "executed", progress_bar=False)
    assert outcome["status"] == "ok", f"{path.name} failed in {outcome['error']} (see {outcome['executed']})"
    return outcome


def without_timings(value):
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items()
                if not k.endswith(("seconds", "minutes", "_ms")) and k not in ("environment", "params")}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def section_files(out: Path, nb: str, section: str) -> list:
    """The results files a RETRAIN entry covers: the section and its family (target covers target_fold0_head...)."""
    return sorted(p.name for p in (out / "results").glob(f"{nb}_{section}*.json")
                  if p.stem == f"{nb}_{section}" or p.stem.startswith(f"{nb}_{section}_"))


def results_of(out: Path) -> dict:
    """Every stored result; the run summaries (which also say how each run was made) are compared by metrics."""
    return {p.name: without_timings(json.loads(p.read_text())) for p in sorted((out / "results").glob("*.json"))
            if not p.stem.endswith("_summary")}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_smoke_run_is_deterministic_and_replays_without_training(path, tmp_path):
    first = smoke(path, tmp_path / "a")
    nb = path.name[:2]
    assert first["metrics"], "the notebook must end with run.summary(...)"
    assert list((tmp_path / "a" / "figures").glob(f"{nb}_*.pdf")), "no figures written"
    assert list((tmp_path / "a" / "report" / "generated").glob(f"{nb}_*.tex")), "no tables/macros written"
    assert list((tmp_path / "a" / "weights").glob(f"{nb}_*.pt")), "no weights written"

    second = smoke(path, tmp_path / "b")
    assert without_timings(second["metrics"]) == without_timings(first["metrics"])
    assert results_of(tmp_path / "a") == results_of(tmp_path / "b")

    replay = smoke(path, tmp_path / "a", train=False)
    assert replay["metrics"] == first["metrics"]

    # One section re-run while the rest replays: the same numbers as a run of everything.
    section = RETRAIN_SECTION[nb]
    retrained = smoke(path, tmp_path / "a", train=False, RETRAIN=[section])
    assert without_timings(retrained["metrics"]) == without_timings(first["metrics"])
    assert results_of(tmp_path / "a") == results_of(tmp_path / "b")
    family = section_files(tmp_path / "a", nb, section)
    assert family, f"RETRAIN={[section]!r} names no result of notebook {nb}"
    for name in family:  # written again by this run, not left over from the first
        assert (tmp_path / "a" / "results" / name).stat().st_mtime > (tmp_path / "b" / "results" / name).stat().st_mtime


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_full_profile_dry_run_reaches_the_end(path, tmp_path, monkeypatch):
    """The full profile (hours on a GPU) with its own models and recipes, one step per loop on synthetic data of
    its shapes (smaller inputs for 02 and 04, profiles.py says why): a full-only setting that crashes fails here,
    not after hours (`reproduce --dry-run`)."""
    monkeypatch.setenv("HELPERS_DRY_RUN", "1")  # the kernel inherits it
    parameters = {"PROFILE": "full", "SEED": 2023, "OUTPUT_DIR": str(tmp_path), "DEVICE": "cpu", "TRAIN": True}
    outcome = reproduce.execute(path, parameters, tmp_path / "executed", progress_bar=False)
    assert outcome["status"] == "ok", f"{path.name} (full, dry run) failed in {outcome['error']}"
    records = [json.loads(p.read_text()) for p in (tmp_path / "results").glob("*.json")
               if not p.stem.endswith("_summary")]
    assert records and all(r["budget"]["dry_run"] and r["budget"]["profile"] == "full" for r in records)
    assert not list(tmp_path.rglob("*.ckpt"))  # no checkpoints: 02's took 24 GB of the runner's disk


def test_failing_cell_is_named(tmp_path):
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("PROFILE = 'smoke'"),
                                               nbformat.v4.new_code_cell("x = 1"),
                                               nbformat.v4.new_code_cell("raise ValueError('broken on purpose')")])
    notebook.cells[0].metadata["tags"] = ["parameters"]
    notebook.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    path = tmp_path / "99_broken.ipynb"
    nbformat.write(notebook, path)
    outcome = reproduce.execute(path, {"PROFILE": "smoke"}, tmp_path / "executed", progress_bar=False)
    assert outcome["status"] == "failed" and "ValueError: broken on purpose" in outcome["error"]
    assert outcome["error"].startswith("In [4] `raise ValueError('broken on purpose')`")
    executed = nbformat.read(outcome["executed"], as_version=4)  # the executed copy keeps the traceback
    failed = [c for c in executed.cells if c.get("execution_count") == 4]
    assert failed and failed[0].outputs[0].output_type == "error"


def test_runner_refuses_unknown_notebook_numbers_and_parameters(tmp_path):
    with pytest.raises(SystemExit, match="no notebook numbered 77"):
        reproduce.find_notebooks("77")
    with pytest.raises(SystemExit, match="does not take parameter.*EPOCHS"):
        reproduce.check_declared(NOTEBOOKS[0], {"EPOCHS": 3})
    for path in NOTEBOOKS:  # every notebook re-runs single sections
        reproduce.check_declared(path, {"RETRAIN": ["target"]})
    args = reproduce.parse_args(["--only", "02", "--retrain", "target, probe"])
    assert args.retrain == "target, probe"


def test_command_line_runner_with_parallel_jobs(tmp_path, capsys):
    chosen = [p for p in NOTEBOOKS if p.name[:2] in ("04", "05")]  # the two quickest: every one runs above
    only = ",".join(p.name[:2] for p in chosen)
    code = reproduce.main(["--profile", "smoke", "--only", only, "--jobs", "2", "--device", "cpu", "--output-dir",
                           str(tmp_path / "out"), "--executed-dir", str(tmp_path / "executed")])
    summary = json.loads((tmp_path / "executed" / "summary.json").read_text())
    assert code == 0 and [o["notebook"] for o in summary["outcomes"]] == [p.name for p in chosen]
    assert [o["status"] for o in summary["outcomes"]] == ["ok", "ok"]
    assert summary["parameters"]["PROFILE"] == "smoke" and summary["parameters"]["SEED"] == 2023
    printed = capsys.readouterr().out
    assert all(p.name in printed for p in chosen) and "key metrics" in printed
