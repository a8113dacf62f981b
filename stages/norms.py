"""DVC stage `norms`: split episodes and freeze normalization statistics of the train split."""

from vla_pipeline.norms import NormsConfig, save_norm_stats

from _params import run


def main(params: dict) -> str:
    return f"frozen stats: {save_norm_stats(NormsConfig.from_params(params))}"


if __name__ == "__main__":
    run(main)
