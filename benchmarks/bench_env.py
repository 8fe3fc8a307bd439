"""Environment steps/s at 64x64 (issue 4): policy forward + Γ + reward, one env and a vector env.

Usage: .venv/bin/python benchmarks/bench_env.py [--episodes 3]
Uses the demo config (configs/demo.yaml) with untrained weights (speed does not depend on them).
"""

from __future__ import annotations

import argparse
import time

import torch

from rovr.cli import packaged_config
from rovr.config import load_config
from rovr.env import VectorVideoReconstructionEnv, VideoReconstructionEnv
from rovr.models.policy import build_actor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--episodes", type=int, default=3)
    args = parser.parse_args()
    cfg = load_config(packaged_config("demo"))
    actor = build_actor(cfg.policy, cfg.data.frames).eval()
    print(
        f"Env steps/s, T={cfg.data.frames}, {cfg.data.size}x{cfg.data.size}, torch threads {torch.get_num_threads()}.\n"
    )
    print("| env | episodes in parallel | steps/s (policy + Γ + reward) |")
    print("| --- | --- | --- |")
    env = VideoReconstructionEnv(cfg, split="train")
    steps, t0 = 0, time.perf_counter()
    with torch.no_grad():
        for ep in range(args.episodes):
            obs, _ = env.reset(seed=ep)
            done = False
            while not done:
                video = torch.from_numpy(obs["video"])[None].float() / 255
                target = torch.from_numpy(obs["target"])[None].float() / 255
                logits = actor(video, target, torch.tensor([obs["t"]])).logits
                a, b = sorted(logits.topk(2).indices[0].tolist())
                from rovr.env import frames_to_action

                obs, _, done, _, _ = env.step(frames_to_action((a, b), cfg.data.frames, obs["t"]))
                steps += 1
    print(f"| VideoReconstructionEnv | 1 | {steps / (time.perf_counter() - t0):.1f} |")
    venv = VectorVideoReconstructionEnv(8, cfg, split="train")
    venv.reset(seed=0)
    steps, t0 = 0, time.perf_counter()
    for _ in range(args.episodes * cfg.data.frames):
        venv.step(venv.action_space.sample())
        steps += 8
    print(f"| VectorVideoReconstructionEnv (random actions) | 8 | {steps / (time.perf_counter() - t0):.1f} |")


if __name__ == "__main__":
    main()
