"""A learned success classifier as the only reward of a simulated HIL run (`hil` with `classifier=<onnx>`).

On a robot nothing says "success" but the classifier (and the operator's buttons): its success is the reward
and ends the episode. To train the same way in simulation:

- The training env runs with `success_ends_episode=False`: the simulator's success neither rewards nor ends
  an episode; the classifier's does, through `end_episodes` (a false positive ends an episode that had not
  succeeded, as it would on the robot). Falls and the time limit end episodes as before.
- The demonstrations are relabelled by the classifier too: reward 1 and the end at the first frame it
  calls success, 0 before; a demo in which it never fires keeps its frames with reward 0, cut as a time-out.
- The simulator's success is still read, only to count: episodes the classifier ended on a frame the
  simulator calls a failure (false-positive ends), and episodes that reached success without the classifier
  noticing (missed successes). Evaluation (the policy alone) is judged by the simulator, as in every hil run.

The classifier is the exported ONNX file (`s2r hil classifier`) behind `s2r.real.reward_classifier`, the
same code the HIL actor uses on a robot, so its metadata checks (task, camera, image size) apply here too.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from s2r.policies.algorithm import AlgorithmTaskMismatch
from s2r.real.reward_classifier import ClassifierError, RewardClassifier

COUNTERS = ("episodes_ended", "classifier_ends", "false_positive_ends", "missed_successes")


def classifier_task_config(task_cfg: Any, task_id: str) -> Any:
    """The training env's config under a classifier reward: the simulator's success ends no episode."""
    if not hasattr(task_cfg, "success_ends_episode"):
        raise AlgorithmTaskMismatch(f"task '{task_id}' cannot leave episode ends to a reward classifier (its config has "
                                    "no success_ends_episode); train hil on it without classifier=")
    return dataclasses.replace(task_cfg, success_ends_episode=False)


class ClassifierReward:
    """Judges each step by the classifier, ends the episodes it calls successful, and counts its mistakes.

    Args:
        path: The classifier's ONNX file (metadata in `<path>.json`).
        task_id: The run's task (the classifier must have been trained on it).
        task_cfg: The run's task config (camera and image size the classifier must match).
        num_envs: Envs stepped together.
    """

    def __init__(self, path: str, task_id: str, task_cfg: Any, num_envs: int) -> None:
        image = bool(getattr(task_cfg, "image", False))
        size = tuple(task_cfg.image_size) if image else None
        try:
            self.clf = RewardClassifier.load(path, task=task_id, cameras=(task_cfg.image_camera,) if image else None,
                                             image_size=size)
        except ClassifierError as exc:
            raise AlgorithmTaskMismatch(str(exc)) from None
        if "image" in self.clf.inputs and not image:
            h, w = self.clf.image_size
            raise AlgorithmTaskMismatch(f"reward classifier {path} reads {h}x{w} images from camera "
                                        f"{self.clf.meta.get('cameras')}, but the task renders none: add --set image=true "
                                        f"--set image_size={h} (or train a state classifier, --inputs state)")
        self.reached = np.zeros(num_envs, dtype=bool)  # the simulator saw success in this episode
        self.counts = dict.fromkeys(COUNTERS, 0)

    def success(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """(n,) bool: the classifier's call on a batch of observation groups."""
        image = obs.get("image") if "image" in self.clf.inputs else None
        state = obs["policy"] if "state" in self.clf.inputs else None
        return np.atleast_1d(np.asarray(self.clf(image, state), dtype=bool))

    def judge(self, final_obs: dict[str, np.ndarray], sim_success: np.ndarray, terminated: np.ndarray,
              truncated: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Reward and episode ends of one batched step, from the observations it led to (before any reset).

        Args:
            final_obs: Observation groups after the step, before auto-reset.
            sim_success: (n,) the simulator's success on this step (only counted).
            terminated: (n,) the env's ends that are not success (falls), since success ends none here.
            truncated: (n,) the env's time-outs.

        Returns:
            (reward, terminated, truncated, ended_by_classifier, true_success_at_end): the first three as the
            learner stores them; the ids in `ended_by_classifier` still need `env.end_episodes`.
        """
        fired = self.success(final_obs)
        sim_success = np.asarray(sim_success, dtype=bool)
        self.reached |= sim_success
        env_done = np.logical_or(terminated, truncated)
        term = np.asarray(terminated, dtype=bool) | fired
        trunc = np.asarray(truncated, dtype=bool) & ~fired
        done = term | trunc
        c = self.counts
        c["episodes_ended"] += int(done.sum())
        c["classifier_ends"] += int(fired.sum())
        c["false_positive_ends"] += int((fired & ~sim_success).sum())
        c["missed_successes"] += int((done & ~fired & self.reached).sum())
        self.reached[done] = False
        ended = np.flatnonzero(fired & ~env_done)
        return fired.astype(np.float32), term, trunc, ended, sim_success & done

    def relabel(self, episode: Any) -> Any:
        """A demonstration with the classifier's rewards: 1 and the end at its first success frame, else 0 to the end."""
        frames = {g: v[1:] for g, v in episode.obs.items()}  # the observation each action led to
        fired = np.flatnonzero(self.success(frames))
        t = len(episode.actions)
        if len(fired) == 0:
            return dataclasses.replace(episode, rewards=np.zeros(t, np.float32), terminated=False)
        end = int(fired[0]) + 1  # steps kept
        rewards = np.zeros(end, np.float32)
        rewards[-1] = 1.0
        obs = {g: v[: end + 1] for g, v in episode.obs.items()}
        inter = episode.intervention[:end] if len(episode.intervention) else episode.intervention
        return dataclasses.replace(episode, obs=obs, actions=episode.actions[:end], rewards=rewards, terminated=True,
                                   intervention=inter)

    def metrics(self) -> dict[str, float]:
        """The counters, plus the share of classifier ends that were false positives."""
        c = self.counts
        return {**{k: float(v) for k, v in c.items()},
                "false_positive_end_rate": c["false_positive_ends"] / max(1, c["classifier_ends"])}


__all__ = ["COUNTERS", "ClassifierReward", "classifier_task_config"]
