"""The fast training step computes LeRobot's loss: ``Pi05Loss`` equals ``PI05Policy.forward``'s loss
bit for bit, the split preprocessor equals LeRobot's whole one, and trimming prompt padding changes
the loss only at float rounding level."""

from __future__ import annotations

import pytest
import torch
from lerobot.utils.constants import OBS_LANGUAGE_ATTENTION_MASK, OBS_LANGUAGE_TOKENS

from vla_pipeline.checkpoint.io import load_checkpoint
from vla_pipeline.data.contract import load_contract
from vla_pipeline.data.lerobot import make_dataset
from vla_pipeline.model.loss import Pi05Loss
from vla_pipeline.train.batch import TRIM_MULTIPLE, BatchPreparer, trim_prompt_padding

from conftest import CONTRACT


@pytest.fixture(scope="module")
def loaded(tiny_run):
    ckpt = load_checkpoint(tiny_run.checkpoint)
    dataset = make_dataset(tiny_run.dataset, load_contract(CONTRACT), [0, 1, 2], ckpt.policy.config.chunk_size)
    raw = next(iter(torch.utils.data.DataLoader(dataset, batch_size=4, shuffle=False)))
    return ckpt, raw


def seeded_loss(fn, batch, seed: int = 5) -> torch.Tensor:
    torch.manual_seed(seed)  # the flow-matching noise and time
    return fn(batch)


def test_pi05_loss_equals_lerobot_policy_forward(loaded) -> None:
    ckpt, raw = loaded
    batch = ckpt.preprocessor(raw)
    ckpt.policy.train()
    ours = seeded_loss(Pi05Loss(ckpt.policy), batch)
    theirs = seeded_loss(lambda b: ckpt.policy.forward(b)[0], batch)
    assert torch.equal(ours, theirs)
    ours.backward()  # differentiable like LeRobot's
    assert all(p.grad is not None for p in ckpt.policy.model.action_out_proj.parameters())
    ckpt.policy.zero_grad(set_to_none=True)


def test_batch_preparer_equals_lerobot_preprocessor(loaded) -> None:
    ckpt, raw = loaded
    whole, split = ckpt.preprocessor(raw), BatchPreparer(ckpt.preprocessor, trim=False)(raw)
    assert whole.keys() == split.keys()
    for key, value in whole.items():
        assert torch.equal(value, split[key]) if isinstance(value, torch.Tensor) else value == split[key], key


def test_trimmed_prompt_gives_the_same_loss(loaded) -> None:
    ckpt, raw = loaded
    full, trimmed = ckpt.preprocessor(raw), BatchPreparer(ckpt.preprocessor, trim=True)(raw)
    width, kept = full[OBS_LANGUAGE_TOKENS].shape[1], trimmed[OBS_LANGUAGE_TOKENS].shape[1]
    longest = int(full[OBS_LANGUAGE_ATTENTION_MASK].sum(1).max())
    assert longest <= kept < width and kept % TRIM_MULTIPLE == 0  # the demo's prompts are far shorter than 64
    loss = Pi05Loss(ckpt.policy)
    ckpt.policy.eval()
    with torch.no_grad():
        a, b = seeded_loss(loss, full), seeded_loss(loss, trimmed)
    assert not full[OBS_LANGUAGE_ATTENTION_MASK][:, kept:].any()  # only padding was dropped
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_trim_leaves_left_padded_prompts_alone() -> None:
    mask = torch.tensor([[False, True, True, True] + [False] * 28, [True] * 3 + [False] * 29])
    batch = {OBS_LANGUAGE_TOKENS: torch.arange(64).reshape(2, 32), OBS_LANGUAGE_ATTENTION_MASK: mask}
    assert trim_prompt_padding(batch) is batch
    right = {OBS_LANGUAGE_TOKENS: batch[OBS_LANGUAGE_TOKENS], OBS_LANGUAGE_ATTENTION_MASK: mask[[1, 1]]}
    assert trim_prompt_padding(right)[OBS_LANGUAGE_TOKENS].shape == (2, TRIM_MULTIPLE)
