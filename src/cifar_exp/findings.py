"""What a study's numbers support, as report sections: how many seeds each value rests on and
its interval, the confirmation and its tests, the reference study's numbers beside ours with
intervals, and a short paragraph in words generated from the tests (never from wishes). Pure:
it reads the gathered record, nothing else. Which test is used where: docs/statistics.md."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import combinations
from typing import TYPE_CHECKING, Any

import optuna

from cifar_exp.stats import Comparison, Summary, compare, summarize
from cifar_exp.typeset import DASH

if TYPE_CHECKING:
    from cifar_exp.config import Config
    from cifar_exp.study.confirm import Confirmation
    from cifar_exp.train import Evaluation

METRICS_SHOWN = ("loss", "accuracy", "val_loss", "val_accuracy")
Captioned = Callable[[str, str], list[str]]  # (Markdown table, caption) -> the lines shown


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
    return row.trial.values[:1] if row.trial.values else []  # (the first objective's)


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
        return DASH
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


def _plain(text: str, caption: str) -> list[str]:
    return [text, ""]


def confirmation_section(result: Confirmation | None, table: Captioned = _plain) -> list[str]:
    """The confirmation stage: its candidates with their seeds, means and intervals, and each
    runner-up's difference from the best; `table(text, caption)` sets the table."""
    if result is None:
        return []
    lines = [
        f"| trial | params | seeds | {result.metric} (mean ± 95 % CI) | difference from best "
        "(95 % CI) | p |",
        "| ---: | :--- | ---: | ---: | ---: | ---: |",
    ]
    for c, comp in zip(result.candidates, [None, *result.comparisons], strict=True):
        params = ", ".join(f"{k}={param_text(v)}" for k, v in c.params.items())
        lines.append(
            f"| {c.number} | {params} | {c.summary.n} | {_pm(c.summary)} | {_diff(comp)} | "
            f"{_p(comp)} |"
        )
    return [
        "## Confirmation",
        "",
        f"The best {len(result.candidates)} configurations re-trained to "
        f"{max(c.summary.n for c in result.candidates)} seeds each (same data split); the best "
        f"is chosen on the means, and compared with each runner-up by Welch's t-test "
        f"(alpha {result.alpha:g}).",
        "",
        *table("\n".join(lines), f"Confirmation of the best configurations on `{result.metric}`."),
    ]


def param_text(v: Any) -> str:
    """A hyperparameter's value as the report writes it: floats to 3 significant digits."""
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _diff(c: Comparison | None) -> str:
    if c is None:
        return DASH
    if c.ci_low is None:
        return f"{c.diff:+.4f}"
    return f"{c.diff:+.4f} ({c.ci_low:+.4f} to {c.ci_high:+.4f})"


def _p(c: Comparison | None) -> str:
    return DASH if c is None or c.p_value is None else f"{c.p_value:.3g}"


# --------------------------------------------------------------------------- the reference


def reference_section(
    cfg: Config, rows: list[TrialRow], test_accuracy: float | None, table: Captioned = _plain
) -> list[str]:
    """The reference study's published numbers beside ours per epoch budget: our mean ± 95 %
    CI, whether the published value lies inside our interval, and which budgets differ;
    `table(text, caption)` sets the table."""
    ref = cfg.reference
    by_epochs = _by_epochs(rows)
    out = [
        "| epochs | reference val_accuracy | this study val_accuracy (mean ± 95 % CI) | seeds "
        "| reference inside our interval | loss | accuracy | val_loss |",
        "| ---: | ---: | ---: | ---: | :--- | ---: | ---: | ---: |",
    ]
    for epochs, value in ref.val_accuracy.items():
        row = by_epochs.get(epochs)
        if row is None:
            out.append(f"| {epochs} | {value:.3f} | not run | - | - | - | - | - |")
            continue
        s = {k: metric_summary(row, k) for k in METRICS_SHOWN}
        inside = s["val_accuracy"].contains(value) if s["val_accuracy"] else None
        mark = {True: "yes", False: "no", None: f"{DASH} (1 seed: no interval)"}[inside]
        out.append(
            f"| {epochs} | {value:.3f} | {_pm(s['val_accuracy'])} | {s['val_accuracy'].n} | "
            f"{mark} | {_pm(s['loss'])} | {_pm(s['accuracy'])} | {_pm(s['val_loss'])} |"
        )
    caption = "The reference study's published values beside this study's, per epoch budget."
    out = ["## Replication of the reference study", "", *table("\n".join(out), caption)]
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
        if complete and cfg.search.confirm.top_k and not cfg.search.objectives:
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


# --------------------------------------------------------------------------- the abstract


def duration_text(seconds: float) -> str:
    """A wall time in the unit that reads best: `42 s`, `12.5 min`, `3.2 h`."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def question(cfg: Config, searched: list[str]) -> str:
    """The question a study asks, in words, from what it searches and what it optimizes."""
    s, t = cfg.search, cfg.trainer
    names = ", ".join(f"`{k}`" for k in searched) or "the configured settings"
    ways = [str(d) for d in s.directions] if s.objectives else [str(s.direction)]
    goals = " and the ".join(
        f"{'highest' if d == 'maximize' else 'lowest'} `{k}`"
        for k, d in zip(s.objectives or [s.metric], ways, strict=True)
    )
    budget = "" if "trainer.epochs" in searched else f" for {_epochs(t.epochs)}"
    trade = " (a trade-off: the Pareto front)" if s.objectives else ""
    return (
        f"Which {names} give the {goals}{trade} of the `{cfg.model.name}` network trained "
        f"with `{cfg.optimizer.name}`{budget} on CIFAR-10?"
    )


def summary_section(
    cfg: Config,
    rows: list[TrialRow],
    best: optuna.trial.FrozenTrial | None,
    confirmation: Confirmation | None,
    test: Evaluation | None,
    searched: list[str],
    wall_seconds: float,
) -> list[str]:
    """The abstract: the question, the best configuration with its value and the number of
    seeds it rests on (its interval where several), its test accuracy with Wilson's interval
    over the test images, the trials by state and the wall time."""
    s = cfg.search
    lines = ["## Summary", "", f"**Question.** {question(cfg, searched)}", ""]
    if confirmation is not None:
        w = confirmation.winner
        number, params, value = w.number, w.params, w.summary.text()
        how = f", chosen on the means of {w.summary.n} seeds"
    elif best is not None:
        number, params = best.number, best.params
        value = (best_summary(rows, best.number) or summarize(best.values[:1])).text()
        how = " (on the Pareto front, best on the first objective)" if s.objectives else ""
    else:
        number = None
    if number is None:
        lines += ["**Best configuration.** None yet: no trial has completed.", ""]
    else:
        shown = ", ".join(f"`{k}` = {param_text(v)}" for k, v in params.items())
        lines += [
            f"**Best configuration.** Trial {number}{how}: {shown}; `{s.metric}` {value}.",
            "",
        ]
    if test is not None:
        low, high = test.accuracy_interval()
        lines += [
            f"**Test accuracy.** {test.accuracy:.4f} (95 % CI {low:.4f} to {high:.4f}, Wilson, "
            f"over {test.n:,} test images). It rests on one trained model (one seed); the "
            "interval covers the finite test set, not seed-to-seed variation.",
            "",
        ]
    n = {k: sum(1 for r in rows if r.trial.state.name == k) for k in ("COMPLETE", "PRUNED", "FAIL")}
    other = len(rows) - sum(n.values())
    lines += [
        f"**Trials.** {len(rows)} of {s.n_trials} planned: {n['COMPLETE']} complete, "
        f"{n['PRUNED']} pruned, {n['FAIL']} failed"
        + (f", {other} unfinished" if other else "")
        + f"; `{s.sampler.name}` sampler, "
        + ("no pruning (several objectives)" if s.objectives else f"`{s.pruner.name}` pruner")
        + "; wall time "
        f"{duration_text(wall_seconds)}.",
        "",
    ]
    return lines
