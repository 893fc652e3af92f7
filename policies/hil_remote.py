"""The `hil` learner when its actors run elsewhere: transitions in over the gRPC link, weights out.

Used by `HilRL` when `link` is set (`s2r hil learner`). The link's inbox is the durable record of every
transition an actor sent, so the buffers live in memory and are rebuilt from the demos plus the inbox when
the learner (re)starts: each transition is in them exactly once, whatever crashed. Weights go out as the
actor's ONNX graph (normaliser inside) with an increasing version, at most every `publish_every_s`; the
last version is kept in the run folder (`weights_version`), so versions keep rising across a restart (an
actor holding a higher one would ignore ours).
"""

from __future__ import annotations

import io
import os
import sys
import time
from typing import Any

import numpy as np
import torch
from s2r.policies.offpolicy import ExportedActor

# What an actor's transition must carry, and the buffer group each field fills.
FIELDS = ("obs", "next_obs", "action", "proposed", "intervened", "reward", "terminated", "truncated")


class RemoteSource:
    """Feeds `HilRL`'s buffers from a `HilLearnerLink` and publishes its actor's weights."""

    def __init__(self, algo: Any) -> None:
        from s2r.policies.hil_link_server import HilLearnerLink

        self.algo = algo
        cfg = algo.cfg
        token = link_token(cfg)
        self.link = HilLearnerLink(cfg.link, inbox_dir=algo.ctx.run.path / "inbox", token=token)
        self.version_file = algo.ctx.run.path / "weights_version"
        self.version = int(self.version_file.read_text()) if self.version_file.is_file() else 0
        self.last_publish = -np.inf
        self.refused = 0
        self.was_intervened: dict[str, bool] = {}  # per actor, to count takeovers (rising edges)

    def start(self) -> int:
        """Rebuild the buffers from the inbox, start serving, publish the current weights; returns the port."""
        n = 0
        for actor, _seq, t in self.link.replay_inbox():
            n += self._add(t, actor)
        self.port = self.link.start()
        host = self.algo.cfg.link.rsplit(":", 1)[0]
        print(f"s2r hil: learner listening on {host}:{self.port} ({n} transitions already in the inbox)",
              file=sys.stderr, flush=True)
        self.publish(force=True)
        return n

    def receive(self, max_wait_s: float = 1.0, want: int = 1) -> int:
        """Store what arrived (waiting up to `max_wait_s` for at least `want` transitions); returns the count."""
        got, deadline = 0, time.monotonic() + max_wait_s
        while True:
            for actor, _seq, t in self.link.drain():
                got += self._add(t, actor)
            if got >= want or time.monotonic() >= deadline:
                return got
            time.sleep(0.005)

    def _add(self, t: dict[str, Any], actor: str) -> int:
        """One actor transition into the online buffer (and the demo buffer when the operator drove)."""
        from s2r.policies.hil import INTERVENED, PROPOSED

        algo = self.algo
        try:
            obs_dim, a_dim = algo.dims["policy"], algo.env.spec.action_dim
            obs = np.asarray(t["obs"], np.float32).reshape(1, obs_dim)
            nxt = np.asarray(t["next_obs"], np.float32).reshape(1, obs_dim)
            act = np.asarray(t["action"], np.float32).reshape(1, a_dim)
            prop = np.asarray(t["proposed"], np.float32).reshape(1, a_dim)
        except (KeyError, ValueError):
            # The link checked the format, not the shapes: a transition from another task is skipped, counted.
            self.refused += 1
            return 0
        flag = np.array([[float(bool(t["intervened"]))]], np.float32)
        o = {"policy": obs, PROPOSED: prop, INTERVENED: flag}
        n = {"policy": nxt, PROPOSED: prop, INTERVENED: flag}
        rew = np.array([float(t["reward"])], np.float32)
        term, trunc = np.array([bool(t["terminated"])]), np.array([bool(t["truncated"])])
        algo.buffer.add(o, act, rew, n, term, trunc)
        if flag[0, 0] and algo.cfg.interventions_to_demos:
            algo.demo_buffer.add(o, act, rew, n, term, trunc)
        flag_now = bool(flag[0, 0])
        algo._takeovers_total += int(flag_now and not self.was_intervened.get(actor, False))
        self.was_intervened[actor] = flag_now and not (term[0] or trunc[0])
        algo.note_transition(flag_now, t)
        return 1

    def publish(self, force: bool = False) -> bool:
        """Export the actor to ONNX bytes and offer them to every actor (at most every `publish_every_s`)."""
        now = time.monotonic()
        if not force and now - self.last_publish < self.algo.cfg.publish_every_s:
            return False
        self.last_publish = now
        self.version += 1
        tmp = self.version_file.with_suffix(".tmp")
        tmp.write_text(str(self.version))
        tmp.replace(self.version_file)
        self.link.publish_weights(self.version, onnx_bytes(self.algo), {"task": self.algo.task_id,
                                                                        "updates": self.algo.learner.updates})
        return True

    def stop(self) -> None:
        self.link.stop()


def link_token(cfg: Any) -> str | None:
    """The shared token from `$<cfg.token_env>`; refuses a non-loopback address without one (one sentence)."""
    from s2r.policies.hil_link_server import is_loopback

    token = os.environ.get(cfg.token_env) or None
    if token is None and not is_loopback(cfg.link):
        raise ValueError(f"refusing to serve actors on {cfg.link} without a token: set ${cfg.token_env} (the actors "
                         "need the same value) or bind to 127.0.0.1")
    return token


def onnx_bytes(algo: Any) -> bytes:
    """The deterministic actor (normaliser inside) as ONNX bytes, input `obs` (1, obs_dim), output `actions`."""
    buf = io.BytesIO()
    obs_dim = algo.dims["policy"]
    with torch.no_grad():
        torch.onnx.export(ExportedActor(algo.learner), (torch.zeros(1, obs_dim),), buf, input_names=["obs"],
                          output_names=["actions"], opset_version=17, dynamo=False)
    return buf.getvalue()
