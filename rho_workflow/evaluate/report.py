"""A self-contained HTML report of an evaluation: summary table and figures embedded as base64.

One file, no external resources: it opens offline, can be mailed, and survives moving the
output folder. On load, a two-line script records in ``body[data-figures-rendered]`` how many
of its images the browser decoded (the report test reads it from a headless browser).
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from rho_workflow.atomic import atomic_path
from rho_workflow.evaluate.point_metrics import SCALARS

__all__ = ["write_report", "summary_table_html", "comparison_table_html"]

_STYLE = """body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}
table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #bbb;padding:3px 6px;text-align:right}
th{background:#eee}td.l{text-align:left}.bad{background:#f6c6c0}.ok{background:#d7efd2}
figure{margin:1.5em 0}img{max-width:100%}figcaption{font-size:13px;color:#444}"""


def _fmt(x: Any) -> str:
    return "–" if x is None else f"{x:.3g}"


def summary_table_html(summary: Mapping[str, Any]) -> str:
    """One row per evaluated point, one column per score: ``value (floor)``, coloured by excess
    (green: within twice its noise floor; red: above)."""
    rows = summary["cases"]
    names = [n for n in SCALARS if any(n in r for r in rows)]
    head = "".join(f"<th>{html.escape(n.replace('_', ' '))}<br><small>{html.escape(_units(rows, n))}</small></th>" for n in names)
    body = []
    for r in rows:
        point = ", ".join(f"{k}={_fmt(v) if isinstance(v, float) else v}" for k, v in r["point"].items())
        cells = [f"<td class='l'>{html.escape(point)}</td>",
                 f"<td class='l'>{'training' if r['seen_in_training'] else 'held out'}</td>",
                 f"<td>{r['n_generated']} / {r['n_reference']}</td>"]
        for n in names:
            s = r.get(n)
            if s is None:
                cells.append("<td>–</td>")
                continue
            excess = s.get("excess")
            cls = "" if excess is None else (" class='ok'" if excess <= 2 else " class='bad'")
            cells.append(f"<td{cls}>{_fmt(s['value'])} ({_fmt(s['floor'])})</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return ("<div style='overflow-x:auto'><table><tr><th>parameter point</th><th>split</th><th>N gen / N sim</th>"
            f"{head}</tr>{''.join(body)}</table></div>")


def comparison_table_html(comparison: Mapping[str, Any]) -> str:
    """One row per variant (the model first), one column per compared score: the median over
    held-out points and over training points, the noise floor in the header row."""
    scores = comparison["scores"]
    names = list(scores)
    head = "".join(f"<th colspan='2'>{html.escape(n.replace('_', ' '))}<br><small>"
                   f"{html.escape('' if scores[n]['units'] in ('', '1') else scores[n]['units'])}</small></th>"
                   for n in names)
    sub = "".join("<th>held out</th><th>training</th>" for _ in names)
    floor = "".join(f"<td>({_fmt(scores[n]['floor']['held_out'])})</td>"
                    f"<td>({_fmt(scores[n]['floor']['training'])})</td>" for n in names)
    body = [f"<tr><td class='l'>noise floor</td><td class='l'>two sets of simulations</td>{floor}</tr>"]
    for variant, description in comparison["variants"].items():
        cells = "".join(f"<td>{_fmt(scores[n][variant]['held_out'])}</td>"
                        f"<td>{_fmt(scores[n][variant]['training'])}</td>" for n in names)
        body.append(f"<tr><td class='l'>{html.escape(variant)}</td>"
                    f"<td class='l'>{html.escape(description)}</td>{cells}</tr>")
    return ("<div style='overflow-x:auto'><table><tr><th rowspan='2'>variant</th>"
            f"<th rowspan='2'>what it is</th>{head}</tr><tr>{sub}</tr>{''.join(body)}</table></div>")


def _units(rows: Sequence[Mapping[str, Any]], name: str) -> str:
    for r in rows:
        if name in r:
            u = r[name].get("units", "1")
            return "" if u in ("", "1") else u
    return ""


def write_report(path: str | os.PathLike, *, title: str, intro: str,
                 tables: Mapping[str, str], figures: Sequence[tuple[str | os.PathLike, str]],
                 notes: Sequence[str] = ()) -> Path:
    """Write the report atomically.

    Parameters
    ----------
    title, intro : str
        Heading and a paragraph of plain text (escaped).
    tables : dict
        ``heading -> HTML table`` (trusted HTML from :func:`summary_table_html`).
    figures : sequence of (png_path, caption)
        PNG files, embedded as base64 ``data:`` URIs; a missing file is an error.
    notes : sequence of str
        Plain-text paragraphs after the table (how many members, how the floor was estimated).
    """
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_STYLE}</style></head><body data-figures-rendered='0'>",
             f"<h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p>"]
    for heading, table in tables.items():
        parts.append(f"<h2>{html.escape(heading)}</h2>{table}")
    parts += [f"<p>{html.escape(n)}</p>" for n in notes]
    parts.append("<h2>Figures</h2>")
    for png, caption in figures:
        png = Path(png)
        if not png.is_file():
            raise FileNotFoundError(f"report figure {png} does not exist; write the figures first")
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        parts.append(f"<figure><img alt='{html.escape(png.name)}' src='data:image/png;base64,{data}'>"
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    parts.append("<script>window.addEventListener('load',function(){var n=0;"
                 "document.querySelectorAll('img').forEach(function(i){if(i.complete&&i.naturalWidth>0)n++;});"
                 "document.body.setAttribute('data-figures-rendered',String(n));});</script>")
    parts.append("</body></html>")
    with atomic_path(path, suffix=".html") as tmp:
        Path(tmp).write_text("\n".join(parts), encoding="utf-8")
    return Path(path)
