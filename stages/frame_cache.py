"""DVC stage `frame_cache`: decode every camera frame once into a memory-mapped uint8 cache
(resized as Pi0.5 resizes it) that train and evaluate read instead of the videos, when
`frame_cache.enable` is true; otherwise it only writes a manifest saying the cache is off."""

from vla_pipeline.data.frame_cache import FrameCacheConfig, save_frame_cache

from _params import run


def main(params: dict) -> str:
    return f"frame cache: {save_frame_cache(FrameCacheConfig.from_params(params))}"


if __name__ == "__main__":
    run(main)
