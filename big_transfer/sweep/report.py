"""Writes a sweep's results.csv, results.md and plots from its members' summaries."""

from etils import epath

from big_transfer import atomic
from big_transfer.sweep import plots, results

CSV_NAME = "results.csv"
MARKDOWN_NAME = "results.md"


def write(workdir) -> list[epath.Path]:
  """Rebuilds the results of the sweep in `workdir` (its sweep.json names the members);
  returns the paths written."""
  workdir = epath.Path(workdir)
  manifest, members = results.collect(workdir)
  seed_axis, metric = manifest["seed_axis"], manifest["metric"]
  charts = plots.render(members, seed_axis, metric)
  texts = {CSV_NAME: results.to_csv(members),
           MARKDOWN_NAME: results.to_markdown(members, manifest["sweep"], seed_axis, metric,
                                              sorted(charts))}
  for name, content in {**texts, **charts}.items():
    write_file = atomic.write_text if isinstance(content, str) else atomic.write_bytes
    write_file(workdir / name, content)
  return [workdir / name for name in (*texts, *charts)]
