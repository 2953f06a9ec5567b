"""What every training loop (online, offline, policy) shares: the run's pieces, the states it
decides on, the value-based decision (the prior's candidates C(s), their features and Q), the
acting rule, the evaluations and the CSV rows.

A loop subclasses ``Loop`` and writes ``_run``: ``runner.Runner`` (online value-based: DQN,
DQN-Prior, llm), ``offline.OfflineRunner`` (CQL, CQL-Prior on a dataset) and
``gflan.GFlanRunner`` (the LLM as a PPO policy, on the online loop). ``run()`` holds the
run's lock around ``_run``; ``RunStore`` keeps its files.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch

from ..agents.dqn import DQNAgent, choose
from ..algos import algorithm
from ..config import RunConfig
from ..data.replay import ReplayBuffer
from ..devices import resolve_device
from ..encoders import TextEncoder
from ..envs import TextEnv, make
from ..errors import UserError
from ..priors import ActionPrior, PriorQuery, make_prior
from ..priors.draws import TRAIN_STREAM, VisitCounter
from ..priors.prompts import build_query
from ..seeding import seed_everything
from .env_workers import EnvWorkers
from .evaluator import Evaluator
from .steps import Decision, Slot, StepState
from .store import RunStore

CSV_COLUMNS = [
    "env", "algo", "prior", "k", "seed", "episode", "env_steps", "eval_return", "eval_success",
    "train_return", "llm_calls", "llm_cache_hits", "wall_s",
    # extras
    "train_success", "grad_steps", "loss", "llm_queries", "llm_tokens", "llm_unmatched",
    "prior_seconds", "encoder_texts", "encoder_hits", "encoder_seconds", "update_seconds",
    "prior_optimal_rate",
]


class Loop:
    """A run = env x algo x prior x seed (module docstring); ``run()`` runs, resumes or skips it."""

    #: the CSV's columns; a loop may add its own after these (see ``extra_row``)
    csv_columns = CSV_COLUMNS

    def __init__(self, cfg: RunConfig, progress: Callable[[int, int, str], None] | None = None,
                 overwrite: bool = False, log: Callable[[str], None] = print) -> None:
        self.cfg = cfg
        self.progress = progress or (lambda done, total, msg: None)
        self.overwrite = overwrite
        self.log = log
        self.device = resolve_device(cfg.device)
        self.store = RunStore(cfg, overwrite, log)  # the run's files and lock
        self.csv_path = self.store.csv_path
        self.visits = VisitCounter(cfg.prior_draws)  # fresh draws: each prompt's visits so far
        # progress, as a checkpoint holds it
        self.env_steps = 0  # online: env steps taken; offline: the dataset's transitions
        self.next_eval = 0  # the next eval point (episodes online, gradient steps offline)
        self.train_returns: list[tuple[float, bool]] = []  # (return, success) since last eval
        self.last_loss: float | None = None  # the mean loss of the last training phase
        self.update_seconds = 0.0  # time spent in gradient updates
        self.optimal_hits = self.optimal_seen = 0  # counted states whose C(s) held an optimal a
        self.csv_rows = 0  # rows this run has written
        self.track_optimal = False  # whether the env has an expert to count against (check_expert)
        self.env_workers: EnvWorkers | None = None  # num_env_workers: the envs' processes
        # wall-clock time: this process's start and earlier processes' (a resumed run)
        self.started = time.perf_counter()
        self.wall_before = 0.0

    # -- set-up ---------------------------------------------------------------------------
    def build(self) -> None:
        """Build the run's pieces: prior, encoder, agent, buffer, envs and evaluator."""
        self._build()
        self.evaluator = Evaluator(self.cfg.seed, self.cfg.agent.eval_episodes,
                                   self.cfg.agent.eval_policy, self.eval_slots, self.state_of,
                                   self.choose, self.visits)

    def _build(self) -> None:
        cfg = self.cfg
        seed_everything(cfg.seed)
        self.encoder = TextEncoder(cfg.encoder, device=self.device, pooling=cfg.pooling,
                                   cache_size=cfg.encoder_cache_size)
        self.prior: ActionPrior = make_prior(cfg, str(self.device))
        self.agent = DQNAgent(self.encoder.dim, cfg.agent, self.device)
        self.replay = ReplayBuffer(cfg.agent.buffer_size, self.encoder.dim)
        self.rng = torch.Generator().manual_seed(cfg.seed)
        self.slots = [Slot(self.make_env(), cfg.history_length) for _ in range(cfg.num_envs)]
        n_eval = min(cfg.agent.eval_episodes, 64)  # eval episodes step together as one batch
        self.eval_slots = [Slot(self.make_env(), cfg.history_length) for _ in range(n_eval)]

    def make_env(self):
        """A new env of the run: in this process, or under ``num_env_workers`` in a worker
        process (``env_workers.py``)."""
        cfg = self.cfg
        if cfg.num_env_workers == 0:
            return make(cfg.env, **cfg.env_kwargs)
        if self.env_workers is None:
            self.env_workers = EnvWorkers(cfg.env, cfg.env_kwargs, cfg.num_env_workers)
        return self.env_workers.make()

    def check_expert(self) -> None:
        """Track whether proposals hold an optimal action when the env has an expert; refuse
        a prior that needs one (expert-mix) on an env without."""
        self.track_optimal = self.slots[0].env.has_expert()
        if self.prior.uses_expert and not self.track_optimal:
            raise UserError(f"--prior {self.cfg.prior} needs an env with an expert; "
                            f"{self.cfg.env} has none")

    # -- states and decisions: one prior call, one encoder call, one Q forward per batch --
    def optimal(self, env: TextEnv) -> tuple[str, ...]:
        """The expert's optimal actions in env's current state, when the run needs them."""
        return tuple(env.optimal_actions()) if self.track_optimal else ()

    @staticmethod
    def context(env: TextEnv) -> tuple[str, str | None]:
        """The episode's (instruction, task named in the Q input); envs like ALFWorld change
        them at every reset, so they travel with each state."""
        return env.instruction, env.feature_task

    def state_of(self, slot: Slot, counted: bool = False) -> StepState:
        """The state ``slot``'s env is in, to decide on; ``counted``: a training state, whose
        candidates are counted for holding an optimal action."""
        return StepState(slot.obs, slot.history, self.optimal(slot.env), self.context(slot.env),
                         counted)

    def query(self, state: StepState) -> PriorQuery:
        """The prior query of a state."""
        return build_query(self.cfg.env, state.context[0], state.obs["text"],
                           state.obs["actions"], list(state.history), state.optimal)

    @property
    def learns(self) -> bool:
        """Whether this run trains a Q-function (``llm`` acts by the prior alone)."""
        return algorithm(self.cfg.algo).learns

    def propose(self, queries: list[PriorQuery], streams: list[str]) -> list[list[str]]:
        """The prior's proposals for ``queries``, each numbered as a visit of its stream
        (``priors/draws.py``: fresh draws per visit, or the memoised first ones)."""
        return self.prior.propose(self.visits.number(queries, streams), self.cfg.k)

    def asking(self, queries: list[PriorQuery]) -> None:
        """Called with the queries of each batch before the prior sees them (the online loop
        notes them for ``run_ahead``)."""

    def decide(self, states: list[StepState], agents: list | None = None,
               streams: list[str] | None = None) -> list[Decision]:
        """Candidates, their features and Q-values for a batch of states. ``agents``: the agent
        scoring each state (default: the run's); ``streams``: the visit stream of each state
        (default: training's). Without learning (``llm``) the
        "Q-values" are how often each candidate was proposed."""
        queries = [self.query(state) for state in states]
        self.asking(queries)
        proposals = self.propose(queries, streams or [TRAIN_STREAM] * len(queries))
        # per state, whether its candidates held an optimal action (counted states only)
        hits = [any(a in state.optimal for a in cands) if state.counted and self.track_optimal
                else None for state, cands in zip(states, proposals)]
        if not self.learns:
            return [Decision(cands, torch.empty(0),
                             torch.tensor([float(cands.count(a)) for a in cands]), hit)
                    for cands, hit in zip(proposals, hits)]
        q_input = self.slots[0].env.q_input
        texts = [q_input(state.obs["text"], a, state.context[1])
                 for state, cands in zip(states, proposals) for a in cands]
        features = self.encoder.encode(texts)
        agents = agents or [self.agent] * len(states)
        distinct = {id(a): a for a in agents}  # one Q forward per agent, not per state
        q_by_agent = {key: a.q_values(features).cpu() for key, a in distinct.items()}
        decisions, start = [], 0
        for cands, agent, hit in zip(proposals, agents, hits):
            end = start + len(cands)
            q = q_by_agent[id(agent)][start:end]
            decisions.append(Decision(cands, features[start:end], q, hit))
            start = end
        return decisions

    # -- acting and evaluation ------------------------------------------------------------
    def choose(self, decision: Decision, policy: str, rng: torch.Generator) -> int:
        """The index of the candidate to play. Without learning (``llm``): a uniformly chosen
        proposal (a draw from the prior), or under a greedy policy the most frequent one."""
        if self.learns:
            return choose(decision.q, policy, self.cfg.agent, rng)
        if policy == "greedy":
            return int(decision.q.argmax())  # the first of the most frequent proposals
        return int(torch.randint(len(decision.candidates), (), generator=rng))

    def evaluate(self, episode: int) -> tuple[float, float]:
        """Play the evaluation at ``episode`` alone with the run's agent."""
        return self.evaluator.play(episode, self.decide)

    def _count_optimal(self, decision: Decision) -> None:
        """Count whether a training state's candidates held an optimal action."""
        if decision.optimal_hit is not None:
            self.optimal_hits += decision.optimal_hit
            self.optimal_seen += 1

    # -- CSV rows -------------------------------------------------------------------------
    def _take_training_fields(self, episode: int) -> dict:
        """A CSV row's fields about training at the eval point ``episode``; the training
        returns since the last eval point are handed over (and cleared)."""
        recent, self.train_returns = self.train_returns, []
        return {
            "env": self.cfg.env, "algo": self.cfg.algo, "prior": self.cfg.prior_label,
            "k": self.cfg.k, "seed": self.cfg.seed, "episode": episode,
            "env_steps": self.env_steps,
            "train_return": sum(r for r, _ in recent) / len(recent) if recent else "",
            "train_success": sum(s for _, s in recent) / len(recent) if recent else "",
            "grad_steps": self.agent.grad_steps,
            "loss": "" if self.last_loss is None else self.last_loss,
            "prior_optimal_rate": (self.optimal_hits / self.optimal_seen
                                   if self.optimal_seen else ""),
        }

    def _record(self, episode: int, eval_return: float, eval_success: float,
                start: dict | None = None) -> dict:
        """Append a CSV row: the training fields ``start`` (default: as they are now), the
        eval's result, and the cost counters as they are now."""
        p, e = self.prior.stats, self.encoder.stats
        row = dict(start) if start is not None else self._take_training_fields(episode)
        row.update({
            "eval_return": eval_return, "eval_success": eval_success,
            "llm_calls": p.model_queries, "llm_cache_hits": p.cache_hits,
            "wall_s": round(self.wall_before + time.perf_counter() - self.started, 3),
            "llm_queries": p.queries, "llm_tokens": p.tokens, "llm_unmatched": p.unmatched,
            "prior_seconds": round(p.seconds, 3), "encoder_texts": e.texts,
            "encoder_hits": e.hits, "encoder_seconds": round(e.seconds, 3),
            "update_seconds": round(self.update_seconds, 3),
        })
        row.update(self.extra_row())
        self.store.append_row(row, self.csv_columns)
        return row

    def extra_row(self) -> dict:
        """A subclass's own columns of a CSV row (``csv_columns``)."""
        return {}

    # -- the loop -------------------------------------------------------------------------
    def run(self) -> Path:
        """Run (or resume, or skip if complete); returns the CSV's path."""
        try:
            return self._run()
        finally:
            self.store.release()
            if self.env_workers is not None:
                self.env_workers.close()

    def _run(self) -> Path:
        """The loop; returns the CSV's path."""
        raise NotImplementedError
