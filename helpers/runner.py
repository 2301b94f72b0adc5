"""What every notebook's second cell calls: check the papermill parameters, seed, pick the device,
and hand back a `Run` that knows where each kind of output goes."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import plots, results
from .names import label, relabel_figure
from .data import resolve_data_root
from .models import model_summary
from .profiles import DRY_RUN_ENV, PROFILES, budget, dry_run, dry_run_recipe, recipe
from .repro import PROJECT_ROOT, environment, keep_freed_memory, resolve_device, seed_everything
from .training import History, TrainConfig, evaluate, fit
from .weights import preprocessing_of

CHECKPOINT_ENV = "CHECKPOINT_DIR"  # where training checkpoints go instead of OUTPUT_DIR/checkpoints
# name -> accepted types; every notebook's `parameters` cell declares these (plus its own extras).
COMMON_PARAMETERS = {"SEED": (int,), "PROFILE": (str,), "DATA_ROOT": (str, type(None)), "DEVICE": (str,),
                     "OUTPUT_DIR": (str, type(None)), "TRAIN": (bool,), "RETRAIN": (list, type(None))}
DESCRIPTION_HEADER = "% rows from the code, not from runs\n"  # see Run.write_description
# Upper-case names a notebook may hold before its parameters are checked (the Colab set-up cell).
NOT_PARAMETERS = {"IN_COLAB"}
LITERAL_TYPES = (int, float, str, bool, type(None), list, tuple, dict)  # what papermill can inject


class ParameterError(ValueError):
    """A notebook parameter is unknown, missing or of the wrong type."""


def check_parameters(namespace: dict, declared: dict) -> dict:
    """The declared parameters' values from a notebook namespace; unknown upper-case names are errors,
    since papermill injects whatever it is given, typos included."""
    unknown = sorted(k for k, v in namespace.items() if k.isupper() and not k.startswith("_") and k not in declared
                     and k not in NOT_PARAMETERS and isinstance(v, LITERAL_TYPES))
    if unknown:
        raise ParameterError(f"unknown parameter(s) {', '.join(unknown)}; this notebook takes "
                             f"{', '.join(declared)} (see its `parameters` cell)")
    missing = [k for k in declared if k not in namespace]
    if missing:
        raise ParameterError(f"the parameters cell lacks {', '.join(missing)}")
    for key, types in declared.items():
        value = namespace[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            names = " or ".join("None" if t is type(None) else t.__name__ for t in types)
            raise ParameterError(f"{key}={value!r} should be {names}")
    if namespace["PROFILE"] not in PROFILES:
        raise ParameterError(f"PROFILE={namespace['PROFILE']!r} is unknown; choose one of {', '.join(PROFILES)}")
    return {k: namespace[k] for k in declared}


@dataclass
class Run:
    """One execution of one notebook: its parameters, budget, device and output folders."""

    notebook: str
    params: dict
    device: torch.device
    data_root: Path
    output_dir: Path
    budget: dict
    recipe: dict = field(default_factory=dict)
    environment: dict = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    result_devices: set = field(default_factory=set)  # where the results this run wrote or read back were made

    @property
    def seed(self) -> int:
        return self.params["SEED"]

    @property
    def profile(self) -> str:
        return self.params["PROFILE"]

    @property
    def train(self) -> bool:
        return self.params["TRAIN"]

    def trains(self, name: str) -> bool:
        """Whether the result `name` is computed in this run: always with TRAIN=True; with TRAIN=False only
        when a RETRAIN entry names it or its family (RETRAIN=["target"] covers target_fold0_head, ...), so that
        one section is re-run while the others replay their stored records."""
        retrain = self.params.get("RETRAIN") or ()
        return self.train or any(name == r or name.startswith(f"{r}_") for r in retrain)

    def result_path(self, name: str) -> Path:
        return self.path("results", f"{self.notebook}_{name}.json")

    def stored(self, name: str) -> dict:
        """The stored results of `name` (what `measured` or `run_experiment` wrote when it was computed)."""
        return self.stored_file(name)["results"]

    def measured(self, name: str, compute, missing_ok: bool = False):
        """The protocol of every section: compute() when training or when RETRAIN names `name` (or its
        family), store it in results/<nb>_<name>.json, and return it as stored; otherwise replay the
        stored record. A run and a replay continue from the same JSON values, so they cannot drift.
        missing_ok: a replay of a section that no stored run computed says so and returns None."""
        if self.trains(name):
            self.save_results(name, compute())
        elif missing_ok and not self.result_path(name).exists():
            print(f"{name}: not stored by the run whose results these are; RETRAIN={[name]} computes it")
            return None
        return self.stored(name)

    def path(self, kind: str, name: str = "") -> Path:
        """figures/, weights/, results/, report/generated/ (kind 'tables') or checkpoints/ under OUTPUT_DIR;
        checkpoints go under $CHECKPOINT_DIR instead when it is set (e.g. a mounted Google Drive, so that a
        Colab session that was disconnected resumes where it stopped)."""
        folders = {"figures": "figures", "weights": "weights", "results": "results", "tables": "report/generated",
                   "checkpoints": "checkpoints"}
        if kind not in folders:
            raise ValueError(f"unknown output kind {kind!r}; one of {', '.join(folders)}")
        folder = self.output_dir / folders[kind]
        if kind == "checkpoints":  # checkpoints of different profiles must never resume each other
            moved = os.environ.get(CHECKPOINT_ENV)
            folder = (Path(moved).expanduser() if moved else folder) / self.profile
        folder.mkdir(parents=True, exist_ok=True)
        return folder / name if name else folder

    def checkpoint(self, name: str) -> Path | None:
        if self.budget.get("dry_run"):  # nothing to resume, and 02's full profile wrote 24 GB of them in one
            return None  # step per loop (ResNet-50 with its optimiser state, about 100 runs)
        return self.path("checkpoints", f"{self.notebook}_{name}.ckpt")

    def save_figure(self, fig, name: str, records: list = ()) -> dict:
        """figures/<nb>_<name>.{pdf,png}, with the compute profile under the plot; with `records` (the results
        it draws: names or Outcomes) the note says what their records say, like a table caption."""
        files = [self.stored_file(n) for n in dict.fromkeys(record_name(r) for r in records)]
        relabel_figure(fig, self.notebook)
        plots.add_note(fig, self.profile_note(files=files))
        for problem in plots.readability_problems(fig):  # a figure the report would print too small
            print(f"figure {self.notebook}_{name}: {problem}")
        return plots.save_figure(fig, f"{self.notebook}_{name}", self.path("figures"))

    def save_results(self, name: str, data: dict) -> Path:
        record = {"notebook": self.notebook, "name": name, "params": self.params, "budget": self.budget,
                  "recipe": self.recipe, "environment": self.environment, "results": data}
        self.result_devices.update(results.record_devices([record]))
        return results.write_json(record, self.path("results", f"{self.notebook}_{name}.json"))

    def save_weights(self, model, name: str, metric: dict | None = None, preprocessing: dict | None = None) -> dict:
        return results.save_weights(model, f"{self.notebook}_{name}", self.path("weights"), notebook=self.notebook,
                                    metric=metric, profile=self.profile, preprocessing=preprocessing)

    def load_weights(self, model, name: str) -> dict:
        return results.load_weights(model, f"{self.notebook}_{name}", self.path("weights"), map_location=self.device)

    def keep_weights(self, model, name: str, metric: dict | None = None, preprocessing: dict | None = None) -> dict:
        """Store a chosen model's weights when training (or when RETRAIN names `name`); load them into `model` on
        the TRAIN=False path. `preprocessing`: what its inputs need (`weights.preprocessing_of(test_loader)`), so the
        file stands alone."""
        if self.trains(name):
            return self.save_weights(model, name, metric, preprocessing)
        return self.load_weights(model, name)

    def write_table(self, name: str, rows: list, columns: dict, caption: str, records: list) -> Path:
        """`report/generated/<nb>_<name>.tex`. Its caption ends with what the rows' own records say (data,
        samples, input size, epochs, seeds, device), never with typed values; `records` names the results
        the rows come from (names, or Outcomes), and the table lists them so a test can check the caption."""
        names = list(dict.fromkeys(record_name(r) for r in records))  # a run shown twice is one record
        if not names:
            raise ValueError(f"table {name!r}: name the results its rows come from (records=[...])")
        stored = [self.stored_file(n) for n in names]
        first = next(iter(columns))  # the row's name: run ids there are shown by their display names
        rows = [row | {first: label(self.notebook, row.get(first, ""))} for row in rows]
        return results.write_table(rows, columns, caption, f"tab:{self.notebook}-{name}",
                                   self.path("tables", f"{self.notebook}_{name}.tex"),
                                   note=self.profile_note(files=stored),
                                   sources=[f"{self.notebook}_{n}" for n in names])

    def write_description(self, name: str, rows: list, columns: dict, caption: str) -> Path:
        """A table that describes code rather than runs (e.g. a model's layers): no profile note, and a header
        that tells the caption test there are no records to check."""
        return self._write_from_code(name, results.latex_table(rows, columns, caption, f"tab:{self.notebook}-{name}"))

    def write_verbatim(self, name: str, text: str) -> Path:
        """`report/generated/<nb>_<name>.tex`: code as the report prints it (e.g. a before/after snippet)."""
        return self._write_from_code(name, f"\\begin{{verbatim}}\n{text.rstrip()}\n\\end{{verbatim}}\n")

    def _write_from_code(self, name: str, tex: str) -> Path:
        path = self.path("tables", f"{self.notebook}_{name}.tex")
        path.write_text(DESCRIPTION_HEADER + tex, encoding="utf-8")
        return path

    def stored_file(self, name: str) -> dict:
        """A stored results file as a whole: results, budget, environment."""
        path = self.result_path(name)
        if not path.exists():
            raise FileNotFoundError(f"TRAIN=False needs {path}, written by a TRAIN=True run of this notebook "
                                    f"(profile {self.profile}, same OUTPUT_DIR); or name it in RETRAIN")
        stored = results.read_json(path)
        self.result_devices.update(results.record_devices([stored]))
        return stored

    def write_macros(self, name: str, macros: dict) -> Path:
        """`report/generated/<nb>_<name>_macros.tex`, with the compute profile alongside the numbers
        (`\\RNbZeroFourProfile`, `...Data`, `...Device`) so report captions can state it without typing it. The
        device is where the results this run wrote or read back were made: a replay on another machine does not
        change it."""
        prefix = "R" + results.macro_name(f"nb{self.notebook}")
        device = " and ".join(sorted(self.result_devices)) or self.environment.get("device_name", str(self.device))
        profile = {"profile": self.profile, "data": "synthetic stand-in data" if self.budget.get("synthetic")
                   else "real data", "device": results.latex_escape(device)}
        return results.write_macros(profile | macros, self.path("tables", f"{self.notebook}_{name}_macros.tex"),
                                    prefix)

    def profile_note(self, files: list = ()) -> str:
        """'(Profile fast, recipe cpu: real data, 20 epochs, device ...)': what a reader needs next to a number;
        with `files` (stored results), everything after the profile comes from those records."""
        if files:
            recipes = sorted({recipe_name(self.notebook, f) for f in files})
            return f"(Profile {self.profile}, recipe {' and '.join(recipes)}: {results.describe_records(files)}.)"
        data = "synthetic stand-in data" if self.budget.get("synthetic") else "real data"
        return (f"(Profile {self.profile}, recipe {self.recipe['name']}: {data}, "
                f"device {self.environment.get('device_name', self.device)}.)")

    def summary(self, metrics: dict) -> Path:
        """Key numbers for `python -m helpers.reproduce`'s closing table, with the run's wall time and the peak
        resident memory of this process (the notebook's kernel) so far: what a Colab runtime must hold. A pure
        replay writes them under runs/replays/, so it never overwrites the summary of the run that trained."""
        path = summary_path(self.output_dir, self.notebook, replay=not self.train and not self.params.get("RETRAIN"))
        return results.write_json({"notebook": self.notebook, "profile": self.profile, "metrics": metrics,
                                   "seconds": round(time.time() - self.started, 1),
                                   "peak_memory_gb": round(peak_memory_bytes() / 1e9, 2), "train": self.train,
                                   "cpu_model": self.environment["cpu_model"], "device": str(self.device),
                                   "retrain": self.params.get("RETRAIN") or []}, path)


def summary_path(output_dir: Path, notebook: str, replay: bool) -> Path:
    """Where a run's summary goes: results/ for a run that computed something, runs/replays/ for a replay."""
    return Path(output_dir) / ("runs/replays" if replay else "results") / f"{notebook}_summary.json"


def peak_memory_bytes() -> int:
    """The peak resident set size of this process (Linux and macOS report ru_maxrss in different units)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


@dataclass
class Outcome:
    """One trained (or, with TRAIN=False, re-loaded) configuration."""

    name: str
    model: torch.nn.Module
    history: History
    test: dict
    record: dict


def run_experiment(run: Run, name: str, build_model, config: TrainConfig, train_loader, val_loader, test_loader,
                   *, task=None, seed: int | None = None, keep_weights: bool = False, param_groups=None,
                   preprocessing: dict | None = None) -> Outcome:
    """Train one named configuration through the shared loop (resuming its checkpoint), test it once,
    and store its history, test metrics and model size in results/<nb>_<name>.json.

    `test_loader=None` skips the test (selection-only runs); `param_groups` go to the optimiser (discriminative
    learning rates; a callable receives the built model). With TRAIN=False nothing trains (unless RETRAIN names it):
    the stored record is read back and, for configurations whose weights are kept, the weights are loaded (the demo
    path). The notebook re-evaluates the models it shows, once each, where it shows them: a test pass per kept model
    here would double the demo's time.
    """
    seed = run.seed if seed is None else seed
    torch.manual_seed(seed)  # the same seed gives the same initial weights and dropout masks
    model = build_model().to(run.device)
    if run.trains(name):
        history = fit(model, train_loader, val_loader, config, task=task, device=run.device,
                      checkpoint=run.checkpoint(name), name=name,
                      param_groups=param_groups(model) if callable(param_groups) else param_groups)
        test = evaluate(model, test_loader, task, run.device) if test_loader is not None else {}
        record = {"name": name, "seed": seed, "config": config.as_dict(), "model": model_summary(model),
                  "history": history.as_dict(), "test": test, "train_seconds": history.train_seconds,
                  "data": getattr(train_loader, "meta", None)}
        run.save_results(name, record)
        if keep_weights:  # an untested run (a selection run) is described by its best validation value
            metric = {f"test_{k}": v for k, v in test.items()} or {history.monitor: history.best_value}
            run.save_weights(model, name, metric=metric,
                             preprocessing=preprocessing or preprocessing_of(test_loader or val_loader))
        return Outcome(name, model, history, test, record)
    record = run.stored(name)
    if keep_weights:
        run.load_weights(model, name)
    return Outcome(name, model, History.from_dict(record["history"]), record["test"], record)


def last_val_acc(outcome: Outcome) -> float:
    return outcome.history.epochs[-1]["val_acc"]


def shortest_within_one_error(selection: dict, n_val: int) -> tuple:
    """(budget, error): the shortest candidate budget (selection: {epochs: Outcome}) whose last-epoch validation
    accuracy is within one binomial standard error of the best one's, and that error (n_val validation images)."""
    best = max(map(last_val_acc, selection.values()))
    error = results.binomial_se(best, n_val)
    return min(epochs for epochs, o in selection.items() if last_val_acc(o) >= best - error), error


def require_trained(run: Run, outcomes, section: str) -> None:
    """A section computed from models whose weights are not kept can only run where those models were trained in
    this very run (replayed, they hold their initial weights): raise, naming what RETRAIN must add, otherwise."""
    replayed = [record_name(o) for o in outcomes if not run.trains(record_name(o))]
    if replayed:
        raise ValueError(f"{section} is computed from {', '.join(replayed)}, whose weights are not kept: name them "
                         f"(or their family) in RETRAIN too")


def recipe_name(notebook: str, file: dict) -> str:
    """The recipe a stored results file ran: its own record, or (files written before recipes were recorded,
    whose values the profiles kept) the recipe its profile names."""
    return (file.get("recipe") or {}).get("name") or budget(notebook, file["budget"]["profile"]).recipe


def record_name(record) -> str:
    """The results name of an Outcome, a record dict or a name."""
    if isinstance(record, str):
        return record
    return record.name if isinstance(record, Outcome) else record["name"]


RESULT_COLUMNS = {"name": "configuration", "val": ("best val. (%)", results.percent),
                  "test": ("test (%)", results.percent), "minutes": ("training (min)", "{:.1f}")}


def result_row(name: str, outcome: Outcome, **extra) -> dict:
    """The row every comparison table shows for a trained configuration (see RESULT_COLUMNS)."""
    return {"name": name, "val": outcome.history.best_value, "test": outcome.test.get("acc", ""),
            "minutes": outcome.record["train_seconds"] / 60, **extra}


def default_output_dir(profile: str) -> Path:
    """Smoke runs and dry runs never overwrite the committed outputs at the project root."""
    if os.environ.get(DRY_RUN_ENV):
        return PROJECT_ROOT / "runs" / "dry-run"
    return PROJECT_ROOT / "runs" / "smoke" / "outputs" if profile == "smoke" else PROJECT_ROOT


def start(namespace: dict, notebook: str, extra_parameters: dict | None = None,
          reuse_freed_memory: bool = False) -> Run:
    """Check parameters, seed everything, resolve device/data/output paths, and print the set-up.

    reuse_freed_memory: keep freed memory in the process (`repro.keep_freed_memory`) for faster CPU training
    steps. Only for notebooks whose big allocations repeat in size: the process keeps every block it ever
    held, so notebook 02, which caches many large feature sets, ran out of 24 GB with it."""
    declared = {**COMMON_PARAMETERS, **(extra_parameters or {})}
    params = check_parameters(namespace, declared)
    device = resolve_device(params["DEVICE"])
    if params["PROFILE"] == "smoke" and params["DEVICE"] == "auto":
        device = torch.device("cpu")  # smoke runs are CPU tests by definition
    seed_everything(params["SEED"])
    if reuse_freed_memory:
        keep_freed_memory()
    output_dir = Path(params["OUTPUT_DIR"]).expanduser().resolve() if params["OUTPUT_DIR"] else \
        default_output_dir(params["PROFILE"])
    plan, run_recipe = budget(notebook, params["PROFILE"]), recipe(notebook, params["PROFILE"])
    if os.environ.get(DRY_RUN_ENV):
        plan, run_recipe = dry_run(plan, notebook), dry_run_recipe(run_recipe, notebook)
        print(f"DRY RUN of the {params['PROFILE']} profile: its models and recipes (smaller inputs where "
              "helpers/profiles.py says why), one step per loop on synthetic data; the numbers mean nothing")
    run = Run(notebook=notebook, params=params, device=device, data_root=resolve_data_root(params["DATA_ROOT"]),
              output_dir=output_dir, budget=plan,
              recipe=run_recipe,
              environment=environment(device))
    print(f"notebook {notebook} | profile {run.profile} | seed {run.seed} | device {run.environment['device_name']}"
          f"\ndata {run.data_root}{' (synthetic stand-ins)' if run.budget.get('synthetic') else ''}"
          f" | outputs {run.output_dir} | train {run.train}")
    return run
