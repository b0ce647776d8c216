"""The fast rotation helpers agree with scipy's Rotation (the reference), including near pi."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from robot.arm.interpolator import PoseTrajectoryInterpolator
from robot.geometry.pose_math import quat_mul, quat_to_matrix, quat_to_rotvec, rotation_angle, rotvec_to_quat

rotvecs = st.one_of(
    st.tuples(*[st.floats(-4.0, 4.0)] * 3),
    # around the tool-down orientation [pi, 0, 0], where rotation vectors flip sign
    st.tuples(st.floats(math.pi - 1e-3, math.pi + 1e-3), st.floats(-1e-3, 1e-3), st.floats(-1e-3, 1e-3)),
    st.tuples(*[st.floats(-1e-7, 1e-7)] * 3),
)


def same_rotation(a, b, tol=1e-9):
    return (Rotation.from_rotvec(a) * Rotation.from_rotvec(b).inv()).magnitude() < tol


@settings(max_examples=300, deadline=None)
@given(a=rotvecs, b=rotvecs)
def test_quaternion_helpers_match_scipy(a, b):
    ra, rb = Rotation.from_rotvec(a), Rotation.from_rotvec(b)
    np.testing.assert_allclose(quat_to_matrix(rotvec_to_quat(a)), ra.as_matrix(), atol=1e-12)
    assert same_rotation(quat_to_rotvec(rotvec_to_quat(a)), a)
    assert np.linalg.norm(quat_to_rotvec(rotvec_to_quat(a))) <= math.pi + 1e-12
    assert same_rotation(
        quat_to_rotvec(quat_mul(rotvec_to_quat(a), rotvec_to_quat(b))), (ra * rb).as_rotvec()
    )
    assert abs(rotation_angle(a, b) - (rb * ra.inv()).magnitude()) < 1e-7


@settings(max_examples=50, deadline=None)
@given(a=rotvecs, b=rotvecs, s=st.floats(0.0, 1.0))
def test_scalar_fast_path_equals_scipy_slerp(a, b, s):
    traj = PoseTrajectoryInterpolator([0.0, 1.0], [[0.4, 0, 0.2, *a], [0.5, 0.1, 0.3, *b]])
    fast = traj(s)
    ref = traj(np.array([s]))[0]  # the vector path uses scipy's Slerp
    np.testing.assert_allclose(fast[:3], ref[:3], atol=1e-12)
    assert same_rotation(fast[3:], ref[3:], tol=1e-8)
