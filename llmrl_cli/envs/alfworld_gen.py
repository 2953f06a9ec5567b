"""Pick-and-place games for ALFWorld's text engine, written in the official on-disk layout.

The official games (``alfworld-download``) come from GitHub, which not every machine reaches.
This module writes games of the same kind (ALFRED task type 1, ``pick_and_place_simple``) in
the same layout, so the real engine (``AlfredTWEnv``, TextWorld's PDDL backend, ALFWorld's
handcoded expert) plays them unchanged::

    <out>/json_2.1.1/<split dir>/pick_and_place_simple-<Obj>-None-<Recep>-<room>/trial_<id>/
        traj_data.json   task_type, pddl_params, turk_annotations, scene
        game.tw-pddl     JSON: pddl_domain, grammar (task filled in), pddl_problem, solvable

A game is one room (kitchen, living room, bedroom or bathroom) with a random set of that room's
receptacles (cabinets, drawers, fridge, microwave and safe start closed), the target object in
one or two places (sometimes inside a closed receptacle) and 3-8 distractor objects. The
vocabulary (object and receptacle types, which receptacle holds which object, which ones open)
is ALFWorld's own (``alfworld.gen.constants``), the goal and task templates its goal library's.

Split: a task is an (object, receptacle) combination. ``train`` game i has the paper's task
string i mod 26 (``PAPER_TRAIN_TASKS``, 18 combinations in the "a X in Y" and "some X on Y"
wordings), so every string has a game once the split holds 26; ``unseen`` uses 16 other
combinations (``UNSEEN_PAIRS``) made
of the same objects and receptacles combined differently. A game is kept only when ALFWorld's
handcoded expert, played from the start, solves it within the step limit; ``solvable`` records
that check. Everything is a function of the seed.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

#: (split name, directory under json_2.1.1) -- the official names
SPLIT_DIRS = {"train": "train", "unseen": "valid_unseen"}
TASK_TYPE = "pick_and_place_simple"

#: The 26 task strings the paper's code trains and evaluates on (yanxue7/RL-LLM-Prior,
#: value-based/train_alfworld.py: its list of 31 minus the 5 it calls hard).
PAPER_TRAIN_TASKS = (
    "put some cellphone on armchair.", "put some candle on sidetable.",
    "put some candle on toilet.", "put a cellphone in armchair.",
    "put some soapbottle on toilet.", "put some cellphone on bed.", "put a cloth in toilet.",
    "put some cellphone on desk.", "put a cellphone in drawer.",
    "put some spraybottle on countertop.", "put some pillow on sofa.",
    "put some soapbottle on cart.", "put some spraybottle on toilet.",
    "put some laptop on armchair.", "put a candle in sidetable.",
    "put a handtowel in garbagecan.", "put some box on armchair.", "put a cd in dresser.",
    "put a spraybottle in countertop.", "put a candle in toilet.",
    "put a soapbottle in toilet.", "put a laptop in armchair.", "put some mug on sidetable.",
    "put a fork in drawer.", "put a pillow in sofa.", "put a cellphone in desk.",
)

#: ALFRED type names (as in alfworld.gen.constants) of the train combinations
TRAIN_PAIRS = (
    ("CellPhone", "ArmChair"), ("Candle", "SideTable"), ("Candle", "Toilet"),
    ("SoapBottle", "Toilet"), ("CellPhone", "Bed"), ("Cloth", "Toilet"), ("CellPhone", "Desk"),
    ("CellPhone", "Drawer"), ("SprayBottle", "CounterTop"), ("Pillow", "Sofa"),
    ("SoapBottle", "Cart"), ("SprayBottle", "Toilet"), ("Laptop", "ArmChair"),
    ("HandTowel", "GarbageCan"), ("Box", "ArmChair"), ("CD", "Dresser"), ("Mug", "SideTable"),
    ("Fork", "Drawer"),
)
#: held-out combinations: none of them is a train combination
UNSEEN_PAIRS = (
    ("KeyChain", "Safe"), ("CreditCard", "Dresser"), ("RemoteControl", "Sofa"),
    ("Watch", "CoffeeTable"), ("Book", "Bed"), ("Pen", "Desk"), ("AlarmClock", "Desk"),
    ("TissueBox", "Toilet"), ("SoapBar", "CounterTop"), ("ToiletPaper", "Cabinet"),
    ("Mug", "CoffeeMachine"), ("Apple", "Fridge"), ("Plate", "DiningTable"),
    ("Spatula", "Drawer"), ("Vase", "Shelf"), ("Newspaper", "ArmChair"),
)
SPLIT_PAIRS = {"train": TRAIN_PAIRS, "unseen": UNSEEN_PAIRS}


@dataclass(frozen=True)
class Room:
    """A room type: receptacle types with (min, max) counts, and the objects found there."""

    name: str
    receptacles: dict[str, tuple[int, int]]
    objects: tuple[str, ...]


ROOMS = (
    Room("kitchen",
         {"Cabinet": (3, 8), "Drawer": (1, 4), "CounterTop": (1, 2), "Fridge": (1, 1),
          "Microwave": (1, 1), "SinkBasin": (1, 1), "StoveBurner": (2, 4),
          "DiningTable": (0, 1), "Shelf": (0, 2), "GarbageCan": (1, 1),
          "CoffeeMachine": (1, 1), "Toaster": (1, 1)},
         ("Apple", "Bread", "ButterKnife", "Cup", "DishSponge", "Egg", "Fork", "Kettle", "Knife",
          "Ladle", "Lettuce", "Mug", "Pan", "Plate", "Pot", "Potato", "SaltShaker",
          "PepperShaker", "SoapBottle", "Spatula", "Spoon", "Tomato", "Bowl", "WineBottle")),
    Room("livingroom",
         {"Sofa": (1, 1), "ArmChair": (1, 2), "CoffeeTable": (1, 1), "SideTable": (1, 2),
          "Drawer": (0, 4), "Cabinet": (0, 4), "Shelf": (0, 6), "TVStand": (0, 1),
          "Dresser": (0, 1), "GarbageCan": (1, 1), "Safe": (0, 1), "Ottoman": (0, 1)},
         ("Box", "CellPhone", "CreditCard", "KeyChain", "Laptop", "Newspaper", "Pillow",
          "RemoteControl", "Statue", "Vase", "Watch", "Book", "Pencil", "Candle", "TissueBox",
          "WateringCan")),
    Room("bedroom",
         {"Bed": (1, 2), "Desk": (0, 1), "Dresser": (0, 1), "Drawer": (2, 6),
          "SideTable": (1, 2), "Shelf": (0, 6), "GarbageCan": (1, 1), "ArmChair": (0, 1),
          "Safe": (0, 1), "LaundryHamper": (0, 1)},
         ("AlarmClock", "BaseballBat", "BasketBall", "Book", "CD", "CellPhone", "CreditCard",
          "KeyChain", "Laptop", "Mug", "Pen", "Pencil", "Pillow", "TennisRacket", "Watch",
          "Bowl", "Cloth")),
    Room("bathroom",
         {"Toilet": (1, 1), "SinkBasin": (1, 2), "Cabinet": (1, 4), "CounterTop": (1, 1),
          "Drawer": (0, 4), "GarbageCan": (1, 1), "HandTowelHolder": (1, 2),
          "TowelHolder": (0, 1), "ToiletPaperHanger": (1, 1), "Shelf": (0, 3), "Cart": (0, 1),
          "BathtubBasin": (0, 1)},
         ("Candle", "Cloth", "HandTowel", "SoapBar", "SoapBottle", "SprayBottle", "TissueBox",
          "ToiletPaper", "Towel", "DishSponge")),
)


def _constants():
    from . import alfworld_engine

    alfworld_engine.import_alfworld()
    import alfworld.gen.constants as constants
    import alfworld.gen.goal_library as goal_library

    return constants, goal_library


def rooms_for(obj: str, recep: str) -> list[Room]:
    """Room types where ``obj`` is found and a ``recep`` can be."""
    return [r for r in ROOMS if obj in r.objects and r.receptacles.get(recep, (0, 0))[1] > 0]


def _mangle(name: str) -> str:
    """ALFRED ids in PDDL: the replacements of ALFWorld's ``fix_pddl_str_chars``."""
    for old, new in (("-", "_minus_"), ("|", "_bar_"), ("+", "_plus_"), (".", "_dot_"),
                     (",", "_comma_")):
        name = name.replace(old, new)
    return name


def _coords(rng: random.Random) -> str:
    return "|".join(f"{rng.uniform(-3, 3):+06.2f}" for _ in range(3))


def _receptacle_id(rtype: str, rng: random.Random) -> str:
    """An ALFRED-style id; basins are named after their sink/bathtub ("Sink|...|SinkBasin"),
    which ALFWorld's name demangler relies on to call them "sinkbasin 1"."""
    if rtype.endswith("Basin"):
        return _mangle(f"{rtype[:-len('Basin')]}|{_coords(rng)}|{rtype}")
    return _mangle(f"{rtype}|{_coords(rng)}")


@dataclass
class GameSpec:
    """One generated game, before it is written."""

    room: str
    obj: str
    recep: str
    task: str  # e.g. "put a cellphone in armchair"
    problem: str  # PDDL problem text


def make_game(obj: str, recep: str, rng: random.Random,
              tasks: tuple[str, ...] | None = None) -> GameSpec:
    """A random room with the task "put ``obj`` in/on ``recep``" (ALFRED type names).

    The task sentence uses one of ALFWorld's two templates ("put a X in Y", "put some X on
    Y"), restricted to those whose sentence is in ``tasks`` when given.
    """
    constants, goal_library = _constants()
    holds = constants.VAL_RECEPTACLE_OBJECTS
    openable = set(constants.OPENABLE_CLASS_LIST)
    room = rng.choice(rooms_for(obj, recep))
    counts = {r: rng.randint(lo, hi) for r, (lo, hi) in room.receptacles.items()}
    counts[recep] = max(1, counts[recep])
    receptacles = [(_receptacle_id(rtype, rng), rtype) for rtype, n in counts.items()
                   for _ in range(n)]
    # the target's first place: never the goal's receptacle type; a closed one 40% of the time
    sources = [r for r in receptacles if r[1] != recep and obj in holds[r[1]]]
    if not sources:  # the random counts left no other place for it: add one such receptacle
        kinds = sorted(t for t in room.receptacles if t != recep and obj in holds[t])
        if not kinds:
            raise ValueError(f"no receptacle in the {room.name} can hold a {obj}")
        extra = rng.choice(kinds)
        receptacles.append((_receptacle_id(extra, rng), extra))
        sources = [receptacles[-1]]
    closed = [r for r in sources if r[1] in openable]
    placed = [(obj, rng.choice(closed if closed and rng.random() < 0.4 else sources))]
    if rng.random() < 0.3:
        placed.append((obj, rng.choice(sources)))
    others = [o for o in room.objects if o != obj]
    for _ in range(rng.randint(3, 8)):
        other = rng.choice(others)
        spots = [r for r in receptacles if other in holds[r[1]]]
        if spots:
            placed.append((other, rng.choice(spots)))
    objects = [(_mangle(f"{otype}|{_coords(rng)}"), otype, rid) for otype, (rid, _) in placed]

    locations = {rid: _mangle(f"loc|{i + 1}|{rng.randint(0, 20)}|{rng.randint(0, 3)}|30")
                 for i, (rid, _) in enumerate(receptacles)}
    start = _mangle(f"loc|0|{rng.randint(0, 20)}|{rng.randint(0, 3)}|60")
    otypes = sorted({o for _, o, _ in objects})
    rtypes = sorted({r for _, r in receptacles})
    declarations = (["agent1 - agent"]
                    + [f"{t}Type - otype" for t in sorted(set(constants.OBJECTS) - set(rtypes))]
                    + [f"{t}Type - rtype" for t in rtypes]
                    + [f"{oid} - object" for oid, _, _ in objects]
                    + [f"{rid} - receptacle" for rid, _ in receptacles]
                    + [f"{loc} - location" for loc in [*locations.values(), start]])
    facts = ([f"(receptacleType {rid} {rtype}Type)" for rid, rtype in receptacles]
             + [f"(objectType {oid} {otype}Type)" for oid, otype, _ in objects]
             + [f"(canContain {rtype}Type {otype}Type)" for rtype in rtypes for otype in otypes
                if otype in holds[rtype]]
             + [f"(pickupable {oid})" for oid, _, _ in objects]
             + [f"(openable {rid})" for rid, rtype in receptacles if rtype in openable]
             + [f"(atLocation agent1 {start})"]
             + [f"(inReceptacle {oid} {rid})" for oid, _, rid in objects]
             + [f"(receptacleAtLocation {rid} {locations[rid]})" for rid, _ in receptacles]
             + [f"(objectAtLocation {oid} {locations[rid]})" for oid, _, rid in objects])
    goal = goal_library.gdict[TASK_TYPE]["pddl"].format(obj=obj, recep=recep).replace("#", "-")
    problem = ("(define (problem plan_llmrl)\n(:domain alfred)\n(:objects\n    "
               + "\n    ".join(declarations) + "\n)\n(:init\n    " + "\n    ".join(facts)
               + "\n)\n" + goal + "\n")
    sentences = [t.format(obj=obj.lower(), recep=recep.lower())
                 for t in goal_library.gdict[TASK_TYPE]["templates"]]
    task = rng.choice([s for s in sentences if tasks is None or s + "." in tasks] or sentences)
    return GameSpec(room.name, obj, recep, task, problem)


def logic_files() -> tuple[str, str]:
    """ALFWorld's bundled PDDL domain and text grammar (the current engine's wording)."""
    from . import alfworld_engine

    alfworld_engine.import_alfworld()
    from alfworld.info import ALFRED_PDDL_PATH, ALFRED_TWL2_PATH

    return Path(ALFRED_PDDL_PATH).read_text(), Path(ALFRED_TWL2_PATH).read_text()


def write_game(spec: GameSpec, trial_dir: Path, solvable: bool | None = None) -> Path:
    """Write ``traj_data.json`` and ``game.tw-pddl`` into ``trial_dir``; return the game file."""
    domain, grammar = logic_files()
    trial_dir.mkdir(parents=True, exist_ok=True)
    traj = {
        "task_type": TASK_TYPE,
        "task_id": trial_dir.name,
        "pddl_params": {"object_target": spec.obj, "parent_target": spec.recep,
                        "toggle_target": "", "mrecep_target": "", "object_sliced": False},
        "turk_annotations": {"anns": [{"task_desc": spec.task[0].upper() + spec.task[1:] + ".",
                                       "high_descs": [], "assignment_id": "llmrl-generated"}]},
        "scene": {"floor_plan": spec.room, "generator": "llmrl"},
    }
    (trial_dir / "traj_data.json").write_text(json.dumps(traj, indent=1))
    game = {"pddl_domain": domain, "grammar": grammar.replace("UNKNOWN GOAL", spec.task),
            "pddl_problem": spec.problem, "solvable": solvable, "walkthrough": None}
    path = trial_dir / "game.tw-pddl"
    path.write_text(json.dumps(game))
    return path


def pair_of(task: str) -> tuple[str, str]:
    """The (object, receptacle) type names of a paper task string ("put a cd in dresser.")."""
    words = task.rstrip(".").split()
    obj, recep = words[2], words[4]
    for pair in TRAIN_PAIRS:
        if (pair[0].lower(), pair[1].lower()) == (obj, recep):
            return pair
    raise ValueError(f"no train combination for the task {task!r}")


def generate(out: Path, n: int, seed: int, splits: tuple[str, ...] = ("train", "unseen"),
             horizon: int = 50, max_tries: int = 20,
             progress=lambda done, total: None) -> dict[str, list[Path]]:
    """Write ``n`` expert-solvable games per split under ``out/json_2.1.1``; return their files.

    Game ``i`` of the train split has the paper's task string ``i mod 26``, game ``i`` of the
    unseen split the combination ``i mod 16``, so every string or combination appears once
    before any appears twice. A candidate is kept when ALFWorld's handcoded expert solves it
    within ``horizon`` steps; else the next candidate is tried.
    """
    from .alfworld_engine import expert_solves

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    written: dict[str, list[Path]] = {}
    done = 0
    for split in splits:
        pairs = SPLIT_PAIRS[split]
        split_dir = out / "json_2.1.1" / SPLIT_DIRS[split]
        written[split] = []
        for i in range(n):
            if split == "train":
                task = PAPER_TRAIN_TASKS[i % len(PAPER_TRAIN_TASKS)]
                obj, recep = pair_of(task)
                tasks: tuple[str, ...] | None = (task,)
            else:
                (obj, recep), tasks = pairs[i % len(pairs)], None
            for attempt in range(max_tries):
                key = f"{seed}/{split}/{i}/{attempt}"
                rng = random.Random(int(hashlib.sha256(key.encode()).hexdigest()[:16], 16))
                spec = make_game(obj, recep, rng, tasks)
                trial = (split_dir / f"{TASK_TYPE}-{obj}-None-{recep}-{spec.room}"
                         / f"trial_s{seed}_{i:04d}")
                path = write_game(spec, trial)
                ok = expert_solves(path, horizon)
                if ok:
                    write_game(spec, trial, solvable=True)
                    written[split].append(path)
                    break
                shutil.rmtree(trial)
            else:
                raise RuntimeError(f"no solvable game for {obj} in {recep} in {max_tries} tries")
            done += 1
            progress(done, n * len(splits))
    return written
