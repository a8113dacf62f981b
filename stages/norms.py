"""DVC stage `norms`: split episodes and freeze normalization statistics of the train split."""

from pathlib import Path

from vla_pipeline.norms import NormsConfig, save_norm_stats

from _params import load_params, run


def main() -> None:
    p = load_params()
    cfg = NormsConfig(
        dataset_root=Path(p["base"]["dataset_root"]),
        contract_path=Path(p["base"]["contract"]),
        out_dir=Path(p["norms"]["out_dir"]),
        val_fraction=float(p["norms"]["val_fraction"]),
        seed=int(p["norms"]["split_seed"]),
    )
    print(f"frozen stats: {save_norm_stats(cfg)}")


if __name__ == "__main__":
    run(main)
