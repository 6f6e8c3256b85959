"""Benchmarks (`make bench-*`): speed as ratios measured side by side, never timed tests."""
