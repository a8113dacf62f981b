"""The tasks of a v2.1 source (``vla convert``): which task each episode and each frame had, when
``meta/tasks.jsonl``, ``meta/episodes.jsonl`` or the ``task_index`` column may be missing.

A recorder writes the task three ways: as strings in ``meta/episodes.jsonl`` (each episode's tasks),
as numbers in the data's ``task_index`` column with ``meta/tasks.jsonl`` naming them, or as strings
in a ``task`` column. Any two of them give the third when the episode has one task; what cannot be
told (an episode with several tasks and nothing per frame, a number no file names) is an error that
says which file is missing and why it cannot be rebuilt.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TASKS_JSONL, EPISODES_JSONL = "meta/tasks.jsonl", "meta/episodes.jsonl"


@dataclass
class TaskPlan:
    tasks: dict[int, str] = field(default_factory=dict)  # task_index -> task (tasks.jsonl, or rebuilt)
    episode_tasks: dict[int, list[str]] = field(default_factory=dict)  # episode -> its tasks, in order
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _episode_strings(e, tasks_file: dict[int, str] | None, listed: dict[int, dict] | None) -> list[str] | None:
    """The episode's task strings: its ``task`` column, else meta/episodes.jsonl, else its task_index values,
    else the one task of meta/tasks.jsonl; None when they cannot be told."""
    if e.task_strings is not None:
        return e.task_strings
    if listed is not None and e.index in listed:
        return [str(t) for t in listed[e.index].get("tasks") or []]
    if tasks_file is not None and e.task_indices is not None and all(i in tasks_file for i in e.task_indices):
        return [tasks_file[i] for i in e.task_indices]
    if tasks_file is not None and len(set(tasks_file.values())) == 1:  # a single-task recording
        return list(set(tasks_file.values()))
    return None


def _rebuild_tasks(episodes: list, strings: dict[int, list[str] | None]) -> tuple[dict[int, str] | None, str]:
    """meta/tasks.jsonl from the data: the numbers the ``task_index`` column uses, each tied to one string
    (a row with both columns, or an episode with one number and one task); without any ``task_index``
    column, the tasks numbered in order of first appearance. Returns (tasks, how) or (None, why not)."""
    if any(strings[e.index] is None for e in episodes):
        unknown = [e.index for e in episodes if strings[e.index] is None]
        return None, (f"episodes {unknown[:8]} have no task strings anywhere (no 'task' column and "
                      f"{EPISODES_JSONL} does not list them)")
    if all(e.task_indices is None for e in episodes):
        order = list(dict.fromkeys(s for e in episodes for s in strings[e.index]))
        return dict(enumerate(order)), "the episodes' tasks, numbered in order of first appearance"
    ties: dict[int, set[str]] = {}
    for e in episodes:
        pairs = e.pairs or ({(e.task_indices[0], strings[e.index][0])} if e.task_indices is not None and
                            len(e.task_indices) == 1 and len(strings[e.index]) == 1 else set())
        for i, s in pairs:
            ties.setdefault(i, set()).add(s)
    used = sorted({i for e in episodes for i in e.task_indices or ()})
    untold = [i for i in used if len(ties.get(i, ())) != 1]
    if untold:
        return None, (f"the task_index values {untold[:8]} cannot each be tied to one task string (no 'task' "
                      f"column, and the episodes that use them list several tasks or none)")
    tasks = {i: next(iter(ties[i])) for i in used}
    for s in dict.fromkeys(s for e in episodes for s in strings[e.index]):  # episodes without the column
        if s not in tasks.values():
            tasks[max(tasks, default=-1) + 1] = s
    return tasks, "the data's task_index values and the tasks of the episodes that use them"


def _check_episode(e, strings: list[str], known: set[str], plan: TaskPlan) -> None:
    if not strings:
        plan.errors.append(f"episode {e.index}: {EPISODES_JSONL} lists no task; every frame needs one: add the "
                           f"episode's task to its line")
    unknown = [s for s in strings if s not in known]
    if unknown:
        plan.errors.append(f"episode {e.index}: task {unknown[0]!r} is not in {TASKS_JSONL}; add it there")
    if e.task_indices is None and e.task_strings is None and len(strings) > 1:
        plan.errors.append(f"episode {e.index}: no 'task_index' column and {len(strings)} tasks in {EPISODES_JSONL} "
                           f"({', '.join(map(repr, strings))}): which frame had which task cannot be told; add a "
                           f"task_index or task column to its data file")


def resolve_tasks(episodes: list, tasks_file: dict[int, str] | None, listed: dict[int, dict] | None) -> TaskPlan:
    """Every episode's tasks and the task table, from whichever of the three sources there are.

    ``episodes``: convert_source's ``Episode`` records (``task_strings``, ``task_indices``, ``pairs``);
    ``tasks_file``/``listed``: meta/tasks.jsonl and meta/episodes.jsonl as read, None when missing.
    """
    plan = TaskPlan()
    strings = {e.index: _episode_strings(e, tasks_file, listed) for e in episodes}
    if tasks_file is not None:
        plan.tasks = dict(tasks_file)
    else:
        tasks, how = _rebuild_tasks(episodes, strings)
        if tasks is None:
            plan.errors.append(f"{TASKS_JSONL} is missing and cannot be rebuilt from the data: {how}; restore it "
                               f"from the recording")
            return plan
        plan.tasks = tasks
        plan.notes.append(f"{TASKS_JSONL} is missing: rebuilt from {how} ({len(tasks)} tasks: "
                          f"{', '.join(f'{i}={t!r}' for i, t in sorted(tasks.items()))})")
    untold = [e.index for e in episodes if strings[e.index] is None]
    if untold:
        plan.errors.append(f"the tasks of episodes {untold[:8]}{' ...' * (len(untold) > 8)} cannot be told: "
                           f"{EPISODES_JSONL} is missing, and their data files have no 'task' column and no "
                           f"task_index values that {TASKS_JSONL} names; restore {EPISODES_JSONL} from the recording")
    for e in (e for e in episodes if strings[e.index] is not None):
        _check_episode(e, strings[e.index], set(plan.tasks.values()), plan)
        plan.episode_tasks[e.index] = strings[e.index]
    if listed is None and not plan.errors:
        plan.notes.append(f"{EPISODES_JSONL} is missing: rebuilt from the data files (each episode's length is its "
                          f"row count, its tasks those of its frames)")
    return plan
