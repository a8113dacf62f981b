"""The errors a user can act on: entry points print their message and exit 1, no traceback."""

from vla_pipeline.checkpoint import CheckpointError
from vla_pipeline.compat import CompatError
from vla_pipeline.contract import ContractError
from vla_pipeline.train import TrainingDivergedError, TrainInputError
from vla_pipeline.validate import ValidationError

USER_ERRORS = (
    CheckpointError, CompatError, ContractError, TrainingDivergedError, TrainInputError, ValidationError,
    FileNotFoundError,
)
