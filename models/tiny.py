"""A tiny randomly initialised Llama with a byte-level BPE trained on the spot: for tests and demos.

Builds in well under a second and is saved as an ordinary Hugging Face folder, so it goes through
the same loading path as a real model.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch

TINY_CORPUS = [
    "Input: a wonderful, moving film with great acting\nLabel: positive",
    "Input: boring plot and terrible dialogue, a waste of time\nLabel: negative",
    "Input: I loved every minute, brilliant and funny\nLabel: positive",
    "Input: awful, dull, the worst movie this year\nLabel: negative",
    "Input: the market rallied as shares rose\nLabel: business",
    "Input: the team won the cup final\nLabel: sport",
]


def build_tiny_model(folder: str | Path, seed: int = 0, vocab_size: int = 500, hidden: int = 32,
                     layers: int = 2, heads: int = 4, max_positions: int = 2048) -> Path:
    """Train a byte-level BPE on TINY_CORPUS and save it with a random LlamaForCausalLM in ``folder``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(TINY_CORPUS * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    tokenizer.save_pretrained(folder)

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=max_positions, tie_word_embeddings=True,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    return folder


def build_tiny_sentence_model(folder: str | Path, seed: int = 0, hidden: int = 32, layers: int = 2,
                              heads: int = 4) -> Path:
    """A random tiny BERT with a WordPiece tokenizer whose vocabulary is TINY_CORPUS's words and the characters (as
    word starts and as "##" continuations: any ASCII word is spelt), saved as a sentence-transformers folder: the
    model and tokenizer, then mean pooling and unit length (the layout of the default sentence model). The
    vocabulary is listed, not trained: WordPiece training orders tied merges differently from run to run, and with
    them the vocabulary, the model's size and a test's neighbours."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    normalizer, splitter = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    words = sorted({word for text in TINY_CORPUS
                    for word, _ in splitter.pre_tokenize_str(normalizer.normalize_str(text))})
    chars = sorted({char for word in words for char in word}
                   | set(string.ascii_lowercase + string.digits + string.punctuation))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, *chars, *(f"##{char}" for char in chars)]
    wordpiece = Tokenizer(models.WordPiece({token: i for i, token in enumerate(dict.fromkeys(vocab))},
                                           unk_token="[UNK]"))
    wordpiece.normalizer = normalizer
    wordpiece.pre_tokenizer = splitter
    wordpiece.post_processor = processors.TemplateProcessing(  # [CLS] text [SEP], as BERT's tokenizers do
        single="[CLS] $A [SEP]", special_tokens=[(name, wordpiece.token_to_id(name)) for name in ("[CLS]", "[SEP]")])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=wordpiece, unk_token="[UNK]", pad_token="[PAD]",
                                        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                         num_attention_heads=heads, intermediate_size=2 * hidden, max_position_embeddings=256,
                         pad_token_id=tokenizer.pad_token_id)).save_pretrained(folder)
    modules = [("0", "", "Transformer"), ("1", "1_Pooling", "Pooling"), ("2", "2_Normalize", "Normalize")]
    (folder / "modules.json").write_text(json.dumps([
        {"idx": i, "name": name, "path": path, "type": f"sentence_transformers.models.{kind}"}
        for i, (name, path, kind) in enumerate(modules)]))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128, "do_lower_case": False}))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": hidden,
                                                                  "pooling_mode_mean_tokens": True}))
    (folder / "2_Normalize").mkdir(exist_ok=True)
    return folder
