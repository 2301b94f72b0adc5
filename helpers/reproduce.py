"""Re-execute the notebooks headlessly with papermill: `python -m helpers.reproduce --help`.

Executed copies go to runs/<profile>/; figures, tables, weights and results go to OUTPUT_DIR
(the project root, except for the smoke profile). Exits non-zero if any notebook fails, naming the cell.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from .claims import ClaimError, metric_value
from .data import resolve_data_root
from .profiles import DRY_RUN_ENV, PROFILES
from .repro import PROJECT_ROOT
from .results import read_json, sample_sd, write_json
from .runner import default_output_dir, summary_path

NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"


def find_notebooks(only: str | None = None, notebook_dir: Path = NOTEBOOK_DIR) -> list:
    """Numbered notebooks in order; `only` is a comma list of their numbers, e.g. '01,03'."""
    notebooks = sorted(notebook_dir.glob("[0-9][0-9]_*.ipynb"))
    if only:
        wanted = [w.strip().zfill(2) for w in only.split(",") if w.strip()]
        known = {p.name[:2] for p in notebooks}
        unknown = [w for w in wanted if w not in known]
        if unknown:
            raise SystemExit(f"--only {only}: no notebook numbered {', '.join(unknown)} in {notebook_dir} "
                             f"(there are {', '.join(sorted(known)) or 'none'})")
        notebooks = [p for p in notebooks if p.name[:2] in wanted]
    return notebooks


def check_declared(path: Path, parameters: dict) -> None:
    """Refuse parameters a notebook does not declare before any work starts (papermill only warns)."""
    import papermill

    declared = papermill.inspect_notebook(str(path))
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise SystemExit(f"{path.name} does not take parameter(s) {', '.join(unknown)}; it takes "
                         f"{', '.join(declared)}")


def execute(path: Path, parameters: dict, executed_dir: Path, progress_bar: bool = True) -> dict:
    """Run one notebook; return its status, wall time, failing cell (if any) and key metrics."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    os.environ["HELPERS_HEADLESS"] = "1"  # inherited by the kernel: plain progress lines, no widgets
    executed_dir.mkdir(parents=True, exist_ok=True)
    output = executed_dir / path.name
    started, wall_start = time.perf_counter(), time.time()
    outcome = {"notebook": path.name, "executed": str(output), "status": "ok", "error": ""}
    try:
        papermill.execute_notebook(str(path), str(output), parameters=parameters, kernel_name="python3",
                                   cwd=str(path.parent), progress_bar=progress_bar, log_output=False)
    except PapermillExecutionError as error:
        first_line = next((line for line in error.source.splitlines() if line.strip()), "")
        outcome.update(status="failed", error=f"In [{error.exec_count}] `{first_line[:60]}`: "
                                               f"{error.ename}: {error.evalue}".strip())
    except Exception as error:  # kernel died, bad notebook file, ...: report it like a failed cell
        outcome.update(status="failed", error=f"{type(error).__name__}: {error}")
    outcome["seconds"] = round(time.perf_counter() - started, 1)
    replay = not parameters.get("TRAIN", True) and not parameters.get("RETRAIN")
    summary = summary_path(parameters.get("OUTPUT_DIR") or default_output_dir(parameters["PROFILE"]), path.name[:2],
                           replay)
    fresh = summary.exists() and summary.stat().st_mtime >= wall_start  # written by this run, not an older one
    outcome["metrics"] = read_json(summary)["metrics"] if fresh and outcome["status"] == "ok" else {}
    return outcome


def format_summary(outcomes: list) -> str:
    lines = [f"{'notebook':34} {'status':7} {'time':>8}  key metrics"]
    for o in outcomes:
        metrics = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in o["metrics"].items())
        lines.append(f"{o['notebook']:34} {o['status']:7} {o['seconds']:7.1f}s  {metrics}")
        if o["error"]:
            lines.append(f"{'':34} failed in {o['error']}\n{'':34} executed copy: {o['executed']}")
    return "\n".join(lines)


# Drift check: what a re-run may differ by before it counts as drift. Accuracies and overlap scores move by
# a test image or two between machines (float summation order); losses by a little relative to themselves.
FLOORS = {"acc": 0.01, "dice": 0.005, "iou": 0.005, "pixel_acc": 0.005, "loss": 0.03, "bpc": 0.03}
RELATIVE = ("loss", "bpc")  # losses (nats or bits) get a floor relative to their size
# per_sample: one generated text per prompt, which any change of weights rewrites; their means are compared
SKIPPED = ("seconds", "minutes", "_ms", "environment", "params", "iterations", "epochs", "predicted", "size", "config",
           "model", "data", "per_sample", "half_width")


def metrics_of(value, prefix: str = "") -> dict:
    """Every number a stored result holds, by dotted path, without timings, histories and set-up."""
    if isinstance(value, dict):
        found = {}
        for key, item in value.items():
            if not any(skip in key for skip in SKIPPED):
                found |= metrics_of(item, f"{prefix}.{key}" if prefix else key)
        return found
    if isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return {f"{prefix}[{i}]": float(v) for i, v in enumerate(value)}
    if isinstance(value, float):
        return {prefix: value}
    return {}


def tolerance(path: str, reported: float, noise: float = 0.0, spread: float = 0.0) -> float:
    """The largest of the metric's stated floor, three times its configuration's seed noise and `spread` (a mean's
    own interval, widened for the two runs compared). The accuracy
    floor, 1 point, is about two binomial standard errors on the smallest test set (Pets, 3,669 images)."""
    leaf = path.rsplit(".", 1)[-1].split("[")[0]
    floor = FLOORS.get(leaf) or next((f for key, f in FLOORS.items() if key in leaf), 0.01)
    floor = floor * abs(reported) if any(kind in leaf for kind in RELATIVE) else floor
    return max(floor, 3 * noise, spread)


def family(name: str) -> str:
    """'bn_trial2' -> 'bn': the repeated trials whose spread is a configuration's seed noise."""
    return name.rsplit("_trial", 1)[0] if "_trial" in name else name


def seed_noise(committed: dict) -> dict:
    """(family, metric path) -> standard deviation over the family's trials in the committed results."""
    values = {}
    for name, metrics in committed.items():
        for path, value in metrics.items():
            values.setdefault((family(name), path), []).append(value)
    return {key: sample_sd(v) for key, v in values.items() if len(v) >= 3}


def drift(committed_dir: Path, rerun_dir: Path, names: list | None = None) -> list:
    """Rows (result, metric, reported, re-run, tolerance, ok) for every metric a re-run stored."""
    load = lambda folder: {p.stem: read_json(p).get("results", {}) for p in sorted(folder.glob("*.json"))
                           if not p.stem.endswith("_summary")}
    records = load(committed_dir)
    committed = {name: metrics_of(record) for name, record in records.items()}
    rerun = {name: metrics_of(record) for name, record in load(rerun_dir).items()}
    noise = seed_noise(committed)
    rows = []
    for name in names or sorted(rerun):
        for path, value in rerun.get(name, {}).items():
            reported = committed.get(name, {}).get(path)
            if reported is None:
                rows.append((name, path, None, value, None, False))
                continue
            allowed = tolerance(kind_of(records.get(name, {}), path), reported, noise.get((family(name), path), 0.0),
                                spread_of(records.get(name, {}), path))
            rows.append((name, path, reported, value, allowed, abs(value - reported) <= allowed))
    return rows


def kind_of(record, path: str) -> str:
    """A training history's best value is in the unit of the metric it monitored (val_loss, val_acc)."""
    monitor = record.get("history", {}).get("monitor", "") if isinstance(record, dict) else ""
    return f"{path}.{monitor}" if path == "history.best_value" and monitor else path


def spread_of(record, path: str) -> float:
    """For a stored `<x>.mean` with its interval `<x>.half_width`: sqrt(2) x the half-width, as both the committed
    and the re-run mean carry that sampling noise (e.g. text statistics averaged over 20 prompts)."""
    if not path.endswith(".mean"):
        return 0.0
    try:
        return 2 ** 0.5 * metric_value(record, path.removesuffix("mean") + "half_width")
    except ClaimError:  # a mean stored without its interval
        return 0.0


def format_drift(rows: list) -> str:
    lines = [f"{'result':34} {'metric':30} {'reported':>10} {'re-run':>10} {'tolerance':>9}  verdict"]
    for name, path, reported, value, allowed, ok in rows:
        shown = lambda v: "--" if v is None else f"{v:.4f}"
        lines.append(f"{name:34} {path:30} {shown(reported):>10} {shown(value):>10} {shown(allowed):>9}  "
                     f"{'ok' if ok else 'DRIFT'}")
    return "\n".join(lines)


def prepare_check(output_dir: Path) -> Path:
    """A scratch copy of the committed results and weights, so the sections that replay find their records
    and nothing a check writes lands on the committed files."""
    if output_dir.resolve() == PROJECT_ROOT.resolve():
        raise SystemExit("--check writes to a scratch folder, never to the project root: give another --output-dir")
    shutil.rmtree(output_dir, ignore_errors=True)
    for folder in ("results", "weights"):
        shutil.copytree(PROJECT_ROOT / folder, output_dir / folder)
    return output_dir


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m helpers.reproduce", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="fast", choices=PROFILES, help="compute budget (default: fast)")
    parser.add_argument("--only", default=None, help="comma list of notebook numbers, e.g. 01,03")
    parser.add_argument("--jobs", type=int, default=1, help="notebooks run side by side (default 1)")
    parser.add_argument("--seed", type=int, default=2023)
    parser.add_argument("--data-root", default=None, help="default: $DATA_ROOT, else ./data")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--output-dir", default=None, help="default: the project root (smoke: runs/smoke/outputs)")
    parser.add_argument("--no-train", action="store_true", help="TRAIN=False: load weights/, evaluate and plot")
    parser.add_argument("--retrain", default=None, help="comma list of results to compute while everything else "
                        "replays its stored records (implies --no-train), e.g. --only 02 --retrain target")
    parser.add_argument("--executed-dir", default=None, help="default: runs/<profile>/ (with --check: executed/ in "
                        "the scratch folder)")
    parser.add_argument("--dry-run", action="store_true", help="the profile's models and recipes (smaller inputs "
                        "where helpers/profiles.py says why), one step per loop on synthetic data, into "
                        "runs/dry-run/ (e.g. --profile full --dry-run: does the GPU profile run to its end?)")
    parser.add_argument("--record-replay", action="store_true", help="with --no-train: keep each replay's wall "
                        "time and peak memory as results/replays/NN.json (the README's cost table reads them)")
    parser.add_argument("--check", action="store_true", help="run into a scratch copy (default runs/check/) and "
                        "compare every stored metric with the committed one; exit 1 on drift")
    parser.add_argument("--record-scratch", action="store_true", help="with --check alone: keep each notebook's "
                        "from-scratch wall time and peak memory (and how many decode caches existed) as "
                        "results/scratch/NN.json (the README's cost table reads them)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if args.record_replay and not (args.no_train and not args.retrain and not args.check and args.jobs == 1
                                   and args.profile == "fast"):
        parser.error("--record-replay measures a pure replay of the fast profile (the README's cost table): use it "
                     "with --no-train alone (one job, no --retrain or --check, --profile fast)")
    if args.record_scratch and not (args.check and not args.no_train and not args.retrain and args.jobs == 1
                                    and args.profile == "fast"):
        parser.error("--record-scratch measures a from-scratch run of the fast profile: use it with --check alone "
                     "(it trains everything; one job, no --no-train or --retrain, --profile fast)")
    if args.dry_run and (args.check or args.record_replay or args.no_train or args.retrain):
        parser.error("--dry-run trains every loop for a step and compares or replays nothing: drop --check, "
                     "--record-replay, --no-train and --retrain")
    return args


def executed_dir_of(args) -> Path:
    """Where the executed notebooks go. A check's copies stay in its scratch folder, as runs/<profile>/ holds
    the executed notebooks the submission bundle ships."""
    if args.executed_dir:
        return Path(args.executed_dir)
    if args.check:
        return Path(args.output_dir) / "executed"
    return PROJECT_ROOT / "runs" / ("dry-run/executed" if args.dry_run else args.profile)


def main(argv=None) -> int:
    args = parse_args(argv)
    notebooks = find_notebooks(args.only)
    if not notebooks:
        print(f"no notebooks in {NOTEBOOK_DIR}", file=sys.stderr)
        return 1
    parameters = {"SEED": args.seed, "PROFILE": args.profile, "DEVICE": args.device,
                  "TRAIN": not (args.no_train or args.retrain)}
    if args.retrain:
        parameters["RETRAIN"] = [name.strip() for name in args.retrain.split(",") if name.strip()]
    if args.data_root:
        parameters["DATA_ROOT"] = str(Path(args.data_root).resolve())
    if args.dry_run:
        os.environ[DRY_RUN_ENV] = "1"  # the kernels inherit it: helpers.runner cuts the budget, outputs in runs/dry-run
    if args.check:
        started = time.time()
        caches = len(list((resolve_data_root(args.data_root) / ".cache").glob("*.pt")))  # empty: as on a fresh Colab
        args.output_dir = str(prepare_check(Path(args.output_dir or PROJECT_ROOT / "runs" / "check")))
    if args.output_dir:
        parameters["OUTPUT_DIR"] = str(Path(args.output_dir).resolve())
    for path in notebooks:
        check_declared(path, parameters)
    executed_dir = executed_dir_of(args)
    print(f"running {len(notebooks)} notebook(s), profile {args.profile}, seed {args.seed} -> {executed_dir}")
    if args.jobs == 1:
        outcomes = [execute(p, parameters, executed_dir) for p in notebooks]
    else:
        with ProcessPoolExecutor(args.jobs) as pool:
            outcomes = list(pool.map(execute, notebooks, [parameters] * len(notebooks),
                                     [executed_dir] * len(notebooks), [False] * len(notebooks)))
    write_json({"profile": args.profile, "parameters": parameters, "outcomes": outcomes},
               executed_dir / "summary.json")
    print(format_summary(outcomes))
    failed = [o["notebook"] for o in outcomes if o["status"] != "ok"]
    if failed:
        print(f"{len(failed)} notebook(s) failed: {', '.join(failed)}", file=sys.stderr)
    if args.check and not failed:
        drifted = report_drift(Path(args.output_dir) / "results", started)
        if args.record_scratch:
            record_costs(outcomes, Path(args.output_dir), PROJECT_ROOT / "results" / "scratch", replay=False,
                         decode_caches_at_start=caches, drift_free=not drifted)
        return drifted
    if args.record_replay:
        output_dir = Path(parameters.get("OUTPUT_DIR") or default_output_dir(args.profile))
        record_costs(outcomes, output_dir, output_dir / "results" / "replays", replay=True)
    return 1 if failed else 0


def record_costs(outcomes: list, output_dir: Path, records: Path, replay: bool, **extra) -> None:
    """records/NN.json: the run summary (wall time, peak memory, CPU) of each notebook that ran, dated, with
    `extra`. Kept in a subfolder of results/, so no scan of results/NN_*.json meets them."""
    for outcome in outcomes:
        summary = summary_path(output_dir, outcome["notebook"][:2], replay=replay)
        if outcome["status"] == "ok" and outcome["metrics"]:  # metrics: its summary was written by this run
            write_json(read_json(summary) | {"measured": time.strftime("%Y-%m-%d")} | extra,
                       Path(records) / f"{outcome['notebook'][:2]}.json")


def report_drift(rerun_results: Path, started: float) -> int:
    """Compare the results this check (re)computed with the committed ones; 1 on drift."""
    fresh = [p.stem for p in sorted(rerun_results.glob("*.json")) if p.stat().st_mtime >= started
             and not p.stem.endswith("_summary")]
    rows = drift(PROJECT_ROOT / "results", rerun_results, fresh)
    print(f"drift check: {len(fresh)} result(s) re-computed" + (f"\n{format_drift(rows)}" if rows else
                                                               " (everything replayed its committed records)"))
    drifted = [r for r in rows if not r[-1]]
    if drifted:
        print(f"{len(drifted)} metric(s) drifted beyond their tolerance", file=sys.stderr)
    return 1 if drifted else 0


if __name__ == "__main__":
    sys.exit(main())
