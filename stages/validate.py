"""DVC stage `validate`: check the dataset against the contract, write the report or fail."""

from vla_pipeline.validate.config import ValidateConfig
from vla_pipeline.validate.report import format_report
from vla_pipeline.validate.run import validate_dataset

from _params import run


def main(params: dict) -> None:
    cfg = ValidateConfig.from_params(params)
    report = validate_dataset(cfg)
    print(f"{format_report(report)}\nvalidation ok: {report.summary}; report: {cfg.report_path}")


if __name__ == "__main__":
    run(main)
