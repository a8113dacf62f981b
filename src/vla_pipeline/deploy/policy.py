"""A trained checkpoint as the robot runs it, in one process: give it a LeRobot robot observation
(``robot.get_observation()``: one float per motor name, one HxWx3 image per camera, plus the task),
get the robot's action dict back. ``vla serve`` runs the same object behind LeRobot's gRPC service.

The checkpoint loads through the strict loader (manifest hashes, every tensor present) with its own
saved processors and frozen stats, so the numbers are the ones ``vla evaluate`` computes:

* the state is the contract's joints, taken from the observation by name (LeKiwi's base velocities
  never reach an arm-only policy); each camera is the contract's camera, found under the robot's
  name for it (the dataset key without ``observation.images.``), brought to the checkpoint's image
  size (bilinear, on the [0, 1] floats) when the robot's differs;
* the chunk comes from LeRobot's ``predict_action_chunk`` and the checkpoint's postprocessor;
* with a ``noise_seed``, a frame's flow-matching noise is the one ``vla evaluate`` draws for it
  (seeded by noise seed, episode and frame), so serving a dataset's frames reproduces evaluation (a
  real robot's chunks count as frames 0, 1, 2, ... of episode 0); without one it comes from torch's
  global generator, as in LeRobot;
* :class:`~vla_pipeline.deploy.adapter.ActionAdapter` turns each action into the robot's action dict
  (held values for names the policy does not drive, contract ranges, counted clamps).
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from lerobot.utils.constants import OBS_IMAGES, OBS_STATE

from vla_pipeline.checkpoint.io import LoadedCheckpoint, load_checkpoint, resolve_checkpoint
from vla_pipeline.checkpoint.layout import CONTRACT_FILE
from vla_pipeline.data.contract import Contract, load_contract
from vla_pipeline.deploy.adapter import ActionAdapter
from vla_pipeline.errors import ContractError
from vla_pipeline.eval.inference import make_noise

#: keys a replay robot adds to its observations: which dataset frame it shows
EPISODE_KEY, FRAME_KEY = "episode_index", "frame_index"


def load_deploy_contract(ckpt: LoadedCheckpoint, override: Path | None = None) -> Contract:
    """The checkpoint's own contract, or ``override`` (e.g. other ``deploy.hold`` values) when it
    declares the same joints, order and ranges: what the policy learned cannot change after training."""
    own = load_contract(ckpt.directory / CONTRACT_FILE)
    if override is None:
        return own
    other = load_contract(Path(override))
    if (other.joints, other.ranges, other.semantics) != (own.joints, own.ranges, own.semantics):
        raise ContractError(f"--contract {override}: its joints, ranges or semantics differ from the contract the "
                            f"checkpoint was trained with ({ckpt.directory / CONTRACT_FILE}); only deploy: may differ")
    return other


@dataclass
class DeployedPolicy:
    ckpt: LoadedCheckpoint
    contract: Contract
    noise_seed: int | None = None
    adapter: ActionAdapter | None = None
    queue: collections.deque = field(default_factory=collections.deque)  # robot actions left of the last chunk
    chunks: int = 0  # chunks predicted since connect

    @classmethod
    def load(cls, checkpoint: Path, device: str = "cpu", pick: str = "best", contract: Path | None = None,
             noise_seed: int | None = None) -> DeployedPolicy:
        """``checkpoint``: a train run dir (its ``pick`` checkpoint), a step dir or a pretrained_model dir."""
        ckpt = load_checkpoint(resolve_checkpoint(Path(checkpoint), pick), device=device)
        return cls(ckpt, load_deploy_contract(ckpt, contract), noise_seed)

    @property
    def config(self):
        return self.ckpt.policy.config

    def connect(self, robot_action_names: Sequence[str]) -> ActionAdapter:
        """Check the robot's action names against the contract (refused with the differences listed)."""
        self.adapter = ActionAdapter.connect(self.contract, robot_action_names)
        self.reset()
        return self.adapter

    def camera_keys(self) -> dict[str, str]:
        """policy image key -> the robot's camera name."""
        prefix = f"{OBS_IMAGES}."
        return {f"{prefix}{name}": key.removeprefix(prefix) for name, key in self.contract.cameras.items()}

    def check_observation(self, observation: Mapping, task: str | None) -> None:
        """Refuse an observation the policy cannot run on, saying what is missing."""
        if not task:
            raise ContractError("the observation has no task: give the instruction the policy was trained with "
                                "(LeRobot's robot client: --task=\"...\")")
        missing = [j for j in self.contract.joints if j not in observation]
        missing += [cam for cam in self.camera_keys().values() if cam not in observation]
        if missing:
            raise ContractError(f"the robot's observation has no {missing} (contract '{self.contract.name}' needs "
                                f"joints {list(self.contract.joints)} and cameras {list(self.camera_keys().values())}); "
                                f"it has {sorted(map(str, observation))}")
        for cam in self.camera_keys().values():
            shape = np.shape(observation[cam])
            if len(shape) != 3 or shape[-1] != 3:
                raise ContractError(f"camera {cam!r}: an image must be HxWx3 (what LeRobot's cameras return), got "
                                    f"shape {shape}")

    def make_batch(self, observation: Mapping, task: str) -> dict:
        """A robot observation -> the batch of one that the checkpoint's preprocessor takes."""
        self.check_observation(observation, task)
        state = torch.tensor([[float(observation[j]) for j in self.contract.joints]], dtype=torch.float32)
        batch = {OBS_STATE: state, "task": [task]}
        for key, cam in self.camera_keys().items():
            batch[key] = _to_policy_image(observation[cam], self.config.input_features[key].shape)[None]
        return batch

    @torch.no_grad()
    def predict_chunk(self, observation: Mapping, task: str | None = None) -> np.ndarray:
        """(chunk, joints) in contract units for one observation; its task, else ``observation['task']``."""
        task = task if task is not None else observation.get("task")
        batch = self.ckpt.preprocessor(self.make_batch(observation, task))
        chunk = self.ckpt.policy.predict_action_chunk(batch, noise=self._noise(observation))
        return self.ckpt.postprocessor(chunk).float().cpu().numpy()[0]

    def _noise(self, observation: Mapping) -> torch.Tensor | None:
        """A replay robot names its frame; a real robot's chunks are numbered (episode 0, frame = chunk count)."""
        self.chunks += 1
        if self.noise_seed is None:
            return None
        episode, frame = int(observation.get(EPISODE_KEY, 0)), int(observation.get(FRAME_KEY, self.chunks - 1))
        noise = make_noise(self.noise_seed, torch.tensor([episode]), torch.tensor([frame]),
                           (self.config.chunk_size, self.config.max_action_dim))
        return noise.to(next(self.ckpt.policy.parameters()).device)

    def to_robot_actions(self, chunk: np.ndarray, observation: Mapping) -> list[dict[str, float]]:
        if self.adapter is None:
            raise ContractError("connect(robot_action_names) first: the adapter needs the robot's action names")
        return [self.adapter.to_robot_action(action, observation) for action in chunk]

    def select_action(self, observation: Mapping, task: str | None = None) -> dict[str, float]:
        """The next robot action: a new chunk when the last one's ``n_action_steps`` are used up
        (what LeRobot's ``select_action`` does), for ``lerobot-record``-style loops."""
        if not self.queue:
            chunk = self.predict_chunk(observation, task)[: self.config.n_action_steps]
            self.queue.extend(self.to_robot_actions(chunk, observation))
        return self.queue.popleft()

    def reset(self) -> None:
        self.queue.clear()
        self.chunks = 0


def _to_policy_image(image, shape: Sequence[int]) -> torch.Tensor:
    """HxWx3 (uint8 0..255, or float 0..1) -> 3xHxW float in [0, 1] at the checkpoint's size."""
    image = torch.as_tensor(np.asarray(image)).permute(2, 0, 1)
    image = image.to(torch.float32) / 255 if image.dtype == torch.uint8 else image.to(torch.float32)
    if tuple(image.shape[1:]) != tuple(shape[1:]):
        image = torch.nn.functional.interpolate(image[None], size=tuple(shape[1:]), mode="bilinear",
                                                align_corners=False)[0]
    return image.contiguous()
