"""The plotting helpers draw what they are given."""
from helpers import plots


def test_plot_sweep_draws_each_series_and_labels_the_last():
    fig = plots.plot_sweep([10, 100, 1000], {"train": [3, 2, 1], "validation": [3.5, 2.5, 2]},
                           points=["a", "b", "c"], xlabel="parameters")
    ax = fig.axes[0]
    assert [line.get_linestyle() for line in ax.lines] == ["--", "-"] and len(ax.texts) == 3
    assert ax.get_xscale() == "log"
