"""Quadrotor pieces for the re-planning task: SE(3) tracking control, closed-loop flights, time allocation."""
