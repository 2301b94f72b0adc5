import json

import matplotlib.pyplot as plt
import pytest
import torch
from torch import nn

from helpers import models, plots, results


def test_latex_escape_and_table():
    assert results.latex_escape("bn_adamw 50% & $x#{}") == r"bn\_adamw 50\% \& \$x\#\{\}"
    table = results.latex_table([{"name": "bn_adamw", "acc": 0.98765, "n": 3}], {"name": "model", "acc": (
        "acc (%)", lambda v: f"{100 * v:.1f}"), "n": "trials"}, "Caption with 10% & more", "tab:x", note="(fast)")
    assert r"bn\_adamw & 98.8 & 3 \\" in table
    assert r"\caption{Caption with 10\% \& more (fast)}" in table and r"\label{tab:x}" in table
    assert table.count(r"\toprule") == 1 and table.count(r"\bottomrule") == 1


def test_macro_names_and_file(tmp_path):
    assert results.macro_name("test_acc", 3) == "TestAccThree"
    path = results.write_macros({"bn_mean_acc": 0.9876, "epochs": 5, "best": "bn+adamw"}, tmp_path / "m.tex", "R")
    text = path.read_text()
    assert r"\newcommand{\RBnMeanAcc}{0.99}" in text and r"\newcommand{\REpochs}{5}" in text
    with pytest.raises(ValueError, match="map to"):
        results.write_macros({"a_b": 1, "aB": 2}, tmp_path / "n.tex")


def test_trial_statistics_pair_trials_by_seed():
    rows = results.trial_statistics({"base": [0.90, 0.91, 0.92], "new": [0.95, 0.97, 0.96]}, "base")
    base, new = rows
    assert base["mean"] == pytest.approx(0.91) and base["std"] == pytest.approx(0.01)
    from scipy.stats import ttest_rel

    assert "p" not in base and new["p"] == pytest.approx(ttest_rel([0.95, 0.97, 0.96], [0.90, 0.91, 0.92]).pvalue)
    assert new["p"] < 0.1  # a rank test of 3 vs 3 could never say this
    assert results.trial_statistics({"a": [1.0, 2.0], "b": [1.0, 2.0]}, "a")[1]["p"] == 1.0
    assert new["separated"] and new["delta"] == pytest.approx(0.05)
    overlap = results.trial_statistics({"base": [0.90, 0.93], "new": [0.92, 0.95]}, "base")[1]
    assert not overlap["separated"]
    assert results.percent(0.90125) == "90.12" and results.percent("") == ""
    with pytest.raises(ValueError, match="baseline"):
        results.trial_statistics({"a": [1.0]}, "b")


def test_write_json_is_stable_and_handles_tensors(tmp_path):
    path = results.write_json({"b": torch.tensor([1.5]), "a": float("nan")}, tmp_path / "r.json")
    assert json.loads(path.read_text()) == {"a": "nan", "b": [1.5]}


def test_weights_roundtrip_manifest_and_mismatch(tmp_path):
    model = models.TrafficSignCNN(batch_norm=True)
    entry = results.save_weights(model, "03_bn", tmp_path, notebook="03", metric={"test_acc": 0.9}, profile="smoke")
    manifest = results.read_manifest(tmp_path)["03_bn"]
    assert manifest["sha256"] == results.sha256(tmp_path / "03_bn.pt") == entry["sha256"]
    assert manifest["parameters"] == models.count_parameters(model) and manifest["notebook"] == "03"
    fresh = models.TrafficSignCNN(batch_norm=True)
    results.load_weights(fresh, "03_bn", tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
    with pytest.raises(results.WeightsMismatchError, match="holds a TrafficSignCNN.*batch_norm': True.*"
                                                           "model is a TrafficSignCNN.*batch_norm': False"):
        results.load_weights(models.TrafficSignCNN(batch_norm=False), "03_bn", tmp_path)
    with pytest.raises(FileNotFoundError, match="TRAIN=True"):
        results.load_weights(fresh, "missing", tmp_path)
    (tmp_path / "03_bn.pt").write_bytes(b"garbage")
    with pytest.raises(results.WeightsMismatchError, match="sha256"):
        results.load_weights(fresh, "03_bn", tmp_path)


def test_model_size_figures():
    model = nn.Linear(10, 3)
    assert models.count_parameters(model) == 33
    assert models.model_memory_bytes(nn.BatchNorm1d(4)) == 4 * 4 * 4 + 8  # weight, bias, 2 float32 stats + int64 count


def test_figures_have_no_timestamps(tmp_path):
    def draw(folder):
        fig, ax = plt.subplots(figsize=plots.figsize(0.5))
        ax.plot([0, 1], [1, 0])
        paths = plots.save_figure(fig, "curve", folder)
        plt.close(fig)
        return {k: p.read_bytes() for k, p in paths.items()}

    first, second = draw(tmp_path / "a"), draw(tmp_path / "b")
    assert first == second and first["pdf"].startswith(b"%PDF") and b"CreationDate" not in first["pdf"]


def test_plot_helpers_draw_what_they_say():
    from helpers.training import History

    h = History(epochs=[{"epoch": i, "train_loss": 1 / i, "val_loss": 1.2 / i, "train_acc": 0.5, "val_acc": 0.4}
                        for i in (1, 2, 3)], iterations=[{"step": i, "loss": 1.0} for i in range(1, 31)])
    fig = plots.plot_histories({"a": [h, h], "b": h})
    assert len(fig.axes[0].lines) == 4 and fig.axes[0].get_xlabel() == "epoch"
    fig = plots.plot_confusion_matrix([0, 1, 1], [0, 1, 0], ["x", "y"])
    assert fig.axes[0].get_ylabel() == "true class"
    fig = plots.plot_image_grid(torch.zeros(5, 3, 8, 8, dtype=torch.uint8), titles=list("abcde"), ncols=4)
    assert len(fig.axes) == 8
    plots.plot_iterations({"a": h})
    plt.close("all")


def test_every_table_has_one_font_size_and_is_never_scaled():
    columns = {"name": "configuration", "val": "best val. acc. (%)", "test": "test acc. (%)"}
    narrow = results.latex_table([{"name": "a", "val": 52.3, "test": 52.1}], columns, "c", "tab:x")
    columns |= {f"extra{i}": f"a long column header {i}" for i in range(6)}
    wide = results.latex_table([{"name": "a" * 40, "val": 89.84, "test": 89.4}], columns, "c", "tab:y")
    for table in (narrow, wide):
        assert "resizebox" not in table and "scalebox" not in table
        assert table.index(results.TABLE_FONT) < table.index("\\begin{tabular}")  # the same size, inside the float


def test_blank_or_and_p_value_leave_missing_cells_blank():
    minutes = results.blank_or("{:.1f}")
    assert minutes(2.345) == "2.3" and minutes("") == "" and minutes(None) == ""
    assert results.p_value(0.04567) == "0.046" and results.p_value("") == "--"


def test_sample_sd_needs_two_values():
    assert results.sample_sd([1.0, 3.0]) == pytest.approx(2 ** 0.5)
    with pytest.raises(ValueError, match="at least 2 values, got 1: repeat the run"):
        results.sample_sd([0.9])


def test_spoken_list_reads_as_prose():
    assert results.spoken_list([10, 16, 24]) == "10, 16 and 24"
    assert results.spoken_list(["flips", "shifts"]) == "flips and shifts"
    assert results.spoken_list([7]) == "7"
    with pytest.raises(ValueError, match="at least one"):
        results.spoken_list([])


def test_percent_mean_sd_uses_the_sample_deviation():
    assert results.percent_mean_sd([0.75, 0.76, 0.77]) == "76.00 ± 1.00"
    with pytest.raises(ValueError, match="at least 2 values, got 1"):
        results.percent_mean_sd([0.75])  # one run has no spread


def test_negative_numbers_get_a_minus_sign_and_hyphens_stay():
    assert results.latex_minus("-4.6 (-0.01)") == "\\ensuremath{-}4.6 (\\ensuremath{-}0.01)"
    kept = "seeds 2023-2025, lr 5e-04, re-trained, --"
    assert results.latex_minus(kept) == kept
    table = results.latex_table([{"name": "combined", "gap": -4.55}], {"name": "configuration", "gap": "gap"}, "c", "t")
    assert "combined & \\ensuremath{-}4.55 \\\\" in table


def test_target_summary_sorts_targets_into_met_within_noise_and_missed():
    text = results.target_summary({"baseline": (0.757, 0.72), "dropout": (0.7953, 0.80), "combined": (0.7806, 0.86)},
                                  0.0076, "the seed band")
    assert text == ("met: baseline (by 3.70); within noise: dropout (0.47 below); missed: combined (by 7.94); "
                    "margins in points, noise: the seed band (±0.76)")
    per_target = results.target_summary({"a": (0.9896, 0.99), "b": (0.9008, 0.90)},
                                        {"a": results.binomial_se(0.9896, 3669), "b": 0.0001}, "one standard error")
    assert per_target == ("met: b (by 0.08); within noise: a (0.04 below); margins in points, noise: one standard "
                          "error")
    assert results.binomial_se(0.5, 100) == pytest.approx(0.05)
