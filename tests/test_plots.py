"""The plotting helpers draw what they are given."""
from helpers import plots


def test_plot_sweep_draws_each_series_and_labels_the_last():
    fig = plots.plot_sweep([10, 100, 1000], {"train": [3, 2, 1], "validation": [3.5, 2.5, 2]},
                           points=["a", "b", "c"], xlabel="parameters")
    ax = fig.axes[0]
    assert [line.get_linestyle() for line in ax.lines] == ["--", "-"] and len(ax.texts) == 3
    assert ax.get_xscale() == "log"


def test_plot_scatter_draws_one_collection_per_group():
    fig = plots.plot_scatter({"val": ([0.1, 0.2], [1.3, 1.4]), "test": ([0.3], [1.6])}, xlabel="share", ylabel="loss")
    ax = fig.axes[0]
    assert [c.get_offsets().shape[0] for c in ax.collections] == [2, 1]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["val", "test"] and ax.get_xlabel() == "share"
