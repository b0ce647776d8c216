"""Exact pinhole renderer of the simulated world for simulated cameras.

Everything is planar, so the projection is exact: textured planes (the table, ChArUco boards, a
"screen", random textures) are drawn with ``cv2.warpPerspective`` through the plane-to-image
homography ``H = K [r1 r2 t] A`` (A maps texture pixels to plane metres, pixel centres at +0.5), and
solid faces (task objects, the tool) with ``cv2.fillPoly`` at 1/16 pixel precision. Pixel
coordinates are OpenCV's (centre of the top-left pixel = (0, 0)), so a 3D point ``p_cam`` appears at
``(fx x/z + cx, fy y/z + cy)`` to well under a pixel; calibration tests rely on that. Polygons are
clipped against a near plane so geometry behind the camera never folds into the image. Visibility
is the painter's algorithm (far to near by face centroid depth) plus back-face culling, which is
exact for the convex shapes used here and close enough for the T block. The table and static world
planes of a world-mounted camera are rendered once and cached, so a frame costs a copy plus the
moving things (~1-3 ms at 640x480; a wrist camera re-renders the table each frame).

Frames and conventions: see :mod:`robot.geometry.camera_geometry` (poses are ``[x, y, z, rx, ry, rz]``, camera
frame x right / y down / z forward, plane frames x along texture columns, y along rows, visible side
toward -z). Object shapes per :class:`~robot.sim.world_state.ObjectKind`, from ``object_pose`` (pose of
the object's frame: origin on its bottom face, z up through it) and ``object_size`` (metres):

- ``MARKER``: flat elliptic disc, diameters ``size[0]`` x ``size[1]``, thickness ``size[2]``, centred.
- ``BOX``: box ``size[0]`` x ``size[1]`` x ``size[2]`` (x, y, height), centred in x and y.
- ``T_BLOCK``: the Push-T block extruded ``size[2]`` high: a bar ``size[0]`` long (along x) and
  ``size[1]`` wide spanning y in [0, size[1]], and a stem ``size[1]`` wide spanning y in
  [size[1], size[0]]; the origin is the middle of the bar's outer edge.

The tool: a sphere of radius ``TOOL_TIP_RADIUS_M`` centred at the TCP and a cylinder of radius
``TOOL_BODY_RADIUS_M`` from the TCP up ``TOOL_BODY_LENGTH_M`` along the tool's -z axis (the tool's z
axis points out of the tool, down at the table in the default pose). With a gripper (world record
``has_gripper``): no tip sphere; two pads at the record's ``gripper_width_m`` and a palm, as
:mod:`robot.sim.grasp` defines them, and the body above the palm.
Depth (optional) is metric depth along the optical axis in millimetres (uint16, 0 = nothing).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from robot.geometry.camera_geometry import (
    PlaneConfig,
    SimCameraConfig,
    camera_matrix,
    camera_to_parent,
    charuco_board,
)
from robot.geometry.transforms import invert, pose_to_matrix
from robot.sim.grasp import FINGER_DEPTH_M, FINGER_LENGTH_M, FINGER_THICKNESS_M, PALM_HEIGHT_M
from robot.sim.world_state import TABLE_Z_M, TOOL_BODY_LENGTH_M, TOOL_TIP_RADIUS_M, ObjectKind, t_outline

TOOL_BODY_RADIUS_M = 0.009
NEAR_M = 0.005
SHIFT = 4  # fillPoly fixed-point bits: 1/16 pixel
_SCALE = float(1 << SHIFT)
TABLE_PX_PER_M = 800.0
MAX_TEXELS_PER_PIXEL = 0.7
# Samples per pixel (per axis) of the extra planes (boards, screens): area-integrated pixels put
# ChArUco corners within ~0.05-0.08 px of their projection (0.17 px at grazing angles, where the
# detector itself is the limit); the table is drawn with one sample.
PLANE_SUPERSAMPLE = 3
OBJECT_SUPERSAMPLE = 4  # samples per pixel (per axis) of solid objects and the tool ...
SUPERSAMPLE_BUDGET_PX = 120_000  # ... reduced for objects whose bounding box is large
WALL_RGB = (88, 94, 104)
BACK_RGB = (150, 150, 150)
TOOL_TIP_RGB = (255, 140, 0)
TOOL_BODY_RGB = (72, 72, 78)
FINGER_RGB = (40, 40, 44)
GRIPPER_MAX_WIDTH_M = 0.085  # the palm spans the open pads of a 2F-85
OBJECT_RGB = {
    ObjectKind.MARKER: (220, 40, 40),
    ObjectKind.T_BLOCK: (119, 136, 153),
    ObjectKind.BOX: (60, 160, 80),
}
_LIGHT = np.array([0.3, 0.2, 1.0]) / np.linalg.norm([0.3, 0.2, 1.0])


# ----------------------------------------------------------------------------------------- geometry
def _clip_near(pts: np.ndarray, near: float = NEAR_M) -> np.ndarray:
    """Sutherland-Hodgman clip of a 3D polygon (camera frame) to z >= near."""
    inside = pts[:, 2] >= near
    if inside.all():
        return pts
    if not inside.any():
        return pts[:0]
    out = []
    n = len(pts)
    for i in range(n):
        a, b = pts[i], pts[(i + 1) % n]
        ia, ib = a[2] >= near, b[2] >= near
        if ia:
            out.append(a)
        if ia != ib:
            s = (near - a[2]) / (b[2] - a[2])
            out.append(a + s * (b - a))
    return np.array(out)


# ----------------------------------------------------------------------------------------- textures
@dataclass
class _Texture:
    """An RGB texture on a plane: texture pixel (a, b) has its centre at plane point
    ``(x0 + (a + 0.5) / sx, y0 + (b + 0.5) / sy)``."""

    image: np.ndarray | None
    x0: float
    y0: float
    width_m: float
    height_m: float
    levels: dict | None = None

    def for_minification(self, texels_per_pixel: float) -> np.ndarray:
        """The texture pre-filtered (INTER_AREA) so that at most ~0.7 texel maps to a pixel: a bilinear
        warp of a much finer texture aliases, which moves edges and ChArUco corners by tenths of a
        pixel (measured: 0.3 px mean at 3 texels/pixel, 0.06 px at <= 0.7). Half-octave levels, cached."""
        assert self.image is not None
        k = int(np.ceil(2 * np.log2(max(texels_per_pixel / MAX_TEXELS_PER_PIXEL, 1.0))))
        if k <= 0:
            return self.image
        if self.levels is None:
            self.levels = {}
        img = self.levels.get(k)
        if img is None:
            f = 2.0 ** (k / 2)
            h, w = self.image.shape[:2]
            size = (max(int(round(w / f)), 2), max(int(round(h / f)), 2))
            img = self.levels[k] = cv2.resize(self.image, size, interpolation=cv2.INTER_AREA)
        return img

    def plane_from_texture(self, tex_w: int, tex_h: int) -> np.ndarray:
        sx, sy = tex_w / self.width_m, tex_h / self.height_m
        return np.array([[1 / sx, 0, self.x0 + 0.5 / sx], [0, 1 / sy, self.y0 + 0.5 / sy], [0, 0, 1.0]])

    def corners(self) -> np.ndarray:
        x0, y0, x1, y1 = self.x0, self.y0, self.x0 + self.width_m, self.y0 + self.height_m
        return np.array([[x0, y0, 0.0], [x1, y0, 0.0], [x1, y1, 0.0], [x0, y1, 0.0]])


def _noise_texture(h: int, w: int, seed: int, base: tuple[int, int, int], amp: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    low = rng.normal(0, 1, (max(h // 40, 2), max(w // 40, 2))).astype(np.float32)
    low = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
    fine = rng.normal(0, 0.35, (h, w)).astype(np.float32)
    v = (low + fine)[..., None] * amp
    return np.clip(np.array(base, np.float32) + v, 0, 255).astype(np.uint8)


def table_texture(extent: list[float], seed: int = 7) -> _Texture:
    """Table top: wood-toned noise with faint 10 cm grid lines (structure for the policy to see)."""
    x_min, x_max, y_min, y_max = extent
    w_m, h_m = x_max - x_min, y_max - y_min
    w, h = int(round(w_m * TABLE_PX_PER_M)), int(round(h_m * TABLE_PX_PER_M))
    img = _noise_texture(h, w, seed, (176, 156, 124), 10.0)
    step = int(0.1 * TABLE_PX_PER_M)
    # Plane frame: x along world x from x_min, y along world -y from y_max (so visible side = up).
    for a in range(int(round((0 - x_min) * TABLE_PX_PER_M)) % step, w, step):
        img[:, a] = (img[:, a] * 0.8).astype(np.uint8)
    for b in range(int(round((y_max - 0) * TABLE_PX_PER_M)) % step, h, step):
        img[b, :] = (img[b, :] * 0.8).astype(np.uint8)
    return _Texture(img, 0.0, 0.0, w_m, h_m)


def plane_texture(plane: PlaneConfig) -> _Texture:
    """Texture of a configured plane (screen planes get theirs at render time)."""
    if plane.kind == "charuco":
        s = plane.charuco
        board = charuco_board(s)
        px = s.px_per_square
        w_m, h_m = s.squares_x * s.square_length_m, s.squares_y * s.square_length_m
        board_img = board.generateImage((s.squares_x * px, s.squares_y * px), marginSize=0, borderBits=1)
        m_px = int(round(s.margin_m / s.square_length_m * px))
        board_img = cv2.copyMakeBorder(board_img, m_px, m_px, m_px, m_px, cv2.BORDER_CONSTANT, value=255)
        margin = m_px * s.square_length_m / px
        rgb = cv2.cvtColor(board_img, cv2.COLOR_GRAY2RGB)
        return _Texture(rgb, -margin, -margin, w_m + 2 * margin, h_m + 2 * margin)
    if plane.kind == "texture":
        h = max(int(plane.height_m * 1000), 8)
        w = max(int(plane.width_m * 1000), 8)
        rng = np.random.default_rng(plane.texture_seed)
        small = rng.integers(0, 256, (max(h // 16, 2), max(w // 16, 2), 3), dtype=np.uint8)
        return _Texture(
            cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST), 0, 0, plane.width_m, plane.height_m
        )
    return _Texture(None, 0.0, 0.0, plane.width_m, plane.height_m)  # screen


# ----------------------------------------------------------------------------------------- shapes
def _disc_footprint(dx: float, dy: float, n: int = 40) -> np.ndarray:
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([0.5 * dx * np.cos(a), 0.5 * dy * np.sin(a)], axis=1)


def object_footprint(kind: int, size: np.ndarray) -> np.ndarray | None:
    """Counter-clockwise (seen from +z) footprint polygon of an object in its own frame, or None."""
    sx, sy = float(size[0]), float(size[1])
    if kind == ObjectKind.MARKER:
        return _disc_footprint(sx, sy)
    if kind == ObjectKind.BOX:
        return np.array([[-sx / 2, -sy / 2], [sx / 2, -sy / 2], [sx / 2, sy / 2], [-sx / 2, sy / 2]])
    if kind == ObjectKind.T_BLOCK:
        return t_outline(sx, sy)
    return None


def prism_faces(footprint: np.ndarray, z0: float, z1: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Faces (vertices (N, 3), outward normal) of the prism of a CCW footprint between z0 and z1."""
    n = len(footprint)
    bottom = np.column_stack([footprint, np.full(n, z0)])
    top = np.column_stack([footprint, np.full(n, z1)])
    faces = [(top, np.array([0.0, 0.0, 1.0])), (bottom[::-1], np.array([0.0, 0.0, -1.0]))]
    for i in range(n):
        j = (i + 1) % n
        d = footprint[j] - footprint[i]
        norm = np.hypot(d[0], d[1])
        if norm < 1e-12:
            continue
        faces.append((np.array([bottom[i], bottom[j], top[j], top[i]]), np.array([d[1], -d[0], 0.0]) / norm))
    return faces


# The body in the tool frame: from the TCP up (the tool's -z) TOOL_BODY_LENGTH_M; the bottom face
# sits at the tip's centre and is hidden by the tip sphere.
_TOOL_BODY_FACES = prism_faces(
    _disc_footprint(2 * TOOL_BODY_RADIUS_M, 2 * TOOL_BODY_RADIUS_M, 16), -TOOL_BODY_LENGTH_M, 0.0
)
_PALM_TOP_M = -FINGER_LENGTH_M - PALM_HEIGHT_M
_GRIPPER_BODY_FACES = prism_faces(
    _disc_footprint(2 * TOOL_BODY_RADIUS_M, 2 * TOOL_BODY_RADIUS_M, 16),
    -max(TOOL_BODY_LENGTH_M, -_PALM_TOP_M + 0.02),
    _PALM_TOP_M,
)


def _rect(x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])


def gripper_faces(width_m: float) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """The pads and palm of a gripper opened ``width_m`` (tool frame prisms, see robot/sim/grasp.py)."""
    w, t, d = float(np.clip(width_m, 0.0, GRIPPER_MAX_WIDTH_M)) / 2, FINGER_THICKNESS_M, FINGER_DEPTH_M / 2
    half_palm = GRIPPER_MAX_WIDTH_M / 2 + t
    return [
        prism_faces(_rect(w, w + t, -d, d), -FINGER_LENGTH_M, 0.0),
        prism_faces(_rect(-w - t, -w, -d, d), -FINGER_LENGTH_M, 0.0),
        prism_faces(_rect(-half_palm, half_palm, -d, d), _PALM_TOP_M, -FINGER_LENGTH_M),
    ]


# ----------------------------------------------------------------------------------------- renderer
class SceneRenderer:
    """Renders world states for one simulated camera (construct in the camera process).

    ``render(world, t_world_tool, screen_image)`` -> ``(color RGB uint8 (H, W, 3), depth uint16 (H, W)
    in mm or None)`` at the native resolution. ``world`` is one world-state record (a mapping with
    ``object_pose``, ``object_kind``, ``object_size``) or None for an empty table. ``sim``: the
    camera's geometry (optics, mount, planes), ``width x height`` its native resolution (px).
    """

    def __init__(self, sim: SimCameraConfig, width: int, height: int, want_depth: bool = False):
        self.sim = sim
        self.width, self.height = width, height
        self.K = camera_matrix(sim)
        self.K_inv = np.linalg.inv(self.K)
        self.want_depth = want_depth
        self.T_parent_cam = camera_to_parent(sim)
        ext = sim.table_extent_m
        # Table plane frame: origin (x_min, y_max, 0), x = world x, y = world -y, z = world -z.
        self._table_T = pose_to_matrix([ext[0], ext[3], TABLE_Z_M, np.pi, 0.0, 0.0])
        self._table_tex = table_texture(ext)
        self._planes = [(p, plane_texture(p)) for p in sim.planes.values()]
        self._cache: tuple[np.ndarray, np.ndarray | None] | None = None
        self._screen_rgb: np.ndarray | None = None

    # ---- public ---------------------------------------------------------------------------------
    def camera_pose_world(self, t_world_tool: np.ndarray) -> np.ndarray:
        """``T_world_cam`` given the current tool pose (ignored for world-mounted cameras)."""
        if self.sim.mount == "tool":
            return t_world_tool @ self.T_parent_cam
        return self.T_parent_cam

    def render(
        self,
        world: Mapping[str, np.ndarray] | None,
        t_world_tool: np.ndarray,
        screen_image: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        T_cam_world = invert(self.camera_pose_world(t_world_tool))
        T_cam_tool = T_cam_world @ t_world_tool
        static = self.sim.mount == "world"
        if static and self._cache is not None:
            color = self._cache[0].copy()
            depth = None if self._cache[1] is None else self._cache[1].copy()
        else:
            color = np.empty((self.height, self.width, 3), np.uint8)
            color[:] = WALL_RGB
            depth = np.zeros((self.height, self.width), np.uint16) if self.want_depth else None
            self._draw_plane(color, depth, T_cam_world @ self._table_T, self._table_tex, False)
            for plane, tex in self._planes:
                if plane.mount == "world" and plane.kind != "screen":
                    T = T_cam_world @ pose_to_matrix(plane.pose)
                    self._draw_plane(color, depth, T, tex, plane.double_sided, PLANE_SUPERSAMPLE)
            if static:
                self._cache = (color.copy(), None if depth is None else depth.copy())

        items: list[tuple[float, object]] = []  # (depth key, drawable)
        for plane, tex in self._planes:
            if plane.mount == "world" and plane.kind != "screen":
                continue
            parent = T_cam_world if plane.mount == "world" else T_cam_tool
            T = parent @ pose_to_matrix(plane.pose)
            if plane.kind == "screen":
                tex = _Texture(self._screen_texture(screen_image), 0.0, 0.0, plane.width_m, plane.height_m)
            c = tex.corners() @ T[:3, :3].T + T[:3, 3]
            items.append((float(c[:, 2].mean()), ("plane", T, tex, plane.double_sided)))
        if world is not None:
            self._collect_objects(items, world, T_cam_world)
        gripper_width = None
        if world is not None and bool(world.get("has_gripper", False)):
            w = float(world["gripper_width_m"])
            gripper_width = w if np.isfinite(w) else GRIPPER_MAX_WIDTH_M
        self._collect_tool(items, T_cam_tool, T_cam_world[:3, :3].T, gripper_width)
        items.sort(key=lambda it: -it[0])
        for _, item in items:
            if item[0] == "plane":
                self._draw_plane(color, depth, item[1], item[2], item[3], PLANE_SUPERSAMPLE)
            elif item[0] == "face":
                self._draw_group(color, depth, [(item[1], item[2])])
            else:
                self._draw_group(color, depth, item[1])
        return color, depth

    # ---- scene items ----------------------------------------------------------------------------
    def _shade(self, rgb: tuple[int, int, int], normal_world: np.ndarray) -> tuple[float, float, float]:
        k = 0.62 + 0.38 * max(0.0, float(normal_world @ _LIGHT))
        return (rgb[0] * k, rgb[1] * k, rgb[2] * k)

    def _add_faces(self, items: list, faces, T_cam_obj: np.ndarray, T_world_cam_R: np.ndarray, rgb) -> None:
        """One prism as one painter's item: visible side faces far to near, then the visible caps.

        A prism's caps are never hidden by its own sides, and drawing them last keeps the
        antialiased fill of thin, edge-on sides from bleeding over a cap's outline (it would move
        the object's image by a fraction of a pixel).
        """
        R, t = T_cam_obj[:3, :3], T_cam_obj[:3, 3]
        sides, caps = [], []
        for verts, normal in faces:
            pc = verts @ R.T + t
            nc = R @ normal
            if float(nc @ pc[0]) >= 0:  # back face (or edge-on)
                continue
            face = (pc, self._shade(rgb, T_world_cam_R @ nc))
            if abs(normal[2]) > 0.5:
                caps.append(face)
            else:
                sides.append((float(pc[:, 2].mean()), face))
        if not sides and not caps:
            return
        sides.sort(key=lambda it: -it[0])
        ordered = [f for _, f in sides] + caps
        key = float(np.mean([f[0][:, 2].mean() for f in ordered]))
        items.append((key, ("faces", ordered)))

    def _collect_objects(self, items: list, world: Mapping[str, np.ndarray], T_cam_world: np.ndarray) -> None:
        R_wc = T_cam_world[:3, :3].T
        kinds = np.asarray(world["object_kind"])
        for i in np.flatnonzero(kinds != ObjectKind.NONE):
            kind = int(kinds[i])
            size = np.asarray(world["object_size"][i], float)
            fp = object_footprint(kind, size)
            if fp is None or size[2] <= 0:
                continue
            T = T_cam_world @ pose_to_matrix(world["object_pose"][i])
            self._add_faces(
                items, prism_faces(fp, 0.0, size[2]), T, R_wc, OBJECT_RGB.get(kind, (200, 200, 200))
            )

    def _collect_tool(
        self, items: list, T_cam_tool: np.ndarray, R_world_cam: np.ndarray, gripper_width_m: float | None
    ) -> None:
        if gripper_width_m is not None:
            self._add_faces(items, _GRIPPER_BODY_FACES, T_cam_tool, R_world_cam, TOOL_BODY_RGB)
            for faces in gripper_faces(gripper_width_m):
                self._add_faces(items, faces, T_cam_tool, R_world_cam, FINGER_RGB)
            return
        self._add_faces(items, _TOOL_BODY_FACES, T_cam_tool, R_world_cam, TOOL_BODY_RGB)
        sil = sphere_silhouette(T_cam_tool[:3, 3], TOOL_TIP_RADIUS_M)
        if sil is not None:
            items.append((float(T_cam_tool[2, 3]) - TOOL_TIP_RADIUS_M, ("face", sil, TOOL_TIP_RGB)))

    def _screen_texture(self, image: np.ndarray | None) -> np.ndarray | None:
        if image is None:
            return None
        img = np.asarray(image)
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
        return img

    # ---- rasterisation --------------------------------------------------------------------------
    def _project(self, pc: np.ndarray) -> np.ndarray:
        K = self.K
        return np.stack([K[0, 0] * pc[:, 0] / pc[:, 2] + K[0, 2], K[1, 1] * pc[:, 1] / pc[:, 2] + K[1, 2]], 1)

    def _roi(self, uv: np.ndarray) -> tuple[int, int, int, int] | None:
        x0 = max(int(np.floor(uv[:, 0].min())) - 1, 0)
        y0 = max(int(np.floor(uv[:, 1].min())) - 1, 0)
        x1 = min(int(np.ceil(uv[:, 0].max())) + 2, self.width)
        y1 = min(int(np.ceil(uv[:, 1].max())) + 2, self.height)
        if x1 <= x0 or y1 <= y0:
            return None
        return x0, y0, x1, y1

    def _fill_depth(self, depth: np.ndarray, mask: np.ndarray, roi, pc: np.ndarray) -> None:
        """Depth (mm) of the plane through the polygon ``pc`` at every masked pixel of ``roi``."""
        n = np.cross(pc[1] - pc[0], pc[2] - pc[0])
        if len(pc) > 3:  # Newell's normal is robust to nearly collinear first vertices
            n = np.sum(np.cross(pc, np.roll(pc, -1, axis=0)), axis=0)
        if np.linalg.norm(n) < 1e-15:
            return
        d = float(n @ pc[0])
        if abs(d) < 1e-12:
            return
        x0, y0, x1, y1 = roi
        a, b, c = (n @ self.K_inv) / d  # 1/z = a u + b v + c on this plane
        u = np.arange(x0, x1, dtype=np.float32)
        v = np.arange(y0, y1, dtype=np.float32)
        inv_z = (a * u)[None, :] + (b * v)[:, None] + c
        with np.errstate(divide="ignore", invalid="ignore"):
            z_mm = np.where(inv_z > 0, 1000.0 / inv_z, 0.0)
        z_mm = np.clip(z_mm, 0, 65535).astype(np.uint16)
        sub = depth[y0:y1, x0:x1]
        sub[mask] = z_mm[mask]

    def _draw_group(self, color: np.ndarray, depth: np.ndarray | None, faces: list) -> None:
        """Draw solid faces (camera-frame polygons, painted in order) with exact area antialiasing:
        the group is rasterised at OBJECT_SUPERSAMPLE x OBJECT_SUPERSAMPLE samples per pixel (pixel-centre
        sampling, no AA) and box-filtered, then blended over the image by its coverage. OpenCV's own
        LINE_AA fill grows shapes by ~half a pixel, which moves thresholded outlines by up to 0.4 px."""
        polys = []
        for pc, rgb in faces:
            pc = _clip_near(pc)
            if len(pc) >= 3:
                polys.append((pc, self._project(pc), rgb))
        if not polys:
            return
        roi = self._roi(np.concatenate([uv for _, uv, _ in polys]))
        if roi is None:
            return
        x0, y0, x1, y1 = roi
        w, h = x1 - x0, y1 - y0
        # Fewer samples for big things (close to the camera), to bound the cost per group.
        ss = int(max(1, min(OBJECT_SUPERSAMPLE, np.sqrt(SUPERSAMPLE_BUDGET_PX / (w * h)))))
        hi_color = np.zeros((h * ss, w * ss, 3), np.uint8)
        hi_mask = np.zeros((h * ss, w * ss), np.uint8)
        offset = np.array([x0, y0], float)
        for _, uv, rgb in polys:
            hi = ss * (uv - offset) + (ss - 1) / 2  # low-res pixel x -> centre of its ss x ss block
            pts = np.round(hi * _SCALE).astype(np.int32)
            cv2.fillPoly(hi_color, [pts], rgb, cv2.LINE_8, SHIFT)
            cv2.fillPoly(hi_mask, [pts], 255, cv2.LINE_8, SHIFT)
        premult = cv2.resize(hi_color, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
        alpha = cv2.resize(hi_mask, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) * (1 / 255)
        sub = color[y0:y1, x0:x1]
        blended = premult + (1.0 - alpha)[..., None] * sub
        np.copyto(sub, np.clip(blended + 0.5, 0, 255).astype(np.uint8))
        if depth is not None:
            for pc, uv, _ in polys:
                mask = np.zeros((h, w), np.uint8)
                pts = np.round((uv - offset) * _SCALE).astype(np.int32)
                cv2.fillPoly(mask, [pts], 1, lineType=cv2.LINE_8, shift=SHIFT)
                self._fill_depth(depth, mask.astype(bool), roi, pc)

    def _draw_plane(
        self,
        color: np.ndarray,
        depth: np.ndarray | None,
        T_cam_plane: np.ndarray,
        tex: _Texture,
        double_sided: bool,
        supersample: int = 1,
    ) -> None:
        pc = tex.corners() @ T_cam_plane[:3, :3].T + T_cam_plane[:3, 3]
        front = float(T_cam_plane[:3, 2] @ T_cam_plane[:3, 3]) > 0  # visible side faces the plane's -z
        clipped = _clip_near(pc)
        if len(clipped) < 3:
            return
        uv = self._project(clipped)
        roi = self._roi(uv)
        if roi is None:
            return
        x0, y0, x1, y1 = roi
        pts = np.round(uv * _SCALE).astype(np.int32) - np.array([x0, y0]) * int(_SCALE)
        sub = color[y0:y1, x0:x1]
        mask = None
        if depth is not None or len(clipped) != 4 or not np.array_equal(clipped, pc):
            mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
            cv2.fillPoly(mask, [pts], 255, lineType=cv2.LINE_8, shift=SHIFT)
        image = tex.image
        if image is None or not (front or double_sided):
            cv2.fillPoly(sub, [pts], (0, 0, 0) if image is None and front else BACK_RGB, cv2.LINE_AA, SHIFT)
        else:
            unclipped = len(clipped) == 4 and np.array_equal(clipped, pc)
            if unclipped:
                # Texels per pixel along the texture's less minified axis (keeps foreshortened views sharp).
                len_x = 0.5 * (np.linalg.norm(uv[1] - uv[0]) + np.linalg.norm(uv[2] - uv[3]))
                len_y = 0.5 * (np.linalg.norm(uv[3] - uv[0]) + np.linalg.norm(uv[2] - uv[1]))
                image = tex.for_minification(
                    min(image.shape[1] / max(len_x, 1.0), image.shape[0] / max(len_y, 1.0)) / supersample
                )
            th, tw = image.shape[:2]
            # Texture pixel -> plane metres -> camera (z = 0 plane: columns r1, r2, t) -> pixels -> ROI.
            P = np.column_stack([T_cam_plane[:3, 0], T_cam_plane[:3, 1], T_cam_plane[:3, 3]])
            H = (
                np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1.0]])
                @ self.K
                @ P
                @ tex.plane_from_texture(tw, th)
            )
            size = (x1 - x0, y1 - y0)
            if supersample > 1:
                # Render ss x ss samples per pixel and box-filter them (INTER_AREA over whole blocks):
                # the high-res pixel centre of block (i, j) offset (a, b) is ss * (i, j) + (a, b), so a
                # low-res coordinate x maps to ss * x + (ss - 1) / 2.
                ss = supersample
                A = np.array([[ss, 0, (ss - 1) / 2], [0, ss, (ss - 1) / 2], [0, 0, 1.0]])
                hi = cv2.warpPerspective(
                    image,
                    A @ H,
                    (size[0] * ss, size[1] * ss),
                    flags=cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE,
                )
                warped = cv2.resize(hi, size, interpolation=cv2.INTER_AREA)
                if mask is None:
                    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
                    cv2.fillPoly(mask, [pts], 255, lineType=cv2.LINE_8, shift=SHIFT)
                cv2.copyTo(warped, mask, sub)
            elif unclipped:
                # Entirely in front of the camera: pixels outside the texture stay untouched.
                cv2.warpPerspective(
                    image, H, size, dst=sub, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_TRANSPARENT
                )
            else:  # partly behind the camera: only the clipped polygon is valid
                warped = cv2.warpPerspective(image, H, size, flags=cv2.INTER_LINEAR)
                cv2.copyTo(warped, mask, sub)
        if depth is not None:
            self._fill_depth(depth, mask.astype(bool), roi, clipped)


def sphere_silhouette(center_cam: np.ndarray, radius: float, n: int = 40) -> np.ndarray | None:
    """3D points (camera frame) of the circle where the view cone touches a sphere: its projection is
    the sphere's exact image outline."""
    c = np.asarray(center_cam, float)
    d = float(np.linalg.norm(c))
    if d <= radius * 1.001 or c[2] <= NEAR_M:
        return None
    k = 1.0 - (radius / d) ** 2
    cc, rr = c * k, radius * np.sqrt(k)
    axis = c / d
    e1 = np.cross(axis, [1.0, 0.0, 0.0] if abs(axis[0]) < 0.9 else [0.0, 1.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(axis, e1)
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return cc + rr * (np.cos(a)[:, None] * e1 + np.sin(a)[:, None] * e2)
