"""The online value-based loop (``dqn``, ``dqn-prior``, ``llm``; ``gflan`` steps on it too).

Per batch step: the prior proposes C(s) for each env's state, the Q-function scores the
candidates, each env plays one (``agent.exploration``), and the previous transition of each env
is completed with C(s') and stored; when an episode ends, every ``train_every`` episodes from
``train_start`` on, a training phase of gradient steps; at each eval point, an evaluation.

Every batch step makes one prior call, one encoder call and one Q forward for the
``num_envs`` environments that step in it (all of them, unless some run ahead; below).
The run's files (CSV, config, checkpoints) are kept by ``training/store.py``. Checkpoints are
written at every evaluation point and every ``checkpoint_minutes`` between them; a killed run
started again with the same command resumes from the latest.

Evaluations (``training/evaluator.py``) overlap training by default (``eval_overlap``): the eval
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
import hashlib
import math
import time
from collections import deque
from pathlib import Path
from typing import Callable

from .agents.dqn import BufferBalance, update_threads
from .config import RunConfig
from .envs.base import history_line
from .priors import PriorQuery
from .priors.draws import TRAIN_STREAM
from .seeding import stable_seed
from .training import run_ahead_step
from .training.env_workers import step_envs
from .training.evaluator import Evaluation
from .training.loop import CSV_COLUMNS, Loop
from .training.steps import Decision, Pending, Slot, StepState

__all__ = ["CSV_COLUMNS", "Runner"]


class Runner(Loop):
    """The online loop (module docstring)."""

    #: whether evaluations may step beside training (``eval_overlap``); needs ``_batch_step`` to
    #: carry the eval's states, and an agent cheap to copy
    can_overlap_eval = True
    #: whether envs may run ahead of one another (``run_ahead``); needs this ``_batch_step``
    can_run_ahead = True
    #: ``run_ahead``: how many asked prompts a run remembers (16-byte digests, ~100 bytes each)
    ASKED_PROMPTS_MAX = 1_000_000

    def __init__(self, cfg: RunConfig, progress: Callable[[int, int, str], None] | None = None,
                 overwrite: bool = False, log: Callable[[str], None] = print) -> None:
        super().__init__(cfg, progress, overwrite, log)
        # the paper's ALFWorld rule for which episodes enter the replay buffer (or None)
        self.balance = (BufferBalance(baseline=cfg.prior == "uniform")
                        if getattr(cfg.agent, "buffer_balance", "off") == "paper" else None)
        self.asked_prompts: dict[bytes, None] = {}  # run_ahead: digests of the prompts asked
        self.ahead_steps = 0  # batch steps in which only the envs asked about before stepped
        self.max_waited = 0  # the most batch steps an env waited for the model
        self.episodes_done = self.episodes_started = 0
        self.next_train = cfg.agent.train_every  # the episode count of the next training phase
        self.in_eval: Evaluation | None = None  # the evaluation under way
        #: env steps of a batch step not taken yet: (slot, decision, index of the action,
        #: the env's step result, the decision on its truncated episode's last state)
        self.stepped: list[tuple] = []
        self.last_checkpoint = self.started

    # -- the loop -------------------------------------------------------------------------
    def _run(self) -> Path:
        """Set up (or resume), then batch steps until ``episodes``, with an evaluation at every
        eval point and checkpoints between them."""
        cfg = self.cfg
        state = self.store.open()
        if state is not None and state["finished"] and state["episodes_done"] >= cfg.episodes:
            self.log(f"already complete: {self.csv_path} (pass --overwrite to run it again)")
            return self.csv_path
        self.build()
        self.check_expert()
        self.store.start()
        self.started = self.last_checkpoint = time.perf_counter()
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

    def _batch_step(self) -> None:
        """One batch step (module docstring); returns early at an eval point."""
        if self.stepped:  # steps an eval point left waiting
            self._take_steps()
            return
        cfg = self.cfg
        slots = self.slots
        ev = self.in_eval  # an evaluation overlapping training: its states join the batch
        if self.runs_ahead:
            slots, eval_joins = self._run_ahead()
            ev = ev if eval_joins else None
        states = [self.state_of(s, counted=True) for s in slots]
        boot = [s for s in slots if s.bootstrap is not None]
        states += [s.bootstrap for s in boot]
        eval_states = ev.states if ev is not None else []
        decisions = self.decide(
            states + eval_states,
            [self.agent] * len(states) + [ev.agent] * len(eval_states) if ev is not None else None,
            [TRAIN_STREAM] * len(states) + [ev.stream] * len(eval_states)
            if ev is not None else None)
        if ev is not None:
            self._advance_evaluation(decisions[len(states):])
            decisions = decisions[: len(states)]
        boot_decisions = dict(zip(map(id, boot), decisions[len(slots):]))
        # every env's action first, then all envs step at once (in workers under
        # num_env_workers), then each step is taken in turn
        chosen = [self.choose(d, cfg.agent.exploration, self.rng) for d in decisions[: len(slots)]]
        results = self._act_all(slots, [d.candidates[i] for d, i in zip(decisions, chosen)])
        self.stepped = [(slot, d, i, result, boot_decisions.get(id(slot)))
                        for slot, d, i, result in zip(slots, decisions, chosen, results)]
        self._take_steps()

    def _take_steps(self) -> None:
        """Take the batch's env steps in turn: complete each env's last transition, store this
        one, end episodes, train. At an eval point the rest wait in ``stepped`` for the next
        batch step, so that evaluations happen at exactly their episode counts."""
        cfg = self.cfg
        while self.stepped:
            slot, d, index, (obs, reward, terminated, truncated, info), boot = self.stepped.pop(0)
            if slot.pending is not None:  # complete the previous transition with C(s')
                pending = slot.pending
                nxt = boot if slot.bootstrap is not None else d
                self._store(slot, pending.features, pending.reward, pending.done, nxt.features)
                slot.pending, slot.bootstrap = None, None
            self._count_optimal(d)
            features = d.features[index] if self.learns else None
            if terminated:
                self._store(slot, features, reward, True, None)
            else:
                slot.pending = Pending(features, reward, False)
                if truncated:
                    slot.bootstrap = StepState(obs, deque(slot.history, maxlen=slot.history.maxlen),
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

    def _act(self, slot: Slot, action: str):
        """Step ``slot``'s env with ``action``, keeping its episode counters and history."""
        return self._act_all([slot], [action])[0]

    def _act_all(self, slots: list[Slot], actions: list[str]) -> list[tuple]:
        """Step each slot's env with its action (at once, under ``num_env_workers``), keeping
        the episode counters and histories; the envs' ``step`` results."""
        results = step_envs([slot.env for slot in slots], actions)
        for slot, action, (_, reward, *_) in zip(slots, actions, results):
            self.env_steps += 1
            slot.episode_len += 1
            slot.episode_return += reward
            slot.history.append(history_line(slot.obs["text"], action))
        return results

    def _new_episode(self, slot: Slot) -> None:
        n = self.episodes_started
        slot.reset(stable_seed(self.cfg.seed, "train-episode", n) % 2**31,
                   slot.env.episode_options("train", n, self.cfg.seed))
        self.episodes_started += 1

    # -- the replay buffer and training ---------------------------------------------------
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

    # -- evaluations beside training (eval_overlap) ---------------------------------------
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
        agent = self.agent
        if overlap:
            agent = copy.deepcopy(self.agent)
            if agent_state is not None:
                agent.load_state_dict(agent_state)
        self.in_eval = self.evaluator.begin(episode, start, agent, overlap)

    def _advance_evaluation(self, decisions: list[Decision]) -> None:
        """Hand the evaluation its decisions; when its episodes have ended, write its row
        (and, for one that ran alone, checkpoint: an overlapped one's checkpoint was taken at
        its start, and a resume from there plays it again)."""
        ev = self.in_eval
        result = self.evaluator.advance(ev, decisions)
        if result is None:
            return
        ret, success = result
        self.in_eval = None
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
                [ev.stream] * len(ev.states)))

    # -- envs running ahead (run_ahead) ---------------------------------------------------
    @property
    def runs_ahead(self) -> bool:
        """Whether envs run ahead of one another (module docstring)."""
        return (self.can_run_ahead and self.cfg.run_ahead > 0 and len(self.slots) > 1
                and self.prior.has_model)

    def asking(self, queries: list[PriorQuery]) -> None:
        if self.runs_ahead:
            self._remember_asked(queries)

    @staticmethod
    def _digest(query: PriorQuery) -> bytes:
        return hashlib.blake2b(query.prompt.encode(), digest_size=16).digest()

    def asked(self, states: list[StepState]) -> bool:
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

    def _slot_states(self, slot: Slot) -> list[StepState]:
        """The states a slot's next step asks the prior about: its own, and the end state of
        its truncated episode, if any."""
        states = [StepState(slot.obs, slot.history, (), self.context(slot.env))]
        if slot.bootstrap is not None:
            states.append(slot.bootstrap)
        return states

    def _run_ahead(self) -> tuple[list[Slot], bool]:
        """``run_ahead``: the envs that step in this batch step, and whether the evaluation
        under way steps too. When some envs' prompts have been asked before and others' have
        not, only the first step (and the evaluation, if all its prompts have been): their
        proposals come from the cache, so the others wait for a later model call that gathers
        more prompts. An env waits at most ``run_ahead`` batch steps; then all step together."""
        ready, waited, ahead = run_ahead_step([self.asked(self._slot_states(s)) for s in self.slots],
                                              [s.waited for s in self.slots], self.cfg.run_ahead)
        self.ahead_steps += ahead
        for slot, w in zip(self.slots, waited):
            slot.waited = w
        self.max_waited = max(self.max_waited, *waited)
        stepping = [s for s, r in zip(self.slots, ready) if r]
        ev = self.in_eval
        return stepping, len(stepping) == len(self.slots) or ev is None or self.asked(ev.states)

    # -- checkpoints ----------------------------------------------------------------------
    def _save_checkpoint(self, finished: bool) -> None:
        slots = [
            {"reset_seed": s.reset_seed, "options": s.options,
             "pending": None if s.pending is None else (s.pending.features, s.pending.reward,
                                                        s.pending.done),
             "bootstrap": None if s.bootstrap is None else s.bootstrap.as_saved(), "ended": s.ended, "at_start": s.episode_len == 0,
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
        self.store.save_checkpoint(state)
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
        self.store.restore_rows(state)  # the rows it covers, checked against the CSV
        for slot, saved in zip(self.slots, state["slots"]):
            if saved["at_start"]:  # an episode boundary: restore exactly
                slot.reset(saved["reset_seed"], saved.get("options"))
                if saved["pending"] is not None:
                    slot.pending = Pending(*saved["pending"])
                boot = saved["bootstrap"]
                if boot is not None:  # (obs, history, optimal[, context: older checkpoints lack it])
                    slot.bootstrap = StepState(*boot[:3], boot[3] if len(boot) > 3
                                               else self.context(slot.env))
                slot.ended = saved.get("ended")
                slot.waited = saved.get("waited", 0)
            else:  # mid-episode: that partial episode is lost; start a new one
                self._new_episode(slot)
        saved_eval = state.get("evaluation")
        if saved_eval is not None:
            self._start_evaluation(True, saved_eval["start"], saved_eval["agent"])
