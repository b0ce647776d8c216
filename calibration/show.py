"""Human-readable lines for a calibration file (``rig calibrate show``)."""

from __future__ import annotations

from robot.calibration_data import CalibrationFile, Measured


def _prov(m: Measured) -> str:
    parts = [m.date]
    if m.method:
        parts.append(m.method)
    if m.residual is not None:
        parts.append(f"residual {m.residual:.4g} {m.residual_unit}".rstrip())
    if m.n_samples is not None:
        parts.append(f"n={m.n_samples}")
    return "; ".join(parts)


def describe(cal: CalibrationFile) -> list[str]:
    lines = []
    r = cal.robot
    if r.action_latency is not None:
        a = r.action_latency
        lines.append(f"robot action latency  {a.value_s * 1e3:8.2f} ms   ({_prov(a)})")
        if a.dead_time_s is not None and a.lag_50_s is not None and a.lag_90_s is not None:
            lines.append(
                f"  {a.model} response: dead time {a.dead_time_s * 1e3:.2f} ms, lag to 50 % "
                f"{a.lag_50_s * 1e3:.2f} ms, to 90 % {a.lag_90_s * 1e3:.2f} ms"
            )
    if r.obs_latency is not None:
        lines.append(
            f"robot obs latency     {r.obs_latency.value_s * 1e3:8.2f} ms   ({_prov(r.obs_latency)})"
        )
    g = cal.gripper.action_latency
    if g is not None:
        lines.append(f"gripper latency       {g.value_s * 1e3:8.2f} ms   ({_prov(g)})")
    for name, cam in cal.cameras.items():
        if cam.latency is not None:
            std = f" +- {cam.latency.std_s * 1e3:.2f}" if cam.latency.std_s is not None else ""
            lines.append(
                f"camera {name}: latency {cam.latency.value_s * 1e3:.2f}{std} ms   ({_prov(cam.latency)})"
            )
        if cam.intrinsics is not None:
            i = cam.intrinsics
            lines.append(
                f"camera {name}: intrinsics {i.width}x{i.height} fx {i.fx:.2f} fy {i.fy:.2f} cx {i.cx:.2f} "
                f"cy {i.cy:.2f} dist {[round(d, 4) for d in i.distortion]}   ({_prov(i)})"
            )
        if cam.extrinsics is not None:
            e = cam.extrinsics
            frame = "T_base_cam" if e.mount == "world" else "T_tcp_cam"
            lines.append(
                f"camera {name}: extrinsics ({frame}) {[round(v, 5) for v in e.pose]}   ({_prov(e)})"
            )
    if not lines:
        lines.append("(no calibrated values yet)")
    return lines
