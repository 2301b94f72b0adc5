"""Results as JSON with their config and environment; LaTeX tables and number macros; weight files.

The report `\\input`s what is written here, so it never types a number by hand.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
from pathlib import Path

import torch
from torch import nn

from .models import model_summary

_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                   "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                   "−": r"\textminus{}"}
_DIGITS = "Zero One Two Three Four Five Six Seven Eight Nine".split()


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "as_dict"):
        return _jsonable(value.as_dict())
    return repr(value)


def write_json(data, path: str | os.PathLike) -> Path:
    """Stable JSON (sorted keys, fixed indent) written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_jsonable(data), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_json(path: str | os.PathLike):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_json_if_present(path: str | os.PathLike) -> dict:
    """A JSON record, or {} where none was written (a manifest before the first weights, a replay never timed)."""
    return read_json(path) if Path(path).exists() else {}


def duration(seconds: float) -> str:
    """'42 s' below two minutes, '14.0 min' above."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def percent(value) -> str:
    """A fraction as a percentage with two decimals (0.9012 -> '90.12'); '' stays blank."""
    return "" if value in ("", None) else f"{100 * value:.2f}"


def percent_mean_sd(values) -> str:
    """Fractions from repeated runs as 'mean ± sd' in percent, two decimals (sd with ddof=1): '75.92 ± 0.38'."""
    values = [float(v) for v in values]
    return f"{100 * sum(values) / len(values):.2f} ± {100 * sample_sd(values):.2f}"


def spoken_list(items) -> str:
    """Items as prose: [10, 16, 24] -> '10, 16 and 24'; one item alone; an empty list is an error."""
    items = [str(i) for i in items]
    if not items:
        raise ValueError("spoken_list needs at least one item")
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def target_summary(reached: dict, band, band_name: str) -> str:
    """Targets sorted into met, within noise of the target (a margin inside `band`, either side) and missed, each
    with its margin in points, so a near miss and a clear one read differently. reached: {label: (value, target)};
    band: a fraction, or {label: fraction} (a seed-noise band or a standard error) -> 'met: L2 (by 4.71);
    within noise: dropout (0.47 below); missed: combined (by 7.94); margins in points, noise: the seed band (±0.76)'."""
    bands = band if isinstance(band, dict) else dict.fromkeys(reached, band)
    groups = {"met": [], "within noise": [], "missed": []}
    for label, (value, target) in reached.items():
        margin = 100 * (value - target)
        if abs(margin) <= 100 * bands[label]:
            groups["within noise"].append(f"{label} ({abs(margin):.2f} {'above' if margin >= 0 else 'below'})")
        else:
            groups["met" if margin > 0 else "missed"].append(f"{label} (by {abs(margin):.2f})")
    shown = "" if isinstance(band, dict) else f" (±{100 * band:.2f})"
    parts = [f"{name}: {spoken_list(items)}" for name, items in groups.items() if items]
    return f"{'; '.join(parts)}; margins in points, noise: {band_name}{shown}"


def binomial_se(accuracy: float, n: int) -> float:
    """The standard error of an accuracy measured on n independent test images."""
    return (accuracy * (1 - accuracy) / n) ** 0.5


def blank_or(pattern: str):
    """A table-cell formatter: `pattern` (e.g. '{:.1f}') for a value, blank for '' or None (a row without it)."""
    return lambda value: "" if value in ("", None) else pattern.format(value)


def p_value(value) -> str:
    """A p-value cell: three decimals, '--' on the reference row it was computed against."""
    return "--" if value in ("", None) else f"{value:.3f}"


def sample_sd(values: list) -> float:
    """Standard deviation with ddof=1 (the spread of a handful of seeds or samples)."""
    if len(values) < 2:
        raise ValueError(f"a sample standard deviation needs at least 2 values, got {len(values)}: repeat the run")
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def mean_interval(values: list, level: float = 0.95) -> dict:
    """Mean and the half-width of its `level` confidence interval (Student's t, ddof=1) over `values`."""
    from scipy.stats import t

    values = [float(v) for v in values]
    if len(values) < 2:
        raise ValueError(f"an interval needs at least 2 values, got {len(values)}")
    half_width = float(t.ppf(0.5 + level / 2, len(values) - 1)) * sample_sd(values) / math.sqrt(len(values))
    return {"mean": sum(values) / len(values), "half_width": half_width, "n": len(values)}


def paired_p(values, reference) -> float:
    """Two-sided paired t-test p over seeds (trial k of each side shares seed k); 1.0 when the pairs are equal."""
    from scipy.stats import ttest_rel

    if max(abs(a - b) for a, b in zip(values, reference)) == 0:
        return 1.0
    return float(ttest_rel(values, reference).pvalue)


def trial_statistics(trials: dict, baseline: str) -> list:
    """Mean, median, std (ddof=1) per configuration over repeated trials; against `baseline`: the
    difference of means, whether the trials are fully separated (all above or all below every baseline
    trial), and a two-sided paired t-test over the seeds (`paired_p`, the test the claims use; a rank test
    with 3 vs 3 trials could never go below p = 0.1)."""
    import numpy as np

    if baseline not in trials:
        raise ValueError(f"baseline {baseline!r} is not among {list(trials)}")
    rows = []
    for name, values in trials.items():
        values = np.asarray(values, dtype=float)
        row = {"name": name, "n": len(values), "mean": values.mean(), "median": float(np.median(values)),
               "std": values.std(ddof=1) if len(values) > 1 else 0.0, "min": values.min(), "max": values.max()}
        if name != baseline:
            reference = np.asarray(trials[baseline], dtype=float)
            row.update(p=paired_p(values.tolist(), reference.tolist()), delta=float(values.mean() - reference.mean()),
                       separated=bool(values.min() > reference.max() or values.max() < reference.min()))
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------
# LaTeX


def latex_escape(text) -> str:
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in str(text))


def macro_name(*parts) -> str:
    """CamelCase letters only (LaTeX macro names cannot hold digits or underscores): 'test_acc', 3 -> TestAccThree."""
    words = []
    for part in parts:
        for token in re.findall(r"[A-Za-z]+|\d", str(part)):
            words.append(_DIGITS[int(token)] if token.isdigit() else token[0].upper() + token[1:])
    if not words:
        raise ValueError(f"no letters or digits in macro name parts {parts!r}")
    return "".join(words)


def latex_minus(text: str) -> str:
    """A typographic minus for every negative number in `text` ('-4.6' -> '\\ensuremath{-}4.6', right in text and
    in math mode); hyphens inside words, ranges (2023-2025) and exponents (5e-04) stay."""
    return re.sub(r"(?<![\w}.])-(?=\d)", r"\\ensuremath{-}", text)


def format_number(value, digits: int = 2, percent: bool = False) -> str:
    if isinstance(value, str):
        return latex_escape(value)
    if isinstance(value, bool) or value is None:
        return latex_escape(str(value))
    if isinstance(value, int) and not percent:
        return f"{value:,}".replace(",", "{,}")
    return f"{value * 100 if percent else value:.{digits}f}"


def write_macros(macros: dict, path: str | os.PathLike, prefix: str = "") -> Path:
    """`\\newcommand` per entry: {'test_acc': 0.987} with prefix 'TS' gives \\TSTestAcc."""
    lines = ["% Generated by helpers.results.write_macros; do not edit by hand."]
    seen = set()
    for key, value in macros.items():
        name = prefix + macro_name(key)
        if name in seen:
            raise ValueError(f"two macro keys map to \\{name}; rename one of them")
        seen.add(name)
        shown = value if isinstance(value, str) else format_number(value)
        lines.append(f"\\newcommand{{\\{name}}}{{{latex_minus(shown)}}}")
    return _write_text("\n".join(lines) + "\n", path)


def _span(values, unit: str = "", one: str = "", many: str = "", grouped: bool = True) -> str:
    """'24 epochs', '3-4 epochs', 'seeds 2023-2025': a set of values as a phrase."""
    values = sorted(set(values))
    if not values:
        return ""
    show = (lambda v: f"{v:,}") if grouped else str
    text = show(values[0]) if len(values) == 1 else f"{show(values[0])}–{show(values[-1])}"
    if values == [1] and unit.endswith("s"):  # '1 epoch', not '1 epochs'
        unit = unit[:-1]
    return f"{many if len(values) > 1 else one}{text}{unit}"


def epochs_run(record: dict) -> int:
    """The epochs a stored run trained: its history's length (a plateau rule may stop it before its cap)."""
    history = record.get("history") or {}
    return len(history["epochs"]) if history.get("epochs") else record["config"]["epochs"]


def record_devices(files: list) -> list:
    """The devices stored results files trained on, sorted (a section re-run later may have run elsewhere)."""
    return sorted({f["environment"].get("device_name", "") for f in files} - {""})


def describe_records(files: list) -> str:
    """What a caption must say about its rows, read from their stored results files: data (real or
    synthetic stand-in, per row where they differ), training samples, input size, epochs, seeds, device."""
    records = [f["results"] for f in files]
    data = [r.get("data") or {} for r in records]
    synthetic = [d.get("synthetic", f["budget"].get("synthetic", False)) for d, f in zip(data, files)]
    if all(synthetic):
        parts = ["synthetic stand-in data"]
    elif any(synthetic):
        names = ", ".join(r["name"] for r, s in zip(records, synthetic) if s)
        parts = [f"real data, except a synthetic stand-in for {names}"]
    else:
        parts = ["real data"]
    parts.append(_span([d["samples"] for d in data if d.get("samples")], " training samples"))
    parts.append(_span([d["input_size"] for d in data if d.get("input_size")], " px images"))
    parts.append(_span([epochs_run(r) for r in records if "config" in r], " epochs"))
    parts.append(_span([r["seed"] for r in records if "seed" in r], one="seed ", many="seeds ", grouped=False))
    devices = record_devices(files)
    parts.append("device " + " and ".join(devices) if devices else "")
    return ", ".join(p for p in parts if p)


TABLE_FONT = r"\small\setlength{\tabcolsep}{4pt}"
GROUP_HEADING = "group_heading"  # a row {GROUP_HEADING: text} heads the rows after it


def latex_table(rows: list, columns: dict, caption: str, label: str, note: str = "", align: str = "") -> str:
    """A booktabs table. `columns` maps row keys to headers, or to (header, format) where format is a
    str.format pattern such as '{:.2f}' or a callable that returns LaTeX; `align` overrides the default
    column spec (first column left, the rest right), e.g. for a wrapped text column. A row {GROUP_HEADING: text}
    is a heading in italics over the rows that follow."""
    heads, formats = [], []
    for head in columns.values():
        head, fmt = head if isinstance(head, tuple) else (head, None)
        heads.append(latex_escape(head))
        formats.append(fmt)
    align = align or "l" + "r" * (len(columns) - 1)
    table = []  # the formatted cells of each row
    for row in rows:
        if GROUP_HEADING in row:  # a heading over the rows that follow, across the table (wrapped if longer)
            width = r"p{\dimexpr\linewidth-2\tabcolsep}"
            table.append([rf"\multicolumn{{{len(columns)}}}{{{width}}}{{\emph{{{latex_escape(row[GROUP_HEADING])}}}}}"])
            continue
        cells = []
        for key, fmt in zip(columns, formats):
            value = row.get(key, "")
            if callable(fmt):  # returns LaTeX, e.g. "$98.1 \\pm 0.2$"
                cells.append(fmt(value))
            else:
                cells.append(latex_escape(fmt.format(value)) if fmt else format_number(value))
        table.append(cells)
    body = [" & ".join(latex_minus(cell) for cell in cells) + r" \\" for cells in table]
    caption = latex_escape(caption) + (f" {latex_escape(note)}" if note else "")
    # One font size and column gap for every table, never scaled: a table too wide for the text is re-designed
    # (shorter headers, fewer columns), and `make report` fails on one that runs into the margin.
    tabular = [TABLE_FONT, rf"\begin{{tabular}}{{{align}}}", r"\toprule", " & ".join(heads) + r" \\", r"\midrule",
               *body, r"\bottomrule", r"\end{tabular}"]
    return "\n".join([r"\begin{table}[t]", r"\centering", rf"\caption{{{caption}}}", rf"\label{{{label}}}",
                      *tabular, r"\end{table}"]) + "\n"


def _write_text(text: str, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def write_table(rows: list, columns: dict, caption: str, label: str, path, note: str = "",
                sources: list = ()) -> Path:
    """The table, after a comment naming the results files its rows come from (tests check captions
    against them)."""
    header = f"% rows from results: {', '.join(sources)}\n" if sources else ""
    return _write_text(header + latex_table(rows, columns, caption, label, note), path)


# ----------------------------------------------------------------------------------------------
# Weights with a manifest


class WeightsMismatchError(ValueError):
    """A weight file does not fit the model it is loaded into; the message names both."""


def sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_weights(model: nn.Module, name: str, weights_dir, *, notebook: str, metric: dict | None = None,
                 profile: str = "", preprocessing: dict | None = None) -> dict:
    """Save the state_dict as `<weights_dir>/<name>.pt` and record it in `manifest.json` with what rebuilds it
    (architecture, config) and what its inputs need (`preprocessing`, see helpers.weights.Preprocess)."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"weights name {name!r}: use letters, digits, '_', '-' and '.' only")
    weights_dir = Path(weights_dir)
    weights_dir.mkdir(parents=True, exist_ok=True)
    path = weights_dir / f"{name}.pt"
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    entry = {**model_summary(model), "file": path.name, "notebook": notebook, "profile": profile,
             "metric": metric or {}, "sha256": sha256(path), "bytes": path.stat().st_size,
             "config": getattr(model, "config", None)}
    if preprocessing:  # absent rather than empty: load_model then says the file cannot stand alone
        entry["preprocessing"] = preprocessing
    manifest = read_manifest(weights_dir)
    manifest[name] = entry
    write_json(manifest, weights_dir / "manifest.json")
    return entry


def read_manifest(weights_dir) -> dict:
    return read_json_if_present(Path(weights_dir) / "manifest.json")


def load_weights(model: nn.Module, name: str, weights_dir, map_location="cpu") -> dict:
    """Load `<name>.pt` into `model`, checking the sha256 and that every tensor fits."""
    weights_dir = Path(weights_dir)
    path = weights_dir / f"{name}.pt"
    entry = read_manifest(weights_dir).get(name, {})
    if not path.exists():
        raise FileNotFoundError(f"no weights {path}; run the notebook with TRAIN=True (or `make reproduce`) to "
                                f"create them")
    if entry.get("sha256") and entry["sha256"] != sha256(path):
        raise WeightsMismatchError(f"{path} does not match the sha256 in {weights_dir / 'manifest.json'}; "
                                   f"the file was changed or truncated, re-create it with TRAIN=True")
    state = torch.load(path, map_location=map_location, weights_only=True)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if expected != found:
        saved_as = entry.get("architecture", "unknown architecture") + (
            f" {entry['config']}" if entry.get("config") else "")
        differing = sorted(set(expected) ^ set(found)) or [k for k in expected if expected[k] != found[k]]
        raise WeightsMismatchError(
            f"{path.name} holds a {saved_as} but the model is a {type(model).__name__} "
            f"{getattr(model, 'config', '')}; first differing tensors: {differing[:3]}")
    model.load_state_dict(state)
    return entry
