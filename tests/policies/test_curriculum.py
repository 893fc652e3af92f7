"""The privileged-action curriculum: its state machine on scripted success streams, and a short real PPO run
whose exported ONNX graph provably has no privileged action dimensions and runs on the plain task."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from s2r.policies.algorithm import AlgorithmTaskMismatch
from s2r.policies.curriculum import ADVANCE, FALL_BACK, HOLD, Curriculum, CurriculumConfig, kind_scales, task_actor
from s2r.policies.driver import Budget, new_run_spec, train
from s2r.real.metadata import load_metadata
from s2r.sim import make, task_config
from s2r.sim.robot_sim import task_config_for_run
from s2r.sim.tasks.manipulation import VirtualWrench

# The instant success test (success_hold=0): these tiny runs move their curriculum on boxes that an ungated wrench
# throws up under random actions, which the default (a held lift) would not count.
THROWN = {"backend.num_threads": 1, "success_hold": 0}


def test_curriculum_advances_holds_and_falls_back_on_a_scripted_stream() -> None:
    cur = Curriculum(CurriculumConfig(stages=(1.0, 0.5, 0.0), window=10, advance_at=0.6, fall_back_below=0.1))
    assert cur.scale == 1.0
    assert cur.observe([True] * 9) == HOLD  # the window is not full yet: no decision
    assert cur.observe([True]) == ADVANCE and cur.stage == 1 and cur.scale == 0.5
    assert len(cur.window) == 0  # the new stage is judged on its own episodes
    assert cur.observe([True, False] * 5) == HOLD and cur.stage == 1  # 50%: between the thresholds
    assert cur.observe([False] * 10) == FALL_BACK and cur.stage == 0 and cur.scale == 1.0  # collapsed
    assert cur.observe([False] * 30) == HOLD and cur.stage == 0  # nothing below the first stage
    # One change per call, however many episodes arrive at once.
    assert cur.observe([True] * 50) == ADVANCE and cur.stage == 1
    assert cur.observe([True] * 10) == ADVANCE and cur.stage == 2 and cur.final and cur.scale == 0.0
    assert cur.observe([True] * 10) == HOLD and cur.stage == 2  # the last stage holds
    assert (cur.advances, cur.fall_backs) == (3, 1)
    again = Curriculum(cur.cfg)
    again.load_state_dict(json.loads(json.dumps(cur.state_dict())))
    assert again.state_dict() == cur.state_dict()


@pytest.mark.parametrize(("kw", "msg"), [
    ({"stages": (0.5, 1.0)}, "must not increase"),
    ({"stages": (1.5, 0.0)}, r"scales in \[0, 1\]"),
    ({"stages": ()}, "one or more scales"),
    ({"window": 0}, "window must be >= 1"),
    ({"advance_at": 0.1, "fall_back_below": 0.2}, "fall_back_below"),
])
def test_bad_curriculum_configs_say_what_is_wrong(kw: dict, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        CurriculumConfig(**kw)


def test_task_without_privileges_is_refused(tmp_path) -> None:
    spec = new_run_spec("ppo-privileged", "Panda-Lift-FlatBox", num_envs=2, budget=Budget(steps=10))
    with pytest.raises(AlgorithmTaskMismatch, match="declares none: use a '-Privileged' task"):
        train(spec, tmp_path / "run", progress=False)


def test_export_has_no_privileged_dims_and_runs_on_the_plain_task(tmp_path) -> None:
    torch.manual_seed(0)
    overrides = {"torch_threads": 1, "algo.steps_per_env": 16, "curriculum.window": 8, "curriculum.advance_at": 0.3}
    spec = new_run_spec("ppo-privileged", "Panda-Lift-FlatBox-Privileged", task_overrides=THROWN,
                        algo_overrides=overrides, num_envs=8, seed=0, budget=Budget(steps=8 * 16 * 3))
    # An ungated wrench, so that random actions already lift the box and the curriculum moves within 3 iterations.
    tcfg = spec.task_cfg
    spec = replace(spec, task_cfg=replace(tcfg, privileged=(VirtualWrench(reach_radius=0.0), *tcfg.privileged[1:])))
    run = tmp_path / "run"
    summary = train(spec, run, progress=False)
    hist = json.loads((run / "history.json").read_text())
    rows = [r for r in hist if "privilege_scale" in r]
    assert len(rows) == 3 and {"curriculum_stage", "window_success_rate", "curriculum_event"} <= set(rows[0])
    # With every privilege at scale 1 a random policy lifts the box often: the curriculum moves on.
    assert summary["steps_to_stage_1"] > 0 and rows[-1]["privilege_scale"] < 1.0

    graph = onnx.load(str(run / "policy.onnx")).graph
    out_dims = [d.dim_value or d.dim_param for d in graph.output[0].type.tensor_type.shape.dim]
    assert out_dims == ["batch", 4]
    # No weight in the graph has a row per privileged action: they were cut out, not zeroed.
    widths = {tuple(t.dims) for t in graph.initializer}
    assert not any(10 in dims for dims in widths) and any(4 in dims for dims in widths)
    meta = load_metadata(run / "policy.json")
    assert meta.action_names == ("ee_dx", "ee_dy", "ee_dz", "gripper")

    # The exported graph computes the trained actor's task columns.
    ckpt = torch.load(run / "checkpoint.pt", weights_only=False)
    from s2r.policies.networks import ActorCritic
    from s2r.policies.ppo import _critic_without_missing_privileged

    env = make("Panda-Lift-FlatBox-Privileged", 4, cfg=spec.task_cfg, seed=3)
    try:
        algo_cfg = _critic_without_missing_privileged(spec.cfg.algo, env.obs_dims)
        full = ActorCritic(env.obs_dims, 10, algo_cfg.policy)
        full.load_state_dict(ckpt["state"]["algo"]["model"])
        obs = env.reset(seed=3)["policy"]
        cut = task_actor(full, env.obs_dims, 4)
    finally:
        env.close()
    sess = ort.InferenceSession(str(run / "policy.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"obs": obs})[0]
    with torch.no_grad():
        want = full.act_mean(torch.as_tensor(obs))[:, :4].numpy()
        np.testing.assert_allclose(cut.act_mean(torch.as_tensor(obs)).numpy(), want, atol=1e-6)
    np.testing.assert_allclose(got, want, atol=1e-5)

    # Evaluation and deployment read the run's task without privileges: scale 0, four action columns.
    task_id, cfg = task_config_for_run(run)
    assert cfg.privileged == () and cfg == spec.task_cfg.without_privileges()
    plain = make(task_id, 2, cfg=cfg, seed=0)
    try:
        o = plain.reset(seed=0)
        assert plain.spec.action_dim == got.shape[1] == 4
        plain.step(sess.run(None, {"obs": o["policy"]})[0])
    finally:
        plain.close()


def test_off_policy_core_runs_the_curriculum_and_exports_task_columns_only(tmp_path) -> None:
    torch.manual_seed(0)
    overrides = {"torch_threads": 1, "learning_starts": 64, "steps_per_iteration": 16, "eval_episodes": 2,
                 "eval_every": 0, "curriculum.window": 4, "curriculum.advance_at": 0.3}
    spec = new_run_spec("sac-privileged", "Panda-Lift-FlatBox-Privileged", task_overrides=THROWN,
                        algo_overrides=overrides, num_envs=4, seed=0, budget=Budget(steps=4 * 16 * 3))
    tcfg = spec.task_cfg
    spec = replace(spec, task_cfg=replace(tcfg, privileged=(VirtualWrench(reach_radius=0.0), *tcfg.privileged[1:])))
    run = tmp_path / "run"
    summary = train(spec, run, progress=False)
    assert summary["steps_to_stage_1"] > 0 and "eval_return" in summary
    rows = [r for r in json.loads((run / "history.json").read_text()) if "privilege_scale" in r]
    assert rows and rows[-1]["privilege_scale"] < 1.0
    graph = onnx.load(str(run / "policy.onnx")).graph
    assert [d.dim_value or d.dim_param for d in graph.output[0].type.tensor_type.shape.dim] == ["batch", 4]
    assert not any(d in (10, 20) for t in graph.initializer for d in t.dims)  # neither 10 means nor 10+10 rows
    assert load_metadata(run / "policy.json").action_names == ("ee_dx", "ee_dy", "ee_dz", "gripper")


def test_fades_spread_the_stage_scale_over_the_privileges() -> None:
    cfg = CurriculumConfig(fades=("virtual_wrench:0.5:1", "table_collision_off:0:0.25"))
    kinds = ("virtual_wrench", "table_collision_off", "reduced_gravity")
    spans = cfg.fade_spans()
    assert kind_scales(1.0, kinds, spans) == {"virtual_wrench": 1.0, "table_collision_off": 1.0, "reduced_gravity": 1.0}
    # The wrench goes first (gone at 0.5), the table relaxation last (whole until 0.25), the rest follow the stage.
    assert kind_scales(0.75, kinds, spans) == {"virtual_wrench": 0.5, "table_collision_off": 1.0, "reduced_gravity": 0.75}
    assert kind_scales(0.5, kinds, spans)["virtual_wrench"] == 0.0
    assert kind_scales(0.125, kinds, spans) == {"virtual_wrench": 0.0, "table_collision_off": 0.5, "reduced_gravity": 0.125}
    assert set(kind_scales(0.0, kinds, spans).values()) == {0.0}


@pytest.mark.parametrize(("fades", "msg"), [
    (("virtual_wrench:0.5",), "must read kind:low:high"),
    (("virtual_wrench:a:1",), "must read kind:low:high"),
    (("antigravity:0:1",), "names no privilege; known kinds: virtual_wrench"),
    (("virtual_wrench:0.6:0.5",), "needs 0 <= low < high <= 1"),
    (("virtual_wrench:0:1", "virtual_wrench:0:0.5"), "lists 'virtual_wrench' twice"),
])
def test_bad_fades_say_what_is_wrong(fades: tuple, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        CurriculumConfig(fades=fades)


def test_trainer_sets_each_privilege_by_its_fade_and_refuses_an_undeclared_one(tmp_path) -> None:
    torch.manual_seed(0)
    overrides = {"torch_threads": 1, "algo.steps_per_env": 16, "curriculum.window": 8, "curriculum.advance_at": 0.3,
                 "curriculum.stages": "1.0,0.5,0.0", "curriculum.fades": "virtual_wrench:0.5:1,table_collision_off:0:0.5"}
    spec = new_run_spec("ppo-privileged", "Panda-Lift-FlatBox-Privileged", task_overrides=THROWN,
                        algo_overrides=overrides, num_envs=8, seed=0, budget=Budget(steps=8 * 16 * 3))
    tcfg = spec.task_cfg
    spec = replace(spec, task_cfg=replace(tcfg, privileged=(VirtualWrench(reach_radius=0.0), *tcfg.privileged[1:])))
    train(spec, tmp_path / "run", progress=False)
    rows = [r for r in json.loads((tmp_path / "run" / "history.json").read_text()) if "privilege_scale" in r]
    want = {1.0: (1.0, 1.0, 1.0), 0.5: (0.0, 1.0, 0.5)}  # stage scale -> wrench, table relaxation, reduced gravity
    seen = {r["privilege_scale"] for r in rows}
    assert 0.5 in seen, seen  # the ungated wrench lifts the box often: the curriculum moves within 3 iterations
    for r in rows:
        assert (r["scale_virtual_wrench"], r["scale_table_collision_off"], r["scale_reduced_gravity"]) == \
            want[r["privilege_scale"]]
    bad = replace(spec, cfg=replace(spec.cfg, curriculum=replace(spec.cfg.curriculum, fades=("fixture_force:0:1",))))
    with pytest.raises(AlgorithmTaskMismatch, match="names fixture_force, which Panda-Lift-FlatBox-Privileged does not"):
        train(bad, tmp_path / "bad", progress=False)


def test_bench_closes_the_table_scoop_by_gate_or_by_removing_the_table_first() -> None:
    # The two switchable ways round 4 of bench/privileged.py closes the table-relaxation shortcut on the flat box.
    from tests.bench_modules import load_bench

    arms = load_bench("privileged").ARMS
    # Gated: both the wrench and the table relaxation act only on a hand placed for a grasp.
    assert arms["curriculum_gated"][4] == {"gate": "grasp_pose"} and arms["curriculum_gated"][5] == {"gate": "grasp_pose"}
    # Table first: its own first stage removes the table relaxation while the wrench and the lighter box stay whole.
    extra = arms["curriculum_table_first"][2]
    cfg = CurriculumConfig(stages=tuple(float(x) for x in extra["curriculum.stages"].split(",")),
                           fades=tuple(extra["curriculum.fades"].split(",")))
    kinds = ("virtual_wrench", "table_collision_off", "wider_joint_limits", "reduced_gravity")
    first, second = (kind_scales(s, kinds, cfg.fade_spans()) for s in cfg.stages[:2])
    assert set(first.values()) == {1.0}
    assert second == {"virtual_wrench": 1.0, "table_collision_off": 0.0, "wider_joint_limits": 0.0, "reduced_gravity": 1.0}
    assert set(kind_scales(cfg.stages[-1], kinds, cfg.fade_spans()).values()) == {0.0}


def test_bench_all_at_once_twins_of_the_relaxed_hold_arm_differ_only_in_the_stages() -> None:
    # Round 8's baselines: the same gates and the same RelaxedHold privilege as the curriculum arm, removed in one
    # stage (with fall-back) or on a clock. A twin without the hold would face the full held success from the start
    # (round 7: not one success in a million steps), a baseline handicapped by its test rather than by its schedule.
    from tests.bench_modules import load_bench

    bench = load_bench("privileged")
    cur = bench.ARMS["curriculum_relaxed_hold"]
    for twin, stages in (("all_at_once_relaxed_hold", "1.0,0.0"), ("all_at_once_timed_relaxed_hold", "1.0")):
        arm = bench.ARMS[twin]
        assert arm[0] == cur[0] and arm[1] == cur[1] and arm[4:] == cur[4:]
        assert arm[2] == {"curriculum.stages": stages}
        assert bench.EXTRA_PRIVILEGES[twin] == bench.EXTRA_PRIVILEGES["curriculum_relaxed_hold"] == ("relaxed_hold",)


def test_bench_flat_only_arms_are_read_off_the_arm_tables() -> None:
    # The drawer task refuses exactly the arms that change the flat box's reward, gates or success test.
    from tests.bench_modules import load_bench

    bench = load_bench("privileged")
    assert set(bench.ARMS) - {"curriculum", "none", "all_at_once"} == bench.FLAT_ONLY


def test_bench_labels_tell_runs_of_one_arm_with_other_rewards_apart() -> None:
    """Round 9 ran `curriculum_relaxed_hold` without the squeeze reward: its plot must not read as round 8's arm."""
    from tests.bench_modules import load_bench

    label = load_bench("privileged").run_label
    run = {"arm": "curriculum_relaxed_hold", "seed": 1, "success_at_scale0": 0.3, "task_overrides": {}}
    squeezed = {**run, "task_overrides": {"reward.squeeze": "0.2"}}
    assert label(run) == "curriculum_relaxed_hold s1: scale-0 eval 30%"
    assert label(squeezed) == "curriculum_relaxed_hold squeeze=0.2 s1: scale-0 eval 30%"
    assert label({k: v for k, v in run.items() if k != "task_overrides"}) == label(run)  # older result files


def test_bench_records_the_reward_a_resumed_run_was_started_with() -> None:
    # A resumed run ignores this call's --task-set; its result must still say it was trained with the squeeze reward.
    from tests.bench_modules import load_bench

    changes = load_bench("privileged").reward_changes
    cfg = task_config("Panda-Lift-FlatBox-Privileged")
    assert changes(cfg, "Panda-Lift-FlatBox-Privileged") == {}
    squeezed = replace(cfg, reward=replace(cfg.reward, squeeze=0.2, grasp=0.3))
    assert changes(squeezed, "Panda-Lift-FlatBox-Privileged") == {"reward.squeeze": "0.2", "reward.grasp": "0.3"}


def test_bench_refuses_a_switch_share_outside_0_1(monkeypatch, capsys, tmp_path) -> None:
    # 0 would leave the scale-1 phase without a budget, 1.5 would train past the arm's own budget before switching.
    from tests.bench_modules import load_bench

    bench = load_bench("privileged")
    for share in ("0", "1.5"):
        monkeypatch.setattr("sys.argv", ["privileged.py", "--arms", "all_at_once_timed_relaxed_hold", "--steps", "10",
                                         "--switch-share", share, "--out", str(tmp_path / "x"),
                                         "--runs", str(tmp_path / "runs")])
        with pytest.raises(SystemExit):
            bench.main()
        assert f"--switch-share is the share of the budget trained at scale 1 and must be in (0, 1); got {float(share)}" \
            in capsys.readouterr().err
