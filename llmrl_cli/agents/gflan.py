"""GFlan and GFlan-Prior (online, policy): the LLM itself is the policy (GLAM, Carta et al. 2023;
Yan et al., ICLR 2025, Sec. 4.3), trained with PPO through LoRA adapters.

Policy. For a state s with admissible actions A(s) and its prompt x (the env's template,
``TextEnv.prompt``)::

    score(a) = sum_t log softmax(LM(x, a_<t))[a_t]      (log-softmax over the vocabulary first)
    pi(a|s)  = softmax_{a in A(s)} score(a)
    V(s)     = MLP(h_L(x)[-1])                           (last layer, prompt's last token)

One prompt forward per state; every action's tokens run against that prompt's KV cache.
LoRA adapters (peft) sit on the LM's linear layers: adapters on = the policy pi, adapters off =
the frozen prior p_LLM (the same scores, one base model in memory).

Loss on a minibatch of (s, a, logpi_old(a), V_old, A_hat, R), as GLAM's PPO step
(flowersteam/Grounding_LLMs_with_online_RL, experiments/train_language_agent.py:250-264)::

    r        = exp(log pi(a|s) - log pi_old(a|s))
    L_clip   = -mean( min(r * A_hat, clip(r, 1 - eps, 1 + eps) * A_hat) )
    L_V      = mean( max((V - R)^2, (V_old + clip(V - V_old, -eps_v, eps_v) - R)^2) )
    H        = mean( entropy of pi(.|s) over A(s) )
    KL_hat   = mean_s (1/k) sum_i w_i * log w_i,  w_i = pi(a_i|s) / p_LLM(a_i|s),  a_i ~ p_LLM
    loss     = L_clip + c_V * L_V - c_H * H + beta * KL_hat     (beta = 0 for gflan)

KL_hat is an unbiased estimate of KL(pi || p_LLM) from k samples of the frozen prior
(importance weighting: E_p[(pi/p) log(pi/p)] = E_pi[log(pi/p)]); since p does not depend on
the parameters, its gradient is an unbiased estimate of the KL's gradient too. A_hat and R
come from GAE(gamma, lambda). GLAM's settings (the paper's GFlan code is not public): clip 0.2, value clip 0.2, c_H 0.01,
c_V 0.5, grad norm 0.5, 4 epochs, gamma 0.99, lambda 0.99; GLAM's Adam lr 1e-6 is for the full
model -- LoRA needs a larger one (ours 1e-4, the usual LoRA order of magnitude).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..engine import select_cache
from ..settings import check, setting

EVAL_POLICIES = ("greedy", "softmax")


@dataclass
class GFlanConfig:
    """PPO + LoRA hyperparameters (module docstring). The paper's GFlan code is not public:
    ``paper`` gives GLAM's values where ours follow them."""

    lr: float = setting(1e-4, "Adam learning rate of the LoRA adapters and value head",
                        paper="GLAM 1e-6 on the full model", above=0)
    clip: float = setting(0.2, "PPO ratio clip eps", paper="GLAM 0.2", above=0)
    value_clip: float = setting(0.2, "value clip eps_v", paper="GLAM 0.2", low=0)
    ent_coef: float = setting(0.01, "entropy weight c_H", paper="GLAM 0.01")
    vf_coef: float = setting(0.5, "value loss weight c_V", paper="GLAM 0.5")
    max_grad_norm: float = setting(0.5, "gradient norm clip", paper="GLAM 0.5")
    epochs: int = setting(4, "passes over each rollout per update", paper="GLAM 4", low=1)
    gamma: float = setting(0.99, "discount", paper="GLAM 0.99", low=0, high=1)
    gae_lambda: float = setting(0.99, "GAE lambda", paper="GLAM 0.99", low=0, high=1)
    rollout_steps: int = setting(64, "transitions (all envs together) per PPO update",
                                 unit="transitions", low=1)
    minibatch_size: int = setting(8, "transitions per PPO minibatch", unit="transitions", low=1)
    kl_beta: float = setting(0.1, "gflan-prior: beta, the weight of KL(pi || p_LLM) (ours)",
                             low=0)
    lora_r: int = setting(8, "LoRA rank", low=1)
    lora_alpha: int = setting(16, "LoRA alpha")
    lora_dropout: float = setting(0.0, "LoRA dropout", low=0, high=1)
    lora_targets: str = setting("all-linear", "LoRA's modules: all-linear or a comma-separated "
                                "list of module names")
    value_hidden: int = setting(256, "width of the value head's hidden layer", low=1)
    eval_every: int = setting(20, "episodes between evaluations", unit="episodes", low=1)
    eval_episodes: int = setting(10, "episodes per evaluation", unit="episodes", low=1)
    eval_policy: str = setting("greedy", "greedy: argmax pi; softmax: sample from pi",
                               choices=EVAL_POLICIES)
    alpha: float = setting(1.0, "sampling temperature: softmax(log pi / alpha)", above=0)
    train_every: int = setting(1, "the shared loop's counter (PPO updates every rollout_steps)",
                               low=1)
    train_start: int = setting(0, "the shared loop's counter", low=0)

    def validate(self) -> None:
        check(self)


# -- scoring: one prompt forward, actions on its KV cache (with gradients) --------------------
def score_actions(lm, prefill, candidate_ids: list[list[list[int]]], pad_id: int,
                  hidden: bool = False):
    """Summed log-probs of each candidate's tokens after its prompt.

    ``prefill(hidden)`` runs the prompts (``LocalEngine.tokenize``'s layout: left padding, positions
    from the mask) and returns (last logits, KV cache, mask, last position, last hidden state or
    None). Returns ``[B, A]`` scores (-inf where a state has fewer actions) and the ``[B, d]``
    hidden states (or None). Differentiable; wrap in ``torch.no_grad`` to act.
    """
    first_logits, cache, mask, position, h = prefill(hidden)
    device = first_logits.device
    owner = [i for i, cands in enumerate(candidate_ids) for _ in cands]
    ids = [t for cands in candidate_ids for t in cands]
    length = max(len(t) for t in ids)
    tokens = torch.full((len(ids), length), pad_id, device=device)
    valid = torch.zeros((len(ids), length), dtype=torch.long, device=device)
    for r, t in enumerate(ids):
        tokens[r, : len(t)] = torch.tensor(t, device=device)
        valid[r, : len(t)] = 1
    index = torch.tensor(owner, device=device)
    total = torch.log_softmax(first_logits[index], -1).gather(-1, tokens[:, :1]).squeeze(-1)
    if length > 1:
        out = lm(input_ids=tokens[:, :-1], attention_mask=torch.cat([mask[index], valid[:, :-1]], 1),
                 position_ids=position[index] + 1 + torch.arange(length - 1, device=device),
                 past_key_values=select_cache(cache, index), use_cache=True)
        logp = torch.log_softmax(out.logits.float(), -1)
        picked = logp.gather(-1, tokens[:, 1:, None]).squeeze(-1)
        total = total + (picked * valid[:, 1:]).sum(-1)
    width = max(len(c) for c in candidate_ids)
    scores = torch.full((len(candidate_ids), width), -torch.inf, device=device)
    col = torch.tensor([j for cands in candidate_ids for j in range(len(cands))], device=device)
    scores = scores.index_put((index, col), total)
    return scores, h


def kl_estimate(logpi: torch.Tensor, prior_logp: torch.Tensor, samples: torch.Tensor
                ) -> torch.Tensor:
    """Per state, (1/k) sum_i w_i log w_i with w_i = pi(a_i)/p(a_i), a_i ~ p: an unbiased
    estimate of KL(pi || p). ``logpi``/``prior_logp``: ``[B, A]``; ``samples``: ``[B, k]``."""
    log_w = logpi.gather(1, samples) - prior_logp.gather(1, samples)
    return (log_w.exp() * log_w).mean(1)


def masked_entropy(logpi: torch.Tensor) -> torch.Tensor:
    p = logpi.exp()
    return -(p * torch.where(torch.isfinite(logpi), logpi, 0.0)).sum(1)


def gae(rewards: list[float], values: list[float], dones: list[bool],
        next_values: list[float], gamma: float, lam: float) -> tuple[list[float], list[float]]:
    """Advantages and returns of one env's consecutive transitions. ``next_values[t]`` is
    V(s_{t+1}) (0 after a terminal state); a new episode starts after ``dones[t]`` or where
    ``next_values[t]`` is a truncation's bootstrap (the caller marks those done too)."""
    adv = [0.0] * len(rewards)
    running = 0.0
    for t in reversed(range(len(rewards))):
        delta = rewards[t] + gamma * next_values[t] - values[t]
        running = delta + (0.0 if dones[t] else gamma * lam * running)
        adv[t] = running
    return adv, [a + v for a, v in zip(adv, values)]


class ValueHead(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h.float()).squeeze(-1)


class GFlanAgent:
    """The LoRA-wrapped LM of a ``LocalLLMPrior``'s engine as policy, a value head, Adam, PPO."""

    def __init__(self, prior, cfg: GFlanConfig) -> None:
        from peft import LoraConfig, get_peft_model

        self.cfg, self.prior, self.engine = cfg, prior, prior.engine
        # the model trains: plain linear layers for LoRA and autograd
        base = self.engine.load_trainable()
        for p in base.parameters():
            p.requires_grad_(False)
        targets = (cfg.lora_targets if cfg.lora_targets == "all-linear"
                   else [t.strip() for t in cfg.lora_targets.split(",")])
        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=targets, bias="none", task_type="CAUSAL_LM")
        self.model = get_peft_model(base, lora)  # injects the adapters into the engine's model
        self.model.eval()  # no dropout anywhere: the policy is a deterministic function
        self.device = base.device
        self.value = ValueHead(base.config.hidden_size, cfg.value_hidden).to(self.device)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.params += list(self.value.parameters())
        self.optimizer = torch.optim.Adam(self.params, lr=cfg.lr, eps=1e-5)
        self.grad_steps = 0
        self.last_stats: dict[str, float] = {}

    # -- forward passes ---------------------------------------------------------------------
    def _prefill(self, prompts: list[str]):
        def run(hidden: bool):
            batch = self.engine.tokenize(prompts)
            mask = batch["attention_mask"]
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            out = self.model(input_ids=batch["input_ids"], attention_mask=mask,
                             position_ids=positions, use_cache=True, logits_to_keep=1,
                             output_hidden_states=hidden)
            h = out.hidden_states[-1][:, -1] if hidden else None
            return out.logits[:, -1].float(), out.past_key_values, mask, positions[:, -1:], h
        return run

    def evaluate_actions(self, prompts: list[str], actions: list[list[str]], value: bool = True):
        """(log pi [B, A] over each state's actions, V [B] or None), with the adapters on."""
        ids = [[self.engine.candidate_ids(a) for a in acts] for acts in actions]
        scores, h = score_actions(self.model, self._prefill(prompts), ids,
                                  self.engine.pad_token_id, hidden=value)
        return torch.log_softmax(scores, 1), (self.value(h) if value else None)

    @torch.no_grad()
    def prior_scores(self, prompts: list[str], actions: list[list[str]]) -> torch.Tensor:
        """Summed log-probs with the adapters off: the frozen prior's scores ``[B, A]``."""
        ids = [[self.engine.candidate_ids(a) for a in acts] for acts in actions]
        with self.model.disable_adapter():
            scores, _ = score_actions(self.model, self._prefill(prompts), ids,
                                      self.engine.pad_token_id)
        return scores

    # -- PPO --------------------------------------------------------------------------------
    def loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss in the module docstring on one minibatch; also its parts."""
        cfg = self.cfg
        logpi, value = self.evaluate_actions(batch["prompts"], batch["actions"])
        new_logp = logpi.gather(1, batch["action"][:, None]).squeeze(1)
        log_ratio = new_logp - batch["logp"]
        ratio = log_ratio.exp()
        adv = batch["advantages"]  # not normalised per minibatch, as GLAM's
        pg = -torch.min(ratio * adv, ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * adv).mean()
        v_clipped = batch["values"] + (value - batch["values"]).clamp(-cfg.value_clip,
                                                                      cfg.value_clip)
        # GLAM's clipped value loss, no 1/2 (experiments/train_language_agent.py:258-264)
        v_loss = torch.max((value - batch["returns"]) ** 2,
                           (v_clipped - batch["returns"]) ** 2).mean()
        entropy = masked_entropy(logpi).mean()
        loss = pg + cfg.vf_coef * v_loss - cfg.ent_coef * entropy
        stats = {"policy_loss": float(pg.detach()), "value_loss": float(v_loss.detach()),
                 "entropy": float(entropy.detach()),
                 "clip_frac": float(((ratio - 1).abs() > cfg.clip).float().mean())}
        if batch.get("prior_logp") is not None:
            kl = kl_estimate(logpi, batch["prior_logp"], batch["samples"]).mean()
            loss = loss + cfg.kl_beta * kl
            p = logpi.exp()
            exact = (p * torch.where(p > 0, logpi - batch["prior_logp"], 0.0)).sum(1).mean()
            stats.update(kl=float(kl.detach()), kl_exact=float(exact.detach()),
                         beta=cfg.kl_beta)
        stats["loss"] = float(loss.detach())
        return loss, stats

    def update(self, batch: dict) -> dict[str, float]:
        """One gradient step on a minibatch; returns the loss parts."""
        loss, stats = self.loss(batch)
        self.optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
        self.optimizer.step()
        self.grad_steps += 1
        return stats

    # -- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        from peft import get_peft_model_state_dict

        return {"lora": {k: v.cpu() for k, v in get_peft_model_state_dict(self.model).items()},
                "value": self.value.state_dict(), "optimizer": self.optimizer.state_dict(),
                "grad_steps": self.grad_steps, "last_stats": self.last_stats}

    def load_state_dict(self, state: dict) -> None:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(self.model, state["lora"])
        self.value.load_state_dict(state["value"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.grad_steps = state["grad_steps"]
        self.last_stats = state["last_stats"]
