"""The report's guard rails and the submission bundle.

- `check`: every number in the report's prose must come from a macro the notebooks wrote; every
  \\input table, \\includegraphics figure and macro must exist. Numbers that are not our results
  (targets, the literature) are wrapped in \\given{...} in main.tex. Every declared claim
  (helpers/claimlist.py) must hold on the stored results, and its macros must be current.
- `layout`: after a build, no box LaTeX could not fit by more than 1 pt (main.log).
- `claims`: list every declared claim with its numbers and verdict (`--write`: its macros).
- `stamp`: after a successful build, record the sha256 of every file the PDF embeds.
- `submission`: dist/submission.zip, refused while the PDF is older than what it embeds.

Run as `python -m helpers.report check|stamp|submission` (the Makefile's `report` and `submission`).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import zipfile
from pathlib import Path

from . import claims
from .repro import PROJECT_ROOT
from .results import duration, read_json_if_present

REPORT_DIR = PROJECT_ROOT / "report"
STAMP = "build-inputs.json"
# A decimal number, or any number followed by a percent sign: what a typed-in result looks like.
RESULT_LIKE = re.compile(r"(?<![\w\\])\d+\.\d+|(?<![\w\\])\d+(?:\.\d+)?\s*(?:\\,|~)?\s*\\%")
# Commands whose arguments are labels, keys or paths, never prose.
NON_PROSE = re.compile(r"\\(?:given|cite[tp]?|citet|citep|ref|eqref|label|input|include|includegraphics|"
                       r"bibliography|bibliographystyle|graphicspath|usepackage|documentclass|newcommand)"
                       r"\*?(?:\[[^\]]*\])*\{[^{}]*(?:\{[^{}]*\}[^{}]*)*\}")


class ReportError(RuntimeError):
    """The report cannot be built or bundled as it stands; the message names the fix."""


def strip_comments(tex: str) -> str:
    return re.sub(r"(?<!\\)%.*", "", tex)


def body(tex: str) -> str:
    tex = strip_comments(tex)
    start, end = tex.find(r"\begin{document}"), tex.find(r"\end{document}")
    return tex[start:end] if start >= 0 else tex


def hand_typed_numbers(tex: str) -> list:
    """Result-like numbers in the document body that are neither macros nor \\given{...}."""
    prose = NON_PROSE.sub(" ", body(tex))
    prose = re.sub(r"\\[A-Za-z]+", " ", prose)  # macro names (\RNbZeroThreeEpochs) hold no digits anyway
    return RESULT_LIKE.findall(prose)


def inputs_of(tex: str, report_dir: Path) -> dict:
    """The files main.tex pulls in: {'tables': [...], 'figures': [...], 'macros': [...]} as paths."""
    text = strip_comments(tex)
    graphics = re.search(r"\\graphicspath\{\{([^}]*)\}", text)
    figure_dir = (report_dir / graphics.group(1)).resolve() if graphics else report_dir
    inputs = [report_dir / (name if name.endswith(".tex") else name + ".tex")
              for name in re.findall(r"\\input\{([^}]*)\}", text)]
    figures = [figure_dir / name for name in re.findall(r"\\includegraphics(?:\[[^\]]*\])?\{([^}]*)\}", text)]
    return {"tables": [p for p in inputs if not p.stem.endswith("_macros")],
            "macros": [p for p in inputs if p.stem.endswith("_macros")], "figures": figures}


TEXT_WIDTH_IN = 5.5  # the NeurIPS text width, as helpers.plots draws for it
MEDIA_BOX = re.compile(rb"/MediaBox\s*\[\s*[\d.]+\s+[\d.]+\s+([\d.]+)\s+[\d.]+\s*\]")


def shrunk_figures(tex: str, figure_dir: Path) -> list:
    """Figures printed narrower than they were drawn (their text then falls below the 7 pt they were drawn at):
    [(file, drawn inches, printed inches)] for every \\includegraphics[width=f\\linewidth]{file} in `tex`."""
    shrunk = []
    for options, name in re.findall(r"\\includegraphics(?:\[([^\]]*)\])?\{([^}]*)\}", strip_comments(tex)):
        width = re.search(r"width=([\d.]*)\\(?:line|text)width", options or "")
        printed = TEXT_WIDTH_IN * float(width.group(1) or 1) if width else None
        path = figure_dir / name
        box = MEDIA_BOX.search(path.read_bytes()) if path.exists() and path.suffix == ".pdf" else None
        if printed and box and float(box.group(1)) / 72 > printed + 0.05:
            shrunk.append((name, float(box.group(1)) / 72, printed))
    return shrunk


def defined_macros(paths) -> set:
    names = set()
    for path in paths:
        names |= set(re.findall(r"\\newcommand\{\\([A-Za-z]+)\}", Path(path).read_text()))
    return names


def check(report_dir: Path = REPORT_DIR) -> list:
    """Problems with the report's sources, each a sentence that says what to do; [] when all is well."""
    main = report_dir / "main.tex"
    if not main.exists():
        return [f"{main} is missing"]
    tex = main.read_text()
    problems = [f"main.tex types the result-like number {n!r} by hand: use a macro from report/generated/, "
                f"or wrap a quoted target/literature value in \\given{{...}}" for n in hand_typed_numbers(tex)]
    files = inputs_of(tex, report_dir)
    for kind, paths in files.items():
        for path in paths:
            if not path.exists():
                problems.append(f"{kind[:-1]} file {path} is missing: run the notebook that writes it "
                                f"(make reproduce ONLY={path.name[:2]})")
    written = {p.resolve() for p in (report_dir / "generated").glob("*.tex") if not p.stem.endswith("_macros")}
    for path in sorted(written - {p.resolve() for p in files["tables"]}):
        problems.append(f"report/generated/{path.name} is written by notebook {path.name[:2]} but main.tex never "
                        f"\\input's it: put it in the main text or the appendix and refer to it from the text")
    labels = re.findall(r"\\label\{((?:tab|fig):[^}]*)\}", "\n".join(
        [body(tex), *(p.read_text(encoding="utf-8") for p in files["tables"] if p.exists())]))
    for label in sorted(set(labels) - set(re.findall(r"\\ref\{([^}]*)\}", body(tex)))):
        problems.append(f"{label} is printed but the text never refers to it: cite it where its result is discussed "
                        f"(Table~\\ref{{{label}}}), or drop it")
    graphics = re.search(r"\\graphicspath\{\{([^}]*)\}", tex)
    for name, drawn, printed in shrunk_figures(tex, (report_dir / graphics.group(1)) if graphics else report_dir):
        problems.append(f"{name} is drawn {drawn:.2f} in wide but printed {printed:.2f} in: its text would print "
                        f"below 7 pt; include it at its own width or draw it narrower (helpers.plots.figsize)")
    defined = defined_macros(p for p in files["macros"] if p.exists())
    for name in sorted(set(re.findall(r"\\((?:RNb|Claim)[A-Za-z]+)", body(tex))) - defined):
        problems.append(f"macro \\{name} is used but no report/generated/*_macros.tex defines it")
    return problems + claim_problems(report_dir.parent / "results", report_dir / "generated")


def claim_problems(results_dir: Path, generated_dir: Path) -> list:
    """A declared claim that the stored results contradict or cannot check, and claims macros that are
    stale against the stored results, each as a sentence naming the fix."""
    problems, by_notebook = [], {}
    for claim in claims.declared():
        try:
            evaluation = claims.evaluate(claim, results_dir)
        except claims.ClaimError as error:
            problems.append(f"claim {claim.id} cannot be checked: {error}")
            continue
        by_notebook.setdefault(claim.notebook, []).append(evaluation)
        if not evaluation.holds:
            problems.append(f"claim {claim.id} says {claim.says} but the data say {evaluation.verdict}: "
                            f"{evaluation.wording()} Change the claim (helpers/claimlist.py) and the prose.")
    for notebook, evaluations in by_notebook.items():
        for name, text in claims.generated(evaluations, notebook).items():
            path = generated_dir / name
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                problems.append(f"{path} is missing or stale against the stored results: run notebook {notebook}'s "
                                f"last cell, or `python -m helpers.report claims --write`")
    return problems


OVERFULL = re.compile(r"^Overfull \\[hv]box \(([\d.]+)pt too (?:wide|high)\)(.*)$", re.MULTILINE)


def layout_problems(log: str, tolerance_pt: float = 1.0) -> list:
    """Boxes LaTeX could not fit by more than `tolerance_pt`, from the build's log: a table or line that runs
    into the margin is re-designed (split, abbreviated), never shrunk."""
    return [f"a box is {float(points):.1f}pt too wide{where}: re-design the table or reword the line"
            for points, where in OVERFULL.findall(log) if float(points) > tolerance_pt]


# The course: at most 6 pages of main text before the references, so their heading may start page 7 at the latest.
MAX_REFERENCES_PAGE = 7
REFERENCES_LABEL = re.compile(r"\\newlabel\{references\}\{\{[^{}]*\}\{(\d+)\}")


def length_problems(aux: str, max_page: int = MAX_REFERENCES_PAGE) -> list:
    """The main text's length, from the page of the `references` label main.tex puts before its bibliography
    (read from main.aux after the build)."""
    found = REFERENCES_LABEL.search(aux)
    if not found:
        return ["main.aux has no page for \\label{references}: label the references' heading in main.tex "
                "(\\renewcommand{\\bibsection}{...\\label{references}})"]
    page = int(found.group(1))
    return [] if page <= max_page else [
        f"the references start on page {page}: the main text runs to {page - 1} pages, more than the course's "
        f"{max_page - 1}; move a study's detail, a table or a figure to the appendix"]


def embedded_files(report_dir: Path = REPORT_DIR) -> list:
    """Every file the PDF is made from: sources, style, bibliography, tables, macros, figures."""
    files = inputs_of((report_dir / "main.tex").read_text(), report_dir)
    own = [report_dir / name for name in ("main.tex", "references.bib", "suite.sty")]
    return sorted({p.resolve() for p in own + files["tables"] + files["macros"] + files["figures"] if p.exists()})


def digest(paths) -> dict:
    return {str(Path(p).relative_to(PROJECT_ROOT)): hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}


def stamp(report_dir: Path = REPORT_DIR) -> Path:
    path = report_dir / STAMP
    path.write_text(json.dumps(digest(embedded_files(report_dir)), indent=1, sort_keys=True) + "\n")
    return path


def stale(report_dir: Path = REPORT_DIR) -> list:
    """Files that changed (or appeared) since the PDF was built; everything if it never was."""
    pdf, path = report_dir / "main.pdf", report_dir / STAMP
    if not pdf.exists() or not path.exists():
        return ["report/main.pdf (never built here)"]
    built, now = json.loads(path.read_text()), digest(embedded_files(report_dir))
    return sorted(name for name in set(built) | set(now) if built.get(name) != now.get(name))


# What the bundle holds besides the executed notebooks: the code, the outputs the report and a TRAIN=False replay
# read, and every file its own README's commands need. Never data sets, checkpoints or runs.
BUNDLED_FILES = ("requirements.txt", "README.md", "pyproject.toml", "Makefile", "CHANGELOG.md")
BUNDLED_FOLDERS = {"helpers": "*.py", "tests": "*.py", "notebooks": "*.ipynb", "weights": "*", "results": "*.json",
                   "results/replays": "*.json", "results/scratch": "*.json", "figures": "*"}
REPORT_SOURCES = ("main.tex", "references.bib", "suite.sty", "video_outline.md", "main.pdf")


def submission(out: Path, executed_dir: Path, report_dir: Path = REPORT_DIR) -> Path:
    """The course's bundle, usable on its own: the notebooks as executed on the fast profile under executed/
    (this machine's absolute paths made relative) next to the clean ones its commands run, code, tests, weights +
    manifest, results, figures, the report PDF with its sources and the video outline, requirements, README and
    Makefile; never data sets."""
    changed = stale(report_dir)
    if changed:
        raise ReportError("the report is stale; run `make report` first. Changed since the last build: "
                          + ", ".join(changed))
    notebooks = sorted(executed_dir.glob("[0-9][0-9]_*.ipynb"))
    if not notebooks:
        raise ReportError(f"no executed notebooks in {executed_dir}: run `make reproduce` (or, from the "
                          f"committed weights, `python -m helpers.reproduce --no-train`) first")
    members = {str(path.relative_to(PROJECT_ROOT)): path.read_bytes()
               for folder, pattern in BUNDLED_FOLDERS.items() for path in sorted((PROJECT_ROOT / folder).glob(pattern))
               if path.is_file() and not path.name.startswith(".")}
    members |= {name: (PROJECT_ROOT / name).read_bytes() for name in BUNDLED_FILES if (PROJECT_ROOT / name).exists()}
    members |= {f"executed/{p.name}": relative_paths(p.read_text(encoding="utf-8")).encode() for p in notebooks}
    members |= {f"report/{name}": (report_dir / name).read_bytes() for name in REPORT_SOURCES
                if (report_dir / name).exists()}
    members |= {f"report/generated/{p.name}": p.read_bytes() for p in sorted((report_dir / "generated").glob("*.tex"))}
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as bundle:
        for name, content in sorted(members.items()):
            bundle.writestr(f"submission/{name}", content)
    return out


def relative_paths(notebook_json: str) -> str:
    """An executed notebook as it reads from the bundle's root: this machine's project path becomes '.'
    (parameters, printed paths), so nothing points into a folder the reader does not have."""
    root = json.dumps(str(PROJECT_ROOT), ensure_ascii=False)[1:-1]  # as the path appears inside JSON strings
    return re.sub(re.escape(root) + r'(/|(?=["\\\s]))', lambda m: "" if m.group(1) == "/" else ".", notebook_json)


COST_MARKERS = ("<!-- cost-table: generated by `python -m helpers.report costs --write`; do not edit -->",
                "<!-- end of cost-table -->")


def cost_table(results_dir: Path = PROJECT_ROOT / "results") -> str:
    """The README's per-notebook cost table, from the records alone: training time summed over every fast run
    (`train_seconds`), the wall time and peak memory of the last run that trained (results/NN_summary.json), of
    the last from-scratch run (results/scratch/NN.json) and of the last TRAIN=False replay (results/replays/NN.json),
    and the CPUs they ran on."""
    lines = ["| notebook | training, summed over its fast runs | last run that trained: wall time, peak memory | "
             "from scratch, everything trained: wall time, peak memory | TRAIN=False replay: wall time, peak memory "
             "| CPU |", "|---|---|---|---|---|---|"]
    for notebook in sorted({p.name[:2] for p in results_dir.glob("[0-9][0-9]_*.json")}):
        runs = [json.loads(p.read_text())
                for p in sorted(results_dir.glob(f"{notebook}_*.json")) if not p.stem.endswith("_summary")]
        runs = [r for r in runs if "train_seconds" in (r.get("results") or {})
                and (r.get("budget") or {}).get("profile") == "fast"]
        cpus = {(r.get("environment") or {}).get("cpu_model") or (r.get("environment") or {}).get("device_name", "?")
                for r in runs}
        summary, scratch, replay = (read_json_if_present(path) for path in (
            results_dir / f"{notebook}_summary.json", results_dir / "scratch" / f"{notebook}.json",
            results_dir / "replays" / f"{notebook}.json"))
        cpus |= {s["cpu_model"] for s in (summary, scratch, replay) if s.get("cpu_model")}
        lines.append(f"| {notebook} | {sum(r['results']['train_seconds'] for r in runs) / 60:,.0f} min over "
                     f"{len(runs)} run{'s' * (len(runs) != 1)} | {_costs(summary)} | "
                     f"{_costs(scratch, 'not run in one piece')} | {_costs(replay)} | {'; '.join(sorted(cpus))} |")
    return "\n".join([COST_MARKERS[0], *lines, COST_MARKERS[1]])


def _costs(summary: dict, absent: str = "not recorded") -> str:
    """'49.5 min, 2.5 GB (re-ran 10 sections)' from a run summary; what it lacks is said, not guessed."""
    if "train" not in summary:  # absent, or written before summaries said whether their run trained
        return absent
    shown = duration(summary["seconds"])
    peak = f"{summary['peak_memory_gb']:.1f} GB" if summary.get("peak_memory_gb") else "peak not recorded"
    count = len(summary.get("retrain") or ())
    partial = f" (re-ran {count} section{'s' * (count != 1)})" if count else ""
    if summary.get("decode_caches_at_start"):  # a from-scratch run that found decoded images: not a fresh runtime
        partial += f" ({summary['decode_caches_at_start']} decode caches present)"
    if summary.get("drift_free") is False:
        partial += " (drifted from the committed results)"
    return f"{shown}, {peak}{partial}" + (f", {summary['measured']}" if summary.get("measured") else "")


BENCH_MARKERS = ("<!-- bench-table: generated by `python -m helpers.report costs --write`; do not edit -->",
                 "<!-- end of bench-table -->")


def bench_table(path: Path = PROJECT_ROOT / "results" / "01_bench.json") -> str:
    """The README's throughput table, one row per model and precision that `python -m helpers.bench cifar --write`
    stored; says so when nothing was measured."""
    records = read_json_if_present(path)
    lines = ["| model, precision | FLOP per training image | tensor pipeline | PIL + DataLoader | speed-up | "
             "of the matmul ceiling | CPU, threads, date |", "|---|---|---|---|---|---|---|"]
    for record in records.values():
        ours, classic = record["pipelines"]
        lines.append(f"| {record['model']}, {record['precision']} | {record['train_flops_per_image'] / 1e9:.2f} G | "
                     f"{ours['images_per_s']:,.0f} img/s | {classic['images_per_s']:,.0f} img/s | "
                     f"{ours['images_per_s'] / classic['images_per_s']:.2f}x | {100 * ours['fraction']:.1f} % of "
                     f"{record['matmul_ceiling_flops'] / 1e9:,.0f} GFLOP/s | {record['cpu_model']}, "
                     f"{record['threads']}, {record['date']} |")
    if not records:
        lines.append("| not measured: run `python -m helpers.bench cifar --write results/01_bench.json` | | | | | | |")
    return "\n".join([BENCH_MARKERS[0], *lines, BENCH_MARKERS[1]])


def readme_with_block(readme: str, block: str, markers: tuple) -> str:
    """The README with the generated block between `markers` replaced; an error naming the markers if it has none."""
    start, end = readme.find(markers[0]), readme.find(markers[1])
    if start < 0 or end < start:
        raise ReportError(f"README.md has no generated block: put the lines {markers[0]!r} and {markers[1]!r} "
                          f"where it goes")
    return readme[:start] + block + readme[end + len(markers[1]):]


def list_claims(write: bool = False, results_dir: Path = PROJECT_ROOT / "results",
                generated_dir: Path = REPORT_DIR / "generated") -> int:
    """Print every declared claim with its numbers and verdict; non-zero when one does not hold."""
    evaluations = [claims.evaluate(c, results_dir) for c in claims.declared()]
    print(claims.table(evaluations))
    for e in evaluations:
        print(f"\n{e.claim.id} (\\{claims.macro(e.claim)}): {e.wording()}")
    if write:
        for notebook in sorted({e.claim.notebook for e in evaluations}):
            for name, text in claims.generated(evaluations, notebook).items():
                (generated_dir / name).write_text(text, encoding="utf-8")
    return 0 if all(e.holds for e in evaluations) else 1


def _reported(problems: list) -> int:
    """Each problem on stderr; the exit status says whether there were any."""
    for problem in problems:
        print(f"report: {problem}", file=sys.stderr)
    return 1 if problems else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.report", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("check", "layout", "claims", "costs", "stamp", "submission"))
    parser.add_argument("--write", action="store_true", help="claims: also write report/generated/"
                        "*_claims_macros.tex and *_claims.tex; costs: write the table into README.md")
    parser.add_argument("--executed-dir", default=str(PROJECT_ROOT / "runs" / "fast"),
                        help="where the executed notebooks are (default runs/fast)")
    parser.add_argument("--out", default=str(PROJECT_ROOT / "dist" / "submission.zip"))
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            return _reported(check())
        if args.command == "layout":  # after the build: main.log holds what LaTeX could not fit, main.aux the pages
            return _reported(layout_problems((REPORT_DIR / "main.log").read_text(encoding="latin-1")) +
                             length_problems((REPORT_DIR / "main.aux").read_text(encoding="latin-1")))
        if args.command == "claims":
            return list_claims(write=args.write)
        if args.command == "costs":
            table = cost_table()
            if args.write:
                readme = PROJECT_ROOT / "README.md"
                text = readme_with_block(readme.read_text(encoding="utf-8"), table, COST_MARKERS)
                readme.write_text(readme_with_block(text, bench_table(), BENCH_MARKERS), encoding="utf-8")
            print(table)
            return 0
        if args.command == "stamp":
            print(f"report: recorded the inputs of main.pdf in {stamp()}")
            return 0
        out = submission(Path(args.out), Path(args.executed_dir))
        print(f"report: wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
        return 0
    except ReportError as error:
        print(f"report: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
