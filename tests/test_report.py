"""The report's sources take every number from report/generated/, and the submission bundle refuses a
stale PDF."""
import json
import zipfile
from pathlib import Path

import pytest

from helpers import report


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
    for name in ("requirements.txt", "README.md", "pyproject.toml"):
        (tmp_path / name).write_text(name)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cifar.bin").write_text("never bundled")

    with pytest.raises(report.ReportError, match="make report"):
        report.submission(out, executed, root)  # never built
    (root / "main.pdf").write_bytes(b"%PDF-1.5")
    report.stamp(root)
    report.submission(out, executed, root)
    names = zipfile.ZipFile(out).namelist()
    assert {"submission/notebooks/01_demo.ipynb", "submission/helpers/models.py", "submission/weights/manifest.json",
            "submission/report/main.pdf", "submission/requirements.txt", "submission/README.md"} <= set(names)
    assert not any("/data/" in n or n.endswith(".bin") for n in names)

    (root / "generated" / "01_x_macros.tex").write_text("\\newcommand{\\RNbZeroOneAcc}{92.0}\n")
    with pytest.raises(report.ReportError, match="stale.*01_x_macros.tex"):
        report.submission(out, executed, root)
    with pytest.raises(report.ReportError, match="no executed notebooks"):
        report.stamp(root)
        report.submission(out, tmp_path / "nowhere", root)
