"""ROVR: Reinforcement Optimized Video Reconstruction."""

__version__ = "0.1.0"
