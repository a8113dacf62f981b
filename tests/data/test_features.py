"""The one reading of info.json's features: every camera declaration is read as LeRobot 0.4.2 reads it
(``dataset_to_policy_features``), or refused with the feature, the declaration and LeRobot's reading."""

from __future__ import annotations

import itertools

import pytest
from lerobot.datasets.utils import dataset_to_policy_features

from vla_pipeline.data.features import FeatureError, read_camera, vector_dim

SIZES = [(24, 32), (224, 224), (480, 640), (3, 7)]  # (H, W); the last is taller-than-3 trouble: H = 3
CHANNEL_LAST_NAMES = [["height", "width", "channels"], ["height", "width", "channel"], ["h", "w", "channels"]]
CHANNEL_FIRST_NAMES = [["channel", "height", "width"], ["channels", "height", "width"], ["c", "h", "w"],
                       ["rgb", "rows", "cols"]]


def info_of(key: str, shape, names, dtype: str = "video") -> dict:
    return {"features": {key: {"dtype": dtype, "shape": shape, "names": names, "info": {"video.codec": "av1"}}}}


@pytest.mark.parametrize(("hw", "names", "dtype"), [
    *itertools.product(SIZES, CHANNEL_LAST_NAMES, ["video", "image"])])
def test_a_channel_last_declaration_is_read_as_lerobot_reads_it(hw, names, dtype):
    h, w = hw
    info = info_of("observation.images.front", [h, w, 3], names, dtype)
    cam = read_camera(info, "observation.images.front")
    assert cam.chw == (3, h, w) == tuple(dataset_to_policy_features(info["features"])["observation.images.front"].shape)
    assert (cam.hw, cam.robot_shape, cam.channel_last, cam.storage) == ((h, w), (h, w, 3), True, dtype)


@pytest.mark.parametrize(("hw", "names"), list(itertools.product(SIZES, CHANNEL_FIRST_NAMES)))
def test_a_channel_first_declaration_is_read_as_lerobot_reads_it(hw, names):
    h, w = hw
    info = info_of("observation.images.wrist", [3, h, w], names)
    cam = read_camera(info, "observation.images.wrist")
    assert cam.chw == (3, h, w) == tuple(dataset_to_policy_features(info["features"])["observation.images.wrist"].shape)
    assert (cam.hw, cam.channel_last, cam.declared) == ((h, w), False, (3, h, w))


@pytest.mark.parametrize(("shape", "names", "reason"), [
    ([224, 224, 3], ["h", "w", "c"], "C=224"),  # LeRobot needs 'channel(s)' last to permute: it reads C=224
    ([224, 224, 3], ["height", "width", "rgb"], "C=224"),
    ([3, 224, 224], ["height", "width", "channels"], "C=224"),  # LeRobot permutes a CHW shape: (224, 3, 224)
    ([224, 3, 224], ["height", "channel", "width"], "C=224"),
    ([3, 224, 224], ["width", "height", "channel"], "C=224"),
    ([4, 64, 64], ["channel", "height", "width"], "C=4"),  # RGBA: Pi0.5 takes 3 channels
    ([224, 224], ["height", "width"], "three positive integers"),
    ([224, 224, 0], ["height", "width", "channels"], "three positive integers"),
    ([3, 224, 224], None, "three names"),
    ([3, 224, 224], ["channel", "width", "height"], "contradicts the names"),
])
def test_what_lerobot_would_misread_is_refused_with_the_declaration(shape, names, reason):
    with pytest.raises(FeatureError) as e:
        read_camera(info_of("observation.images.top", shape, names), "observation.images.top")
    assert "observation.images.top" in str(e.value) and str(shape) in str(e.value) and reason in str(e.value)


def test_a_vector_feature_has_one_dimension():
    assert vector_dim({"features": {"action": {"dtype": "float32", "shape": [6]}}}, "action") == 6
    for bad in ([6, 1], [], ["6"], [0]):
        with pytest.raises(FeatureError, match="'action' has shape"):
            vector_dim({"features": {"action": {"dtype": "float32", "shape": bad}}}, "action")
    with pytest.raises(FeatureError, match="no feature 'state'"):
        vector_dim({"features": {}}, "state")
