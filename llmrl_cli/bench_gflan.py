"""``llmrl bench --algo gflan``: what a GFlan run costs per env step and per PPO gradient step.

Two ways of scoring the admissible actions with the LLM policy, on the same run settings:

``tree`` -- llmrl's path (``agents/gflan.py``): a batch's prompts and actions are one token tree,
shared prefixes once, and one forward under a tree mask scores every action; a PPO minibatch is
one such forward and backward.

``padded`` -- the path before it, kept here for the comparison: the prompts left-padded to the
longest and prefilled together, then every action's tokens run on a copy of its prompt's keys
and values (the batched form of GLAM's scoring, a prompt's context shared by its actions).

Each mode runs in a fresh process (cold allocator, its own peak memory): a GFlan run of the
given settings for ``updates`` rollouts of ``rollout_steps`` transitions, each followed by its
PPO update (``epochs`` passes over minibatches of ``minibatch_size``), with no evaluation.
Reported per mode: env steps per second over the whole run, seconds per gradient step, the time
split (policy forwards while acting, env steps, PPO updates), and peak memory (the process's
peak RSS; on CUDA also the most memory torch had allocated on the GPU).
"""

from __future__ import annotations

import multiprocessing
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace

import torch

from .config import RunConfig

MODES = ("padded", "tree")


def padded_scores(agent, prompts: list[str], actions: list[list[str]], hidden: bool):
    """The ``padded`` mode's ``GFlanAgent._scores`` (module docstring): ``[B, A]`` summed
    log-probs of each action after its prompt, and the ``[B, d]`` last hidden states or None."""
    from .engine import select_cache

    engine, lm = agent.engine, agent.model
    batch = engine.tokenize(prompts)
    mask = batch["attention_mask"]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = lm(input_ids=batch["input_ids"], attention_mask=mask, position_ids=positions,
             use_cache=True, logits_to_keep=1, output_hidden_states=hidden)
    h = out.hidden_states[-1][:, -1] if hidden else None
    first_logits, cache, position = out.logits[:, -1].float(), out.past_key_values, positions[:, -1:]
    device = first_logits.device
    candidate_ids = [[engine.candidate_ids(a) for a in acts] for acts in actions]
    owner = [i for i, cands in enumerate(candidate_ids) for _ in cands]
    ids = [t for cands in candidate_ids for t in cands]
    length = max(len(t) for t in ids)
    tokens = torch.full((len(ids), length), engine.pad_token_id, device=device)
    valid = torch.zeros((len(ids), length), dtype=torch.long, device=device)
    for r, t in enumerate(ids):
        tokens[r, : len(t)] = torch.tensor(t, device=device)
        valid[r, : len(t)] = 1
    index = torch.tensor(owner, device=device)
    total = torch.log_softmax(first_logits[index], -1).gather(-1, tokens[:, :1]).squeeze(-1)
    if length > 1:
        more = lm(input_ids=tokens[:, :-1], attention_mask=torch.cat([mask[index], valid[:, :-1]], 1),
                  position_ids=position[index] + 1 + torch.arange(length - 1, device=device),
                  past_key_values=select_cache(cache, index), use_cache=True)
        logp = torch.log_softmax(more.logits.float(), -1)
        picked = logp.gather(-1, tokens[:, 1:, None]).squeeze(-1)
        total = total + (picked * valid[:, 1:]).sum(-1)
    width = max(len(c) for c in candidate_ids)
    scores = torch.full((len(candidate_ids), width), -torch.inf, device=device)
    col = torch.tensor([j for cands in candidate_ids for j in range(len(cands))], device=device)
    return scores.index_put((index, col), total), h


def run_mode(cfg: RunConfig, mode: str, updates: int) -> dict:
    """One mode's run in this process (module docstring); its numbers."""
    from .gflan import GFlanRunner

    if mode not in MODES:
        raise ValueError(f"unknown GFlan bench mode {mode!r}")
    started = time.perf_counter()
    runner = GFlanRunner(cfg, log=lambda *_: None)
    runner.build()
    agent = runner.agent
    if mode == "padded":
        agent._scores = lambda prompts, actions, hidden: padded_scores(agent, prompts, actions,
                                                                      hidden)
    timing = {"env_s": 0.0, "grad_s": []}
    act_all, update = runner._act_all, agent.update

    def timed_act_all(slots, actions):
        t = time.perf_counter()
        results = act_all(slots, actions)
        timing["env_s"] += time.perf_counter() - t
        return results

    def timed_update(batch):
        t = time.perf_counter()
        stats = update(batch)
        timing["grad_s"].append(time.perf_counter() - t)
        timing.setdefault("first_loss", stats["loss"])
        return stats

    runner._act_all, agent.update = timed_act_all, timed_update
    device = agent.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    build_s = time.perf_counter() - started
    started = time.perf_counter()
    for slot in runner.slots:
        runner._new_episode(slot)
    updates_done, phase = 0, runner.train_phase

    def counted_phase():
        nonlocal updates_done
        updates_done += 1
        return phase()

    runner.train_phase = counted_phase
    while updates_done < updates:
        runner._batch_step()
    wall = time.perf_counter() - started
    grad = timing["grad_s"]
    result = {
        "mode": mode, "env_steps": runner.env_steps, "wall_s": round(wall, 2),
        "build_s": round(build_s, 2), "steps_per_s": round(runner.env_steps / wall, 3),
        "acting_s": round(runner.prior.stats.seconds, 2), "env_s": round(timing["env_s"], 2),
        "update_s": round(runner.update_seconds, 2), "grad_steps": len(grad),
        "grad_step_s": round(sum(grad) / len(grad), 3),
        "first_grad_step_s": round(grad[0], 3), "slowest_grad_step_s": round(max(grad), 3),
        "first_loss": timing["first_loss"],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    if device.type == "cuda":
        result["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20)
    return result


def bench_gflan(cfg: RunConfig, modes: tuple[str, ...], updates: int,
                log=lambda message: None) -> dict:
    """Each mode in its own fresh (spawned) process, one after another; their numbers and the
    ratios of the last mode over the first."""
    from .bench import host_info

    cfg = replace(cfg, episodes=10**9)  # the run ends after ``updates`` PPO updates instead
    results = {}
    for mode in modes:
        log(f"{mode}: {updates} rollout(s) of {cfg.agent.rollout_steps} transitions and their "
            "PPO updates, in a fresh process")
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            results[mode] = pool.submit(run_mode, cfg, mode, updates).result()
    out = {"env": cfg.env, "algo": cfg.algo, "model": cfg.prior_model, "seed": cfg.seed,
           "num_envs": cfg.num_envs, "updates": updates, "rollout_steps": cfg.agent.rollout_steps,
           "minibatch_size": cfg.agent.minibatch_size, "epochs": cfg.agent.epochs,
           "max_tree_tokens": cfg.agent.max_tree_tokens,
           "recompute_activations": cfg.agent.recompute_activations, "modes": results,
           "host": host_info(cfg.device)}
    if len(modes) > 1:
        first, last = results[modes[0]], results[modes[-1]]
        out["speedups"] = {
            "grad_step": round(first["grad_step_s"] / last["grad_step_s"], 2),
            "env_steps_per_s": round(last["steps_per_s"] / first["steps_per_s"], 2),
            "peak_rss": round(first["peak_rss_mb"] / last["peak_rss_mb"], 2)}
    return out
