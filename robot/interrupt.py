"""How a command ended by Ctrl-C says what it kept.

A terminal sends SIGINT to every process of the foreground group. The main process gets a
KeyboardInterrupt; a command that writes something (an episode store, a checkpoint, a calibration
file) catches it once its outputs are consistent and raises :class:`Interrupted` saying what was
kept. ``rig`` prints ``rig <command>: interrupted: <what was kept>`` and exits 130.
"""

from __future__ import annotations


class Interrupted(KeyboardInterrupt):
    """Ctrl-C ended a command; ``str()`` says what was kept (``rig`` exits 130)."""
