"""DVC stage `train`: fine-tune Pi0.5 with the frozen stats and write checkpoints."""

from vla_pipeline.train.config import TrainConfig
from vla_pipeline.train.trainer import train

from _params import run


def main(params: dict) -> str:
    return f"final checkpoint: {train(TrainConfig.from_params(params))}"


if __name__ == "__main__":
    run(main)
