"""Cameras: one capture process per camera, each writing frames into its own ring buffer.

``camera.Camera`` is the process; backends are ``realsense`` (pyrealsense2: live cameras and
recordings) and ``sim`` (renders the simulated world). ``multi_camera`` reads several cameras
time-aligned in the parent; ``video_recorder`` and ``preview`` read the rings off the capture path.
``config`` holds the settings, ``cli`` is ``rig cameras``.
"""
