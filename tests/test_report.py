"""The report's sources take every number from report/generated/, and the submission bundle refuses a
stale PDF."""
import json
import os
import zipfile
from pathlib import Path

import pytest

from helpers import report
from tests.conftest import require


def test_committed_report_types_no_result_by_hand_and_finds_every_input():
    assert report.check() == []


@pytest.mark.parametrize("snippet, first", [
    (r"accuracy of 93.24\,\% on test", "93.24"),
    (r"reaches 97\% Dice", r"97\%"),
    (r"a Dice of 0.9712 after", "0.9712"),
    (r"target \given{99.3}\,\% and \RNbZeroThreeEpochs{} epochs of 3$\times$3 convs", None),
    (r"see \citep{he2016resnet} and Table~\ref{tab:03-trials}, \includegraphics[width=0.5\linewidth]{a.pdf}", None),
    ("% a comment with 12.5 is ignored\nplain text", None),
])
def test_hand_typed_numbers_are_caught(snippet, first):
    found = report.hand_typed_numbers("\\begin{document}\n" + snippet + "\n\\end{document}")
    assert (found[0] if found else None) == first


def write_report(root: Path, body: str) -> Path:
    (root / "generated").mkdir(parents=True)
    (root / "generated" / "01_x_macros.tex").write_text("\\newcommand{\\RNbZeroOneAcc}{91.5}\n")
    (root / "main.tex").write_text("\\documentclass{article}\n\\graphicspath{{figs/}}\n"
                                   "\\input{generated/01_x_macros}\n\\begin{document}\n" + body + "\n\\end{document}\n")
    return root


def test_check_names_missing_tables_figures_and_macros(tmp_path):
    root = write_report(tmp_path / "r", "\\RNbZeroOneAcc \\RNbZeroOneLoss \\input{generated/01_table}\n"
                                        "\\includegraphics{01_curves.pdf}")
    problems = report.check(root)
    assert any("table file" in p and "01_table.tex" in p and "ONLY=01" in p for p in problems)
    assert any("figure file" in p and "01_curves.pdf" in p for p in problems)
    assert any("\\RNbZeroOneLoss" in p for p in problems)
    assert not any("\\RNbZeroOneAcc" in p for p in problems)


def test_check_names_a_generated_table_the_report_leaves_out(tmp_path):
    root = write_report(tmp_path / "r", "\\input{generated/01_used}")
    for name in ("01_used", "01_forgotten"):
        (root / "generated" / f"{name}.tex").write_text("\\begin{table}\\end{table}\n")
    problems = report.check(root)
    assert [p for p in problems if "never" in p] == [p for p in problems if "01_forgotten.tex" in p]
    assert len([p for p in problems if "01_forgotten.tex" in p]) == 1


def test_check_names_a_table_or_figure_the_text_never_refers_to(tmp_path):
    root = write_report(tmp_path / "r", "As Table~\\ref{tab:01-cited} shows. \\input{generated/01_cited} "
                                        "\\input{generated/01_silent}\n"
                                        "\\begin{figure}\\label{fig:01-silent}\\end{figure}")
    for name in ("01_cited", "01_silent"):
        (root / "generated" / f"{name}.tex").write_text(f"\\begin{{table}}\\label{{tab:{name.replace('_', '-')}}}"
                                                        "\\end{table}\n")
    problems = [p for p in report.check(root) if "never refers" in p]
    assert len(problems) == 2 and any("tab:01-silent" in p for p in problems) and any("fig:01-silent" in p
                                                                                      for p in problems)


def test_a_figure_printed_narrower_than_drawn_is_named(tmp_path):
    figures = tmp_path / "figs"
    figures.mkdir()
    for name, inches in (("01_wide.pdf", 5.5), ("01_half.pdf", 2.7)):
        (figures / name).write_bytes(b"%%PDF-1.4\n<< /MediaBox [0 0 %.1f 200] >>\n" % (inches * 72))
    tex = ("\\includegraphics[width=0.8\\linewidth]{01_wide.pdf} \\includegraphics[width=\\linewidth]{01_wide.pdf}"
           "\n\\includegraphics[width=0.5\\linewidth]{01_half.pdf}")
    assert report.shrunk_figures(tex, figures) == [("01_wide.pdf", 5.5, pytest.approx(4.4))]


def test_layout_problems_name_boxes_over_a_point_only():
    log = ("Overfull \\hbox (51.2pt too wide) in paragraph at lines 12--14\n"
           "Overfull \\hbox (0.4pt too wide) in alignment at lines 3--9\n"
           "Underfull \\hbox (badness 2600) in paragraph at lines 225--232\n")
    problems = report.layout_problems(log)
    assert len(problems) == 1 and "51.2pt" in problems[0] and "lines 12--14" in problems[0]


def test_length_rule_reads_the_references_page_from_the_aux_file():
    aux = "\\newlabel{references}{{5}{%d}{Conclusion}{section*.9}{}}\n"
    assert report.length_problems(aux % 7) == []
    assert "page 8" in report.length_problems(aux % 8)[0] and "7 pages" in report.length_problems(aux % 8)[0]
    assert "\\label{references}" in report.length_problems("\\relax\n")[0]


def test_submission_bundles_the_course_shape_and_refuses_a_stale_report(tmp_path, monkeypatch):
    root = write_report(tmp_path / "report", "Accuracy \\RNbZeroOneAcc.")
    executed = tmp_path / "executed"
    executed.mkdir()
    (executed / "01_demo.ipynb").write_text(json.dumps({"cells": []}))
    out = tmp_path / "dist" / "submission.zip"
    monkeypatch.setattr(report, "PROJECT_ROOT", tmp_path)
    (tmp_path / "helpers").mkdir()
    (tmp_path / "helpers" / "models.py").write_text("# model\n")
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "manifest.json").write_text("{}")
    for name in ("requirements.txt", "README.md", "pyproject.toml", "Makefile"):
        (tmp_path / name).write_text(name)
    for folder, name in (("results", "01_run.json"), ("figures", "01_curves.pdf"), ("tests", "test_x.py")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / name).write_text("{}")
    (root / "video_outline.md").write_text("# demo")
    (executed / "01_demo.ipynb").write_text(json.dumps({"cells": [], "metadata": {"parameters": {
        "DATA_ROOT": str(tmp_path / "data")}}}))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cifar.bin").write_text("never bundled")

    with pytest.raises(report.ReportError, match="make report"):
        report.submission(out, executed, root)  # never built
    (root / "main.pdf").write_bytes(b"%PDF-1.5")
    report.stamp(root)
    report.submission(out, executed, root)
    names = zipfile.ZipFile(out).namelist()
    assert {"submission/executed/01_demo.ipynb", "submission/helpers/models.py", "submission/weights/manifest.json",
            "submission/report/main.pdf", "submission/report/main.tex", "submission/report/video_outline.md",
            "submission/report/generated/01_x_macros.tex", "submission/results/01_run.json",
            "submission/figures/01_curves.pdf", "submission/tests/test_x.py", "submission/Makefile",
            "submission/requirements.txt", "submission/README.md"} <= set(names)
    assert not any("/data/" in n or n.endswith(".bin") for n in names)
    executed_copy = zipfile.ZipFile(out).read("submission/executed/01_demo.ipynb").decode()
    assert str(tmp_path) not in executed_copy and json.loads(executed_copy)["metadata"]["parameters"] == {
        "DATA_ROOT": "data"}  # relative to the bundle's root
    assert report.relative_paths(json.dumps([f"{tmp_path}2/x", f"{tmp_path}", "a\n" + str(tmp_path)])) == \
        json.dumps([f"{tmp_path}2/x", ".", "a\n."])  # a sibling folder is not this one

    (root / "generated" / "01_x_macros.tex").write_text("\\newcommand{\\RNbZeroOneAcc}{92.0}\n")
    with pytest.raises(report.ReportError, match="stale.*01_x_macros.tex"):
        report.submission(out, executed, root)
    with pytest.raises(report.ReportError, match="no executed notebooks"):
        report.stamp(root)
        report.submission(out, tmp_path / "nowhere", root)


def test_the_bundle_replays_a_notebook_on_its_own(tmp_path, monkeypatch, data_root):
    """Unpacked anywhere, the bundle's own code, results and weights replay notebook 04 (TRAIN=False)."""
    import subprocess
    import sys

    require(data_root / "lungs", "JSRT lungs")
    executed = tmp_path / "executed"
    executed.mkdir()
    (executed / "04_unet_segmentation.ipynb").write_bytes(
        (report.PROJECT_ROOT / "notebooks" / "04_unet_segmentation.ipynb").read_bytes())
    monkeypatch.setattr(report, "stale", lambda report_dir: [])  # the PDF's freshness is tested above
    built = tmp_path / "built"
    built.mkdir()
    pdf = report.PROJECT_ROOT / "report" / "main.pdf"
    (built / "main.pdf").write_bytes(pdf.read_bytes() if pdf.exists() else b"%PDF-1.5")  # CI builds no PDF
    out = report.submission(tmp_path / "submission.zip", executed, built)
    zipfile.ZipFile(out).extractall(tmp_path / "unpacked")
    bundle = tmp_path / "unpacked" / "submission"
    environment = {**os.environ, "PYTHONPATH": str(bundle)}  # the bundle's helpers, not this checkout's
    done = subprocess.run([sys.executable, "-m", "helpers.reproduce", "--only", "04", "--no-train", "--data-root",
                           str(data_root), "--output-dir", str(bundle)], cwd=bundle, env=environment,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert (bundle / "runs" / "replays" / "04_summary.json").exists()
    assert "ok" in done.stdout


def test_readme_cost_table_is_the_one_the_records_give():
    readme = (report.PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    assert report.cost_table() in readme, "stale: run `python -m helpers.report costs --write`"
    assert report.bench_table() in readme, "stale: run `python -m helpers.report costs --write`"


def test_every_measured_run_fits_a_free_colab_runtime():
    """The issue's memory budget: a free Colab runtime has about 12.7 GB; every recorded run (the last that
    trained, from-scratch runs and replays) must stay under 12 GB."""
    folder = report.PROJECT_ROOT / "results"
    records = [*folder.glob("[0-9][0-9]_summary.json"), *folder.glob("replays/*.json"), *folder.glob("scratch/*.json")]
    peaks = {p.relative_to(folder).as_posix(): json.loads(p.read_text())["peak_memory_gb"] for p in records
             if "peak_memory_gb" in json.loads(p.read_text())}
    assert len(peaks) >= 10, f"too few memory records: {sorted(peaks)}"
    assert all(0 < peak <= 12.0 for peak in peaks.values()), peaks


def test_cost_table_sums_runs_and_says_what_was_not_measured(tmp_path):
    run = {"budget": {"profile": "fast"}, "environment": {"cpu_model": "AMD EPYC"}, "results": {"train_seconds": 90}}
    for name in ("01_a", "01_b"):
        (tmp_path / f"{name}.json").write_text(json.dumps(run))
    (tmp_path / "01_smoke.json").write_text(json.dumps(run | {"budget": {"profile": "smoke"}}))
    (tmp_path / "01_summary.json").write_text(json.dumps({"seconds": 4000, "peak_memory_gb": 3.14, "train": True}))
    (tmp_path / "02_c.json").write_text(json.dumps(run))
    (tmp_path / "replays").mkdir()
    (tmp_path / "replays" / "01.json").write_text(json.dumps(
        {"seconds": 42.0, "peak_memory_gb": 2.7, "train": False, "cpu_model": "Intel Xeon", "measured": "2026-12-02"}))
    (tmp_path / "scratch").mkdir()
    (tmp_path / "scratch" / "01.json").write_text(json.dumps(
        {"seconds": 7200.0, "peak_memory_gb": 9.6, "train": True, "measured": "2026-12-04",
         "decode_caches_at_start": 2, "drift_free": False}))
    lines = report.cost_table(tmp_path).splitlines()
    assert lines[3] == ("| 01 | 3 min over 2 runs | 66.7 min, 3.1 GB | 120.0 min, 9.6 GB (2 decode caches present) "
                        "(drifted from the committed results), 2026-12-04 | 42 s, 2.7 GB, 2026-12-02 | "
                        "AMD EPYC; Intel Xeon |")
    assert lines[4] == "| 02 | 2 min over 1 run | not recorded | not run in one piece | not recorded | AMD EPYC |"
    with pytest.raises(report.ReportError, match="cost-table"):
        report.readme_with_block("# no markers", "\n".join(lines), report.COST_MARKERS)


def test_bench_table_quotes_the_stored_benchmark_and_says_when_there_is_none(tmp_path):
    assert "not measured" in report.bench_table(tmp_path / "absent.json")
    pipelines = [{"images_per_s": 1200.0, "fraction": 0.25}, {"images_per_s": 400.0, "fraction": 0.08}]
    record = {"model": "airnet", "precision": "autocast bfloat16", "train_flops_per_image": 7.2e8,
              "matmul_ceiling_flops": 3.5e12, "cpu_model": "Intel Xeon", "threads": 2, "date": "2026-12-03",
              "pipelines": pipelines}
    (tmp_path / "bench.json").write_text(json.dumps({"airnet/autocast bfloat16": record}))
    row = report.bench_table(tmp_path / "bench.json").splitlines()[3]
    assert row == ("| airnet, autocast bfloat16 | 0.72 G | 1,200 img/s | 400 img/s | 3.00x | 25.0 % of 3,500 GFLOP/s "
                   "| Intel Xeon, 2, 2026-12-03 |")


def test_video_outline_is_generated_from_the_current_results():
    from helpers import video

    assert video.OUTLINE.read_text(encoding="utf-8") == video.outline(), "stale: run `python -m helpers.video --write`"


def test_video_outline_covers_five_notebooks_in_five_minutes(tmp_path):
    from helpers import video

    slots = [(start, end) for start, end, *_ in video.SEGMENTS]
    assert slots[0][0] == "0:00" and slots[-1][1] == "5:00"
    assert all(a[1] == b[0] for a, b in zip(slots, slots[1:]))
    assert [s[2] for s in video.SEGMENTS if s[2]] == ["01", "02", "03", "04", "05"]
    (tmp_path / "03_summary.json").write_text(json.dumps({"metrics": {"baseline_test_acc_mean": 0.9512}}))
    text = video.outline(tmp_path)
    assert "baseline (mean of 3): 95.12 %" in text and "challenge CNN (mean of 3): not recorded" in text
    assert "01 not measured" in text and "H.264" in text and "prepare.sh" in text
