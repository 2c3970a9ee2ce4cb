"""Models by reference: the MLflow model registry, the `champion` alias, loading a model from
a run id, a `models:/` URI or a `.keras` file (always in Keras safe mode), and the facts a
registered version carries (study, trial, seed, test accuracy) that `model_card` reads."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from cifar_exp.cifar_files import sha256
from cifar_exp.config import Config
from cifar_exp.keras_files import ModelNotFound as ModelNotFound
from cifar_exp.keras_files import ModelRefused as ModelRefused
from cifar_exp.keras_files import load_keras_file
from cifar_exp.stores import created_elsewhere
from cifar_exp.tracking import missing_store, setup
from cifar_exp.train import Evaluation

log = logging.getLogger(__name__)

CHAMPION = "champion"


@dataclass(frozen=True)
class Registration:
    """A model version registered by a study, and whether it took the champion alias: only
    when it is better than the champion on the same full test set with significance
    (McNemar's exact test at `tracking.champion_alpha`), whatever validation set either study
    measured its own value on."""

    name: str
    version: int
    champion: bool  # the alias is on this version now
    previous: int | None  # the champion before (None: there was none)
    decision: str  # in words, with both accuracies, their intervals and the p-value
    p_value: float | None = None


def register_best(cfg: Config, run_id: str, value: float, study_name: str) -> Registration:
    """Register the model of `run_id` under `tracking.registered_model`; move the champion
    alias to it only if it beats the current champion on the full test set of `cfg.data`'s
    source with significance. The decision and its numbers are tags on the new version."""
    name = cfg.tracking.registered_model
    setup(cfg.tracking)
    client = MlflowClient()
    # `value` is the study's first objective (its only one, unless multi-objective)
    metric = (list(cfg.search.objectives or []) or [cfg.search.metric])[0]
    direction = str((list(cfg.search.directions or []) or [cfg.search.direction])[0])
    try:
        client.get_registered_model(name)
    except MlflowException:
        try:
            client.create_registered_model(name, description="CIFAR-10 CNNs from cifar-exp studies")
        except MlflowException as e:
            if not created_elsewhere(e):  # else another study's worker made it just now
                raise
    existing = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    tags = {
        "study": study_name,
        "metric": metric,
        "value": str(value),
        "direction": direction,
        "validation": str(cfg.data.validation),
        **run_facts(client, run_id),
    }
    version = (
        existing[0]
        if existing
        else client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id, tags=tags)
    )
    for key, val in tags.items() if existing else ():  # facts a version from before lacks
        if key not in (version.tags or {}):
            client.set_model_version_tag(name, version.version, key, val)
    previous = _champion(client, name)
    record: dict[str, Any] = {}
    p = None
    uri = f"models:/{name}/{version.version}"
    splits = _full_test_set(cfg)
    if previous is None:
        client.set_registered_model_alias(name, CHAMPION, version.version)
        is_champion, decision = True, "the first champion"
    elif previous.version == version.version:
        is_champion, decision = True, "already the champion"
    else:
        record = challenge(cfg, uri, f"models:/{name}/{previous.version}", splits)
        p = record["champion.p_value"]
        better = record["champion.challenger_accuracy"] > record["champion.incumbent_accuracy"]
        is_champion = better and p < cfg.tracking.champion_alpha
        if is_champion:
            client.set_registered_model_alias(name, CHAMPION, version.version)
        decision = _decision(is_champion, previous.version, record, cfg.tracking.champion_alpha)
    if "challenger" in record:  # measured on the full test set just now
        record.update(_test_tags(record.pop("challenger"), splits))
        _backfill(client, name, previous.version, record.pop("incumbent"), splits)
    elif TEST_ACCURACY not in (version.tags or {}):
        record.update(_test_tags(_correct(cfg, uri, splits), splits))
        decision += (
            f" (test accuracy {float(record[TEST_ACCURACY]):.4f} [{record['test.ci']}] on "
            f"{record['test.images']} images)"
        )
    record["champion.decision"] = decision
    for key, val in record.items():
        client.set_model_version_tag(name, version.version, key, str(val))
    return Registration(
        name=name,
        version=int(version.version),
        champion=is_champion,
        previous=int(previous.version) if previous else None,
        decision=decision,
        p_value=p,
    )


def challenge(cfg: Config, challenger: str, incumbent: str, splits: Any) -> dict[str, Any]:
    """Both models on the same full test set (every test image of the data source): their
    accuracies with Wilson 95 % intervals, and McNemar's exact test on per-image correctness.
    Also each model's per-image correctness, under "challenger" and "incumbent"."""
    from cifar_exp.stats import accuracy_interval, mcnemar

    correct = {
        "challenger": _correct(cfg, challenger, splits),
        "incumbent": _correct(cfg, incumbent, splits),
    }
    n = len(splits.y_test)
    test = mcnemar(correct["challenger"], correct["incumbent"])
    out: dict[str, Any] = {"champion.test_images": n}
    for role, right in correct.items():
        low, high = accuracy_interval(int(right.sum()), n)
        out[f"champion.{role}_accuracy"] = float(right.mean())
        out[f"champion.{role}_ci"] = f"{low:.4f}-{high:.4f}"
    out.update(
        {
            "champion.only_challenger_right": test.only_a,
            "champion.only_incumbent_right": test.only_b,
            "champion.p_value": test.p_value,
            "champion.test": "McNemar exact (binomial on discordant images)",
        }
    )
    return {**out, **correct}


def _full_test_set(cfg: Config) -> Any:
    """Every test image of `cfg.data`'s source, whatever subset a study measured on."""
    from omegaconf import OmegaConf

    from cifar_exp.data import load_cifar10

    return load_cifar10(OmegaConf.merge(cfg.data, {"limit_test": None}))


def _correct(cfg: Config, uri: str, splits: Any) -> Any:
    """Per test image: does the model at `uri` get it right."""
    from cifar_exp.train import predict_classes

    model, _ = load_model(uri, cfg)
    return predict_classes(model, splits.x_test) == splits.y_test


# What `predict` shows with every prediction, recorded on the model version at registration:
# the model is one training (one seed), measured on every image of the test set.
TEST_ACCURACY = "test.accuracy"
EVALUATES_SHA256 = "evaluates.sha256"  # on an `evaluate` run: the sha256 of the .keras file


def _test_tags(right: Any, splits: Any) -> dict[str, str]:
    from cifar_exp.stats import accuracy_interval

    n, k = len(right), int(right.sum())
    low, high = accuracy_interval(k, n)
    return {
        TEST_ACCURACY: f"{k / n:.6g}",
        "test.images": str(n),
        "test.correct": str(k),
        "test.ci": f"{low:.4f}-{high:.4f}",
        "test.seeds": "1",
        "test.data_sha256": str(splits.info.get("sha256", "")),
    }


def _backfill(client: MlflowClient, name: str, version: str, right: Any, splits: Any) -> None:
    """The incumbent's test accuracy, measured just now, on a version registered before
    versions carried one."""
    if TEST_ACCURACY not in (client.get_model_version(name, version).tags or {}):
        for key, val in _test_tags(right, splits).items():
            client.set_model_version_tag(name, version, key, val)


def run_facts(client: MlflowClient, run_id: str) -> dict[str, str]:
    """The trial and seed of the run whose model is registered, from its record."""
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return {}
    tags, params = run.data.tags, run.data.params
    out = {"trial": tags.get("optuna.trial_number"), "seed": tags.get("seed")}
    out["seed"] = out["seed"] or params.get("trainer.seed")
    return {k: v for k, v in out.items() if v is not None}


def _decision(moves: bool, previous: str, r: dict[str, Any], alpha: float) -> str:
    nums = (
        f"test accuracy {r['champion.challenger_accuracy']:.4f} "
        f"[{r['champion.challenger_ci']}] vs {r['champion.incumbent_accuracy']:.4f} "
        f"[{r['champion.incumbent_ci']}] on {r['champion.test_images']} images, McNemar "
        f"p = {r['champion.p_value']:.3g}"
    )
    if moves:
        return f"now the champion (better than version {previous}: {nums})"
    return f"the champion stays version {previous} (not better at alpha {alpha:g}: {nums})"


def _champion(client: MlflowClient, name: str) -> Any:
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def champion_uri(cfg: Config) -> str:
    return f"models:/{cfg.tracking.registered_model}@{CHAMPION}"


def model_uri(reference: str | None, cfg: Config) -> str:
    """A loadable URI for a run id, a `models:/` / `runs:/` URI or a `.keras` path
    (None means the registry champion)."""
    if reference is None:
        return champion_uri(cfg)
    if reference.startswith(("models:/", "runs:/")) or reference.endswith(".keras"):
        return reference
    if len(reference) == 32 and all(c in "0123456789abcdef" for c in reference):
        return f"runs:/{reference}/model"
    raise ModelNotFound(f"{reference}: not a run id, a models:/ or runs:/ URI, or a .keras file")


def load_model(reference: str | None, cfg: Config) -> tuple[Any, str]:
    """The Keras model a reference names, loaded in safe mode and checked to be a CIFAR-10
    classifier (32x32x3 in, 10 classes out); also the URI it came from."""
    model, uri, _ = load_with_file(reference, cfg)
    return model, uri


def load_with_file(reference: str | None, cfg: Config) -> tuple[Any, str, Path]:
    """`load_model`, and the .keras file the model was read from."""
    uri = model_uri(reference, cfg)
    if is_file(uri):
        path = Path(uri).expanduser()
        if not path.is_file():
            raise ModelNotFound(f"{uri}: no such model file")
        return load_keras_file(path, uri), str(path.resolve()), path
    hint = " (no study has registered a champion yet)" if reference is None else ""
    store = missing_store(cfg.tracking)
    if store is not None:  # nothing to find there: make nothing
        raise ModelNotFound(f"{uri}: no MLflow store at {store}{hint}")
    setup(cfg.tracking)
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    except (MlflowException, OSError) as e:
        raise ModelNotFound(f"{uri}: {str(e).splitlines()[0]}{hint}") from None
    files = sorted(local.rglob("*.keras"))
    if not files:
        raise ModelNotFound(f"{uri}: holds no Keras model")
    return load_keras_file(files[0], uri), uri, files[0]


def _training_run(uri: str) -> str | None:
    """The run that trained the model a `runs:/` or `models:/` URI names."""
    version = model_version(MlflowClient(), uri)
    return version.run_id if version is not None else run_of_uri(uri)


def is_file(uri: str) -> bool:
    return uri.endswith(".keras") and not uri.startswith(("models:/", "runs:/"))


def model_version(client: MlflowClient, uri: str) -> Any:
    """The registered version a `models:/` URI names, or the first that holds a run's model."""
    try:
        if uri.startswith("models:/"):
            name, sep, alias = uri.removeprefix("models:/").partition("@")
            if sep:
                return client.get_model_version_by_alias(name, alias)
            name, _, number = name.partition("/")
            if number.isdigit():
                return client.get_model_version(name, number)
            found = client.search_model_versions(f"name = '{name}'")  # models:/NAME/latest
            return max(found, key=lambda v: int(v.version)) if found else None
        run_id = run_of_uri(uri)
        found = client.search_model_versions(f"run_id = '{run_id}'") if run_id else []
        return min(found, key=lambda v: int(v.version)) if found else None
    except MlflowException:
        return None


def run_of_uri(uri: str) -> str | None:
    return uri.removeprefix("runs:/").split("/")[0] if uri.startswith("runs:/") else None


def evaluate_model(
    reference: str | None, cfg: Config, overrides: list[str] | tuple[str, ...] = ()
) -> Evaluation:
    """A model reference on the test set (loss, accuracy, per-class accuracy, confusion
    matrix), logged as an `evaluate` MLflow run when tracking is on. The test set is that of
    the data the model's training run recorded (its source, split and subsets: a fact of the
    run, not of this environment), with the command line's `data.*` overrides on top; a bare
    `.keras` file, which has no record, is evaluated on `cfg.data`."""
    from cifar_exp import runs
    from cifar_exp.data import load_cifar10
    from cifar_exp.tracking import run, run_config, run_tags
    from cifar_exp.train import evaluate

    model, uri, path = load_with_file(reference, cfg)
    data = cfg.data
    trained = None if is_file(uri) else _training_run(uri)
    if trained is not None:
        data = run_config(trained, cfg, [o for o in overrides if o.startswith("data.")]).data
    splits = load_cifar10(data)
    if not cfg.tracking.enabled:
        result = evaluate(model, splits.x_test, splits.y_test)
    else:
        experiment_id = setup(cfg.tracking)
        tags = {
            **run_tags(cfg),
            "evaluates": uri,
            EVALUATES_SHA256: sha256(path),  # how `model_record` finds it, wherever the file is
            "data.sha256": splits.info["sha256"],
        }
        with run("evaluate", experiment_id, tags=tags):
            result = runs.evaluate_and_log(model, splits)
    result.model = uri
    return result
