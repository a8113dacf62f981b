"""The local stand-in for PaliGemma's tokenizer: offline, in range, deterministic, Pi0.5-compatible."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vla_pipeline.data.demo import TASKS
from vla_pipeline.model.tokenizer import load_tokenizer, make_local_tokenizer

VOCAB_SIZE = 512


def pi05_prompt(task: str, bins: list[int]) -> str:
    """The prompt exactly as LeRobot 0.4.2's Pi05PrepareStateTokenizerProcessorStep writes it."""
    return f"Task: {task}, State: {' '.join(map(str, bins))};\nAction: "


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_local_tokenizer(tmp_path_factory.mktemp("tokenizer"), vocab_size=VOCAB_SIZE)


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir: Path):
    return load_tokenizer(tokenizer_dir)


def test_loads_with_auto_tokenizer(tokenizer_dir: Path, tokenizer) -> None:
    from transformers import AutoTokenizer

    assert (tokenizer_dir / "tokenizer.json").is_file()
    auto = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    assert auto.pad_token == "<pad>" and auto.pad_token_id == 0
    assert auto.unk_token == "<unk>"
    assert len(tokenizer) <= VOCAB_SIZE


def test_pi05_prompts_have_no_unknown_tokens(tokenizer) -> None:
    all_bins = list(range(256))
    for task in TASKS:
        ids = tokenizer(pi05_prompt(task, all_bins))["input_ids"]
        assert tokenizer.unk_token_id not in ids
        assert max(ids) < VOCAB_SIZE and min(ids) >= 0
        tokens = tokenizer.convert_ids_to_tokens(ids)
        assert tokens[:2] == ["task", ":"]
        assert [str(b) for b in all_bins] == tokens[tokens.index("state") + 2 : tokens.index(";")]
        assert "\n" in tokens and tokens[-2:] == ["action", ":"]


def test_state_bins_are_single_distinct_tokens(tokenizer) -> None:
    ids = [tokenizer(str(b))["input_ids"] for b in range(256)]
    assert all(len(i) == 1 for i in ids)
    assert len({i[0] for i in ids}) == 256


def test_unknown_words_map_to_unk(tokenizer) -> None:
    ids = tokenizer("Task: juggle the flamingo ü 🙂, State: 300;\nAction: ")["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens.count("<unk>") == 5  # juggle, flamingo, ü, 🙂, 300
    assert "the" in tokens and max(ids) < VOCAB_SIZE


def test_lerobot_tokenizer_step(tokenizer_dir: Path) -> None:
    from lerobot.policies.pi05.processor_pi05 import Pi05PrepareStateTokenizerProcessorStep
    from lerobot.processor import TokenizerProcessorStep
    from lerobot.processor.core import TransitionKey

    state = torch.from_numpy(np.linspace(-1.0, 1.0, 18, dtype=np.float32).reshape(2, 9))
    transition = {
        TransitionKey.OBSERVATION: {"observation.state": state},
        TransitionKey.ACTION: None,
        TransitionKey.COMPLEMENTARY_DATA: {"task": [TASKS[0], TASKS[-1]]},
    }
    transition = Pi05PrepareStateTokenizerProcessorStep(max_state_dim=9)(transition)
    step = TokenizerProcessorStep(
        tokenizer_name=str(tokenizer_dir), max_length=48, padding_side="right", padding="max_length"
    )
    observation = step(transition)[TransitionKey.OBSERVATION]
    ids = observation["observation.language.tokens"]
    mask = observation["observation.language.attention_mask"]
    assert ids.shape == mask.shape == (2, 48)
    assert mask.dtype == torch.bool
    assert int(ids.min()) >= 0 and int(ids.max()) < VOCAB_SIZE
    assert 1 not in ids[mask].tolist()  # no <unk> in the real prompt
    assert (ids[~mask] == 0).all()  # right padding with <pad> = 0
    assert mask[:, 0].all() and not mask[:, -1].all()


def test_build_is_deterministic(tokenizer_dir: Path, tmp_path: Path) -> None:
    again = make_local_tokenizer(tmp_path / "again", vocab_size=VOCAB_SIZE)
    names = sorted(p.name for p in tokenizer_dir.iterdir())
    assert names == sorted(p.name for p in again.iterdir())
    for name in names:
        assert (again / name).read_bytes() == (tokenizer_dir / name).read_bytes(), name


def test_vocab_size_too_small_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="vocab_size"):
        make_local_tokenizer(tmp_path / "tiny", vocab_size=100)
    assert not (tmp_path / "tiny").exists()
