"""Cameras: one capture process per camera, each writing frames into its own ring buffer.

``camera.Camera`` is the process and chooses the backend: ``realsense`` (pyrealsense2: live cameras
and recordings) or ``sim`` (renders the simulated world); both implement ``backend.CameraBackend``
and return its ``Frame``/``CameraIntrinsics``. ``multi_camera`` reads several cameras
time-aligned in the parent; ``video_recorder`` and ``preview`` read the rings off the capture path.
``config`` holds the settings, ``cli`` is ``rig cameras``.
"""
