"""Run configuration: dataclasses, per-env presets, YAML loading and validation.

Precedence (lowest first): dataclass defaults (the paper's Overcooked settings) < the env's
preset (``TextEnv.preset``) < a ``--config`` YAML < command-line flags. The resolved config is
written beside every run's CSV.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .agents.cql import CQLConfig
from .agents.dqn import DQNConfig
from .agents.gflan import GFlanConfig
from .algos import algorithm, names
from .devices import DTYPE_CHOICES
from .envs import check_env_options, env_class, env_names
from .errors import UserError, unknown_choice
from .priors.draws import DRAWS
from .priors.projection import LEGACY_PROJECTIONS, PROJECTIONS
from .settings import check, setting

PRIOR_MODES = ("sample", "score")

#: The env presets' agent settings that also apply to the offline algos. The rest of a preset is
#: the online DQN schedule (batch, buffer, target updates, training phases, exploration,
#: evaluation policy); for cql and cql-prior, CQLConfig's own defaults (the paper's CQL
#: settings) stand unless a YAML or flag sets them.
OFFLINE_PRESET_AGENT_KEYS = ("eval_episodes", "feature_norm")

#: Settings that do not change a run's results (a run may resume or extend across them).
NON_IDENTITY_KEYS = ("device", "out", "prior_cache", "episodes", "prior_url", "prior_draw_pool",
                     "prior_timeout_s", "prior_retries",
                     "encoder_cache_size",
                     "prefix_cache_mb", "prior_batch_kv_mb", "prior_cpu_kernels",
                     "checkpoint_minutes", "eval_overlap", "num_env_workers")
#: Settings added after results were first written whose effect, in results written before,
#: was not their default (so a resume finds those results' settings as they ran)
VALUES_BEFORE_ADDED = {"run_ahead": 0, "stop_on_newline": True, "prior_draws": "memo",
                       "history_length": 3, "baseline_candidates": 0}
#: The same for agent settings
AGENT_VALUES_BEFORE_ADDED = {"dataset_max_new_tokens": 10, "buffer_balance": "off",
                             "q_text_task": ""}
#: Agent settings since removed, with the value under which old results match the code now
REMOVED_AGENT_SETTINGS = {"reference_td_broadcast": False}
#: The same inside ``agent``: the offline budget (a longer run continues a shorter one), and
#: how GFlan lays out its forwards (float rounding at most).
NON_IDENTITY_AGENT_KEYS = ("grad_steps", "max_tree_tokens", "recompute_activations")


@dataclass
class RunConfig:
    """One run = env x algo x prior x seed. Each field says what it means, its unit and the
    paper's value (``paper``; per env, the presets hold those: docs/paper-settings.md).
    Fields by concern: the run (env, algo, seed, budget, output), the prior (prior_*, k,
    sampling, projection, draws, history), the encoder, the local engine's resources, and the
    agent's hyperparameters (``agent``: DQNConfig, CQLConfig or GFlanConfig)."""

    # -- the run ---------------------------------------------------------------------------
    env: str = setting("frozenlake", "the environment (llmrl envs)")
    algo: str = setting("dqn-prior", "the algorithm (llmrl algos)")
    episodes: int = setting(300, "online training episodes", unit="episodes",
                            paper="Tomato 200, Salad 300, ALFWorld 1000", low=1,
                            label="--episodes")
    seed: int = setting(0, "the run's seed: envs, networks, sampling", low=0, label="--seed")
    num_envs: int = setting(1, "environments stepping together (one batch per step)",
                            paper="1", low=1, label="--num-envs")
    num_env_workers: int = setting(0, "step the envs in this many worker processes, all at "
                                   "once (0: in this process); the same results",
                                   unit="processes", low=0, label="--num-env-workers")
    device: str = setting("auto", "where networks run: auto, cpu, cuda[:n]")
    experiment: str = setting("default", "the results folder's experiment name")
    out: str = setting("results", "the results root folder")
    checkpoint_minutes: float = setting(
        10.0, "online runs: checkpoint this often between evaluations; 0 = only at them",
        unit="minutes", low=0)
    eval_overlap: bool = setting(
        True, "online DQN runs: evaluations step beside training with a frozen copy of Q "
        "(ours); false = training waits while each evaluation runs alone, as the paper's code",
        paper="false")
    run_ahead: int = setting(
        0, "online DQN runs, LLM prior, num_envs > 1: an env whose prompt is new waits at most "
        "this many batch steps while envs with asked prompts step on (ours; needs prior_draws: "
        "memo); 0 = lockstep", unit="batch steps", paper="0", low=0)
    dataset: str | None = setting(None, "offline algos: a dataset file (default: the paper's "
                                  "when imported, else one collected once)")
    max_transitions: int | None = setting(None, "offline algos: use this many of its "
                                          "transitions", unit="transitions", low=1,
                                          label="--max-transitions")
    env_kwargs: dict[str, Any] = setting(doc="the env's own options (llmrl envs)", factory=dict)
    # -- the prior -------------------------------------------------------------------------
    prior: str | None = setting(None, "the action prior: uniform, local, vllm, expert-mix:EPS "
                                "(default: uniform for the baselines, local otherwise)")
    prior_model: str = setting("SmolLM2-135M-Instruct", "the LLM: the embedded model, a folder "
                               "or a .gguf", paper="Qwen1.5-7B (Salad 14B, ALFWorld test 32B)")
    prior_url: str | None = setting(None, "vllm: the server (default http://127.0.0.1:8000)")
    prior_timeout_s: float = setting(120.0, "vllm: seconds a request may take", unit="seconds",
                                     above=0)
    prior_retries: int = setting(3, "vllm: retries of a request that failed or got a wrong "
                                 "answer (with backoff 1, 2, 4, ... s)", low=0)
    prior_mode: str = setting("sample", "sample: k completions projected onto actions; score: "
                              "the LLM's log-probability of each action", paper="sample",
                              choices=PRIOR_MODES, label="prior mode")
    prior_permutations: int = setting(1, "score mode: average over this many action orderings",
                                      low=1, label="--prior-permutations")
    prior_uniform_mix: float = setting(0.0, "mix this share of uniform into the prior (ours)",
                                       paper="0", low=0.0, high=1.0,
                                       label="--prior-uniform-mix")
    projection: str = setting(
        "paper", "sample mode: how a completion becomes an admissible action; paper = substring "
        "count, ties to the later action, nothing matched -> the last action; normalised = ours "
        "(priors/projection.py)", paper="paper", choices=PROJECTIONS)
    stop_on_newline: bool = setting(
        False, "sample mode: also stop and cut each completion at its first newline (ours)",
        paper="false (stops at <END>, <eos>, end of text)")
    prior_draws: str = setting(
        "fresh", "fresh: each visit of a prompt gets new draws; memo: every visit gets the first "
        "(priors/draws.py)", paper="fresh; memo in Overcooked Tomato", choices=DRAWS)
    prior_draw_pool: int = setting(
        1, "fresh draws: a prompt asked draws this many visits' blocks at once and caches the "
        "later ones (same draws, lower cost)", unit="visits", low=1)
    chat_template: bool = setting(False, "wrap the prompt in the model's chat template",
                                  paper="false")
    temperature: float = setting(1.0, "sampling temperature", paper="1.0 (ALFWorld test 0.8)",
                                 low=0)
    top_p: float = setting(1.0, "nucleus sampling mass", paper="1.0 (ALFWorld test 0.95)",
                           above=0, high=1)
    max_new_tokens: int = setting(10, "tokens per completion", unit="tokens",
                                  paper="10 (CQL's dataset proposals 20)", low=1)
    k: int = setting(5, "proposals per state", paper="5 (ALFWorld test 15)", low=1,
                     label="--k")
    history_length: int = setting(3, "observation/action lines of history in the prompt",
                                  unit="lines", paper="Tomato 3, Salad 5, ALFWorld 0", low=0)
    baseline_candidates: int = setting(
        0, "dqn: > 0 cuts or repeats the admissible list to this many candidates; 0 = every "
        "admissible action once", unit="actions", paper="ALFWorld DQN 30, else 0", low=0)
    prior_cache: bool = setting(True, "keep proposals in the persistent cache (same results)")
    # -- the encoder -----------------------------------------------------------------------
    encoder: str = setting("all-MiniLM-L6-v2", "the frozen text encoder of Q's input",
                           paper="bert-base-uncased (not available here)")
    pooling: str = setting("cls", "how the encoder's token vectors become one: cls or mean",
                           paper="cls")
    encoder_cache_size: int = setting(200_000, "embeddings kept (LRU)", unit="embeddings", low=0)
    # -- the local engine's resources (same results) ---------------------------------------
    prefix_cache_mb: int = setting(512, "local prior on CPU: prompt keys/values kept for reuse; "
                                   "0 = off", unit="MiB", low=0)
    prior_batch_kv_mb: int = setting(1024, "local prior: keys/values one decode or score batch "
                                     "may hold", unit="MiB", low=1)
    prior_dtype: str = setting("auto", "local prior: auto (bf16 on CUDA, fp32 on CPU), bfloat16, "
                               "float32", choices=DTYPE_CHOICES)
    prior_cpu_kernels: bool = setting(True, "local prior, fp32 on CPU: packed linears, GQA, "
                                      "unpadded rows")
    # -- the agent -------------------------------------------------------------------------
    agent: DQNConfig | CQLConfig | GFlanConfig = setting(
        doc="the algorithm's hyperparameters", factory=DQNConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.out) / self.experiment / self.env / self.algo

    @property
    def stem(self) -> Path:
        return self.run_dir / f"seed_{self.seed}"

    @property
    def prior_label(self) -> str:
        label = self.prior or "uniform"
        if self.prior_uniform_mix:
            label += f"+uniform{self.prior_uniform_mix:g}"
        return label

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        """What decides the results (used to refuse resuming a different run's files)."""
        return identity_of(self.to_dict())


#: RunConfig's settings by concern, in the order ``llmrl config show`` prints them. YAML keys
#: stay flat, each the name of its flag (``prior_model`` is ``--prior-model``); every setting is
#: in exactly one group (tests/test_cli.py checks).
CONCERNS: dict[str, tuple[str, ...]] = {
    "run": ("algo", "episodes", "seed", "num_envs", "num_env_workers", "device", "experiment",
            "out", "checkpoint_minutes", "eval_overlap", "run_ahead", "dataset",
            "max_transitions"),
    "env": ("env", "env_kwargs"),
    "prior": ("prior", "prior_model", "prior_url", "prior_timeout_s", "prior_retries",
              "prior_mode", "prior_permutations", "prior_uniform_mix", "projection",
              "stop_on_newline", "prior_draws", "prior_draw_pool", "chat_template",
              "temperature", "top_p", "max_new_tokens", "k", "history_length",
              "baseline_candidates", "prior_cache"),
    "encoder": ("encoder", "pooling", "encoder_cache_size"),
    "local engine (same results)": ("prefix_cache_mb", "prior_batch_kv_mb", "prior_dtype",
                                    "prior_cpu_kernels"),
    "agent": ("agent",),
}


def identity_of(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings without those that do not change results (NON_IDENTITY_*), with names
    earlier versions wrote translated (LEGACY_PROJECTIONS, REMOVED_AGENT_SETTINGS)."""
    out = {k: v for k, v in settings.items() if k not in NON_IDENTITY_KEYS}
    if out.get("projection") in LEGACY_PROJECTIONS:
        out["projection"] = LEGACY_PROJECTIONS[out["projection"]]
    if isinstance(out.get("agent"), dict):
        out["agent"] = {k: v for k, v in out["agent"].items() if k not in NON_IDENTITY_AGENT_KEYS
                        and REMOVED_AGENT_SETTINGS.get(k, object()) != v}
    return out


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
               dict: "a mapping"}


def _is_union(hint: Any) -> bool:
    return isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union


def _matches(value: Any, hint: Any) -> bool:
    """Whether a YAML/flag value fits a dataclass annotation (an int is a float; a bool is not)."""
    if hint is Any:
        return True
    if _is_union(hint):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    hint = typing.get_origin(hint) or hint
    if hint is type(None):
        return value is None
    if isinstance(value, bool):
        return hint is bool
    if hint is float:
        return isinstance(value, (int, float))
    return isinstance(value, hint)


def _describe(hint: Any) -> str:
    if _is_union(hint):
        words = [_describe(arg) for arg in typing.get_args(hint) if arg is not type(None)]
        return " or ".join(words) + (" (or null)" if type(None) in typing.get_args(hint) else "")
    hint = typing.get_origin(hint) or hint
    return _TYPE_WORDS.get(hint, getattr(hint, "__name__", str(hint)))


def check_types(cls: type, values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``values`` with each checked against its field's type; a bad one is one error line.

    Without this, ``prior_cache: maybe`` would silently count as true and a string in a number
    field would fail deep inside a run. One conversion: PyYAML reads ``1e-3`` (no dot, YAML 1.1)
    as a string, so a number field takes a string that reads as a number.
    """
    hints = typing.get_type_hints(cls)
    out = dict(values)
    for name, value in values.items():
        hint = hints.get(name)
        if hint is None or _matches(value, hint):
            continue
        if isinstance(value, str) and _matches(1.5, hint):
            try:
                out[name] = float(value)
                continue
            except ValueError:
                pass
        raise UserError(f"{prefix}{name} must be {_describe(hint)}, got {value!r}")
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML keeps the last one
    silently, so a setting written twice would quietly lose one of its values)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """The settings of a YAML file; one error line if it is missing, empty, not UTF-8, not valid
    YAML, repeats a key or holds no mapping."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {str(path)!r} does not exist")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"config file {str(path)!r} is not UTF-8 text (byte {exc.start})") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where else ""
        raise UserError(f"config file {str(path)!r} is not valid YAML{at}: "
                        f"{getattr(exc, 'problem', exc)}") from None
    if data is None:
        raise UserError(f"config file {str(path)!r} is empty; write the settings to change "
                        "(`llmrl config show` lists them)")
    if not isinstance(data, dict):
        raise UserError(f"config file {str(path)!r} must hold a mapping of settings")
    return data


def build_config(yaml_data: dict[str, Any] | None = None, sources: dict[str, str] | None = None,
                 **flags: Any) -> RunConfig:
    """Resolve a RunConfig from preset, YAML and flags (flags that are None are unset).
    ``sources``, if given, is filled with where each setting set by a layer came from
    ("preset", "preset per_algo", "yaml", "yaml per_algo", "flag"; agent settings as
    ``agent.<name>``); a setting it does not name is its dataclass default."""
    sources = {} if sources is None else sources
    yaml_data = dict(yaml_data or {})
    flags = {k: v for k, v in flags.items() if v is not None}
    env = flags.get("env", yaml_data.get("env", RunConfig.env))
    if env not in env_names():
        raise unknown_choice("env", env, env_names())
    algo = flags.get("algo", yaml_data.get("algo", RunConfig.algo))
    spec = algorithm(algo)
    agent_data: dict[str, Any] = {}
    merged: dict[str, Any] = {}
    # preset first, then the YAML; the env presets hold Q-learning settings, not PPO ones
    preset = env_class(env).preset if spec.family != "policy" else {}
    if spec.offline:
        preset = {**preset, "per_algo": {a: v for a, v in preset.get("per_algo", {}).items()
                                          if algorithm(a).offline},
                  "agent": {k: v for k, v in preset.get("agent", {}).items()
                            if k in OFFLINE_PRESET_AGENT_KEYS}}
    run_keys = {f.name for f in dataclasses.fields(RunConfig)} - {"agent"}
    for name, layer in (("preset", preset), ("yaml", yaml_data)):
        layer = dict(layer)
        per_algo = layer.pop("per_algo", {}) or {}
        layer_agent = layer.pop("agent", {}) or {}
        agent_data = _merge(agent_data, layer_agent)
        merged = _merge(merged, layer)
        # an algo's own settings: run settings (history_length, ...) or agent ones (epsilon, ...)
        own = per_algo.get(algo, {}) or {}
        merged = _merge(merged, {k: v for k, v in own.items() if k in run_keys})
        agent_data = _merge(agent_data, {k: v for k, v in own.items() if k not in run_keys})
        sources.update({k: name for k in layer})
        sources.update({f"agent.{k}": name for k in layer_agent})
        sources.update({(k if k in run_keys else f"agent.{k}"): f"{name} per_algo" for k in own})
    flag_agent = flags.pop("agent", {}) or {}
    agent_data = _merge(agent_data, flag_agent)
    merged = _merge(merged, flags)
    sources.update({k: "flag" for k in flags})
    sources.update({f"agent.{k}": "flag" for k in flag_agent})
    run_fields = {f.name for f in dataclasses.fields(RunConfig)} - {"agent"}
    unknown = set(merged) - run_fields
    if unknown:
        raise UserError(f"unknown setting(s) {', '.join(sorted(unknown))}; valid run settings: "
                        f"{', '.join(sorted(run_fields))} (and 'agent', 'per_algo')")
    merged = check_types(RunConfig, merged)
    if merged.get("projection") in LEGACY_PROJECTIONS:
        merged["projection"] = LEGACY_PROJECTIONS[merged["projection"]]
    agent_cls = spec.config
    agent_fields = {f.name for f in dataclasses.fields(agent_cls)}
    unknown = set(agent_data) - agent_fields
    if unknown:
        raise UserError(f"unknown agent setting(s) {', '.join(sorted(unknown))}; valid: "
                        f"{', '.join(sorted(agent_fields))}")
    agent_data = check_types(agent_cls, agent_data, prefix="agent.")
    try:
        agent = agent_cls(**agent_data)
        agent.validate()
    except (TypeError, ValueError) as exc:
        raise UserError(f"bad agent setting: {exc}") from None
    cfg = RunConfig(**merged, agent=agent)
    validate(cfg)
    return cfg


def validate(cfg: RunConfig) -> None:
    from .devices import resolve_device
    from .priors import check_prior_name

    resolve_device(cfg.device)
    check_env_options(cfg.env, cfg.env_kwargs)
    if Path(cfg.out).exists() and not Path(cfg.out).is_dir():
        raise UserError(f"--out {cfg.out} is a file, not a folder")
    spec = algorithm(cfg.algo)
    if not spec.takes_prior:
        if cfg.prior not in (None, "uniform"):
            raise UserError(f"--algo {cfg.algo} learns over all admissible actions and takes no "
                            f"prior (got --prior {cfg.prior}); use --algo {cfg.algo}-prior "
                            f"--prior {cfg.prior}")
        cfg.prior = "uniform"
    elif cfg.prior is None:
        cfg.prior = "local"
    check_prior_name(cfg.prior)
    if not spec.learns and cfg.prior == "uniform":
        raise UserError(f"--algo {cfg.algo} acts by the prior alone; give it an LLM or "
                        "expert-mix prior, not --prior uniform (that is a random policy)")
    if spec.family == "policy" and cfg.prior != "local":
        raise UserError(f"--algo {cfg.algo} trains the LLM itself in-process: use --prior local "
                        f"(another model: --prior-model FOLDER), not --prior {cfg.prior}")
    try:
        check(cfg)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    checks = [  # rules that relate several settings
        (cfg.run_ahead == 0 or cfg.prior_draws == "memo",
         "run_ahead steps envs whose proposals are cached; it needs prior_draws: memo (under "
         "fresh draws every visit asks the model)"),
        (cfg.baseline_candidates == 0 or not spec.takes_prior,
         "baseline_candidates is for the baselines "
         f"({', '.join(a for a in names(proposes=False) if not algorithm(a).takes_prior)})"),
        (spec.offline or (cfg.dataset is None and cfg.max_transitions is None),
         f"--dataset and --max-transitions are for offline algos ({', '.join(names('offline'))})"),
        (cfg.prior_permutations == 1 or cfg.prior_mode == "score",
         "--prior-permutations averages scores: use it with --prior-mode score"),
        (cfg.prior_url is None or cfg.prior == "vllm",
         f"--prior-url is for --prior vllm (got --prior {cfg.prior})"),
        (not (cfg.chat_template and cfg.prior == "vllm"),
         "--chat-template is not available with --prior vllm (it uses the completions API)"),
        (cfg.experiment and "/" not in cfg.experiment,
         f"--experiment must be a plain name, got {cfg.experiment!r}"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)


def dump_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
