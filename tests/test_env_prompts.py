"""The prior's prompt and the Q-network's input for the first two states of seed 0, byte for
byte, for each env that is not one of the paper's (the paper's are pinned against the paper's
code in test_paper_settings.py). Re-record after a deliberate change of an env's text:
``LLMRL_RECORD_PROMPTS=1 pytest tests/test_env_prompts.py``."""

import os
from pathlib import Path

import pytest

from llmrl_cli.config import build_config
from llmrl_cli.prompt_walk import walk

RECORDED = Path(__file__).parent / "golden" / "prompts"
ENVS = ["babyai-goto", "babyai-pickup", "babyai-unlock", "babyai-putnext", "textworld-cooking",
        "textworld-treasure",
        "sokoban", "crafter"]


def render(env: str) -> str:
    steps = walk(build_config(env=env, algo="dqn-prior"), 2)
    return "".join(f"===== state {s.step}: prompt =====\n{s.prompt}\n"
                   f"----- Q input for {s.action!r} -----\n{s.q_input}\n" for s in steps)


@pytest.mark.parametrize("env", ENVS)
def test_first_prompts_of_seed_zero_are_the_recorded_ones(env):
    text, path = render(env), RECORDED / f"{env}.txt"
    if os.environ.get("LLMRL_RECORD_PROMPTS"):
        path.write_text(text)
    assert text == path.read_text()
