"""s2r_ros: the robot-side ROS 2 nodes of s2r (policy, sim bridge, teleop, recorder) and `s2r deploy`."""
