"""Online policy runs (``gflan``, ``gflan-prior``): the LLM is the policy, trained with PPO.

The shared loop (``Runner.run``: evaluation points, CSV rows, checkpoints, resume) is reused;
what differs is a step: every batch step scores all admissible actions of all ``num_envs``
states with one prompt forward each (adapters on; ``agents/gflan.py``), samples an action from
pi, and stores the transition in the rollout buffer. ``gflan-prior`` also scores the actions
with the adapters off (the frozen prior p_LLM) and draws k prior samples per state for the KL
estimate. Every ``rollout_steps`` transitions -- and at the end of the run -- a PPO update
(``epochs`` passes over shuffled minibatches, GAE advantages) empties the buffer.

The checkpoint holds the LoRA weights, the value head, Adam's state and the rollout buffer.
CSV rows add the last update's ``policy_loss, value_loss, entropy, clip_frac, kl, kl_exact,
beta`` after the shared columns (``kl``: the k-sample estimate in the loss; ``kl_exact``: the
exact KL over the admissible actions, for reference).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import torch

from .agents.gflan import GFlanAgent, gae
from .encoders import EncoderStats
from .errors import UserError
from .priors import PriorQuery, make_prior
from .priors.local import LocalLLMPrior
from .runner import CSV_COLUMNS, Runner
from .training.steps import Decision, Slot, StepState
from .seeding import seed_everything

PPO_COLUMNS = ["policy_loss", "value_loss", "entropy", "clip_frac", "kl", "kl_exact", "beta"]


@dataclass
class PolicyDecision(Decision):
    prompt: str = ""
    value: float = 0.0
    prior_logp: torch.Tensor | None = None  # gflan-prior: log p_LLM over the actions
    samples: list[int] = field(default_factory=list)  # gflan-prior: k draws from p_LLM


@dataclass
class _NoEncoder:
    """GFlan reads text with the LLM itself; this keeps the shared CSV columns at zero."""

    stats: EncoderStats = field(default_factory=EncoderStats)


class Rollout:
    """Per env, the transitions since the last PPO update (the shared loop's ``replay``)."""

    def __init__(self, n: int) -> None:
        self.steps: list[list[dict]] = [[] for _ in range(n)]

    def __len__(self) -> int:
        return sum(map(len, self.steps))

    def state_dict(self) -> dict:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.steps = state["steps"]


class GFlanRunner(Runner):
    agent: GFlanAgent
    can_overlap_eval = False  # its policy is the LLM itself: evaluations run alone
    can_run_ahead = False  # its rollouts step all envs together

    def _build(self) -> None:
        cfg = self.cfg
        seed_everything(cfg.seed)
        self.prior = make_prior(cfg, str(self.device))
        if not isinstance(self.prior, LocalLLMPrior):
            raise UserError(f"--algo {cfg.algo} trains the LLM in-process: use --prior local")
        self.agent = GFlanAgent(self.prior, cfg.agent)
        self.kl_prior = None  # gflan-prior's p_LLM when not the policy's own base model
        if cfg.algo == "gflan-prior" and cfg.agent.kl_prior != "base":
            self.kl_prior = make_prior(kl_prior_config(cfg), str(self.device))
        self.encoder = _NoEncoder()
        self.replay = Rollout(cfg.num_envs)
        self.rng = torch.Generator().manual_seed(cfg.seed)
        self.slots = [Slot(self.make_env()) for _ in range(cfg.num_envs)]
        self.eval_slots = [Slot(self.make_env()) for _ in range(min(cfg.agent.eval_episodes, 64))]

    # -- acting -----------------------------------------------------------------------------
    def decide(self, states: list[StepState], agents: list | None = None,
               streams: list[str] | None = None) -> list[PolicyDecision]:
        """pi over every admissible action of each state (``q`` = log pi) and V(s). (``agents``
        and ``streams`` are the value-based loop's: here the policy is the one LLM.)"""
        return self.policy_decisions(states, with_prior=False)

    def policy_decisions(self, states: list[StepState], with_prior: bool
                         ) -> list[PolicyDecision]:
        """As ``decide``, and with ``with_prior`` (gflan-prior's training states) the frozen
        prior's log-probs and k samples from it for the KL estimate."""
        queries = [self.query(state) for state in states]
        prompts = [q.prompt for q in queries]
        actions = [list(q.actions) for q in queries]
        stats = self.prior.stats
        started = time.perf_counter()
        with torch.no_grad():
            logpi, values = self.agent.evaluate_actions(prompts, actions)
            prior_logp = None
            if with_prior and self.kl_prior is None:
                prior_logp = torch.log_softmax(self.agent.prior_scores(prompts, actions), 1)
        stats.seconds += time.perf_counter() - started
        if with_prior and self.kl_prior is not None:
            prior_logp = self.kl_prior_logp(queries, logpi.shape[1])
        stats.calls += 1
        stats.queries += len(states) * (2 if with_prior else 1)
        stats.model_queries += len(states) * (2 if with_prior else 1)
        decisions = []
        for i, (state, acts) in enumerate(zip(states, actions)):
            n = len(acts)
            d = PolicyDecision(acts, torch.empty(0), logpi[i, :n].cpu(), None,
                               prompt=prompts[i], value=float(values[i]))
            if state.counted and self.track_optimal:
                probs = logpi[i, :n].exp()
                d.optimal_hit = acts[int(probs.argmax())] in state.optimal
            if prior_logp is not None:
                d.prior_logp = prior_logp[i, :n].cpu()
                d.samples = torch.multinomial(d.prior_logp.exp(), self.cfg.k, replacement=True,
                                              generator=self.rng).tolist()
            decisions.append(d)
        return decisions

    def kl_prior_logp(self, queries: list[PriorQuery], width: int) -> torch.Tensor:
        """log p_LLM over each state's actions from ``kl_prior`` (``[B, width]``, -inf where a
        state has fewer actions): its summed log-probs, log-softmaxed over the admissible
        actions (and averaged over orderings as probabilities, under prior_permutations)."""
        out = torch.full((len(queries), width), -torch.inf)
        for i, per_order in enumerate(self.kl_prior.scores(queries)):
            logp = torch.log_softmax(torch.tensor(per_order, dtype=torch.float64), 1)
            out[i, : logp.shape[1]] = (torch.logsumexp(logp, 0) - math.log(len(logp))).float()
        return out

    def _batch_step(self) -> None:
        cfg = self.cfg
        states = [self.state_of(s, counted=True) for s in self.slots]
        decisions = self.policy_decisions(states, with_prior=cfg.algo == "gflan-prior")
        chosen = [int(torch.multinomial(d.q.exp(), 1, generator=self.rng))  # a ~ pi
                  for d in decisions]
        results = self._act_all(self.slots, [d.candidates[i] for d, i in zip(decisions, chosen)])
        for i, (slot, d, index, result) in enumerate(zip(self.slots, decisions, chosen, results)):
            self._count_optimal(d)
            obs, reward, terminated, truncated, info = result
            step = {"prompt": d.prompt, "actions": d.candidates, "action": index,
                    "logp": float(d.q[index]), "value": d.value, "reward": float(reward),
                    "done": bool(terminated or truncated), "next_value": 0.0,
                    "prior_logp": d.prior_logp, "samples": d.samples}
            if truncated and not terminated:  # bootstrap from the cut episode's last state
                end = self.decide([StepState(obs, slot.history, (), self.context(slot.env))])[0]
                step["next_value"] = end.value
            self.replay.steps[i].append(step)
            slot.obs = obs
            if terminated or truncated:
                self.train_returns.append((slot.episode_return, bool(info.get("success"))))
                self.episodes_done += 1
                self._new_episode(slot)
        if len(self.replay) >= cfg.agent.rollout_steps or self.episodes_done >= cfg.episodes:
            self.last_loss = self.train_phase()
        self.progress(self.episodes_done, cfg.episodes, "")

    # -- PPO update -------------------------------------------------------------------------
    def train_phase(self) -> float | None:
        cfg = self.cfg.agent
        if not len(self.replay):
            return self.last_loss
        started = time.perf_counter()
        # bootstrap values of the envs' current states (mid-episode rollouts)
        live = [(i, s) for i, s in enumerate(self.slots)
                if self.replay.steps[i] and not self.replay.steps[i][-1]["done"]]
        if live:
            ends = self.decide([StepState(s.obs, s.history, (), self.context(s.env))
                                for _, s in live])
            for (i, _), d in zip(live, ends):
                self.replay.steps[i][-1]["next_value"] = d.value
        batch: list[dict] = []
        for steps in self.replay.steps:
            next_values = [s["next_value"] if s["done"] or t + 1 == len(steps)
                           else steps[t + 1]["value"] for t, s in enumerate(steps)]
            adv, ret = gae([s["reward"] for s in steps], [s["value"] for s in steps],
                           [s["done"] for s in steps], next_values, cfg.gamma, cfg.gae_lambda)
            batch += [{**s, "advantage": a, "return": r} for s, a, r in zip(steps, adv, ret)]
        history = []
        self.agent.model.train(False)
        for _ in range(cfg.epochs):
            order = torch.randperm(len(batch), generator=self.rng).tolist()
            for start in range(0, len(batch), cfg.minibatch_size):
                history.append(self.agent.update(
                    collate([batch[j] for j in order[start : start + cfg.minibatch_size]],
                            self.agent.device)))
        self.agent.last_stats = {k: sum(h[k] for h in history) / len(history)
                                 for k in history[0]}
        self.replay = Rollout(len(self.slots))
        self.update_seconds += time.perf_counter() - started
        return self.agent.last_stats["loss"]

    # -- CSV and checkpoints ----------------------------------------------------------------
    csv_columns = CSV_COLUMNS + PPO_COLUMNS

    def extra_row(self) -> dict:
        return {k: self.agent.last_stats.get(k, "") for k in PPO_COLUMNS}

    def _restore(self, state: dict) -> None:
        super()._restore(state)
        for i, saved in enumerate(state["slots"]):
            if not saved["at_start"]:  # that env's partial episode is lost: so are its steps
                self.replay.steps[i] = []


def kl_prior_config(cfg):
    """The RunConfig of gflan-prior's ``kl_prior``: the run's prior settings with that backend,
    model and server, in score mode (exact probabilities of the admissible actions)."""
    agent = cfg.agent
    return dataclasses.replace(cfg, prior=agent.kl_prior, prior_mode="score",
                               prior_model=agent.kl_prior_model or cfg.prior_model,
                               prior_url=agent.kl_prior_url, prior_uniform_mix=0.0)


def collate(steps: list[dict], device: torch.device) -> dict:
    """A PPO minibatch from rollout steps."""
    width = max(len(s["actions"]) for s in steps)
    out = {
        "prompts": [s["prompt"] for s in steps], "actions": [s["actions"] for s in steps],
        "action": torch.tensor([s["action"] for s in steps], device=device),
        "logp": torch.tensor([s["logp"] for s in steps], device=device),
        "values": torch.tensor([s["value"] for s in steps], device=device),
        "advantages": torch.tensor([s["advantage"] for s in steps], device=device),
        "returns": torch.tensor([s["return"] for s in steps], device=device),
        "prior_logp": None,
    }
    if steps[0]["prior_logp"] is not None:
        prior = torch.full((len(steps), width), -torch.inf)
        for r, s in enumerate(steps):
            prior[r, : len(s["actions"])] = s["prior_logp"]
        out["prior_logp"] = prior.to(device)
        out["samples"] = torch.tensor([s["samples"] for s in steps], device=device)
    return out
