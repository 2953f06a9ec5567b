"""The training loop's parts, in reading order:

- ``loop.Loop``: what every loop shares -- the run's pieces, the states it decides on
  (``steps.StepState``), the value-based decision (``steps.Decision``), the acting rule,
  evaluations and CSV rows. The loops themselves: ``runner.Runner`` (online value-based),
  ``offline.OfflineRunner`` (offline, on a dataset), ``gflan.GFlanRunner`` (policy, PPO);
  ``algos.py`` says which algorithm runs on which.
- ``steps``: the named data of one batch step (an env's ``Slot``, a ``StepState`` to decide on,
  its ``Decision``, a ``Pending`` transition awaiting its next state's candidates).
- ``evaluator.Evaluator``: the evaluation episodes, alone or beside training.
- ``store.RunStore``: the run's files (lock, identity check, CSV rows, checkpoints, resume).
- ``schedule.run_ahead_step``: which envs step when envs run ahead of one another.
"""

from .schedule import run_ahead_step
from .store import RunStore

__all__ = ["RunStore", "run_ahead_step"]
