"""DVC stage `validate`: check the dataset against the contract, write the report or fail."""

from vla_pipeline.validate import ValidateConfig, format_report, validate_dataset

from _params import run


def main(params: dict) -> None:
    cfg = ValidateConfig.from_params(params)
    report = validate_dataset(cfg)
    print(f"{format_report(report)}\nvalidation ok: {report.summary}; report: {cfg.report_path}")


if __name__ == "__main__":
    run(main)
