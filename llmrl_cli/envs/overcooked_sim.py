"""The rules of TWOSOME's single-agent Overcooked (map "A", 7x7), re-implemented.

Facts taken from TWOSOME's ``gym_macro_overcooked`` (``Overcooked_V3``/``V4`` and their
``LLMA`` macro-action versions) and checked against recorded episodes of the original:

Map and items. Cells are ``(row, col)``, stored here as one index ``row * 7 + col``. The border
is counter; the 5x5 interior is floor. Items, in the original's list order: the foods (tomato
(0,5); for the salad task also lettuce (1,6) and onion (2,6)), the plate/bowl (6,5), the cutting
boards ("knives", (1,0) and for the salad task (2,0)), the delivery counter (3,0) and the agent
(start (1,4)). A grid of cell codes says what stands on each cell (a food or plate lying on a
counter replaces the counter code; foods on a board or in the plate do not show).

Primitive step (right, down, left, up, stay). Moving onto floor moves the agent (with what it
carries). Moving into any other cell interacts with it and the agent stays:
- empty-handed: pick up a food or the plate from a counter; at a board, take the plate, take a
  chopped food, or chop an unchopped food once (three chops make it chopped; +0.2 when it becomes
  chopped and its name is a substring of the task name, so onion earns nothing);
- carrying: put it on an empty counter; put a chopped food into the plate; put it on an empty
  board; with the plate, scoop a chopped food from a board or from a counter; with a chopped food,
  pick up the plate lying on a board and put the food in; deliver at the delivery counter.
Every step costs -0.001. Delivering the plate with exactly the task's foods gives +1 and ends
the episode; any other delivery gives -0.1 and sends the delivered items (and the plate's
contents, unchopped again) back to their start cells. The episode also ends after 200 steps.

Partial observability: the agent sees items within 2 cells (Chebyshev). It remembers where it
last saw each item; a remembered cell that is in view but no longer holds the item is reset to
the item's start cell. Macro-actions navigate to remembered cells.

Macro-actions (one macro-step = primitive steps until the macro counts as finished, rewards
summed with discount 0.99 per primitive step): get <food>, get plate, go to knife 1/2, deliver
-- A* navigation to the target item's remembered cell, then one interaction -- and chop, which
chops an adjacent unchopped food on a board up to three times. When a macro counts as finished
follows the original exactly (see ``_controller`` and ``_check_finished``); it may keep running
past the 200-step limit (to 205 at most).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

SIZE = 7
N_CELLS = SIZE * SIZE
VIEW_RADIUS = 2
PRIMITIVE_LIMIT = 200
STEP_PENALTY = -0.001
SUBTASK_REWARD = 0.2
CORRECT_DELIVERY = 1.0
WRONG_DELIVERY = -0.1
DISCOUNT = 0.99
CHOPS_NEEDED = 3

# Cell codes of the original grid.
SPACE, COUNTER, AGENT, TOMATO, LETTUCE, PLATE, KNIFE, DELIVERY, ONION = range(9)
FOOD_CODES = {"tomato": TOMATO, "lettuce": LETTUCE, "onion": ONION}
KIND_CODES = {**FOOD_CODES, "plate": PLATE, "knife": KNIFE, "delivery": DELIVERY, "agent": AGENT}

# Primitive actions: right, down, left, up (as cell-index offsets), stay.
RIGHT, DOWN, LEFT, UP, STAY = range(5)
OFFSETS = (1, SIZE, -1, -SIZE)

# Macro-action kinds.
GET_FOOD, GET_PLATE, GO_KNIFE, DELIVER, CHOP = range(5)


def cell(row: int, col: int) -> int:
    return row * SIZE + col


def rc(c: int) -> tuple[int, int]:
    return divmod(c, SIZE)


def _in_view_table() -> tuple[tuple[bool, ...], ...]:
    return tuple(
        tuple(abs(a // SIZE - b // SIZE) <= VIEW_RADIUS and abs(a % SIZE - b % SIZE) <= VIEW_RADIUS
              for b in range(N_CELLS))
        for a in range(N_CELLS))


def _distance_table() -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(abs(a // SIZE - b // SIZE) + abs(a % SIZE - b % SIZE)
                       for b in range(N_CELLS)) for a in range(N_CELLS))


IN_VIEW = _in_view_table()
DISTANCE = _distance_table()
INTERIOR = frozenset(cell(r, c) for r in range(1, SIZE - 1) for c in range(1, SIZE - 1))


class _Node:
    """An A* frontier node. The original orders nodes with ``f <= other.f`` (not ``<``), so
    among equal f the heap's sift order decides; heapq with this ``__lt__`` reproduces it."""

    __slots__ = ("cell", "g", "f", "first")

    def __init__(self, c: int, g: int, f: int, first: int | None) -> None:
        self.cell, self.g, self.f, self.first = c, g, f, first

    def __lt__(self, other: _Node) -> bool:
        return self.f <= other.f


# The original expands neighbours in this order: right, left, down, up.
_ASTAR_ORDER = ((1, RIGHT), (-1, LEFT), (SIZE, DOWN), (-SIZE, UP))


def astar_first_move(start: int, target: int, passable: frozenset[int] = INTERIOR) -> int:
    """First primitive move of the original's A* from ``start`` to a cell next to ``target``.

    A neighbour equal to the target ends the search (whatever stands there); only passable
    cells are expanded; no path means STAY.
    """
    visited = {start}
    frontier = [_Node(start, 0, DISTANCE[start][target], None)]
    while frontier:
        node = heapq.heappop(frontier)
        for offset, move in _ASTAR_ORDER:
            nxt = node.cell + offset
            if nxt in visited:
                continue
            first = node.first if node.first is not None else move
            if nxt in passable:
                heapq.heappush(frontier, _Node(nxt, node.g + 1, node.g + 1 + DISTANCE[nxt][target],
                                               first))
                visited.add(nxt)
            if nxt == target:
                return first
    return STAY


def _navigation_table() -> dict[tuple[int, int], int]:
    """A* first moves for every interior start and every target cell.

    In single-agent map A the agent's remembered map never blocks a floor cell (items only ever
    lie on border cells or in the agent's hands, and the agent's own cell is where it starts), so
    navigation depends only on (start, target) and can be tabulated once.
    """
    return {(s, t): astar_first_move(s, t) for s in INTERIOR for t in range(N_CELLS) if s != t}


NAVIGATION = _navigation_table()


@dataclass(frozen=True)
class Layout:
    """One task: its items (in the original's list order), macro-actions and start grid."""

    task: str  # the original's task name, e.g. "lettuce-tomato salad"
    kinds: tuple[str, ...]  # item kinds in list order: foods, plate, knives, delivery, agent
    starts: tuple[int, ...]  # start cell of each item
    macros: tuple[tuple[int, int], ...]  # (macro kind, target item) in action order
    grid: tuple[int, ...]  # start grid of cell codes

    @property
    def foods(self) -> tuple[int, ...]:
        return tuple(i for i, k in enumerate(self.kinds) if k in FOOD_CODES)

    @property
    def plate(self) -> int:
        return self.kinds.index("plate")

    @property
    def knives(self) -> tuple[int, ...]:
        return tuple(i for i, k in enumerate(self.kinds) if k == "knife")

    @property
    def delivery(self) -> int:
        return self.kinds.index("delivery")

    @property
    def agent(self) -> int:
        return len(self.kinds) - 1


def make_layout(task: str, foods: tuple[str, ...], knives: tuple[int, ...]) -> Layout:
    food_cells = {"tomato": cell(0, 5), "lettuce": cell(1, 6), "onion": cell(2, 6)}
    kinds = (*foods, "plate", *("knife",) * len(knives), "delivery", "agent")
    starts = (*(food_cells[f] for f in foods), cell(6, 5), *knives, cell(3, 0), cell(1, 4))
    grid = [COUNTER if c not in INTERIOR else SPACE for c in range(N_CELLS)]
    for kind, c in zip(kinds, starts):
        grid[c] = KIND_CODES[kind]
    n_food = len(foods)
    macros = (*((GET_FOOD, i) for i in range(n_food)), (GET_PLATE, n_food),
              *((GO_KNIFE, n_food + 1 + j) for j in range(len(knives))),
              (DELIVER, n_food + 1 + len(knives)), (CHOP, len(kinds) - 1))
    return Layout(task, kinds, starts, macros, tuple(grid))


#: TWOSOME Overcooked-LLMA-v4, task 0: tomato only, one cutting board.
TOMATO_SALAD = make_layout("tomato salad", ("tomato",), (cell(1, 0),))
#: TWOSOME Overcooked-LLMA-v3, task 3: tomato, lettuce, onion, two cutting boards.
LETTUCE_TOMATO_SALAD = make_layout("lettuce-tomato salad", ("tomato", "lettuce", "onion"),
                                   (cell(1, 0), cell(2, 0)))


@dataclass
class MacroResult:
    reward: float  # sum_k 0.99^k r_k over the primitive steps
    done: bool  # the original's done after the last primitive step (delivery or step limit)
    delivered: bool  # a correct delivery happened
    primitive_rewards: list[float]


@dataclass
class State:
    """Everything the original tracks (the full world plus the agent's memory)."""

    layout: Layout
    grid: list[int]
    pos: list[int]  # current cell of each item
    memory: list[int]  # the agent's remembered cell of each item
    chops: list[int]  # chop count of each item (foods only)
    held: list[int]  # what each board / the delivery / the agent holds (item index or -1)
    contents: list[int]  # foods in the plate, in insertion order
    macro: int = -1  # current macro-action (between macro-steps: finished)
    macro_done: bool = True
    chop_count: int = 0  # the chop macro's counter
    steps: int = 0  # primitive steps taken
    delivered: bool = False

    @classmethod
    def start(cls, layout: Layout) -> State:
        n = len(layout.kinds)
        state = cls(layout, list(layout.grid), list(layout.starts), list(layout.starts),
                    [0] * n, [-1] * n, [])
        state._observe()
        return state

    def copy(self) -> State:
        return State(self.layout, self.grid[:], self.pos[:], self.memory[:], self.chops[:],
                     self.held[:], self.contents[:], self.macro, self.macro_done,
                     self.chop_count, self.steps, self.delivered)

    def key(self) -> tuple:
        """Hashable state between macro-steps (the step counter excluded)."""
        return (*self.grid, *self.pos, *self.memory, *self.chops, *self.held, -2,
                *self.contents, self.chop_count)

    # -- queries ----------------------------------------------------------------------------
    def is_food(self, item: int) -> bool:
        return item >= 0 and self.layout.kinds[item] in FOOD_CODES

    def chopped(self, item: int) -> bool:
        return self.chops[item] >= CHOPS_NEEDED

    def find(self, c: int, kind: str) -> int:
        """The item of ``kind`` on cell ``c`` (the original crashes when there is none)."""
        for i, k in enumerate(self.layout.kinds):
            if k == kind and self.pos[i] == c:
                return i
        raise RuntimeError(f"no {kind} on cell {rc(c)}: grid and items disagree")

    def visible(self, item: int) -> bool:
        return IN_VIEW[self.pos[self.layout.agent]][self.pos[item]]

    # -- moving items -----------------------------------------------------------------------
    def _move(self, item: int, c: int) -> None:
        self.pos[item] = c
        if item == self.layout.plate:
            for food in self.contents:
                self.pos[food] = c

    def _move_agent(self, c: int) -> None:
        agent = self.layout.agent
        self.pos[agent] = c
        if self.held[agent] >= 0:
            self._move(self.held[agent], c)

    def _pick_up(self, item: int) -> None:
        agent = self.layout.agent
        self.held[agent] = item
        self._move(item, self.pos[agent])

    def _put_down(self, c: int) -> int:
        agent = self.layout.agent
        item = self.held[agent]
        self._move(item, c)
        self.held[agent] = -1
        return item

    def _contain(self, food: int) -> None:
        self.contents.append(food)
        plate_cell = self.pos[self.layout.plate]
        for f in self.contents:
            self.pos[f] = plate_cell

    def _send_back(self, item: int) -> None:
        """Return an item to its start cell (a food also loses its chops)."""
        self.pos[item] = self.layout.starts[item]
        self.chops[item] = 0
        self.grid[self.pos[item]] = KIND_CODES[self.layout.kinds[item]]

    # -- one primitive step -----------------------------------------------------------------
    def primitive(self, action: int) -> float:
        """Apply one primitive action; return its (undiscounted) reward."""
        reward = STEP_PENALTY
        lay = self.layout
        agent = lay.agent
        if action != STAY:
            here = self.pos[agent]
            target = here + OFFSETS[action]
            code = self.grid[target]
            hand = self.held[agent]
            if code == SPACE:
                self.grid[here] = SPACE
                self._move_agent(target)
                self.grid[target] = AGENT
            elif hand < 0:
                if code in (TOMATO, LETTUCE, ONION, PLATE):
                    kind = "plate" if code == PLATE else lay.kinds[self._food_of_code(code)]
                    self._pick_up(self.find(target, kind))
                    self.grid[target] = COUNTER
                elif code == KNIFE:
                    knife = self.find(target, "knife")
                    on_board = self.held[knife]
                    if on_board == lay.plate:
                        self.held[knife] = -1
                        self._pick_up(on_board)
                    elif self.is_food(on_board):
                        if self.chopped(on_board):
                            self.held[knife] = -1
                            self._pick_up(on_board)
                        else:
                            self.chops[on_board] += 1
                            if self.chopped(on_board) and lay.kinds[on_board] in lay.task:
                                reward += SUBTASK_REWARD
            elif code == COUNTER:
                self.grid[target] = KIND_CODES[lay.kinds[hand]]
                self._put_down(target)
            elif code == PLATE:
                if self.is_food(hand) and self.chopped(hand):
                    self.find(target, "plate")
                    self._contain(self._put_down(target))
            elif code == KNIFE:
                knife = self.find(target, "knife")
                on_board = self.held[knife]
                if on_board < 0:
                    self.held[knife] = self._put_down(target)
                elif self.is_food(on_board) and hand == lay.plate:
                    if self.chopped(on_board):
                        self.held[knife] = -1
                        self._contain(on_board)
                elif on_board == lay.plate and self.is_food(hand):
                    if self.chopped(hand):
                        self.held[knife] = -1
                        self._pick_up(on_board)
                        self._contain(hand)
            elif code == DELIVERY:
                reward += self._deliver(target)
            elif code in (TOMATO, LETTUCE, ONION):
                food = self.find(target, lay.kinds[self._food_of_code(code)])
                if self.chopped(food) and hand == lay.plate:
                    self._contain(food)
                    self.grid[target] = COUNTER
        self.steps += 1
        self._observe()
        return reward

    def _food_of_code(self, code: int) -> int:
        for i in self.layout.foods:
            if FOOD_CODES[self.layout.kinds[i]] == code:
                return i
        raise RuntimeError(f"cell code {code} names no food of this task")

    def _deliver(self, target: int) -> float:
        lay = self.layout
        hand = self._put_down(target)
        if hand == lay.plate and self.contents:
            names = [k for k in ("lettuce", "onion", "tomato")
                     if any(lay.kinds[f] == k for f in self.contents)]
            if "-".join(names) + " salad" == lay.task:
                self.held[lay.delivery] = hand
                self.delivered = True
                return CORRECT_DELIVERY
            foods, self.contents = self.contents, []
            self._send_back(hand)
            for food in foods:
                self._send_back(food)
            return WRONG_DELIVERY
        self._send_back(hand)
        return WRONG_DELIVERY

    def _observe(self) -> None:
        """Update the agent's memory of item cells after a step (see module docstring)."""
        view = IN_VIEW[self.pos[self.layout.agent]]
        for i, c in enumerate(self.pos):
            if view[c]:
                self.memory[i] = c
            elif view[self.memory[i]]:
                self.memory[i] = self.layout.starts[i]

    # -- macro-actions ----------------------------------------------------------------------
    def _controller(self, macro_index: int) -> int:
        """The primitive action of the running macro-action (may mark it finished)."""
        if self.macro_done:
            self.macro, self.macro_done = macro_index, False
        kind, item = self.layout.macros[self.macro]
        lay = self.layout
        here = self.pos[lay.agent]
        if kind == CHOP:
            for action, offset in enumerate(OFFSETS):
                c = here + offset
                if self.grid[c] == KNIFE:
                    on_board = self.held[self.find(c, "knife")]
                    if self.is_food(on_board) and not self.chopped(on_board):
                        self.chop_count += 1
                        if self.chop_count >= CHOPS_NEEDED:
                            self.macro_done, self.chop_count = True, 0
                        return action
            self.macro_done = True
            return STAY
        target = self.memory[item]
        if kind == GET_FOOD and IN_VIEW[here][target] and self.pos[lay.plate] == target:
            self.macro_done = True  # the food is in the plate
            return STAY
        if target == here:  # the agent carries it
            self.macro_done = True
            return STAY
        action = NAVIGATION[here, target]
        if action == STAY:
            self.macro_done = True
        if DISTANCE[here][target] == 1:
            self.macro_done = True
            hand = self.held[lay.agent]
            if kind == GET_PLATE and self.is_food(hand):
                if self.chopped(hand):
                    self.macro_done = False
                else:
                    action = STAY
            if kind == GO_KNIFE and hand < 0:
                action = STAY
            if kind == GET_FOOD:
                for knife in lay.knives:
                    if self.pos[knife] == target:
                        on_board = self.held[knife]
                        if self.is_food(on_board) and not self.chopped(on_board):
                            action = STAY
                            break
            if kind in (GET_FOOD, GET_PLATE) and target != self.pos[item]:
                action = STAY
        return action

    def _check_finished(self) -> None:
        """The original's after-step test of whether the running macro-action is finished."""
        lay = self.layout
        kind, item = lay.macros[self.macro]
        here = self.pos[lay.agent]
        empty_handed = self.held[lay.agent] < 0
        target = self.memory[item]
        if kind == GO_KNIFE and empty_handed:
            if DISTANCE[here][target] == 1:
                self.macro_done = True
        elif kind == GET_FOOD:
            if DISTANCE[here][target] == 1:
                for knife in lay.knives:
                    if self.pos[knife] == target:
                        if not self.chopped(self.find(target, lay.kinds[item])):
                            self.macro_done = True
                        break
        elif kind == DELIVER and empty_handed:
            if DISTANCE[here][target] == 1:
                self.macro_done = True
        if kind in (GET_FOOD, GET_PLATE) and target != self.pos[item]:
            self.macro_done = True

    def run_macro(self, macro_index: int) -> MacroResult:
        """Run one macro-action to its end, as the original's ``run``."""
        reward: float = 0
        discount = 1.0
        rewards = []
        done = False
        while True:
            action = self._controller(macro_index)
            r = self.primitive(action)
            rewards.append(r)
            reward += discount * r
            done = self.delivered or self.steps >= PRIMITIVE_LIMIT
            if not self.macro_done:
                self._check_finished()
            discount *= DISCOUNT
            if self.macro_done:
                break
        return MacroResult(float(reward), done, self.delivered, rewards)

    # -- what the agent sees at the end of a macro-step -------------------------------------
    def seen(self, item: int) -> tuple[int, int]:
        """(cell, chop count) of an item as the macro observation gives it; (-1, 0) unseen."""
        if self.visible(item):
            return self.pos[item], self.chops[item]
        return -1, 0
