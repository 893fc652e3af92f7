"""s2r.real: the robot-side runtime. Imports numpy and onnxruntime only — never torch, mujoco or s2r.sim."""
