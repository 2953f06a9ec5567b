"""ALFWorld Pick & Place (task type 1) on ALFWorld's real text engine, as the paper used it.

The paper (yanxue7/RL-LLM-Prior, value-based/train_alfworld.py) reached ALFWorld through
LLF-Bench; this env is that thin layer, without LLF-Bench:

- Games: with ``data=PATH`` or ``$ALFWORLD_DATA`` set, the official layout under it
  (``json_2.1.1/train`` for ``split="train"``, ``json_2.1.1/valid_unseen`` for ``"unseen"``);
  otherwise llmrl's generated set (``alfworld_gen``; made once under the cache dir). Games are
  found by ALFWorld's own ``AlfredTWEnv`` (pick_and_place_simple, marked solvable).
- Pool: the paper's config (envs/alfworld/base_config.yaml: ``num_train_games: 50``,
  ``task_types: [1]``) makes AlfredTWEnv keep the first 50 type-1 train games in the order it
  finds them (``os.walk``, i.e. the file system's listing order, which differs between
  machines, so the paper's 50 cannot be known). With the user's data, ``pool`` (default 50;
  0 = all) keeps the first ``pool`` train games in sorted path order, which every machine
  shares, before the task filter below. llmrl's generated sets are used whole.
- Task filter: with ``tasks="paper"`` (default) the train split keeps only the games whose task
  string is one of the 26 the paper's code plays (``PAPER_TRAIN_TASKS``); ``tasks="all"`` keeps
  every game. ``env.games`` is the kept games, sorted; ``env.game_tasks`` their task strings.
- Protocol, which game an episode plays (``episode_options``, used by the runner):
  ``"paper"`` (default) follows train_alfworld.py. Training episode n plays the task string
  ``schedule[n]``: the strings in list order, then each later pass a fresh shuffle (:405-416:
  the next string of ``test_envs``, the list reshuffled after each full pass). Evaluation
  episode i plays string ``i mod len`` in list order (:616-626, and :871 runs one greedy episode
  per string). The strings (``env.task_strings``) are the paper's 26; with ``tasks="all"`` or
  ``split="unseen"`` they are the pool's distinct task strings, sorted, since the paper's 26
  are not what those games hold. ``"random"``: each reset picks a uniformly random game.
- ``reset(seed)`` picks one game with that seed and loads it into the engine;
  ``options={"task": s}`` picks, with the seed, among the games whose task string contains
  ``s`` (the paper resets until ``target_task in task``, :406-411); ``options={"game": i}``
  (an index into ``env.games``, or a game file) chooses the game itself.
- ``env.instruction``: one of LLF-Bench's five ALFWorld instruction paraphrases (picked with
  the reset seed) around "Your task is to: put a candle in toilet.".
- ``obs["text"]``: the engine's text (the welcome banner dropped, as the paper's code does,
  :425-427); ``obs["actions"]``: its admissible commands, sorted.
- Prompt: ``paper_prompt`` is the paper's (:317-327 with the ``Action_prompt`` of :395): the
  task, then LLF-Bench's observation (``llf_observation``: the text, ". You are allowed to take
  the following actions: ", the actions joined by ", "; llfbench/envs/alfworld/alfworld.py
  :113-120), then the question; no history.
- Wording: ``"paper"`` (default) shows the ALFWorld 0.3.5 grammar the paper's runs had:
  "put X in/on Y" (engine: "move X to Y"), "You put the X in/on the Y.", and no ``help``
  command; ``"alfworld"`` shows the installed engine's (0.4.2) wording unchanged.
- Reward 1 on the step that completes the task (then ``terminated``), else 0. The engine's step
  limit is ``horizon`` (61, the paper's cut): reaching it without success is ``truncated``.
- ``optimal_actions()``: the next action of ALFWorld's handcoded expert (``extra.expert_plan``),
  which follows the game from whatever the agent did. It is not guaranteed optimal, and its
  first action after a reset is always "look".
- ``command(text)`` plays any text, as ALFWorld accepts free text: an invalid command answers
  "Nothing happens." and still counts towards the step limit. ``step`` takes only admissible
  actions (the llmrl interface).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gymnasium import spaces

from ..errors import UserError, unknown_choice
from ..paths import cache_dir
from ..seeding import stable_seed
from .alfworld_engine import (BANNER, Engine, alfred_tw_env, collect_games, memoize_text_parser,
                              unmemoize_text_parser)
from .alfworld_gen import PAPER_TRAIN_TASKS, SPLIT_DIRS, TASK_TYPE, TASK_TYPES, generate
from .base import TextEnv, text_observation_space

WORDINGS = ("paper", "alfworld")
TASK_SETS = ("paper", "all")
PROTOCOLS = ("paper", "random")
EPISODE_KINDS = ("train", "eval")
#: the paper's num_train_games (envs/alfworld/base_config.yaml)
DEFAULT_POOL = 50
#: the paper's question after the observation (train_alfworld.py:395, ``Action_prompt``)
PAPER_QUESTION = "Please select an action from the admissible actions. \n Action:"
DEFAULT_HORIZON = 61
#: the default generated set: games per split, and the seed (change VERSION with the generator)
DEFAULT_GAMES, DEFAULT_SEED, GENERATOR_VERSION = 52, 0, 2
#: games per split of each other task type's generated set (``alfworld`` env), and its version
TYPE_GAMES, TYPES_GENERATOR_VERSION = 24, 1

#: LLF-Bench's ALFWorld instructions (llfbench/envs/alfworld/prompts.py), in our words
INSTRUCTIONS = (
    "You are in a house with a variety of objects. {task} You have to take a sequence of "
    "actions to fulfil it. When you take an action, you can change the world. At each step "
    "you are told which actions are allowed, and you must pick one of them.",
    "You are in a house that contains many kinds of objects you can interact with. You are "
    "given a task. The task description is: {task} Generate a sequence of actions to fulfil "
    "the task. At each step you are told which actions are allowed; pick only from them.",
    "You are spawned in a house full of different objects, and you can interact with them. "
    "You are given the following task: {task} Generate a sequence of actions to fulfil it. At "
    "each step you are told which actions are allowed; select only an allowed action, "
    "otherwise nothing will happen.",
    "You are in a house with many different objects to interact with. Your goal: {task} "
    "Fulfilling it takes a sequence of actions. At each step you are told which actions are "
    "allowed, and you should choose only from that set.",
    "You start in a house that contains many different objects and locations, and you can "
    "interact with them. You are given the following task: {task} It takes a sequence of "
    "actions, and each action can change the world, so keep that in mind. At each step you "
    "are told which actions are allowed; select only an allowed action.",
)

_MOVE = re.compile(r"^move (.+) to (.+)$")
_PUT = re.compile(r"^put (.+) in/on (.+)$")
_MOVED = re.compile(r"You move the (.+?) to the (.+?)\.")
_TASK = re.compile(r"Your task is to: (.+?\.)")


def default_games_dir(task_type: str = TASK_TYPE) -> Path:
    name = f"generated-v{GENERATOR_VERSION}-s{DEFAULT_SEED}-n{DEFAULT_GAMES}"
    if task_type != TASK_TYPE:
        name = f"generated-v{TYPES_GENERATOR_VERSION}-s{DEFAULT_SEED}-n{TYPE_GAMES}-{task_type}"
    return cache_dir() / "alfworld" / name


def ensure_default_games(log=lambda msg: print(msg, file=sys.stderr),
                         task_type: str = TASK_TYPE) -> Path:
    """The default generated game set of ``task_type``, written on first use (atomically: a
    finished set only)."""
    root = default_games_dir(task_type)
    if (root / "json_2.1.1").is_dir():
        return root
    n = DEFAULT_GAMES if task_type == TASK_TYPE else TYPE_GAMES
    log(f"llmrl: generating the default ALFWorld {task_type} games ({n} per split, checked by "
        f"the engine's expert; 1-2 minutes, once) into {root}")
    tmp = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    generate(tmp, n, DEFAULT_SEED, task_type=task_type)
    try:
        tmp.rename(root)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def data_root(data: str | Path | None, task_type: str = TASK_TYPE) -> tuple[Path, bool]:
    """(games root, whether it is the user's data): ``data``, ``$ALFWORLD_DATA``, or our
    generated set of ``task_type``."""
    if data is None:
        data = os.environ.get("ALFWORLD_DATA") or None
    if data is None:
        return ensure_default_games(task_type=task_type), False
    return Path(data).expanduser(), True


def task_of(game_file: str) -> str:
    """The task string in a game file's grammar ("put a candle in toilet.")."""
    with open(game_file) as f:
        match = _TASK.search(f.read().replace("\\n", "\n"))
    return match.group(1) if match else ""


def llf_observation(text: str, actions: Sequence[str]) -> str:
    """An observation as LLF-Bench writes it: the engine's text, then the admissible actions.

    LLF-Bench adds ". You are allowed ..." after the text even when it ends with a period, so a
    first state reads "... put a candle in toilet.. You are allowed ...". (After a win it also
    appends a congratulation, which no prompt sees: the episode is over.)
    """
    return f"{text}. You are allowed to take the following actions: {', '.join(actions)}."


def paper_prompt(task: str, text: str, actions: Sequence[str]) -> str:
    """The paper's ALFWorld prompt for ``task`` ("put a candle in toilet."), the state's
    ``obs["text"]`` and ``obs["actions"]``; byte for byte as train_alfworld.py:317-327 builds
    it, with no space after "Current observation:" and no history."""
    return (f"Task: Your task is to: {task}\nCurrent observation:"
            f"{llf_observation(text, actions)}\n{PAPER_QUESTION}")


def paper_schedule(task_strings: Sequence[str], index: int, run_seed: int) -> str:
    """The task string of training episode ``index`` under the paper's protocol.

    Pass 0 plays ``task_strings`` in order; pass p > 0 a shuffle of them seeded by
    (``run_seed``, p), so every pass plays each string once (train_alfworld.py:405-416).
    """
    pass_number, position = divmod(index, len(task_strings))
    order = list(task_strings)
    if pass_number > 0:
        random.Random(stable_seed("alfworld-schedule", run_seed, pass_number)).shuffle(order)
    return order[position]


def to_paper(text: str) -> str:
    """Engine (0.4.2) wording -> the 0.3.5 wording, for a command or a feedback text."""
    text = _MOVE.sub(r"put \1 in/on \2", text)
    return _MOVED.sub(r"You put the \1 in/on the \2.", text)


_TASK = re.compile(r"Your task is to: ([^.]+\.?)")


def task_in(instruction: str) -> str:
    """The task an instruction states ("put a candle in toilet."), found as the paper's ALFWorld
    script finds it (value-based/train_alfworld.py:320: 'Your task is to: [^.]+\\.?')."""
    match = _TASK.search(instruction)
    if match is None:
        raise ValueError(f"no 'Your task is to: ...' in the instruction {instruction!r}")
    return match.group(1)


class AlfworldPick(TextEnv):
    """ALFWorld Pick & Place on the real engine (see the module docstring)."""

    action_list_style = "comma"
    action_count = "varies"  # the engine's commands: 11-24 along the expert's paths of 8 games
    #: the ALFWorld task types whose games the env plays (alfworld_gen.TASK_TYPES)
    task_types: tuple[str, ...] = (TASK_TYPE,)
    # train_alfworld.py and readme l.33: 1000 episodes, eval every 80 (one greedy episode per
    # task string, 26), batch 128, buffer 20000, hard target copy every 20 gradient steps, a
    # training phase every 10 episodes from episode 40 drawing 4 x |buffer| samples (l.892-899),
    # eps-greedy 0.2 over the candidates, fresh proposals at every visit, failed episodes kept
    # out of the buffer beyond 100 more than the successes (l.34, 574-595); the DQN baseline's
    # candidate list is the admissible one cut or repeated to 30 (l.293-315). The prompt has no
    # history (l.320-327).
    preset = {
        "episodes": 1000, "history_length": 0, "prior_draws": "fresh",
        "agent": {"batch_size": 128, "buffer_size": 20000, "target_update": "hard",
                  "target_update_every": 20, "train_every": 10, "train_start": 40,
                  "train_passes": 4.0, "eval_every": 80, "eval_episodes": 26,
                  "eval_policy": "greedy", "exploration": "eps-greedy", "epsilon": 0.2,
                  "feature_norm": True, "buffer_balance": "paper"},
        "per_algo": {"dqn": {"baseline_candidates": 30}},
    }

    @classmethod
    def prompt(cls, instruction: str, observation: str, actions_text: str,
               history: Sequence[str] = ()) -> str:
        """The paper's ALFWorld prompt (``paper_prompt``): the task the instruction states, no
        history."""
        return paper_prompt(task_in(instruction), observation, [actions_text])

    def __init__(self, split: str = "train", data: str | Path | None = None,
                 horizon: int = DEFAULT_HORIZON, wording: str = "paper",
                 tasks: str = "paper", fast_text: bool = True, protocol: str = "paper",
                 pool: int = DEFAULT_POOL) -> None:
        if split not in SPLIT_DIRS:
            raise unknown_choice("ALFWorld split", split, SPLIT_DIRS)
        if wording not in WORDINGS:
            raise unknown_choice("ALFWorld wording", wording, WORDINGS)
        if tasks not in TASK_SETS:
            raise unknown_choice("ALFWorld task set", tasks, TASK_SETS)
        if protocol not in PROTOCOLS:
            raise unknown_choice("ALFWorld protocol", protocol, PROTOCOLS)
        if int(pool) < 0:
            raise UserError(f"pool must be >= 0 (0 = all games), got {pool}")
        self.horizon = int(horizon)
        if self.horizon < 1:
            raise UserError(f"horizon must be >= 1, got {horizon}")
        self.split, self.wording, self.protocol = split, wording, protocol
        split_dirs, users = self._game_dirs(data, split)
        games = [(g, task_of(g)) for d in split_dirs for g in self._pool(d, users, int(pool))]
        paper_tasks = split == "train" and tasks == "paper"
        if paper_tasks:
            games = [(g, t) for g, t in games if t in PAPER_TRAIN_TASKS]
        if not games:
            raise UserError(f"no solvable {' or '.join(self.task_types)} games under "
                            f"{', '.join(map(str, split_dirs))}"
                            + (" with the paper's task strings (try tasks=all)"
                               if paper_tasks else ""))
        self.games = [g for g, _ in games]
        self.game_tasks = [t for _, t in games]
        #: the task strings the "paper" protocol schedules (module docstring)
        self.task_strings: tuple[str, ...] = (
            PAPER_TRAIN_TASKS if paper_tasks else tuple(sorted(set(self.game_tasks))))
        missing = [t for t in self.task_strings if not any(t in g for g in self.game_tasks)]
        if missing and protocol == "paper":  # the paper's loop would wait forever for them
            print(f"llmrl: note: {len(missing)} of the paper's {len(self.task_strings)} ALFWorld "
                  f"task strings have no game in the pool ({', '.join(missing)}); the paper "
                  "protocol cycles through the other "
                  f"{len(self.task_strings) - len(missing)}", file=sys.stderr)
            self.task_strings = tuple(t for t in self.task_strings if t not in missing)
        # exact cache of TextWorld's grammar parses (alfworld_engine.memoize_text_parser);
        # process-wide: fast_text=False restores TextWorld's own parser for every env
        (memoize_text_parser if fast_text else unmemoize_text_parser)()
        self.engine = Engine(alfred_tw_env(str(split_dirs[0]), self.horizon, self.task_types))
        self.observation_space = text_observation_space()
        self.action_space = spaces.Discrete(1)  # the state's commands; set by each observation
        self.game_file = ""
        self.task = ""
        self.instruction = ""
        self._text, self._actions, self._commands = "", [], []
        self._expert: list[str] = []
        self._steps = 0

    def _game_dirs(self, data: str | Path | None, split: str) -> tuple[list[Path], bool]:
        """(the split's game folders, whether they are the user's data): one folder of the
        user's data, or our generated set of each of ``task_types``."""
        split_dirs, users = [], False
        for task_type in self.task_types:
            root, users = data_root(data, task_type)
            split_dir = root / "json_2.1.1" / SPLIT_DIRS[split]
            if not split_dir.is_dir():
                where = "ALFWORLD_DATA" if users and data is None else "data"
                raise UserError(f"no ALFWorld games at {split_dir} ({where}={root}); expected "
                                "the official layout json_2.1.1/{train,valid_unseen}/<task>/"
                                "<trial>/{traj_data.json,game.tw-pddl} (alfworld-download), or "
                                "unset it to play llmrl's generated games")
            if split_dir not in split_dirs:
                split_dirs.append(split_dir)
        return split_dirs, users

    def _pool(self, split_dir: Path, users: bool, pool: int) -> list[str]:
        """The split's games, sorted: with the user's data, the train split keeps only the first
        ``pool`` in AlfredTWEnv's own order (as ``num_train_games`` does; 0 = all)."""
        if not (users and self.split == "train" and pool > 0):
            return collect_games(split_dir, self.horizon, self.task_types)
        found = alfred_tw_env(str(split_dir), self.horizon, self.task_types).game_files
        return sorted(found)[:pool]

    def episode_options(self, kind: str, index: int, run_seed: int) -> dict | None:
        """``{"task": string}`` under the "paper" protocol (module docstring), else None."""
        if kind not in EPISODE_KINDS:
            raise unknown_choice("episode kind", kind, EPISODE_KINDS)
        if self.protocol == "random":
            return None
        if kind == "train":
            return {"task": paper_schedule(self.task_strings, index, run_seed)}
        return {"task": self.task_strings[index % len(self.task_strings)]}

    # -- wording ------------------------------------------------------------------------------
    def _show(self, text: str) -> str:
        return to_paper(text) if self.wording == "paper" else text

    def _observe(self, obs: str, infos: dict) -> None:
        self._text = obs[len(BANNER):] if obs.startswith(BANNER) else obs
        self._text = self._show(self._text)
        commands = [c for c in infos["admissible_commands"]
                    if not (self.wording == "paper" and c == "help")]
        labels = [self._show(c) for c in commands]
        order = sorted(range(len(labels)), key=labels.__getitem__)
        self._actions = [labels[i] for i in order]
        self._commands = [commands[i] for i in order]
        self._expert = [self._show(c) for c in infos.get("extra.expert_plan") or []]
        # gymnasium's Discrete space of the state's commands (sampled by its env checker)
        self.action_space = spaces.Discrete(len(self._actions))

    def _obs(self) -> dict:
        return {"text": self._text, "actions": list(self._actions)}

    def admissible_actions(self) -> list[str]:
        return list(self._actions)

    @classmethod
    def q_input(cls, state: str, action: str, task: str | None = None) -> str:
        """The paper's ALFWorld Q input: its observation is LLF-Bench's cut just before "You
        are allowed to take the following actions:" (train_alfworld.py:277-285), so the text
        goes on with the ". " LLF-Bench put there."""
        return super().q_input(f"{state}. ", action, task)

    @property
    def feature_task(self) -> str:
        """The task as the paper's Q-network input names it ("Task: put a candle in toilet.")."""
        return f"Task: {self.task}"

    # -- gymnasium API ------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        rng = random.Random(seed) if seed is not None else random.Random(
            int(self.np_random.integers(2**31)))
        options = options or {}
        task, game = options.get("task"), options.get("game")
        if task is not None and game is not None:
            raise UserError("reset options: give a task or a game, not both")
        if task is not None:
            matching = [i for i, t in enumerate(self.game_tasks) if str(task) in t]
            if not matching:
                raise UserError(f"no game of this ALFWorld env ({self.split} split, "
                                f"{len(self.games)} games) has the task string {task!r} (with "
                                "ALFWorld's data, pool=0 keeps all its games; protocol=random "
                                "plays any game)")
            index = matching[rng.randrange(len(matching))]
        else:
            index = rng.randrange(len(self.games))
        if isinstance(game, int):
            index = game
        elif game is not None:
            index = self.games.index(str(game))
        self.game_file = self.games[index]
        obs, infos = self.engine.reset(self.game_file, seed=rng.randrange(2**31))
        self.task = self.game_tasks[index]
        self.instruction = rng.choice(INSTRUCTIONS).format(task=f"Your task is to: {self.task}")
        self._steps = 0
        self._observe(obs, infos)
        return self._obs(), {"success": False, "gamefile": self.game_file, "task": self.task}

    def step(self, action: Any):
        return self._play(self._commands[self.resolve_action(action)])

    def command(self, text: str):
        """Play any text command (free text, as ALFWorld accepts); see the module docstring."""
        if self.wording == "paper":
            text = _PUT.sub(r"move \1 to \2", text.strip())
        return self._play(text)

    def _play(self, command: str):
        obs, infos = self.engine.step(command)
        self._steps += 1
        self._observe(obs, infos)
        won = bool(infos["won"])
        truncated = not won and (infos["done"] or self._steps >= self.horizon)
        info = {"success": won, "gamefile": self.game_file, "task": self.task}
        return self._obs(), float(won), won, truncated, info

    def render(self) -> str:
        return self._text

    # -- expert -------------------------------------------------------------------------------
    def optimal_actions(self) -> list[str]:
        """ALFWorld's handcoded expert's next action (one), in this env's wording."""
        return [a for a in self._expert if a in self._actions] or ["look"]


TASK_TYPE_CHOICES = (*TASK_TYPES, "all")


class Alfworld(AlfworldPick):
    """ALFWorld's six task types on the real engine: ``task_type`` is ``pick``, ``clean``,
    ``heat``, ``cool``, ``examine`` (look at an object under the desk lamp), ``pick-two`` or
    ``all`` (default). Official games from ``data=PATH`` or ``$ALFWORLD_DATA`` (AlfredTWEnv keeps
    the chosen types), else llmrl's generated set of each type (``alfworld_gen``; made once
    under the cache dir, ``TYPE_GAMES`` per split; pick uses ``alfworld-pick``'s set). Not the
    paper's protocol: each reset draws a game uniformly (``protocol="random"``), every task
    string is kept, and the engine's own wording is shown; the prompt, Q input and learning
    settings are the paper's ALFWorld ones (``AlfworldPick``)."""

    def __init__(self, task_type: str = "all", split: str = "train",
                 data: str | Path | None = None, horizon: int = DEFAULT_HORIZON,
                 wording: str = "alfworld", fast_text: bool = True) -> None:
        if task_type not in TASK_TYPE_CHOICES:
            raise unknown_choice("ALFWorld task type", task_type, TASK_TYPE_CHOICES)
        self.task_type = task_type
        self.task_types = tuple(TASK_TYPES.values()) if task_type == "all" else (
            TASK_TYPES[task_type],)
        super().__init__(split=split, data=data, horizon=horizon, wording=wording, tasks="all",
                         fast_text=fast_text, protocol="random", pool=0)
