"""Tests of the lifecycle: the engine, the boundary x consumer matrix, workers, the sweeper."""
