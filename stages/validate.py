"""DVC stage `validate`: check the dataset against the contract, write the report or fail."""

from pathlib import Path

from vla_pipeline.validate import ValidateConfig, validate_dataset

from _params import load_params, run


def main() -> None:
    p = load_params()
    cfg = ValidateConfig(
        dataset_root=Path(p["base"]["dataset_root"]),
        contract_path=Path(p["base"]["contract"]),
        report_path=Path(p["validate"]["report"]),
        timestamp_tolerance_s=float(p["validate"]["timestamp_tolerance_s"]),
    )
    report = validate_dataset(cfg)
    print(f"validation ok: {report.summary}; report: {cfg.report_path}")


if __name__ == "__main__":
    run(main)
