"""Segment of One: the stages of the nightly pipeline, the lake, quality, configuration, the CLI, the simulator."""
