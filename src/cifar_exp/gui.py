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
PREVIEW = 256  # pixels: the preview area is this square whatever the image, so nothing moves
BACKGROUND = "#CDCDCD"  # the reference window's grey
WIDTH = 600  # pixels: the window's width; text wraps inside it
BAR = {"width": 300, "height": 18, "gap": 8, "label": 110}  # pixels: a top-3 bar and its name
TRACK, FILL, FILL_TOP = "#EFEFEF", "#7A9CC6", "#2F5D8C"  # bar background, bars, the top class
WARNING = "#8A4B00"


class App:
    """The window. `load_model` runs on a worker thread and returns a Classifier. Every area
    has a fixed size (model lines, preview, result, bars, errors), so loading the model,
    showing an image or classifying it moves nothing."""

    def __init__(self, root: tk.Tk, load_model: Callable[[], Classifier]) -> None:
        self.root, self.classifier, self.image = root, None, None
        self._photo: Any = None
        self.top: list[tuple[str, float]] = []  # the last classification's top 3
        root.title(TITLE)
        root.geometry(f"{WIDTH}x680")
        root.minsize(WIDTH, 680)
        root.configure(background=BACKGROUND)
        style = ttk.Style(root)
        for widget in ("TLabel", "TFrame"):
            style.configure(widget, background=BACKGROUND)
        ttk.Label(root, text=TITLE, font=("Arial", 18, "bold")).pack(pady=(14, 4))
        model = self._area(root, 112)
        wrap = WIDTH - 40
        self.model_label = ttk.Label(model, text="loading model ...", foreground="#333")
        self.accuracy_label = ttk.Label(model, text="", foreground="#333", wraplength=wrap)
        self.warning_label = ttk.Label(model, text="", foreground=WARNING, wraplength=wrap)
        self.model_label.configure(wraplength=wrap)
        for label in (self.model_label, self.accuracy_label, self.warning_label):
            label.pack(anchor="w")
        frame = tk.Frame(root, width=PREVIEW, height=PREVIEW, background="#BDBDBD")
        frame.pack(pady=6)
        frame.pack_propagate(False)
        self.preview = ttk.Label(frame, background="#BDBDBD")
        self.preview.place(relx=0.5, rely=0.5, anchor="center")
        self.result = ttk.Label(self._area(root, 30), text="", font=("Arial", 15, "bold"))
        self.result.pack()
        height = 3 * BAR["height"] + 2 * BAR["gap"]
        self.bars = tk.Canvas(
            root, width=BAR["label"] + BAR["width"] + 70, height=height,
            background=BACKGROUND, highlightthickness=0,
        )  # fmt: skip
        self.bars.pack(pady=4)
        self.error = ttk.Label(self._area(root, 40), text="", foreground="#B00020", wraplength=wrap)
        self.error.pack(anchor="w")
        buttons = ttk.Frame(root)
        buttons.pack(side="bottom", pady=14)
        self.upload_button = ttk.Button(buttons, text="Upload an image", command=self.upload)
        self.upload_button.pack(side="left", padx=8)
        self.classify_button = ttk.Button(
            buttons, text="Classify Image", command=self.classify, state="disabled"
        )
        self.classify_button.pack(side="left", padx=8)
        self._load_in_background(load_model)

    @staticmethod
    def _area(root: tk.Tk, height: int) -> ttk.Frame:
        """A full-width frame of fixed height: what it shows never pushes the rest."""
        frame = ttk.Frame(root, width=WIDTH - 32, height=height)
        frame.pack(pady=2)
        frame.pack_propagate(False)
        return frame

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
        card = classifier.card
        self.model_label.configure(text=f"model: {card.reference_text()}")
        self.accuracy_label.configure(text=card.accuracy_text())
        warning = card.warning()
        self.warning_label.configure(text=f"warning: {warning}" if warning else "")
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
        self.draw_bars([])
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
        self.draw_bars(top)

    def draw_bars(self, top: list[tuple[str, float]]) -> None:
        """One row per class: its name, the bar on a full-width track, the percentage."""
        self.top = top
        self.bars.delete("all")
        x0, width, height = BAR["label"], BAR["width"], BAR["height"]
        for i, (name, prob) in enumerate(top):
            y = i * (height + BAR["gap"])
            middle = y + height / 2
            self.bars.create_text(x0 - 10, middle, text=name, anchor="e", font=("Arial", 11))
            self.bars.create_rectangle(x0, y, x0 + width, y + height, fill=TRACK, outline="")
            fill = FILL_TOP if i == 0 else FILL
            end = x0 + max(1, round(width * prob))
            self.bars.create_rectangle(x0, y, end, y + height, fill=fill, outline="")
            self.bars.create_text(
                x0 + width + 8, middle, text=f"{prob:.1%}", anchor="w", font=("Arial", 11)
            )

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
