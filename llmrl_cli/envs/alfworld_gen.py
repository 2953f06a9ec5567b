"""Games for ALFWorld's text engine, written in the official on-disk layout.

The official games (``alfworld-download``) come from GitHub, which not every machine reaches.
This module writes games of the same kinds (ALFRED task type 1, ``pick_and_place_simple``, for
``alfworld-pick``, and the five others for ``alfworld``: clean, heat, cool, look at an object
under a desk lamp, pick two) in the same layout, so the real engine (``AlfredTWEnv``,
TextWorld's PDDL backend, ALFWorld's handcoded expert) plays them unchanged::

    <out>/json_2.1.1/<split dir>/pick_and_place_simple-<Obj>-None-<Recep>-<room>/trial_<id>/
        traj_data.json   task_type, pddl_params, turk_annotations, scene
        game.tw-pddl     JSON: pddl_domain, grammar (task filled in), pddl_problem, solvable

(the other types' folders begin with their type's name).

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
#: ALFWorld's six task types (alfred_tw_env.TASK_TYPES) by the short names llmrl uses
TASK_TYPES = {
    "pick": "pick_and_place_simple", "examine": "look_at_obj_in_light",
    "clean": "pick_clean_then_place_in_recep", "heat": "pick_heat_then_place_in_recep",
    "cool": "pick_cool_then_place_in_recep", "pick-two": "pick_two_obj_and_place",
}
#: the appliance each state-change type needs in the room, and the object property it checks
APPLIANCES = {"pick_clean_then_place_in_recep": ("SinkBasin", "Cleanable"),
              "pick_heat_then_place_in_recep": ("Microwave", "Heatable"),
              "pick_cool_then_place_in_recep": ("Fridge", "Coolable")}
#: the lamp of look_at_obj_in_light and the receptacle types it stands on
LAMP, LAMP_STANDS = "DeskLamp", ("SideTable", "Desk", "Dresser")

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


def rooms_for(obj: str, recep: str, task_type: str = TASK_TYPE) -> list[Room]:
    """Room types where ``obj`` is found and a ``recep`` can be (for look_at_obj_in_light,
    ``recep`` is the lamp: a stand for it), with the appliance the task type needs."""
    def can_have(room: Room, rtype: str) -> bool:
        return room.receptacles.get(rtype, (0, 0))[1] > 0

    rooms = [r for r in ROOMS if obj in r.objects and (
        any(can_have(r, t) for t in LAMP_STANDS) if recep == LAMP else can_have(r, recep))]
    if task_type in APPLIANCES:
        rooms = [r for r in rooms if can_have(r, APPLIANCES[task_type][0])]
    return rooms


def task_pairs(task_type: str) -> list[tuple[str, str]]:
    """Every (object, receptacle) combination a generated game of ``task_type`` can have
    (receptacle: the lamp for look_at_obj_in_light), sorted."""
    constants, _ = _constants()
    holds = constants.VAL_RECEPTACLE_OBJECTS
    pairs = set()
    for room in ROOMS:
        for obj in room.objects:
            if task_type == "look_at_obj_in_light":
                if rooms_for(obj, LAMP, task_type) and any(obj in h for h in holds.values()):
                    pairs.add((obj, LAMP))
                continue
            if task_type in APPLIANCES and (
                    obj not in constants.VAL_ACTION_OBJECTS[APPLIANCES[task_type][1]]):
                continue
            for recep, (_, most) in room.receptacles.items():
                if most > 0 and obj in holds[recep] and rooms_for(obj, recep, task_type) and (
                        task_type not in APPLIANCES or recep != APPLIANCES[task_type][0]):
                    pairs.add((obj, recep))
    return sorted(pairs)


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
    task_type: str = TASK_TYPE  # ALFWorld's name (TASK_TYPES)


def make_game(obj: str, recep: str, rng: random.Random,
              tasks: tuple[str, ...] | None = None, task_type: str = TASK_TYPE) -> GameSpec:
    """A random room with the task "put ``obj`` in/on ``recep``" (ALFRED type names) of
    ``task_type`` (for look_at_obj_in_light: "look at ``obj`` under the ``recep``", a lamp).

    The task sentence uses one of ALFWorld's two templates of the type ("put a X in Y", "put
    some X on Y" for pick_and_place_simple), restricted to those whose sentence is in ``tasks``
    when given. The other types add, after the draws a pick-and-place game makes: the appliance
    (a sink basin, microwave or fridge) and the objects' cleanable/heatable/coolable facts; a
    second target object (pick two); a desk lamp on a side table, desk or dresser (examine).
    """
    constants, goal_library = _constants()
    holds = constants.VAL_RECEPTACLE_OBJECTS
    openable = set(constants.OPENABLE_CLASS_LIST)
    room = rng.choice(rooms_for(obj, recep, task_type))
    counts = {r: rng.randint(lo, hi) for r, (lo, hi) in room.receptacles.items()}
    if recep == LAMP:
        stands = [t for t in LAMP_STANDS if room.receptacles.get(t, (0, 0))[1] > 0]
        if not any(counts.get(t, 0) for t in stands):
            counts[rng.choice(stands)] = 1
    else:
        counts[recep] = max(1, counts[recep])
    if task_type in APPLIANCES:
        counts[APPLIANCES[task_type][0]] = max(1, counts[APPLIANCES[task_type][0]])
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
    if task_type == "pick_two_obj_and_place" or rng.random() < 0.3:
        placed.append((obj, rng.choice(sources)))
    others = [o for o in room.objects if o != obj]
    for _ in range(rng.randint(3, 8)):
        other = rng.choice(others)
        spots = [r for r in receptacles if other in holds[r[1]]]
        if spots:
            placed.append((other, rng.choice(spots)))
    if recep == LAMP:
        placed.append((LAMP, rng.choice([r for r in receptacles if r[1] in LAMP_STANDS])))
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
             + [f"(pickupable {oid})" for oid, otype, _ in objects if otype != LAMP]
             + [f"(openable {rid})" for rid, rtype in receptacles if rtype in openable]
             + [f"(atLocation agent1 {start})"]
             + [f"(inReceptacle {oid} {rid})" for oid, _, rid in objects]
             + [f"(receptacleAtLocation {rid} {locations[rid]})" for rid, _ in receptacles]
             + [f"(objectAtLocation {oid} {locations[rid]})" for oid, _, rid in objects])
    if task_type != TASK_TYPE:  # the properties the state-change and lamp actions check
        facts += [f"({prop.lower()} {oid})" for oid, otype, _ in objects
                  for prop in ("Cleanable", "Heatable", "Coolable", "Toggleable")
                  if otype in constants.VAL_ACTION_OBJECTS[prop]]
    goal = (goal_library.gdict[task_type]["pddl"].format(obj=obj, recep=recep, toggle=recep)
            .replace("#", "-"))
    problem = ("(define (problem plan_llmrl)\n(:domain alfred)\n(:objects\n    "
               + "\n    ".join(declarations) + "\n)\n(:init\n    " + "\n    ".join(facts)
               + "\n)\n" + goal + "\n")
    sentences = [t.format(obj=obj.lower(), recep=recep.lower(), toggle=recep.lower())
                 for t in goal_library.gdict[task_type]["templates"]]
    task = rng.choice([s for s in sentences if tasks is None or s + "." in tasks] or sentences)
    return GameSpec(room.name, obj, recep, task, problem, task_type)


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
        "task_type": spec.task_type,
        "task_id": trial_dir.name,
        "pddl_params": {"object_target": spec.obj,
                        "parent_target": "" if spec.recep == LAMP else spec.recep,
                        "toggle_target": spec.recep if spec.recep == LAMP else "",
                        "mrecep_target": "", "object_sliced": False},
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
             progress=lambda done, total: None,
             task_type: str = TASK_TYPE) -> dict[str, list[Path]]:
    """Write ``n`` expert-solvable games per split under ``out/json_2.1.1``; return their files.

    Pick and place: game ``i`` of the train split has the paper's task string ``i mod 26``,
    game ``i`` of the unseen split the combination ``i mod 16``, so every string or combination
    appears once before any appears twice. Pick two uses the same combinations. The other
    types: ``task_pairs(task_type)``, the even ones for train and the odd ones unseen, game
    ``i`` taking combination ``i * 7`` (a stride through the sorted list, so the first games
    differ in object and receptacle). A candidate is kept when ALFWorld's handcoded expert
    solves it within ``horizon`` steps; else the next candidate is tried.
    """
    from .alfworld_engine import expert_solves

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    written: dict[str, list[Path]] = {}
    done = 0
    pick_pairs = task_type in (TASK_TYPE, "pick_two_obj_and_place")  # SPLIT_PAIRS
    for split in splits:
        if pick_pairs:
            pairs = SPLIT_PAIRS[split]
        else:
            pairs = task_pairs(task_type)[(0 if split == "train" else 1)::2]
        split_dir = out / "json_2.1.1" / SPLIT_DIRS[split]
        written[split] = []
        for i in range(n):
            if split == "train" and task_type == TASK_TYPE:
                task = PAPER_TRAIN_TASKS[i % len(PAPER_TRAIN_TASKS)]
                obj, recep = pair_of(task)
                tasks: tuple[str, ...] | None = (task,)
            elif pick_pairs:
                (obj, recep), tasks = pairs[i % len(pairs)], None
            else:
                (obj, recep), tasks = pairs[(i * 7) % len(pairs)], None
            for attempt in range(max_tries):
                key = f"{seed}/{split}/{i}/{attempt}"
                if task_type != TASK_TYPE:
                    key = f"{task_type}/{key}"
                rng = random.Random(int(hashlib.sha256(key.encode()).hexdigest()[:16], 16))
                spec = make_game(obj, recep, rng, tasks, task_type)
                trial = (split_dir / f"{task_type}-{obj}-None-{recep}-{spec.room}"
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
