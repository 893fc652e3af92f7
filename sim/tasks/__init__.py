"""Task definitions. Importing this package registers every task."""

from dataclasses import replace

from s2r.sim.registry import register_task
from s2r.sim.tasks.locomotion import LocomotionConfig, LocomotionEnv
from s2r.sim.tasks.puck import PuckConfig, PuckEnv

register_task(
    "Go1-Velocity-Flat",
    LocomotionEnv,
    LocomotionConfig(),
    "Go1-class quadruped tracks a commanded forward speed and yaw rate on flat ground.",
)
register_task(
    "Go1-Velocity-Rough",
    LocomotionEnv,
    LocomotionConfig(terrain="rough"),
    "Go1-class quadruped velocity tracking on a rough heightfield (6 cm bumps).",
)
register_task(
    "Go1-Velocity-FlatNoDR",
    LocomotionEnv,
    replace(
        LocomotionConfig(),
        randomization=replace(
            LocomotionConfig().randomization,
            friction=(1.0, 1.0), added_mass=(0.0, 0.0), motor_strength=(1.0, 1.0),
            push_velocity=0.0, observation_noise=0.0, action_latency_steps=(0, 0),
        ),
    ),
    "Flat-ground velocity tracking with no domain randomisation (for debugging and quick tests).",
)
register_task(
    "Puck-Velocity-Flat",
    PuckEnv,
    PuckConfig(),
    "Planar puck tracks a commanded (vx, vy, yaw rate); learns in seconds (used by the learning tests).",
)
