"""One self-contained HTML page per sweep: the tables, the plots and the responses behind them.

A rate and its p-value say *that* a perturbation changed the model's behaviour; a reviewer also
wants to see *what* changed before trusting the count — whether the new "harmful" answers are real
compliance or a judge misreading a lecture, and what the incoherent ones look like. The page puts
beside each perturbed condition the prompts whose verdict flipped against the clean run (with both
responses), examples of degenerate output, how far the judges of the sweep agree with each other,
and every condition's full specification. It is one file (plots embedded as PNG) with no script,
so it can be mailed or attached to a paper's supplement; model output is HTML-escaped, never
interpreted. The page carries no timestamp: the same store gives the same bytes.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

from safestress.judges.audit import JudgeAudit
from safestress.report.contrasts import ContrastRow
from safestress.report.summary import RateRow, TrendRow, metric_text
from safestress.report.tables import (
    AUDIT_COLUMNS_FULL,
    CONTRAST_COLUMNS,
    audit_cells,
    audit_summary,
    condition_name,
    contrast_cells,
    contrast_notes,
    fmt_kappa,
    fmt_p,
    rate_cells,
    rate_columns,
    rate_notes,
)

MAX_CHARS = 1200  # a response longer than this is cut (the full text is in `safestress export`)

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}h3{margin-top:1.5em}
table{border-collapse:collapse;margin:.8em 0;font-size:13px}th,td{border:1px solid #ddd;padding:.25em .5em}
th{background:#f3f3f3;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}
pre{white-space:pre-wrap;word-break:break-word;background:#f8f8f8;border:1px solid #e5e5e5;padding:.5em;
margin:.2em 0;max-height:24em;overflow:auto;font-size:12.5px}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:.8em}.muted{color:#666}.prompt{font-weight:600}
details{margin:.4em 0}summary{cursor:pointer}img{max-width:100%;border:1px solid #eee}
.wide{max-width:100%;overflow-x:auto}
.note{color:#555;font-size:.9em;margin:.3em 0}
"""


@dataclass
class Example:
    """One prompt as the clean run and a perturbed condition answered it."""

    item_id: str
    seed: int
    prompt: str
    response: str
    label: str
    score: float | None
    clean_response: str | None = None
    clean_label: str | None = None
    clean_score: float | None = None


@dataclass
class ConditionChanges:
    """The prompts of one perturbed condition whose verdict differs from the clean run's."""

    model: str
    dataset: str
    condition: str
    became_positive: int  # prompts never flagged in the clean run, flagged under the condition
    became_negative: int  # prompts flagged in every clean run, not flagged under the condition
    incoherent: int  # responses labelled incoherent under the condition
    examples_positive: list[Example] = field(default_factory=list)
    examples_negative: list[Example] = field(default_factory=list)
    examples_incoherent: list[Example] = field(default_factory=list)


def _value(x: Any) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _example(row: Any, clean_rows: Any) -> Example:
    ex = Example(
        str(row.item_id),
        int(row.seed),
        str(row.prompt),
        str(row.response or ""),
        str(row.label),
        _value(row.score),
    )
    mine = clean_rows[clean_rows["item_id"] == row.item_id]
    if len(mine):
        same_seed = mine[mine["seed"] == row.seed]
        c = (same_seed if len(same_seed) else mine).iloc[0]
        ex.clean_response, ex.clean_label, ex.clean_score = str(c.response or ""), str(c.label), _value(c.score)
    return ex


def changed_verdicts(frame: Any, judge: str, limit: int = 3) -> list[ConditionChanges]:
    """Per perturbed condition of ``judge``: how many prompts flipped each way against the clean run
    of the same model and dataset, with up to ``limit`` examples of each and of incoherent output.

    A prompt *became flagged* when no clean response to it was flagged (``harmful`` false in every
    clean seed) and some response under the condition is; *became unflagged* is the reverse. Items a
    judge did not score count for neither. Examples come in the store's order, one per prompt (the
    first seed that shows the change); ``incoherent`` counts responses, not prompts.
    """
    df = frame[frame["judge"] == judge]
    out: list[ConditionChanges] = []
    if df.empty or df["harmful"].isna().all():
        return out
    for (model, dataset), part in df.groupby(["model", "dataset"], sort=True):
        clean = part[part["perturbation"] == "none"]
        if clean.empty:
            continue
        clean_mean = clean.dropna(subset=["harmful"]).groupby("item_id")["harmful"].mean()
        never = set(clean_mean.index[clean_mean == 0])
        always = set(clean_mean.index[clean_mean == 1])
        perturbed = part[part["perturbation"] != "none"]
        order = perturbed.drop_duplicates("config_hash").sort_values(["perturbation", "sites", "strength", "condition"])
        for h in order["config_hash"]:  # as the rate table orders them
            cpart = perturbed[perturbed["config_hash"] == h]
            scored = cpart.dropna(subset=["harmful"])
            pos = scored[(scored["harmful"] == 1) & scored["item_id"].isin(never)].drop_duplicates("item_id")
            neg = scored[(scored["harmful"] == 0) & scored["item_id"].isin(always)].drop_duplicates("item_id")
            incoherent = cpart[cpart["label"] == "incoherent"]
            out.append(
                ConditionChanges(
                    str(model),
                    str(dataset),
                    str(cpart["condition"].iloc[0]),
                    len(pos),
                    len(neg),
                    len(incoherent),
                    [_example(r, clean) for r in pos.head(limit).itertuples()],
                    [_example(r, clean) for r in neg.head(limit).itertuples()],
                    [_example(r, clean) for r in incoherent.drop_duplicates("item_id").head(limit).itertuples()],
                )
            )
    return out


@dataclass
class Disagreement:
    """One response two judges read differently."""

    model: str
    condition: str
    prompt: str
    response: str
    label_a: str
    label_b: str


@dataclass
class JudgePair:
    a: str
    b: str
    n: int  # responses both judges scored
    agreement: float
    kappa: float
    examples: list[Disagreement] = field(default_factory=list)  # the first disagreements, in store order
    kappa_ci: tuple[float, float] = (float("nan"), float("nan"))  # 95%, cluster bootstrap over prompts


def judge_agreement(frame: Any, limit: int = 3) -> list[JudgePair]:
    """Cohen's κ between every two judges of the store on the responses both scored (their
    ``harmful`` flags), with its 95% interval and up to ``limit`` responses they disagree on: a
    curve that only one judge shows is a judge effect, not a model effect, and the examples say
    which judge misreads. The interval resamples prompts, not responses: one prompt's responses
    under many conditions and seeds are judged alike or misread alike."""
    from safestress.judges.agreement import cohen_kappa
    from safestress.stats import kappa_cluster_bootstrap_ci

    df = frame.dropna(subset=["judge", "harmful"])
    if df.empty:
        return []
    wide = df.pivot_table(index="key", columns="judge", values="harmful", aggfunc="first")
    wide = wide.reindex(df["key"].unique())  # store order, not the pivot's sorted keys
    first = df.drop_duplicates("key").set_index("key")
    labels = df.set_index(["key", "judge"])["label"]
    pairs = []
    for a, b in combinations(sorted(wide.columns), 2):
        both = wide[[a, b]].dropna()
        if both.empty:
            continue
        x, y = (both[a] > 0.5).tolist(), (both[b] > 0.5).tolist()
        agree = sum(p == q for p, q in zip(x, y)) / len(x)
        prompts = first.loc[both.index, "prompt"].tolist()
        ci = kappa_cluster_bootstrap_ci(x, y, prompts)
        pair = JudgePair(str(a), str(b), len(x), agree, cohen_kappa(x, y), kappa_ci=ci)
        for key in both.index[[p != q for p, q in zip(x, y)]][:limit]:
            row = first.loc[key]
            pair.examples.append(
                Disagreement(
                    str(row["model"]),
                    str(row["condition"]) or "clean",
                    str(row["prompt"]),
                    str(row["response"] or ""),
                    str(labels.loc[(key, a)]),
                    str(labels.loc[(key, b)]),
                )
            )
        pairs.append(pair)
    return pairs


# -- rendering -----------------------------------------------------------------------------------


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _cut(text: str) -> str:
    return text if len(text) <= MAX_CHARS else text[:MAX_CHARS] + f" … [{len(text) - MAX_CHARS} more characters]"


def _interval(ci: tuple[float, float]) -> str:
    return "—" if any(math.isnan(v) for v in ci) else f"{ci[0]:.2f} – {ci[1]:.2f}"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    cells = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = []
    for row in rows:
        tds = "".join(f'<td class="n">{_e(c)}</td>' if i in numeric else f"<td>{_e(c)}</td>" for i, c in enumerate(row))
        body.append(f"<tr>{tds}</tr>")
    # a wide table scrolls inside its own box instead of pushing the page past the window
    return f'<div class="wide"><table><thead><tr>{cells}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _rate_table(rates: list[RateRow]) -> str:
    with_ppl = any(not math.isnan(r.ppl) for r in rates)
    head = ["model", "dataset", *rate_columns(rates), "test"]
    rows = [[r.model, r.dataset, *rate_cells(r, with_ppl), r.test or "—"] for r in rates]
    text = {"model", "dataset", "condition", "verdict", "test"}
    notes = "".join(f'<p class="note">{_e(line)}</p>' for line in rate_notes(rates))
    return _table(head, rows, numeric=[i for i, h in enumerate(head) if h not in text]) + notes


def _trend_table(trends: list[TrendRow]) -> str:
    rows = [
        [
            t.model,
            t.dataset,
            f"{t.perturbation} @ {t.sites}",
            ", ".join(f"{x:g}" for x in t.levels),
            f"{t.statistic:+.3f}",
            fmt_p(t.p),
            t.test,
        ]
        for t in trends
    ]
    return _table(["model", "dataset", "perturbation @ sites", "levels", "statistic", "p", "test"], rows, (4, 5))


def _contrast_table(rows: list[ContrastRow]) -> str:
    columns = list(CONTRAST_COLUMNS)
    columns[columns.index("baseline %")] = f"{rows[0].baseline} %"
    body = [[r.model, r.dataset, *contrast_cells(r), r.test] for r in rows]
    head = ["model", "dataset", *columns, "test"]
    text = {"model", "dataset", "condition", "verdict", "verdict (effect)", "test"}
    notes = "".join(f'<p class="note">{_e(line)}</p>' for line in contrast_notes(rows))
    return _table(head, body, numeric=[i for i, h in enumerate(head) if h not in text]) + notes


_CONTRASTS = (
    "<p class=muted>Each model against {baseline} on the same prompts under the same condition. "
    "<i>Δ pts</i>: difference in rate (exact McNemar or sign-flip test); <i>Δ effect pts</i>: the "
    "condition's effect on the model (perturbed − clean) minus its effect on {baseline}, per prompt "
    "(sign-flip test) — zero means the model is no more robust to the perturbation; its <i>n</i> counts the "
    "prompts scored in all four runs. Rates count scored responses only, so at strong perturbations, where most "
    "output is incoherent, both <i>n</i> shrink. Holm-corrected per column.</p>"
)


def _audit_html(audit: JudgeAudit) -> str:
    """A judge's audit by a person's labels (``safestress judge audit``) as the page shows it."""
    rows = [[r.model, r.dataset, condition_name(r), *audit_cells(r, full=True)] for r in audit.rows]
    head = ["model", "dataset", "condition", *(header for _, header in AUDIT_COLUMNS_FULL)]
    note = (
        f"<p class=muted>{audit.n} responses labelled by a person, a blind random sample of each condition "
        f"(safestress judge sample). Judge against the labels: {_e(audit_summary(audit))}. Intervals 95%. "
        "The share is of all responses, incoherent ones counting as not harmful; <i>corrected</i> combines the "
        "labels with the judge's verdicts on the rest (prediction-powered inference), valid whatever the judge's "
        "errors; <i>λ</i> is the weight it gives the judge. See docs/judges.md.</p>"
    )
    return note + _table(head, rows, numeric=tuple(range(3, 3 + len(AUDIT_COLUMNS_FULL))))


def _score(x: float | None) -> str:
    return "" if x is None else f" {x:.2f}"


def _example_html(ex: Example) -> str:
    perturbed = f"<div><div class=muted>perturbed (seed {ex.seed}): <b>{_e(ex.label)}</b>{_score(ex.score)}</div>"
    perturbed += f"<pre>{_e(_cut(ex.response))}</pre></div>"
    if ex.clean_response is None:
        clean = "<div><div class=muted>clean: not generated</div></div>"
    else:
        clean = f"<div><div class=muted>clean: <b>{_e(ex.clean_label)}</b>{_score(ex.clean_score)}</div>"
        clean += f"<pre>{_e(_cut(ex.clean_response))}</pre></div>"
    prompt = f"<span class=prompt>{_e(_cut(ex.prompt))}</span> <span class=muted>(item {_e(ex.item_id)})</span>"
    return f"<details><summary>{prompt}</summary><div class=pair>{clean}{perturbed}</div></details>"


def _disagreement_html(d: Disagreement, a: str, b: str) -> str:
    head = f"<span class=prompt>{_e(_cut(d.prompt))}</span> <span class=muted>({_e(d.model)}, {_e(d.condition)})</span>"
    verdicts = f"<div class=muted>{_e(a)}: <b>{_e(d.label_a)}</b> · {_e(b)}: <b>{_e(d.label_b)}</b></div>"
    return f"<details><summary>{head}</summary>{verdicts}<pre>{_e(_cut(d.response))}</pre></details>"


def _changes_html(changes: list[ConditionChanges], judge: str) -> str:
    if not changes:
        return ""
    parts = [
        f"<h3>What changed ({_e(judge)})</h3>",
        "<p class=muted>Per perturbed condition, the prompts whose verdict flipped against the clean run of the same "
        "model and prompts: <i>became flagged</i> — not flagged in any clean seed, flagged under the condition; "
        "<i>became unflagged</i> — the reverse. Read a few before trusting a rate: a judge that misreads a lecture or "
        "a degenerate answer shows it here. Click a prompt for both responses.</p>",
    ]
    rows = [
        [c.model, c.dataset, c.condition, str(c.became_positive), str(c.became_negative), str(c.incoherent)]
        for c in changes
    ]
    parts.append(
        _table(["model", "dataset", "condition", "became flagged", "became unflagged", "incoherent"], rows, (3, 4, 5))
    )
    for c in changes:
        if not (c.examples_positive or c.examples_negative or c.examples_incoherent):
            continue
        parts.append(f"<h4>{_e(c.model)} / {_e(c.dataset)} — {_e(c.condition)}</h4>")
        for title, examples, total in (
            ("became flagged", c.examples_positive, c.became_positive),
            ("became unflagged", c.examples_negative, c.became_negative),
            ("incoherent", c.examples_incoherent, c.incoherent),
        ):
            if examples:
                parts.append(f"<p><b>{title}</b> <span class=muted>({len(examples)} of {total})</span></p>")
                parts.extend(_example_html(ex) for ex in examples)
    return "\n".join(parts)


def _plots_html(rates: list[RateRow]) -> str:
    from safestress.report.plots import png_bytes, rate_figures

    imgs = []
    for stem, fig in rate_figures(rates):
        data = base64.b64encode(png_bytes(fig)).decode("ascii")
        imgs.append(f'<p><img alt="{_e(stem)}" src="data:image/png;base64,{data}"></p>')
    return "\n".join(imgs)


_READING = (
    "<p class=muted>How to read the tables: the rate is the share of <i>scored</i> responses the judge flags "
    "(for a refusal judge on benign prompts, the share answered); incoherent and unscored responses are not "
    "in it and are shown beside it. The 95% CI is Wilson's for one seed and a bootstrap over prompts for "
    "several. <i>p vs clean</i> compares each condition with the clean run on the same prompts (exact McNemar "
    "for one seed, a sign-flip test of per-prompt means for several), Holm-corrected across the table; the "
    "trend test asks whether the rate changes monotonically with strength. Details: docs/statistics.md.</p>"
)


def render(
    frame: Any,
    summaries: dict[str, tuple[list[RateRow], list[TrendRow]]],
    specs: dict[str, dict[str, Any]],
    title: str = "safestress report",
    examples: int = 3,
    plots: bool = True,
    contrasts: dict[str, list[ContrastRow]] | None = None,
    audits: dict[str, JudgeAudit] | None = None,
) -> str:
    """The page as a string. ``summaries`` maps each judge key to its :func:`summarize` result,
    in the order the sections should appear; ``specs`` maps configuration hashes to their stored
    specifications (``Store.configs()``); ``contrasts`` the :func:`model_contrasts` of each judge
    for a sweep of several models; ``audits`` each audited judge's :func:`audit_judge` result."""
    from safestress import __version__

    models = sorted(frame["model"].dropna().unique())
    datasets = sorted(frame["dataset"].dropna().unique())
    n_generations = frame["key"].nunique()
    body = [
        f"<h1>{_e(title)}</h1>",
        f"<p class=muted>{n_generations} generations · {len(specs)} conditions · models: {_e(', '.join(models))} · "
        f"datasets: {_e(', '.join(datasets))} · judges: {_e(', '.join(summaries))} · safestress {_e(__version__)}</p>",
        _READING,
    ]
    for judge, (rates, trends) in summaries.items():
        what = metric_text({r.metric for r in rates} or {"harmful"})[0]
        body.append(f"<h2>{_e(what)} — judge {_e(judge)}</h2>")
        body.append(_rate_table(rates))
        if trends:
            body.append("<h3>Trend across strength</h3>" + _trend_table(trends))
        versus = (contrasts or {}).get(judge)
        if versus:
            body.append(f"<h3>Models against {_e(versus[0].baseline)}</h3>")
            body.append(_CONTRASTS.format(baseline=_e(versus[0].baseline)) + _contrast_table(versus))
        audit = (audits or {}).get(judge)
        if audit is not None:
            body.append(f"<h3>Audited by {audit.n} labels</h3>" + _audit_html(audit))
        if plots:
            body.append(_plots_html(rates))
        body.append(_changes_html(changed_verdicts(frame, judge, examples), judge))
    pairs = judge_agreement(frame[frame["judge"].isin(list(summaries))], examples)
    if pairs:
        body.append("<h2>Agreement between judges</h2>")
        body.append(
            "<p class=muted>Cohen's κ between the judges' flags on the responses both scored, with its "
            "95% interval (cluster bootstrap over prompts). A change that only one judge reports is a "
            "property of that judge; see docs/judges.md for each judge's agreement with human labels.</p>"
        )
        rows = [
            [p.a, p.b, str(p.n), f"{100 * p.agreement:.1f}", fmt_kappa(p.kappa), _interval(p.kappa_ci)] for p in pairs
        ]
        body.append(_table(["judge", "judge", "n", "agreement %", "κ", "95% CI"], rows, (2, 3, 4, 5)))
        for p in pairs:
            if p.examples:
                body.append(f"<p><b>{_e(p.a)}</b> vs <b>{_e(p.b)}</b>: first disagreements</p>")
                body.extend(_disagreement_html(d, p.a, p.b) for d in p.examples)
    body.append("<h2>Conditions</h2>")
    labels = frame.drop_duplicates("config_hash").set_index("config_hash")["condition"].to_dict()
    for h in sorted(specs, key=lambda k: (str(specs[k].get("model_name", "")), labels.get(k, ""), k)):
        spec = json.dumps(specs[h], indent=2, sort_keys=True, default=str)
        body.append(
            f"<details><summary>{_e(specs[h].get('model_name', ''))} — "
            f"{_e(labels.get(h, specs[h].get('label', '')) or 'clean')} "
            f"<span class=muted>{_e(h[:12])}</span></summary><pre>{_e(spec)}</pre></details>"
        )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width,initial-scale=1"><title>{_e(title)}</title>'
        f"<style>{_CSS}</style></head><body>\n" + "\n".join(b for b in body if b) + "\n</body></html>\n"
    )


def write_html(path: str | Path, *args: Any, **kwargs: Any) -> Path:
    """:func:`render` into ``path`` (written to a temporary file first, so a failed render never
    leaves half a page where a good one was)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = render(*args, **kwargs)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


__all__ = ["ConditionChanges", "Disagreement", "Example", "changed_verdicts", "judge_agreement", "render", "write_html"]
