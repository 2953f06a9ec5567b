"""Text of TWOSOME's Overcooked as the paper rendered it (``obs2text`` in the paper's code).

The text is built from the macro observation only: an item counts when it is in view, at its
cell; unseen items are unknown. Rules (both tasks):
- a fixed first sentence about the cutting board(s);
- "You notice ... on the table(s)." lists the tomato, lettuce, onion and bowl (= plate) that
  are seen at their start cells;
- one sentence per cutting board holding something: "An unchopped/A chopped X is on the ...
  cutting board.", "A bowl is on ...", "A bowl containing chopped ... is on ...";
- where the agent stands (in front of a board, or elsewhere) and what it carries.
Action labels sit at the macro-action's index and change with the state: "take the empty
bowl" becomes "take the bowl" when the bowl shares a cell with something; "serve nothing" becomes
"serve the dish" when carrying; "chop nothing" becomes "chop the X" when standing in front of the
board that holds the food X; carrying an unchopped food, the board actions become "put the X on
the ... cutting board"; carrying the bowl, the food actions become "put the X in the bowl" and the
board actions "put the bowl on the ... cutting board". The tomato task always says "take the
bowl". The goal phrase the paper appended ("To serve the dish ..., you should first") is not
part of the description; the environment's instruction carries the goal.
"""

from __future__ import annotations

from .overcooked_sim import CHOPS_NEEDED, State, cell

_ARTICLES = {"tomato": "a tomato", "lettuce": "a lettuce", "onion": "an onion", "plate": "a bowl"}
_BOARD_ORDINALS = ("first", "second")


def _join(names: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _cap(sentence: str) -> str:
    return sentence[0].upper() + sentence[1:]


def describe(state: State) -> tuple[str, list[str]]:
    """The description and the admissible action labels after a macro-step."""
    lay = state.layout
    salad = len(lay.knives) == 2
    items = [*lay.foods, lay.plate]  # foods then the bowl, as the text enumerates them
    seen = {i: state.seen(i) for i in items}
    agent_cell = state.pos[lay.agent]
    boards = [state.pos[k] for k in lay.knives]
    name = {i: ("bowl" if i == lay.plate else lay.kinds[i]) for i in items}

    if salad:
        labels = ["pick up the tomato", "pick up the lettuce", "pick up the onion",
                  "take the empty bowl", "walk to the first cutting board",
                  "walk to the second cutting board", "serve nothing", "chop nothing"]
        serve, chop, bowl_label = 6, 7, 3
        board_labels = (4, 5)
        sentences = ["There are two fixed cutting boards in the room."]
    else:
        labels = ["pick up the tomato", "take the bowl", "walk to the cutting board",
                  "serve nothing", "chop nothing"]
        serve, chop, bowl_label = 3, 4, 1
        board_labels = (2,)
        sentences = ["There is a fixed cutting board in the room."]

    noticed = [_ARTICLES[lay.kinds[i]] for i in items if seen[i][0] == lay.starts[i]]
    in_hand = [i for i in items if seen[i][0] == agent_cell]
    on_board = [[i for i in items if seen[i][0] == b] for b in boards]
    if salad and (len(in_hand) > 1 or any(len(b) > 1 for b in on_board)):
        labels[bowl_label] = "take the bowl"
    if noticed:
        where = "on the table" if len(noticed) == 1 else "on the different tables"
        sentences.append(f"You notice {_join(noticed)} {where}.")

    def food_phrase(i: int) -> str:
        chopped = seen[i][1] == CHOPS_NEEDED
        return ("a chopped " if chopped else "an unchopped ") + name[i]

    def bowl_with(contents: list[int]) -> str:
        return "a bowl containing chopped " + _join([name[i] for i in contents])

    def board_phrase(b: int) -> str:
        return f"the {_BOARD_ORDINALS[b]} cutting board" if salad else "the cutting board"

    for b, there in enumerate(on_board):
        if len(there) == 1:
            i = there[0]
            if i == lay.plate:
                sentences.append(f"A bowl is on {board_phrase(b)}.")
            else:
                sentences.append(_cap(f"{food_phrase(i)} is on {board_phrase(b)}."))
                if agent_cell == boards[b] + 1:
                    labels[chop] = "chop the " + name[i]
        elif len(there) > 1:
            bowl = (_cap(bowl_with(there[:-1])) if salad
                    else "A bowl containing a chopped tomato")
            sentences.append(f"{bowl} is on {board_phrase(b)}.")

    front = {cell(1, 1): 0, cell(2, 1): 1}.get(agent_cell, -1)
    standing = f"Currently you are standing in front of {board_phrase(front)}" if front >= 0 else ""

    def put_on_boards(what: str) -> None:
        for b, index in enumerate(board_labels):
            labels[index] = f"put the {what} on {board_phrase(b)}"

    def hold_bowl() -> None:
        for f in lay.foods:
            labels[f] = f"put the {name[f]} in the bowl"

    if not in_hand:
        sentences.append(f"{standing} without anything in hand." if standing
                         else "Currently you don't have anything in hand.")
    else:
        labels[serve] = "serve the dish"
        if len(in_hand) == 1:
            i = in_hand[0]
            what = "a bowl" if i == lay.plate else food_phrase(i)
            sentences.append(f"{standing}, carrying {what} in hand." if standing
                             else f"Currently you are carrying {what} in hand.")
            if i == lay.plate:
                hold_bowl()
                put_on_boards("bowl")
            elif seen[i][1] != CHOPS_NEEDED:
                put_on_boards(name[i])
        else:
            what = bowl_with(in_hand[:-1])
            sentences.append(f"{standing}, carrying {what} in hand." if standing
                             else f"Currently you are carrying {what}.")
            hold_bowl()
            put_on_boards("bowl")
    return " ".join(sentences), labels


def goal_phrase(state: State) -> str:
    """The phrase the paper's text ended with (kept out of the description)."""
    foods = "tomato and lettuce" if len(state.layout.knives) == 2 else "tomato"
    return f"To serve the dish of a bowl only containing chopped {foods}, you should first"
