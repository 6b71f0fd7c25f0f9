"""``genzoo bench report``: the leaderboard from its cells.

Writes, into the leaderboard folder:

* ``leaderboard.csv``: one line per finished cell (every field a user may sort by);
* ``leaderboard.md``: per track, one row per model (seeds pooled: mean and spread), the
  protocol in words, the rows whose difference from the best is within the seed spread
  marked as ties, peers labelled with their ratio to genzoo's best row, then the models that
  are not on the track and why, the missing and stale cells, and each row's command once;
* ``plots/``: sample quality against sampling cost (every family on one chart, per track)
  and the likelihood of each row (matplotlib, PNG);
* ``readme_excerpt.md``: the block the README shows (``genzoo bench report --readme README.md`` puts it
  between the README's markers);
* ``report/index.html`` and one page per track: sortable, filterable tables, a sample grid
  per row, the plots and each row's command. Static files only: no script or font from the
  network, so it opens from the file system.
"""
from __future__ import annotations

import csv
import html
import math
import statistics
from pathlib import Path

from .tracks import PROTOCOL, TRACKS, Track

#: the likelihood field of cell["nll"] for each track (lower is better; the column header is the track's unit)
LIK = {"binary": "nats", "grey": "bits_per_dim", "text": "bits_per_dim", "vector": "kl_nats"}


def load_cells(out: Path) -> list[dict]:
    from .harness import read_cell

    cells = []
    for p in sorted((Path(out) / "cells").glob("*/*.json")):
        if p.name.endswith(".failed.json"):
            continue
        rec = read_cell(p)
        if rec is not None:
            rec["_path"] = str(p)
            cells.append(rec)
    return cells


def _status(out: Path, rec: dict) -> str:
    from .harness import cell_status
    from .tracks import entry

    t = TRACKS.get(rec["track"])
    if t is None:
        return "orphan"
    try:
        e = entry(t, rec["model"])
    except Exception:
        return "orphan"
    return cell_status(out, t, e, int(rec["seed"]), float(rec["budget_s"]), rec.get("protocol") or PROTOCOL) \
        if not rec.get("off_protocol") else "off-protocol"


def _lik(track: str, rec: dict):
    n = rec.get("nll") or {}
    v = n.get(LIK[track])
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _fid(rec: dict):
    v = (rec.get("samples") or {}).get("fid")
    return float(v) if isinstance(v, (int, float)) else None


def _pool(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return None, None
    return statistics.fmean(vals), (max(vals) - min(vals) if len(vals) > 1 else None)


def track_rows(out: Path, track: Track, cells: list[dict], include_off: bool = False) -> tuple[list[dict], dict]:
    """One row per model of ``track`` from its current cells (seeds pooled); and the track's notes
    (stale, missing, off-protocol cells, the seed spread). ``include_off``: rank off-protocol (smoke) cells too."""
    mine = [c for c in cells if c["track"] == track.name]
    status = {c["cell"]: _status(out, c) for c in mine}
    current = [c for c in mine if status[c["cell"]] == "done" or (include_off and status[c["cell"]] == "off-protocol")]
    rows = []
    for e in track.entries:
        rs = [c for c in current if c["model"] == e.name]
        if not rs:
            continue
        lik_m, lik_sp = _pool([_lik(track.name, r) for r in rs])
        fid_m, fid_sp = _pool([_fid(r) for r in rs])
        r0 = rs[0]
        s0 = r0.get("samples") or {}
        rows.append({
            "model": e.name, "family": e.family, "peer": bool(e.peer), "seeds": sorted(int(r["seed"]) for r in rs),
            "lik": lik_m, "lik_spread": lik_sp, "lik_kind": (r0.get("nll") or {}).get("likelihood"),
            "lik_examples": (r0.get("nll") or {}).get("examples"), "lik_protocol": (r0.get("nll") or {}).get("protocol") or e.protocol,
            "fid": fid_m, "fid_spread": fid_sp, "fid_floor": s0.get("fid_floor"), "kid": s0.get("kid"),
            "precision": s0.get("precision"), "recall": s0.get("recall"), "n_samples": s0.get("n_samples"),
            "nfe": r0.get("nfe"), "s_per_1000": s0.get("seconds_per_1000_samples"),
            "sampler": _sampler(s0.get("sample_options") or {}), "parameters": r0.get("parameters"), "steps": r0.get("steps"),
            "images_per_s": r0.get("images_per_s"), "budget_s": r0.get("budget_s"), "train_precision": r0.get("precision"),
            "grid": f"{track.name}/{r0['grid']}" if r0.get("grid") else None, "command": r0.get("command"),
            "notes": "; ".join(x for x in (r0.get("nll_note"), r0.get("samples_note"), _tokenizer_note(r0)) if x),
            "modes": (r0.get("modes") or {}).get("modes_covered") if r0.get("modes") else None,
            "date": r0.get("date"), "machine": r0.get("machine_line"), "commit": r0.get("commit"),
        })
    spread = {"lik": max([r["lik_spread"] for r in rows if r["lik_spread"] is not None], default=None),
              "fid": max([r["fid_spread"] for r in rows if r["fid_spread"] is not None], default=None)}
    for key in ("lik", "fid"):
        ours = [r[key] for r in rows if r[key] is not None and not r["peer"]]
        best = min(ours) if ours else None
        for r in rows:
            v = r[key]
            r[f"{key}_tie"] = bool(best is not None and v is not None and spread[key] is not None and v != best
                                   and v - best <= spread[key] and not r["peer"])
            r[f"{key}_best"] = best is not None and v == best
            if r["peer"] and v is not None and best:
                r[f"{key}_ratio"] = v / best  # > 1: genzoo's best row is that many times better
    planned = {(e.name, s) for e in track.entries for s in range(e.seeds)}
    have = {(c["model"], int(c["seed"])) for c in current}
    notes = {
        "stale": sorted(k for k, v in status.items() if v == "stale"),
        "off_protocol": sorted(k for k, v in status.items() if v == "off-protocol"),
        "missing": sorted(f"{track.name}/{m}-s{s}" for m, s in planned - have),
        "spread": spread,
        "cpu_hours": sum((c.get("train_s") or 0) + (c.get("eval_s") or 0) for c in current) / 3600,
        "cells": len(current),
    }
    return rows, notes


def _sampler(opts: dict) -> str:
    if not opts:
        return ""
    keys = [k for k in ("sampler", "steps", "grid", "temperature", "guidance", "mean") if k in opts]
    return " ".join(f"{k}={opts[k]}" for k in keys)


def _f(v, nd=3) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "-"
        a = abs(v)
        return f"{v:.{nd}g}" if a < 1 else f"{v:.2f}" if a < 1000 else f"{v:,.0f}"
    return str(v)


def _cell_text(r: dict, key: str) -> str:
    v = _f(r[key])
    if r.get(f"{key}_spread") is not None:
        v += f" ± {r[key + '_spread'] / 2:.2g}"
    if r.get(f"{key}_best"):
        v = f"**{v}**"
    elif r.get(f"{key}_tie"):
        v += " (tie)"
    if r.get(f"{key}_ratio") is not None:
        v += f" ({r[key + '_ratio']:.2f}x genzoo's best)"
    return v


COLUMNS = [("model", "model"), ("family", "family"), ("LIK", "lik"), ("test ex.", "lik_examples"), ("FID", "fid"),
           ("floor", "fid_floor"), ("KID", "kid"), ("prec.", "precision"), ("recall", "recall"), ("n", "n_samples"),
           ("sampler", "sampler"), ("NFE", "nfe"), ("s / 1000 samples", "s_per_1000"), ("params", "parameters"),
           ("steps", "steps"), ("train img/s", "images_per_s"), ("precision", "train_precision"), ("seeds", "seeds")]


def markdown(out: Path, cells: list[dict], with_membership: bool = True, include_off: bool = False) -> str:
    lines = ["# genzoo leaderboard", "",
             "Generated by `genzoo bench report` from the cells in `cells/` (each cell: one model, one seed, trained "
             "under the budget beside it on the machine it names, evaluated by one protocol). Reproduce every cell with "
             "`genzoo bench --out benchmarks/leaderboard` (resumable; a finished cell is skipped).", "",
             "**Protocol.** Likelihood on the whole test split (text: the validation text) unless a row's note says "
             "otherwise; binary data in nats per image, grey data in bits/dim with the dequantisation offset (7 bits "
             "for [-1, 1]), vectors as test NLL minus the test points' exact -log p (an estimate of KL(data || model), "
             "0 is perfect). Sample quality: 10,000 samples against the 10,000 test images on genzoo's shipped MNIST "
             "feature net (raw coordinates for vectors), FID with its floor FID(test, train) at the same sizes, KID, "
             "precision and recall (k = 3). `± x`: half the range over seeds; `(tie)`: within the largest seed range "
             "of the track from the best row; **bold**: the best genzoo row. Peers are labelled and carry their ratio "
             "to genzoo's best row (above 1: genzoo's best is better).", ""]
    for t in TRACKS.values():
        rows, notes = track_rows(out, t, cells, include_off)
        lines += [f"## {t.title}", "", f"Data: {t.data}. Budget {_budget_words(rows, t)} per cell; "
                  f"{notes['cells']} cells, {notes['cpu_hours']:.1f} CPU-hours (training + evaluation).", ""]
        cols = [(t.unit if c == "LIK" else c, k) for c, k in COLUMNS]
        if rows:
            lines.append("| " + " | ".join(c for c, _ in cols) + " |")
            lines.append("|" + "---|" * len(cols))
            for r in sorted(rows, key=lambda r: (r["lik"] if r["lik"] is not None else math.inf, r["fid"] or math.inf)):
                vals = []
                for _, k in cols:
                    if k in ("lik", "fid"):
                        vals.append(_cell_text(r, k))
                    elif k == "model":
                        vals.append(r["model"] + (" (peer)" if r["peer"] else ""))
                    elif k == "seeds":
                        vals.append(",".join(map(str, r["seeds"])))
                    else:
                        vals.append(_f(r[k]))
                lines.append("| " + " | ".join(vals) + " |")
            lines.append("")
            noted = [r for r in rows if r["notes"] or r["lik_protocol"]]
            if noted:
                lines += ["Protocol notes:", ""]
                for r in noted:
                    bits = [x for x in (r["lik_protocol"] and f"likelihood: {r['lik_protocol']}", r["notes"]) if x]
                    lines.append(f"- {r['model']}: " + "; ".join(bits))
                lines.append("")
        else:
            lines += ["No finished cell yet.", ""]
        if notes["missing"]:
            lines += [f"Missing cells ({len(notes['missing'])}): " + ", ".join(f"`{m}`" for m in notes["missing"]), ""]
        if notes["stale"]:
            lines += ["Stale cells (made from another recipe, protocol or version; not ranked): "
                      + ", ".join(f"`{m}`" for m in notes["stale"]), ""]
        if with_membership:
            from .tracks import membership

            mem = membership(t)
            out_of = {m: why for m, why in mem.items() if not why.startswith("joins")}
            if out_of:
                lines += ["Registered models not on this track:", ""]
                lines += [f"- {m}: {why}" for m, why in out_of.items()]
                lines.append("")
        if rows:
            lines += ["Commands (one per row; machine and date):", ""]
            for r in rows:
                lines.append(f"- {r['model']}: `{r['command']}` ({r['date']}, {r['machine']}, commit {r['commit']})")
            lines.append("")
    return "\n".join(lines)


def _budget_words(rows, t: Track) -> str:
    b = sorted({r["budget_s"] for r in rows if r["budget_s"]}) or [t.budget_s]
    return " / ".join(f"{x / 60:g} min" for x in b)


def write_csv(path: Path, cells: list[dict], out: Path) -> None:
    fields = ["cell", "track", "model", "family", "seed", "peer", "status", "likelihood", "lik_value", "nll_nats",
              "bits_per_dim", "kl_nats", "nll_examples", "fid", "fid_floor", "kid", "precision", "recall", "n_samples",
              "nfe", "s_per_1000_samples", "parameters", "steps", "train_s", "budget_s", "images_per_s", "train_precision",
              "eval_s", "genzoo_version", "commit", "machine", "date", "command"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for c in cells:
            n, s = c.get("nll") or {}, c.get("samples") or {}
            w.writerow({
                "cell": c["cell"], "track": c["track"], "model": c["model"], "family": c.get("family"), "seed": c["seed"],
                "peer": c.get("peer") or "", "status": _status(out, c), "likelihood": n.get("likelihood"),
                "lik_value": _lik(c["track"], c) if c["track"] in LIK else None,
                "nll_nats": n.get("nats"), "bits_per_dim": n.get("bits_per_dim"), "kl_nats": n.get("kl_nats"),
                "nll_examples": n.get("examples"), "fid": s.get("fid"), "fid_floor": s.get("fid_floor"), "kid": s.get("kid"),
                "precision": s.get("precision"), "recall": s.get("recall"), "n_samples": s.get("n_samples"), "nfe": c.get("nfe"),
                "s_per_1000_samples": s.get("seconds_per_1000_samples"), "parameters": c.get("parameters"),
                "steps": c.get("steps"), "train_s": c.get("train_s"), "budget_s": c.get("budget_s"),
                "images_per_s": c.get("images_per_s"), "train_precision": c.get("precision"), "eval_s": c.get("eval_s"),
                "genzoo_version": c.get("genzoo_version"), "commit": c.get("commit"), "machine": c.get("machine_line"),
                "date": c.get("date"), "command": c.get("command"),
            })


def write_plots(folder: Path, out: Path, cells: list[dict], include_off: bool = False) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..viz import _save_figure

    paths = []
    colours = {"autoregressive": "C0", "vae": "C1", "flows": "C2", "gan": "C3", "diffusion": "C4", "vq": "C5"}
    for t in TRACKS.values():
        rows, _ = track_rows(out, t, cells, include_off)
        pts = [r for r in rows if r["fid"] is not None and r["s_per_1000"]]
        if pts:
            fig, ax = plt.subplots(figsize=(6.4, 4.2))
            for fam in sorted({r["family"] for r in pts}):
                rr = [r for r in pts if r["family"] == fam]
                ax.scatter([r["s_per_1000"] for r in rr], [r["fid"] for r in rr], label=fam, color=colours.get(fam, "k"),
                           marker="o")
                for r in rr:
                    ax.annotate(r["model"] + (" (peer)" if r["peer"] else ""), (r["s_per_1000"], r["fid"]), fontsize=7,
                                xytext=(3, 3), textcoords="offset points")
            paths.append(_log_plot(fig, ax, min((r["fid_floor"] for r in pts if r["fid_floor"]), default=None), 10,
                                   "seconds per 1,000 samples (this machine)", "FID (10,000 vs 10,000 test)",
                                   f"{t.title}: sample quality against sampling cost", folder / f"{t.name}_quality_vs_cost.png"))
        sweeps = [c for c in cells if c["track"] == t.name and c.get("nfe_sweep") and int(c["seed"]) == 0
                  and any(r["model"] == c["model"] for r in rows)]
        if sweeps:
            fig, ax = plt.subplots(figsize=(6.4, 4.2))
            for c in sweeps:
                pts = sorted(c["nfe_sweep"], key=lambda q: q["nfe"])
                ax.plot([q["nfe"] for q in pts], [q["fid"] for q in pts], marker="o", label=c["model"])
            paths.append(_log_plot(fig, ax, min(q["fid_floor"] for c in sweeps for q in c["nfe_sweep"]), 2,
                                   "network evaluations per sample (NFE)", "FID",
                                   f"{t.title}: FID against NFE (Euler / DDIM steps; 1000: the recipe's chain)",
                                   folder / f"{t.name}_fid_vs_nfe.png"))
        lk = [r for r in rows if r["lik"] is not None]
        if lk:
            lk.sort(key=lambda r: r["lik"])
            fig, ax = plt.subplots(figsize=(6.4, 0.35 * len(lk) + 1.2))
            ax.barh([r["model"] + (" (peer)" if r["peer"] else "") for r in lk], [r["lik"] for r in lk],
                    xerr=[(r["lik_spread"] or 0) / 2 for r in lk], color=[colours.get(r["family"], "k") for r in lk])
            ax.invert_yaxis()
            ax.set_xlabel(t.unit + " (lower is better)")
            ax.set_title(f"{t.title}: likelihood after the budget", fontsize=9)
            paths.append(_save_figure(fig, folder / f"{t.name}_likelihood.png"))
    return paths


def _log_plot(fig, ax, floor, xbase, xlabel, ylabel, title, path) -> Path:
    """Log-log axes, the FID floor as a dashed line, labels, legend; saved by genzoo.viz's one figure writer."""
    if floor:
        ax.axhline(floor, ls="--", c="grey", lw=0.8, label="floor FID(test, train)")
    ax.set_xscale("log", base=xbase)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    from ..viz import _save_figure

    return _save_figure(fig, path)


_JS = """
function sortBy(th){const t=th.closest('table'),b=t.tBodies[0],i=[...th.parentNode.children].indexOf(th);
const asc=th.dataset.dir!=='asc';[...th.parentNode.children].forEach(h=>delete h.dataset.dir);th.dataset.dir=asc?'asc':'desc';
const key=r=>{const c=r.children[i];const v=c.dataset.v;return v===undefined||v===''?null:(isNaN(+v)?v:+v)};
const rows=[...b.rows];rows.sort((a,c)=>{const x=key(a),y=key(c);if(x===null)return 1;if(y===null)return -1;
return (x<y?-1:x>y?1:0)*(asc?1:-1)});rows.forEach(r=>b.appendChild(r));}
function filt(inp){const q=inp.value.toLowerCase();const t=document.getElementById(inp.dataset.table);
[...t.tBodies[0].rows].forEach(r=>{r.style.display=r.textContent.toLowerCase().includes(q)?'':'none'});}
document.addEventListener('DOMContentLoaded',()=>{document.querySelectorAll('th').forEach(th=>th.addEventListener('click',()=>sortBy(th)));
document.querySelectorAll('input.filter').forEach(i=>i.addEventListener('input',()=>filt(i)));});
"""
_CSS = """body{font-family:sans-serif;margin:1.5em;max-width:1400px}table{border-collapse:collapse;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:right}th{background:#eee;cursor:pointer}td.l,th.l{text-align:left}
th[data-dir=asc]::after{content:' \\25B2'}th[data-dir=desc]::after{content:' \\25BC'}img.grid{width:84px;image-rendering:pixelated}
code{font-size:11px}nav a{margin-right:1em}.best{font-weight:bold}.peer{color:#555;font-style:italic}"""


def _page(title: str, body: str) -> str:
    nav = " ".join(f'<a href="{t.name}.html">{html.escape(t.title)}</a>' for t in TRACKS.values())
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style><script>{_JS}</script></head><body><nav><a href='index.html'>genzoo leaderboard</a> {nav}"
            f"</nav><h1>{html.escape(title)}</h1>{body}</body></html>")


def write_html(folder: Path, out: Path, cells: list[dict], plots: list[Path], include_off: bool = False) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    summary = []
    for t in TRACKS.values():
        rows, notes = track_rows(out, t, cells, include_off)
        head = "".join(f"<th class='{'l' if k in ('model', 'family', 'sampler') else ''}'>{html.escape(t.unit if c == 'LIK' else c)}</th>"
                       for c, k in COLUMNS) + "<th class='l'>samples</th><th class='l'>command</th>"
        body = []
        for r in rows:
            tds = []
            for _, k in COLUMNS:
                v = r[k]
                if k in ("lik", "fid"):
                    txt = _cell_text(r, k).replace("**", "")
                    cls = "best" if r.get(f"{k}_best") else ""
                    tds.append(f"<td class='{cls}' data-v='{'' if v is None else v}'>{html.escape(txt)}</td>")
                elif k == "model":
                    tds.append(f"<td class='l{' peer' if r['peer'] else ''}' data-v='{html.escape(r['model'])}'>"
                               f"{html.escape(r['model'] + (' (peer)' if r['peer'] else ''))}</td>")
                elif k == "seeds":
                    tds.append(f"<td data-v='{len(v)}'>{','.join(map(str, v))}</td>")
                else:
                    dv = "" if v is None else html.escape(str(v))
                    tds.append(f"<td class='{'l' if k in ('family', 'sampler') else ''}' data-v='{dv}'>{html.escape(_f(v))}</td>")
            img = f"<img class='grid' src='../cells/{html.escape(r['grid'])}' alt='samples of {html.escape(r['model'])}'>" \
                if r["grid"] else "-"
            tds.append(f"<td class='l'>{img}</td><td class='l'><code>{html.escape(r['command'] or '')}</code></td>")
            body.append("<tr>" + "".join(tds) + "</tr>")
        table = (f"<p><input class='filter' data-table='t-{t.name}' placeholder='filter rows'> Click a column header to sort the rows.</p>"
                 f"<table id='t-{t.name}'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>") \
            if rows else "<p>No finished cell yet.</p>"
        pics = "".join(f"<p><img src='../plots/{p.name}' alt='{html.escape(p.stem)}'></p>" for p in plots
                       if p.name.startswith(t.name + "_"))
        extra = ""
        if notes["missing"]:
            extra += f"<p>Missing cells ({len(notes['missing'])}): {html.escape(', '.join(notes['missing']))}</p>"
        if notes["stale"]:
            extra += f"<p>Stale cells (not ranked): {html.escape(', '.join(notes['stale']))}</p>"
        desc = (f"<p>Data: {html.escape(t.data)}. Budget {_budget_words(rows, t)} per cell; {notes['cells']} cells, "
                f"{notes['cpu_hours']:.1f} CPU-hours.</p>")
        p = folder / f"{t.name}.html"
        p.write_text(_page(t.title, desc + table + pics + extra))
        paths.append(p)
        summary.append(f"<li><a href='{t.name}.html'>{html.escape(t.title)}</a>: {len(rows)} rows, {notes['cells']} cells, "
                       f"{len(notes['missing'])} missing</li>")
    idx = folder / "index.html"
    idx.write_text(_page("genzoo leaderboard", "<p>Every family on the same data, one protocol, one budget. "
                         "Generated by <code>genzoo bench report</code>; the tables and the protocol are in "
                         "<a href='../leaderboard.md'>leaderboard.md</a>, every cell in <a href='../leaderboard.csv'>"
                         "leaderboard.csv</a>.</p><ul>" + "".join(summary) + "</ul>"))
    return [idx, *paths]


EXCERPT_START = "<!-- leaderboard-excerpt:start (generated by genzoo bench report --readme README.md; do not edit) -->"
EXCERPT_END = "<!-- leaderboard-excerpt:end -->"


def readme_excerpt(out: Path, cells: list[dict]) -> str:
    """The README's leaderboard block: per track with finished cells, its rows (best first) with the
    likelihood, FID and its floor, NFE, parameters and budget; generated, so it cannot drift from the cells."""
    lines = [EXCERPT_START, ""]
    any_rows = False
    for t in TRACKS.values():
        rows, notes = track_rows(out, t, cells)
        if not rows:
            continue
        any_rows = True
        total = sum(e.seeds for e in t.entries)
        lines += [f"**{t.title}** ({_budget_words(rows, t)} of training per cell on {rows[0]['machine'] or 'this machine'}; "
                  f"{notes['cells']} of {total} cells finished):", "",
                  f"| model | {t.unit} | FID (floor) | sampler, NFE | params | steps |", "|---|---|---|---|---|---|"]
        for r in sorted(rows, key=lambda r: (r["lik"] if r["lik"] is not None else math.inf, r["fid"] or math.inf)):
            fid = "-" if r["fid"] is None else f"{_cell_text(r, 'fid')} ({_f(r['fid_floor'])})"
            samp = ", ".join(x for x in (r["sampler"], f"{r['nfe']} NFE" if r["nfe"] else "") if x) or "-"
            lines.append(f"| {r['model']}{' (peer)' if r['peer'] else ''} | {_cell_text(r, 'lik') if r['lik'] is not None else '-'} "
                         f"| {fid} | {samp} | {_f(r['parameters'])} | {_f(r['steps'])} |")
        lines.append("")
        for r in rows:
            bits = [x for x in (r["lik_protocol"] and f"likelihood by {r['lik_protocol']}", r["notes"]) if x]
            if bits:
                lines.append(f"- {r['model']}: " + "; ".join(bits))
        lines.append("")
    if not any_rows:
        lines += ["No leaderboard cell has finished yet.", ""]
    lines += ["Every cell, its command, date and machine: [benchmarks/leaderboard/leaderboard.md]"
              "(benchmarks/leaderboard/leaderboard.md).", "", EXCERPT_END]
    return "\n".join(lines)


def update_readme(readme: Path, excerpt: str) -> bool:
    """Replace the block between the excerpt markers of ``readme``; True if it changed. ConfigError without markers."""
    from ..errors import ConfigError

    text = Path(readme).read_text()
    start, end = text.find(EXCERPT_START.split(" (")[0]), text.find(EXCERPT_END)
    if start < 0 or end < start:
        raise ConfigError(f"{readme} has no leaderboard excerpt block; add the two lines {EXCERPT_START!r} and "
                          f"{EXCERPT_END!r} where it should go")
    new = text[:start] + excerpt + text[end + len(EXCERPT_END):]
    if new != text:
        Path(readme).write_text(new)
    return new != text


def write_report(out: Path, *, with_membership: bool = True, include_off: bool = False) -> list[Path]:
    """Everything the module docstring lists; returns the paths written. ``include_off``: rank the
    off-protocol cells of a ``genzoo bench --smoke`` run too (the pages then say so at the top)."""
    out = Path(out)
    cells = load_cells(out)
    md = markdown(out, cells, with_membership, include_off)
    if include_off:
        md = md.replace("# genzoo leaderboard\n", "# genzoo leaderboard\n\n**Off-protocol cells included (a --smoke run): "
                        "these figures check the harness, they measure nothing.**\n", 1)
    (out / "leaderboard.md").write_text(md + "\n")
    write_csv(out / "leaderboard.csv", cells, out)
    if not include_off:
        (out / "readme_excerpt.md").write_text(readme_excerpt(out, cells) + "\n")
    plots = write_plots(out / "plots", out, cells, include_off)
    pages = write_html(out / "report", out, cells, plots, include_off)
    extra = [] if include_off else [out / "readme_excerpt.md"]
    return [out / "leaderboard.md", out / "leaderboard.csv", *extra, *plots, *pages]


__all__ = ["write_report", "load_cells", "track_rows", "markdown", "readme_excerpt", "update_readme"]


def _tokenizer_note(rec: dict) -> str | None:
    """A two-stage cell's tokenizer in words: what it is, its steps, and its reconstructions."""
    t = rec.get("tokenizer")
    if not t:
        return None
    r = t.get("recon") or {}
    bits = [f"MSE {r['mse']:.4f}" if "mse" in r else None, f"FID {r['fid']:.2f}" if "fid" in r else None,
            f"codebook usage {r['usage']:.2f}" if "usage" in r else None]
    return (f"tokenizer {t.get('model')} ({t.get('steps')} steps in {t.get('train_s') or 0:.0f} s of the budget), reconstructions of "
            f"{r.get('n', '?')} test images: " + ", ".join(b for b in bits if b))

