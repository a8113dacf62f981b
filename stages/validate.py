"""DVC stage `validate`: check the dataset against the contract, write the report or fail."""

from vla_pipeline.train.dry_run import DryRunConfig, make_dry_run_check
from vla_pipeline.validate.config import ValidateConfig
from vla_pipeline.validate.report import format_report
from vla_pipeline.validate.run import validate_dataset

from _params import run


def main(params: dict) -> str:
    cfg = ValidateConfig.from_params(params)
    dry_run = make_dry_run_check(DryRunConfig.from_params(params)) if params["validate"]["dry_run"] else None
    report = validate_dataset(cfg, dry_run)
    return format_report(report, where=str(cfg.report_path))  # its last line: "Validation passed: ..."


if __name__ == "__main__":
    run(main)
