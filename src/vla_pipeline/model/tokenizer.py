"""A small local tokenizer in Hugging Face format, standing in for PaliGemma's.

Pi0.5's real tokenizer (``google/paligemma-3b-pt-224``) is gated and hub-only, and its 257k-token
vocabulary does not fit the tiny test model's embedding. Tests and the demo therefore use this
word-level tokenizer, built deterministically from a fixed corpus that covers everything Pi0.5's
prompt contains::

    f"Task: {text}, State: {' '.join(bins)};\\nAction: "

i.e. the prompt keywords, punctuation, the newline, the 256 state bins ``"0".."255"`` and common
words of robot-task instructions (including the demo's task strings). Text is lower-cased; any
other word maps to ``<unk>``. The result is saved with ``save_pretrained`` so that
``AutoTokenizer.from_pretrained(directory)`` and LeRobot's ``TokenizerProcessorStep`` load it
offline like any hub tokenizer.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from vla_pipeline.errors import ConfigError

PAD_TOKEN = "<pad>"
UNK_TOKEN = "<unk>"
SPECIAL_TOKENS = (PAD_TOKEN, UNK_TOKEN)  # pad id 0, unk id 1
PROMPT_WORDS = ("task", "state", "action")
PUNCTUATION = (",", ";", ":", ".", "-", "!", "?", "'", "\n")
STATE_BINS = tuple(str(i) for i in range(256))

# Words of robot-manipulation instructions; the demo task strings are covered.
TASK_WORDS = """
a an the this that these those it its to of in on onto into at from with without by for and or
then up down left right top bottom front back behind next near far over under above below between
inside outside around through across away toward towards side middle center
pick place put grasp grab hold release drop lift lower raise push pull slide move turn rotate twist
open close shut wave point touch press tap flip stack unstack insert remove take give bring fold
unfold pour wipe clean sort arrange align reach return go stop wait follow rest
cube block box bowl cup mug plate bottle can lid drawer door cabinet shelf table tray basket bin
ball toy pen marker sponge towel cloth object item piece handle button knob switch bag container
gripper arm hand base robot camera wrist finger fingers joint
red green blue yellow orange purple pink black white gray grey brown small big large little
tall short long empty full
one two three first second last other all both each again twice slowly quickly gently carefully
please now
"""


def build_vocabulary() -> list[str]:
    """Deterministic token list: specials first, then prompt words, punctuation, bins, task words."""
    vocabulary: list[str] = []
    for token in (*SPECIAL_TOKENS, *PROMPT_WORDS, *PUNCTUATION, *STATE_BINS, *TASK_WORDS.split()):
        if token not in vocabulary:
            vocabulary.append(token)
    return vocabulary


def _build_backend(vocabulary: list[str]) -> Tokenizer:
    """Word-level ``tokenizers`` model: lower-case, split into words, single symbols and newlines."""
    tokenizer = Tokenizer(
        models.WordLevel(vocab={token: i for i, token in enumerate(vocabulary)}, unk_token=UNK_TOKEN)
    )
    tokenizer.normalizer = normalizers.Lowercase()
    # invert=True: the regex describes the pieces to keep; everything else (spaces) is dropped.
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"\w+|[^\w\s]|\n"), behavior="removed", invert=True)
    tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    return tokenizer


def make_local_tokenizer(directory: Path, vocab_size: int = 512) -> Path:
    """Build the local tokenizer and ``save_pretrained`` it into ``directory``; return the directory.

    ``vocab_size`` is the embedding size of the model that will consume the ids; a vocabulary
    that does not fit raises ``ValueError`` instead of producing out-of-range ids later.
    """
    vocabulary = build_vocabulary()
    if len(vocabulary) > vocab_size:
        raise ConfigError(
            f"tokenizer vocabulary has {len(vocabulary)} tokens, more than vocab_size={vocab_size}"
        )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=_build_backend(vocabulary),
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        padding_side="right",
        model_input_names=["input_ids", "attention_mask"],
    )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    wrapped.save_pretrained(str(directory))
    return directory


def load_tokenizer(directory: Path) -> PreTrainedTokenizerFast:
    """Load a tokenizer written by ``make_local_tokenizer`` (offline, from disk)."""
    return AutoTokenizer.from_pretrained(str(directory))
