"""Envs stepped in worker processes (``num_env_workers``).

A run's envs live in the main process and step one after another unless ``num_env_workers``
N >= 1: then they live in N spawned worker processes (env i in worker i mod N), and the actions
of a batch step go out to every worker before any result is read, so the workers step their
envs at the same time (each its own envs in order). An env is a deterministic function of its
seed, options and actions, so a run's results do not depend on N (a test checks).

``RemoteEnv`` stands in for an env in the main process. ``step`` and ``reset`` go to its worker,
which answers with the result and with what the loop reads about the new state (the episode's
instruction, the task the Q input names, the expert's optimal actions). Class-level behaviour
(``q_input``, ``prompt``, ``has_expert``) is the env class's own; any other attribute is asked
of the worker.
"""

from __future__ import annotations

import multiprocessing
import pickle
import signal
from typing import Any, Sequence

from ..envs import env_class, make


def _state_of(env) -> dict:
    """What the loop reads about an env's current state, computed beside the env."""
    state = {"instruction": env.instruction, "feature_task": env.feature_task}
    if env.has_expert():
        try:
            state["optimal"] = list(env.optimal_actions())
        except Exception as exc:  # raised where the loop asks for it
            state["optimal_error"] = _sendable(exc)
    return state


def _sendable(exc: BaseException) -> BaseException:
    try:
        pickle.dumps(exc)
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _serve(conn, name: str, kwargs: dict) -> None:
    """A worker: make, step and reset its envs on request until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    envs: dict[int, Any] = {}
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        if request is None:
            return
        op, env_id, payload = request
        try:
            if op == "make":
                envs[env_id] = make(name, **kwargs)
                reply = None
            elif op == "step":
                reply = (envs[env_id].step(payload), _state_of(envs[env_id]))
            elif op == "reset":
                seed, options = payload
                reply = (envs[env_id].reset(seed=seed, options=options), _state_of(envs[env_id]))
            elif op == "get":
                value = getattr(envs[env_id], payload)
                reply = ("method", None) if callable(value) else ("value", value)
            elif op == "call":
                method, args, call_kwargs = payload
                reply = getattr(envs[env_id], method)(*args, **call_kwargs)
            elif op == "close":
                envs.pop(env_id).close()
                reply = None
            else:
                raise ValueError(f"unknown env worker request {op!r}")
            conn.send(("ok", reply))
        except Exception as exc:
            conn.send(("error", _sendable(exc)))


class EnvWorkers:
    """``count`` worker processes serving envs of one name and settings (module docstring)."""

    def __init__(self, name: str, kwargs: dict, count: int) -> None:
        self.name, self.kwargs = name, kwargs
        spawn = multiprocessing.get_context("spawn")
        self.conns, self.processes = [], []
        for _ in range(count):
            parent, child = spawn.Pipe()
            process = spawn.Process(target=_serve, args=(child, name, kwargs), daemon=True)
            process.start()
            child.close()
            self.conns.append(parent)
            self.processes.append(process)
        self.made = 0

    def make(self) -> RemoteEnv:
        """A new env in the next worker, round robin."""
        env_id = self.made
        self.made += 1
        worker = env_id % len(self.conns)
        self.request(worker, "make", env_id, None)
        return RemoteEnv(self, worker, env_id)

    def request(self, worker: int, op: str, env_id: int, payload: Any) -> Any:
        self.conns[worker].send((op, env_id, payload))
        return self._reply(worker)

    def _reply(self, worker: int) -> Any:
        try:
            status, value = self.conns[worker].recv()
        except EOFError:
            raise RuntimeError(f"env worker {worker} ({self.name}) stopped") from None
        if status == "error":
            raise value
        return value

    def step_many(self, envs: Sequence[RemoteEnv], actions: Sequence[str]) -> list:
        """Step each env with its action: every request is sent before any reply is read."""
        for env, action in zip(envs, actions):
            self.conns[env.worker].send(("step", env.env_id, action))
        results, error = [], None
        for env in envs:
            try:
                results.append(env._took(self._reply(env.worker)))
            except Exception as exc:  # read every reply, then raise the first error
                results.append(None)
                error = error or exc
        if error is not None:
            raise error
        return results

    def close(self) -> None:
        for conn in self.conns:
            try:
                conn.send(None)
                conn.close()
            except (BrokenPipeError, OSError):
                pass
        for process in self.processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
        self.conns, self.processes = [], []


class RemoteEnv:
    """An env living in an ``EnvWorkers`` process (module docstring)."""

    def __init__(self, pool: EnvWorkers, worker: int, env_id: int) -> None:
        self.pool, self.worker, self.env_id = pool, worker, env_id
        self.env_class = env_class(pool.name)
        self.state: dict = {}

    def _took(self, reply: tuple) -> Any:
        result, self.state = reply
        return result

    def step(self, action: str):
        return self._took(self.pool.request(self.worker, "step", self.env_id, action))

    def reset(self, seed: int | None = None, options: dict | None = None):
        return self._took(self.pool.request(self.worker, "reset", self.env_id, (seed, options)))

    @property
    def instruction(self) -> str:
        return self.state["instruction"]

    @property
    def feature_task(self) -> str | None:
        return self.state["feature_task"]

    def optimal_actions(self) -> list[str]:
        if "optimal_error" in self.state:
            raise self.state["optimal_error"]
        return list(self.state["optimal"])

    def has_expert(self) -> bool:
        return self.env_class.has_expert()

    def q_input(self, state: str, action: str, task: str | None = None) -> str:
        return self.env_class.q_input(state, action, task)

    def close(self) -> None:
        self.pool.request(self.worker, "close", self.env_id, None)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("pool", "worker", "env_id", "env_class", "state"):
            raise AttributeError(name)
        kind, value = self.pool.request(self.worker, "get", self.env_id, name)
        if kind == "value":
            return value
        return lambda *args, **kwargs: self.pool.request(self.worker, "call", self.env_id,
                                                         (name, args, kwargs))


def step_envs(envs: Sequence, actions: Sequence[str]) -> list:
    """``env.step(action)`` for each pair: at the same time where the envs are a worker pool's,
    else one after another."""
    if envs and isinstance(envs[0], RemoteEnv):
        return envs[0].pool.step_many(envs, actions)
    return [env.step(action) for env, action in zip(envs, actions)]
