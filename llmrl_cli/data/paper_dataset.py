"""Import the paper's offline Overcooked (Salad) dataset from the user's clone of its repository.

The paper's repository (github.com/yanxue7/RL-LLM-Prior) states no licence, so llmrl ships none
of its data: ``llmrl dataset import-paper`` reads the pickle under
``value-based/overcooked_data/`` of the user's clone and writes it in our format to
``paper_dataset_path()``, where offline runs on ``overcooked-salad`` pick it up.

The pickle is a list of records ``(instruction, observation, action, next observation, reward,
done, admissible actions, next admissible actions)`` (the tuple its CQL script unpacks per
example). A pickle can run any callable it names, so it is read by an unpickler that imports
nothing: numpy scalars (a reward or done flag saved as ``np.float32``/``np.bool_``) are rebuilt
from their raw bytes by the small stand-ins below, and any other global is refused.
"""

from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..paths import cache_dir
from .dataset import Dataset, from_paper_rows

#: the env the paper's dataset was recorded in
ENV = "overcooked-salad"
#: where the pickle lies in a clone of the paper's repository
CLONE_GLOB = "value-based/overcooked_data/*.pkl"
#: a record's fields, in the pickle's order (and their names in the paper's JSON lines)
FIELDS = ("instruction", "obs_text", "action", "next_obs_text", "reward", "done", "actions",
          "next_actions")
#: numpy dtype codes -> struct formats, for the scalar types a dataset may hold
_STRUCT = {"b1": "?", "i1": "b", "i2": "h", "i4": "i", "i8": "q", "u1": "B", "u2": "H",
           "u4": "I", "u8": "Q", "f2": "e", "f4": "f", "f8": "d"}


def paper_dataset_path() -> Path:
    """Where ``llmrl dataset import-paper`` writes by default, and offline runs look."""
    return cache_dir() / "datasets" / "paper-overcooked-salad.jsonl"


# -- the restricted unpickler ---------------------------------------------------------------
class _DType:
    """Stands in for ``numpy.dtype``: keeps the type code and byte order, nothing else."""

    def __init__(self, code: str, align: bool = False, copy: bool = False) -> None:
        if not isinstance(code, str) or code not in _STRUCT:
            raise UserError(f"the pickle holds a numpy value of type {code!r}; llmrl reads only "
                            f"numpy scalars of types {', '.join(_STRUCT)}")
        self.code = code
        self.order = "<"

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">"):
            self.order = state[1]


def _scalar(dtype: Any, data: Any) -> bool | int | float:
    """Stands in for ``numpy.core.multiarray.scalar``: the value of a numpy scalar as a Python
    bool, int or float, unpacked from its raw bytes."""
    if not isinstance(dtype, _DType) or not isinstance(data, bytes):
        raise UserError("the pickle holds a numpy value llmrl cannot rebuild (not a scalar)")
    fmt = dtype.order + _STRUCT[dtype.code]
    if len(data) != struct.calcsize(fmt):
        raise UserError(f"the pickle holds a numpy {dtype.code} scalar of {len(data)} bytes")
    return struct.unpack(fmt, data)[0]


def _latin1(text: Any, encoding: str = "utf-8") -> bytes:
    """Stands in for ``_codecs.encode``, which protocol-2 pickles use to carry bytes."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UserError("the pickle encodes bytes in a way llmrl does not read")
    return text.encode("latin1")


#: the only globals the unpickler resolves, each to llmrl's own stand-in
_STAND_INS: dict[tuple[str, str], Any] = {
    ("numpy", "dtype"): _DType,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("_codecs", "encode"): _latin1,
}


class _NoClassUnpickler(pickle.Unpickler):
    """Loads plain data only: every global the pickle names is refused, except the numpy
    scalar pieces above, which resolve to llmrl's stand-ins (no module is imported)."""

    def find_class(self, module: str, name: str) -> Any:
        stand_in = _STAND_INS.get((module, name))
        if stand_in is None:
            raise UserError(f"the pickle refers to {module}.{name}; llmrl loads no class or "
                            "function from a pickle (only lists, strings, numbers and numpy "
                            "scalars)")
        return stand_in

    def persistent_load(self, pid: Any) -> Any:
        raise UserError("the pickle refers to a persistent object; llmrl does not load them")


def safe_load(path: Path) -> Any:
    """Unpickle ``path`` with ``_NoClassUnpickler``; bad input raises UserError."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {str(path)!r}: {exc.strerror}") from None
    try:
        return _NoClassUnpickler(io.BytesIO(raw)).load()
    except UserError as exc:
        raise UserError(f"{str(path)!r}: {exc}") from None
    except Exception as exc:  # a corrupt or non-pickle file raises many kinds of error
        raise UserError(f"{str(path)!r} is not a readable pickle "
                        f"({type(exc).__name__}: {exc})") from None


# -- conversion -----------------------------------------------------------------------------
def find_pickle(path: Path | str) -> Path:
    """``path`` itself if a file, else the single ``value-based/overcooked_data/*.pkl`` of a
    clone of the paper's repository."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise UserError(f"{str(path)!r} does not exist")
    found = sorted(path.glob(CLONE_GLOB))
    if not found:
        raise UserError(f"no {CLONE_GLOB} under {str(path)!r}: give the paper's pickle file or "
                        "a clone of github.com/yanxue7/RL-LLM-Prior")
    if len(found) > 1:
        raise UserError(f"several pickles under {str(path)!r} ({', '.join(p.name for p in found)})"
                        "; give one of them")
    return found[0]


def _is_text_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(a, str) for a in value)


def _row(record: Any) -> dict[str, Any]:
    """One record as the paper's JSON-lines fields; raises ValueError saying what is wrong."""
    if not isinstance(record, (tuple, list)) or len(record) != len(FIELDS):
        raise ValueError(f"not a tuple of {len(FIELDS)} fields")
    row = dict(zip(FIELDS, record))
    for key in ("instruction", "obs_text", "action", "next_obs_text"):
        if not isinstance(row[key], str):
            raise ValueError(f"its {key} is not text")
    if isinstance(row["reward"], bool) or not isinstance(row["reward"], (int, float)):
        raise ValueError("its reward is not a number")
    if row["done"] not in (True, False):
        raise ValueError("its done flag is not true or false")
    for key in ("actions", "next_actions"):
        if not _is_text_list(row[key]) or not row[key]:
            raise ValueError(f"its {key} are not a list of texts")
    row.update(reward=float(row["reward"]), done=bool(row["done"]),
               actions=list(row["actions"]), next_actions=list(row["next_actions"]))
    return row


def paper_rows(path: Path | str) -> list[dict[str, Any]]:
    """The records of the paper's pickle at ``path`` (file or clone), as JSON-lines rows."""
    pkl = find_pickle(path)
    records = safe_load(pkl)
    if not isinstance(records, (list, tuple)) or not records:
        raise UserError(f"{str(pkl)!r} does not hold a list of transitions "
                        f"(it holds {type(records).__name__})")
    rows = []
    for i, record in enumerate(records):
        try:
            rows.append(_row(record))
        except ValueError as exc:
            raise UserError(f"{str(pkl)!r}: record {i} is not (instruction, observation, action, "
                            f"next observation, reward, done, actions, next actions): "
                            f"{exc}") from None
    instructions = {row["instruction"] for row in rows}
    if len(instructions) > 1:  # a Dataset holds one instruction
        raise UserError(f"{str(pkl)!r} holds {len(instructions)} different instructions; "
                        "llmrl expects the Salad dataset's one")
    return rows


def import_paper(path: Path | str, out: Path | str | None = None) -> tuple[Path, Dataset]:
    """Convert the paper's pickle to our format and write it (atomically) to ``out`` or
    ``paper_dataset_path()``; returns where it wrote and the dataset."""
    data = from_paper_rows(paper_rows(path), ENV)
    target = Path(out) if out is not None else paper_dataset_path()
    if target.is_dir():
        raise UserError(f"--out {str(target)!r} is a folder; give a file name")
    try:
        return data.save(target), data
    except OSError as exc:
        raise UserError(f"cannot write {str(target)!r}: {exc.strerror}") from None
