"""GFlan and GFlan-Prior (online, policy): the LLM itself is the policy (GLAM, Carta et al. 2023;
Yan et al., ICLR 2025, Sec. 4.3), trained with PPO through LoRA adapters.

Policy. For a state s with admissible actions A(s) and its prompt x (the env's template,
``TextEnv.prompt``)::

    score(a) = sum_t log softmax(LM(x, a_<t))[a_t]      (log-softmax over the vocabulary first)
    pi(a|s)  = softmax_{a in A(s)} score(a)
    V(s)     = MLP(h_L(x)[-1])                           (last layer, prompt's last token)

A batch's prompts and their actions run as one forward over a token tree (``ActionTree``):
shared prefixes once, every action's tokens after its prompt, a mask that lets each token see
only its own sequence; acting scores all envs' states so, and a PPO minibatch is one such
forward and backward (trees of at most ``max_tree_tokens``).
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

from ..settings import check, setting

EVAL_POLICIES = ("greedy", "softmax")
#: where gflan-prior's p_LLM comes from (``GFlanConfig.kl_prior``)
KL_PRIORS = ("base", "local", "vllm")


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
    kl_prior: str = setting("base", "gflan-prior: the p_LLM of the KL: base (the policy's own "
                            "model, adapters off) or another model scoring the actions: local "
                            "(in-process) or vllm (served); the paper leaves it open",
                            choices=KL_PRIORS)
    kl_prior_model: str | None = setting(None, "kl_prior local or vllm: its model (a folder, a "
                                         ".gguf file or a served name; default: prior_model)")
    kl_prior_url: str | None = setting(None, "kl_prior vllm: the server (default "
                                       "http://127.0.0.1:8000)")
    lora_r: int = setting(8, "LoRA rank", low=1)
    lora_alpha: int = setting(16, "LoRA alpha")
    lora_dropout: float = setting(0.0, "LoRA dropout", low=0, high=1)
    lora_targets: str = setting("all-linear", "LoRA's modules: all-linear or a comma-separated "
                                "list of module names")
    max_tree_tokens: int = setting(768, "tokens per scoring forward: prompts and actions "
                                   "laid out as one token tree (attention costs its square)",
                                   unit="tokens", low=1)
    recompute_activations: bool = setting(False, "keep only each layer's input for the "
                                          "backward pass and recompute the rest there: less "
                                          "memory, a longer gradient step")
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


# -- scoring: all prompts and their candidate actions as one token tree, one forward --------
@dataclass
class ActionTree:
    """A batch's prompts and each prompt's candidate actions as one token tree, in depth-first
    order: equal prefixes (the instructions every prompt shares, a state met twice, the words
    candidates share) are one branch. One forward under a tree attention mask -- a token sees
    itself and its ancestors, at the position of its depth -- gives every token the logits a
    plain forward over its own prompt + action would give it."""

    tokens: torch.Tensor  # [N] token ids, depth-first
    positions: torch.Tensor  # [N] each token's depth: its position in its own sequence
    subtree_end: torch.Tensor  # [N] node i's descendants are the nodes i+1 .. subtree_end[i]-1
    prompt_last: torch.Tensor  # [B] each prompt's last token
    predictors: torch.Tensor  # [M] the node whose next-token logits score ...
    targets: torch.Tensor  # [M] ... this token of a candidate,
    pairs: torch.Tensor  # [M] ... of candidate j of state b: b * width + j
    shape: tuple[int, int]  # (B states, width = the most candidates of a state)

    @classmethod
    def build(cls, prompt_ids: list[list[int]], candidate_ids: list[list[list[int]]],
              device: torch.device | str = "cpu") -> ActionTree:
        trie = TokenTrie()
        width = max(len(cands) for cands in candidate_ids)
        prompt_last, predictors, targets, pairs = [], [], [], []
        for b, (ids, cands) in enumerate(zip(prompt_ids, candidate_ids)):
            node = trie.path(-1, ids)
            prompt_last.append(node)
            for j, cand in enumerate(cands):
                at = node
                for tok in cand:
                    predictors.append(at)
                    targets.append(tok)
                    pairs.append(b * width + j)
                    at = trie.child(at, tok)
        order, subtree_end = trie.depth_first()

        def placed(values: list[int]) -> torch.Tensor:
            return torch.empty(len(values), dtype=torch.long).scatter_(
                0, order, torch.tensor(values)).to(device)

        def renumbered(nodes: list[int]) -> torch.Tensor:
            return order[torch.tensor(nodes, dtype=torch.long)].to(device)

        return cls(tokens=placed(trie.token), positions=placed(trie.depth),
                   subtree_end=order.new_tensor(subtree_end).to(device),
                   prompt_last=renumbered(prompt_last), predictors=renumbered(predictors),
                   targets=torch.tensor(targets, device=device),
                   pairs=torch.tensor(pairs, device=device), shape=(len(prompt_ids), width))

    def attention_mask(self) -> torch.Tensor:
        """``[1, 1, N, N]``, True where token i sees token j: j is i or an ancestor of i."""
        i = torch.arange(len(self.tokens), device=self.tokens.device)
        sees = (i[None, :] <= i[:, None]) & (i[:, None] < self.subtree_end[None, :])
        return sees[None, None]


class TokenTrie:
    """Token sequences as a trie: node ``n`` holds ``token[n]`` after node ``parent[n]`` (-1: a
    first token), at ``depth[n]``; a parent is always made before its children."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.token: list[int] = []
        self.depth: list[int] = []
        self.node_of: dict[tuple[int, int], int] = {}

    def __len__(self) -> int:
        return len(self.token)

    def child(self, of: int, tok: int) -> int:
        """The node of ``tok`` after node ``of``, made if new."""
        node = self.node_of.get((of, tok))
        if node is None:
            node = self.node_of[(of, tok)] = len(self.token)
            self.parent.append(of)
            self.token.append(tok)
            self.depth.append(self.depth[of] + 1 if of >= 0 else 0)
        return node

    def path(self, of: int, tokens: list[int]) -> int:
        """The node of the last of ``tokens`` after node ``of``, made where new."""
        for tok in tokens:
            of = self.child(of, tok)
        return of

    def new_nodes(self, ids: list[int], cands: list[list[int]]) -> int:
        """At most how many nodes a prompt and its candidates would add."""
        node = -1
        for t, tok in enumerate(ids):
            node = self.node_of.get((node, tok), -2)
            if node == -2:
                return len(ids) - t + sum(map(len, cands))
        new = 0
        for cand in cands:
            at = node
            for t, tok in enumerate(cand):
                at = self.node_of.get((at, tok), -2)
                if at == -2:
                    new += len(cand) - t
                    break
        return new

    def depth_first(self) -> tuple[torch.Tensor, list[int]]:
        """Each node's depth-first number (``[N]``) and, by that number, where each subtree ends:
        subtree sizes add up from the last node back (a parent precedes its children), and a
        child's subtree starts after its earlier siblings' subtrees."""
        n = len(self.token)
        size = [1] * n
        for node in range(n - 1, -1, -1):
            if self.parent[node] >= 0:
                size[self.parent[node]] += size[node]
        first = [0] * n
        next_free = [0] * n  # where a node's next child's subtree starts
        next_root = 0
        for node, of in enumerate(self.parent):
            if of < 0:
                first[node], next_root = next_root, next_root + size[node]
            else:
                first[node] = next_free[of]
                next_free[of] += size[node]
            next_free[node] = first[node] + 1
        end = [0] * n
        for node in range(n):
            end[first[node]] = first[node] + size[node]
        return torch.tensor(first), end


def score_tree(lm, tree: ActionTree, hidden: bool = False):
    """Summed log-probs of every candidate's tokens after its prompt, by one forward over the
    tree: ``[B, width]`` scores (-inf where a state has fewer candidates) and, with ``hidden``,
    the last layer's ``[B, d]`` state at each prompt's last token (else None). Differentiable;
    wrap in ``torch.no_grad`` to act."""
    keep, row = torch.unique(tree.predictors, return_inverse=True)
    out = lm(input_ids=tree.tokens[None], attention_mask=tree.attention_mask(),
             position_ids=tree.positions[None], use_cache=False, logits_to_keep=keep,
             output_hidden_states=hidden)
    logp = torch.log_softmax(out.logits[0].float(), -1)[row, tree.targets]
    states, width = tree.shape
    total = torch.zeros(states * width, device=logp.device).index_add(0, tree.pairs, logp)
    present = torch.zeros(states * width, dtype=torch.bool, device=logp.device)
    present[tree.pairs] = True
    scores = torch.where(present, total, -torch.inf).view(states, width)
    h = out.hidden_states[-1][0, tree.prompt_last] if hidden else None
    return scores, h


def score_actions(lm, prompt_ids: list[list[int]], candidate_ids: list[list[list[int]]],
                  hidden: bool = False, max_tree_tokens: int = 768):
    """``score_tree`` over trees of at most ``max_tree_tokens`` tokens (a state whose own tree
    is larger gets one alone): attention under the tree mask costs N^2, so a big batch runs as
    several trees. Returns ``[B, width]`` scores and ``[B, d]`` hidden states (or None)."""
    groups: list[list[int]] = [[]]
    trie = TokenTrie()
    for b, (ids, cands) in enumerate(zip(prompt_ids, candidate_ids)):
        if groups[-1] and len(trie) + trie.new_nodes(ids, cands) > max_tree_tokens:
            groups.append([])
            trie = TokenTrie()
        groups[-1].append(b)
        end = trie.path(-1, ids)
        for cand in cands:
            trie.path(end, cand)
    device = lm.device
    width = max(len(cands) for cands in candidate_ids)
    parts = []
    for group in groups:
        tree = ActionTree.build([prompt_ids[i] for i in group],
                                [candidate_ids[i] for i in group], device)
        scores, h = score_tree(lm, tree, hidden)
        pad = torch.full((len(group), width - scores.shape[1]), -torch.inf, device=device)
        parts.append((torch.cat([scores, pad], 1), h))
    scores = torch.cat([s for s, _ in parts])
    return scores, (torch.cat([h for _, h in parts]) if hidden else None)


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
        if cfg.recompute_activations:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.device = base.device
        self.value = ValueHead(base.config.hidden_size, cfg.value_hidden).to(self.device)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.params += list(self.value.parameters())
        self.optimizer = torch.optim.Adam(self.params, lr=cfg.lr, eps=1e-5)
        self.grad_steps = 0
        self.last_stats: dict[str, float] = {}

    # -- forward passes ---------------------------------------------------------------------
    def _scores(self, prompts: list[str], actions: list[list[str]], hidden: bool):
        prompt_ids = self.engine.prompt_ids(prompts)
        candidate_ids = [[self.engine.candidate_ids(a) for a in acts] for acts in actions]
        return score_actions(self.model, prompt_ids, candidate_ids, hidden,
                             self.cfg.max_tree_tokens)

    def evaluate_actions(self, prompts: list[str], actions: list[list[str]], value: bool = True):
        """(log pi [B, A] over each state's actions, V [B] or None), with the adapters on."""
        scores, h = self._scores(prompts, actions, hidden=value)
        return torch.log_softmax(scores, 1), (self.value(h) if value else None)

    @torch.no_grad()
    def prior_scores(self, prompts: list[str], actions: list[list[str]]) -> torch.Tensor:
        """Summed log-probs with the adapters off: the frozen prior's scores ``[B, A]``."""
        with self.model.disable_adapter():
            scores, _ = self._scores(prompts, actions, hidden=False)
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
        # transformers recomputes activations in training mode only (the model has no dropout:
        # the mode changes nothing else)
        self.model.train(self.cfg.recompute_activations)
        try:
            loss, stats = self.loss(batch)
        finally:
            self.model.train(False)
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
