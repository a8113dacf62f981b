"""DVC stage `demo_data`: write the embedded LeKiwi demo dataset (params section `demo`)."""

from vla_pipeline.data.demo import DemoConfig, make_demo_dataset

from _params import run


def main(params: dict) -> str:
    return f"demo dataset written to {make_demo_dataset(DemoConfig.from_params(params))}"


if __name__ == "__main__":
    run(main)
