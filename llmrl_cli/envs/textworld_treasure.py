"""TextWorld's Treasure Hunter games (Côté et al., 2018, "TextWorld: A Learning Environment for
Text-based Games", section 5) as text environments.

The games are made by TextWorld's own generator (``textworld.challenges.tw_treasure_hunter``,
installed with alfworld); pools, observations, rewards and the planner expert are those of
``textworld_games.py``. The agent must find one object and take it; taking one of the
distractor objects loses the game. TextWorld's 30 levels: 1-10 easy (5 rooms, no doors, quest
length 1-5), 11-20 medium (10 rooms, closed doors and containers, quest length 2-10), 21-30 hard
(20 rooms, locked doors and containers, their keys at hand, quest length 3-20). ``split`` only
picks a disjoint range of generator seeds (the challenge has no vocabulary split). The
instruction is the game's own objective text; the step caps (50, 100, 200 by mode) are
llmrl's.
"""

from __future__ import annotations

from .base import llmrl_preset
from .textworld_games import TextWorldGames, clean


class TextWorldTreasure(TextWorldGames):
    """A TextWorld Treasure Hunter game. Options: ``level`` (1-30), ``split`` (train, valid,
    test), ``games`` (pool size), ``horizon`` (step cap; default the level's)."""

    env_name = "textworld-treasure"
    kind = "treasure hunter"
    levels = {level: 50 if level <= 10 else 100 if level <= 20 else 200 for level in range(1, 31)}
    infos = ("objective",)
    question = "To find and take the object, what action should you take next?"
    # TextWorld is not in the paper; the Q-network is told the objective, which changes from
    # game to game.
    preset = llmrl_preset(episodes=300)

    def __init__(self, level: int = 15, split: str = "train", games: int = 20,
                 horizon: int | None = None) -> None:
        super().__init__(level, split, games, horizon)

    @classmethod
    def make_game(cls, level: int, split: str, seed: int, options):
        from textworld.challenges.tw_treasure_hunter import treasure_hunter

        return treasure_hunter.make({"level": level}, options)

    def instruction_of(self, state) -> str:
        return clean(state.objective)
