"""Reward classifier: labelling in MuJoCo and through the console, training, threshold pick, ONNX export, bad input."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from s2r.policies.hil_label_cli import add_parsers, record_with_operator
from s2r.policies.reward_classifier import ClassifierConfig, export_classifier, pick_threshold, train_classifier
from s2r.real.hil_console import OperatorConsole
from s2r.real.reward_classifier import ClassifierError, RewardClassifier, classifier_reward
from s2r.real.reward_labels import LabelFileError, LabelRecorder, load_labels

TASK = "Panda-Lift-Cube"
SIZE = (16, 16)


def synthetic_labels(path, episodes: int = 40, seed: int = 0, one_class: bool = False):
    """Episodes of noisy frames; a success frame has a bright square whose corner moves (a learnable, shifted cue).

    Failed episodes end with a dimmer square (a near miss: the hard negatives)."""
    rng = np.random.default_rng(seed)
    rec = LabelRecorder(TASK, cameras=("workspace",), image_size=SIZE, state_dim=3, source="test")
    for e in range(episodes):
        success = e % 2 == 0 and not one_class
        for t in range(8):
            img = rng.integers(0, 60, (*SIZE, 3), dtype=np.uint8)
            last = t == 7
            if last:
                y, x = rng.integers(2, 8, 2)
                img[y:y + 6, x:x + 6] = 250 if success else 140
            rec.add(label=success and last, image=img, state=rng.normal(size=3) + (2.0 * (success and last)))
        rec.end_episode(success)
    return rec.save(path)


def test_threshold_pick_keeps_the_false_positive_rate() -> None:
    scores = np.linspace(0, 1, 101)
    t = pick_threshold(scores, 0.05)
    assert np.mean(scores >= t) <= 0.05 and np.mean(scores >= t - 0.011) > 0.05  # the lowest such threshold
    assert pick_threshold(scores, 0.001) > 1.0 - 1e-9  # no failure frame may pass
    f32 = np.float32([0.3, 0.7, 0.7000001, 0.9])  # float32 neighbours: the one kept out must stay out
    assert np.sum(f32 >= pick_threshold(f32, 0.25)) == 1


def test_train_export_load_and_metadata_refusals(tmp_path) -> None:
    torch.set_num_threads(1)
    labels = load_labels(synthetic_labels(tmp_path / "labels.npz"))
    trained = train_classifier(labels, ClassifierConfig(steps=150, batch_size=32, hard_after=30, shift=2, target_fpr=0.05))
    assert trained.losses[-1] < trained.losses[0]
    # Held-out test episodes played no part in training or in the threshold; the cue is easy, so it must be found.
    assert trained.test["recall"] >= 0.75 and trained.test["fpr_failure_episodes"] <= 0.1, trained.test
    assert trained.calib["fpr_failure_episodes"] <= 0.05
    path = export_classifier(trained, tmp_path / "clf.onnx")
    meta = json.loads((tmp_path / "clf.onnx.json").read_text())
    assert meta["task"] == TASK and meta["cameras"] == ["workspace"] and meta["image_size"] == list(SIZE)
    assert meta["threshold"] == trained.threshold
    clf = RewardClassifier.load(path, task=TASK, cameras=("workspace",), image_size=SIZE)
    probs = clf.prob(image=labels.image)
    with torch.no_grad():
        want = torch.sigmoid(trained.net(torch.from_numpy(labels.image))).numpy()
    np.testing.assert_allclose(probs, want, atol=1e-5)
    assert np.shape(clf.prob(image=labels.image[0])) == ()
    # The operator's buttons override the classifier; otherwise the classifier's verdict is the sparse reward.
    pos = labels.image[np.flatnonzero(labels.label)[0]]
    assert classifier_reward(clf, False, True, image=pos) == (0.0, True)
    assert classifier_reward(clf, True, False, image=labels.image[0]) == (1.0, True)
    assert classifier_reward(clf, False, False, image=labels.image[0])[1] == bool(clf(labels.image[0]))

    with pytest.raises(ClassifierError, match="trained for task Panda-Lift-Cube, not Panda-Insert-Peg"):
        RewardClassifier.load(path, task="Panda-Insert-Peg")
    with pytest.raises(ClassifierError, match=r"cameras \['workspace'\].*\['wrist'\]"):
        RewardClassifier.load(path, task=TASK, cameras=("wrist",))
    with pytest.raises(ClassifierError, match="takes 16x16 images, the camera gives 64x64"):
        RewardClassifier.load(path, task=TASK, image_size=(64, 64))
    with pytest.raises(ClassifierError, match="takes 16x16 images, got 20x16"):
        clf.prob(image=np.zeros((20, 16, 3), np.uint8))
    with pytest.raises(ClassifierError, match="uint8 RGB"):
        clf.prob(image=np.zeros((16, 16, 3), np.float32))
    with pytest.raises(ClassifierError, match="uint8 RGB"):
        clf.prob(image=np.zeros((16, 16, 4), np.uint8))
    with pytest.raises(ClassifierError, match="decode the JPEG/PNG"):
        clf.prob(image=b"\xff\xd8\xff\xe0")
    with pytest.raises(ClassifierError, match="missing"):
        RewardClassifier.load(tmp_path / "nope.onnx", task=TASK)


def test_label_file_bad_input(tmp_path) -> None:
    one = synthetic_labels(tmp_path / "one.npz", episodes=4, one_class=True)
    with pytest.raises(LabelFileError, match=r"only failure frames .* label some success frames"):
        load_labels(one)
    with pytest.raises(LabelFileError, match="does not exist"):
        load_labels(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(LabelFileError, match="not an s2r label file"):
        load_labels(tmp_path / "junk.npz")
    rec = LabelRecorder(TASK, image_size=SIZE)
    with pytest.raises(LabelFileError, match=r"\(16, 16, 3\) uint8 RGB"):
        rec.add(label=True, image=np.zeros((32, 32, 3), np.uint8))
    # The CLI says the same in one line and exits 2.
    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers(dest="role"))
    args = parser.parse_args(["classifier", str(one), "--out", str(tmp_path / "c.onnx"), "--steps", "5"])
    assert args.func(args) == 2


def test_label_in_mujoco_and_train_from_the_cli(tmp_path, capsys, renderer_or_skip) -> None:
    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers(dest="role"))
    out = tmp_path / "sim.npz"
    args = parser.parse_args(["label", TASK, "--episodes", "8", "--size", "16", "--out", str(out), "--seed", "1"])
    assert args.func(args) == 0
    labels = load_labels(out)
    assert labels.image.shape[1:] == (16, 16, 3) and labels.state.shape[1] > 0
    assert len(np.unique(labels.episode)) >= 8
    for e in np.unique(labels.episode):  # one success frame, the last, in each successful episode; none otherwise
        lab = labels.label[labels.episode == e]
        ok = labels.episode_success[labels.episode == e][0]
        assert lab.sum() == int(ok) and (not ok or lab[-1] == 1)
    assert 0 < labels.episode_success.mean() < 1  # the expert fails on purpose in some episodes
    args = parser.parse_args(["classifier", str(out), "--out", str(tmp_path / "c.onnx"), "--steps", "20",
                              "--inputs", "image+state"])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "precision" in text and "false-positive rate on failure episodes" in text
    RewardClassifier.load(tmp_path / "c.onnx", task=TASK, cameras=("workspace",), image_size=(16, 16))


def test_console_labelling_mode_labels_frames(tmp_path, renderer_or_skip) -> None:
    import dataclasses

    from s2r.sim import make
    from s2r.sim.registry import get_task
    from s2r.sim.tasks.experts import make_expert

    cfg = dataclasses.replace(get_task(TASK).cfg, image=True, image_size=SIZE, max_episode_steps=12)
    env = make(TASK, 1, cfg=cfg)
    expert = make_expert(TASK, 1, cfg=cfg)
    rec = LabelRecorder(TASK, cameras=("workspace",), image_size=SIZE, source="console")
    with OperatorConsole() as console:
        for i, button in enumerate(["labelling", "label_down", "label_up", "success"]):
            console.press(button, f"p{i}")
        record_with_operator(env, expert, rec, console.read, 2, console=console, rate_hz=0)
        assert console.state()["frame_seq"] == rec.frames
    env.close()
    path = rec.save(tmp_path / "console.npz")
    z = np.load(path)  # episode 0: one tapped success frame; episode 1: the time limit, nothing labelled
    assert z["label"].tolist() == [1] + [0] * (len(z["label"]) - 1)
    assert z["episode_success"][0] and not z["episode_success"][-1] and len(z["label"]) == 1 + 12
