"""The Tkinter window, driven for real on a virtual display."""

import re
import time

import pytest
from PIL import Image, ImageGrab

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


def test_window_loads_classifies_and_reports_errors(
    xdisplay,
    monkeypatch,
    images,
    model_file,
):
    monkeypatch.setenv("DISPLAY", xdisplay)
    import tkinter as tk

    import keras

    from cifar_exp.gui import TITLE, App

    root = tk.Tk()
    try:
        app = App(root, lambda: Classifier(keras.saving.load_model(model_file), "test model"))
        assert root.title() == TITLE == "Image Classification CIFAR10"
        assert app.upload_button.cget("text") == "Upload an image"
        assert str(app.classify_button.cget("state")) == "disabled"
        pump(root, lambda: app.classifier is not None)  # loaded off the UI thread
        assert app.model_label.cget("text") == "model: test model"
        assert app.load_image(images / "photo.jpg")
        assert str(app.classify_button.cget("state")) == "normal"
        app.classify_button.invoke()
        pump(root, lambda: app.result.cget("text") != "")
        label = app.result.cget("text")
        assert re.fullmatch(r"[a-z]+ \(\d+\.\d%\)", label), label
        assert len(app.top3.cget("text").splitlines()) == 3
        root.update()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        x, y = root.winfo_rootx(), root.winfo_rooty()
        shot = ImageGrab.grab(
            bbox=(x, y, x + root.winfo_width(), y + root.winfo_height()), xdisplay=xdisplay
        )
        shot.save(ARTIFACTS / "gui.png")
        assert shot.size[0] > 300 and len(set(shot.getdata())) > 10  # something was drawn
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
