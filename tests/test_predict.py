import json
import subprocess
import sys

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
    first, second = payload["results"]
    assert len(first["predictions"]) == 3 and first["error"] is None
    assert "not an image" in second["error"] and second["predictions"] == []
    proc = _predict("--model", model_file, images / "small.bmp", images / "bad" / "empty.png")
    assert proc.returncode == 1
    assert "small.bmp" in proc.stdout
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "empty.png: empty file" in errors[0]
