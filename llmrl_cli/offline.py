"""Offline runs (``cql``, ``cql-prior``): train on a fixed dataset, evaluate online in the env.

The dataset's states are turned into prior queries once: each transition's s and, as the
paper's script asks again, its s' (value-based/CQL_overcook_salad.py:345, 365-366), each a
visit of the "dataset" stream (fresh draws by default, ``priors/draws.py``). As in that script,
their prompts carry no history by default (``agent.dataset_prompt_history`` > 0 rebuilds that
many lines from the episode); online evaluations use the run's ``history_length`` (Salad: 5).
Where the env has an expert, each state's optimal actions are attached by replaying its episode
in the (deterministic) env. All proposals and embeddings are computed in batches before
training and cached like online ones. Then ``agent.grad_steps`` gradient steps on batches
sampled with replacement, an online evaluation (same code as online runs) every
``eval_every_steps`` steps and a checkpoint after each evaluation.

The dataset: ``--dataset`` when given; else, on ``overcooked-salad``, the paper's own dataset
when the user has imported it (``llmrl dataset import-paper``); else one collected once per env
and seed with ``DEFAULT_POLICY``. A resumed or extended run keeps the dataset it started with
(its checkpoint records which), even if the paper's was imported since.

The prior's proposals for dataset states are generated with at most
``agent.dataset_max_new_tokens`` new tokens (the paper's dataset generator: 20, CQL_overcook_salad.py:636);
online evaluations keep the run's own ``max_new_tokens``.

CSV rows are the online ones, with ``episode`` = gradient steps done and ``env_steps`` = the
dataset's transitions (the samples the agent learned from), plus ``dataset``: which dataset
the run trained on (``DATASET_PAPER``, ``collected:<policy>`` or the ``--dataset`` file's name).
"""

from __future__ import annotations

import csv
import io
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from .agents.cql import CQLAgent, CQLConfig
from .agents.dqn import update_threads
from .data.collect import PAPER_EPISODES, PAPER_SUCCESS_SHARE, collect
from .data.dataset import Dataset, load_dataset
from .data.paper_dataset import ENV as PAPER_ENV
from .data.paper_dataset import paper_dataset_path
from .errors import UserError
from .priors.base import ActionPrior, PriorQuery
from .priors.prompts import build_query, history_line
from .training.loop import CSV_COLUMNS, Loop

#: the default behaviour policy when a run collects its own dataset
DEFAULT_POLICY = "expert-mix:0.5"
#: proposals and embeddings are computed this many dataset states at a time
CHUNK = 256
#: the visit stream of the dataset's states (``priors/draws.py``)
DATASET_STREAM = "dataset"
#: the CSV's ``dataset`` label of the imported paper dataset, and of a collected one
DATASET_PAPER = "paper"
DATASET_COLLECTED = f"collected:{DEFAULT_POLICY}"


def default_dataset_path(out: str, env: str, seed: int) -> Path:
    return Path(out) / "datasets" / f"{env}-{DEFAULT_POLICY}-{PAPER_EPISODES}ep-seed{seed}.jsonl"


@contextmanager
def max_new_tokens(prior: ActionPrior, tokens: int) -> Iterator[None]:
    """Let ``prior`` generate at most ``tokens`` new tokens inside the block, then restore its
    own value. Wrappers (``base``) are looked through; priors that generate nothing (no
    ``max_new_tokens`` field) are left as they are."""
    target: object = prior
    while not hasattr(target, "max_new_tokens") and getattr(target, "base", None) is not None:
        target = target.base  # type: ignore[attr-defined]
    if not hasattr(target, "max_new_tokens"):
        yield
        return
    saved = target.max_new_tokens  # type: ignore[attr-defined]
    target.max_new_tokens = tokens  # type: ignore[attr-defined]
    try:
        yield
    finally:
        target.max_new_tokens = saved  # type: ignore[attr-defined]


class OfflineRunner(Loop):
    """The offline loop: trains on a dataset (module docstring)."""

    agent: CQLAgent
    csv_columns = CSV_COLUMNS + ["dataset"]
    #: the ``dataset`` label of this run's CSV rows (set by ``load_data``)
    dataset_label = ""

    def extra_row(self) -> dict:
        return {"dataset": self.dataset_label}

    def _build(self) -> None:
        super()._build()
        self.agent = CQLAgent(self.encoder.dim, self.cfg.agent, self.device)

    # -- data ------------------------------------------------------------------------------
    def load_data(self, started_with: str | None = None) -> Dataset:
        """The run's dataset (module docstring); sets ``dataset_label``. ``started_with``: the
        label a resumed run's checkpoint recorded, so that it keeps its dataset."""
        cfg = self.cfg
        use_paper = (started_with == DATASET_PAPER if started_with is not None
                     else cfg.env == PAPER_ENV and paper_dataset_path().exists())
        if cfg.dataset:
            self.dataset_label = Path(cfg.dataset).name
            data = load_dataset(cfg.dataset, env=cfg.env)
            if data.env and data.env != cfg.env:
                raise UserError(f"dataset {cfg.dataset!r} was collected on {data.env}, "
                                f"not {cfg.env}")
        elif use_paper:
            path = paper_dataset_path()
            if not path.exists():
                raise UserError(f"this run started on the paper's dataset, which is no longer at "
                                f"{path}; import it again (`llmrl dataset import-paper`) or "
                                "pass --overwrite to start afresh")
            self.dataset_label = DATASET_PAPER
            data = load_dataset(path)
            if data.env != cfg.env:
                raise UserError(f"{path} holds a dataset of {data.env or 'no env'}, not "
                                f"{cfg.env}; import it again (`llmrl dataset import-paper`)")
        else:  # collected once per env and seed, like the paper's (133 episodes, 75% success)
            self.dataset_label = DATASET_COLLECTED
            path = default_dataset_path(cfg.out, cfg.env, cfg.seed)
            if path.exists():
                data = load_dataset(path)
            else:
                self.log(f"collecting a dataset: {PAPER_EPISODES} episodes of {DEFAULT_POLICY} "
                         f"on {cfg.env}, {PAPER_SUCCESS_SHARE:.0%} successful -> {path}")
                data = collect(cfg.env, DEFAULT_POLICY, PAPER_EPISODES, cfg.seed,
                               PAPER_SUCCESS_SHARE, **cfg.env_kwargs)
                data.save(path)
        if cfg.max_transitions is not None:
            data = data.subset(cfg.max_transitions, cfg.seed)
        return data

    def _queries(self, data: Dataset) -> tuple[list[PriorQuery], list[str], list[int], list[int]]:
        """Queries (and their observation texts) for every dataset state; per transition, the
        index of its s and of its s' (-1 when done). Episodes are replayed in the env, while
        they match it, to attach the expert's optimal actions."""
        env = self.slots[0].env
        if env.feature_task is not None:
            raise UserError(f"{self.cfg.algo} on {self.cfg.env} is not supported yet: its task "
                            "changes every episode and datasets hold one instruction")
        instruction = data.instruction or env.instruction
        queries: list[PriorQuery] = []
        observations: list[str] = []
        state_of, next_of = [], []
        for steps in data.episodes():
            history: deque[str] = deque(maxlen=self.cfg.agent.dataset_prompt_history)
            replay = self.track_optimal
            if replay:
                obs, _ = env.reset(seed=0)
            def add(text: str, actions, optimal: tuple[str, ...]) -> int:
                """Append a query for one dataset state; return its index."""
                if not optimal and self.prior.uses_expert:
                    raise UserError(f"--prior {self.cfg.prior} needs the expert's actions, but "
                                    f"a dataset episode does not replay in {self.cfg.env}")
                observations.append(text)
                queries.append(build_query(self.cfg.env, instruction, text, actions,
                                           list(history), optimal))
                return len(queries) - 1

            for tr in steps:
                optimal: tuple[str, ...] = ()
                if replay and obs["text"] == tr.obs_text and obs["actions"] == list(tr.actions):
                    optimal = tuple(env.optimal_actions())
                    obs, *_ = env.step(tr.action)
                else:
                    replay = False
                state_of.append(add(tr.obs_text, tr.actions, optimal))
                history.append(history_line(tr.obs_text, tr.action))
                # s' is asked about again for every transition, as the paper's script does
                # (CQL_overcook_salad.py:365-366), not read from the next transition's s:
                # under fresh draws its proposals are a new visit's
                next_of.append(-1 if tr.done else add(
                    tr.next_obs_text, tr.next_actions,
                    tuple(env.optimal_actions()) if replay else ()))
        return queries, observations, state_of, next_of

    def q_text_task(self) -> str | None:
        """The task the Q input names: ``agent.q_text_task`` (the paper's CQL script: "3"), else
        the env's own (``feature_task``)."""
        return self.cfg.agent.q_text_task or self.slots[0].env.feature_task

    def context(self, env):
        """As the online loop's, with the Q input's task of ``q_text_task`` (evaluations)."""
        return env.instruction, self.cfg.agent.q_text_task or env.feature_task

    def build_buffer(self, data: Dataset) -> dict[str, torch.Tensor]:
        """Features of (s, a_data), of C(s) and of C(s') for every transition."""
        q_input, task = self.slots[0].env.q_input, self.q_text_task()
        queries, observations, state_of, next_of = self._queries(data)
        candidates: list[list[str]] = []
        features: list[torch.Tensor] = []
        tokens = self.cfg.agent.dataset_max_new_tokens  # type: ignore[union-attr]
        for start in range(0, len(queries), CHUNK):
            chunk = queries[start : start + CHUNK]
            with max_new_tokens(self.prior, tokens):
                proposals = self.propose(chunk, [DATASET_STREAM] * len(chunk))
            texts = [q_input(obs, a, task) for obs, row in
                     zip(observations[start : start + CHUNK], proposals) for a in row]
            encoded = self.encoder.encode(texts)
            at = 0
            for row in proposals:
                candidates.append(row)
                features.append(encoded[at : at + len(row)])
                at += len(row)
            for q, row in zip(chunk, proposals):
                self.optimal_seen += 1 if q.optimal else 0
                self.optimal_hits += 1 if q.optimal and any(a in q.optimal for a in row) else 0
        width = max(len(row) for row in candidates)
        dim = self.encoder.dim
        n = len(data)
        buffer = {
            "features": self.encoder.encode([q_input(tr.obs_text, tr.action, task)
                                             for tr in data_order(data)]),
            "cand_features": torch.zeros(n, width, dim),
            "cand_mask": torch.zeros(n, width, dtype=torch.bool),
            "next_features": torch.zeros(n, width, dim),
            "next_mask": torch.zeros(n, width, dtype=torch.bool),
            "reward": torch.tensor([tr.reward for tr in data_order(data)]),
            "done": torch.tensor([float(tr.done) for tr in data_order(data)]),
        }
        for i, (s, s_next) in enumerate(zip(state_of, next_of)):
            m = len(candidates[s])
            buffer["cand_features"][i, :m] = features[s]
            buffer["cand_mask"][i, :m] = True
            if s_next >= 0:
                m = len(candidates[s_next])
                buffer["next_features"][i, :m] = features[s_next]
                buffer["next_mask"][i, :m] = True
        return buffer

    def sample(self, buffer: dict[str, torch.Tensor], batch_size: int) -> dict[str, torch.Tensor]:
        idx = torch.randint(len(buffer["reward"]), (batch_size,), generator=self.rng)
        return {key: value[idx].to(self.device) for key, value in buffer.items()}

    # -- checkpoints ----------------------------------------------------------------------
    def _save_checkpoint(self, finished: bool) -> None:
        state = {
            "agent": self.agent.state_dict(), "rng": self.rng.get_state(),
            "grad_steps": self.agent.grad_steps, "next_eval": self.next_eval,
            "last_loss": self.last_loss, "update_seconds": self.update_seconds,
            "wall_s": self.wall_before + time.perf_counter() - self.started,
            "csv_rows": self.csv_rows, "finished": finished, "prior_stats": self.prior.stats,
            "encoder_stats": self.encoder.stats, "optimal": (self.optimal_hits, self.optimal_seen),
            "dataset": self.dataset_label,
        }
        self.store.save_checkpoint(state)

    def _restore_offline(self, state: dict) -> None:
        self.agent.load_state_dict(state["agent"])
        self.rng.set_state(state["rng"])
        for key in ("next_eval", "last_loss", "update_seconds", "csv_rows"):
            setattr(self, key, state[key])
        self.wall_before = state["wall_s"]
        # counters as they were: the rebuilt buffer asked the (cached) prior again
        self.prior.stats.__dict__.update(state["prior_stats"].__dict__)
        self.encoder.stats.__dict__.update(state["encoder_stats"].__dict__)
        self.optimal_hits, self.optimal_seen = state["optimal"]
        self.store.restore_rows(state)  # the rows it covers, checked against the CSV
        self._add_dataset_column()

    def _add_dataset_column(self) -> None:
        """A CSV written before the ``dataset`` column existed gets it (this run's label), so
        that the rows appended now line up with its header."""
        reader = csv.DictReader(io.StringIO(self.store.csv_text))
        if reader.fieldnames is None or "dataset" in reader.fieldnames:
            return
        rows = list(reader)
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=self.csv_columns, restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "dataset": self.dataset_label})
        self.store.replace_rows(out.getvalue())

    # -- the loop -------------------------------------------------------------------------
    def _run(self) -> Path:
        cfg = self.cfg
        agent_cfg: CQLConfig = cfg.agent  # type: ignore[assignment]
        total = agent_cfg.grad_steps
        state = self.store.open()
        if state is not None and state["finished"] and state["grad_steps"] >= total:
            self.log(f"already complete: {self.csv_path} (pass --overwrite to run it again)")
            return self.csv_path
        self.build()
        self.check_expert()
        cfg.run_dir.mkdir(parents=True, exist_ok=True)
        self.started = time.perf_counter()
        # a checkpoint from before the label existed trained on --dataset or a collected one
        data = self.load_data(None if state is None
                              else state.get("dataset", Path(cfg.dataset).name if cfg.dataset
                                             else DATASET_COLLECTED))
        self.store.start(_dump(cfg))
        self.env_steps = len(data)
        self.log(f"dataset ({self.dataset_label}): {len(data)} transitions, "
                 f"{len(data.episodes())} episodes ({data.successful_episodes()} successful); "
                 "computing proposals and features")
        buffer = self.build_buffer(data)
        self.agent.fit_normaliser(buffer["features"])
        if state is not None:
            self._restore_offline(state)
            self.log(f"resuming {self.csv_path} from gradient step {self.agent.grad_steps}")
        self.progress(self.agent.grad_steps, total, "")
        while True:
            step = self.agent.grad_steps
            if step >= self.next_eval or step >= total:
                ret, success = self.evaluate(step)
                self._record(step, ret, success)
                self.csv_rows += 1
                self.next_eval = step + agent_cfg.eval_every_steps
                finished = step >= total
                self._save_checkpoint(finished)
                self.progress(step, total, f"eval return {ret:.3f} success {success:.2f}")
                if finished:
                    return self.csv_path
            started = time.perf_counter()
            with update_threads():
                losses = [self.agent.update(self.sample(buffer, agent_cfg.batch_size))
                          for _ in range(min(self.next_eval, total) - step)]
            self.update_seconds += time.perf_counter() - started
            self.last_loss = sum(losses) / len(losses)
            self.progress(self.agent.grad_steps, total, "")


def data_order(data: Dataset):
    """Transitions in the order ``_queries`` numbers them (episode by episode)."""
    return [tr for steps in data.episodes() for tr in steps]


def _dump(cfg) -> str:
    from .config import dump_yaml

    return dump_yaml(cfg)
