"""Registry of the simulated tasks and their scripted experts, and the task config (``configs/task``).

- :func:`make_task` ``(name, **params) -> Task``: ``"none"`` (empty table), ``"touch"``
  (:class:`~robot.sim.world.TouchMarkerTask`), ``"reach"`` (:class:`~robot.sim.tasks.reach.ReachTask`),
  ``"pusht"`` (:class:`~robot.sim.tasks.pusht.PushTTask`), ``"pick_place"``
  (:class:`~robot.sim.tasks.pick_place.PickPlaceTask`, needs a gripper). Tasks are picklable: build them in the parent
  and hand them to the simulated arm.
- :func:`make_expert` ``(name, **params) -> Expert``: the scripted SpaceMouse expert of a task
  (see :mod:`robot.sim.tasks.experts` for the axes convention). Usable from a SpaceMouse config as
  ``scripted.expert: {target: "robot.sim.tasks:make_expert", kwargs: {name: reach, ...}}``.
- :class:`TaskConfig` / :func:`load_task_config`: a YAML file with ``name``, ``params`` (task),
  ``expert`` (expert params) and ``seed``; :meth:`TaskConfig.make_expert` /
  :func:`make_task_expert` pass the task geometry the expert needs (e.g. the Push-T goal) from
  ``params`` so the two cannot disagree.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from robot.config import ConfigError, StrictModel, config_path, load_config
from robot.sim.world import NoTask, Task, TouchMarkerTask

# A scripted expert: SpaceMouse state -> (axes, buttons); the type robot.spacemouse.scripted.Expert, spelt
# here so that the world (below the devices) does not import the SpaceMouse package.
Expert = Callable[[dict[str, Any]], tuple[np.ndarray, np.ndarray]]

TASK_NAMES = ("none", "touch", "reach", "pusht", "pick_place")
EXPERT_NAMES = ("reach", "pusht", "pick_place")

TaskName = Literal["none", "touch", "reach", "pusht", "pick_place"]


def _task_class(name: str) -> type:
    if name == "none":
        return NoTask
    if name == "touch":
        return TouchMarkerTask
    if name == "reach":
        from robot.sim.tasks.reach import ReachTask

        return ReachTask
    if name == "pusht":
        from robot.sim.tasks.pusht import PushTTask

        return PushTTask
    if name == "pick_place":
        from robot.sim.tasks.pick_place import PickPlaceTask

        return PickPlaceTask
    raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASK_NAMES)}")


def _expert_class(name: str) -> type:
    if name == "reach":
        from robot.sim.tasks.experts import ReachExpert

        return ReachExpert
    if name == "pusht":
        from robot.sim.tasks.experts import PushTExpert

        return PushTExpert
    if name == "pick_place":
        from robot.sim.tasks.pick_place_expert import PickPlaceExpert

        return PickPlaceExpert
    raise ValueError(f"no scripted expert for task {name!r}; experts exist for: {', '.join(EXPERT_NAMES)}")


def _construct(cls: Callable[..., Any], what: str, params: dict[str, Any]) -> Any:
    accepted = [
        p.name
        for p in inspect.signature(cls).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(f"{what}: unknown parameter(s) {unknown}; accepted: {', '.join(accepted) or 'none'}")
    return cls(**params)


def make_task(name: str, **params: Any) -> Task:
    """Build the task ``name`` with ``params`` (its constructor's keyword arguments).

    Raises ValueError naming an unknown task or parameter.
    """
    return _construct(_task_class(name), f"task {name!r}", params)


def make_expert(name: str, **params: Any) -> Expert:
    """Build the scripted expert of task ``name`` with ``params`` (its dataclass fields).

    Raises ValueError naming an unknown task or parameter.
    """
    return _construct(_expert_class(name), f"expert of task {name!r}", params)


def expert_shared_params(name: str) -> tuple[str, ...]:
    """Task parameters the expert of ``name`` also takes (geometry it must agree on with the task)."""
    if name == "pusht":
        from robot.sim.tasks.pusht import EXPERT_SHARED_PARAMS

        return EXPERT_SHARED_PARAMS
    return ()


def make_task_expert(name: str, task_params: dict[str, Any], expert_params: dict[str, Any]) -> Expert:
    """The expert of task ``name`` with ``expert_params``, plus the geometry it shares with the task
    (e.g. the Push-T goal) taken from ``task_params`` unless ``expert_params`` sets it."""
    shared = {k: task_params[k] for k in expert_shared_params(name) if k in task_params}
    return make_expert(name, **{**shared, **expert_params})


class TaskConfig(StrictModel):
    """``configs/task/<name>.yaml``: which task, its parameters, and its expert's parameters.

    A superset of the rig config's ``task`` section (``name``, ``params``, ``seed``), so a rig file
    can include a task file (``defaults: [{task: ../task/pusht.yaml}]``) if the rig uses this model.
    """

    name: TaskName = "none"
    params: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments of the task class (see its docstring); missing ones take the defaults."""
    expert: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments of the task's scripted expert; ``max_speed_m_s`` must match the teleop."""
    seed: int = 0
    """Seed of the first episode (a collector uses the next seed for each later episode)."""

    @model_validator(mode="after")
    def _params_known(self) -> TaskConfig:
        try:
            self.make_task()
            if self.name in EXPERT_NAMES:
                self.make_expert()
        except (TypeError, ValueError) as exc:
            raise ValueError(str(exc)) from None
        return self

    def make_task(self) -> Task:
        """A fresh task object (not reset yet)."""
        return make_task(self.name, **self.params)

    def make_expert(self) -> Expert:
        """A fresh expert; the shared geometry params of the task are passed on unless overridden."""
        return make_task_expert(self.name, self.params, self.expert)


def load_task_config(name_or_path: str | Path, overrides: Iterable[str] = ()) -> TaskConfig:
    """Load ``configs/task/<name>.yaml`` (a task name, a name under configs/, or a path).

    Raises :class:`~robot.config.ConfigError` naming the file and the bad key.
    """
    s = str(name_or_path)
    try:
        path = config_path(s)
    except ConfigError:
        path = config_path(f"task/{s}")
    return load_config(TaskConfig, path, overrides)
