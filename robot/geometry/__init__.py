"""Geometry shared by the world, the arm and the cameras: the lowest floor of ``robot/`` above config.

``pose_math`` (rotation vectors and quaternions on the arm's hot path), ``transforms`` (poses as 4x4
homogeneous transforms), ``ur_kinematics`` (UR5 / UR5e forward and inverse kinematics) and
``camera_geometry`` (a simulated camera's optics, mount and planes, and the pinhole projection).
No processes, no clocks: pure functions and config models that every floor above may import.
"""
