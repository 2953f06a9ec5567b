"""`llmrl bench`: the reference pattern's pieces behave as the paper's code does."""

import dataclasses
import json
import os
import re
from pathlib import Path

import pytest
import torch

from llmrl_cli.bench import CPU_FLAGS, ReferenceEncoder, ReferencePrior, host_info
from llmrl_cli.cli import main
from llmrl_cli.encoders import TextEncoder
from llmrl_cli.priors.probe import probe_states


def test_the_reference_encoder_runs_the_model_on_every_text_every_time():
    cached = TextEncoder()
    ref = ReferenceEncoder.from_encoder(TextEncoder())
    texts = ["Observation: a, Action: left.", "Observation: a, Action: left.",
             "Observation: b, Action: up."]
    for _ in range(2):
        vectors = ref.encode(texts)
    assert ref.stats.encoded == 6 and ref.stats.hits == 0 and ref.stats.texts == 6
    assert torch.allclose(vectors, cached.encode(texts), atol=1e-5)
    assert cached.encode(texts) is not None and cached.stats.encoded == 2


def test_the_reference_prior_makes_one_generate_call_per_prompt(monkeypatch):
    prior = ReferencePrior(seed=0, cache=None, max_new_tokens=4, stop_on_newline=True)
    prior.engine.load()
    calls = []
    generate = prior.engine._lm.generate

    def counting(**kwargs):
        calls.append(kwargs["num_return_sequences"])
        assert kwargs["input_ids"].shape[0] == 1 and kwargs["output_hidden_states"]
        return generate(**kwargs)

    monkeypatch.setattr(prior.engine._lm, "generate", counting)
    states = probe_states("frozenlake", 3, seed=0)
    torch.manual_seed(0)
    out = prior._generate([(q.prompt, 0) for q in states], 5)
    assert calls == [5, 5, 5]
    assert [len(row) for row in out] == [5, 5, 5]
    assert all("\n" not in text for row in out for text in row)
    assert prior.stats.prompt_tokens == 0  # no prefill of ours: generate does its own


def test_the_paper_stop_words_cost_more_tokens_and_change_no_proposal():
    """``--reference-stop paper`` decodes on past the newline, as the paper's stop words let it;
    cut at the newline either way (``stop_on_newline``), the same draws give equal samples."""
    counting = "".join(f"{i}\n" for i in range(1, 14))  # its samples hold a newline at once
    prompts = [counting, probe_states("frozenlake", 1, seed=0)[0].prompt]
    texts, tokens = {}, {}
    for stop in ("newline", "paper"):
        prior = ReferencePrior(seed=0, cache=None, max_new_tokens=10, stop=stop,
                               stop_on_newline=True)
        texts[stop] = []
        for prompt in prompts:  # the same draws for each prompt under both rules
            torch.manual_seed(0)
            texts[stop] += prior._generate([(prompt, 0)], 5)
        tokens[stop] = prior.stats.tokens
    assert texts["paper"] == texts["newline"]
    assert all("\n" not in t and "<END>" not in t for row in texts["paper"] for t in row)
    # the counting prompt's call stops within a few tokens at the newline; under the paper's
    # rule it decodes all 10 (5 samples x 10 tokens)
    assert tokens["newline"] < tokens["paper"] and tokens["paper"] >= 50


def test_a_bad_reference_stop_is_one_clear_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--reference-stop", "eos"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "eos" in err and "newline, paper" in err and len(err.strip().splitlines()) == 1


def test_a_bad_mode_is_one_clear_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--modes", "reference,fast"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "fast" in err and "reference, ours" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("counts", ["0", "8,x", ","])
def test_a_bad_num_envs_is_one_clear_error(capsys, counts):
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--num-envs", counts])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--num-envs" in err and len(err.strip().splitlines()) == 1


def test_host_info_names_the_cpu_its_cores_and_torch():
    host = host_info("cpu")
    assert host["cores"] == os.cpu_count() and host["threads"] == torch.get_num_threads()
    assert host["torch"] == torch.__version__ and "gpu" not in host
    if Path("/proc/cpuinfo").exists():
        assert host["cpu"] and set(host["cpu_flags"]) <= set(CPU_FLAGS)
        assert re.fullmatch(r"\d+/\d+", host["cpu_family_model"])


def test_the_bench_table_names_each_mode_s_run_ahead_and_the_host(capsys):
    from llmrl_cli.bench import ModeResult
    from llmrl_cli.cli import _print_bench

    def mode(name, envs, ahead, steps_per_s):
        return dataclasses.asdict(ModeResult(
            mode=name, num_envs=envs, run_ahead=ahead, episodes=2, env_steps=10, wall_s=5.0,
            steps_per_s=steps_per_s, prior_s=1.0, encoder_s=1.0, update_s=1.0, env_s=1.0,
            llm_queries=4, llm_model_queries=2, llm_tokens=9, prompt_tokens=8, reused_tokens=4,
            prior_hit_rate=0.5, encoder_texts=6, encoder_hit_rate=0.5, peak_rss_mb=100.0,
            eval_return=0.0, eval_success=0.0))

    host = {"cpu": "Some CPU", "cores": 2, "threads": 2, "torch": "2.13.0+cpu"}  # no cpuinfo
    _print_bench({"env": "frozenlake", "model": "m", "k": 5, "episodes": 2, "seed": 0,
                  "reference_stop": "newline", "host": host, "speedups": {"8": 8.0},
                  "modes": {"reference": mode("reference", 1, 0, 0.5),
                            "ours": mode("ours", 8, 4, 4.0)}})
    out = " ".join(capsys.readouterr().out.split())
    assert "run ahead (steps) │ 0 │ 4 │" in out
    assert "host: Some CPU (?), 2 cores, 2 threads, flags -, torch 2.13.0+cpu" in out
    assert "ours with 8 envs over reference): 8.0x" in out


def test_a_negative_run_ahead_is_one_clear_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--run-ahead", "-1"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "run_ahead must be >= 0" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_bench_runs_both_modes_on_one_budget_and_reports_the_ratio(capsys, tmp_path):
    main(["bench", "--episodes", "2", "--eval-episodes", "2", "--num-envs", "2,3", "--json",
          "--run-ahead", "2", "--out", str(tmp_path / "b")])
    result = json.loads(capsys.readouterr().out)
    ref, ours = result["modes"]["reference"], result["modes"]["ours"]
    assert ref["num_envs"] == 1 and ours["num_envs"] == 2
    assert ref["run_ahead"] == 0 and ours["run_ahead"] == 2  # the reference stays lockstep
    assert result["host"] == host_info()  # what it ran on, for comparing runs across machines
    more = result["modes"]["ours-3envs"]
    assert more["num_envs"] == 3 and more["encoder_hit_rate"] < 1  # its own cold caches
    assert result["speedups"] == {"2": result["speedup"],
                                  "3": round(more["steps_per_s"] / ref["steps_per_s"], 2)}
    assert ref["encoder_hit_rate"] == 0 and ref["reused_tokens"] == 0
    assert ref["llm_queries"] > 0 and ours["llm_queries"] > 0 and ours["env_steps"] > 0
    assert result["speedup"] == round(ours["steps_per_s"] / ref["steps_per_s"], 2)
    for mode in (ref, ours):
        assert mode["prior_s"] + mode["encoder_s"] + mode["update_s"] + mode["env_s"] \
            <= mode["wall_s"] + 1e-6
        assert mode["peak_rss_mb"] > 100
    # --out kept each run, one experiment per mode, for `llmrl report`
    for name in ("reference", "ours", "ours-3envs"):
        csv = tmp_path / "b" / f"bench-{name}" / "frozenlake" / "dqn-prior"
        assert (csv / "seed_0.csv").exists() and (csv / "seed_0.yaml").exists()
        # the reference waits for its evaluations; ours runs them beside training
        overlap = "true" if name.startswith("ours") else "false"
        assert f"eval_overlap: {overlap}\n" in (csv / "seed_0.yaml").read_text()
        ahead = 2 if name.startswith("ours") else 0
        assert f"run_ahead: {ahead}\n" in (csv / "seed_0.yaml").read_text()
    main(["report", str(tmp_path / "b"), "--out", str(tmp_path / "report")])
    report = (tmp_path / "report" / "report.md").read_text()
    assert "bench-reference" in report and "bench-ours-3envs" in report
    # and they are never overwritten: the same seed into the same folder is refused
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--episodes", "2", "--modes", "ours", "--out", str(tmp_path / "b")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "already holds a bench run of seed 0" in err and len(err.strip().splitlines()) == 1
