"""One figure style for the whole suite, saved as vector PDF (report) and PNG (notebook, README).

Files carry no timestamps, so a re-run that computes the same numbers writes the same bytes.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

TEXT_WIDTH_IN = 5.5  # NeurIPS text block width in inches
PAD_IN = 0.02  # the margin savefig adds around the tight box, on each side
DRAW_WIDTH_IN = TEXT_WIDTH_IN - 2 * PAD_IN  # what a full-width figure may fill, so that it prints at 100 %
MIN_FONT_PT = 7  # the smallest text a figure may print at, at the width it is saved
# Okabe & Ito's colour-blind-safe colours, ordered so that the first four differ most; series also differ in
# marker (and, where one style means something else, in line style), so no pair relies on colour alone.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#000000", "#56B4E9", "#D55E00", "#F0E442"]
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)), (0, (8, 2)), (0, (3, 1, 1, 1)))
OUTLINE_COLORS = ("#56B4E9", "#E69F00", "#CC79A7")  # truth sky blue, prediction orange: apart for every vision


def colors(n: int) -> list:
    return [PALETTE[i % len(PALETTE)] for i in range(n)]


def set_style() -> None:
    sns.set_theme(context="paper", style="whitegrid", palette=PALETTE)
    plt.rcParams.update({
        "figure.dpi": 110, "savefig.dpi": 200, "savefig.bbox": "tight", "savefig.pad_inches": PAD_IN, "font.size": 8,
        "axes.titlesize": 9, "axes.labelsize": 8, "legend.fontsize": MIN_FONT_PT, "xtick.labelsize": MIN_FONT_PT,
        "ytick.labelsize": MIN_FONT_PT, "pdf.fonttype": 42, "svg.hashsalt": "helpers", "lines.linewidth": 1.2,
    })


def figsize(width_fraction: float = 1.0, aspect: float = 0.62) -> tuple:
    """Inches for a figure `width_fraction` of the text width wide (`aspect` = height / width)."""
    width = DRAW_WIDTH_IN * width_fraction
    return width, width * aspect


def add_note(fig, note: str) -> None:
    """A small grey line of text under the plot (e.g. the compute profile), wrapped to the figure's width so
    that it never widens the saved figure (which would shrink every other text when printed)."""
    chars = max(40, int(fig.get_figwidth() * 17))  # about 17 characters per inch at MIN_FONT_PT
    fig.text(0.0, -0.01, textwrap.fill(note, chars), fontsize=MIN_FONT_PT, color="0.35", ha="left", va="top")


def readability_problems(fig, width_in: float = TEXT_WIDTH_IN) -> list:
    """Texts that would print smaller than MIN_FONT_PT when the saved (tightly cropped) figure is shown
    `width_in` wide or at its own size, whichever is smaller; and a figure wider than the text."""
    fig.canvas.draw()
    saved = fig.get_tightbbox(fig.canvas.get_renderer()).width + 2 * PAD_IN
    scale = min(1.0, width_in / saved)
    problems = [f"the figure is {saved:.2f} in wide, wider than the {width_in} in text"] if saved > width_in + 0.05 \
        else []
    def shown(text) -> bool:  # the tick labels of an axis turned off are never drawn
        return text.get_visible() and bool(text.get_text().strip()) and (text.axes is None or text.axes.axison)

    for text in fig.findobj(lambda a: hasattr(a, "get_fontsize") and hasattr(a, "get_text")):
        if shown(text) and text.get_fontsize() * scale < MIN_FONT_PT - 0.01:
            problems.append(f"{text.get_text()[:30]!r} prints at {text.get_fontsize() * scale:.1f} pt")
    return problems


def save_figure(fig, name: str, figures_dir) -> dict:
    """`<figures_dir>/<name>.pdf` and `.png`, without creation dates; returns both paths."""
    figures_dir = Path(figures_dir)
    figures_dir.mkdir(parents=True, exist_ok=True)
    paths = {"pdf": figures_dir / f"{name}.pdf", "png": figures_dir / f"{name}.png"}
    fig.savefig(paths["pdf"], metadata={"CreationDate": None, "ModDate": None, "Producer": None,
                                        "Creator": None})
    fig.savefig(paths["png"], metadata={"Software": None})
    return paths


def _band(ax, x, runs, label, color):
    runs = np.asarray(runs, dtype=float)
    mean = runs.mean(0)
    ax.plot(x, mean, label=label, color=color)
    if len(runs) > 1:
        std = runs.std(0)
        ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)


def plot_histories(histories: dict, metric: str = "acc", metric_label: str = "accuracy", title: str = "",
                   loss_label: str = "loss (nats)", metric_ylim=None, log_loss: bool = False):
    """Loss and `metric` per epoch, train dashed and validation solid, one colour per configuration.

    `histories` maps a configuration name to one History or a list of them (repeated trials: the
    line is the mean and the band +/- one standard deviation).
    """
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=figsize(1.0, 0.4))
    series = colors(len(histories))
    for color, marker, (label, runs) in zip(series, MARKERS, histories.items()):
        runs = runs if isinstance(runs, (list, tuple)) else [runs]
        epochs = min(len(h.epochs) for h in runs)
        x = np.arange(1, epochs + 1)
        for ax, key in ((ax_loss, "loss"), (ax_metric, metric)):
            for split, style in (("train", "--"), ("val", "-")):
                column = f"{split}_{key}"
                if column in runs[0].epochs[0]:
                    _band(ax, x, [h.column(column)[:epochs] for h in runs], f"{label} ({split})", color)
                    ax.lines[-1].set(linestyle=style, marker=marker, markersize=3, markevery=max(1, epochs // 6))
    for ax, ylabel in ((ax_loss, loss_label), (ax_metric, metric_label)):
        ax.set(xlabel="epoch", ylabel=ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if metric_ylim:  # zoom on the end of training, where configurations differ
        ax_metric.set_ylim(*metric_ylim)
    if log_loss:
        ax_loss.set_yscale("log")
    handles = [Line2D([], [], color=c, marker=m, markersize=3, label=name)
               for c, m, name in zip(series, MARKERS, histories)]
    handles += [Line2D([], [], color="0.3", linestyle="--", label="train"),
                Line2D([], [], color="0.3", linestyle="-", label="validation")]
    legend = fig.legend(handles=handles, loc="center right", frameon=False)  # inside the text width
    if title:
        fig.suptitle(title)
    fig.canvas.draw()
    fig.tight_layout(rect=(0, 0, 0.99 - legend.get_window_extent().width / fig.bbox.width, 1))
    return fig


def plot_iterations(histories: dict, smooth: int = 20, title: str = ""):
    """Training loss against optimisation step (moving average over `smooth` steps)."""
    from matplotlib.ticker import FuncFormatter

    fig, ax = plt.subplots(figsize=figsize(1.0, 0.36))
    for color, style, (label, history) in zip(colors(len(histories)), LINESTYLES, histories.items()):
        history = history[0] if isinstance(history, (list, tuple)) else history
        steps = np.array([r["step"] for r in history.iterations])
        losses = np.array([r["loss"] for r in history.iterations])
        k = max(1, min(smooth, len(losses)))
        ax.plot(steps[k - 1:], np.convolve(losses, np.ones(k) / k, mode="valid"), label=label, color=color,
                linestyle=style)
    ax.set(xlabel="iteration", ylabel=f"training loss (nats, mean of {smooth})", title=title)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig


def plot_confusion_matrix(y_true, y_pred, class_names: list, normalize: bool = True, title: str = ""):
    """Rows are true classes, columns predictions; normalised rows read as per-class recall."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    k = len(class_names)
    matrix = np.zeros((k, k))
    np.add.at(matrix, (y_true, y_pred), 1)
    if normalize:
        matrix = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    side = min(DRAW_WIDTH_IN, 2.0 + 0.12 * k)
    fig, ax = plt.subplots(figsize=(side, side * 0.85))
    sns.heatmap(matrix, ax=ax, cmap="Blues", vmin=0, vmax=1 if normalize else None, square=True,
                annot=k <= 12, fmt=".2f" if normalize else ".0f", cbar=k > 12,
                xticklabels=class_names, yticklabels=class_names, annot_kws={"fontsize": MIN_FONT_PT})
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    fig.tight_layout()
    return fig


def plot_image_grid(images, titles=None, ncols: int = 8, mean=None, std=None, title: str = "",
                    outlines: dict | None = None):
    """A grid of (N, C, H, W) images (uint8, or float undone with mean/std), with optional titles.

    `outlines` maps a legend label to binary masks (N, 1, H', W'): each is drawn as a contour in its
    own colour over its image (masks of another size are stretched to the image's extent).
    """
    import torch
    from matplotlib.lines import Line2D

    images = torch.as_tensor(images).detach().cpu()
    if images.dtype == torch.uint8:
        images = images.float() / 255
    elif mean is not None:
        images = images * torch.tensor(std).view(1, -1, 1, 1) + torch.tensor(mean).view(1, -1, 1, 1)
    images = images.clamp(0, 1)
    n = len(images)
    nrows = -(-n // ncols)
    # Laid out by hand in inches: square cells, room above each for its title lines (about 0.15 in each at
    # MIN_FONT_PT), and above the grid for the figure's title and legend; nothing overlaps whatever the row count.
    lines = max((str(t).count("\n") + 1 for t in titles), default=0) if titles is not None else 0
    gap, above, header = 0.04, 0.15 * lines + 0.04 * bool(lines), 0.3 * bool(title) + 0.25 * bool(outlines)
    cell = DRAW_WIDTH_IN / (ncols + (ncols - 1) * gap)
    height = header + above + nrows * cell + (nrows - 1) * above + 0.03
    fig, axes = plt.subplots(nrows, ncols, figsize=(DRAW_WIDTH_IN, height), squeeze=False)
    fig.subplots_adjust(left=0, right=1, bottom=0.03 / height, top=1 - (header + above) / height, wspace=gap,
                        hspace=above / cell)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            image = images[i].permute(1, 2, 0).numpy()
            ax.imshow(image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray")
            for color, masks in zip(OUTLINE_COLORS, (outlines or {}).values()):
                mask = torch.as_tensor(masks[i]).detach().cpu().float().squeeze(0).numpy()
                h, w = image.shape[:2]
                ax.contour(np.linspace(0, w - 1, mask.shape[1]), np.linspace(0, h - 1, mask.shape[0]), mask,
                           levels=[0.5], colors=[color], linewidths=0.8)
            if titles is not None:
                ax.set_title(str(titles[i]), fontsize=MIN_FONT_PT)
    if title:
        fig.suptitle(title, y=1 - 0.02 / height, va="top")
    if outlines:
        handles = [Line2D([], [], color=c, label=label) for c, label in zip(OUTLINE_COLORS, outlines)]
        fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 1 - 0.3 * bool(title) / height),
                   ncol=len(handles), frameon=False)
    return fig


def plot_receptive_fields(fields: dict, theoretical: dict, mass: float = 0.95, title: str = ""):
    """Effective receptive field maps (log colour scale), each with the square holding `mass` of its
    gradient; then the mass inside a centred square against its side, with the theoretical field."""
    from matplotlib.colors import LogNorm
    from matplotlib.patches import Rectangle

    from .receptive_field import extent, mass_profile

    n = len(fields)
    fig, axes = plt.subplots(1, n + 1, figsize=figsize(1.0, 1.0 / (n + 1) + 0.12), squeeze=False,
                             layout="constrained", gridspec_kw={"width_ratios": [1] * n + [1.3]})
    axes = axes.flat
    series = colors(n)
    for ax, color, (label, field) in zip(axes, series, fields.items()):
        field = _numpy(field)
        h, w = field.shape
        image = ax.imshow(np.maximum(field, 1e-6), cmap="magma", norm=LogNorm(vmin=1e-4, vmax=1))
        side = extent(_tensor(field), mass)
        ax.add_patch(Rectangle((w // 2 - side / 2, h // 2 - side / 2), side, side, fill=False, color="cyan",
                               linestyle="--", linewidth=0.8))
        ax.set(title=f"{label}\n{100 * mass:.0f} % within {side} px", xlabel="x (pixels)")
        ax.grid(False)
        ax.title.set_fontsize(MIN_FONT_PT)
    axes[0].set_ylabel("y (pixels)")
    fig.colorbar(image, ax=list(axes)[:n], shrink=0.7, label="|gradient| / max")
    ax = axes[n]
    for color, style, (label, field) in zip(series, LINESTYLES, fields.items()):
        profile = mass_profile(_tensor(_numpy(field))).numpy()
        ax.plot(2 * np.arange(len(profile)) + 1, profile, color=color, linestyle=style, label=label)
    limit = max(np.asarray(_numpy(f)).shape[0] for f in fields.values())
    for size in sorted(set(theoretical.values())):
        if size <= limit:
            ax.axvline(size, color="0.3", linestyle=":", label=f"theoretical ({size} px)")
        else:
            ax.text(0.97, 0.05, f"theoretical: {size} px\n(> the {limit} px input)", transform=ax.transAxes,
                    ha="right", va="bottom", fontsize=MIN_FONT_PT)
    ax.set(xlabel="square side (pixels)", ylabel="gradient mass inside", ylim=(0, 1.02))
    # Above the panel, level with the maps' titles: inside, the steep curves and the narrow axes leave it no room.
    ax.legend(frameon=False, fontsize=MIN_FONT_PT, loc="lower left", bbox_to_anchor=(0, 1.0), borderaxespad=0.2)
    if title:
        fig.suptitle(title)
    return fig


def _numpy(values) -> np.ndarray:
    return values.detach().cpu().numpy() if hasattr(values, "detach") else np.asarray(values)


def _tensor(array):
    import torch

    return torch.as_tensor(np.asarray(array, dtype=np.float64))


def plot_text_activations(panels: dict, width: int = 56, max_lines: int = 8, title: str = ""):
    """Text coloured by an activation per character (red +, blue -), one panel per (label: (text, values))
    pair, as in Karpathy et al. (2015); newlines start a new row, long lines wrap at `width`."""
    from matplotlib.colors import TwoSlopeNorm

    cmap = plt.get_cmap("coolwarm")
    fig, axes = plt.subplots(len(panels), 1, figsize=(DRAW_WIDTH_IN, 0.2 * max_lines * len(panels) + 0.3),
                             squeeze=False)
    for ax, (label, (text, values)) in zip(axes.flat, panels.items()):
        values = np.asarray(_numpy(values), dtype=float)[:len(text)]
        bound = max(abs(values).max(), 1e-6)
        norm = TwoSlopeNorm(vcenter=0, vmin=-bound, vmax=bound)
        row = col = 0
        for ch, v in zip(text, values):
            if row >= max_lines:
                break
            ax.add_patch(plt.Rectangle((col, -row - 1), 1, 1, color=cmap(norm(v)), linewidth=0))
            if ch != "\n":
                ax.text(col + 0.5, -row - 0.5, ch, ha="center", va="center", family="monospace", fontsize=MIN_FONT_PT)
            col += 1
            if ch == "\n" or col >= width:
                row, col = row + 1, 0
        ax.set_xlim(0, width)
        ax.set_ylim(-max_lines, 0)
        ax.axis("off")
        ax.set_title(label, fontsize=7, loc="left")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_sweep(x, series: dict, points: list = (), xlabel: str = "", ylabel: str = "", title: str = "",
               log_x: bool = True):
    """Values against a swept setting (e.g. loss against parameters): one marked line per series, dashed for all
    but the last; `points` label the last series' points (e.g. 'h=256')."""
    many = len(series) > 2  # more than two series: the legend goes beside the plot, never over its lines
    fig, ax = plt.subplots(figsize=figsize(1.0, 0.4) if many else figsize(0.6, 0.7))
    for i, (color, marker, (label, values)) in enumerate(zip(colors(len(series)), MARKERS, series.items())):
        ax.plot(x, values, marker=marker, linestyle="-" if i == len(series) - 1 else "--", color=color, label=label)
    for text, px, py in zip(points, x, values):
        ax.annotate(text, (px, py), textcoords="offset points", xytext=(4, 4), fontsize=MIN_FONT_PT)
    ax.set(xscale="log" if log_x else "linear", xlabel=xlabel, ylabel=ylabel, title=title)
    if many:
        ax.legend(frameon=False, fontsize=MIN_FONT_PT, loc="center left", bbox_to_anchor=(1.02, 0.5))
    else:
        ax.legend(frameon=False, fontsize=MIN_FONT_PT)
    fig.tight_layout()  # the axis labels and the legend stay inside the figure, above the profile note
    return fig


def plot_bars(values: dict, errors: dict | None = None, ylabel: str = "", title: str = "", ylim=None):
    """One bar per configuration (e.g. test accuracy), with optional error bars. Up to eight bars stand upright
    in the palette's colours; more (e.g. one per class) lie down in one colour, their names readable."""
    names = list(values)
    heights, yerr = [values[n] for n in names], [errors[n] for n in names] if errors else None
    if len(names) <= len(PALETTE):
        fig, ax = plt.subplots(figsize=figsize(0.6, 0.7))
        ax.bar(names, heights, yerr=yerr, color=colors(len(names)), capsize=3)
        ax.set(ylabel=ylabel, title=title, ylim=ylim)
        ax.tick_params(axis="x", rotation=20)
    else:
        fig, ax = plt.subplots(figsize=(DRAW_WIDTH_IN * 0.8, 0.6 + 0.13 * len(names)))
        ax.barh(names[::-1], heights[::-1], xerr=yerr[::-1] if yerr else None, color=PALETTE[0], capsize=2)
        ax.set(xlabel=ylabel, title=title, xlim=ylim)
        ax.margins(y=0.005)
    fig.tight_layout()
    return fig


def plot_scatter(groups: dict, xlabel: str = "", ylabel: str = "", title: str = ""):
    """Points of several groups ({label: (x values, y values)}), one colour and marker per group."""
    fig, ax = plt.subplots(figsize=figsize(0.6, 0.7))
    for (label, (x, y)), marker, color in zip(groups.items(), MARKERS, colors(len(groups))):
        ax.scatter(x, y, label=label, marker=marker, color=color, s=18)
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.legend(frameon=False, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(groups))  # above, off the data
    ax.set_title(title, pad=16)  # above the legend
    fig.tight_layout()  # keeps the axis labels inside the figure, above the profile note
    return fig


set_style()

