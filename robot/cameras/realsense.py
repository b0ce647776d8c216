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
- playback: real-time playback (frames come at their recorded pace; a reader that falls behind loses
  frames, as with a live camera); ``capture_time`` = the host time playback started + the frame's
  recorded timestamp relative to the first frame, minus 10 ms of slack (the recorded spacing;
  clamped to <= ``receive_time``; strictly increasing). At the end
  of a recording without ``playback.loop``, ``read`` returns None forever and ``ended`` is True.

Errors name the camera and what to check: missing serial (with the serials that are connected), a USB2
link, an unsupported mode, a missing recording.
"""

from __future__ import annotations

import datetime
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from robot.cameras.backend import CameraIntrinsics, Frame
from robot.cameras.config import CameraConfig
from robot.timing import now, precise_wait

SYNC_MODE = {"none": 0, "master": 1, "slave": 2}
PLAYBACK_SLACK_S = 0.010


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
        self.ended = False
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
            if not self.playback and not rs_cfg.can_resolve(rs.pipeline_wrapper(pipe)):
                raise RuntimeError("mode not offered by the device")
            profile = pipe.start(rs_cfg)
        except RuntimeError as exc:
            what = "depth+color" if cfg.depth else "color"
            raise RuntimeError(
                f"{self._who}: cannot start {what} at {cfg.width}x{cfg.height}@{cfg.fps:g} fps ({exc}); check "
                "width/height/fps against the modes the camera offers (`rs-enumerate-devices`), and that it "
                "is on a USB3 port"
            ) from None
        self._pipe = pipe
        device = profile.get_device()
        self._playback = None
        if self.playback:
            # Real-time playback (paced by the recording's own timing, like a live camera), paused at
            # once and rewound at the first read, so no frame goes by while the process starts up.
            self._playback = device.as_playback()
            self._playback.pause()
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
        self._anchor = now()
        self._ts0: float | None = None
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
    def read(self, timeout_s: float):
        rs = self._rs
        if self._playback is not None:
            self._playback.seek(datetime.timedelta(0))
            # Host time of the recording's first frame: playback follows the recorder's own arrival
            # times, which scatter by a few ms around the frame timestamps, hence the slack.
            self._anchor = now() - PLAYBACK_SLACK_S
            self._playback.resume()
            self._playback = None
        ok, frames = self._pipe.try_wait_for_frames(max(int(timeout_s * 1000), 1))
        if not ok:
            if self.playback and not self.cfg.playback.loop:
                self.ended = True
            return None
        receive = now()
        if self._align is not None:
            try:
                frames = self._align.process(frames)
            except RuntimeError:
                self._align = None  # recordings without depth-to-color extrinsics: keep raw depth
        color_frame = frames.get_color_frame()
        if not color_frame:
            return None
        index = int(color_frame.get_frame_number())
        if self._last_index is not None and index <= self._last_index:
            if not (self.playback and self.cfg.playback.loop and index < self._last_index):
                return None  # the same color frame again in a new frameset (depth arrived)
            self._anchor, self._ts0 = receive, None  # the recording looped: start the time mapping again
        self._last_index = index
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
        ts_s = color_frame.get_timestamp() / 1000.0
        domain = color_frame.get_frame_timestamp_domain()
        if self.playback:
            # The recording's timeline from when playback was resumed; clamped to the receive time for
            # a frame played earlier still (both sequences increase, so their minimum does too).
            if self._ts0 is None:
                self._ts0 = ts_s
            capture = min(self._anchor + (ts_s - self._ts0), receive)
        elif domain in (rs.timestamp_domain.global_time, rs.timestamp_domain.system_time):
            capture = ts_s - (time.time() - time.monotonic())
        else:
            # Device clock: shift onto the host clock by the smallest receive - timestamp seen so far,
            # i.e. assume the least-delayed frame had no transport delay.
            self._hw_offset = min(self._hw_offset, receive - ts_s)
            capture = ts_s + self._hw_offset
        return Frame(color, depth, float(capture), float(receive), index)

    def close(self) -> None:
        if self._pipe is not None:
            try:
                self._pipe.stop()
            except RuntimeError:
                pass
            self._pipe = None


def record_synthetic(
    path: str | Path,
    color_frames: list[np.ndarray],
    fps: float,
    depth_frames: list[np.ndarray] | None = None,
    intrinsics: tuple[float, float, float, float] | None = None,
    start_timestamp_ms: float = 1000.0,
) -> Path:
    """Write a RealSense recording (``.db3`` with pyrealsense2 2.59) of the given RGB frames (and
    optional uint16 depth) through ``rs.software_device`` + ``rs.recorder``: for tests and demos of
    the playback backend without a camera. Frame i is stamped ``start_timestamp_ms + i * 1000 / fps``.
    """
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
    for i, img in enumerate(color_frames):
        # Push in real time: the recorder stamps frames with the host time it receives them, and
        # playback paces by those stamps, so a burst would replay as a burst.
        precise_wait(t0 + i / fps)
        streams = [np.ascontiguousarray(img, np.uint8)]
        if depth_frames is not None:
            streams.append(np.ascontiguousarray(depth_frames[i], np.uint16))
        for (sensor, profile, bpp), pixels in zip(sensors, streams, strict=True):
            f = rs.software_video_frame()
            f.pixels, f.bpp, f.stride = pixels, bpp, w * bpp
            f.timestamp = start_timestamp_ms + i * 1000.0 / fps
            f.domain, f.frame_number = rs.timestamp_domain.hardware_clock, i
            f.profile = profile.as_video_stream_profile()
            sensor.on_video_frame(f)
    for sensor, _, _ in sensors:
        sensor.stop()
        sensor.close()
    del recorder  # flushes and closes the file
    return path
