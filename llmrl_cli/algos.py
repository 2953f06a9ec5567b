"""The algorithms llmrl runs, one entry each.

The CLI, ``sweep``, ``evaluate``, ``report`` and the config resolver read this table and nothing
else to tell one algorithm from another: adding an algorithm is one entry here and its agent.

Three training loops serve them (``family``): ``online`` value-based learning while acting
(``runner.Runner``), ``offline`` value-based learning from a fixed dataset, evaluated online
(``offline.OfflineRunner``), and ``policy``: the LLM itself as the policy, trained with PPO
(``gflan.GFlanRunner``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from .agents.cql import CQLConfig
from .agents.dqn import DQNConfig
from .agents.gflan import GFlanConfig
from .errors import unknown_choice

#: the loop class of each family, as "module:class" (imported when a run starts)
LOOPS = {"online": "runner:Runner", "offline": "offline:OfflineRunner",
         "policy": "gflan:GFlanRunner"}


@dataclass(frozen=True)
class Algorithm:
    name: str
    #: one line for `--help` and error messages
    summary: str
    #: which training loop runs it: "online", "offline" or "policy" (see the module doc)
    family: str
    #: the class of its ``agent:`` settings
    config: type
    #: whether its actions come from the prior's k proposals; False: it chooses among every
    #: admissible action and takes no prior (the baselines), or the LLM is the policy (gflan)
    proposes: bool
    #: False: it acts by the prior alone and trains nothing
    learns: bool = True
    #: the algorithm a report compares it with (dqn for dqn-prior)
    baseline: str | None = None

    @property
    def offline(self) -> bool:
        return self.family == "offline"

    @property
    def takes_prior(self) -> bool:
        """Whether a run of it has a prior: the proposers, and the policy family, whose policy
        is the local LLM."""
        return self.proposes or self.family == "policy"

    def loop(self) -> type:
        """The training loop's class (a ``training.loop.Loop``)."""
        module, name = LOOPS[self.family].split(":")
        return getattr(importlib.import_module(f"llmrl_cli.{module}"), name)


ALGORITHMS: dict[str, Algorithm] = {a.name: a for a in [
    Algorithm("dqn", "online Q-learning over all admissible actions (baseline)",
              "online", DQNConfig, proposes=False),
    Algorithm("dqn-prior", "online Q-learning over k LLM-proposed actions, act by "
              "softmax(Q/alpha)", "online", DQNConfig, proposes=True, baseline="dqn"),
    Algorithm("cql", "offline conservative Q-learning over all admissible actions (baseline)",
              "offline", CQLConfig, proposes=False),
    Algorithm("cql-prior", "offline conservative Q-learning over k LLM-proposed actions",
              "offline", CQLConfig, proposes=True, baseline="cql"),
    Algorithm("gflan", "the LLM as the policy over admissible actions, PPO with LoRA (GLAM)",
              "policy", GFlanConfig, proposes=False),
    Algorithm("gflan-prior", "gflan + beta * KL(pi || frozen LLM prior), estimated from k "
              "prior samples", "policy", GFlanConfig, proposes=False, baseline="gflan"),
    Algorithm("llm", "the prior alone (pure-LLM baseline): acts by one of its k proposals "
              "(greedy: the most frequent), no learning", "online", DQNConfig, proposes=True,
              learns=False),
]}


def algorithm(name: str) -> Algorithm:
    """The entry of ``name``; an unknown name is a user error listing the known ones."""
    if name not in ALGORITHMS:
        raise unknown_choice("algo", name, ALGORITHMS)
    return ALGORITHMS[name]


def names(family: str | None = None, proposes: bool | None = None) -> tuple[str, ...]:
    """The algorithms' names, optionally of one ``family`` and/or ``proposes`` value."""
    return tuple(a.name for a in ALGORITHMS.values()
                 if (family is None or a.family == family)
                 and (proposes is None or a.proposes == proposes))


def make_loop(cfg, **kwargs):
    """The training loop for run ``cfg`` (``.run()`` trains it and returns its CSV path)."""
    return algorithm(cfg.algo).loop()(cfg, **kwargs)
