"""Human reports (markdown) for a calibration artifact and for an evaluation run."""

from __future__ import annotations

from typing import Any

from calibration.eval_result import EvalResult
from calibration.fit import FitResult
from calibration.plots import short


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def calibration_report(
    fit: FitResult, models: list[str], generalist: str, info: dict[str, Any], command: str
) -> str:
    t = fit.table
    lines = [
        "# Triage calibration report",
        "",
        f"Command: `{command}`",
        "",
        f"- data: `{info['source']}` (sha256 `{info['sha256'][:16]}…`), {info['train_rows']} train rows; "
        f"split: {info['split_method']}",
        cost_line(info),
        f"- generalist: `{generalist}` ({info['generalist_reason']})",
        f"- k = {fit.k}, soft assignment over the {fit.soft_top} nearest clusters (temperature "
        f"{fit.temperature:g}), kNN blend weight {fit.knn_weight:g} (k={fit.knn_k}); chosen "
        + (f"on {info['selection_folds']} folds of the train rows (by hash of id; each fold routed by a fit on the "
           "others)" if info.get("selection_folds", 1) > 1 else "on a validation slice (20 % of the train rows by "
           "hash of id)")
        + ", objective: " + info["objective"],
        f"- shrinkage: Beta prior of {info['prior_strength']:g} pseudo-queries at the global accuracy; "
        f"cliff when P(specialist < generalist - {info.get('cliff_margin', 0.0):g}) > {info['cliff_confidence']:g}"
        + (
            " (margin chosen on validation: "
            + ", ".join(
                f"{m['cliff_margin']:g} -> {m['validation_quality']:.4f}" for m in info["cliff_margin_selection"]
            )
            + ")"
            if info.get("cliff_margin_selection")
            else ""
        ),
        ood_line(fit, info),
        f"- domain level: {info.get('domain_level', 'not recorded')}",
        "",
        "## Global accuracy (train)",
        "",
        "| model | accuracy |",
        "|---|---|",
    ]
    lines += [f"| {m} | {pct(a)} |" for m, a in zip(models, fit.global_accuracy, strict=True)]
    lines += [
        "",
        "## Per-cluster shrunk accuracy (%, * = cliff)",
        "",
        "| cluster | n | " + " | ".join(short(m) for m in models) + " |",
        "|---|---|" + "---|" * len(models),
    ]
    for c in range(fit.k):
        cells = [pct(t.estimate[c, j]) + ("*" if t.cliff[c, j] else "") for j in range(len(models))]
        lines.append(f"| {c} | {int(t.counts[c, 0])} | " + " | ".join(cells) + " |")
    if fit.domains is not None:
        d = fit.domains
        lines += [
            "",
            f"## Per-domain shrunk accuracy (%, blended at weight {d.weight:g} by the domain classifier's "
            "probabilities)",
            "",
            "| domain | " + " | ".join(short(m) for m in models) + " |",
            "|---|" + "---|" * len(models),
        ]
        lines += [f"| {name} | " + " | ".join(pct(v) for v in d.estimate[i]) + " |" for i, name in enumerate(d.names)]
    lines += ["", "## Cliffs", ""]
    for j, m in enumerate(models):
        if m != generalist:
            cl = [int(c) for c in range(fit.k) if t.cliff[c, j]]
            lines.append(f"- `{m}`: {len(cl)} clusters {cl}")
    lines += [
        "",
        "## Model selection (validation)",
        "",
        "| k | soft_top | temperature | knn_weight | domain_weight | quality |",
        "|---|---|---|---|---|---|",
    ]
    for s in sorted(fit.selection, key=lambda s: -s["validation_quality"])[:15]:
        lines.append(
            f"| {s['k']} | {s['soft_top']} | {s['temperature']:g} | {s['knn_weight']:g} | "
            f"{s.get('domain_weight', 0.0):g} | {s['validation_quality']:.4f} |"
        )
    lines += ["", "![selection](selection.png)", "", "![clusters](clusters.png)", ""]
    return "\n".join(lines)


def cost_line(info: dict[str, Any]) -> str:
    """The calibration report's cost line: where cost came from, and a warning when every model costs the same."""
    source = info["cost_source"]
    if info.get("prices"):
        source += f" ({info['prices']}" + (", found beside the data" if info.get("prices_found_beside") else "") + ")"
    if source == "equal":
        return ("- cost: **equal for every model** (the rows have no cost and no prices were given): the knob "
                "trades nothing, and model selection optimised accuracy alone")
    return f"- cost: {source}"


def eval_report(result: EvalResult, command: str, info: dict[str, Any]) -> str:
    lines = [
        "# Triage evaluation report",
        "",
        f"Command: `{command}`",
        "",
        f"- artifact: k={info['k']}, generalist `{info['generalist']}`, embedder {info['embedder']}",
        f"- evaluated on {result.n} in-domain rows not used for fitting ({info['rows']}); cost: "
        f"{info['cost_source']}",
        "",
    ]
    if "cost_mismatch" in info:
        lines += [f"**Warning**: {info['cost_mismatch']}.", ""]
    lines += headline(result) + router_table(result) + per_domain_section(result) + held_out_section(result, info)
    lines += [
        "",
        "![frontier](frontier.png)",
        "",
        "![clusters](cluster_accuracy.png)",
        "",
        "![cliff](cliff.png)",
        "",
    ]
    return "\n".join(lines)


def money(result: EvalResult, cost: float) -> str:
    return f"{cost:.6f}" if result.has_cost else "equal"


def headline(result: EvalResult) -> list[str]:
    """AIQ, knob 1 against the best single model, the best knob and the cheapest one that matches that model."""
    lines = []
    if not result.has_cost:
        lines += ["**Every model costs the same here** (no cost in the rows, no prices): the knob changes accuracy "
                  "only, and no knob is cheaper than another.", ""]
    if result.aiq is not None:
        a = result.aiq
        lines += [
            f"**AIQ** (cost range of the single models {a.cost_range[0]:.6f}–{a.cost_range[1]:.6f} USD per "
            "query): "
            f"Triage {a.triage:.4f}, Avengers-Pro-style {a.avengers:.4f} (difference "
            f"{a.triage - a.avengers:+.4f}; 95 % paired bootstrap interval "
            f"{a.difference_interval_95[0]:+.4f} to {a.difference_interval_95[1]:+.4f})",
            "",
        ]
    bs = result.best_single
    lines += [
        f"**Knob 1**: {pct(result.knob1.accuracy)} % vs best single model `{bs}` "
        f"{pct(result.single[bs].accuracy)} % ({100 * result.knob1_minus_best_single:+.2f} pts, "
        f"paired standard error {100 * result.knob1_minus_best_single_se:.2f})",
        f"**Best accuracy**: {pct(result.best.accuracy)} % at knob {result.best.knob}"
        + (f" (cost {money(result, result.best.cost)} USD per query)" if result.has_cost else ""),
    ]
    cm = result.cheapest_knob_matching_best_single
    if result.has_cost:
        lines.append(
            "**Cheapest knob matching the best single model**: "
            + (f"knob {cm.knob} ({pct(cm.accuracy)} %, cost {money(result, cm.cost)} USD per query)" if cm
               else "none")
        )
    return lines


def router_table(result: EvalResult) -> list[str]:
    """Every router's accuracy and mean cost: Triage per knob, the baseline per alpha, single models, oracle,
    random and the domain router."""
    cost_header = "mean cost (USD per query)" if result.has_cost else "mean cost (all equal)"
    lines = ["", f"| router | setting | accuracy % | {cost_header} |", "|---|---|---|---|"]
    lines += [f"| Triage | knob {p.knob} | {pct(p.accuracy)} | {money(result, p.cost)} |" for p in result.triage]
    lines += [f"| Avengers-Pro-style | alpha {q.alpha} | {pct(q.accuracy)} | {money(result, q.cost)} |"
              for q in result.avengers[::4]]
    lines += [f"| single | {m} | {pct(v.accuracy)} | {money(result, v.cost)} |" for m, v in result.single.items()]
    lines.append(f"| oracle | best per query | {pct(result.oracle.accuracy)} | {money(result, result.oracle.cost)} |")
    lines.append(f"| random | uniform | {pct(result.random.accuracy)} | {money(result, result.random.cost)} |")
    if result.domain_router is not None:
        d = result.domain_router
        lines.append(f"| domain router | told each query's domain: that domain's best model on the fitted rows | "
                     f"{pct(d.accuracy)} | {money(result, d.cost)} |")
    return lines


def per_domain_section(result: EvalResult) -> list[str]:
    if result.domain_router is None or result.per_domain is None:
        return []
    lines = [
        "",
        "## Per domain, knob 1",
        "",
        "The domain router is a baseline that is told each query's domain label (the router is not) and sends",
        "it to the model with the best accuracy on that domain's fitted rows: the gain there is to take by",
        "recognising domains alone.",
        "",
        "| domain | n | Triage % | flagged OOD % | OOD margin % | domain's best model (fitted rows) "
        "| its accuracy % | best model on these rows % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result.per_domain:
        lines.append(f"| {r.domain} | {r.n} | {pct(r.triage_knob1)} | {pct(r.ood_flagged_rate)} | "
                     f"{pct(r.ood_margin_rate)} | {r.train_best} | {pct(r.train_best_accuracy)} | "
                     f"{pct(r.test_best_accuracy)} |")
    return lines


def held_out_section(result: EvalResult, info: dict[str, Any]) -> list[str]:
    if result.ood is None:
        return []
    o = result.ood
    return [
        "",
        "## Out of domain",
        "",
        f"{o.n} rows from domains held out of fitting ({info['ood_rows']}).",
        f"- AUROC of the OOD score (held-out domains vs in-domain test): {o.auroc:.4f}",
        f"- flagged: {pct(o.flagged_rate)} % of held-out-domain rows, "
        f"{pct(o.in_domain_flagged_rate)} % of in-domain rows",
        f"- sent to the generalist by the OOD margin at knob 1: {pct(o.ood_margin_rate)} % of held-out-domain "
        f"rows, {pct(o.in_domain_ood_margin_rate)} % of in-domain rows",
        f"- routed accuracy at knob 1: {pct(o.routed_accuracy_knob1)} % vs generalist "
        f"{pct(o.generalist_accuracy)} % (best single on them {pct(o.best_single_accuracy)} %)",
    ]


def ood_line(fit: FitResult, info: dict[str, Any]) -> str:
    d = fit.ood_detector
    if d is not None:
        return (
            "- OOD: domain detector (Mahalanobis distance to the nearest of the train domains' means, threshold "
            f"{d.mahalanobis_threshold:.4g}, or the domain classifier's energy, threshold {d.energy_threshold:.4g}): "
            f"together they flag 1 - {info['ood_quantile']:g} of the held-out validation rows; below that line a "
            f"specialist must beat the generalist's estimated accuracy by an OOD margin rising from 0 at score "
            f"{d.margin_from:g} to {d.margin_at_line:g} at the line (read from "
            f"{'the energy part' if d.margin_score == 'energy' else 'the detector score'})"
        )
    return (
        f"- OOD: mean cosine distance to {fit.ood_k} nearest train queries; threshold {fit.ood_threshold:.4f} "
        f"= the {info['ood_quantile']:g} quantile of held-out validation rows "
        f"(quantiles: {', '.join(f'{q}: {v:.4f}' for q, v in fit.ood_quantiles.items())})"
    )
