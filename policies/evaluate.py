"""Evaluate and replay exported policies (policy.onnx + policy.json) in simulation.

Evaluation runs the exported ONNX file through onnxruntime, the same file the robot runs, so a passing
eval also vouches for the export.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from s2r.real.chunking import ChunkHistory
from s2r.real.metadata import MetadataError, load_metadata
from s2r.sim import VecEnv, make


@dataclass(frozen=True)
class EvalResult:
    """Per-episode means over the evaluated episodes."""

    episodes: int
    mean_return: float
    mean_vel_error: float
    fall_rate: float
    mean_length_s: float

    def as_dict(self) -> dict[str, float]:
        """Plain dict for JSON."""
        return dict(self.__dict__)


def resolve_run(path: str | Path) -> Path:
    """A run folder, or the folder of a policy.onnx; the newest run under `runs/<task>/` if given that."""
    p = Path(path)
    if p.is_file():
        p = p.parent
    if not p.is_dir():
        raise FileNotFoundError(f"no run at {path}")
    if not (p / "policy.onnx").is_file():
        runs = sorted((d for d in p.iterdir() if (d / "policy.onnx").is_file()), key=lambda d: d.name)
        if not runs:
            raise FileNotFoundError(f"{p} holds no policy.onnx (train first, or pass the run folder)")
        p = runs[-1]
    return p


class OnnxPolicy:
    """onnxruntime session + metadata; `__call__(obs (n, obs_dim)) -> actions (n, action_dim)`.

    A policy with camera inputs (an image encoder inside; `reads_groups` is True) is called with the env's whole
    observation dict instead: its `policy` group and each camera input's group, uint8 images as they are.

    A chunking policy (policy.json's `chunking` section) keeps its past chunks per env the way the robot
    runtime does; call `reset(env_ids)` when episodes end so a new episode starts without stale chunks.
    """

    def __init__(self, run_dir: Path) -> None:
        import onnxruntime as ort

        self.meta = load_metadata(run_dir / "policy.json")
        self.session = ort.InferenceSession(str(run_dir / "policy.onnx"), providers=["CPUExecutionProvider"])
        shape = self.session.get_inputs()[0].shape
        if shape[-1] != self.meta.obs_dim:
            raise MetadataError(f"{run_dir / 'policy.onnx'} takes {shape[-1]} inputs; policy.json says {self.meta.obs_dim}")
        self.chunk = self.meta.chunking
        self._history: ChunkHistory | None = None
        self.cameras = tuple(o for o in self.meta.observation if o.is_image)
        self.reads_groups = bool(self.cameras)

    def __call__(self, obs: np.ndarray | dict[str, np.ndarray]) -> np.ndarray:
        if isinstance(obs, dict):
            feed = {o.name: np.asarray(obs[o.group], dtype=np.uint8) for o in self.cameras}
            obs = obs[self.meta.obs.group]
        elif self.cameras:
            raise MetadataError(f"this policy also reads cameras {[o.camera for o in self.cameras]}: call it with the "
                                "env's observation dict, not the policy vector alone")
        else:
            feed = {}
        feed[self.meta.onnx_input] = np.asarray(obs, dtype=np.float32)
        if not self.chunk:
            return self.session.run([self.meta.onnx_output], feed)[0]
        if self._history is None or self._history.past.shape[0] != len(obs):
            self._history = ChunkHistory(len(obs), self.chunk.size, len(self.meta.action_names))
        actions, chunk = self.session.run([self.meta.onnx_output, self.chunk.state_output], {**feed, **self._history.feed()})
        self._history.push(chunk)
        return actions

    def reset(self, env_ids: np.ndarray | None = None) -> None:
        """Forget the chunk history of finished envs (all when None)."""
        if self._history is not None:
            self._history.reset(env_ids)


def run_task_config(run_dir: Path, overrides: dict[str, Any] | None = None) -> tuple[str, Any]:
    """The task id and config a run was trained with (config.json), plus overrides."""
    from s2r.sim.robot_sim import task_config_for_run

    return task_config_for_run(Path(run_dir) / "policy.onnx", overrides)


def one_episode_each(act: Callable[[np.ndarray], np.ndarray], env: VecEnv, seed: int) -> dict[str, np.ndarray]:
    """Run every env of `env` for exactly one episode (falls end early; none is counted twice).

    Args:
        act: (num_envs, obs_dim) `policy` observations -> (num_envs, action_dim) actions.
        env: A batched env; its size is the number of episodes.
        seed: Reset seed.

    Returns:
        Per-episode arrays "return", "vel_error", "fell", "length" (control steps).
    """
    n = env.num_envs
    obs = env.reset(seed=seed)
    done = np.zeros(n, dtype=bool)
    out = {"return": np.zeros(n), "vel_error": np.zeros(n), "fell": np.zeros(n, dtype=bool), "length": np.zeros(n)}
    while not done.all():
        obs, _, _, _, info = env.step(act(obs["policy"]))
        if "episode" in info:
            e = info["episode"]
            first = ~done[e["env_ids"]]  # later episodes of an env that already finished are ignored
            ids = e["env_ids"][first]
            for key, arr in out.items():
                arr[ids] = e[key][first]
            done[ids] = True
    return out


def success_episodes(act: Callable[[np.ndarray], np.ndarray], env: VecEnv, seed: int,
                     reset: Callable[[np.ndarray], None] | None = None) -> dict[str, np.ndarray]:
    """One episode per env of a sparse-success task: per-episode "success", "return" and "length".

    Args:
        act: (num_envs, obs_dim) `policy` observations -> actions (the whole obs dict if `act.reads_groups`).
        env: A batched env whose step info carries "success" (num_envs,) bool.
        seed: Reset seed.
        reset: Called with the ids of envs whose episode just ended (a chunking policy forgets its chunks).
    """
    n = env.num_envs
    obs = env.reset(seed=seed)
    if reset is not None:
        reset(np.arange(n))
    done = np.zeros(n, dtype=bool)
    out = {"success": np.zeros(n, dtype=bool), "return": np.zeros(n), "length": np.zeros(n)}
    ret, length = np.zeros(n), np.zeros(n)
    while not done.all():
        obs, rew, term, trunc, info = env.step(act(obs if getattr(act, "reads_groups", False) else obs["policy"]))
        ret += np.asarray(rew)
        length += 1
        ended = np.logical_or(term, trunc)
        first = ended & ~done
        out["success"][first] = np.asarray(info["success"])[first]
        out["return"][first] = ret[first]
        out["length"][first] = length[first]
        done |= ended
        ret[ended] = 0.0
        length[ended] = 0
        if reset is not None and ended.any():
            reset(np.flatnonzero(ended))
    return out


def evaluate_success(run_dir: Path, episodes: int = 100, seed: int = 1,
                     overrides: dict[str, Any] | None = None) -> dict[str, float]:
    """Success rate of a run's exported ONNX policy over `episodes` episodes of its sparse-success task."""
    policy = OnnxPolicy(run_dir)
    task_id, cfg = run_task_config(run_dir, overrides)
    env = make(task_id, episodes, cfg=cfg, seed=seed)
    try:
        ep = success_episodes(policy, env, seed, reset=policy.reset)
    finally:
        env.close()
    return {"episodes": episodes, "success_rate": float(ep["success"].mean()), "mean_return": float(ep["return"].mean()),
            "mean_length_s": float(ep["length"].mean() * env.spec.control_dt)}


def evaluate(run_dir: Path, episodes: int = 50, seed: int = 1, overrides: dict[str, Any] | None = None) -> EvalResult:
    """Evaluate a run's exported ONNX policy for `episodes` episodes of its task."""
    policy = OnnxPolicy(run_dir)
    task_id, cfg = run_task_config(run_dir, overrides)
    env = make(task_id, episodes, cfg=cfg, seed=seed)
    try:
        ep = one_episode_each(policy, env, seed)
    finally:
        env.close()
    return EvalResult(episodes, float(ep["return"].mean()), float(ep["vel_error"].mean()), float(ep["fell"].mean()),
                      float(ep["length"].mean() * env.spec.control_dt))


@dataclass(frozen=True)
class StraightResult:
    """A straight-line run: forward command only (zero sideways and yaw command), no pushes.

    Drift is measured in the frame of each base's start heading, over the envs that did not fall; errors
    are per-step means of |v_y| and |w_z| (both commanded zero) and of |v_x - speed|.
    """

    episodes: int
    speed: float  # m/s commanded forward
    seconds: float
    fall_rate: float
    mean_forward_m: float
    mean_abs_lateral_m: float  # |sideways offset| at the end
    lateral_drift_pct: float  # mean_abs_lateral_m / mean_forward_m * 100
    mean_abs_heading_deg: float  # |heading change| at the end
    lateral_vel_error: float  # m/s, mean |v_y|
    yaw_rate_error: float  # rad/s, mean |w_z|
    forward_vel_error: float  # m/s, mean |v_x - speed|

    def as_dict(self) -> dict[str, float]:
        """Plain dict for JSON."""
        return dict(self.__dict__)


def _wrap(a: np.ndarray) -> np.ndarray:
    return (a + np.pi) % (2 * np.pi) - np.pi


def straight_line(act: Callable[[np.ndarray], np.ndarray], env: VecEnv, seconds: float, speed: float,
                  seed: int) -> StraightResult:
    """Drive every env of `env` (built with a fixed (speed, 0, 0) command) for `seconds`; see `StraightResult`.

    Args:
        act: (num_envs, obs_dim) `policy` observations -> actions.
        env: A velocity task with `planar_pose()`; its config fixes the command and turns pushes off.
        seconds: Duration; an env that falls (or times out) stops counting at that step.
        speed: The commanded forward speed (m/s), for the forward error.
        seed: Reset seed.
    """
    n, dt = env.num_envs, env.spec.control_dt
    obs = env.reset(seed=seed)
    start = prev = env.planar_pose()
    heading = np.zeros(n)  # unwrapped heading change since the start
    alive = np.ones(n, dtype=bool)
    fell = np.zeros(n, dtype=bool)
    sums, counts = np.zeros(3), 0
    end = start.copy()
    for _ in range(round(seconds / dt)):
        obs, _, term, trunc, _ = env.step(act(obs["policy"]))
        pose = env.planar_pose()
        fell |= alive & term
        ok = alive & ~(term | trunc)  # an ended env was reset: its pose jumped and no longer counts
        d = pose[:, :2] - prev[:, :2]
        c, s = np.cos(prev[:, 2]), np.sin(prev[:, 2])
        vx, vy = (c * d[:, 0] + s * d[:, 1]) / dt, (-s * d[:, 0] + c * d[:, 1]) / dt
        dyaw = _wrap(pose[:, 2] - prev[:, 2])
        heading[ok] += dyaw[ok]
        sums += [np.abs(vy[ok]).sum(), np.abs(dyaw[ok] / dt).sum(), np.abs(vx[ok] - speed).sum()]
        counts += int(ok.sum())
        end[ok] = pose[ok]
        alive = ok
        prev = pose
    keep = ~fell if (~fell).any() else np.ones(n, dtype=bool)
    d = end[keep, :2] - start[keep, :2]
    c, s = np.cos(start[keep, 2]), np.sin(start[keep, 2])
    forward = float(np.mean(c * d[:, 0] + s * d[:, 1]))
    lateral = float(np.mean(np.abs(-s * d[:, 0] + c * d[:, 1])))
    per = sums / max(counts, 1)
    return StraightResult(episodes=n, speed=speed, seconds=seconds, fall_rate=float(fell.mean()), mean_forward_m=forward,
                          mean_abs_lateral_m=lateral, lateral_drift_pct=100.0 * lateral / max(abs(forward), 1e-9),
                          mean_abs_heading_deg=float(np.degrees(np.mean(np.abs(heading[keep])))),
                          lateral_vel_error=float(per[0]), yaw_rate_error=float(per[1]), forward_vel_error=float(per[2]))


def fixed_command(command: tuple[float, float, float]) -> dict[str, Any]:
    """Task overrides that hold the velocity command at `command` (vx, vy, wz) for the whole episode."""
    return {"commands.lin_vel_x": (command[0], command[0]), "commands.lin_vel_y": (command[1], command[1]),
            "commands.ang_vel_z": (command[2], command[2]), "commands.zero_fraction": 0.0}


def evaluate_straight(run_dir: Path, speed: float = 0.5, distance_m: float = 4.0, episodes: int = 50, seed: int = 1,
                      overrides: dict[str, Any] | None = None) -> StraightResult:
    """Lateral and yaw drift of a run's exported ONNX policy under a pure forward command.

    Args:
        run_dir: Run folder with policy.onnx + policy.json of a velocity-command task.
        speed: Forward command (m/s); sideways and yaw commands are zero.
        distance_m: Commanded distance; the run lasts distance_m / speed seconds.
        episodes: Parallel envs (domain randomisation and observation noise as trained; pushes off).
        seed: Reset seed.
        overrides: Further task overrides (applied after the fixed command).
    """
    if speed <= 0 or distance_m <= 0:
        raise ValueError(f"the straight-line check wants a positive speed and distance, got {speed} m/s over {distance_m} m")
    policy = OnnxPolicy(run_dir)
    task_id, cfg = run_task_config(run_dir, {**fixed_command((speed, 0.0, 0.0)), "randomization.push_velocity": 0.0,
                                             **(overrides or {})})
    env = make(task_id, episodes, cfg=cfg, seed=seed)
    try:
        return straight_line(policy, env, distance_m / speed, speed, seed)
    finally:
        env.close()


def play(run_dir: Path, video: Path | None, seconds: float = 10.0, command: tuple[float, float, float] | None = None,
         seed: int = 0, width: int = 640, height: int = 480) -> dict[str, Any]:
    """Roll the policy in one env; write an MP4 if `video` is given (needs an OpenGL backend)."""
    import mujoco

    policy = OnnxPolicy(run_dir)
    _, plain = run_task_config(run_dir)
    # Pushes are off where the task has them (legged tasks); a manipulation task has none to turn off.
    pushes = hasattr(getattr(plain, "randomization", None), "push_velocity")
    overrides: dict[str, Any] = {"randomization.push_velocity": 0.0} if pushes else {}
    if command is not None:
        overrides.update(fixed_command(command))
    task_id, cfg = run_task_config(run_dir, overrides)
    env = make(task_id, 1, cfg=cfg, seed=seed)
    frames = []
    renderer = data = None
    if video is not None:
        try:
            renderer = mujoco.Renderer(env.backend.models[0], height, width)
        except Exception as exc:
            env.close()
            raise RenderUnavailable(
                f"offscreen rendering is not available ({exc.__class__.__name__}: {exc}). "
                "Install Debian's EGL/Mesa packages (apt install libegl1 libgl1) and run with MUJOCO_GL=egl, "
                "or install libosmesa6 and use MUJOCO_GL=osmesa."
            ) from exc
        data = mujoco.MjData(env.backend.models[0])
    obs = env.reset(seed=seed)
    start = env.backend.qpos[0, :2].copy()
    steps = round(seconds / env.spec.control_dt)
    # The robot-following camera where the model has one, else the task's fixed camera (manipulation).
    model0 = env.backend.models[0]
    camera = "track" if mujoco.mj_name2id(model0, mujoco.mjtObj.mjOBJ_CAMERA, "track") >= 0 else getattr(
        cfg, "image_camera", -1)
    falls = successes = 0
    success_steps = []  # frame k shows the state after step k: a success's frame is already the next episode's start
    for k in range(steps):
        obs, _, term, _, info = env.step(policy(obs["policy"]))
        success = bool(np.asarray(info.get("success", [False]))[0])
        successes += int(success)
        if success:
            success_steps.append(k)
        falls += int(term[0]) - int(success)
        if renderer is not None:
            mujoco.mj_setState(env.backend.models[0], data, env.backend.state[0], mujoco.mjtState.mjSTATE_FULLPHYSICS)
            mujoco.mj_forward(env.backend.models[0], data)
            renderer.update_scene(data, camera=camera)
            frames.append(renderer.render().copy())
    dist = float(np.linalg.norm(env.backend.qpos[0, :2] - start))
    env.close()
    if renderer is not None:
        import imageio.v2 as imageio

        video.parent.mkdir(parents=True, exist_ok=True)
        imageio.mimsave(str(video), frames, fps=round(1 / env.spec.control_dt), macro_block_size=1)
        renderer.close()
    return {"steps": steps, "falls": falls, "successes": successes, "success_steps": success_steps, "distance_m": dist,
            "video": str(video) if video else None}


class RenderUnavailable(RuntimeError):
    """MuJoCo could not create an offscreen OpenGL context."""
