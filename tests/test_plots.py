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


def _history(epochs=12):
    from helpers.training import History

    return History(epochs=[{"epoch": i, "train_loss": 1 / i, "val_loss": 1.2 / i, "train_acc": 0.5 + i / 50,
                            "val_acc": 0.4 + i / 50} for i in range(1, epochs + 1)],
                   iterations=[{"step": s, "loss": 2 / (s + 1)} for s in range(200)])


NOTE = ("(Profile fast, recipe cpu: real data, 45,000 training samples, 32 px images, 30 epochs, seed 2023, "
        "device Intel(R) Xeon(R) Processor, 2 threads.)")


def _figures():
    import torch

    runs = {f"configuration {k}": [_history(), _history()] for k in range(5)}
    names = [f"{c} sign name number {c}" for c in range(43)]
    yield "histories", plots.plot_histories(runs, title="t")
    yield "iterations", plots.plot_iterations({k: v[0] for k, v in runs.items()}, title="t")
    yield "sweep", plots.plot_sweep([1, 10, 100], {"a": [3, 2, 1], "b": [4, 3, 2]}, points=["x", "y", "z"])
    yield "bars", plots.plot_bars({"a": 1.0, "b": 2.0}, {"a": 0.1, "b": 0.2}, ylabel="acc")
    yield "many bars", plots.plot_bars({n: 99.0 for n in names}, ylabel="test accuracy (%)")
    yield "grid", plots.plot_image_grid(torch.zeros(6, 3, 8, 8, dtype=torch.uint8), titles=list("abcdef"), ncols=3,
                                        outlines={"truth": torch.ones(6, 1, 8, 8)})
    yield "scatter", plots.plot_scatter({"val": ([0.1, 0.2], [1.3, 1.4]), "test": ([0.3], [1.6])})


def test_every_figure_prints_its_text_at_seven_points_or_more_within_the_text_width():
    import matplotlib.pyplot as plt

    for name, fig in _figures():
        plots.add_note(fig, NOTE)
        assert plots.readability_problems(fig) == [], name
        plt.close(fig)


def test_readability_check_finds_small_text_and_wide_figures():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 2))
    ax.set_title("tiny", fontsize=5)
    problems = plots.readability_problems(fig)
    assert any("wider than" in p for p in problems) and any("'tiny'" in p for p in problems)
    plt.close(fig)


def test_series_differ_in_more_than_colour():
    import matplotlib.pyplot as plt

    fig = plots.plot_histories({"a": _history(), "b": _history()})
    markers = {line.get_marker() for line in fig.axes[0].lines}
    assert len(markers) == 2 and len(set(plots.PALETTE)) == len(plots.PALETTE)
    fig = plots.plot_iterations({"a": _history(), "b": _history()})
    assert len({line.get_linestyle() for line in fig.axes[0].lines}) == 2
    plt.close("all")


def test_a_sweep_with_many_series_keeps_its_legend_off_the_lines():
    import matplotlib.pyplot as plt

    series = {f"gradual pruning, recipe number {k}": [80 - 10 * k, 60 - 10 * k, 40] for k in range(4)}
    fig = plots.plot_sweep([30, 50, 70], series, log_x=False)
    fig.canvas.draw()
    legend, axes = fig.axes[0].get_legend().get_window_extent(), fig.axes[0].get_window_extent()
    assert legend.x0 >= axes.x1 and plots.readability_problems(fig) == []
    plt.close(fig)


def test_image_grid_titles_never_overlap_the_images_above():
    import matplotlib.pyplot as plt
    import torch

    fig = plots.plot_image_grid(torch.zeros(6, 1, 16, 16, dtype=torch.uint8), ncols=3, title="cases",
                                titles=[f"case {i}\nDice 0.9" for i in range(6)],
                                outlines={"truth": torch.ones(6, 1, 8, 8)})
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    top_row, bottom_row = fig.axes[:3], fig.axes[3:]
    lowest_image = min(ax.get_window_extent().y0 for ax in top_row)
    assert all(ax.title.get_window_extent(renderer).y0 >= ax.get_window_extent().y1 - 1 for ax in fig.axes)
    assert max(ax.title.get_window_extent(renderer).y1 for ax in bottom_row) <= lowest_image
    assert fig._suptitle.get_window_extent(renderer).y0 >= fig.legends[0].get_window_extent(renderer).y1 - 1
    plt.close(fig)
