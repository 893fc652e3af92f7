"""s2r.calibration: camera, hand-eye and actuator calibration writing versioned YAML for sim and real."""
