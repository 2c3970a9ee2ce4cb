"""What a study's numbers support, as report sections: how many seeds each value rests on and
its interval, the confirmation and its tests, the reference study's numbers beside ours with
intervals, and a short paragraph in words generated from the tests (never from wishes). Pure:
it reads the gathered record, nothing else. Which test is used where: docs/statistics.md."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from typing import TYPE_CHECKING, Any

import optuna

from cifar_exp.stats import Comparison, Summary, compare, summarize

if TYPE_CHECKING:
    from cifar_exp.config import Config
    from cifar_exp.study.confirm import Confirmation

METRICS_SHOWN = ("loss", "accuracy", "val_loss", "val_accuracy")


@dataclass
class TrialRow:
    """A trial with what its MLflow run recorded."""

    trial: optuna.trial.FrozenTrial
    run_id: str | None
    history: dict[str, list[float]]  # per epoch (the mean over seeds for a several-seed trial)
    params: dict[str, str]  # the run's MLflow params: its whole resolved config
    metrics: dict[str, float] = field(default_factory=dict)  # the run's latest values
    std: dict[str, list[float]] = field(default_factory=dict)  # per epoch, over seeds


def seed_values(row: TrialRow) -> list[float]:
    """The trial's final search-metric value per seed (one value for a single-seed trial)."""
    values = row.trial.user_attrs.get("seed_values")
    if values:
        return list(values.values())
    return [row.trial.value] if row.trial.value is not None else []


def metric_summary(row: TrialRow, key: str) -> Summary | None:
    """A final metric of a trial with its interval: from the seed aggregate on its run (mean,
    95 % CI), or the single run's value."""
    last = row.history.get(key)
    if not last:
        return None
    n = int(row.metrics.get("n_seeds", 1))
    low, high = row.metrics.get(f"{key}_ci_low"), row.metrics.get(f"{key}_ci_high")
    std = row.metrics.get(f"{key}_std")
    if n > 1 and low is not None and high is not None:
        return Summary(n, last[-1], std, low, high)
    return Summary(1, last[-1], None, None, None)


def _pm(s: Summary | None, digits: int = 4) -> str:
    if s is None:
        return "-"
    if s.ci_low is None:
        return f"{s.mean:.{digits}f}"
    return f"{s.mean:.{digits}f} ± {(s.ci_high - s.ci_low) / 2:.{digits}f}"


def seeds_note(rows: list[TrialRow], confirmed: bool = False) -> str:
    counts = sorted({int(r.trial.user_attrs.get("n_seeds", 1)) for r in rows if r.history})
    if counts in ([], [1]) and confirmed:
        return (
            "Each trial's value is a single training run (1 seed); differences between trials "
            "are not tested and may be seed-to-seed noise. The confirmation re-trained the best "
            "configurations with more seeds and tested them."
        )
    if counts in ([], [1]):
        return (
            "Every value in this report is a single training run (1 seed); differences between "
            "trials are not tested and may be seed-to-seed noise."
        )
    return (
        f"Trial values are means over {', '.join(map(str, counts))} seeds; "
        "± gives the half-width of the 95 % t-interval of the mean."
    )


# --------------------------------------------------------------------------- confirmation


def confirmation_section(result: Confirmation | None) -> list[str]:
    if result is None:
        return []
    lines = [
        "## Confirmation",
        "",
        f"The best {len(result.candidates)} configurations re-trained to "
        f"{max(c.summary.n for c in result.candidates)} seeds each (same data split); the best "
        f"is chosen on the means, and compared with each runner-up by Welch's t-test "
        f"(alpha {result.alpha:g}).",
        "",
        f"| trial | params | seeds | {result.metric} mean ± 95 % CI | difference from best "
        "(95 % CI) | p |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for c, comp in zip(result.candidates, [None, *result.comparisons], strict=True):
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in c.params.items())
        lines.append(
            f"| {c.number} | {params} | {c.summary.n} | {_pm(c.summary)} | {_diff(comp)} | "
            f"{_p(comp)} |"
        )
    return [*lines, ""]


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _diff(c: Comparison | None) -> str:
    if c is None:
        return "-"
    if c.ci_low is None:
        return f"{c.diff:+.4f}"
    return f"{c.diff:+.4f} ({c.ci_low:+.4f} to {c.ci_high:+.4f})"


def _p(c: Comparison | None) -> str:
    return "-" if c is None or c.p_value is None else f"{c.p_value:.3g}"


# --------------------------------------------------------------------------- the reference


def reference_section(cfg: Config, rows: list[TrialRow], test_accuracy: float | None) -> list[str]:
    """The reference study's published numbers beside ours per epoch budget: our mean ± 95 %
    CI, whether the published value lies inside our interval, and which budgets differ."""
    ref = cfg.reference
    by_epochs = _by_epochs(rows)
    out = [
        "## Replication of the reference study",
        "",
        "| epochs | reference val_accuracy | this study val_accuracy (mean ± 95 % CI) | seeds "
        "| reference inside our interval | loss | accuracy | val_loss |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for epochs, value in ref.val_accuracy.items():
        row = by_epochs.get(epochs)
        if row is None:
            out.append(f"| {epochs} | {value:.3f} | not run | - | - | - | - | - |")
            continue
        s = {k: metric_summary(row, k) for k in METRICS_SHOWN}
        inside = s["val_accuracy"].contains(value) if s["val_accuracy"] else None
        mark = {True: "yes", False: "no", None: "- (1 seed: no interval)"}[inside]
        out.append(
            f"| {epochs} | {value:.3f} | {_pm(s['val_accuracy'])} | {s['val_accuracy'].n} | "
            f"{mark} | {_pm(s['loss'])} | {_pm(s['accuracy'])} | {_pm(s['val_loss'])} |"
        )
    out.append("")
    for epochs, value in ref.test_accuracy.items():
        out.append(f"Reference test accuracy after {epochs} epochs: {value:.2%}.")
    if test_accuracy is not None:
        out.append(f"This study's best model on the test set: {test_accuracy:.2%} (one model).")
    return [*out, ""]


def _by_epochs(rows: list[TrialRow]) -> dict[int, TrialRow]:
    out = {}
    for r in rows:
        epochs = r.trial.params.get("trainer.epochs") or _int(r.params.get("trainer.epochs"))
        if r.trial.state.name == "COMPLETE" and epochs is not None:
            out.setdefault(int(epochs), r)
    return out


def _int(text: str | None) -> int | None:
    try:
        return int(float(text)) if text is not None else None
    except ValueError:
        return None


def reference_comparisons(rows: list[TrialRow], alpha: float) -> list[str]:
    """Which epoch budgets differ on the search metric (Welch's t-test, pairwise)."""
    by_epochs = _by_epochs(rows)
    out = []
    for a, b in combinations(sorted(by_epochs), 2):
        va, vb = seed_values(by_epochs[a]), seed_values(by_epochs[b])
        out.append(_statement(_epochs(a), _epochs(b), compare(va, vb), alpha))
    return out


def _epochs(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def _statement(a: str, b: str, c: Comparison, alpha: float) -> str:
    if c.p_value is None:
        return f"{a} and {b}: single runs, not tested (more seeds needed)"
    if c.significant(alpha):
        return (
            f"{a} and {b} differ: difference {c.diff:+.4f} (95 % CI {c.ci_low:+.4f} to "
            f"{c.ci_high:+.4f}), p = {c.p_value:.3g}"
        )
    return f"{a} and {b} are not distinguishable: p = {c.p_value:.3g}"


# --------------------------------------------------------------------------- in words


def supports(cfg: Config, rows: list[TrialRow], confirmation: Confirmation | None) -> list[str]:
    """ "What the data supports": a few sentences, each from a test or a count."""
    metric, alpha = cfg.search.metric, cfg.search.confirm.alpha
    lines = ["## What the data supports", "", f"- {seeds_note(rows, confirmation is not None)}"]
    if confirmation is not None:
        w = confirmation.winner
        lines.append(
            f"- The best configuration, chosen on confirmed means, is trial {w.number}: "
            f"{metric} {w.summary.text()}."
        )
        lines += [f"- {s[0].upper()}{s[1:]}." for s in confirmation.statements()]
    else:
        complete = [r for r in rows if r.trial.state.name == "COMPLETE" and seed_values(r)]
        maximize = cfg.search.direction == "maximize"
        complete.sort(key=lambda r: sum(seed_values(r)) / len(seed_values(r)), reverse=maximize)
        if len(complete) >= 2:
            a, b = complete[0], complete[1]
            c = compare(seed_values(a), seed_values(b))
            best, nxt = f"the best trial ({a.trial.number})", f"the next ({b.trial.number})"
            text = _statement(best, nxt, c, alpha)
            lines.append(f"- {text[0].upper()}{text[1:]}.")
        if complete and confirmation is None and cfg.search.confirm.top_k:
            lines.append(
                "- No confirmation stage has run: `python -m cifar_exp confirm "
                f"{cfg.search.study_name}` re-trains the best configurations with more seeds."
            )
    if cfg.reference is not None:
        lines += [f"- {s[0].upper()}{s[1:]}." for s in reference_comparisons(rows, alpha)]
    return [*lines, ""]


def best_summary(rows: list[TrialRow], number: int | None) -> Summary | None:
    row = next((r for r in rows if r.trial.number == number), None)
    return summarize(seed_values(row)) if row and seed_values(row) else None
