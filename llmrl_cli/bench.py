"""``llmrl bench``: the paper code's pattern and ours, the same ``dqn-prior`` budget, one process.

Both modes train the same env, seed, prior model, k and agent settings for the same number of
episodes (evaluations included, as in a real run), starting from cold caches. They differ only
in how the pieces are driven:

``reference`` -- the pattern of the paper's ``value-based/train_overcooked.py``, faithfully:

- one environment; evaluation episodes one after another, training waiting for them;
- one prompt per LLM call: ``generate(num_return_sequences=k, output_scores=True,
  output_hidden_states=True)`` with a stopping criterion that decodes every sample after each
  token (its ``EndOfFunctionCriteria``). ``reference_stop`` says when it stops:

  - ``newline`` (default): once every sample holds a newline or the end-of-text token -- kinder
    to the reference than the paper's code, and the number benchmarks/README.md quotes;
  - ``paper``: once every sample holds one of the paper's stop words (``<END>``, ``<eos>``, the
    tokenizer's end-of-text; ``value-based/train_overcooked.py``), which rarely fire before
    ``max_new_tokens`` (10), so most calls decode all 10 tokens as the paper's did.

  Both modes run with the same stop rule (``newline``: ``stop_on_newline`` on; ``paper``: off)
  and cut each sample as our path does (``llm.cut_completion``), so the stop rule changes the
  cost and not the proposals. Sampling is plain temperature/top-p (``top_k=0``), the
  distribution our path draws from, so the two modes learn from the same prior;
- an in-memory proposal memo keyed by the prompt (history + observation; its ``saved_actions``;
  both modes run with memoised draws, ``prior_draws: memo``, as that script does);
- every candidate encoded afresh at every step (no embedding cache);
- 40 gradient steps every 5 episodes (the env preset's schedule, shared by both modes).

``ours`` -- the default path: ``num_envs`` environments step together (one prior call, one
encoder call and one Q forward per batch step), evaluation episodes step together and beside
training (their states in its calls, played by a frozen copy of Q; ``eval_overlap``), each prompt
is prefilled once and its KV cache shared by the k samples, proposals go through the persistent
proposal cache (fresh for the bench) and embeddings through the exact embedding cache.

Steps per second count training env steps over the whole run's wall time.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .config import RunConfig
from .devices import resolve_device
from .encoders import TextEncoder
from .errors import UserError
from .priors.cache import ProposalCache
from .priors.llm import PAPER_STOP_WORDS, cut_completion
from .priors.local import LocalLLMPrior
from .runner import Runner

MODES = ("reference", "ours")
#: when the reference's generate stops (see the module docstring)
REFERENCE_STOPS = ("newline", "paper")


def check_reference_stop(reference_stop: str) -> None:
    """One error line (exit 2) unless ``reference_stop`` is one of ``REFERENCE_STOPS``."""
    if reference_stop not in REFERENCE_STOPS:
        raise UserError(f"unknown --reference-stop {reference_stop!r}; choose from: "
                        f"{', '.join(REFERENCE_STOPS)}")


# -- the reference pattern's pieces ---------------------------------------------------------------
@dataclass
class ReferencePrior(LocalLLMPrior):
    """One prompt per ``generate`` call with ``num_return_sequences=k`` (the paper's code)."""

    name: str = "local-reference"
    #: plain transformers, as the paper's code ran it
    cpu_kernels: bool = False
    #: ``newline`` | ``paper``: the stop strings of its stopping criterion (module docstring)
    stop: str = "newline"

    @torch.inference_mode()
    def _generate(self, jobs: list[tuple[str, int]], k: int) -> list[list[str]]:
        from transformers import StoppingCriteria, StoppingCriteriaList

        engine = self.engine
        engine.load()
        tok, lm = engine.tokenizer, engine.lm
        if self.stop not in REFERENCE_STOPS:
            raise ValueError(f"unknown reference stop {self.stop!r}")
        stops = ("\n",) if self.stop == "newline" else PAPER_STOP_WORDS
        stops += (tok.eos_token,)

        class EveryStringStopped(StoppingCriteria):
            """Decode all samples after each token; stop when each holds a stop string."""

            def __init__(self, start: int) -> None:
                self.start = start

            def __call__(self, input_ids, scores, **kwargs) -> bool:
                texts = tok.batch_decode(input_ids[:, self.start:])
                return all(any(stop in t for stop in stops) for t in texts)

        out = []
        for prompt, _ in jobs:  # memoised draws: every job is a prompt's first block
            encoded = engine.tokenize([prompt])
            ids = encoded.input_ids
            result = lm.generate(
                input_ids=ids, attention_mask=encoded.attention_mask,
                num_return_sequences=k, max_new_tokens=self.max_new_tokens,
                stopping_criteria=StoppingCriteriaList([EveryStringStopped(ids.shape[1])]),
                pad_token_id=tok.eos_token_id, do_sample=self.temperature > 0,
                temperature=self.temperature if self.temperature > 0 else None,
                top_p=self.top_p, top_k=0, return_dict_in_generate=True, output_scores=True,
                output_hidden_states=True, use_cache=True,
            )
            new = result.sequences[:, ids.shape[1]:]
            self.stats.tokens += int(new.numel())
            texts = tok.batch_decode(new, skip_special_tokens=True)
            out.append([cut_completion(t, self.stop_on_newline) for t in texts])
        return out


class ReferenceEncoder(TextEncoder):
    """Runs the encoder on every text it is given, every time (no cache, no de-duplication)."""

    @classmethod
    def from_encoder(cls, encoder: TextEncoder) -> "ReferenceEncoder":
        """The same loaded model and settings as ``encoder``, without its cache."""
        reference = cls.__new__(cls)
        reference.__dict__.update(encoder.__dict__)
        return reference

    def encode(self, texts: list[str]) -> torch.Tensor:
        self.stats.texts += len(texts)
        if not texts:
            return torch.empty(0, self.dim, device=self.device)
        started = time.perf_counter()
        vectors = self._run_model(texts)
        self.stats.seconds += time.perf_counter() - started
        self.stats.encoded += len(texts)
        return vectors


class TimedEnv:
    """Delegates to an env and adds the seconds spent in ``step``/``reset`` to a counter."""

    def __init__(self, env, clock: list[float]) -> None:
        self._env, self._clock = env, clock

    def step(self, action):
        started = time.perf_counter()
        try:
            return self._env.step(action)
        finally:
            self._clock[0] += time.perf_counter() - started

    def reset(self, **kwargs):
        started = time.perf_counter()
        try:
            return self._env.reset(**kwargs)
        finally:
            self._clock[0] += time.perf_counter() - started

    def __getattr__(self, name):
        return getattr(self._env, name)


# -- one mode -------------------------------------------------------------------------------------
class BenchRunner(Runner):
    """A Runner whose pieces follow ``mode`` and whose env time is measured."""

    def __init__(self, cfg: RunConfig, mode: str, scratch: Path,
                 reference_stop: str = "newline", **kwargs) -> None:
        super().__init__(cfg, **kwargs)
        self.mode = mode
        self.reference_stop = reference_stop
        self.scratch = scratch
        self.env_clock = [0.0]

    def _build(self) -> None:
        super()._build()
        cfg = self.cfg
        if self.mode == "reference":
            self.encoder = ReferenceEncoder.from_encoder(self.encoder)
            local = self.prior
            # the same settings; its own plain model (not the loaded one, nor its kernels)
            self.prior = ReferencePrior(**{f.name: getattr(local, f.name)
                                           for f in dataclasses.fields(LocalLLMPrior)
                                           if f.name not in ("name", "cpu_kernels")
                                           and not f.name.startswith("_")},
                                        stop=self.reference_stop)
            self.prior.cache = ProposalCache(None)  # the paper's in-memory saved_actions
            self.eval_slots = self.eval_slots[:1]  # evaluation episodes one after another
        else:
            self.prior.cache = ProposalCache(self.scratch / f"proposals-{cfg.seed}.sqlite")
        for slot in [*self.slots, *self.eval_slots]:
            slot.env = TimedEnv(slot.env, self.env_clock)


@dataclass
class ModeResult:
    mode: str
    num_envs: int
    run_ahead: int
    episodes: int
    env_steps: int
    wall_s: float
    steps_per_s: float
    prior_s: float
    encoder_s: float
    update_s: float
    env_s: float
    llm_queries: int
    llm_model_queries: int
    llm_tokens: int
    prompt_tokens: int
    reused_tokens: int
    prior_hit_rate: float
    encoder_texts: int
    encoder_hit_rate: float
    peak_rss_mb: float
    eval_return: float
    eval_success: float
    csv: str = field(default="")


def _reset_peak_rss() -> None:
    try:  # Linux: writing 5 to clear_refs resets VmHWM, the peak resident set size
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def rss_mb(field: str = "VmRSS") -> float:
    """This process's memory from /proc/self/status: ``VmRSS`` (resident now) or ``VmHWM``
    (peak resident); NaN where there is no /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def peak_rss_mb() -> float:
    peak = rss_mb("VmHWM")
    if peak == peak:  # not NaN
        return peak
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


#: CPU flags that decide which kernels the prior's matrix multiplies get
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def host_info(device: str = "auto") -> dict:
    """What the bench ran on, for its JSON: CPU model (from /proc/cpuinfo where there is one),
    cores, the kernel-relevant CPU flags, torch's threads and version, and the GPU if used."""
    info: dict = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                  "threads": torch.get_num_threads(), "torch": torch.__version__}
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    fields: dict[str, str] = {}
    for line in lines:
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    if "model name" in fields:
        info["cpu"] = fields["model name"]
        info["cpu_family_model"] = f"{fields.get('cpu family', '?')}/{fields.get('model', '?')}"
        flags = set(fields.get("flags", "").split())
        info["cpu_flags"] = [f for f in CPU_FLAGS if f in flags]
    if resolve_device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def run_mode(cfg: RunConfig, mode: str, root: Path, progress=None,
             name: str | None = None, reference_stop: str = "newline") -> ModeResult:
    """Train ``cfg`` in ``mode`` (reference | ours) from cold caches; measure it. The run is the
    experiment ``bench-<name>`` under ``root`` (``name``: the mode by default), its CSV at
    ``root/bench-<name>/<env>/dqn-prior/seed_<n>.csv``."""
    if mode not in MODES:
        raise ValueError(f"unknown bench mode {mode!r}")
    experiment = f"bench-{name or mode}"
    reference = mode == "reference"
    mode_cfg = dataclasses.replace(cfg, num_envs=1 if reference else cfg.num_envs,
                                   eval_overlap=cfg.eval_overlap and not reference,
                                   run_ahead=0 if reference else cfg.run_ahead,
                                   prior_draws="memo",
                                   stop_on_newline=reference_stop == "newline",
                                   out=str(root), experiment=experiment)
    scratch = root / experiment
    scratch.mkdir(parents=True, exist_ok=True)
    for stale in scratch.glob(f"proposals-{cfg.seed}.sqlite*"):  # cold caches, always
        stale.unlink()
    _reset_peak_rss()
    runner = BenchRunner(mode_cfg, mode, scratch, reference_stop, overwrite=True,
                         log=lambda msg: None, progress=progress)
    started = time.perf_counter()
    path = runner.run()
    wall = time.perf_counter() - started
    lines = path.read_text().splitlines()
    row = dict(zip(lines[0].split(","), lines[-1].split(",")))
    p, e = runner.prior.stats, runner.encoder.stats
    return ModeResult(
        mode=mode, num_envs=mode_cfg.num_envs, run_ahead=mode_cfg.run_ahead, episodes=cfg.episodes,
        env_steps=runner.env_steps, wall_s=round(wall, 3),
        steps_per_s=round(runner.env_steps / wall, 3), prior_s=round(p.seconds, 3),
        encoder_s=round(e.seconds, 3), update_s=round(runner.update_seconds, 3),
        env_s=round(runner.env_clock[0], 3), llm_queries=p.queries,
        llm_model_queries=p.model_queries, llm_tokens=p.tokens,
        prompt_tokens=p.prompt_tokens, reused_tokens=p.reused_tokens,
        prior_hit_rate=round(p.hit_rate, 4), encoder_texts=e.texts,
        encoder_hit_rate=round(e.hit_rate, 4), peak_rss_mb=round(peak_rss_mb(), 1),
        eval_return=float(row["eval_return"]), eval_success=float(row["eval_success"]),
        csv=str(path),
    )


def bench(cfg: RunConfig, modes: tuple[str, ...] = MODES, progress_for=None,
          scratch: Path | None = None, more_num_envs: tuple[int, ...] = (),
          reference_stop: str = "newline") -> dict:
    """Run each mode on ``cfg``; return the results and ``speedup`` (ours / reference).

    ``more_num_envs``: also run ours with these numbers of envs (results ``ours-<n>envs``, each
    with its speed-up in ``speedups``), against the same reference run.
    ``scratch``: keep the runs there (``bench-<name>/``, one experiment per run) instead of in a
    temporary folder; a seed already there is refused, never overwritten.
    ``reference_stop``: ``newline`` | ``paper``, when the reference's generate stops.
    """
    check_reference_stop(reference_stop)
    own = scratch is None
    tmp = tempfile.TemporaryDirectory(prefix="llmrl-bench-") if own else None
    root = Path(tmp.name) if tmp else Path(scratch)
    runs = [(mode, cfg) for mode in modes]
    if "ours" in modes:
        runs += [(f"ours-{n}envs", dataclasses.replace(cfg, num_envs=n)) for n in more_num_envs]
    for name, _ in runs:  # kept runs are the user's: never overwritten
        done = sorted((root / f"bench-{name}").rglob(f"seed_{cfg.seed}.csv"))
        if done:
            raise UserError(f"{done[0]} already holds a bench run of seed {cfg.seed}; choose "
                            "another --out or --seed")
    try:
        results = {}
        for name, run_cfg in runs:
            progress = progress_for(name) if progress_for else None
            mode = "ours" if name.startswith("ours") else name
            results[name] = run_mode(run_cfg, mode, root, progress, name, reference_stop)
    finally:
        if tmp:
            tmp.cleanup()
    out = {"env": cfg.env, "algo": cfg.algo, "prior": cfg.prior_label, "model": cfg.prior_model,
           "k": cfg.k, "seed": cfg.seed, "episodes": cfg.episodes,
           "reference_stop": reference_stop, "host": host_info(cfg.device),
           "modes": {m: dataclasses.asdict(r) for m, r in results.items()}}
    if "reference" in results and "ours" in results:
        reference = results["reference"].steps_per_s
        out["speedup"] = round(results["ours"].steps_per_s / reference, 2)
        out["speedups"] = {str(r.num_envs): round(r.steps_per_s / reference, 2)
                           for name, r in results.items() if name != "reference"}
    return out
