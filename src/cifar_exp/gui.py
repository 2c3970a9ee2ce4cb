"""A small Tkinter window to classify one's own image, in the spirit of the reference study.

Only widgets live here; loading and classifying are `predict.Classifier`'s. The model loads
once, on a worker thread, while the window shows a loading state.
"""

from __future__ import annotations

import queue
import threading
import tkinter as tk
from collections.abc import Callable
from pathlib import Path
from tkinter import filedialog, ttk
from typing import Any

from PIL import Image, ImageTk

from cifar_exp.errors import UserError
from cifar_exp.predict import Classifier, ImageError, open_image

TITLE = "Image Classification CIFAR10"
PREVIEW = 256  # pixels of the image preview's longer side
BACKGROUND = "#CDCDCD"  # the reference window's grey


class App:
    """The window. `load_model` runs on a worker thread and returns a Classifier."""

    def __init__(self, root: tk.Tk, load_model: Callable[[], Classifier]) -> None:
        self.root, self.classifier, self.image = root, None, None
        self._photo: Any = None
        root.title(TITLE)
        root.geometry("560x520")
        root.configure(background=BACKGROUND)
        style = ttk.Style(root)
        for widget in ("TLabel", "TFrame"):
            style.configure(widget, background=BACKGROUND)
        ttk.Label(root, text=TITLE, font=("Arial", 18, "bold")).pack(pady=(16, 6))
        self.model_label = ttk.Label(root, text="loading model ...", foreground="#555")
        self.model_label.pack()
        self.preview = ttk.Label(root)
        self.preview.pack(pady=10, expand=True)
        self.result = ttk.Label(root, text="", font=("Arial", 15, "bold"))
        self.result.pack()
        self.top3 = ttk.Label(root, text="", justify="left", font=("Courier", 11))
        self.top3.pack(pady=4)
        self.error = ttk.Label(root, text="", foreground="#B00020", wraplength=520)
        self.error.pack()
        buttons = ttk.Frame(root)
        buttons.pack(side="bottom", pady=16)
        self.upload_button = ttk.Button(buttons, text="Upload an image", command=self.upload)
        self.upload_button.pack(side="left", padx=8)
        self.classify_button = ttk.Button(
            buttons, text="Classify Image", command=self.classify, state="disabled"
        )
        self.classify_button.pack(side="left", padx=8)
        self._load_in_background(load_model)

    # -- model loading: a worker thread hands its result over through a queue, which the UI
    # thread polls (Tk may only be touched from the thread that created it)
    def _load_in_background(self, load_model: Callable[[], Classifier]) -> None:
        done: queue.Queue = queue.Queue(maxsize=1)

        def work() -> None:
            try:
                done.put((load_model(), None))
            except Exception as e:
                done.put((None, e))

        def poll() -> None:
            try:
                classifier, error = done.get_nowait()
            except queue.Empty:
                self.root.after(100, poll)
                return
            if error is not None:
                self._model_failed(error)
            else:
                self._model_ready(classifier)

        threading.Thread(target=work, daemon=True).start()
        self.root.after(100, poll)

    def _model_ready(self, classifier: Classifier) -> None:
        self.classifier = classifier
        self.model_label.configure(text=f"model: {classifier.source}")
        self._update_buttons()

    def _model_failed(self, error: Exception) -> None:
        self.model_label.configure(text="no model loaded")
        self.show_error(f"could not load the model: {error}")

    # -- actions
    def upload(self) -> None:
        types = [("Images", "*.png *.jpg *.jpeg *.bmp *.gif *.webp *.tif *.tiff"), ("All", "*")]
        path = filedialog.askopenfilename(title="Upload an image", filetypes=types)
        if path:
            self.load_image(path)

    def load_image(self, path: str | Path) -> bool:
        """Show the image at `path`; a bad file shows its error and keeps nothing."""
        self.result.configure(text="")
        self.top3.configure(text="")
        try:
            image = open_image(Path(path))
        except ImageError as e:
            self.image = None
            self.preview.configure(image="")
            self.show_error(str(e))
            self._update_buttons()
            return False
        self.image = image
        self.error.configure(text="")
        scale = PREVIEW / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        shown = image.resize(size, Image.Resampling.LANCZOS)
        self._photo = ImageTk.PhotoImage(shown)
        self.preview.configure(image=self._photo)
        self._update_buttons()
        return True

    def classify(self) -> None:
        if self.classifier is None or self.image is None:
            return
        try:
            top = self.classifier.classify([self.image], top=3)[0]
        except Exception as e:
            self.show_error(f"classification failed: {e}")
            return
        name, prob = top[0]
        self.result.configure(text=f"{name} ({prob:.1%})")
        bars = [f"{c:<11}{'█' * round(p * 20):<20} {p:6.1%}" for c, p in top]
        self.top3.configure(text="\n".join(bars))

    def show_error(self, message: str) -> None:
        self.error.configure(text=message)

    def _update_buttons(self) -> None:
        ready = self.classifier is not None and self.image is not None
        self.classify_button.configure(state="normal" if ready else "disabled")


class NoDisplay(UserError):
    """No display to open the window on; the message says what to do."""


def run(load_model: Callable[[], Classifier]) -> None:
    """Open the window and run until it is closed."""
    try:
        root = tk.Tk()
    except tk.TclError as e:  # DISPLAY unset, wrong, or the X server refuses
        raise NoDisplay(
            f"gui: cannot open a display ({e}); run it on a desktop, or on a server under "
            "xvfb-run (xvfb-run python -m cifar_exp gui)"
        ) from None
    App(root, load_model)
    root.mainloop()
