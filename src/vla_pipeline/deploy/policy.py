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
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from lerobot.utils.constants import OBS_IMAGES, OBS_STATE

from vla_pipeline.checkpoint.io import LoadedCheckpoint, load_checkpoint, resolve_checkpoint
from vla_pipeline.checkpoint.layout import CONTRACT_FILE
from vla_pipeline.cores import rebalance
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
        """Refuse an observation the policy cannot run on, saying what is wrong: missing joints or
        cameras, a task that is not text, a state that is not a finite number near the contract's
        range, an image that is not HxWx3 uint8 (or floats in [0, 1])."""
        if not isinstance(observation, Mapping):
            raise ContractError(f"the observation is a {type(observation).__name__}, not a dict of joint values "
                                f"and camera images")
        check_task(task)
        missing = [j for j in self.contract.joints if j not in observation]
        missing += [cam for cam in self.camera_keys().values() if cam not in observation]
        if missing:
            raise ContractError(f"the robot's observation has no {missing} (contract '{self.contract.name}' needs "
                                f"joints {list(self.contract.joints)} and cameras {list(self.camera_keys().values())}); "
                                f"it has {_short_list(observation)}")
        for joint in self.contract.joints:
            check_state_value(joint, observation[joint], self.contract.ranges.get(joint))
        for cam in self.camera_keys().values():
            check_image(cam, observation[cam])
        for key in (EPISODE_KEY, FRAME_KEY):  # a replay robot's frame: it seeds the noise
            value = observation.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0):
                raise ContractError(f"{key} must be a non-negative integer, got {type(value).__name__}")

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
        rebalance()  # serve beside a training: this process's share of the cores (cores.py; throttled)
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


MAX_TASK_CHARS = 1000
MAX_IMAGE_SIDE = 4096
#: a state farther than this many contract ranges outside the range is in other units (or garbage)
STATE_RANGE_MARGIN = 1.0
UNRANGED_STATE_LIMIT = 1e6


def check_task(task) -> None:
    if task is None or task == "":
        raise ContractError("the observation has no task: give the instruction the policy was trained with "
                            "(LeRobot's robot client: --task=\"...\")")
    if not isinstance(task, str):
        raise ContractError(f"the task is a {type(task).__name__}; it must be the instruction as text")
    if len(task) > MAX_TASK_CHARS:
        raise ContractError(f"the task has {len(task)} characters (at most {MAX_TASK_CHARS})")


def check_state_value(joint: str, value, joint_range: tuple[float, float] | None) -> None:
    """A joint's value: one real number (Python or numpy, or a 0-d array/tensor), finite, and not far
    outside the contract's range (a value 1e30, or raw servo ticks for a joint in degrees)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    kind = np.asarray(value).dtype.kind if isinstance(value, (np.ndarray, np.generic)) else None
    if isinstance(value, bool) or not (isinstance(value, (int, float)) or kind in ("i", "u", "f")) \
            or np.ndim(value) != 0:
        raise ContractError(f"joint {joint!r}: the value is a {type(value).__name__} "
                            f"{getattr(value, 'dtype', '')}; it must be one number")
    value = float(value)
    if not np.isfinite(value):
        raise ContractError(f"joint {joint!r} is {value}; nothing is predicted from a non-finite state")
    if joint_range is None:
        lo, hi = -UNRANGED_STATE_LIMIT, UNRANGED_STATE_LIMIT
    else:
        margin = STATE_RANGE_MARGIN * (joint_range[1] - joint_range[0])
        lo, hi = joint_range[0] - margin, joint_range[1] + margin
    if not lo <= value <= hi:
        raise ContractError(f"joint {joint!r} is {value:g}, far outside the contract's range {joint_range} "
                            f"(other units? a calibration offset?); refused")


def check_image(camera: str, image) -> None:
    """A camera image as LeRobot's cameras give it: an HxWx3 uint8 array, or floats in [0, 1]."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        raise ContractError(f"camera {camera!r}: the image is a {type(image).__name__}, not an array")
    shape = image.shape
    if len(shape) != 3 or shape[-1] != 3 or not (0 < shape[0] <= MAX_IMAGE_SIDE and 0 < shape[1] <= MAX_IMAGE_SIDE):
        raise ContractError(f"camera {camera!r}: an image must be HxWx3 (what LeRobot's cameras return), with "
                            f"sides 1..{MAX_IMAGE_SIDE}; got shape {shape}")
    if image.dtype == np.uint8:
        return
    if image.dtype.kind != "f":
        raise ContractError(f"camera {camera!r}: images of dtype {image.dtype} are refused; send uint8 (0..255, "
                            f"as LeRobot's cameras give) or floats in [0, 1]")
    lo, hi = float(image.min()), float(image.max())
    if not (np.isfinite(lo) and np.isfinite(hi) and lo >= 0.0 and hi <= 1.0):
        raise ContractError(f"camera {camera!r}: float pixels must lie in [0, 1], these span [{lo:g}, {hi:g}] "
                            f"(0..255 floats? send uint8)")


def _short_list(observation: Mapping, limit: int = 20) -> str:
    names = sorted(str(k)[:40] for k in itertools.islice(observation, 200))
    return f"{names[:limit]}{f' and {len(observation) - limit} more' if len(observation) > limit else ''}"


def _to_policy_image(image, shape: Sequence[int]) -> torch.Tensor:
    """HxWx3 (uint8 0..255, or float 0..1) -> 3xHxW float in [0, 1] at the checkpoint's size."""
    image = torch.as_tensor(np.asarray(image)).permute(2, 0, 1)
    image = image.to(torch.float32) / 255 if image.dtype == torch.uint8 else image.to(torch.float32)
    if tuple(image.shape[1:]) != tuple(shape[1:]):
        image = torch.nn.functional.interpolate(image[None], size=tuple(shape[1:]), mode="bilinear",
                                                align_corners=False)[0]
    return image.contiguous()
