"""The tasks a recipe can train (its ``task:`` key), a registry in the style of the conversion rules.

Each task supplies what differs between tasks: the bare architecture for a recipe, its data
loaders, loss and metrics, the headline metric that tables judge it by, the labels of its model
card, its embedded datasets and the model names it can build. Nothing outside the tasks tests a
task's name; a new task is one :func:`register_task` call::

    ndeconv.tasks.register_task(Task(name="regression", metric="mae", ...))
"""

from . import classification, segmentation
from .classification import top5
from .registry import Task, get_task, list_tasks, metric_label, register_task, resolve_task, task_of_builtin

__all__ = ["Task", "register_task", "get_task", "list_tasks", "task_of_builtin", "metric_label", "resolve_task",
           "top5", "classification", "segmentation"]
