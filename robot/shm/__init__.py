"""Shared-memory IPC between the rig's processes: no process of its own.

The lock-free single-writer ring buffer (``ring_buffer``) every device process publishes into, the
single-producer single-consumer command queue (``command_queue``) the arm controller drains, the slot
layout and 64-bit atomics they share (``layout``, ``_atomic64``), segment naming/ownership/cleanup
(``segments``), ``rig shm list/clean`` (``cli``) and a stress tool (``stress``).
"""
