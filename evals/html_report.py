"""The evaluation report as one self-contained HTML page: inline CSS and SVG charts, no scripts, nothing fetched.

Everything taken from the report is HTML-escaped; failure details are shown exactly as the JSON carries them
(already redacted by `build_report`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from triage.evals.evaluators import CONVERSATION_NOTE, NODE_SUCCESS_NOTE

__all__ = ["render_html"]

_GOOD, _FAIR, _POOR = "#1a7f37", "#bf8700", "#cf222e"
_P50, _P95 = "#0969da", "#9ec5f4"
_GATE_COLOURS = {"passed": _GOOD, "failed": _POOR, "updated": _P50}


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


def _ms(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


def _rate_colour(rate: float | None) -> str:
    if rate is None:
        return "#8c959f"
    return _GOOD if rate >= 0.95 else _FAIR if rate >= 0.8 else _POOR


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is at least `value` (an axis maximum)."""
    if value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    return float(next(step * power for step in (1, 2, 2.5, 5, 10) if step * power >= value))


def _svg(width: int, height: int, body: list[str], label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" '
        f'role="img" aria-label="{_e(label)}">' + "".join(body) + "</svg>"
    )


def _text(x: float, y: float, content: object, *, anchor: str = "start", cls: str = "") -> str:
    attrs = f' class="{cls}"' if cls else ""
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{attrs}>{_e(content)}</text>'


def _x_axis(left: int, right: int, top: int, bottom: int, ticks: Sequence[tuple[float, str]]) -> list[str]:
    parts = []
    for share, label in ticks:
        x = left + share * (right - left)
        parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{bottom}" class="grid"/>')
        parts.append(_text(x, bottom + 14, label, anchor="middle", cls="tick"))
    return parts


def success_chart(nodes: Mapping[str, Mapping[str, Any]]) -> str:
    """Horizontal bars: each node's success rate, coloured by how close it is to 100%."""
    row, left, right, top = 22, 150, 960, 8
    bottom = top + row * len(nodes)
    parts = _x_axis(left, right, top, bottom, [(i / 4, f"{i * 25}%") for i in range(5)])
    for i, (node, stats) in enumerate(nodes.items()):
        y = top + i * row
        rate = stats.get("success_rate")
        width = (rate or 0) * (right - left)
        parts.append(_text(left - 8, y + 15, node, anchor="end", cls="label"))
        parts.append(
            f'<rect x="{left}" y="{y + 4}" width="{width:.1f}" height="{row - 8}" rx="2" '
            f'fill="{_rate_colour(rate)}"><title>{_e(node)}: {_pct(rate)} of {stats.get("executions", 0)}</title>'
            "</rect>"
        )
        parts.append(_text(right + 8, y + 15, f"{_pct(rate)}  ({stats.get('executions', 0)})", cls="value"))
    return _svg(1100, bottom + 24, parts, "Success rate per node")


def latency_chart(nodes: Mapping[str, Mapping[str, Any]]) -> str:
    """Per node, a p50 bar with the p95 bar behind it, on a shared linear millisecond axis."""
    row, left, right, top = 22, 150, 960, 8
    bottom = top + row * len(nodes)
    highest = max((stats["latency_ms"].get("p95") or 0 for stats in nodes.values()), default=0)
    ceiling = _nice_ceiling(highest)
    parts = _x_axis(left, right, top, bottom, [(i / 4, _ms(ceiling * i / 4)) for i in range(5)])
    for i, (node, stats) in enumerate(nodes.items()):
        y = top + i * row
        p50, p95 = stats["latency_ms"].get("p50"), stats["latency_ms"].get("p95")
        parts.append(_text(left - 8, y + 15, node, anchor="end", cls="label"))
        for value, colour, inset in ((p95, _P95, 4), (p50, _P50, 7)):
            width = (value or 0) / ceiling * (right - left)
            parts.append(
                f'<rect x="{left}" y="{y + inset}" width="{width:.1f}" height="{row - 2 * inset}" rx="2" '
                f'fill="{colour}"><title>{_e(node)}: p50 {_ms(p50)} ms, p95 {_ms(p95)} ms</title></rect>'
            )
        parts.append(_text(right + 8, y + 15, f"{_ms(p50)} / {_ms(p95)} ms", cls="value"))
    parts.append(_text(left, bottom + 30, "milliseconds (dark: p50, light: p95)", cls="tick"))
    return _svg(1100, bottom + 36, parts, "Latency p50 and p95 per node")


def histogram(values: Sequence[float], *, bins: int = 20) -> str:
    """A histogram of end-to-end run latencies on a linear axis from 0 to a round maximum."""
    left, right, top, bottom = 48, 1080, 10, 190
    if not values:
        return _svg(1100, 60, [_text(left, 30, "no runs", cls="tick")], "Run latency histogram")
    ceiling = _nice_ceiling(max(values))
    counts = [0] * bins
    for value in values:
        counts[min(bins - 1, int(value / ceiling * bins))] += 1
    tallest = max(4, math.ceil(max(counts) / 4) * 4)
    parts = [f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" class="axis"/>']
    for i in range(5):
        share = i / 4
        y = bottom - share * (bottom - top)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" class="grid"/>')
        parts.append(_text(left - 6, y + 4, f"{tallest * share:.0f}", anchor="end", cls="tick"))
    slot = (right - left) / bins
    for i, count in enumerate(counts):
        height = count / tallest * (bottom - top)
        low, high = ceiling * i / bins, ceiling * (i + 1) / bins
        parts.append(
            f'<rect x="{left + i * slot + 1:.1f}" y="{bottom - height:.1f}" width="{slot - 2:.1f}" '
            f'height="{height:.1f}" fill="{_P50}"><title>{_ms(low)}–{_ms(high)} ms: {count} runs</title></rect>'
        )
    for i in range(0, bins + 1, bins // 4 or 1):
        parts.append(_text(left + i * slot, bottom + 14, _ms(ceiling * i / bins), anchor="middle", cls="tick"))
    parts.append(_text((left + right) / 2, bottom + 30, "end-to-end latency per run (ms)", anchor="middle", cls="tick"))
    return _svg(1100, bottom + 36, parts, "Run latency histogram")


def _heat(share: float, diagonal: bool) -> str:
    """A background for a confusion-matrix cell: green on the diagonal, red off it, stronger with the share."""
    if share <= 0:
        return "background:#f6f8fa;color:#8c959f"
    alpha = 0.15 + 0.85 * share
    rgb = "26,127,55" if diagonal else "207,34,46"
    colour = "#fff" if alpha > 0.55 else "#1f2328"
    return f"background:rgba({rgb},{alpha:.2f});color:{colour}"


def confusion_table(routes: Mapping[str, Any]) -> str:
    """The route confusion matrix as a heat-map table; shading is the share of the expected row."""
    labels: list[str] = list(routes["labels"])
    confusion: Mapping[str, Mapping[str, int]] = routes["confusion"]
    head = "".join(f'<th scope="col">{_e(label)}</th>' for label in labels)
    rows = []
    for gold in labels:
        total = sum(confusion[gold].values())
        cells = []
        for guess in labels:
            count = confusion[gold][guess]
            style = _heat(count / total if total else 0.0, gold == guess)
            cells.append(f'<td style="{style}" title="{_e(gold)} → {_e(guess)}: {count}">{count}</td>')
        rows.append(f'<tr><th scope="row">{_e(gold)}</th>{"".join(cells)}<td class="muted">{total}</td></tr>')
    return (
        '<table class="matrix"><thead><tr><th class="corner">expected ↓ / routed →</th>'
        f'{head}<th class="muted">total</th></tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, numeric_from: int = 1, cls: str = "") -> str:
    """A table; cells are trusted HTML (escape before passing), columns from `numeric_from` align right."""
    head = "".join(
        f'<th scope="col"{" class=num" if i >= numeric_from else ""}>{_e(h)}</th>' for i, h in enumerate(headers)
    )
    body = "".join(
        "<tr>"
        + "".join(f"<td{' class=num' if i >= numeric_from else ''}>{cell}</td>" for i, cell in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _card(title: str, value: str, note: str = "", *, colour: str = "") -> str:
    style = f' style="color:{colour}"' if colour else ""
    return (
        f'<div class="card"><div class="card-title">{_e(title)}</div><div class="card-value"{style}>{_e(value)}</div>'
        f'<div class="card-note">{_e(note)}</div></div>'
    )


def _gate(section: Mapping[str, Any]) -> str:
    status = str(section.get("status", "not run"))
    colour = _GATE_COLOURS.get(status, "#57606a")
    lines = [
        f'<div class="gate" style="border-color:{colour}"><span class="badge" style="background:{colour}">'
        f"gate {_e(status)}</span>"
    ]
    details = []
    if section.get("reason"):
        details.append(_e(section["reason"]))
    if section.get("baseline"):
        details.append(f"baseline <code>{_e(section['baseline'])}</code>")
    if section.get("threshold") is not None:
        details.append(f"allowed change {_e(section['threshold'])}")
    lines.append(f'<span class="gate-detail">{" · ".join(details)}</span>')
    regressions = section.get("regressions") or []
    if regressions:
        lines.append("<ul>" + "".join(f"<li>{_e(r['message'])}</li>" for r in regressions) + "</ul>")
    lines.append("</div>")
    return "".join(lines)


_CSS = """
*{box-sizing:border-box}
body{margin:0;background:#f6f8fa;color:#1f2328;font:14px/1.5 -apple-system,BlinkMacSystemFont,"Segoe UI",Helvetica,
Arial,sans-serif}
main{max-width:1180px;margin:0 auto;padding:28px 32px 48px}
h1{font-size:26px;margin:0 0 4px}
h2{font-size:17px;margin:0 0 12px}
.sub{color:#57606a;margin:0 0 18px}
section{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:18px 22px;margin:18px 0}
.cards{display:grid;grid-template-columns:repeat(5,1fr);gap:12px}
.card{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:12px 14px}
.card-title{color:#57606a;font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card-value{font-size:24px;font-weight:600;margin:2px 0}
.card-note{color:#57606a;font-size:12px;min-height:1em}
.gate{background:#fff;border:1px solid;border-left-width:6px;border-radius:8px;padding:12px 16px;margin:18px 0}
.gate ul{margin:8px 0 0;padding-left:20px}
.badge{color:#fff;border-radius:12px;padding:2px 10px;font-weight:600;margin-right:10px;text-transform:uppercase;
font-size:12px;letter-spacing:.04em}
.gate-detail{color:#57606a}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:0 28px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;margin:0}
dt{color:#57606a}dd{margin:0}
code{font:12px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#f6f8fa;padding:1px 4px;
border-radius:4px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{padding:5px 8px;border-bottom:1px solid #eaeef2;text-align:left;vertical-align:top}
thead th{color:#57606a;font-weight:600;border-bottom:1px solid #d0d7de}
.num{text-align:right;font-variant-numeric:tabular-nums}
.matrix{width:auto}
.matrix td{text-align:center;min-width:74px;font-variant-numeric:tabular-nums;border:2px solid #fff}
.matrix th{border:2px solid #fff}
.matrix .corner{color:#57606a;font-weight:400;font-size:12px}
.muted{color:#8c959f}
svg{display:block;max-width:100%;height:auto}
svg text{font:12px -apple-system,BlinkMacSystemFont,"Segoe UI",Helvetica,Arial,sans-serif;fill:#1f2328}
svg .tick{fill:#57606a;font-size:11px}
svg .value{fill:#57606a}
svg .grid{stroke:#eaeef2}
svg .axis{stroke:#8c959f}
.fail ul{margin:0;padding-left:16px}
.fail td:first-child{white-space:nowrap}
.bad{color:#cf222e}
footer{color:#8c959f;font-size:12px;margin-top:24px}
"""


def _headline(report: Mapping[str, Any]) -> str:
    run = report["run"]
    latency = run["latency_ms"]
    cost = run["cost_usd"]
    return (
        '<div class="cards">'
        + "".join(
            [
                _card(
                    "task success",
                    _pct(run["task_success_rate"]),
                    f"{run['task_successes']} of {run['cases']} cases",
                    colour=_rate_colour(run["task_success_rate"]),
                ),
                _card("route accuracy", _pct(run["route_accuracy"]), f"macro F1 {report['routes']['macro_f1']:.3f}"),
                _card("intent accuracy", _pct(run["intent_accuracy"])),
                _card("action accuracy", _pct(run["action_accuracy"])),
                _card(
                    "escalation rate", _pct(run["escalation_rate"]), f"expected {_pct(run['expected_escalation_rate'])}"
                ),
                _card("errors", _pct(run["error_rate"]), colour=_POOR if run["error_rate"] else ""),
                _card(
                    "policy violations",
                    str(run["policy_violations"]),
                    "tool calls refused",
                    colour=_POOR if run["policy_violations"] else "",
                ),
                _card(
                    "unexpected refunds",
                    str(run["unexpected_refund_requests"]),
                    "refund requests not expected",
                    colour=_POOR if run["unexpected_refund_requests"] else "",
                ),
                _card(
                    "unsafe effects executed",
                    str(run.get("unsafe_effects_executed", 0)),
                    f"{run.get('unsafe_proposals_stopped_at_approval', 0)} more stopped at approval",
                    colour=_POOR if run.get("unsafe_effects_executed") else "",
                ),
                _card("latency p50 / p95", f"{_ms(latency['p50'])} / {_ms(latency['p95'])}", "ms per run"),
                _card("tokens / cost", f"{run['tokens']:,}", f"${cost:.4f}"),
            ]
        )
        + "</div>"
    )


def _configuration(report: Mapping[str, Any]) -> str:
    dataset, model = report["dataset"], report["model"]
    items = [
        ("policy version", f"<code>{_e(report['policy_version'])}</code>"),
        ("model tier", f"<code>{_e(model['tier'])}</code>"),
        ("model tokens / cost", f"{_e(model['tokens'])} / ${float(model['cost_usd']):.4f}"),
        ("dataset", f"<code>{_e(dataset['source'])}</code>"),
        ("cases / fingerprint", f"{_e(dataset['cases'])} / <code>{_e(dataset['fingerprint'])}</code>"),
        ("wall time", f"{float(report['wall_time_s']):.1f} s"),
        ("generated", _e(report["generated_at"])),
        ("report schema", _e(report["schema_version"])),
    ]
    if report.get("langsmith"):
        recorded = report["langsmith"]
        items.append(
            (
                "LangSmith",
                f"experiment <code>{_e(recorded['experiment'])}</code> on <code>{_e(recorded['dataset'])}</code>",
            )
        )
    return "<dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in items) + "</dl>"


def _node_table(nodes: Mapping[str, Mapping[str, Any]]) -> str:
    rows = [
        [
            f"<code>{_e(node)}</code>",
            _e(stats["executions"]),
            f'<span style="color:{_rate_colour(stats["success_rate"])}">{_pct(stats["success_rate"])}</span>',
            _e(stats["errors"]),
            "–" if stats.get("retries") is None else _e(stats["retries"]),
            _ms(stats["latency_ms"]["p50"]),
            _ms(stats["latency_ms"]["p95"]),
        ]
        for node, stats in nodes.items()
    ]
    return _table(["node", "executions", "success", "errors", "retries", "p50 ms", "p95 ms"], rows)


def _route_table(routes: Mapping[str, Any]) -> str:
    rows = [
        [_e(route), f"{s['precision']:.3f}", f"{s['recall']:.3f}", f"{s['f1']:.3f}", _e(s["support"])]
        for route, s in routes["per_route"].items()
    ]
    return _table(["route", "precision", "recall", "F1", "support"], rows)


def _tag_table(tags: Mapping[str, Mapping[str, Any]]) -> str:
    rows = [
        [
            _e(tag),
            _e(stats["cases"]),
            f'<span style="color:{_rate_colour(stats["task_success_rate"])}">{_pct(stats["task_success_rate"])}</span>',
            _pct(stats["route_accuracy"]),
        ]
        for tag, stats in tags.items()
    ]
    return _table(["tag", "cases", "task success", "route accuracy"], rows)


def _mismatch(got: object, expected: object) -> str:
    return f'<span class="bad">{_e(got)}</span> <span class="muted">(expected {_e(expected)})</span>'


def _failing(cases: Sequence[Mapping[str, Any]]) -> str:
    failing = [case for case in cases if not case["passed"]]
    if not failing:
        return "<p>Every case passed.</p>"
    rows = []
    for case in failing:
        routed = case.get("route") or "(none)"
        route_cell = _e(routed)
        if routed != case["expected_route"]:
            route_cell = _mismatch(routed, case["expected_route"])
        status_cell = _e(case.get("status") or "–")
        if case.get("expected_status") and case.get("status") != case["expected_status"]:
            status_cell = _mismatch(case.get("status") or "–", case["expected_status"])
        failures = "".join(f"<li>{_e(f)}</li>" for f in case["failures"])
        nodes = "".join(
            f"<li><code>{_e(node)}</code>{': ' + _e(detail) if detail else ''}</li>"
            for node, detail in case["failed_nodes"].items()
        )
        rows.append(
            [
                f"<code>{_e(case['id'])}</code>",
                _e(", ".join(case["tags"])),
                route_cell,
                status_cell,
                f"<ul>{failures}</ul>",
                f"<ul>{nodes}</ul>" if nodes else "–",
            ]
        )
    return _table(["case", "tags", "route", "status", "failures", "failed nodes"], rows, numeric_from=99, cls="fail")


def _conversations(section: Mapping[str, Any]) -> str:
    """The multi-turn figures: headline cards, per tag, and the turns that failed."""
    latency = section["follow_up_latency_ms"]
    cards = "".join(
        [
            _card(
                "conversation success",
                _pct(section["success_rate"]),
                f"{section['successes']} of {section['conversations']} conversations",
                colour=_rate_colour(section["success_rate"]),
            ),
            _card(
                "turn success",
                _pct(section["turn_success_rate"]),
                f"{section['turn_successes']} of {section['turns']} turns",
                colour=_rate_colour(section["turn_success_rate"]),
            ),
            _card(
                "follow-up turn success",
                _pct(section["follow_up_success_rate"]),
                f"{section['follow_up_turns']} follow-up turns",
                colour=_rate_colour(section["follow_up_success_rate"]),
            ),
            _card(
                "unsafe effects executed",
                str(section["unsafe_effects_executed"]),
                "in turns",
                colour=_POOR if section["unsafe_effects_executed"] else "",
            ),
            _card("follow-up latency p50 / p95", f"{_ms(latency['p50'])} / {_ms(latency['p95'])}", "ms per turn"),
        ]
    )
    rows = [
        [
            f"<code>{_e(case['id'])}</code> turn {_e(turn['turn'])}" + (" (attached)" if turn["attached"] else ""),
            _e(", ".join(case["tags"])),
            _e(turn.get("route") or "(none)"),
            _e(turn.get("status") or "–"),
            "<ul>" + "".join(f"<li>{_e(f)}</li>" for f in turn["failures"]) + "</ul>",
        ]
        for case in section["cases"]
        for turn in case["turns"]
        if not turn["passed"]
    ]
    failing = (
        _table(["turn", "tags", "route", "status", "failures"], rows, numeric_from=99, cls="fail")
        if rows
        else "<p>Every turn passed.</p>"
    )
    return (
        f"<section><h2>Conversations (multi-turn)</h2><p>{_e(CONVERSATION_NOTE)}</p>"
        f'<div class="cards">{cards}</div>{_tag_table(section["tags"])}'
        f'<h2 style="margin-top:18px">Failing turns ({len(rows)})</h2>{failing}</section>'
    )


def render_html(report: Mapping[str, Any]) -> str:
    """The report as a standalone HTML page (no scripts, no external resources)."""
    dataset = report["dataset"]
    nodes = report["nodes"]
    failing = sum(not case["passed"] for case in report["cases"])
    sections = [
        "<header>",
        "<h1>triage evaluation</h1>",
        f'<p class="sub">{_e(dataset["cases"])} cases from <code>{_e(dataset["source"])}</code> · policy '
        f"<code>{_e(report['policy_version'])}</code> · model tier <code>{_e(report['model']['tier'])}</code> · "
        f"{_e(report['generated_at'])}</p>",
        "</header>",
        _gate(report.get("gate", {})),
        _headline(report),
        '<section class="grid2"><div><h2>Run configuration</h2>',
        _configuration(report),
        "</div><div><h2>Routes</h2>",
        _route_table(report["routes"]),
        "</div></section>",
        "<section><h2>Success rate per node</h2>",
        success_chart(nodes),
        "</section>",
        "<section><h2>Latency per node</h2>",
        latency_chart(nodes),
        '<h2 style="margin-top:18px">Run latency distribution</h2>',
        histogram([float(case["latency_ms"]) for case in report["cases"]]),
        "</section>",
        f"<section><h2>Route confusion matrix</h2>{confusion_table(report['routes'])}"
        '<p class="muted">Rows are the expected route, columns the route taken; shading is the share of the row. '
        f"Macro F1 {report['routes']['macro_f1']:.3f}.</p></section>",
        f"<section><h2>Nodes</h2><p>{_e(NODE_SUCCESS_NOTE)}</p>{_node_table(nodes)}</section>",
        f"<section><h2>Tags</h2>{_tag_table(report['tags'])}</section>",
        f"<section><h2>Failing cases ({failing})</h2>{_failing(report['cases'])}</section>",
        _conversations(report["conversations"]) if report.get("conversations") else "",
        "<footer>Generated by <code>triage eval</code>. Personal data in failure details is redacted.</footer>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        'img-src data:">'
        f"<title>triage evaluation · {_e(dataset['source'])}</title><style>{_CSS}</style></head>"
        f"<body><main>{''.join(sections)}</main></body></html>\n"
    )
