"""The Tkinter window, driven for real on a virtual display."""

import re
import time

import pytest
from PIL import Image, ImageGrab

from cifar_exp.model_card import ModelCard, TestAccuracy
from cifar_exp.predict import Classifier

from .conftest import ARTIFACTS


def pump(root, until, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        root.update()
        if until():
            return
        time.sleep(0.02)
    raise AssertionError("the window did not get there in time")


def _places(app):
    """Where the preview area, the result and the bars sit, and their sizes."""
    widgets = (app.preview.master, app.result.master, app.bars, app.error.master)
    return [(w.winfo_x(), w.winfo_y(), w.winfo_width(), w.winfo_height()) for w in widgets]


def _shot(root, xdisplay, name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    x, y = root.winfo_rootx(), root.winfo_rooty()
    shot = ImageGrab.grab(
        bbox=(x, y, x + root.winfo_width(), y + root.winfo_height()), xdisplay=xdisplay
    )
    shot.save(ARTIFACTS / name)
    return shot


def test_window_loads_classifies_and_reports_errors(
    xdisplay,
    monkeypatch,
    images,
    model_file,
):
    monkeypatch.setenv("DISPLAY", xdisplay)
    import tkinter as tk

    import keras

    from cifar_exp.gui import BAR, TITLE, TRACK, App

    card = ModelCard(
        "models:/cifar10-cnn@champion",
        name="cifar10-cnn",
        version=3,
        study="tour",
        trial="2",
        seed="7",
        test=TestAccuracy(0.175, 10000, 1750, 1, "measured at registration"),
    )
    root = tk.Tk()
    try:
        app = App(root, lambda: Classifier(keras.saving.load_model(model_file), "m", card))
        assert root.title() == TITLE == "Image Classification CIFAR10"
        assert app.upload_button.cget("text") == "Upload an image"
        assert str(app.classify_button.cget("state")) == "disabled"
        pump(root, lambda: app.classifier is not None)  # loaded off the UI thread
        # the model line: its reference, its test accuracy and the near-chance warning
        assert app.model_label.cget("text") == (
            "model: models:/cifar10-cnn@champion (version 3; study tour, trial 2, seed 7)"
        )
        assert app.accuracy_label.cget("text").startswith(
            "test accuracy 0.1750 (95 % CI 0.1677-0.1826, 10000 test images, 1 seed)"
        )
        assert "near chance" in app.warning_label.cget("text")
        assert app.load_image(images / "photo.jpg")
        assert str(app.classify_button.cget("state")) == "normal"
        root.update()
        before = _places(app)
        shot = _shot(root, xdisplay, "gui-before.png")
        app.classify_button.invoke()
        pump(root, lambda: app.result.cget("text") != "")
        label = app.result.cget("text")
        assert re.fullmatch(r"[a-z]+ \(\d+\.\d%\)", label), label
        assert len(app.top) == 3 and app.top[0][0] == label.split()[0]
        items = app.bars.find_all()
        texts = [app.bars.itemcget(i, "text") for i in items if app.bars.type(i) == "text"]
        # per row: the class name, then its percentage
        assert texts == [t for c, p in app.top for t in (c, f"{p:.1%}")]
        tracks = [i for i in items if app.bars.itemcget(i, "fill") == TRACK]
        assert len(tracks) == 3 and all(  # every track is the full bar width
            app.bars.coords(i)[2] - app.bars.coords(i)[0] == BAR["width"] for i in tracks
        )
        root.update()
        assert _places(app) == before  # nothing moved when the result came
        after = _shot(root, xdisplay, "gui.png")
        assert after.size == shot.size and len(set(after.getdata())) > 10  # something drawn
        # a wide image: the preview area keeps its size and place
        assert app.load_image(images / "wide.webp")
        root.update()
        assert _places(app) == before
        # a bad file: an error in the window, nothing classified
        assert not app.load_image(images / "bad" / "text.png")
        assert "not an image" in app.error.cget("text")
        assert app.result.cget("text") == ""
        assert str(app.classify_button.cget("state")) == "disabled"
    finally:
        root.destroy()


def test_model_that_fails_to_load_is_shown(xdisplay, monkeypatch):
    monkeypatch.setenv("DISPLAY", xdisplay)
    import tkinter as tk

    from cifar_exp.gui import App

    def broken():
        raise FileNotFoundError("models:/cifar10-cnn@champion: no champion yet")

    root = tk.Tk()
    try:
        app = App(root, broken)
        pump(root, lambda: app.error.cget("text") != "")
        assert "could not load the model" in app.error.cget("text")
        assert app.model_label.cget("text") == "no model loaded"
    finally:
        root.destroy()


@pytest.mark.slow
def test_gui_command_without_display_is_one_clear_line(monkeypatch):
    import subprocess
    import sys

    env = {k: v for k, v in __import__("os").environ.items() if k != "DISPLAY"}
    proc = subprocess.run(
        [sys.executable, "-m", "cifar_exp", "gui"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: gui: no display")
    assert Image  # PIL is what the window shows images with


@pytest.mark.slow
def test_gui_command_with_a_display_that_does_not_open_is_one_clear_line():
    import os
    import subprocess
    import sys

    pytest.importorskip("tkinter", reason="this Python was built without Tk")
    env = {**os.environ, "DISPLAY": ":987"}  # nothing serves it
    proc = subprocess.run(
        [sys.executable, "-m", "cifar_exp", "gui"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: gui: cannot open a display") and "xvfb-run" in lines[0]
