"""Display names: run ids become the labels tables and figures show."""
import matplotlib.pyplot as plt

from helpers import names, plots


def test_labels_name_runs_and_their_seeds_and_leave_the_rest():
    assert names.label("03", "bn_adamw") == "BN + AdamW"
    assert names.label("05", "lstm2_trial2") == "LSTM, 2 layers (seed 2025)"
    assert names.label("03", "bn_adamw_trial1") == "BN + AdamW (seed 2024)"
    assert names.label("02", "head + whole") == "head + whole" and names.label("05", 3) == 3
    assert names.label("04", "baseline") != names.label("03", "baseline")  # ids are per notebook


def test_a_figure_shows_display_names_in_legends_and_ticks():
    fig = plots.plot_bars({"baseline": 96.5, "bn_adamw": 96.7}, ylabel="acc")
    fig.axes[0].legend(fig.axes[0].patches[:1], ["bn"])
    names.relabel_figure(fig, "03")
    fig.canvas.draw()
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["Adam (baseline)", "BN + AdamW"]
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["BN + Adam"]
    plt.close(fig)
