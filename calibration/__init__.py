"""s2r.calibration: camera, hand-eye and actuator calibration writing versioned YAML for sim and real.

Modules (importing this package loads none of them, so `s2r --help` stays light):

- `schema`: the versioned YAML files and their typed contents (stdlib + PyYAML + numpy; what sim/real read).
- `board`, `images`, `camera`: board detection, image sources (folder, MCAP bag, ROS topic), intrinsics.
- `hand_eye`: eye-in-hand / eye-to-hand with every OpenCV solver and a consistency check.
- `excite`, `logs`, `sysid`: excitation trajectories, joint logs (CSV/MCAP), actuator identification (MuJoCo
  is imported here only).
- `synthetic`: ground-truth images and logs for tests and benchmarks; `plot`: report figures; `cli`: flags.
"""
