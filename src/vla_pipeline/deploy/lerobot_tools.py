"""``vla lerobot TOOL ARGS...``: LeRobot 0.4.2's own command-line tools, run in a process where our
checkpoints load the way our stages load them.

Installed before the tool is imported:

* the compat layer (LeRobot's Pi0.5 on stock transformers);
* ``PI05Policy.from_pretrained`` is the strict loader: a checkpoint of ours is checked against its
  manifest and built at its own size (``vla_model_dims.json``); any Pi0.5 weights must fill every
  tensor or the tool stops with the counts (LeRobot's loader returns random weights instead);
* a pipeline config (``policy_preprocessor.json``, ...) is refused unless every step is one of the
  LeRobot registry steps our checkpoints use, before LeRobot imports anything it names; a checkpoint of
  ours is checked against its manifest before its processors load;
* a checkpoint's processors read the tokenizer saved beside them (``pretrained_model/tokenizer``);
* ``lerobot-record`` with one of our policies runs it arm-only: the state is the contract's joints,
  taken by name, and each action goes through the contract's adapter (held values, ranges);
* LeRobot's async robot client accepts LeKiwi (``lekiwi_client``) and the replay robot
  (``vla_replay``) besides the SO arms it lists, and refuses a robot whose action names are not its
  state names in the same order (the server cannot see the action names).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import logging
import sys
from pathlib import Path

import numpy as np

from vla_pipeline.errors import ConfigError, VlaError

log = logging.getLogger(__name__)

ASYNC_CLIENT = "async-client"


class RobotUnreachableError(VlaError):
    """LeRobot's tool could not connect to the robot."""

EXTRA_CLIENT_ROBOTS = ("lekiwi_client", "vla_replay")


def list_tools() -> dict[str, str]:
    """tool name -> ``module:function``: LeRobot's console scripts without the ``lerobot-`` prefix,
    plus LeRobot's async robot client."""
    tools = {ep.name.removeprefix("lerobot-"): ep.value for ep in importlib.metadata.entry_points(group="console_scripts")
             if ep.name.startswith("lerobot-") and ep.value.startswith("lerobot.")}
    tools[ASYNC_CLIENT] = "lerobot.async_inference.robot_client:async_client"
    return dict(sorted(tools.items()))


def run_tool(argv: list[str]) -> int:
    """``argv``: the tool's name, then its own arguments, exactly as LeRobot documents them."""
    tools = list_tools()
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: vla lerobot TOOL [ARGS...]  (LeRobot's own CLI, with our checkpoints' loader)\n"
              f"tools: {', '.join(tools)}\nthe policy server is `vla serve CHECKPOINT`")
        return 0
    name = argv[0]
    if name == "policy-server":
        raise ConfigError("LeRobot's policy server loads policies without the strict loader and unpickles "
                          "anything; run `vla serve CHECKPOINT` instead (docs/deploy.md)")
    if name not in tools:
        raise ConfigError(f"`vla lerobot {name}`: no such LeRobot tool; tools: {', '.join(tools)}")
    install_lerobot_patches()
    module_name, function = tools[name].split(":")
    module = importlib.import_module(module_name)
    if module_name.endswith("lerobot_record"):
        RecordAdapter().install(module)
    sys.argv = [f"lerobot-{name}", *argv[1:]]
    from lerobot.utils.errors import DeviceNotConnectedError

    try:
        result = getattr(module, function)()
    except DeviceNotConnectedError as e:
        raise RobotUnreachableError(f"LeRobot could not reach the robot: {e} Check that it is powered and reachable "
                                    f"(LeKiwi: lekiwi_host running on the robot, --robot.remote_ip; an arm: "
                                    f"--robot.port, `lerobot-find-port`)") from e
    return result if isinstance(result, int) else 0


def install_lerobot_patches() -> None:
    """The strict loader, the processor checks, the tokenizer beside the checkpoint, the robots the async
    client takes."""
    from lerobot.async_inference import constants
    from lerobot.policies.pi05.modeling_pi05 import PI05Policy
    from lerobot.processor.pipeline import DataProcessorPipeline

    import vla_pipeline.deploy.config_replay  # noqa: F401  (registers --robot.type=vla_replay)
    from vla_pipeline.checkpoint.processor_steps import install_processor_guard

    with contextlib.suppress(ImportError):
        import lerobot.robots.lekiwi  # noqa: F401  (registers lekiwi_client for the async client)
    PI05Policy.from_pretrained = classmethod(strict_from_pretrained)
    install_processor_guard()
    if not getattr(DataProcessorPipeline.from_pretrained, "vla_checked_pipeline", False):
        DataProcessorPipeline.from_pretrained = classmethod(_checked_pipeline(DataProcessorPipeline.from_pretrained.__func__))
    constants.SUPPORTED_ROBOTS.extend(r for r in EXTRA_CLIENT_ROBOTS if r not in constants.SUPPORTED_ROBOTS)
    _require_action_order()


def check_action_order(robot) -> None:
    """The server sends each action in the order of the robot's state names (the only names the client
    sends it); LeRobot's client maps it onto ``action_features`` by position. Refuse a robot whose two
    orders differ instead of driving the wrong motors."""
    state = [k for k, v in robot.observation_features.items() if v is float]
    actions = list(robot.action_features)
    if state != actions:
        raise ConfigError(f"robot {robot.name}: its state names {state} are not its action names {actions} in the "
                          f"same order; LeRobot's async inference would drive the wrong motors")


def _require_action_order() -> None:
    from lerobot.async_inference.robot_client import RobotClient

    if getattr(RobotClient.__init__, "vla_checked", False):
        return
    original = RobotClient.__init__

    def __init__(self, config):  # noqa: N807  (LeRobot's constructor, wrapped)
        original(self, config)
        try:
            check_action_order(self.robot)
        except ConfigError:
            self.robot.disconnect()
            raise

    __init__.vla_checked = True
    RobotClient.__init__ = __init__


def strict_from_pretrained(cls, pretrained_name_or_path, *, config=None, **kwargs):
    """``PI05Policy.from_pretrained`` with the strict loader (hub ids too: their file is fetched first)."""
    from lerobot.configs.policies import PreTrainedConfig

    from vla_pipeline.checkpoint.pretrained import load_pretrained_weights
    from vla_pipeline.model.build import make_pi05_policy
    from vla_pipeline.model.dims import load_dims

    source = str(pretrained_name_or_path)
    if config is None:
        config = PreTrainedConfig.from_pretrained(source)
    directory = Path(source)
    policy = make_pi05_policy(config, load_dims(directory) if directory.is_dir() else None)
    counts = load_pretrained_weights(policy, source)
    log.info(f"vla: {source}: {counts['loaded']} tensors loaded strictly (0 missing, 0 unexpected)")
    policy.vla_checkpoint_dir = directory if directory.is_dir() else None
    policy.to(config.device)
    policy.eval()
    return policy


def _checked_pipeline(original):
    """LeRobot's ``DataProcessorPipeline.from_pretrained``: a directory with our manifest is verified first
    (every file listed, regular files, sizes and hashes; the weights, which a pipeline does not read, by
    size), its config read through the allow-list, and its tokenizer step given the tokenizer beside it."""
    from vla_pipeline.checkpoint.layout import CHECKPOINT_MANIFEST_FILE, TOKENIZER_DIR
    from vla_pipeline.checkpoint.manifest import require_verified
    from vla_pipeline.checkpoint.pretrained import WEIGHTS
    from vla_pipeline.checkpoint.processor_steps import read_processor_config

    def from_pretrained(cls, pretrained_model_name_or_path, config_filename, *args, overrides=None, **kwargs):
        directory = Path(str(pretrained_model_name_or_path))
        overrides = dict(overrides or {})
        if directory.is_dir():
            if (directory / CHECKPOINT_MANIFEST_FILE).exists() or (directory / CHECKPOINT_MANIFEST_FILE).is_symlink():
                require_verified(directory, f"load the processors of {directory}", not_read=(WEIGHTS,))
            steps = read_processor_config(directory / config_filename)["steps"]
            if (directory / TOKENIZER_DIR).is_dir() and any(s["registry_name"] == "tokenizer_processor" for s in steps):
                step = dict(overrides.get("tokenizer_processor") or {})
                overrides["tokenizer_processor"] = {**step, "tokenizer_name": str(directory / TOKENIZER_DIR)}
        return original(cls, pretrained_model_name_or_path, config_filename, *args, overrides=overrides, **kwargs)

    from_pretrained.vla_checked_pipeline = True
    return from_pretrained


class RecordAdapter:
    """``lerobot-record`` with one of our policies, arm-only: LeRobot's record loop builds the state
    from every motor of the robot and maps the policy's action onto every action name by position;
    here the state is the contract's joints by name and the action goes through the contract's adapter.
    Policies without a contract (not ours) run as LeRobot runs them."""

    def __init__(self):
        self.robot = None
        self.adapter = None
        self.observed: dict[str, float] = {}

    def install(self, record_module) -> None:
        make_robot, predict, to_robot = (record_module.make_robot_from_config, record_module.predict_action,
                                         record_module.make_robot_action)

        def make_robot_from_config(config):
            self.robot = make_robot(config)
            return self.robot

        def predict_action(observation, policy, *args, **kwargs):
            if self._connect(policy) is None:
                return predict(observation, policy, *args, **kwargs)
            return predict(self._arm_only(observation), policy, *args, **kwargs)

        def make_robot_action(action_values, ds_features):
            if self.adapter is None:
                return to_robot(action_values, ds_features)
            return self.adapter.to_robot_action(action_values.reshape(-1).tolist(), self.observed)

        record_module.make_robot_from_config = make_robot_from_config
        record_module.predict_action = predict_action
        record_module.make_robot_action = make_robot_action

    def _connect(self, policy):
        from vla_pipeline.checkpoint.layout import CONTRACT_FILE
        from vla_pipeline.data.contract import load_contract
        from vla_pipeline.deploy.adapter import ActionAdapter

        directory = getattr(policy, "vla_checkpoint_dir", None)
        if self.adapter is None and directory is not None and (directory / CONTRACT_FILE).is_file():
            self.adapter = ActionAdapter.connect(load_contract(directory / CONTRACT_FILE), list(self.robot.action_features))
            log.info(f"vla: arm-only policy: contract '{self.adapter.contract.name}', robot actions "
                  f"{list(self.robot.action_features)}, held {self.adapter.contract.hold}")
        return self.adapter

    def _arm_only(self, observation: dict) -> dict:
        from lerobot.utils.constants import OBS_STATE

        motors = [k for k, v in self.robot.observation_features.items() if v is float]
        state = np.asarray(observation[OBS_STATE])
        self.observed = dict(zip(motors, state.tolist(), strict=True))
        joints = self.adapter.contract.joints
        missing = [j for j in joints if j not in self.observed]
        if missing:
            raise ConfigError(f"the robot's state has no {missing}; contract '{self.adapter.contract.name}' needs "
                              f"{list(joints)}, the robot reports {motors}")
        return {**observation, OBS_STATE: np.asarray([self.observed[j] for j in joints], dtype=state.dtype)}
