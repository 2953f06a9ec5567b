"""One run = env x algo x prior x seed: the shared online training loop, CSV and checkpoints.

Every batch step makes one prior call, one encoder call and one Q forward for the
``num_envs`` environments that step in it (all of them, unless some run ahead; below).
Layout: ``<out>/<experiment>/<env>/<algo>/seed_<n>.csv``,
with ``seed_<n>.yaml`` (resolved config) and ``seed_<n>.ckpt.pt`` (latest checkpoint) beside it.
Checkpoints are written at every evaluation point and every ``checkpoint_minutes`` between
them; a killed run started again with the same command resumes from the latest.

Evaluations (``Runner.evaluation``) overlap training by default (``eval_overlap``): the eval
episodes play a frozen copy of the Q-function taken at their eval point, and their states join
the training batch's prior, encoder and Q calls until they end. Proposals are a pure function of
the prompt and seed and training never reads the eval's random stream, so a run learns and
scores as it does with ``eval_overlap: false`` (the paper's pattern: training waits for each
evaluation, which then runs alone), up to the float rounding of an LLM prior's logits in a
different batch; the last evaluation always runs alone. A row's training
fields (episode, env_steps, train_return, grad_steps, loss, ...) are those of its eval point;
its cost counters (llm_*, encoder_*, *_seconds, wall_s) are those at the time it is written,
when its evaluation has ended.

With an LLM prior and several envs, envs run ahead of one another (``run_ahead``, ours): an env
whose prompt this run has not asked about yet waits, up to ``run_ahead`` batch steps, while the
envs whose prompts were asked before step on from the proposal cache, so one model call gathers
the new prompts of more envs. Which envs wait depends only on the run's own history (not on a
persistent cache's contents), so a seed gives the same run every time. ``run_ahead: 0`` steps
all envs in lockstep, one prior call per batch step, as before; with one env the two are alike.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import fcntl
import hashlib
import math
import os
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Generator

import torch
import yaml

from .agents.dqn import BufferBalance, DQNAgent, choose, update_threads
from .algos import algorithm
from .config import (AGENT_VALUES_BEFORE_ADDED, VALUES_BEFORE_ADDED, RunConfig, dump_yaml,
                     identity_of)
from .devices import resolve_device
from .encoders import TextEncoder
from .envs import TextEnv, make
from .errors import UserError
from .priors import ActionPrior, PriorQuery, make_prior
from .priors.draws import TRAIN_STREAM, VisitCounter, eval_stream
from .priors.prompts import build_query, history_line
from .data.replay import ReplayBuffer
from .seeding import seed_everything, stable_seed

CSV_COLUMNS = [
    "env", "algo", "prior", "k", "seed", "episode", "env_steps", "eval_return", "eval_success",
    "train_return", "llm_calls", "llm_cache_hits", "wall_s",
    # extras
    "train_success", "grad_steps", "loss", "llm_queries", "llm_tokens", "llm_unmatched",
    "prior_seconds", "encoder_texts", "encoder_hits", "encoder_seconds", "update_seconds",
    "prior_optimal_rate",
]


@dataclass
class Slot:
    """One environment of the batch and its episode in progress."""

    env: TextEnv
    history_length: int = 3  # observation/action lines the prompt keeps
    obs: dict = field(default_factory=dict)
    history: deque = field(default_factory=deque)
    episode_return: float = 0.0
    episode_len: int = 0
    reset_seed: int = 0
    pending: tuple | None = None  # (features, reward, done) awaiting next-state candidates
    bootstrap: tuple | None = None  # (obs, history, optimal, context) of a truncated episode's end
    waited: int = 0  # batch steps this env has waited for the model while others stepped
    options: dict | None = None  # the reset options of the episode under way
    #: buffer_balance: the episode's transitions, held until it ends and its admission is known
    transitions: list = field(default_factory=list)
    #: buffer_balance: a truncated episode's transitions and success, held until its last
    #: transition is completed by the bootstrap state's candidates
    ended: tuple[list, bool] | None = None

    def __post_init__(self) -> None:
        self.history = deque(maxlen=self.history_length)

    def reset(self, seed: int, options: dict | None = None) -> None:
        self.obs, _ = self.env.reset(seed=seed, options=options)
        self.history.clear()
        self.transitions.clear()
        self.episode_return, self.episode_len = 0.0, 0
        self.reset_seed, self.options = seed, options


@dataclass
class Decision:
    candidates: list[str]
    features: torch.Tensor
    q: torch.Tensor
    optimal_hit: bool | None


@dataclass
class Evaluation:
    """An evaluation under way: ``steps`` (``Runner.evaluation``) yields its episodes' states
    (``states``, awaiting decisions) and returns the mean return and success; ``start`` holds
    the CSV row's training fields at its eval point ``episode``; ``agent`` is the Q-function it
    plays -- a frozen copy when it overlaps training (``overlapped``), else the run's agent."""

    episode: int
    start: dict
    agent: object
    overlapped: bool
    steps: Generator
    states: list = field(default_factory=list)


class Runner:
    """Builds the pieces of a run and executes the loop (``run()``)."""

    #: the CSV's columns; a subclass may add its own after these (see ``extra_row``)
    csv_columns = CSV_COLUMNS
    #: whether evaluations may step beside training (``eval_overlap``); needs ``_batch_step`` to
    #: carry the eval's states, and an agent cheap to copy
    can_overlap_eval = True
    #: whether envs may run ahead of one another (``run_ahead``); needs this ``_batch_step``
    can_run_ahead = True
    #: ``run_ahead``: how many asked prompts a run remembers (16-byte digests, ~100 bytes each)
    ASKED_PROMPTS_MAX = 1_000_000

    def __init__(self, cfg: RunConfig, progress: Callable[[int, int, str], None] | None = None,
                 overwrite: bool = False, log: Callable[[str], None] = print) -> None:
        self.cfg = cfg
        self.progress = progress or (lambda done, total, msg: None)
        self.overwrite = overwrite
        self.log = log
        self.device = resolve_device(cfg.device)
        self.csv_path = cfg.stem.with_suffix(".csv")
        self.yaml_path = cfg.stem.with_suffix(".yaml")
        self.ckpt_path = cfg.stem.parent / f"{cfg.stem.name}.ckpt.pt"
        self.visits = VisitCounter(cfg.prior_draws)  # fresh draws: each prompt's visits so far
        # the paper's ALFWorld rule for which episodes enter the replay buffer (or None)
        self.balance = (BufferBalance(baseline=cfg.prior == "uniform")
                        if getattr(cfg.agent, "buffer_balance", "off") == "paper" else None)
        self.asked_prompts: dict[bytes, None] = {}  # run_ahead: digests of the prompts asked
        self.ahead_steps = 0  # batch steps in which only the envs asked about before stepped
        self.max_waited = 0  # the most batch steps an env waited for the model

    # -- set-up -----------------------------------------------------------------------------
    def _lock(self) -> None:
        """Hold an exclusive lock on this run's files for the life of the process, so that two
        processes (two sweeps over one results folder, say) never write one run at once."""
        self.cfg.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.cfg.stem.parent / f".{self.cfg.stem.name}.lock"
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "?"
            handle.close()
            raise UserError(f"{self.csv_path} is being run by another process (pid {owner}); "
                            "wait for it to end, or use another --experiment or --out") from None
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._lock_handle = handle

    def _check_existing(self) -> dict | None:
        """Return a checkpoint to resume from, None to start fresh, or raise on a conflict.

        Takes the run's lock first (``_lock``)."""
        self._lock()
        if not self.csv_path.exists() and not self.ckpt_path.exists():
            return None
        if self.overwrite:
            for path in (self.csv_path, self.yaml_path, self.ckpt_path):
                path.unlink(missing_ok=True)
            return None
        old = yaml.safe_load(self.yaml_path.read_text()) if self.yaml_path.exists() else None
        if old is not None:
            old_cfg = identity_of(old)
            new_cfg = self.cfg.identity()
            # settings added to llmrl after those results were written count as their default,
            # or as the value they had in effect then (VALUES_BEFORE_ADDED)
            defaults = RunConfig().to_dict()
            for key in set(new_cfg) - set(old_cfg):
                old_cfg[key] = VALUES_BEFORE_ADDED.get(key, defaults.get(key))
            agent_defaults = {"agent": dataclasses.asdict(type(self.cfg.agent)())}
            for key, value in identity_of(agent_defaults)["agent"].items():
                old_cfg.get("agent", {}).setdefault(key, AGENT_VALUES_BEFORE_ADDED.get(key, value))
            if old_cfg != new_cfg:
                diff = sorted(k for k in set(old_cfg) | set(new_cfg)
                              if old_cfg.get(k) != new_cfg.get(k))
                raise UserError(
                    f"{self.csv_path} was written by a different configuration (differs in: "
                    f"{', '.join(diff)}); pass --overwrite to replace it, or use another "
                    "--experiment or --out"
                )
        if not self.ckpt_path.exists():
            raise UserError(f"{self.csv_path} exists without a checkpoint to resume from; pass "
                            "--overwrite to replace it, or use another --experiment or --out")
        return torch.load(self.ckpt_path, map_location="cpu", weights_only=False)

    def _build(self) -> None:
        cfg = self.cfg
        seed_everything(cfg.seed)
        self.encoder = TextEncoder(cfg.encoder, device=self.device, pooling=cfg.pooling,
                                   cache_size=cfg.encoder_cache_size)
        self.prior: ActionPrior = make_prior(cfg, str(self.device))
        self.agent = DQNAgent(self.encoder.dim, cfg.agent, self.device)
        self.replay = ReplayBuffer(cfg.agent.buffer_size, self.encoder.dim)
        self.rng = torch.Generator().manual_seed(cfg.seed)
        self.slots = [Slot(make(cfg.env, **cfg.env_kwargs), cfg.history_length)
                      for _ in range(cfg.num_envs)]
        n_eval = min(cfg.agent.eval_episodes, 64)  # eval episodes step together as one batch
        self.eval_slots = [Slot(make(cfg.env, **cfg.env_kwargs), cfg.history_length)
                           for _ in range(n_eval)]


    # -- one batch step: one prior call, one encoder call, one Q forward ------------------------
    def optimal(self, env: TextEnv) -> tuple[str, ...]:
        """The expert's optimal actions in env's current state, when the run needs them."""
        return tuple(env.optimal_actions()) if self.track_optimal else ()

    @staticmethod
    def context(env: TextEnv) -> tuple[str, str | None]:
        """The episode's (instruction, task named in the Q input); envs like ALFWorld change
        them at every reset, so they travel with each state."""
        return env.instruction, env.feature_task

    def query(self, state: tuple) -> PriorQuery:
        """The prior query of a state (obs, history, optimal actions, context, ...)."""
        obs, hist, optimal, ctx = state[:4]
        return build_query(self.cfg.env, ctx[0], obs["text"], obs["actions"], list(hist), optimal)

    @staticmethod
    def _digest(query: PriorQuery) -> bytes:
        return hashlib.blake2b(query.prompt.encode(), digest_size=16).digest()

    def asked(self, states: list[tuple]) -> bool:
        """Whether this run has asked the prior about every one of ``states`` already."""
        return all(self._digest(self.query(s)) in self.asked_prompts for s in states)

    def _remember_asked(self, queries: list[PriorQuery]) -> None:
        """Note the prompts asked (``run_ahead``): the most recent ``ASKED_PROMPTS_MAX``."""
        for query in queries:
            digest = self._digest(query)
            self.asked_prompts.pop(digest, None)
            self.asked_prompts[digest] = None
        while len(self.asked_prompts) > self.ASKED_PROMPTS_MAX:
            del self.asked_prompts[next(iter(self.asked_prompts))]

    @property
    def learns(self) -> bool:
        """Whether this run trains a Q-function (``llm`` acts by the prior alone)."""
        return algorithm(self.cfg.algo).learns

    def propose(self, queries: list[PriorQuery], streams: list[str]) -> list[list[str]]:
        """The prior's proposals for ``queries``, each numbered as a visit of its stream
        (``priors/draws.py``: fresh draws per visit, or the memoised first ones)."""
        return self.prior.propose(self.visits.number(queries, streams), self.cfg.k)

    def decide(self, states: list[tuple[dict, deque, tuple[str, ...], tuple, bool]],
               agents: list | None = None, streams: list[str] | None = None) -> list[Decision]:
        """Candidates, their features and Q-values for a batch of states, each given as
        (obs, history, optimal actions, context, whether to count if an optimal action was
        proposed). ``agents``: the agent scoring each state (default: the run's); ``streams``:
        the visit stream of each state (default: training's). Without learning (``llm``) the
        "Q-values" are how often each candidate was proposed."""
        queries = [self.query(state) for state in states]
        if self.runs_ahead:
            self._remember_asked(queries)
        proposals = self.propose(queries, streams or [TRAIN_STREAM] * len(queries))
        # per state, whether its candidates held an optimal action (counted states only)
        hits = [any(a in optimal for a in cands) if count and self.track_optimal else None
                for (_, _, optimal, _, count), cands in zip(states, proposals)]
        if not self.learns:
            return [Decision(cands, torch.empty(0),
                             torch.tensor([float(cands.count(a)) for a in cands]), hit)
                    for cands, hit in zip(proposals, hits)]
        q_input = self.slots[0].env.q_input
        texts = [q_input(state[0]["text"], a, state[3][1])
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

    # -- evaluation --------------------------------------------------------------------------
    def evaluation(self, episode: int) -> Generator[list, list[Decision], tuple[float, float]]:
        """The evaluation at ``episode``, step by step: yields the states of its episodes still
        running, is sent their decisions, and returns the mean return and success. Its random
        stream and env seeds depend on the run's seed and ``episode`` only."""
        cfg, agent_cfg = self.cfg, self.cfg.agent
        rng = torch.Generator().manual_seed(stable_seed(cfg.seed, "eval", episode))
        returns, successes = [], []
        for start in range(0, agent_cfg.eval_episodes, len(self.eval_slots)):
            live = self.eval_slots[: min(len(self.eval_slots), agent_cfg.eval_episodes - start)]
            for i, slot in enumerate(live):
                slot.reset(stable_seed(cfg.seed, "eval-episode", start + i) % 2**31,
                           slot.env.episode_options("eval", start + i, cfg.seed))
            running = list(live)
            finished: dict[int, tuple[float, bool]] = {}
            while running:
                decisions = yield [(s.obs, s.history, self.optimal(s.env), self.context(s.env),
                                    False) for s in running]
                still = []
                for slot, d in zip(running, decisions):
                    action = d.candidates[self.choose(d, agent_cfg.eval_policy, rng)]
                    obs, reward, terminated, truncated, info = slot.env.step(action)
                    slot.history.append(history_line(slot.obs["text"], action))
                    slot.obs = obs
                    slot.episode_return += reward
                    if terminated or truncated:
                        finished[id(slot)] = (slot.episode_return, bool(info.get("success")))
                    else:
                        still.append(slot)
                running = still
            for slot in live:
                ret, success = finished[id(slot)]
                returns.append(ret)
                successes.append(float(success))
        return sum(returns) / len(returns), sum(successes) / len(successes)

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
        stream = eval_stream(episode)
        self.visits.forget(stream)
        steps = self.evaluation(episode)
        states = next(steps)
        while True:
            try:
                states = steps.send(self.decide(states, streams=[stream] * len(states)))
            except StopIteration as end:
                self.visits.forget(stream)
                return end.value

    @property
    def runs_ahead(self) -> bool:
        return (self.can_run_ahead and self.cfg.run_ahead > 0 and len(self.slots) > 1
                and self.prior.has_model)

    @property
    def overlaps_eval(self) -> bool:
        return bool(self.cfg.eval_overlap) and self.can_overlap_eval

    def _start_evaluation(self, overlap: bool, start: dict | None = None,
                          agent_state: dict | None = None) -> None:
        """Begin the evaluation at this eval point (or, on resume, the one a checkpoint held:
        its ``start`` fields and frozen ``agent_state``)."""
        episode = self.episodes_done if start is None else start["episode"]
        if start is None:
            start = self._take_training_fields(episode)
            self.next_eval = episode + self.cfg.agent.eval_every
        self.visits.forget(eval_stream(episode))  # a resumed evaluation draws as it did
        agent = self.agent
        if overlap:
            agent = copy.deepcopy(self.agent)
            if agent_state is not None:
                agent.load_state_dict(agent_state)
        ev = Evaluation(episode, start, agent, overlap, self.evaluation(episode))
        ev.states = next(ev.steps)
        self.in_eval = ev

    def _advance_evaluation(self, decisions: list[Decision]) -> None:
        """Hand the evaluation its decisions; when its episodes have ended, write its row
        (and, for one that ran alone, checkpoint: an overlapped one's checkpoint was taken at
        its start, and a resume from there plays it again)."""
        ev = self.in_eval
        try:
            ev.states = ev.steps.send(decisions)
            return
        except StopIteration as end:
            ret, success = end.value
        self.in_eval = None
        self.visits.forget(eval_stream(ev.episode))
        self._record(ev.episode, ret, success, ev.start)
        self.csv_rows += 1
        if not ev.overlapped:
            self._save_checkpoint(ev.episode >= self.cfg.episodes)
        self.progress(self.episodes_done, self.cfg.episodes,
                      f"eval return {ret:.3f} success {success:.2f}")

    def _finish_evaluation_alone(self) -> None:
        """Step the evaluation under way, with nothing beside it, to its end."""
        while self.in_eval is not None:
            ev = self.in_eval
            self._advance_evaluation(self.decide(
                ev.states, [ev.agent] * len(ev.states) if ev.overlapped else None,
                [eval_stream(ev.episode)] * len(ev.states)))

    # -- training ----------------------------------------------------------------------------
    def train_phase(self) -> float | None:
        cfg = self.cfg.agent
        if not self.learns or len(self.replay) <= cfg.batch_size:
            return None
        started = time.perf_counter()
        self.agent.fit_normaliser(self.replay.features[: len(self.replay)])
        steps = (math.ceil(cfg.train_passes * len(self.replay) / cfg.batch_size)
                 if cfg.train_passes > 0 else cfg.train_iters)
        with update_threads():
            losses = [self.agent.update(self.replay.sample(cfg.batch_size, self.rng, self.device))
                      for _ in range(steps)]
        self.update_seconds += time.perf_counter() - started
        return sum(losses) / len(losses)

    def _new_episode(self, slot: Slot) -> None:
        n = self.episodes_started
        slot.reset(stable_seed(self.cfg.seed, "train-episode", n) % 2**31,
                   slot.env.episode_options("train", n, self.cfg.seed))
        self.episodes_started += 1

    def _store(self, slot: Slot, features, reward: float, done: bool, next_features) -> None:
        """A transition for the replay buffer: added now, or under ``buffer_balance`` held
        with its episode until the episode's admission is known (``_admit``)."""
        if not self.learns:
            return
        if self.balance is None:
            self.replay.add(features, reward, done, next_features)
            return
        transition = (features, reward, done, next_features)
        if slot.ended is not None:  # the last transition of a truncated episode
            transitions, success = slot.ended
            slot.ended = None
            self._admit(transitions + [transition], success)
        else:
            slot.transitions.append(transition)

    def _episode_ended(self, slot: Slot, success: bool) -> None:
        """``buffer_balance``: admit the finished episode, or hold a truncated one until its
        last transition is completed (``_store``)."""
        if self.balance is None or not self.learns:
            return
        if slot.bootstrap is not None:
            slot.ended = (list(slot.transitions), success)
        else:
            self._admit(slot.transitions, success)
        slot.transitions = []

    def _admit(self, transitions: list, success: bool) -> None:
        """Add an episode's transitions as many times as the paper's ALFWorld rule says
        (BufferBalance)."""
        for _ in range(self.balance.copies(success)):
            for transition in transitions:
                self.replay.add(*transition)

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
        new_file = not self.csv_path.exists()
        with self.csv_path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.csv_columns)
            if new_file:
                writer.writeheader()
            writer.writerow(row)
        return row

    def extra_row(self) -> dict:
        """A subclass's own columns of a CSV row (``csv_columns``)."""
        return {}

    def _save_checkpoint(self, finished: bool) -> None:
        slots = [
            {"reset_seed": s.reset_seed, "options": s.options, "pending": s.pending,
             "bootstrap": s.bootstrap, "ended": s.ended, "at_start": s.episode_len == 0,
             "waited": s.waited}
            for s in self.slots
        ]
        state = {
            "agent": self.agent.state_dict(), "replay": self.replay.state_dict(),
            "rng": self.rng.get_state(), "episodes_done": self.episodes_done,
            "episodes_started": self.episodes_started, "env_steps": self.env_steps,
            "next_eval": self.next_eval, "next_train": self.next_train,
            "train_returns": self.train_returns, "last_loss": self.last_loss,
            "wall_s": self.wall_before + time.perf_counter() - self.started,
            "update_seconds": self.update_seconds, "prior_stats": self.prior.stats,
            "encoder_stats": self.encoder.stats, "optimal": (self.optimal_hits, self.optimal_seen),
            "slots": slots, "finished": finished, "csv_rows": self.csv_rows,
            "evaluation": None, "asked_prompts": list(self.asked_prompts),
            "ahead": (self.ahead_steps, self.max_waited), "visits": self.visits.state_dict(),
            "balance": None if self.balance is None else self.balance.state_dict(),
        }
        ev = self.in_eval
        if ev is not None and ev.overlapped:  # a resume plays it again, from its start
            state["evaluation"] = {"start": ev.start, "agent": ev.agent.state_dict()}
        tmp = self.ckpt_path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.ckpt_path)
        self.last_checkpoint = time.perf_counter()

    def _checkpoint_due(self) -> bool:
        """Whether ``checkpoint_minutes`` have passed since the last checkpoint (slow runs, such as
        ALFWorld with a local prior, then lose at most that much work to a kill)."""
        minutes = self.cfg.checkpoint_minutes
        return minutes > 0 and time.perf_counter() - self.last_checkpoint >= 60 * minutes

    def _restore(self, state: dict) -> None:
        self.agent.load_state_dict(state["agent"])
        self.replay.load_state_dict(state["replay"])
        self.rng.set_state(state["rng"])
        for key in ("episodes_done", "episodes_started", "env_steps", "next_eval", "next_train",
                    "train_returns", "last_loss", "update_seconds", "csv_rows"):
            setattr(self, key, state[key])
        self.wall_before = state["wall_s"]
        self.prior.stats.__dict__.update(state["prior_stats"].__dict__)
        self.encoder.stats.__dict__.update(state["encoder_stats"].__dict__)
        self.optimal_hits, self.optimal_seen = state["optimal"]
        self.asked_prompts = dict.fromkeys(state.get("asked_prompts", ()))
        self.ahead_steps, self.max_waited = state.get("ahead", (0, 0))
        if state.get("visits") is not None:
            self.visits.load_state_dict(state["visits"])
        if self.balance is not None and state.get("balance") is not None:
            self.balance.load_state_dict(state["balance"])
        # drop CSV rows written after the checkpoint (a kill between CSV write and checkpoint)
        if self.csv_path.exists():
            lines = self.csv_path.read_text().splitlines(keepends=True)
            self.csv_path.write_text("".join(lines[: 1 + self.csv_rows]))
        for slot, saved in zip(self.slots, state["slots"]):
            if saved["at_start"]:  # an episode boundary: restore exactly
                slot.reset(saved["reset_seed"], saved.get("options"))
                slot.pending, slot.bootstrap = saved["pending"], saved["bootstrap"]
                slot.ended = saved.get("ended")
                slot.waited = saved.get("waited", 0)
                if slot.bootstrap is not None and len(slot.bootstrap) == 3:  # older checkpoint
                    slot.bootstrap = (*slot.bootstrap, self.context(slot.env))
            else:  # mid-episode: that partial episode is lost; start a new one
                self._new_episode(slot)
        saved_eval = state.get("evaluation")
        if saved_eval is not None:
            self._start_evaluation(True, saved_eval["start"], saved_eval["agent"])

    def check_expert(self) -> None:
        """Track whether proposals hold an optimal action when the env has an expert; refuse
        a prior that needs one (expert-mix) on an env without."""
        self.track_optimal = True
        try:
            self.slots[0].env.optimal_actions()
        except NotImplementedError:
            self.track_optimal = False
            if self.prior.uses_expert:
                raise UserError(f"--prior {self.cfg.prior} needs an env with an expert; "
                                f"{self.cfg.env} has none") from None

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> Path:
        """Run (or resume, or skip if complete); returns the CSV's path."""
        try:
            return self._run()
        finally:
            handle = getattr(self, "_lock_handle", None)
            if handle is not None:
                handle.close()  # releases the lock
                self._lock_handle = None

    def _run(self) -> Path:
        cfg = self.cfg
        state = self._check_existing()
        if state is not None and state["finished"] and state["episodes_done"] >= cfg.episodes:
            self.log(f"already complete: {self.csv_path} (pass --overwrite to run it again)")
            return self.csv_path
        self._build()
        self.check_expert()
        self.cfg.run_dir.mkdir(parents=True, exist_ok=True)
        self.yaml_path.write_text(dump_yaml(cfg))
        self.started = self.last_checkpoint = time.perf_counter()
        self.wall_before = 0.0
        self.episodes_done = self.episodes_started = self.env_steps = 0
        self.next_eval, self.next_train = 0, cfg.agent.train_every
        self.train_returns: list[tuple[float, bool]] = []
        self.last_loss: float | None = None
        self.update_seconds = 0.0
        self.optimal_hits = self.optimal_seen = 0
        self.csv_rows = 0
        self.in_eval: Evaluation | None = None
        self.asked_prompts, self.ahead_steps, self.max_waited = {}, 0, 0
        if state is not None:
            self._restore(state)
            self.log(f"resuming {self.csv_path} from episode {self.episodes_done}")
        else:
            for slot in self.slots:
                self._new_episode(slot)
        self.progress(self.episodes_done, cfg.episodes, "")
        while True:
            if self.episodes_done >= self.next_eval or self.episodes_done >= cfg.episodes:
                final = self.episodes_done >= cfg.episodes
                self._finish_evaluation_alone()  # the last one, if it has not ended yet
                overlap = self.overlaps_eval and not final
                self._start_evaluation(overlap)
                if overlap:
                    self._save_checkpoint(False)  # holds the evaluation, to replay on resume
                else:
                    self._finish_evaluation_alone()
                if final:
                    break
            self._batch_step()
            if self._checkpoint_due():  # between evals; episodes in progress restart on resume
                self._save_checkpoint(False)
        return self.csv_path

    def _count_optimal(self, decision: Decision) -> None:
        """Count whether a training state's candidates held an optimal action."""
        if decision.optimal_hit is not None:
            self.optimal_hits += decision.optimal_hit
            self.optimal_seen += 1

    def _slot_states(self, slot: Slot) -> list[tuple]:
        """The states a slot's next step asks the prior about: its own, and the end state of
        its truncated episode, if any."""
        states = [(slot.obs, slot.history, (), self.context(slot.env))]
        if slot.bootstrap is not None:
            states.append(slot.bootstrap)
        return states

    def _act(self, slot: Slot, action: str):
        """Step ``slot``'s env with ``action``, keeping its episode counters and history."""
        obs, reward, terminated, truncated, info = slot.env.step(action)
        self.env_steps += 1
        slot.episode_len += 1
        slot.episode_return += reward
        slot.history.append(history_line(slot.obs["text"], action))
        return obs, reward, terminated, truncated, info

    def _run_ahead(self) -> tuple[list[Slot], bool]:
        """``run_ahead``: the envs that step in this batch step, and whether the evaluation
        under way steps too. When some envs' prompts have been asked before and others' have
        not, only the first step (and the evaluation, if all its prompts have been): their
        proposals come from the cache, so the others wait for a later model call that gathers
        more prompts. An env waits at most ``run_ahead`` batch steps; then all step together."""
        ready = [self.asked(self._slot_states(s)) for s in self.slots]
        if all(ready) or not any(ready) or max(
                s.waited for s, r in zip(self.slots, ready) if not r) >= self.cfg.run_ahead:
            ready = [True] * len(self.slots)  # all step together
        else:
            self.ahead_steps += 1
        for slot, r in zip(self.slots, ready):
            slot.waited = 0 if r else slot.waited + 1
        self.max_waited = max(self.max_waited, *(s.waited for s in self.slots))
        stepping = [s for s, r in zip(self.slots, ready) if r]
        ev = self.in_eval
        return stepping, len(stepping) == len(self.slots) or ev is None or self.asked(ev.states)

    def _batch_step(self) -> None:
        cfg = self.cfg
        slots = self.slots
        ev = self.in_eval  # an evaluation overlapping training: its states join the batch
        if self.runs_ahead:
            slots, eval_joins = self._run_ahead()
            ev = ev if eval_joins else None
        states = [(s.obs, s.history, self.optimal(s.env), self.context(s.env), True)
                  for s in slots]
        boot = [s for s in slots if s.bootstrap is not None]
        states += [(*s.bootstrap, False) for s in boot]
        eval_states = ev.states if ev is not None else []
        decisions = self.decide(
            states + eval_states,
            [self.agent] * len(states) + [ev.agent] * len(eval_states) if ev is not None else None,
            [TRAIN_STREAM] * len(states)
            + [eval_stream(ev.episode)] * len(eval_states) if ev is not None else None)
        if ev is not None:
            self._advance_evaluation(decisions[len(states):])
            decisions = decisions[: len(states)]
        boot_decisions = dict(zip(map(id, boot), decisions[len(slots):]))
        for slot, d in zip(slots, decisions):
            if slot.pending is not None:  # complete the previous transition with C(s')
                feats, reward, done = slot.pending
                nxt = boot_decisions[id(slot)] if slot.bootstrap is not None else d
                self._store(slot, feats, reward, done, nxt.features)
                slot.pending, slot.bootstrap = None, None
            self._count_optimal(d)
            index = self.choose(d, cfg.agent.exploration, self.rng)
            obs, reward, terminated, truncated, info = self._act(slot, d.candidates[index])
            features = d.features[index] if self.learns else None
            if terminated:
                self._store(slot, features, reward, True, None)
            else:
                slot.pending = (features, reward, False)
                if truncated:
                    slot.bootstrap = (obs, deque(slot.history, maxlen=slot.history.maxlen),
                                      self.optimal(slot.env), self.context(slot.env))
            slot.obs = obs
            if terminated or truncated:
                self._episode_ended(slot, bool(info.get("success")))
                self.train_returns.append((slot.episode_return, bool(info.get("success"))))
                self.episodes_done += 1
                self._new_episode(slot)
                if (self.episodes_done >= self.next_train
                        and self.episodes_done >= cfg.agent.train_start):
                    loss = self.train_phase()
                    if loss is not None:
                        self.last_loss = loss
                    self.next_train = self.episodes_done + cfg.agent.train_every
                if self.episodes_done >= self.next_eval or self.episodes_done >= cfg.episodes:
                    return
        self.progress(self.episodes_done, cfg.episodes, "")
