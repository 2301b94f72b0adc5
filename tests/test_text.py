"""Notebook 05's building blocks: vocabulary and splits, batches, the recurrent model, the loss, the
sampling functions (temperature, nucleus, beam search) and the generated-text metrics."""
import math

import pytest
import torch

from helpers import text, training
from helpers.text import IGNORE, UNK


def test_vocab_comes_from_training_text_with_an_unknown_symbol():
    vocab = text.Vocab("abca\n")
    assert vocab.symbols == [UNK, "\n", "a", "b", "c"]
    assert vocab.decode(vocab.encode("cab\n")) == "cab\n"
    assert vocab.encode("axz").tolist() == [2, 0, 0] and vocab.unknown_rate("axz") == pytest.approx(2 / 3)


def test_contiguous_split_has_no_overlap_and_keeps_order():
    corpus = "".join(chr(65 + i % 26) for i in range(1000))
    train, val, test = text.contiguous_split(corpus)
    assert (len(train), len(val), len(test)) == (900, 50, 50) and train + val + test == corpus
    with pytest.raises(ValueError, match="summing to 1"):
        text.contiguous_split(corpus, (0.9, 0.2, 0.1))


def test_chunk_split_deals_whole_pieces_at_random_and_loses_nothing():
    corpus = "".join(chr(65 + i % 26) for i in range(1000))
    train, val, test, index = text.chunk_split(corpus, 10, seed=3)
    assert [len(part) for part in index] == [90, 5, 5] and sorted(sum(index, [])) == list(range(100))
    assert train == "".join(corpus[i * 10:(i + 1) * 10] for i in index[0]) and len(val) == len(test) == 50
    assert index[2] != list(range(95, 100)) and text.chunk_split(corpus, 10, seed=3)[3] == index
    with pytest.raises(ValueError, match="smaller chunk"):
        text.chunk_split(corpus, 100)


def test_random_offset_batches_are_shifted_windows_seeded_and_resumable():
    ids = torch.arange(1000)
    batches = text.RandomOffsetBatches(ids, batch_size=4, seq_len=16, steps=3, seed=7)
    x, y = next(iter(batches))
    assert x.shape == y.shape == (4, 16) and torch.equal(y, x + 1)  # targets are the next symbols
    assert len(batches) == 3 and len(list(batches)) == 3
    again = text.RandomOffsetBatches(ids, 4, 16, 3, seed=7)
    assert torch.equal(next(iter(again))[0], x)
    state = batches.state_dict()
    first = next(iter(batches))[0]
    batches.load_state_dict(state)
    assert torch.equal(next(iter(batches))[0], first)
    starts = torch.cat([b[0][:, 0] for _ in range(20) for b in batches])
    assert len(starts.unique()) > 100  # offsets are spread over the text, not fixed chunks


def test_sliding_windows_score_every_symbol_once_with_context():
    ids = torch.arange(100)
    windows = text.SlidingWindows(ids, batch_size=3, context=8, stride=4)
    scored = torch.cat([y[y != IGNORE] for _, y in windows])
    assert torch.equal(scored, torch.arange(9, 9 + len(scored)))  # consecutive, each once
    assert windows.scored == len(scored) and len(scored) > 100 - 8 - 4 - 1
    x, y = next(iter(windows))
    assert (y[:, :8] == IGNORE).all() and (y[:, 8:] == x[:, 8:] + 1).all()


def test_next_symbol_loss_of_a_uniform_model_is_log_vocab():
    task = text.NextSymbol()
    outputs = torch.zeros(2, 5, 7)
    targets = torch.randint(7, (2, 5))
    targets[0, :2] = IGNORE
    assert task.loss(outputs, targets).item() == pytest.approx(math.log(7))
    metrics = task.metrics(outputs, targets)
    assert torch.allclose(metrics["loss"], torch.full((2,), math.log(7)))
    assert torch.allclose(metrics["bpc"], torch.full((2,), math.log2(7)))
    assert task.monitor == "val_loss" and task.mode == "min"


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("layer_norm", [False, True])
def test_char_rnn_shapes_state_and_stepwise_equivalence(cell, layer_norm):
    torch.manual_seed(0)
    model = text.CharRNN(11, hidden=16, layers=2, cell=cell, embed=8, layer_norm=layer_norm).eval()
    x = torch.randint(11, (3, 10))
    full = model(x)
    assert full.shape == (3, 10, 11)
    logits, state = model(x[:, :6], return_state=True)
    rest = model(x[:, 6:], state)  # carrying the state equals running the whole sequence
    assert torch.allclose(torch.cat([logits, rest], 1), full, atol=1e-5)


def test_char_rnn_options_and_sizes():
    lstm = text.CharRNN(50, hidden=32, layers=1, embed=16)
    assert text.recurrent_parameters(lstm) == 4 * (16 * 32 + 32 * 32 + 2 * 32)
    tied = text.CharRNN(50, hidden=32, embed=32, tie_weights=True)
    assert tied.head.weight is tied.embedding.weight
    with pytest.raises(ValueError, match="embed == hidden"):
        text.CharRNN(50, hidden=32, embed=16, tie_weights=True)
    with pytest.raises(ValueError, match="rnn, lstm, gru"):
        text.CharRNN(50, cell="transformer")


def test_temperature_to_zero_approaches_greedy():
    logits = torch.tensor([[1.0, 3.0, 2.0, -1.0]])
    cold = text.next_symbol_distribution(logits, temperature=0.01)
    assert cold.argmax().item() == 1 and cold[0, 1] > 0.999
    assert torch.equal(text.next_symbol_distribution(logits, temperature=0), torch.tensor([[0.0, 1, 0, 0]]))
    hot = text.next_symbol_distribution(logits, temperature=100)
    assert (hot - 0.25).abs().max() < 0.02  # and to uniform as it grows


@pytest.mark.parametrize("temperature", [1e-38, 1e-39, 1e-45, 1e-300, 5e-324, 1e-6, 1e6])
def test_any_positive_temperature_gives_a_distribution(temperature):
    logits = torch.tensor([[1.0, 3.0, 2.0, -1.0], [80.0, -80.0, 79.0, 0.0]])
    probs = text.next_symbol_distribution(logits, temperature, top_p=0.9)
    assert torch.isfinite(probs).all() and torch.allclose(probs.sum(-1), torch.ones(2))
    if temperature < 1e-6:
        assert probs.argmax(-1).tolist() == [1, 0] and probs.max(-1).values.min() == 1.0
    with pytest.raises(ValueError, match="temperature"):
        text.next_symbol_distribution(logits, -temperature)


def test_nucleus_keeps_the_smallest_set_reaching_p_and_p1_is_plain_sampling():
    probs = torch.tensor([[0.5, 0.05, 0.3, 0.15]])
    logits = probs.log()
    assert torch.allclose(text.next_symbol_distribution(logits, top_p=1.0), probs)
    kept = text.next_symbol_distribution(logits, top_p=0.75)  # 0.5 + 0.3 = 0.8 >= 0.75; 0.5 alone is not
    assert torch.allclose(kept, torch.tensor([[0.5 / 0.8, 0.0, 0.3 / 0.8, 0.0]]))
    assert torch.allclose(text.next_symbol_distribution(logits, top_p=0.8), kept)
    assert torch.allclose(text.next_symbol_distribution(logits, top_p=0.5), torch.tensor([[1.0, 0, 0, 0]]))
    assert torch.allclose(text.next_symbol_distribution(logits, top_p=0.01), torch.tensor([[1.0, 0, 0, 0]]))
    with pytest.raises(ValueError, match="top_p"):
        text.next_symbol_distribution(logits, top_p=0.0)


def tiny_model(vocab):
    torch.manual_seed(1)
    return text.CharRNN(len(vocab), hidden=16, embed=8)


def test_sampling_is_seeded_and_p1_equals_plain_sampling():
    vocab = text.Vocab("abcdefgh \n")
    model = tiny_model(vocab)
    plain = text.sample(model, vocab, "ab", 40, temperature=1.0, seed=3)
    assert len(plain) == 40 and set(plain) <= set(vocab.symbols)
    assert text.sample(model, vocab, "ab", 40, temperature=1.0, top_p=1.0, seed=3) == plain
    assert text.sample(model, vocab, "ab", 40, seed=4) != plain
    greedy = text.sample(model, vocab, "ab", 20, temperature=0)
    assert text.sample(model, vocab, "ab", 20, temperature=1e-4, seed=9) == greedy


@pytest.mark.parametrize("layer_norm", [False, True])
def test_batched_samples_continue_each_prompt_on_its_own(layer_norm):
    vocab = text.Vocab("abcdefgh \n")
    torch.manual_seed(1)
    model = text.CharRNN(len(vocab), hidden=16, embed=8, layers=2, layer_norm=layer_norm)
    prompts = ["ab", "h", "cde fg"]
    greedy = text.sample_many(model, vocab, prompts, 15, temperature=0)
    assert greedy == [text.sample(model, vocab, p, 15, temperature=0) for p in prompts]
    drawn = text.sample_many(model, vocab, prompts, 30, seed=5)
    assert [len(d) for d in drawn] == [30] * 3 and drawn == text.sample_many(model, vocab, prompts, 30, seed=5)
    assert text.sample_many(model, vocab, prompts[:1], 30, seed=5) == [text.sample(model, vocab, "ab", 30, seed=5)]


def test_beam_search_width_one_is_greedy_and_wider_beams_score_higher():
    vocab = text.Vocab("abcdefgh \n")
    model = tiny_model(vocab).eval()
    greedy = text.sample(model, vocab, "ab", 12, temperature=0)
    assert text.beam_search(model, vocab, "ab", 12, beam_width=1) == greedy

    def log_prob(continuation):
        ids = vocab.encode("ab" + continuation).view(1, -1)
        logp = torch.log_softmax(model(ids[:, :-1]), -1)[0, 1:]
        return logp.gather(1, ids[0, 2:].view(-1, 1)).sum().item()

    assert log_prob(text.beam_search(model, vocab, "ab", 12, beam_width=8)) >= log_prob(greedy) - 1e-5


def test_generated_text_metrics():
    dictionary = {"the", "king", "is", "dead"}
    assert text.spelling_rate("The king is deadd", dictionary) == pytest.approx(3 / 4)
    assert text.distinct_n("a b a b", 1) == pytest.approx(2 / 4)
    assert text.distinct_n("a b a b", 2) == pytest.approx(2 / 3)
    assert text.repetition_rate("a b c a b c a b", n=2) == pytest.approx(4 / 7)  # ab bc ca [ab bc ca ab]
    assert math.isnan(text.spelling_rate("123 !!", dictionary))


def test_fit_learns_a_periodic_text():
    corpus = "abcdefg\n" * 300
    vocab = text.Vocab(corpus)
    ids = vocab.encode(corpus)
    model = text.CharRNN(len(vocab), hidden=32, embed=16)
    train = text.RandomOffsetBatches(ids, 16, 24, steps=20, seed=0)
    val = text.SlidingWindows(ids[:400], 8, context=8, stride=16)
    history = training.fit(model, train, val, training.TrainConfig(epochs=3, optimizer="adam", lr=0.02),
                           task=text.NextSymbol())
    assert history.best_value < 0.1 < history.epochs[0]["train_loss"]


def test_word_tokens_rebuild_the_text_and_the_vocab_keeps_characters():
    corpus = "The king's men, the KING!\n  and the men"
    tokens = text.word_tokens(corpus)
    assert "".join(tokens) == corpus and "king" in tokens and "'" in tokens and " " in tokens
    vocab = text.TokenVocab(tokens, max_size=12)
    assert "men" in vocab.symbols and "the" in vocab.symbols and "\n" in vocab.symbols
    assert vocab.encode(["queen"]).tolist() == [0] and vocab.unknown_rate(["queen", "men"]) == 0.5


def test_batches_fingerprint_their_window_length():
    ids = torch.arange(500)
    a = training.fingerprint(torch.nn.Linear(1, 1), training.TrainConfig(epochs=1),
                             text.RandomOffsetBatches(ids, 4, 16, 3), text.NextSymbol())
    b = training.fingerprint(torch.nn.Linear(1, 1), training.TrainConfig(epochs=1),
                             text.RandomOffsetBatches(ids, 4, 32, 3), text.NextSymbol())
    assert a != b


def test_text_features_and_a_planted_cell_is_found():
    sample = 'ROMEO:\n  He said "go home" and left\nJULIET:\nDon\'t'
    features = text.text_features(sample)
    assert all(len(v) == len(sample) for v in features.values())
    quoted = "".join(ch for ch, q in zip(sample, features["inside quotes"]) if q)
    assert quoted == '"go home'  # the apostrophe of Don't opens nothing
    assert features["indentation"][sample.index("He")] == 2 and features["speaker line"][0] == 1
    assert features["line position"][sample.index("said")] == 5
    cells = torch.randn(len(sample), 6)
    cells[:, 4] = features["line position"] * 0.1 + 0.01 * torch.randn(len(sample))
    best = text.most_correlated_cells(cells, features)
    assert best["line position"][0] == 4 and best["line position"][1] > 0.95


def test_lstm_cell_states_match_a_full_run():
    vocab = text.Vocab("abcdefgh \n")
    model = tiny_model(vocab).eval()
    ids = vocab.encode("abc defg\nab")
    cells = text.lstm_cell_states(model, ids)
    _, state = model(ids.view(1, -1), return_state=True)
    assert cells.shape == (len(ids), 16) and torch.allclose(cells[-1], state[-1][1][-1, 0], atol=1e-5)


def test_text_batches_say_what_they_train_on():
    import torch
    batches = text.RandomOffsetBatches(torch.arange(100), 4, 8, 2, synthetic=True)
    assert batches.meta == {"samples": 100, "input_size": None, "synthetic": True}
