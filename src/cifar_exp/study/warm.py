"""Warm starts: a new study begins from what an earlier one learned (`search.warm_start`).

The best `search.warm_start_top` configurations of the earlier study are queued as the new
study's first trials (`enqueue_trial`), and when both studies search the same distributions
the earlier study's finished trials are added as prior knowledge for the sampler
(`add_trials`). Those copies are marked (`prior_from`) and never count as the new study's own
trials: not towards `n_trials`, not as its best, not in its report's results.
"""

from __future__ import annotations

import logging

import optuna

from cifar_exp.config import Config, ConfigError, mask
from cifar_exp.study.space import Param
from cifar_exp.study.trials import FINISHED, PRIOR, complete, own, primary

log = logging.getLogger(__name__)

FROM = "warm_start_from"  # user attribute of a queued trial: "<study>#<trial number>"


def source(cfg: Config, url: str) -> optuna.Study | None:
    """The study `search.warm_start` names (None where none is), checked before the new study
    is made or resumed: a refused warm start leaves no empty study behind."""
    name = cfg.search.warm_start
    if not name:
        return None
    if name == cfg.search.study_name:
        raise ConfigError("search.warm_start: a study cannot warm-start from itself")
    try:
        return optuna.load_study(study_name=name, storage=url)
    except KeyError:
        raise ConfigError(f"search.warm_start: no study {name!r} in {mask(url)}") from None


def warm_start(
    study: optuna.Study, earlier: optuna.Study | None, space: list[Param], top: int
) -> None:
    """Seed a new, empty study from `earlier` (`source`): its best `top` configurations."""
    if earlier is None or study.get_trials(deepcopy=False):
        return  # nothing asked, or resuming: the warm start happened when the study began
    name = earlier.study_name
    distributions = _distributions(space)
    maximize = earlier.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    ranked = sorted(complete(earlier), key=primary, reverse=maximize)  # on its first objective
    queued = 0
    for t in ranked[:top]:
        # only values the new space holds: the sampler draws the rest
        params = {
            k: v for k, v in t.params.items() if k in distributions and _holds(distributions[k], v)
        }
        if params:
            study.enqueue_trial(params, user_attrs={FROM: f"{name}#{t.number}"})
            queued += 1
    finished = own(earlier.get_trials(deepcopy=False, states=FINISHED))
    same = bool(finished) and all(t.distributions == distributions for t in finished)
    same = same and earlier.directions == study.directions  # values the sampler can compare
    if same:
        study.add_trials(
            [
                optuna.trial.create_trial(
                    state=t.state,
                    values=t.values if t.state == optuna.trial.TrialState.COMPLETE else None,
                    params=t.params,
                    distributions=t.distributions,
                    intermediate_values=t.intermediate_values,
                    user_attrs={PRIOR: f"{name}#{t.number}"},
                )
                for t in finished
            ]
        )
    log.info(
        "warm start from study %r: its best %d configuration(s) run first%s",
        name,
        queued,
        f"; its {len(finished)} finished trials inform the sampler"
        if same
        else " (its search space differs, so its trials are not added as prior knowledge)",
    )


def _distributions(space: list[Param]) -> dict[str, optuna.distributions.BaseDistribution]:
    """The distributions `space` suggests from, as Optuna records them on a trial."""
    scratch = optuna.create_study().ask()
    for p in space:
        p.suggest(scratch)
    return scratch.distributions


def _holds(dist: optuna.distributions.BaseDistribution, value: object) -> bool:
    """`value` is one the distribution can give (a choice of it, within its range)."""
    try:
        return bool(dist._contains(dist.to_internal_repr(value)))
    except (ValueError, TypeError):
        return False
