"""Loading a model by reference refuses what is not a CIFAR-10 classifier, and archives that
expand far beyond what a model holds, before Keras reads them."""

import tracemalloc
import zipfile

import keras
import pytest

from cifar_exp.config import compose
from cifar_exp.registry import ModelNotFound, load_model


@pytest.mark.parametrize(
    ("shape", "classes", "message"),
    [((28, 28, 1), 10, r"takes \(28, 28, 1\)"), ((32, 32, 3), 5, r"gives \(5,\)")],
)
def test_a_model_that_is_not_a_cifar10_classifier_is_refused(tmp_path, shape, classes, message):
    inputs = keras.Input(shape)
    outputs = keras.layers.Dense(classes, activation="softmax")(keras.layers.Flatten()(inputs))
    path = tmp_path / "other.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(ModelNotFound, match=message):
        load_model(str(path), compose([]))


def test_a_cifar10_model_file_loads(model_file):
    model, source = load_model(str(model_file), compose([]))
    assert model.output_shape == (None, 10) and source.endswith("model.keras")


def test_a_keras_file_whose_config_expands_to_100_mib_is_refused_unread(tmp_path):
    path = tmp_path / "bomb.keras"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("config.json", "w") as fh:
            for _ in range(100):
                fh.write(b" " * 2**20)
        archive.writestr("metadata.json", "{}")
    assert path.stat().st_size < 2**20
    tracemalloc.start()
    try:
        with pytest.raises(ModelNotFound, match=r"config\.json expands to 100 MiB"):
            load_model(str(path), compose([]))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20, f"{peak / 2**20:.0f} MiB allocated"


# --------------------------------------------------------------------------- champion gate


def test_the_champion_moves_only_on_evidence_from_the_same_test_set(overrides):
    """A first model becomes the champion; a clearly better one takes the alias (McNemar on
    the same full test set); a worse one that claims a perfect value measured elsewhere does
    not; a model with identical predictions does not."""
    import mlflow

    from cifar_exp.config import with_overrides
    from cifar_exp.registry import CHAMPION, register_best
    from cifar_exp.reproduce import reproduce
    from cifar_exp.runs import train_tracked
    from cifar_exp.tracking import tracking_uri

    cfg = compose([*overrides, "trainer.epochs=1"])
    weak = train_tracked(with_overrides(cfg, {"optimizer.lr": 1e-7}), verbose="0")
    strong = train_tracked(with_overrides(cfg, {"trainer.epochs": 2}), verbose="0")
    assert strong.test.accuracy > weak.test.accuracy + 0.2
    client = mlflow.MlflowClient(tracking_uri(cfg.tracking))

    def champion():
        return client.get_model_version_by_alias(cfg.tracking.registered_model, CHAMPION).run_id

    first = register_best(cfg, weak.run_id, weak.final["val_accuracy"], "a")
    assert first.champion and champion() == weak.run_id
    assert first.decision.startswith("the first champion (test accuracy 0.")
    assert first.decision.endswith("on 200 images)")
    better = register_best(cfg, strong.run_id, strong.final["val_accuracy"], "b")
    assert better.champion and better.p_value < 0.05 and champion() == strong.run_id
    assert better.decision.startswith("now the champion")
    tags = client.get_model_version(cfg.tracking.registered_model, str(better.version)).tags
    assert float(tags["champion.p_value"]) == pytest.approx(better.p_value)
    assert {"champion.challenger_ci", "champion.incumbent_ci", "champion.decision"} <= set(tags)
    # what predict shows, recorded on each version: the test accuracy on the full test set
    # (measured once: the champion gate's number), the images and the seed it rests on
    assert float(tags["test.accuracy"]) == pytest.approx(
        float(tags["champion.challenger_accuracy"])
    )
    assert tags["test.images"] == tags["champion.test_images"] == "200"
    assert int(tags["test.correct"]) == round(float(tags["test.accuracy"]) * 200)
    assert (tags["test.seeds"], tags["seed"], tags["study"]) == ("1", str(cfg.trainer.seed), "b")
    low, high = map(float, tags["test.ci"].split("-"))
    assert low < float(tags["test.accuracy"]) < high
    first_tags = client.get_model_version(cfg.tracking.registered_model, "1").tags
    assert float(first_tags["test.accuracy"]) == pytest.approx(weak.test.accuracy)
    assert first_tags["test.images"] == "200" and "champion.p_value" not in first_tags
    # the weak model again, claiming a perfect value from some other (smaller) validation set
    again = train_tracked(with_overrides(cfg, {"optimizer.lr": 1e-7, "trainer.seed": 8}))
    claimed = register_best(cfg, again.run_id, 1.0, "subset")
    assert not claimed.champion and champion() == strong.run_id
    assert claimed.decision.startswith("the champion stays")
    # identical predictions (the same training repeated): no evidence, no move
    twin = reproduce(strong.run_id, cfg).reproduction
    same = register_best(cfg, twin, strong.final["val_accuracy"] + 0.1, "twin")
    assert not same.champion and same.p_value == 1.0 and champion() == strong.run_id
