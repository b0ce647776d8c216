"""Live tiled preview of all cameras in its own process (OpenCV window).

The preview only reads the camera rings (``get_last(1)``), so it can never slow capture down. Each
tile is labelled with the camera name, its delivered fps (from ring counters over the last ~1 s) and
its dropped frames (``frame_index`` advance minus frames delivered since the preview started).
Without a display (no reachable X11 ``DISPLAY``, see :func:`display_available`) it
degrades to nothing: the process stays up and idle, ``enabled`` is False, and it says why once.
Pressing ``q`` or Esc in the window sets ``quit_requested``; every key pressed in the window is also
published to :attr:`Preview.key_ring` (``key`` code, host ``time``) so that an application (e.g.
``rig collect``) takes its commands from the window as well as from the terminal (:meth:`Preview.keys`).
"""

from __future__ import annotations

import math
import os
import socket
import sys
import time
from collections import deque
from collections.abc import Mapping, Sequence

import cv2
import numpy as np

from robot.process import DeviceProcess
from robot.shm.ring_buffer import RingBuffer

_S_ENABLED, _S_SHOWN, _S_QUIT = range(3)  # enabled: -1 unknown, 0 no display, 1 showing


def display_available() -> bool:
    """Whether an OpenCV window can be opened: an X11 display that answers (``DISPLAY``; the
    opencv-python wheel's Qt only has the xcb platform, and Qt aborts the whole process when it cannot
    connect, so this is checked before any window is opened). ``QT_QPA_PLATFORM=offscreen`` (set by the
    test suite) means no display."""
    if os.environ.get("QT_QPA_PLATFORM", "xcb") not in ("xcb", ""):
        return False
    display = os.environ.get("DISPLAY", "")
    if not display:
        return False
    host, _, rest = display.rpartition(":")
    try:
        number = int(rest.split(".")[0])
    except ValueError:
        return False
    if host in ("", "unix"):
        return os.path.exists(f"/tmp/.X11-unix/X{number}")
    try:
        with socket.create_connection((host, 6000 + number), timeout=0.5):
            return True
    except OSError:
        return False


def tile_frames(
    images: Sequence[np.ndarray | None], labels: Sequence[str], tile_width: int = 320, cols: int | None = None
) -> np.ndarray:
    """One RGB image of all ``images`` (each resized to ``tile_width`` wide, 4:3 tiles, missing ones
    black) in a grid of ``cols`` columns (default: ceil(sqrt(n))), each with its label drawn on top."""
    n = max(len(images), 1)
    cols = cols or int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    tile_h = tile_width * 3 // 4
    out = np.zeros((rows * tile_h, cols * tile_width, 3), np.uint8)
    for i, (img, label) in enumerate(zip(images, labels, strict=True)):
        r, c = divmod(i, cols)
        y, x = r * tile_h, c * tile_width
        if img is not None:
            h, w = img.shape[:2]
            scale = min(tile_width / w, tile_h / h)
            tw, th = max(int(w * scale), 1), max(int(h * scale), 1)
            small = cv2.resize(img, (tw, th), interpolation=cv2.INTER_AREA)
            if small.ndim == 2:
                small = cv2.cvtColor(small, cv2.COLOR_GRAY2RGB)
            out[y : y + th, x : x + tw] = small
        cv2.rectangle(out, (x, y), (x + tile_width - 1, y + 20), (0, 0, 0), -1)
        cv2.putText(
            out, label, (x + 4, y + 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA
        )
    return out


class Preview(DeviceProcess):
    """Preview process over camera rings ``{name: RingBuffer}`` refreshed at ``fps`` (default 15)."""

    def __init__(
        self,
        rings: Mapping[str, RingBuffer],
        fps: float = 15.0,
        tile_width: int = 320,
        window: str = "rig cameras",
    ):
        super().__init__("camera preview", ready_timeout_s=30.0)
        self.rings = dict(rings)
        self.fps = fps
        self.tile_width = tile_width
        self.window = window
        self._shared = self._ctx.Array("d", 3, lock=False)
        self._shared[_S_ENABLED] = -1
        self.key_ring = RingBuffer.create(
            {"key": ((), "int32"), "time": ((), "float64")}, 64, label="previewkeys"
        )
        self._keys_read = 0

    def keys(self) -> list[str]:
        """Keys pressed in the window since the last call (parent side; non-blocking)."""
        recs = self.key_ring.get_since(self._keys_read, skip_overwritten=True)
        if len(recs["counter"]):
            self._keys_read = int(recs["counter"][-1]) + 1
        return [chr(int(k)) for k in recs["key"]]

    def close(self) -> None:
        """Stop the process (if running) and free the key ring. Idempotent."""
        if self.is_alive:
            self.stop()
        self.key_ring.close()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def enabled(self) -> bool | None:
        """True while a window is shown, False without a display, None until the process decided."""
        v = self._shared[_S_ENABLED]
        return None if v < 0 else bool(v)

    @property
    def frames_shown(self) -> int:
        return int(self._shared[_S_SHOWN])

    @property
    def quit_requested(self) -> bool:
        return self._shared[_S_QUIT] == 1

    # ------------------------------------------------------------------ child side
    def setup(self) -> None:
        self._on = False
        if not display_available():
            print(
                f"camera preview: no display (DISPLAY={os.environ.get('DISPLAY', '')!r} not reachable); "
                "preview disabled",
                file=sys.stderr,
            )
        else:
            try:
                cv2.namedWindow(self.window, cv2.WINDOW_AUTOSIZE)
                self._on = True
            except cv2.error as exc:
                print(f"camera preview: cannot open a window ({exc}); preview disabled", file=sys.stderr)
        self._shared[_S_ENABLED] = 1 if self._on else 0
        self._history = {name: deque(maxlen=64) for name in self.rings}  # (time, counter)
        self._first: dict[str, tuple[int, int]] = {}  # name -> (counter, frame_index) at first sight

    def _label(self, name: str, rec: dict | None, t: float) -> str:
        if rec is None:
            return f"{name}: waiting for frames"
        counter, index = int(rec["counter"]), int(rec["frame_index"])
        hist = self._history[name]
        hist.append((t, counter))
        while len(hist) > 2 and t - hist[0][0] > 1.0:
            hist.popleft()
        fps = (
            (hist[-1][1] - hist[0][1]) / (hist[-1][0] - hist[0][0])
            if len(hist) > 1 and hist[-1][0] > hist[0][0]
            else 0.0
        )
        c0, i0 = self._first.setdefault(name, (counter, index))
        dropped = (index - i0) - (counter - c0)
        return f"{name}  {fps:5.1f} fps  drops {dropped}"

    def loop_once(self) -> None:
        if not self._on:
            time.sleep(0.05)
            return
        t = time.monotonic()
        images, labels = [], []
        for name, ring in self.rings.items():
            recs = ring.get_last(1)
            if len(recs["counter"]):
                rec = {k: v[0] for k, v in recs.items()}
                images.append(rec["color"])
                labels.append(self._label(name, rec, t))
            else:
                images.append(None)
                labels.append(self._label(name, None, t))
        tiled = tile_frames(images, labels, self.tile_width)
        cv2.imshow(self.window, cv2.cvtColor(tiled, cv2.COLOR_RGB2BGR))
        key = cv2.waitKey(1) & 0xFF
        if key != 0xFF:
            self.key_ring.put({"key": key, "time": time.monotonic()})
        if key in (27, ord("q")):
            self._shared[_S_QUIT] = 1
        self._shared[_S_SHOWN] += 1
        time.sleep(max(0.0, 1.0 / self.fps - (time.monotonic() - t)))

    def teardown(self) -> None:
        if getattr(self, "_on", False):
            try:
                cv2.destroyAllWindows()
            except cv2.error:
                pass
