import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cifar_exp.data import CLASS_NAMES
from cifar_exp.predict import Classifier, ImageError, expand, open_image, to_input


def test_every_kind_of_image_becomes_rgb_32x32(images):
    for name in ("photo.jpg", "gray.png", "rgba.png", "anim.gif", "wide.webp", "small.bmp"):
        image = open_image(images / name)
        assert image.mode == "RGB", name
        x = to_input(image)
        assert x.shape == (32, 32, 3) and x.dtype == np.float32
        assert x.min() >= 0.0 and x.max() <= 1.0


def test_transparency_is_composited_over_white(images):
    x = to_input(open_image(images / "rgba.png"))
    np.testing.assert_allclose(x[2, 5], [1.0, 0.0, 0.0], atol=0.02)  # opaque red
    np.testing.assert_allclose(x[29, 5], [1.0, 1.0, 1.0], atol=0.02)  # transparent -> white


def test_resize_matches_the_reference(images):
    image = open_image(images / "photo.jpg")
    expected = np.asarray(image.resize((32, 32)), np.float32) / 255  # Image.resize default
    np.testing.assert_allclose(to_input(image), expected, atol=1 / 255)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("empty.png", "empty file"),
        ("text.png", "not an image"),
        ("truncated.jpg", "truncated or corrupt"),
        ("bomb.png", "decompression bomb"),
        ("missing.png", "no such file"),
    ],
)
def test_broken_files_fail_with_their_name(images, name, message):
    with pytest.raises(ImageError) as err:
        open_image(images / "bad" / name)
    assert str(err.value).startswith(str(images / "bad" / name)) and message in str(err.value)


def test_folders_expand_to_their_images(images):
    names = [p.name for p in expand([str(images)])]
    assert names == sorted(names) and "photo.jpg" in names and "bad" not in names


def test_classifier_top3_and_errors_side_by_side(images, model_file):
    import keras

    clf = Classifier(keras.saving.load_model(model_file), str(model_file))
    results = clf.predict_paths(
        [str(images / "photo.jpg"), str(images / "bad"), str(images / "gray.png")]
    )
    ok = [r for r in results if not r.error]
    assert [r.image.rsplit("/", 1)[-1] for r in ok] == ["photo.jpg", "gray.png"]
    assert len([r for r in results if r.error]) == 4
    for r in ok:
        assert len(r.top) == 3 and all(c in CLASS_NAMES for c, _ in r.top)
        probs = [p for _, p in r.top]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6


def _predict(*args):
    cmd = [sys.executable, "-m", "cifar_exp", "predict", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_predict_cli(images, model_file, workdir):
    proc = _predict(
        "--model", model_file, "--json", images / "photo.jpg", images / "bad" / "text.png"
    )
    assert proc.returncode == 1, proc.stderr
    payload = json.loads(proc.stdout)
    # a bare file never evaluated: its accuracy is said to be unknown, never made up
    model = payload["model"]
    assert model["reference"] == str(model_file.resolve()) and model["test_accuracy"] is None
    assert model["test_accuracy_unknown"].startswith("test accuracy unknown")
    assert model["near_chance"] is None and model["warning"] is None
    assert not (workdir / "mlruns").exists()  # looking the file up created no store
    first, second = payload["results"]
    assert len(first["predictions"]) == 3 and first["error"] is None
    assert "not an image" in second["error"] and second["predictions"] == []
    proc = _predict("--model", model_file, images / "small.bmp", images / "bad" / "empty.png")
    assert proc.returncode == 1
    assert "small.bmp" in proc.stdout
    text = " ".join(proc.stdout.split())
    assert f"model: {model_file.resolve()}" in text
    assert "test accuracy unknown: this model file was never evaluated" in text
    assert "warning" not in proc.stdout
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "empty.png: empty file" in errors[0]


# --------------------------------------------------------------------------- the model's card


def _card(correct, n):
    from cifar_exp.model_card import ModelCard, TestAccuracy

    return ModelCard("m.keras", test=TestAccuracy(correct / n, n, correct, 1, "from a test"))


def test_near_chance_is_the_interval_reaching_below_twice_chance():
    guessing, tour, few, good = (
        _card(100, 1000),
        _card(1750, 10000),
        _card(25, 100),
        _card(700, 1000),
    )
    assert "no better than guessing one of 10 classes" in guessing.warning()
    assert "binomial test p = " in guessing.warning()
    # the one-minute tour's champion: far from 10 % by any test, yet wrong on 4 images in 5
    assert tour.test.p_chance() < 1e-50 and tour.near_chance()
    assert "near chance: its 95 % interval 16.8%-18.3% reaches below 20%" in tour.warning()
    assert few.near_chance()  # 25 % of 100 images does not show it is clearly above 20 %
    assert good.near_chance() is False and good.warning() is None
    assert good.accuracy_text().startswith("test accuracy 0.7000 (95 % CI 0.67")
    assert "1000 test images, 1 seed), from a test" in good.accuracy_text()


def test_a_model_without_a_record_says_its_accuracy_is_unknown(model_file):
    import keras

    clf = Classifier(keras.saving.load_model(model_file), "somewhere")
    assert clf.card.test is None and clf.card.near_chance() is None
    assert clf.card.accuracy_text() == "test accuracy unknown: no record of somewhere"


@pytest.mark.slow
def test_predict_shows_the_registered_model_and_its_test_accuracy(overrides, images, model_file):
    """A trial's model, registered: predict names its version, study, trial and seed and shows
    the test accuracy measured at registration (not on the trial's run, which has none); an
    evaluated model file at chance gets the warning, read from its `evaluate` run."""
    from cifar_exp.config import compose
    from cifar_exp.registry import evaluate_model, register_best
    from cifar_exp.runs import train_tracked

    cfg = compose([*overrides, "trainer.epochs=3"])
    trial = {"optuna.study_name": "tour", "optuna.trial_number": "3"}
    good = train_tracked(cfg, extra_tags=trial, evaluate_test=False, verbose="0")
    register_best(cfg, good.run_id, good.final["val_accuracy"], "tour")
    proc = _predict("--json", images / "photo.jpg", *overrides)
    assert proc.returncode == 0, proc.stderr
    model = json.loads(proc.stdout)["model"]
    assert model["reference"] == "models:/cifar10-cnn@champion" and model["version"] == 1
    seed = cfg.trainer.seed
    assert (model["study"], model["trial"], model["seed"]) == ("tour", 3, seed)
    test = model["test_accuracy"]
    assert test["images"] == 200 and test["seeds"] == 1 and test["correct"] > 100
    assert test["ci95"][0] < test["accuracy"] < test["ci95"][1]
    assert test["source"] == "measured at registration"
    assert model["near_chance"] is False and model["warning"] is None
    proc = _predict(images / "photo.jpg", *overrides)
    text = " ".join(proc.stdout.split())  # as read, whatever the terminal's width wrapped
    reference = f"models:/cifar10-cnn@champion (version 1; study tour, trial 3, seed {seed})"
    assert f"model: {reference}" in text
    assert f"test accuracy {test['accuracy']:.4f} (95 % CI" in text
    assert "200 test images, 1 seed), measured at registration" in text
    assert "warning" not in text

    # the untrained model file, evaluated: its accuracy is near chance, and predict says so
    chance = evaluate_model(str(model_file), cfg)
    proc = _predict("--model", model_file, images / "photo.jpg", *overrides)
    text = " ".join(proc.stdout.split())
    assert f"test accuracy {chance.accuracy:.4f}" in text, proc.stdout
    assert f"from evaluate run {chance.run_id}" in text
    assert "warning: this model is" in text and "most of its predictions are wrong" in text


@pytest.mark.parametrize("mode", ["I;16", "I"])
def test_a_16_bit_grayscale_image_is_scaled_not_clipped_to_white(tmp_path, mode):
    """(Pillow's own convert clipped a 16-bit PNG's values to 255: every one read as white.)"""
    from PIL import Image

    from cifar_exp.predict import open_image

    ramp = (np.arange(32 * 32, dtype=np.int64).reshape(32, 32) * 64).astype(
        np.uint16 if mode == "I;16" else np.int32
    )  # 0 ... 65472
    image = Image.fromarray(ramp)
    assert image.mode == mode
    path = tmp_path / ("gray16.png" if mode == "I;16" else "gray32.tif")  # PNG holds no "I"
    image.save(path)
    rgb = np.asarray(open_image(path))
    assert rgb.shape == (32, 32, 3)
    assert abs(int(rgb[16, 0, 0]) - round(16 * 32 * 64 / 257)) <= 1  # mid-grey, not 255
    assert rgb[0, 0, 0] == 0 and rgb[-1, -1, 0] >= 254


def test_a_device_or_fifo_is_not_an_image_and_not_read(tmp_path):
    """(Both were called "empty file", their size being 0.)"""
    import os

    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero")):
        with pytest.raises(ImageError, match="not a regular file"):
            open_image(path)


def test_a_trained_model_classifies_more_images_than_a_batch(tmp_path):
    """A model as `train` saves it (compiled with 64 steps per call) classifies more images
    than a batch, each row its own image's: the one-step prediction (`models.predict`) must not
    reuse a Keras function made for another grouping, which returns one batch's rows."""
    import keras
    from PIL import Image

    from cifar_exp.config import compose
    from cifar_exp.models import build_model

    keras.utils.set_random_seed(0)
    model = build_model(compose([]).model)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", steps_per_execution=64)
    model.save(tmp_path / "model.keras")
    clf = Classifier(keras.saving.load_model(tmp_path / "model.keras"), "m")
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(70)]
    together = clf.classify(images, top=1)
    assert len(together) == 70
    for i in range(0, 70, 10):  # each row is its own image's
        ((name, p),) = together[i]
        ((alone_name, alone_p),) = clf.classify([images[i]], top=1)[0]
        assert name == alone_name and p == pytest.approx(alone_p, rel=1e-5)
