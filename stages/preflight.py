"""DVC stage `preflight`: prove the machine, the numerics, the memory, the disk and the inputs for
the run params.yaml describes, before train; the report is the stage's output and train's input."""

from vla_pipeline.preflight.run import PreflightConfig, require_preflight

from _params import run


def main(params: dict) -> None:
    require_preflight(PreflightConfig.from_params(params))


if __name__ == "__main__":
    run(main)
