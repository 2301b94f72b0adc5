"""Notebook 05's measurements: generation scored over many samples, losses symbol by symbol, and the
word model's charge for out-of-vocabulary words."""
import math

import pytest
import torch

from helpers import lm_eval, results, text, training
from helpers.text import IGNORE


def tiny_model(vocab, seed=1):
    torch.manual_seed(seed)
    return text.CharRNN(len(vocab), hidden=16, embed=8)


def test_prompts_are_fixed_lines_spread_over_the_text():
    corpus = "\n".join(f"line {i}" for i in range(100)) + "\n\n\n"
    prompts = lm_eval.prompts_from(corpus, 4)
    assert prompts == ["line 12\n", "line 37\n", "line 62\n", "line 87\n"]
    with pytest.raises(ValueError, match="4 prompts"):
        lm_eval.prompts_from("a\n\nb\n", 4)


def test_mean_interval_is_students_t():
    interval = results.mean_interval([1.0, 2.0, 3.0])
    assert interval["mean"] == 2.0 and interval["n"] == 3
    assert interval["half_width"] == pytest.approx(4.3027 / math.sqrt(3), rel=1e-4)
    with pytest.raises(ValueError, match="at least 2"):
        results.mean_interval([1.0])


def test_generation_grid_scores_every_setting_on_the_same_prompts():
    vocab = text.Vocab("the king is dead \n")
    model = tiny_model(vocab)
    prompts = ["the ", "king ", "is "]
    grid = lm_eval.generation_grid(model, vocab, prompts, 30, {"the", "king"}, temperatures=(0.5, 1.0),
                                   top_ps=(1.0,), beam_widths=(2,))
    assert list(grid) == ["T050_p100", "T100_p100", "beam2"]
    for setting in grid.values():
        assert len(setting["samples"]) == 3 and all(len(s) == 30 for s in setting["samples"])
        assert set(setting["summary"]) == set(setting["per_sample"]) == {"spelling", "distinct_1", "distinct_2",
                                                                        "repetition_4"}
    assert grid["beam2"]["samples"][0] == text.beam_search(model, vocab, "the ", 30, 2)


def test_symbol_losses_score_exactly_what_the_windows_score_in_text_order():
    corpus = "abcdefgh \n" * 40
    vocab = text.Vocab(corpus)
    ids = vocab.encode(corpus)
    windows = text.SlidingWindows(ids, batch_size=3, context=8, stride=16)
    targets = torch.cat([t[t != IGNORE] for _, t in windows])
    assert torch.equal(targets, ids[lm_eval.scored_slice(windows, windows.scored)])
    torch.manual_seed(0)
    bigram = torch.nn.Embedding(len(vocab), len(vocab))  # logits depend on the previous symbol only
    losses = lm_eval.symbol_losses(bigram, windows)
    scored = lm_eval.scored_slice(windows, windows.scored)
    previous = ids[scored.start - 1:scored.stop - 1]
    expected = -torch.log_softmax(bigram.weight.detach(), -1)[previous, ids[scored]]
    assert torch.allclose(losses, expected, atol=1e-6)  # each symbol's own loss, in text order
    model = tiny_model(vocab)
    assert lm_eval.symbol_losses(model, windows).mean().item() == pytest.approx(
        training.evaluate(model, windows, text.NextSymbol(), amp=False)["loss"], rel=1e-5)
    assert lm_eval.chunk_means(torch.arange(10.0), 4) == [1.5, 5.5]


def test_spelling_model_is_a_distribution_that_prefers_training_words():
    spelling = lm_eval.SpellingModel(["the", "then", "king", "thee"])
    for before in spelling.START + spelling.LETTERS:
        total = sum(spelling.probability(before, after) for after in spelling.LETTERS + spelling.END)
        assert total == pytest.approx(1.0)
    assert spelling.nats("the") < spelling.nats("qzx")
    with pytest.raises(ValueError, match="ASCII letters"):
        spelling.nats("naïve")
    with pytest.raises(ValueError, match="ASCII letters"):
        lm_eval.SpellingModel(["don't"])


def test_out_of_vocabulary_words_are_charged_their_spelling():
    corpus = "the king is dead, long live the king. " * 20 + "zebra "
    tokens = text.word_tokens(corpus)
    vocab = text.TokenVocab(tokens, max_size=5)  # the 3 punctuation tokens, "the" and "king"
    model = tiny_model(vocab)
    windows = text.SlidingWindows(vocab.encode(tokens), batch_size=4, context=4, stride=8)
    spelling = lm_eval.SpellingModel([t for t in tokens if t.isalpha()])
    found = lm_eval.charged_nats_per_char(model, windows, tokens, vocab, spelling)
    scored = tokens[lm_eval.scored_slice(windows, windows.scored)]
    unknown = [t for t in scored if t not in vocab.index]
    assert found["unknown_tokens"] == len(unknown) > 0 and found["characters"] == sum(map(len, scored))
    extra = sum(spelling.nats(t) for t in unknown) / found["characters"]
    assert found["charged"] == pytest.approx(found["uncharged"] + extra)
    per_token = training.evaluate(model, windows, text.NextSymbol(), amp=False)["loss"]
    assert found["uncharged"] == pytest.approx(per_token * found["tokens"] / found["characters"], rel=1e-5)


def test_loss_is_split_between_novel_and_known_words():
    text_ = "the king met Zed"
    novel = lm_eval.novel_word_characters(text_, {"the", "king", "met"})
    assert novel.tolist() == [False] * 13 + [True] * 3
    losses = torch.tensor([1.0] * 13 + [4.0] * 3)
    found = lm_eval.loss_by_novelty(losses, text_, slice(0, 16), {"the", "king", "met"}, chunk=8)
    assert found["novel_loss"] == 4.0 and found["known_loss"] == 1.0 and found["novel_share"] == 3 / 16
    assert found["chunk_loss"] == [1.0, 2.125] and found["chunk_novel_share"] == [0.0, 0.375]
    cut = lm_eval.loss_by_novelty(torch.ones(6), text_, slice(6, 12), {"the", "king", "met"}, chunk=3)
    assert cut["novel_share"] == 0.0 and cut["novel_loss"] is None  # "ng" of "king" is not a new word
