"""Fault injection on a run's files: a resume checks them instead of trusting them, and
``--overwrite`` keeps the earlier run until the new one starts. Each case ends where an
uninterrupted run ends, or stops with one line that names the file and the remedy."""

import json
import time

import pandas as pd
import pytest

from llmrl_cli.config import build_config
from llmrl_cli.errors import UserError
from llmrl_cli.evaluate import EvalSpec, evaluate_run
from llmrl_cli.priors import PriorQuery, ProposalCache
from llmrl_cli.priors.vllm import VLLMPrior
from llmrl_cli.report import load_results
from llmrl_cli.runner import Runner

#: wall times and the encoder cache split (rebuilt, not checkpointed, on resume)
TIMING = ["wall_s", "prior_seconds", "encoder_seconds", "update_seconds", "encoder_hits"]


class Killed(Exception):
    pass


def _cfg(tmp_path, episodes=15, **kw):
    return build_config(env="frozenlake", algo="dqn", episodes=episodes, seed=0, device="cpu",
                        out=str(tmp_path / "results"), eval_overlap=False,
                        agent={"eval_every": 5, "eval_episodes": 2}, **kw)


def _table(path):
    return pd.read_csv(path).drop(columns=TIMING)


def _reference(tmp_path):
    return _table(Runner(_cfg(tmp_path / "reference"), log=lambda *_: None).run())


def _killed_after_eval_at(tmp_path, episode: int):
    """A run killed right after the row (and checkpoint) of its evaluation at ``episode``."""
    cfg = _cfg(tmp_path / "killed")

    def progress(done, total, msg):
        if msg and done == episode:
            raise Killed

    with pytest.raises(Killed):
        Runner(cfg, progress=progress, log=lambda *_: None).run()
    return cfg


def _resume(cfg):
    logs = []
    table = _table(Runner(cfg, log=logs.append).run())
    return table, logs


@pytest.mark.parametrize("damage, said", [
    (lambda csv: csv.unlink(), "is missing"),
    # a kill (or a full disk) in the middle of a row
    (lambda csv: csv.write_bytes(csv.read_bytes()[:-25]), "was cut short"),
])
def test_a_missing_or_cut_csv_is_restored_from_the_checkpoint(tmp_path, damage, said):
    cfg = _killed_after_eval_at(tmp_path, 10)
    csv = cfg.stem.with_suffix(".csv")
    damage(csv)
    table, logs = _resume(cfg)
    assert logs[0] == f"{csv} {said}; restored its 3 rows from the checkpoint"
    pd.testing.assert_frame_equal(table, _reference(tmp_path))


def test_an_edited_csv_is_kept_aside_and_its_rows_restored(tmp_path):
    cfg = _killed_after_eval_at(tmp_path, 10)
    csv = cfg.stem.with_suffix(".csv")
    edited = csv.read_text().replace("frozenlake,dqn", "frozenlake,mine", 1)
    csv.write_text(edited)
    table, logs = _resume(cfg)
    aside = csv.with_name("seed_0.changed.csv")
    assert logs[0] == (f"{csv} was changed since its checkpoint; kept it as {aside} and "
                       "restored its 3 rows from the checkpoint")
    assert aside.read_text() == edited
    pd.testing.assert_frame_equal(table, _reference(tmp_path))
    assert len(load_results(tmp_path / "killed" / "results")) == 4  # the kept file is not a run


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_a_damaged_checkpoint_falls_back_to_the_previous_one(tmp_path, damage):
    cfg = _killed_after_eval_at(tmp_path, 10)
    ckpt = cfg.stem.with_name("seed_0.ckpt.pt")
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"")
    table, logs = _resume(cfg)
    assert logs[0].startswith(f"{ckpt} cannot be read (")
    assert logs[0].endswith(f"); resuming from the previous one, "
                            f"{cfg.stem.with_name('seed_0.ckpt.prev.pt')}")
    assert logs[1:] == [f"resuming {cfg.stem.with_suffix('.csv')} from episode 5"]
    pd.testing.assert_frame_equal(table, _reference(tmp_path))


def test_without_a_readable_checkpoint_a_resume_stops_with_one_line(tmp_path):
    cfg = _killed_after_eval_at(tmp_path, 10)
    ckpt = cfg.stem.with_name("seed_0.ckpt.pt")
    ckpt.write_bytes(b"not a checkpoint")
    cfg.stem.with_name("seed_0.ckpt.prev.pt").unlink()
    with pytest.raises(UserError) as err:
        Runner(cfg, log=lambda *_: None).run()
    message = str(err.value)
    assert message.startswith(f"{ckpt} cannot be read (") and "\n" not in message
    assert message.endswith("and there is no earlier checkpoint; pass --overwrite to run it "
                            "again")


def test_a_finished_run_without_its_checkpoint_is_complete_and_a_longer_one_is_refused(
        tmp_path):
    """Committed results come without checkpoints: a rerun of the same config leaves the CSV
    as it is; asking for more episodes cannot resume, and says so in one line."""
    cfg = _cfg(tmp_path)
    csv = Runner(cfg, log=lambda *_: None).run()
    written = csv.read_text()
    cfg.stem.with_name("seed_0.ckpt.pt").unlink()
    cfg.stem.with_name("seed_0.ckpt.prev.pt").unlink(missing_ok=True)
    logs = []
    assert Runner(cfg, log=logs.append).run() == csv
    assert logs == [f"already complete: {csv} (pass --overwrite to run it again)"]
    assert csv.read_text() == written
    with pytest.raises(UserError, match="exists without a checkpoint to resume from"):
        Runner(_cfg(tmp_path, episodes=20), log=lambda *_: None).run()


def test_evaluate_names_a_checkpoint_it_cannot_read(tmp_path):
    cfg = _cfg(tmp_path)
    Runner(cfg, log=lambda *_: None).run()
    ckpt = cfg.stem.with_name("seed_0.ckpt.pt")
    ckpt.write_bytes(ckpt.read_bytes()[:100])  # the finished run's checkpoint, cut
    with pytest.raises(UserError) as err:
        evaluate_run(cfg, EvalSpec(episodes=1), log=lambda *_: None)
    assert str(err.value).startswith(f"{ckpt} cannot be read (")
    assert "\n" not in str(err.value)


def test_overwrite_moves_the_old_run_aside_only_when_the_new_one_starts(tmp_path):
    cfg = _cfg(tmp_path)
    csv = Runner(cfg, log=lambda *_: None).run()
    evals = cfg.stem.with_name("seed_0.eval.csv")
    evals.write_text("episode,eval_return\n15,0.0\n")  # an `llmrl evaluate` of the old run
    old = {p.name: p.read_bytes() for p in cfg.run_dir.glob("seed_0.*")}
    broken = _cfg(tmp_path, encoder=str(tmp_path / "no-such-encoder"))
    with pytest.raises(UserError):  # a typo: the run cannot start, and nothing is lost
        Runner(broken, overwrite=True, log=lambda *_: None).run()
    assert {p.name: p.read_bytes() for p in cfg.run_dir.glob("seed_0.*")} == old
    logs = []
    changed = _cfg(tmp_path, k=3)
    Runner(changed, overwrite=True, log=logs.append).run()
    aside = cfg.run_dir / "replaced" / "seed_0-1"
    assert logs == [f"moved the earlier seed_0 files to {aside}"]
    assert {p.name: p.read_bytes() for p in aside.iterdir()} == old
    assert not evals.exists() and "k: 3" in cfg.stem.with_suffix(".yaml").read_text()
    assert list(pd.read_csv(csv).episode) == [0, 5, 10, 15]
    assert list(load_results(tmp_path / "results").k) == [3] * 4  # not the run moved aside


def _cli_error(capsys, *args):
    from llmrl_cli.cli import main

    with pytest.raises(SystemExit) as exc:
        main(list(args))
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("content, message", [
    (b"", "is empty; write the settings to change (`llmrl config show` lists them)"),
    (b"k: 3\nk: 4\n", "is not valid YAML at line 2: the key 'k' is given twice"),
    (b"k: \xff\n", "is not UTF-8 text (byte 3)"),
])
def test_a_bad_config_file_is_one_line_and_exit_2(tmp_path, capsys, content, message):
    path = tmp_path / "mine.yaml"
    path.write_bytes(content)
    err = _cli_error(capsys, "run", "--config", str(path))
    assert err == f"llmrl: error: config file {str(path)!r} {message}\n"


def test_a_sweep_with_an_empty_list_is_an_error(tmp_path, capsys):
    path = tmp_path / "grid.yaml"
    path.write_text("env: frozenlake\nsweep:\n  algo: [dqn]\n  seed: []\n")
    err = _cli_error(capsys, "sweep", str(path), "--out", str(tmp_path / "results"))
    assert err == f"llmrl: error: {path}: the sweep's list of seed is empty, so it has no runs\n"


def test_an_unknown_env_option_and_an_out_that_is_a_file_are_one_line(tmp_path, capsys):
    config = tmp_path / "mine.yaml"
    config.write_text("env_kwargs: {split: unseen}\n")  # an ALFWorld option
    err = _cli_error(capsys, "run", "--env", "frozenlake", "--config", str(config))
    assert err == ("llmrl: error: frozenlake has no option 'split'; its options: map_name, "
                   "slippery, horizon\n")
    afile = tmp_path / "results.txt"
    afile.write_text("")
    err = _cli_error(capsys, "run", "--env", "frozenlake", "--out", str(afile))
    assert err == f"llmrl: error: --out {afile} is a file, not a folder\n"


def test_ctrl_c_in_a_run_says_how_to_resume(tmp_path, capsys, monkeypatch):
    from llmrl_cli.cli import main

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(Runner, "run", interrupted)
    with pytest.raises(SystemExit) as exc:
        main(["run", "--env", "frozenlake", "--algo", "dqn", "--out", str(tmp_path)])
    assert exc.value.code == 130
    assert capsys.readouterr().err.endswith(
        "llmrl: interrupted (start the same command again: it resumes from the last "
        "checkpoint)\n")


# -- llmrl report states what it averages ----------------------------------------------------
HEADER = ("env,algo,prior,k,seed,episode,env_steps,eval_return,eval_success,train_return,"
          "llm_calls,llm_cache_hits,wall_s")


def _write_run(root, seed: int, episodes: list[int], budget: int):
    """A dqn run's CSV (success 0.5 at every eval point) and the config beside it."""
    folder = root / "exp" / "frozenlake" / "dqn"
    folder.mkdir(parents=True, exist_ok=True)
    rows = [f"frozenlake,dqn,uniform,5,{seed},{e},{6 * e},0.5,0.5,,0,0,1.0" for e in episodes]
    (folder / f"seed_{seed}.csv").write_text("\n".join([HEADER, *rows]) + "\n")
    (folder / f"seed_{seed}.yaml").write_text(f"algo: dqn\nepisodes: {budget}\n")
    return folder / f"seed_{seed}.csv"


@pytest.mark.parametrize("damage, reason", [
    (lambda text: text[:-30], "has a row whose episode is not a number (a row cut short?)"),
    (lambda text: "\udcff", "cannot be read ("),
])
def test_report_names_a_csv_it_cannot_use_and_skip_bad_leaves_it_out(tmp_path, capsys, damage,
                                                                     reason):
    _write_run(tmp_path, 0, [0, 5, 10], 10)
    bad = _write_run(tmp_path, 1, [0, 5, 10], 10)
    bad.write_bytes(damage(bad.read_text()).encode(errors="surrogateescape"))
    err = _cli_error(capsys, "report", str(tmp_path))
    assert err.startswith(f"llmrl: error: {bad} {reason}")
    assert err.endswith("; fix or remove it, or pass --skip-bad to leave it out\n")
    from llmrl_cli.cli import main

    main(["report", str(tmp_path), "--skip-bad"])
    assert f"warning: left out {bad} {reason}" in capsys.readouterr().err
    assert list(pd.read_csv(tmp_path / "summary.csv").seeds) == [1]


def test_report_leaves_out_unfinished_runs_unless_asked(tmp_path, capsys):
    from llmrl_cli.cli import main

    _write_run(tmp_path, 0, [0, 5, 10], 10)
    _write_run(tmp_path, 1, [0, 5], 10)  # killed at episode 5 of 10
    main(["report", str(tmp_path)])
    assert "left out 1 unfinished run(s)" in capsys.readouterr().err
    assert list(pd.read_csv(tmp_path / "summary.csv").seeds) == [1]
    assert "exp/frozenlake/dqn seed 1: at 5 of 10" in (tmp_path / "report.md").read_text()
    main(["report", str(tmp_path), "--include-unfinished"])
    assert list(pd.read_csv(tmp_path / "summary.csv").seeds) == [2]


def test_report_shows_seeds_with_different_budgets_apart(tmp_path):
    from llmrl_cli.report import write_report

    _write_run(tmp_path, 0, [0, 5, 10], 10)
    _write_run(tmp_path, 1, [0, 5, 10, 15, 20], 20)
    write_report(tmp_path, log=lambda *_: None)
    table = pd.read_csv(tmp_path / "summary.csv")
    assert list(zip(table.experiment, table.episodes, table.seeds)) == [
        ("exp (budget 10)", 10, 1), ("exp (budget 20)", 20, 1)]


# -- the served prior and the proposal cache ---------------------------------------------------
class FakeServer:
    """An OpenAI-compatible server on 127.0.0.1 serving model "m" whose completions answers are
    scripted: each request takes the next of ``answers`` (the last one repeats): "good",
    "fewer", "padded", "reordered", "500", "not-json" or "hang"."""

    def __init__(self, answers: list[str], texts: list[str]):
        import http.server
        import threading

        self.answers, self.texts, self.requests = list(answers), texts, 0
        server_self = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code: int, body: bytes):
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                self._send(200, json.dumps({"data": [{"id": "m"}]}).encode())

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server_self.requests += 1
                answer = (server_self.answers.pop(0) if len(server_self.answers) > 1
                          else server_self.answers[0])
                n = len(body["prompt"]) * body["n"]
                choices = [{"index": i, "text": server_self.texts[i % len(server_self.texts)]}
                           for i in range(n)]
                if answer == "hang":
                    time.sleep(2)
                    return
                if answer == "500":
                    return self._send(500, b"engine died")
                if answer == "not-json":
                    return self._send(200, b"<html>proxy error</html>")
                if answer == "fewer":
                    choices = choices[:-2]
                if answer == "padded":
                    choices.append({"index": n, "text": "extra"})
                if answer == "reordered":
                    choices.reverse()
                self._send(200, json.dumps({"choices": choices, "usage": {}}).encode())

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


QUERY = PriorQuery(prompt="Where now?", actions=("left", "right", "up", "down"))
TEXTS = ["left", "right", "up", "down", "up"]


def _served(server, cache, **kw):
    return VLLMPrior(url=server.url, model="m", cache=cache, backoff=0.01, **kw)


def test_a_served_prior_retries_a_wrong_answer_and_caches_only_a_good_one(tmp_path, capsys):
    server = FakeServer(["fewer", "reordered"], TEXTS)
    cache = ProposalCache(tmp_path / "proposals.sqlite")
    try:
        # the right choice for each index, even in another order
        assert _served(server, cache).propose([QUERY], 5) == [TEXTS]
    finally:
        server.close()
    assert server.requests == 2
    assert (f"llmrl: vLLM server at {server.url}: a wrong answer (3 choices for 5): "
            in capsys.readouterr().err)
    assert len(cache) == 1


@pytest.mark.parametrize("answer, said", [
    ("fewer", "gave a wrong answer (3 choices for 5): "),
    ("padded", "gave a wrong answer (6 choices for 5): "),
    ("500", "gave HTTP 500: engine died after 3 tries"),
    ("not-json", "gave an answer that is not JSON: b'<html>proxy error</html>' after 3 tries"),
    ("hang", "is unreachable after 3 tries (no answer ("),
])
def test_a_served_prior_that_keeps_answering_wrong_stops_with_one_line(tmp_path, answer, said):
    server = FakeServer([answer], TEXTS)
    cache = ProposalCache(tmp_path / "proposals.sqlite")
    try:
        with pytest.raises(UserError) as err:
            _served(server, cache, retries=2, timeout=0.5).propose([QUERY], 5)
    finally:
        server.close()
    assert said in str(err.value) and "\n" not in str(err.value)
    assert server.requests == 3 and len(cache) == 0  # nothing wrong was kept


def test_two_servers_serving_one_model_name_do_not_share_answers(tmp_path):
    cache = ProposalCache(tmp_path / "proposals.sqlite")
    first, second = FakeServer(["good"], ["left"]), FakeServer(["good"], ["right"])
    try:
        assert _served(first, cache).propose([QUERY], 5) == [["left"] * 5]
        assert _served(second, cache).propose([QUERY], 5) == [["right"] * 5]
    finally:
        first.close()
        second.close()
    assert len(cache) == 2


def test_a_corrupt_cache_file_is_moved_aside_and_a_garbled_entry_recomputed(tmp_path, capsys):
    path = tmp_path / "proposals.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    server = FakeServer(["good"], TEXTS)
    try:
        assert _served(server, ProposalCache(path)).propose([QUERY], 5) == [TEXTS]
        assert (tmp_path / "proposals.sqlite.corrupt-1").read_bytes().startswith(b"this is not")
        assert "moved it to" in capsys.readouterr().err
        import sqlite3

        with sqlite3.connect(path) as db:  # damage the one entry
            db.execute("UPDATE proposals SET value = '[\"left\", '")
        assert _served(server, ProposalCache(path)).propose([QUERY], 5) == [TEXTS]
        assert server.requests == 2  # the garbled entry was asked again, not used
    finally:
        server.close()


def test_ctrl_c_stops_a_sweep_and_its_workers_and_starts_no_other_run(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    grid = tmp_path / "grid.yaml"
    grid.write_text("env: frozenlake\nalgo: dqn\nepisodes: 300\nagent: {eval_every: 100}\n"
                    "sweep:\n  seed: [0, 1, 2, 3, 4, 5]\n")
    out = tmp_path / "results"
    sweep = subprocess.Popen(  # in its own process group, with Ctrl-C's default action
        [sys.executable, "-m", "llmrl_cli.cli", "sweep", str(grid), "--workers", "2", "--out",
         str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while len(list(out.rglob("seed_*.yaml"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)  # until both workers have started a run
    assert sweep.poll() is None, sweep.communicate()[1].decode()[-2000:]
    os.killpg(sweep.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    _, err = sweep.communicate(timeout=60)
    assert sweep.returncode == 130
    assert err.decode().rstrip().endswith(
        "llmrl: interrupted (start the same command again: it resumes from the last checkpoint)")
    assert len(list(out.rglob("seed_*.yaml"))) == 2  # no run started after the Ctrl-C


def test_a_full_disk_stops_a_run_with_one_line_and_it_resumes_whole(tmp_path, capsys,
                                                                    monkeypatch):
    import errno
    import os

    from llmrl_cli.cli import main

    real_fsync, calls = os.fsync, []

    def fsync(fd):  # the fifth file write of the run finds no space
        calls.append(fd)
        if len(calls) == 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    args = ["run", "--env", "frozenlake", "--algo", "dqn", "--episodes", "15", "--seed", "0",
            "--out", str(tmp_path / "killed" / "results"), "--device", "cpu"]
    config = tmp_path / "mine.yaml"
    config.write_text("eval_overlap: false\nagent: {eval_every: 5, eval_episodes: 2}\n")
    with pytest.raises(SystemExit) as exc:
        main([*args, "--config", str(config)])
    err = capsys.readouterr().err.rstrip().splitlines()  # the run's header and progress first
    assert exc.value.code == 2 and err[-1].startswith("llmrl: error: no space left on the device")
    folder = tmp_path / "killed" / "results" / "default" / "frozenlake" / "dqn"
    episodes = list(pd.read_csv(folder / "seed_0.csv").episode)  # whole rows only
    assert episodes and episodes == [0, 5, 10, 15][: len(episodes)] and len(episodes) < 4
    assert not list(folder.glob("*.tmp"))
    monkeypatch.setattr(os, "fsync", real_fsync)  # space again: the same command resumes
    main([*args, "--config", str(config)])
    pd.testing.assert_frame_equal(_table(folder / "seed_0.csv"), _reference(tmp_path))
