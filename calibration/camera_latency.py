"""Camera latency: the camera films a screen that shows the host time as a code.

The screen shows two ArUco markers (``DICT_6X6_1000``): ids 0-499 carry the high base-500 digit and
ids 500-999 the low digit of ``round(t / resolution_s) mod 500**2``, where ``t`` is the host
monotonic time at which that image appears on the screen; the image changes every refresh
(``refresh_hz``). For each received frame:

    latency = receive_time - displayed_time - display_delay_s - 0.5 / refresh_hz

(the camera sees an image on average half a refresh period after it appeared). Outliers (frames
further than ``outlier_mads`` scaled MADs from the median, e.g. a stalled screen writer) are dropped;
the mean and standard deviation of the rest are the result, with a histogram PNG.

On the sim rig the screen is a ``screen`` plane in front of the sim camera, fed through its screen
ring by a writer thread that publishes each image (with its display time) ~20 ms before it is due,
so scheduling noise on the host does not change what the camera sees. The injected
``sim.latency_s`` is then the ground truth. On a real rig (``screen: window``) an OpenCV window shows
the code; put it in front of the camera and set ``display_delay_s`` to the monitor's input lag.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from calibration.procedures import CameraLatencyProcedure
from calibration.result import CalibrationError, progress
from robot.shm.ring_buffer import RingBuffer
from robot.timing import now

_BASE = 500


class TimeCode:
    """Host time <-> an image of two ArUco markers (see the module docstring).

    ``image(t)`` -> (height_px, width_px) uint8; ``decode(image, receive_time)`` -> the encoded time
    (host s, unwrapped to the latest time <= ``receive_time``) or None when the code is not readable.
    The code repeats every ``resolution_s * 500**2`` s (100 s by default).
    """

    def __init__(self, dictionary: str, resolution_s: float, width_px: int, height_px: int):
        name = dictionary if dictionary.startswith("DICT_") else "DICT_" + dictionary
        self.dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, name))
        n_ids = self.dictionary.bytesList.shape[0]
        if n_ids < 2 * _BASE:
            raise ValueError(f"time code needs a dictionary with >= {2 * _BASE} markers; {name} has {n_ids}")
        self.resolution_s = resolution_s
        self.width_px, self.height_px = width_px, height_px
        self.margin_px = max(4, height_px // 8)
        self.side_px = min(height_px - 2 * self.margin_px, (width_px - 3 * self.margin_px) // 2)
        if self.side_px < 16:
            raise ValueError(f"screen {width_px}x{height_px} px is too small for the time code")
        self.period_s = resolution_s * _BASE * _BASE
        self._markers: dict[int, np.ndarray] = {}
        params = cv2.aruco.DetectorParameters()
        self._detector = cv2.aruco.ArucoDetector(self.dictionary, params)

    def _marker(self, marker_id: int) -> np.ndarray:
        img = self._markers.get(marker_id)
        if img is None:
            img = cv2.aruco.generateImageMarker(self.dictionary, marker_id, self.side_px)
            self._markers[marker_id] = img
        return img

    def code_of(self, t: float) -> int:
        return int(round(t / self.resolution_s)) % (_BASE * _BASE)

    def image(self, t: float) -> np.ndarray:
        code = self.code_of(t)
        img = np.full((self.height_px, self.width_px), 255, np.uint8)
        s = self.side_px
        y0 = (self.height_px - s) // 2
        x_gap = (self.width_px - 2 * s) // 3
        img[y0 : y0 + s, x_gap : x_gap + s] = self._marker(code // _BASE)
        img[y0 : y0 + s, 2 * x_gap + s : 2 * x_gap + 2 * s] = self._marker(_BASE + code % _BASE)
        return img

    def decode(self, image: np.ndarray, receive_time: float) -> float | None:
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
        _, ids, _ = self._detector.detectMarkers(gray)
        if ids is None:
            return None
        ids = ids.ravel()
        hi = [int(i) for i in ids if i < _BASE]
        lo = [int(i) - _BASE for i in ids if _BASE <= i < 2 * _BASE]
        if len(hi) != 1 or len(lo) != 1:
            return None
        code = hi[0] * _BASE + lo[0]
        units = receive_time / self.resolution_s
        wraps = np.floor((units - code) / (_BASE * _BASE))
        return float((code + wraps * _BASE * _BASE) * self.resolution_s)


class ScreenLog:
    """What the screen showed: each image's display time and when it was actually written.

    A frame that shows image k is trustworthy only if image k+1 was on time (written no later than
    its display time, and not more than 1.5 refresh periods after image k): otherwise the camera may
    have looked during a screen stall and seen k late, which would read as extra latency.
    """

    def __init__(self, period_s: float):
        self.period_s = period_s
        self._shown: list[float] = []
        self._written: list[float] = []

    def add(self, t_show: float, t_written: float) -> None:
        self._shown.append(t_show)
        self._written.append(t_written)

    def on_time(self, t_shown: np.ndarray, tolerance_s: float) -> np.ndarray:
        """Mask: the image shown at each ``t_shown`` was followed by an on-time next image."""
        shown, written = np.asarray(self._shown), np.asarray(self._written)
        if len(shown) < 2:
            return np.zeros(len(t_shown), bool)
        i = np.clip(np.searchsorted(shown, t_shown - tolerance_s), 0, len(shown) - 1)
        found = np.abs(shown[i] - t_shown) <= tolerance_s
        j = np.clip(i + 1, 0, len(shown) - 1)
        return (
            found & (j > i) & (shown[j] - shown[i] <= 1.5 * self.period_s) & (written[j] <= shown[j] + 1e-4)
        )


class SimScreenWriter(threading.Thread):
    """Feeds the sim screens: image ``k`` appears at ``t0 + k / refresh_hz`` and is written into every
    screen ring ``lead_s`` before that (the ring's ``display_time`` is when it appears)."""

    def __init__(self, rings: list[RingBuffer], code: TimeCode, refresh_hz: float, lead_s: float = 0.02):
        super().__init__(name="sim-screen-writer", daemon=True)
        self.rings, self.code, self.period_s, self.lead_s = rings, code, 1.0 / refresh_hz, lead_s
        self._stop_event = threading.Event()
        self.late = 0
        self.log = ScreenLog(self.period_s)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            t0 = now() + 0.01
            k = 0
            while not self._stop_event.is_set():
                t_show = t0 + k * self.period_s
                wait = t_show - self.lead_s - now()
                if wait > 0:
                    time.sleep(wait)
                elif -wait > 10 * self.period_s:
                    # Fell behind (host stall): skip to the present instead of a burst of stale images.
                    self.late += 1
                    k = int(np.ceil((now() + self.lead_s - t0) / self.period_s))
                    continue
                rec = {"image": self.code.image(t_show), "display_time": t_show}
                for ring in self.rings:
                    ring.put(rec)
                self.log.add(t_show, now())
                k += 1
        except BaseException as exc:  # surfaced by the caller
            self.error = exc

    def stop(self) -> None:
        self._stop_event.set()
        self.join(2.0)


class WindowScreen:
    """A real screen: an OpenCV window showing the code of the time at which it is drawn. Call
    :meth:`update` as often as possible; ``display_delay_s`` covers what happens after."""

    name = "rig calibrate camera-latency"

    def __init__(self, code: TimeCode, refresh_hz: float):
        self.code = code
        self.log = ScreenLog(1.0 / refresh_hz)
        cv2.namedWindow(self.name, cv2.WINDOW_NORMAL)

    def update(self) -> None:
        t = now()
        cv2.imshow(self.name, self.code.image(t))
        cv2.waitKey(1)
        self.log.add(t, t)

    def close(self) -> None:
        cv2.destroyWindow(self.name)


@dataclass
class LatencyResult:
    camera: str
    latency_s: float
    std_s: float
    n_frames: int
    n_decoded: int
    n_outliers: int
    n_screen_late: int
    samples_s: np.ndarray = field(repr=False)
    inliers: np.ndarray = field(repr=False)

    def summary(self) -> dict:
        return {
            "camera": self.camera,
            "latency_ms": round(self.latency_s * 1e3, 3),
            "std_ms": round(self.std_s * 1e3, 3),
            "frames": self.n_frames,
            "decoded": self.n_decoded,
            "outliers": self.n_outliers,
            "screen_late": self.n_screen_late,
        }


@dataclass
class _Frames:
    color: list[np.ndarray] = field(default_factory=list)
    receive_time: list[float] = field(default_factory=list)
    next_counter: int = 0


def collect_frames(env, names: list[str], duration_s: float, pump=None) -> dict[str, _Frames]:
    """Copy every frame of cameras ``names`` received during the next ``duration_s`` (non-blocking
    reads of the camera rings every ~0.1 s; the rings hold a few seconds). ``pump()`` is called in
    between (a window screen's redraw)."""
    cams = env.cameras.cameras
    out = {n: _Frames(next_counter=cams[n].ring.count) for n in names}
    t_end = now() + duration_s
    while True:
        env.check()
        for n in names:
            recs = cams[n].ring.get_since(out[n].next_counter, skip_overwritten=True)
            if len(recs["counter"]):
                out[n].color.extend(list(recs["color"]))
                out[n].receive_time.extend(recs["receive_time"].tolist())
                out[n].next_counter = int(recs["counter"][-1]) + 1
        if now() >= t_end:
            return out
        if pump is not None:
            pump()
            time.sleep(0.005)
        else:
            time.sleep(0.1)


def robust_inliers(x: np.ndarray, n_mads: float, floor: float) -> np.ndarray:
    """Mask of samples within ``n_mads`` scaled MADs (at least ``floor``) of the median."""
    med = np.median(x)
    mad = 1.4826 * np.median(np.abs(x - med))
    return np.abs(x - med) <= max(n_mads * mad, floor)


def analyse(
    name: str,
    frames: _Frames,
    code: TimeCode,
    proc: CameraLatencyProcedure,
    screen_log: ScreenLog | None = None,
) -> LatencyResult:
    """Per-frame latencies of one camera -> robust mean/std. Frames that may have been shot during a
    screen stall (see :class:`ScreenLog`) are left out. Raises CalibrationError on bad input."""
    n = len(frames.color)
    if n == 0:
        raise CalibrationError(f"camera {name}: delivered no frames during the measurement")
    shown = np.array(
        [code.decode(c, r) or np.nan for c, r in zip(frames.color, frames.receive_time, strict=True)]
    )
    ok = np.isfinite(shown)
    n_dec = int(ok.sum())
    if n_dec == 0:
        raise CalibrationError(
            f"camera {name}: the screen's time code was never seen in {n} frames. Check that the screen "
            "is in the camera's view, fills a good part of the image, is in focus and not washed out."
        )
    if n_dec < proc.min_frames:
        raise CalibrationError(
            f"camera {name}: the time code was read in only {n_dec} of {n} frames (need {proc.min_frames}); "
            "bring the screen closer / make it larger, or measure longer (-p duration_s=...)"
        )
    n_late = 0
    if screen_log is not None:
        fine = np.zeros(n, bool)
        fine[ok] = screen_log.on_time(shown[ok], tolerance_s=0.6 * code.resolution_s)
        n_late = int(ok.sum() - fine.sum())
        ok = fine
        if ok.sum() < proc.min_frames:
            raise CalibrationError(
                f"camera {name}: the screen missed its refresh around {n_late} of {n_dec} frames (host too "
                "busy to draw it): measure again on a quieter host, or lower -p refresh_hz"
            )
    recv = np.asarray(frames.receive_time)[ok]
    lat = recv - shown[ok] - proc.display_delay_s - 0.5 / proc.refresh_hz
    inl = robust_inliers(lat, proc.outlier_mads, floor=2.0 / proc.refresh_hz)
    mean, std = float(lat[inl].mean()), float(lat[inl].std(ddof=1)) if inl.sum() > 1 else 0.0
    if std > proc.max_std_s:
        raise CalibrationError(
            f"camera {name}: latency spread {std * 1e3:.1f} ms is above {proc.max_std_s * 1e3:.0f} ms; "
            "is the camera dropping frames or the screen not refreshing?"
        )
    if mean < -0.005:
        raise CalibrationError(
            f"camera {name}: measured a negative latency ({mean * 1e3:.1f} ms): display_delay_s "
            f"({proc.display_delay_s * 1e3:.0f} ms) is too large, or the clocks disagree"
        )
    return LatencyResult(name, mean, std, n, n_dec, int((~inl).sum()), n_late, lat, inl)


def plot_histogram(res: LatencyResult, path: Path, bins: int) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(res.samples_s[res.inliers] * 1e3, bins=bins, color="tab:blue", label="frames used")
    if (~res.inliers).any():
        ax.hist(res.samples_s[~res.inliers] * 1e3, bins=bins, color="tab:red", label="outliers")
    ax.axvline(res.latency_s * 1e3, color="k", lw=1, label=f"mean {res.latency_s * 1e3:.1f} ms")
    ax.set_xlabel("receive time - displayed time (ms)")
    ax.set_ylabel("frames")
    ax.set_title(f"camera {res.camera}: latency {res.latency_s * 1e3:.1f} +- {res.std_s * 1e3:.1f} ms")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def screen_ring_capacity(camera, refresh_hz: float) -> int:
    """Records in a sim camera's screen ring: enough for a frame rendered as late as the camera
    renders at all (its backlog, then it skips frames; ``camera``: a CameraConfig).

    The camera looks back over half the ring (the other half is the writer's slack), plus the images
    the writer puts ahead of their time. Sized for a quarter second of the whole ring, a wrist
    camera on a host at load 16 decoded 16 of 114 frames. Grayscale records: ~12 MB at 500 Hz.
    """
    late_s = camera.sim.max_backlog_frames / camera.fps + 0.05
    return int(2 * late_s * refresh_hz) + 16


def measure(rig, calibration, proc: CameraLatencyProcedure) -> list[LatencyResult]:
    """Run the measurement on the rig for ``proc.cameras`` (all when empty); see the module docstring."""
    from calibration.rig_session import check_cameras, open_env, screen_plane_in_front, with_sim_plane
    from robot.cameras.sim import create_screen_ring

    names = check_cameras(rig, proc.cameras)
    mode = proc.screen if proc.screen != "auto" else ("sim" if rig.is_sim else "window")
    code = TimeCode(proc.dictionary, proc.resolution_s, proc.screen_width_px, proc.screen_height_px)
    rings: dict[str, RingBuffer] = {}
    try:
        if mode == "sim":
            for n in names:
                if rig.cameras.cameras[n].backend != "sim":
                    raise CalibrationError(f"camera {n} is not simulated: use -p screen=window")
                screens = [p for p in rig.cameras.cameras[n].sim.planes.values() if p.kind == "screen"]
                plane = screens[0] if screens else None
                if plane is None:
                    s = proc.sim_screen
                    dist = s.tool_distance_m if rig.cameras.cameras[n].sim.mount == "tool" else s.distance_m
                    plane = screen_plane_in_front(
                        rig, n, dist, s.fill, proc.screen_width_px, proc.screen_height_px
                    )
                    rig = with_sim_plane(rig, n, "calibration_screen", plane)
                if (plane.screen_width_px, plane.screen_height_px) != (code.width_px, code.height_px):
                    raise CalibrationError(
                        f"camera {n}: its screen plane is {plane.screen_width_px}x{plane.screen_height_px} px, "
                        f"the code is {code.width_px}x{code.height_px}: set -p screen_width_px/screen_height_px"
                    )
                capacity = screen_ring_capacity(rig.cameras.cameras[n], proc.refresh_hz)
                rings[n] = create_screen_ring(plane, capacity=capacity, channels=1)
        progress(f"camera-latency: starting the rig ({', '.join(names)}; screen: {mode})")
        with open_env(rig, calibration, screen_rings=rings) as env:
            if mode == "sim":
                writer = SimScreenWriter(list(rings.values()), code, proc.refresh_hz)
                writer.start()
                try:
                    time.sleep(0.5)  # the cameras' pipelines fill with frames that show the code
                    progress(f"camera-latency: filming the time code for {proc.duration_s:.1f} s")
                    frames = collect_frames(env, names, proc.duration_s)
                finally:
                    writer.stop()
                if writer.error is not None:
                    raise RuntimeError(f"screen writer failed: {writer.error!r}")
                if writer.late:
                    progress(
                        f"camera-latency: the screen writer fell behind {writer.late} time(s) (busy host)"
                    )
                screen_log = writer.log
            else:
                screen = WindowScreen(code, proc.refresh_hz)
                try:
                    t_end = now() + 1.0
                    while now() < t_end:
                        screen.update()
                    progress(f"camera-latency: filming the time code for {proc.duration_s:.1f} s")
                    frames = collect_frames(env, names, proc.duration_s, pump=screen.update)
                finally:
                    screen.close()
                screen_log = screen.log
    finally:
        for ring in rings.values():
            ring.close()
    results = []
    for n in names:
        progress(f"camera-latency: decoding {len(frames[n].color)} frames of camera {n}")
        results.append(analyse(n, frames[n], code, proc, screen_log))
    return results
