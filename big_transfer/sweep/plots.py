"""The sweep's plots (PNG, matplotlib): accuracy against examples per class, and bars per task.

Each point or bar is the median over the seed axis; the band or whisker spans min to max.
Figures are drawn on `matplotlib.figure.Figure` objects, which need no display and leave
pyplot's global state alone.
"""

import io
from collections.abc import Sequence

from matplotlib import figure, ticker

from big_transfer.data import vtab
from big_transfer.sweep import results as results_lib

FEWSHOT_PLOT = "accuracy_vs_examples_per_class.png"
VTAB_PLOT = "vtab1k.png"
DATASETS_PLOT = "accuracy_per_data_set.png"
_DPI = 120
# Each variant's line differs in marker and dash as well as colour, so pre-trained against
# scratch reads in grey print and to colour-blind readers.
_MARKERS = ("o", "s", "^", "D", "v", "P")
_DASHES = ("-", "--", "-.", ":")


def render(results: Sequence[results_lib.MemberResult], seed_axis: str,
           metric: str) -> dict[str, bytes]:
  """{file name: PNG} of the plots these results call for (none without completed members)."""
  percent = results_lib.is_percent(metric)
  ylabel = f"{metric} (%)" if percent else metric
  groups = results_lib.by_setting(results, seed_axis)
  variants = results_lib.variants(results, seed_axis)
  plotted = {}
  datasets = list(dict.fromkeys(d for d, _, _ in groups if d and not vtab.is_task(d)))
  few_shot = [d for d in datasets if any(k != results_lib.ALL_EXAMPLES
                                         for dd, k, _ in groups if dd == d)]
  if few_shot:
    plotted[FEWSHOT_PLOT] = _fewshot_figure(few_shot, groups, variants, metric, percent, ylabel,
                                            seed_axis)
  full_only = [d for d in datasets if d not in few_shot]
  if full_only:
    plotted[DATASETS_PLOT] = _bar_figure(
        [(d, None) for d in full_only], groups, variants, metric, percent, ylabel,
        f"{metric} per data set, all training examples: median over {seed_axis}, whiskers min "
        "to max")
  tasks = [(t, group) for group, names in vtab.GROUPS.items() for t in names
           if any(d == t for d, _, _ in groups)]
  if tasks:
    plotted[VTAB_PLOT] = _bar_figure(tasks, groups, variants, metric, percent, ylabel,
                                     f"VTAB-1k: median over {seed_axis} per task, whiskers min "
                                     "to max")
  return {name: png for name, png in plotted.items() if png is not None}


def _scale(percent: bool) -> float:
  return 100.0 if percent else 1.0


def _png(fig: figure.Figure) -> bytes:
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=_DPI, bbox_inches="tight")
  return buffer.getvalue()


def _variant_label(variant: str, metric: str) -> str:
  return variant or metric


def _fewshot_figure(datasets, groups, variants, metric, percent, ylabel,
                    seed_axis) -> bytes | None:
  """One panel per data set: median against K (log axis), min-max band; the run on all
  examples, if any, as a thin horizontal line of the same colour and dash."""
  columns = min(len(datasets), 2)
  rows = -(-len(datasets) // columns)
  fig = figure.Figure(figsize=(6.0 * columns, 4.2 * rows), layout="constrained")
  axes = fig.subplots(rows, columns, squeeze=False).ravel()
  fig.suptitle(f"median over {seed_axis} (points), min to max (band)", fontsize="medium")
  scale = _scale(percent)
  drew = False
  for ax, dataset in zip(axes, datasets):
    shots = sorted({int(k) for d, k, _ in groups
                    if d == dataset and k != results_lib.ALL_EXAMPLES})
    for index, variant in enumerate(variants):
      color = f"C{index}"
      style = dict(color=color, marker=_MARKERS[index % len(_MARKERS)],
                   linestyle=_DASHES[index % len(_DASHES)])
      points = [(k, results_lib.spread(groups[(dataset, str(k), variant)], metric))
                for k in shots if (dataset, str(k), variant) in groups]
      points = [(k, s) for k, s in points if s.values]
      if points:
        ks = [k for k, _ in points]
        ax.fill_between(ks, [min(s.values) * scale for _, s in points],
                        [max(s.values) * scale for _, s in points], color=color, alpha=0.2,
                        linewidth=0)
        ax.plot(ks, [s.median * scale for _, s in points], **style,
                label=_variant_label(variant, metric))
        drew = True
      full = groups.get((dataset, results_lib.ALL_EXAMPLES, variant))
      if full and results_lib.spread(full, metric).values:
        ax.axhline(results_lib.spread(full, metric).median * scale, color=color,
                   linestyle=style["linestyle"], linewidth=0.8,
                   label=f"{_variant_label(variant, metric)}, all examples")
        drew = True
    ax.set_xscale("log")
    ax.set_xticks(shots)
    ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    ax.set_xlabel("examples per class")
    ax.set_ylabel(ylabel)
    ax.set_title(dataset)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
  for ax in axes[len(datasets):]:
    ax.set_visible(False)
  return _png(fig) if drew else None


def _bar_figure(categories: Sequence[tuple[str, str | None]], groups, variants, metric, percent,
                ylabel, title) -> bytes | None:
  """Grouped bars (one per variant) for each category (data set or task), median height,
  min-max whiskers; categories with a group (VTAB) are shaded and labelled by group."""
  scale = _scale(percent)
  width = 0.8 / max(len(variants), 1)
  fig = figure.Figure(figsize=(max(6.0, 0.55 * len(categories) * max(len(variants), 1) + 2.0),
                               5.0), layout="constrained")
  ax = fig.subplots()
  drew = False
  for index, variant in enumerate(variants):
    xs, heights, low, high = [], [], [], []
    for position, (name, _) in enumerate(categories):
      members = [r for (d, _, v), rs in groups.items() if d == name and v == variant for r in rs]
      s = results_lib.spread(members, metric)
      if s.values:
        xs.append(position + (index - (len(variants) - 1) / 2) * width)
        heights.append(s.median * scale)
        low.append((s.median - min(s.values)) * scale)
        high.append((max(s.values) - s.median) * scale)
    if xs:
      ax.bar(xs, heights, width, yerr=[low, high], capsize=2, color=f"C{index}",
             hatch=("", "//", "..", "xx")[index % 4], edgecolor="white",
             label=_variant_label(variant, metric))
      drew = True
  ax.set_xticks(range(len(categories)))
  ax.set_xticklabels([name.removeprefix(vtab.PREFIX) for name, _ in categories], rotation=45,
                     ha="right")
  start = 0
  for group_index, group in enumerate(dict.fromkeys(g for _, g in categories if g)):
    size = sum(1 for _, g in categories if g == group)
    if group_index % 2 == 0:
      ax.axvspan(start - 0.5, start + size - 0.5, color="0.92", zorder=0)
    ax.text(start + (size - 1) / 2, 1.01, group, transform=ax.get_xaxis_transform(),
            ha="center", va="bottom")
    start += size
  ax.set_xlim(-0.5, len(categories) - 0.5)
  ax.set_ylabel(ylabel)
  ax.set_title(title, pad=18 if any(g for _, g in categories) else 6)
  ax.grid(True, axis="y", alpha=0.3)
  ax.legend(fontsize="small")
  return _png(fig) if drew else None
