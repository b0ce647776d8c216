"""RealSense backend (live cameras through ``pyrealsense2``) and playback of RealSense recordings.

Both run the same pipeline code: ``rs.pipeline`` + ``rs.config`` (a device by serial, or a file via
``enable_device_from_file``), optional ``rs.align`` of depth to color, one frameset per
``read``.

Timestamps (host monotonic seconds):

- live: the color frame's timestamp in the global-time domain (the camera clock mapped onto the
  host's system clock by librealsense, ``global_time_enabled`` is switched on) or the system-time
  domain, converted to the monotonic clock with the current ``time.time() - time.monotonic()`` offset;
  if the camera only gives its hardware clock, it is mapped with the smallest ``receive - device``
  offset seen (the frames with the least transport delay). ``receive_time`` is the host time the
  frameset arrived. ``frame_index`` is the camera's frame counter.
- playback: the recording is read in librealsense's non-real-time mode (no frame is lost to a busy
  machine) and paced here: frame k is handed over at ``t0 + (ts_k - ts_0)``, where ``ts_k`` is its
  recorded device timestamp and ``t0`` the host time the first frame was read, and that instant is its
  ``capture_time``. So capture times are the recorded timestamps shifted by one constant, whatever the
  load (a reader that falls behind gets the frames late, in order, with ``receive_time`` later than
  ``capture_time``; none is dropped). ``receive_time`` is when the frame was handed over
  (``>= capture_time``). With ``playback.loop`` the next pass continues one frame period after the last
  frame. At the end of a recording without ``playback.loop``, ``read`` returns None forever and
  ``ended`` is True. A frame missing from the recording shows as a gap in ``frame_index``. With depth,
  each color frame is paired with the depth frame nearest to it in time.

Errors name the camera and what to check: missing serial (with the serials that are connected), a USB2
link, an unsupported mode; for playback, a missing file, a file that is not a recording, and a
recording whose size or rate differs from the config.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from robot.cameras.backend import CameraIntrinsics, Frame
from robot.cameras.config import CameraConfig
from robot.timing import now, precise_wait

SYNC_MODE = {"none": 0, "master": 1, "slave": 2}


def _rs():
    try:
        import pyrealsense2 as rs
    except ImportError as exc:  # libusb missing is the usual cause on a fresh machine
        raise RuntimeError(
            f"pyrealsense2 cannot be imported ({exc}); install it and the Debian package libusb-1.0-0 "
            "(`make setup` does both)"
        ) from exc
    return rs


def list_devices() -> list[dict[str, str]]:
    """Connected RealSense devices, sorted by serial: ``name``, ``serial``, ``firmware``, ``usb``
    (USB type, e.g. "3.2"), ``product_line``. Quick (no pipeline is started); [] when none."""
    rs = _rs()
    out = []
    for dev in rs.context().query_devices():

        def info(key, dev=dev) -> str:
            return dev.get_info(key) if dev.supports(key) else ""

        out.append(
            {
                "name": info(rs.camera_info.name),
                "serial": info(rs.camera_info.serial_number),
                "firmware": info(rs.camera_info.firmware_version),
                "usb": info(rs.camera_info.usb_type_descriptor),
                "product_line": info(rs.camera_info.product_line),
            }
        )
    return sorted(out, key=lambda d: d["serial"])


class RealSenseBackend:
    """Backend of :class:`robot.cameras.camera.Camera` for ``backend: realsense`` and ``backend: playback``."""

    def __init__(self, cfg: CameraConfig):
        self.cfg = cfg
        self.playback = cfg.backend == "playback"
        self._eof = False
        self._due: tuple[Any, float] | None = None
        self._held: Any = None
        self._pipe: Any = None

    @property
    def _who(self) -> str:
        if self.playback:
            return f"camera {self.cfg.name} (playback of {self.cfg.playback.path})"
        return f"camera {self.cfg.name} (RealSense {self.cfg.serial or 'any'})"

    # ------------------------------------------------------------------ open
    def open(self):
        rs = self._rs = _rs()
        cfg = self.cfg
        rs_cfg = rs.config()
        if self.playback:
            path = Path(cfg.playback.path)
            if not cfg.playback.path:
                raise ValueError(
                    f"camera {cfg.name}: backend playback needs playback.path (a .bag or .db3 file)"
                )
            if not path.is_file():
                raise FileNotFoundError(f"{self._who}: recording {path} does not exist")
            rs_cfg.enable_device_from_file(str(path), repeat_playback=cfg.playback.loop)
        else:
            self._check_device(rs)
            rs_cfg.enable_device(cfg.serial)
            rs_cfg.enable_stream(rs.stream.color, cfg.width, cfg.height, rs.format.rgb8, int(cfg.fps))
            if cfg.depth:
                rs_cfg.enable_stream(rs.stream.depth, cfg.width, cfg.height, rs.format.z16, int(cfg.fps))
        pipe = rs.pipeline()
        try:
            if self.playback:
                # Non-real-time: librealsense hands over every frame, waiting for the reader (real-time
                # playback paces by the recorder's arrival times, drops what a busy reader misses, and
                # after a seek runs ahead of them); read() paces the frames by their recorded timestamps.
                # Set on the resolved device, which pipe.start() then uses, so no frame plays before.
                rs_cfg.resolve(rs.pipeline_wrapper(pipe)).get_device().as_playback().set_real_time(False)
            elif not rs_cfg.can_resolve(rs.pipeline_wrapper(pipe)):
                raise RuntimeError("mode not offered by the device")
            profile = pipe.start(rs_cfg)
        except RuntimeError as exc:
            if self.playback:
                raise RuntimeError(
                    f"{self._who}: not a RealSense recording that pyrealsense2 can read ({exc}); record one "
                    "with the RealSense Viewer or rs.recorder (.bag, or .db3 from pyrealsense2 2.59)"
                ) from None
            what = "depth+color" if cfg.depth else "color"
            raise RuntimeError(
                f"{self._who}: cannot start {what} at {cfg.width}x{cfg.height}@{cfg.fps:g} fps ({exc}); check "
                "width/height/fps against the modes the camera offers (`rs-enumerate-devices`), and that it "
                "is on a USB3 port"
            ) from None
        self._pipe = pipe
        device = profile.get_device()
        self._player = None
        if self.playback:
            self._player = device.as_playback()
        else:
            self._configure_sensors(rs, device)
        try:
            color = profile.get_stream(rs.stream.color).as_video_stream_profile()
        except RuntimeError:
            raise RuntimeError(f"{self._who}: no color stream in the recording") from None
        intr = color.get_intrinsics()
        if (intr.width, intr.height) != (cfg.width, cfg.height):
            raise RuntimeError(
                f"{self._who}: color stream is {intr.width}x{intr.height} but the config says "
                f"{cfg.width}x{cfg.height}; set width/height to match"
            )
        if self.playback and color.fps() and abs(color.fps() - cfg.fps) > 0.5:
            raise RuntimeError(
                f"{self._who}: the recording is at {color.fps()} fps but the config says {cfg.fps:g}; set "
                f"fps: {color.fps()} (playback runs at the recorded pace)"
            )
        self._period_s = 1.0 / (color.fps() or cfg.fps)
        self._color_is_bgr = color.format() == rs.format.bgr8
        has_depth = any(s.stream_type() == rs.stream.depth for s in profile.get_streams())
        if cfg.depth and not has_depth:
            raise RuntimeError(f"{self._who}: depth is enabled in the config but there is no depth stream")
        depth_scale = 0.001
        if has_depth:
            try:
                depth_scale = float(device.first_depth_sensor().get_depth_scale())
            except RuntimeError:
                pass
        self._align = rs.align(rs.stream.color) if cfg.depth else None
        self._last_index: int | None = None
        self._hw_offset = math.inf
        self._host_minus_rec_s: float | None = None  # playback: capture_time - recorded timestamp
        self._last_capture = -math.inf
        self._held = None  # playback: a frameset taken while looking for a better depth match
        self._due = None  # playback: the next frameset and its capture time
        return CameraIntrinsics(
            float(intr.fx),
            float(intr.fy),
            float(intr.ppx),
            float(intr.ppy),
            int(intr.width),
            int(intr.height),
            tuple(float(c) for c in intr.coeffs[:5]),
            depth_scale,
        )

    def _check_device(self, rs) -> None:
        devices = list_devices()
        serials = [d["serial"] for d in devices]
        if not devices:
            raise RuntimeError(
                f"{self._who}: no RealSense camera is connected; check the USB3 cable and power "
                "(`rig cameras list` shows what the host sees)"
            )
        if self.cfg.serial is None:
            if len(devices) > 1:
                raise RuntimeError(
                    f"{self._who}: several cameras are connected ({serials}); set serial in the config"
                )
            self.cfg = self.cfg.model_copy(update={"serial": serials[0]})
        elif self.cfg.serial not in serials:
            raise RuntimeError(
                f"{self._who}: camera with serial {self.cfg.serial} not found; connected: {', '.join(serials)}. "
                "Check its USB3 cable, or fix the serial in the config"
            )
        dev = next(d for d in devices if d["serial"] == self.cfg.serial)
        if dev["usb"].startswith("2"):
            raise RuntimeError(
                f"{self._who}: {dev['name']} is on a USB {dev['usb']} link; it needs USB3 for "
                f"{self.cfg.width}x{self.cfg.height}@{self.cfg.fps:g}. Use a USB3 port and cable"
            )

    def _configure_sensors(self, rs, device) -> None:
        cfg = self.cfg

        def set_opt(sensor, option, value) -> None:
            if sensor.supports(option):
                try:
                    sensor.set_option(option, value)
                except RuntimeError as exc:
                    raise RuntimeError(f"{self._who}: cannot set {option} to {value}: {exc}") from None
            elif value not in (0, 1):
                raise RuntimeError(f"{self._who}: the camera does not support {option}")

        for sensor in device.query_sensors():
            if sensor.supports(rs.option.global_time_enabled):
                sensor.set_option(rs.option.global_time_enabled, 1)
        if cfg.sync != "none":
            set_opt(device.first_depth_sensor(), rs.option.inter_cam_sync_mode, SYNC_MODE[cfg.sync])
        color = device.first_color_sensor()
        set_opt(color, rs.option.enable_auto_exposure, 1 if cfg.exposure_us is None else 0)
        if cfg.exposure_us is not None:
            set_opt(color, rs.option.exposure, cfg.exposure_us)
        if cfg.gain is not None:
            set_opt(color, rs.option.gain, cfg.gain)
        set_opt(color, rs.option.enable_auto_white_balance, 1 if cfg.white_balance_k is None else 0)
        if cfg.white_balance_k is not None:
            set_opt(color, rs.option.white_balance, cfg.white_balance_k)

    # ------------------------------------------------------------------ read
    @property
    def ended(self) -> bool:
        """Playback without ``loop``: the recording's last frame has been returned."""
        return self._eof and self._due is None and self._held is None

    def read(self, timeout_s: float) -> Frame | None:
        if self.playback:
            return self._read_playback(timeout_s)
        rs = self._rs
        ok, frames = self._pipe.try_wait_for_frames(max(int(timeout_s * 1000), 1))
        if not ok:
            return None
        receive = now()
        color_frame = frames.get_color_frame()
        if not color_frame:
            return None
        index = int(color_frame.get_frame_number())
        if self._last_index is not None and index <= self._last_index:
            return None  # the same color frame again in a new frameset (depth arrived)
        self._last_index = index
        ts_s = color_frame.get_timestamp() / 1000.0
        domain = color_frame.get_frame_timestamp_domain()
        if domain in (rs.timestamp_domain.global_time, rs.timestamp_domain.system_time):
            capture = ts_s - (time.time() - time.monotonic())
        else:
            # Device clock: shift onto the host clock by the smallest receive - timestamp seen so far,
            # i.e. assume the least-delayed frame had no transport delay.
            self._hw_offset = min(self._hw_offset, receive - ts_s)
            capture = ts_s + self._hw_offset
        return self._frame(frames, capture, receive)

    def _read_playback(self, timeout_s: float) -> Frame | None:
        if self._due is None:
            frames = self._next_playback_frames(timeout_s)
            if frames is None:
                return None
            color_frame = frames.get_color_frame()
            ts_s = color_frame.get_timestamp() / 1000.0
            index = int(color_frame.get_frame_number())
            if self._host_minus_rec_s is None:
                self._host_minus_rec_s = now() - ts_s
            elif index < self._last_index:  # the recording looped: go on one frame period later
                self._host_minus_rec_s = self._last_capture + self._period_s - ts_s
            self._last_index = index
            self._due = (frames, ts_s + self._host_minus_rec_s)
        frames, capture = self._due
        if capture - now() > timeout_s:
            time.sleep(timeout_s)  # a long gap in the recording: let the camera loop look at its stop flag
            return None
        precise_wait(capture, spin_s=0.0)
        self._due = None
        self._last_capture = capture
        return self._frame(frames, capture, now())

    def _take(self, timeout_s: float) -> Any:
        """The next frameset from the playback pipeline (None on timeout; sets ``_eof`` at the end)."""
        if self._held is not None:
            frames, self._held = self._held, None
            return frames
        ok, frames = self._pipe.try_wait_for_frames(max(int(timeout_s * 1000), 1))
        if ok:
            return frames
        stopped = self._player.current_status() == self._rs.playback_status.stopped
        if stopped and not self.cfg.playback.loop and self._last_index is not None:
            self._eof = True
        return None

    def _next_playback_frames(self, timeout_s: float) -> Any:
        """The next frameset with a new color frame; with depth, the one whose depth frame is nearest
        in time to it (the syncer may first pair a color frame with the previous depth frame)."""
        while True:
            frames = self._take(timeout_s)
            if frames is None:
                return None
            color_frame = frames.get_color_frame()
            if not color_frame or color_frame.get_frame_number() == self._last_index:
                continue  # the same color frame again: a depth frame arrived
            if not self.cfg.depth or _depth_gap_s(frames) < self._period_s / 2:
                return frames
            later = self._take(timeout_s)
            if later is None:
                return frames
            later_color = later.get_color_frame()
            if later_color and later_color.get_frame_number() == color_frame.get_frame_number():
                return later if _depth_gap_s(later) < _depth_gap_s(frames) else frames
            self._held = later
            return frames

    def _frame(self, frames: Any, capture: float, receive: float) -> Frame:
        """The Frame of a frameset: color as RGB, depth aligned to color (if enabled), copies."""
        if self._align is not None:
            try:
                frames = self._align.process(frames)
            except RuntimeError:
                self._align = None  # recordings without depth-to-color extrinsics: keep raw depth
        color_frame = frames.get_color_frame()
        color = np.asanyarray(color_frame.get_data()).copy()
        if self._color_is_bgr:
            color = color[..., ::-1].copy()
        depth = None
        if self.cfg.depth:
            depth_frame = frames.get_depth_frame()
            if depth_frame:
                depth = np.asanyarray(depth_frame.get_data()).copy()
                if depth.shape != color.shape[:2]:
                    import cv2

                    depth = cv2.resize(depth, color.shape[1::-1], interpolation=cv2.INTER_NEAREST)
        return Frame(color, depth, float(capture), float(receive), int(color_frame.get_frame_number()))

    def close(self) -> None:
        if self._pipe is not None:
            try:
                self._pipe.stop()
            except RuntimeError:
                pass
            self._pipe = None


def _depth_gap_s(frames: Any) -> float:
    """|depth - color| timestamp of a frameset in seconds (inf without a depth frame)."""
    depth = frames.get_depth_frame()
    if not depth:
        return math.inf
    return abs(depth.get_timestamp() - frames.get_color_frame().get_timestamp()) / 1000.0


def record_synthetic(
    path: str | Path,
    color_frames: list[np.ndarray],
    fps: float,
    depth_frames: list[np.ndarray] | None = None,
    intrinsics: tuple[float, float, float, float] | None = None,
    start_timestamp_ms: float = 1000.0,
    frame_numbers: list[int] | None = None,
) -> Path:
    """Write a RealSense recording (``.db3`` with pyrealsense2 2.59) of the given RGB frames (and
    optional uint16 depth) through ``rs.software_device`` + ``rs.recorder``: for tests and demos of
    the playback backend without a camera. The i-th frame gets frame number ``n = frame_numbers[i]``
    (default i; a jump is a gap, as frames dropped by the camera) and the device timestamp
    ``start_timestamp_ms + n * 1000 / fps``.
    """
    frame_numbers = list(range(len(color_frames))) if frame_numbers is None else frame_numbers
    rs = _rs()
    path = Path(path)
    h, w = color_frames[0].shape[:2]
    fx, fy, cx, cy = intrinsics or (w * 0.9, w * 0.9, (w - 1) / 2, (h - 1) / 2)
    intr = rs.intrinsics()
    intr.width, intr.height, intr.fx, intr.fy, intr.ppx, intr.ppy = w, h, fx, fy, cx, cy
    intr.model, intr.coeffs = rs.distortion.none, [0.0] * 5
    device = rs.software_device()
    sensors = []

    def add(name: str, stream, fmt, bpp: int, uid: int):
        sensor = device.add_sensor(name)
        vs = rs.video_stream()
        vs.type, vs.index, vs.uid, vs.width, vs.height = stream, 0, uid, w, h
        vs.fps, vs.bpp, vs.fmt, vs.intrinsics = int(round(fps)), bpp, fmt, intr
        profile = sensor.add_video_stream(vs)
        sensors.append((sensor, profile, bpp))
        return sensor

    add("Color", rs.stream.color, rs.format.rgb8, 3, 0)
    if depth_frames is not None:
        add("Depth", rs.stream.depth, rs.format.z16, 2, 1).add_read_only_option(rs.option.depth_units, 0.001)
    recorder = rs.recorder(str(path), device)
    queue = rs.frame_queue(len(color_frames) * 2 + 4)
    for sensor, profile, _ in sensors:
        sensor.open(profile)
        sensor.start(queue)
    t0 = time.monotonic()
    for i, (n, img) in enumerate(zip(frame_numbers, color_frames, strict=True)):
        # Push in real time: the recorder stamps frames with the host time it receives them (the
        # way a camera's recording is made).
        precise_wait(t0 + (n - frame_numbers[0]) / fps)
        streams = [np.ascontiguousarray(img, np.uint8)]
        if depth_frames is not None:
            streams.append(np.ascontiguousarray(depth_frames[i], np.uint16))
        for (sensor, profile, bpp), pixels in zip(sensors, streams, strict=True):
            f = rs.software_video_frame()
            f.pixels, f.bpp, f.stride = pixels, bpp, w * bpp
            f.timestamp = start_timestamp_ms + n * 1000.0 / fps
            f.domain, f.frame_number = rs.timestamp_domain.hardware_clock, n
            f.profile = profile.as_video_stream_profile()
            sensor.on_video_frame(f)
    for sensor, _, _ in sensors:
        sensor.stop()
        sensor.close()
    del recorder  # flushes and closes the file
    return path
