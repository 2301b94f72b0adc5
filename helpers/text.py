"""Character-level language modelling: vocabulary, splits, batches, the recurrent model, its task,
sampling (temperature, nucleus, beam search) and the metrics on generated text.

Loss is in nats per character (natural log); bits per character = nats / ln 2; perplexity = e^nats.
"""
from __future__ import annotations

import math
import re
from collections import Counter

import torch
import torch.nn.functional as F
from torch import nn

from .repro import make_generator

UNK = "\uFFFD"   # the symbol unseen characters map to (the Unicode replacement character)
IGNORE = -100    # target value of positions that are not scored (cross_entropy's ignore_index)


# ----------------------------------------------------------------------------------------------
# Data


class Vocab:
    """Symbols seen in the *training* split, plus UNK at index 0 for anything else (so validation and
    test text never changes the vocabulary, and an unseen symbol costs what the model gives UNK)."""

    def __init__(self, training_text: str):
        self.symbols = [UNK] + sorted(set(training_text) - {UNK})
        self.index = {s: i for i, s in enumerate(self.symbols)}

    def __len__(self) -> int:
        return len(self.symbols)

    def encode(self, text: str) -> torch.Tensor:
        return torch.tensor([self.index.get(ch, 0) for ch in text], dtype=torch.long)

    def decode(self, ids) -> str:
        return "".join(self.symbols[i] for i in torch.as_tensor(ids).tolist())

    def unknown_rate(self, text: str) -> float:
        return sum(ch not in self.index for ch in text) / max(len(text), 1)


TOKEN = re.compile(r"[A-Za-z]+|[^A-Za-z]")


def word_tokens(text: str) -> list:
    """Words (letter runs) and every other character as its own token: joining the tokens gives the
    text back, so a word model's total loss can be divided by the number of characters."""
    return TOKEN.findall(text)


class TokenVocab(Vocab):
    """The `max_size` most frequent training tokens (all single characters always included); any other
    token maps to UNK at index 0."""

    def __init__(self, training_tokens: list, max_size: int = 10_000):
        counts = Counter(training_tokens)
        singles = sorted(t for t in counts if len(t) == 1)
        words = [t for t, _ in counts.most_common() if len(t) > 1][:max(0, max_size - len(singles))]
        self.symbols = [UNK] + singles + sorted(words)
        self.index = {s: i for i, s in enumerate(self.symbols)}

    def encode(self, tokens) -> torch.Tensor:
        return torch.tensor([self.index.get(t, 0) for t in tokens], dtype=torch.long)

    def unknown_rate(self, tokens) -> float:
        return sum(t not in self.index for t in tokens) / max(len(tokens), 1)


def contiguous_split(text: str, fractions=(0.9, 0.05, 0.05)) -> tuple:
    """Train/validation/test as three consecutive slices: no window of one can appear in another."""
    if abs(sum(fractions) - 1) > 1e-9 or min(fractions) <= 0:
        raise ValueError(f"fractions={fractions} must be three positive numbers summing to 1")
    a = int(len(text) * fractions[0])
    b = a + int(len(text) * fractions[1])
    return text[:a], text[a:b], text[b:]


def chunk_split(text: str, chunk: int, fractions=(0.9, 0.05, 0.05), seed: int = 2023) -> tuple:
    """A control for `contiguous_split`: the text cut into `chunk`-symbol pieces that are dealt at random to
    train/validation/test in the given proportions (each split's pieces joined in text order). Returns the
    three texts and the piece indices of each split."""
    pieces = [text[i:i + chunk] for i in range(0, len(text), chunk)]
    if len(pieces) < 20:
        raise ValueError(f"{len(pieces)} pieces of {chunk} symbols; use a smaller chunk for a random split")
    order = torch.randperm(len(pieces), generator=make_generator(seed)).tolist()
    a, b = int(len(pieces) * fractions[0]), int(len(pieces) * (fractions[0] + fractions[1]))
    index = [sorted(order[:a]), sorted(order[a:b]), sorted(order[b:])]
    return (*("".join(pieces[i] for i in part) for part in index), index)


class RandomOffsetBatches:
    """Training batches of `batch_size` windows of `seq_len + 1` symbols starting at random offsets,
    drawn afresh every step (truncated back-propagation through time over `seq_len` steps, a new
    diversity of sequences each epoch instead of fixed chunks). One 'epoch' is `steps` batches."""

    def __init__(self, ids: torch.Tensor, batch_size: int, seq_len: int, steps: int, seed: int = 2023,
                 device="cpu", synthetic: bool = False):
        if len(ids) <= seq_len + 1:
            raise ValueError(f"the text has {len(ids)} symbols; seq_len={seq_len} needs more")
        self.ids, self.batch_size, self.seq_len, self.steps = ids.to(device), batch_size, seq_len, steps
        self.generator = make_generator(seed)
        # what a results record says about the training data (see helpers.data.describe): symbols, stand-in or not
        self.meta = {"samples": len(ids), "input_size": None, "synthetic": synthetic}

    @property
    def augment(self) -> str:
        # training.fit fingerprints a loader's `augment`: a checkpoint never resumes with other windows
        return f"random windows of {self.seq_len} + 1 symbols"

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        span = torch.arange(self.seq_len + 1, device=self.ids.device)
        for _ in range(self.steps):
            starts = torch.randint(len(self.ids) - self.seq_len - 1, (self.batch_size,), generator=self.generator)
            windows = self.ids[starts.to(self.ids.device).view(-1, 1) + span]
            yield windows[:, :-1], windows[:, 1:]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])

    def __repr__(self):
        return f"RandomOffsetBatches(batch_size={self.batch_size}, seq_len={self.seq_len}, steps={self.steps})"


class SlidingWindows:
    """Evaluation windows of `context + stride` symbols, one every `stride`, that score only their last
    `stride` targets: every scored symbol sees at least `context` symbols before it, each is scored
    once, and every window scores the same number, so a mean over windows is a mean over symbols. A
    fresh state per window: the loss does not depend on batch order. Not scored: the first `context`
    symbols and the fewer than `stride` at the end."""

    def __init__(self, ids: torch.Tensor, batch_size: int, context: int, stride: int, device="cpu"):
        length = context + stride
        if len(ids) < length + 1:
            raise ValueError(f"the text has {len(ids)} symbols; context + stride = {length} needs more")
        starts = torch.arange(0, len(ids) - length, stride)
        windows = ids[starts.view(-1, 1) + torch.arange(length + 1)]
        self.inputs, self.targets = windows[:, :-1].to(device), windows[:, 1:].clone()
        self.targets[:, :context] = IGNORE
        self.targets = self.targets.to(device)
        self.batch_size, self.context, self.stride = batch_size, context, stride

    def __len__(self) -> int:
        return -(-len(self.inputs) // self.batch_size)

    def __iter__(self):
        for start in range(0, len(self.inputs), self.batch_size):
            yield self.inputs[start:start + self.batch_size], self.targets[start:start + self.batch_size]

    @property
    def scored(self) -> int:
        return len(self.inputs) * self.stride


class NextSymbol:
    """The task for `training.fit`: cross-entropy of the next symbol, in nats (and bits) per symbol."""

    monitor, mode = "val_loss", "min"

    def loss(self, outputs, targets):
        return F.cross_entropy(outputs.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)

    def metrics(self, outputs, targets) -> dict:
        """Per window: mean loss over its scored symbols (all windows score equally many)."""
        nll = F.cross_entropy(outputs.flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="none")
        per_window = nll.view(targets.shape).sum(1) / (targets != IGNORE).sum(1).clamp(min=1)
        return {"loss": per_window, "bpc": per_window / math.log(2)}

    def __repr__(self):
        return "NextSymbol()"


# ----------------------------------------------------------------------------------------------
# Model

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class CharRNN(nn.Module):
    """Embedding -> `layers` recurrent layers (vanilla RNN, LSTM or GRU) -> dropout -> linear head.

    `dropout` acts on the embedding, between layers and before the head. `tie_weights` shares the head's
    matrix with the embedding (needs embed == hidden). `layer_norm` normalises each layer's outputs
    (layers are then run one by one). forward(x, state) returns logits (B, T, V), and with
    `return_state=True` also the recurrent state, for generation one symbol at a time.
    """

    def __init__(self, vocab_size: int, hidden: int = 256, layers: int = 1, cell: str = "lstm", embed: int = 64,
                 dropout: float = 0.0, layer_norm: bool = False, tie_weights: bool = False):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell={cell!r} is unknown; choose one of {', '.join(CELLS)}")
        if tie_weights and embed != hidden:
            raise ValueError(f"tie_weights needs embed == hidden (got embed={embed}, hidden={hidden})")
        self.config = dict(vocab_size=vocab_size, hidden=hidden, layers=layers, cell=cell, embed=embed,
                           dropout=dropout, layer_norm=layer_norm, tie_weights=tie_weights)
        self.embedding = nn.Embedding(vocab_size, embed)
        self.drop = nn.Dropout(dropout)
        extra = {"nonlinearity": "tanh"} if cell == "rnn" else {}
        if layer_norm:
            self.rnns = nn.ModuleList(CELLS[cell](embed if i == 0 else hidden, hidden, batch_first=True, **extra)
                                      for i in range(layers))
            self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(layers))
        else:
            self.rnns = nn.ModuleList([CELLS[cell](embed, hidden, layers, batch_first=True,
                                                   dropout=dropout if layers > 1 else 0.0, **extra)])
            self.norms = None
        self.head = nn.Linear(hidden, vocab_size)
        if tie_weights:
            self.head.weight = self.embedding.weight

    def forward(self, x, state=None, return_state: bool = False):
        out = self.drop(self.embedding(x))
        states = []
        for i, rnn in enumerate(self.rnns):
            out, s = rnn(out, None if state is None else state[i])
            states.append(s)
            if self.norms is not None:
                out = self.norms[i](out)
                if i < len(self.rnns) - 1:
                    out = self.drop(out)
        logits = self.head(self.drop(out))
        return (logits, states) if return_state else logits


def recurrent_parameters(model: nn.Module) -> int:
    """Parameters outside the embedding and the head: what the hidden size sweep changes most."""
    return sum(p.numel() for n, p in model.named_parameters() if n.startswith("rnns."))


# ----------------------------------------------------------------------------------------------
# Generation


def next_symbol_distribution(logits: torch.Tensor, temperature: float = 1.0, top_p: float = 1.0) -> torch.Tensor:
    """Probabilities after temperature scaling and nucleus filtering (Holtzman et al., 2020): keep the
    smallest set of most likely symbols whose total probability reaches `top_p`, renormalised.
    temperature -> 0 puts all mass on the argmax (greedy); top_p = 1 keeps the plain distribution."""
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError(f"temperature={temperature} must be >= 0 and top_p={top_p} in (0, 1]")
    logits = logits.float()
    if temperature == 0:
        return F.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    # Shift before dividing: logits / 1e-39 overflow to inf and softmax(inf - inf) is NaN; shifted, the largest
    # logit is 0 and the others go to -inf, so every temperature > 0 gives a valid distribution.
    # Float64 keeps a temperature below float32's range (1e-300) from rounding to a zero divisor.
    shifted = (logits - logits.max(-1, keepdim=True).values).double()
    probs = F.softmax(shifted / temperature, dim=-1).float()
    if top_p < 1:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        before = sorted_probs.cumsum(-1) - sorted_probs  # mass of the more likely symbols
        keep_sorted = before < top_p                     # the first symbol is always kept
        keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
        probs = torch.where(keep, probs, torch.zeros_like(probs))
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


@torch.no_grad()
def sample(model: nn.Module, vocab: Vocab, prompt: str, length: int, temperature: float = 1.0,
           top_p: float = 1.0, seed: int = 2023, device="cpu") -> str:
    """`length` symbols after `prompt`, one at a time, carrying the recurrent state."""
    return sample_many(model, vocab, [prompt], length, temperature, top_p, seed, device)[0]


@torch.no_grad()
def sample_many(model: nn.Module, vocab: Vocab, prompts: list, length: int, temperature: float = 1.0,
                top_p: float = 1.0, seed: int = 2023, device="cpu") -> list:
    """One continuation of `length` symbols per prompt, generated side by side as one batch (each prompt
    is read on its own first, so prompts may differ in length)."""
    model.eval()
    generator = make_generator(seed)
    read = [model(vocab.encode(p or "\n").view(1, -1).to(device), return_state=True) for p in prompts]
    logits = torch.cat([out[:, -1] for out, _ in read])
    state = _cat_states([state for _, state in read])
    out = []
    for _ in range(length):
        probs = next_symbol_distribution(logits, temperature, top_p).cpu()
        out.append(torch.multinomial(probs, 1, generator=generator))
        logits, state = model(out[-1].to(device), state, return_state=True)
        logits = logits[:, -1]
    return [vocab.decode(row) for row in torch.cat(out, dim=1)]


def _cat_states(states: list) -> list:
    """The states of single-sequence passes as one batch (the batch is dim 1 of every state tensor)."""
    cat = lambda tensors: torch.cat(tensors, dim=1)
    return [tuple(map(cat, zip(*layer))) if isinstance(layer[0], tuple) else cat(layer) for layer in zip(*states)]


def _select_state(state, index):
    """Rows `index` of every layer's state (a tensor, or an (h, c) pair for LSTMs)."""
    pick = lambda t: t[:, index]
    return [tuple(pick(t) for t in s) if isinstance(s, tuple) else pick(s) for s in state]


@torch.no_grad()
def beam_search(model: nn.Module, vocab: Vocab, prompt: str, length: int, beam_width: int = 5,
                device="cpu") -> str:
    """The continuation of `length` symbols with the highest total log-probability found by keeping the
    `beam_width` best partial continuations at every step (beam_width=1 is greedy decoding)."""
    model.eval()
    ids = vocab.encode(prompt or "\n").view(1, -1).to(device)
    logits, state = model(ids, return_state=True)
    scores = torch.zeros(1, device=device)
    sequences = torch.zeros(1, 0, dtype=torch.long, device=device)
    for _ in range(length):
        logp = F.log_softmax(logits[:, -1].float(), dim=-1)
        total = (scores.view(-1, 1) + logp).flatten()
        scores, flat = total.topk(min(beam_width, total.numel()))
        parent, symbol = flat // logp.shape[-1], flat % logp.shape[-1]
        sequences = torch.cat([sequences[parent], symbol.view(-1, 1)], dim=1)
        logits, state = model(symbol.view(-1, 1), _select_state(state, parent), return_state=True)
    return vocab.decode(sequences[0])


# ----------------------------------------------------------------------------------------------
# Metrics on generated text

WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")


def words_of(text: str) -> list:
    return [w.lower() for w in WORD.findall(text)]


def spelling_rate(generated: str, dictionary: set) -> float:
    """Share of generated words found in `dictionary` (the training text's words, lower case)."""
    words = words_of(generated)
    return sum(w in dictionary for w in words) / len(words) if words else float("nan")


def distinct_n(text: str, n: int = 2) -> float:
    """Distinct word n-grams / all word n-grams: low values mean the text repeats itself."""
    words = words_of(text)
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def repetition_rate(text: str, n: int = 4) -> float:
    """Share of word n-grams that already occurred earlier in the same text."""
    words = words_of(text)
    seen, repeated, total = set(), 0, 0
    for i in range(len(words) - n + 1):
        gram = tuple(words[i:i + n])
        repeated += gram in seen
        total += 1
        seen.add(gram)
    return repeated / total if total else float("nan")


def text_metrics(text: str, dictionary: set) -> dict:
    return {"spelling": spelling_rate(text, dictionary), "distinct_1": distinct_n(text, 1),
            "distinct_2": distinct_n(text, 2), "repetition_4": repetition_rate(text, 4)}


def word_counts(text: str) -> Counter:
    return Counter(words_of(text))


# ----------------------------------------------------------------------------------------------
# What the LSTM learnt (after Karpathy, Johnson & Fei-Fei, 2015)


@torch.no_grad()
def lstm_cell_states(model: CharRNN, ids: torch.Tensor, device="cpu") -> torch.Tensor:
    """The last LSTM layer's cell state c_t after every symbol, (T, hidden), stepping one symbol at a time
    (nn.LSTM only returns the hidden outputs of a whole sequence)."""
    if model.config["cell"] != "lstm":
        raise ValueError("cell states exist only for cell='lstm'")
    model.eval()
    state, cells = None, []
    for symbol in ids.view(1, -1, 1).unbind(1):
        _, state = model(symbol.to(device), state, return_state=True)
        cells.append(state[-1][1][-1, 0].float().cpu())
    return torch.stack(cells)


def text_features(text: str) -> dict:
    """Per character: position in its line, inside a quotation (' or " opened on the same line),
    indentation of its line, and whether its line ends with ':' (a speaker's name in a play)."""
    position, quoted, indent, speaker = [], [], [], []
    for line in text.split("\n"):
        open_quote, lead = None, len(line) - len(line.lstrip(" "))
        for i, ch in enumerate(line + "\n"):
            position.append(i)
            indent.append(lead)
            speaker.append(float(line.rstrip().endswith(":")))
            if ch in "\"'" and open_quote in (None, ch) and not (ch == "'" and 0 < i < len(line) - 1
                                                                 and line[i - 1].isalpha() and line[i + 1].isalpha()):
                open_quote = None if open_quote == ch else ch  # an apostrophe inside a word is not a quote
            quoted.append(float(open_quote is not None))
    n = len(text)
    return {"line position": torch.tensor(position[:n], dtype=torch.float),
            "inside quotes": torch.tensor(quoted[:n]), "indentation": torch.tensor(indent[:n], dtype=torch.float),
            "speaker line": torch.tensor(speaker[:n])}


def most_correlated_cells(cells: torch.Tensor, features: dict) -> dict:
    """For each feature with any variation: (cell index, Pearson r) of the cell that tracks it best."""
    z = (cells - cells.mean(0)) / cells.std(0).clamp(min=1e-6)
    found = {}
    for name, values in features.items():
        if values.std() == 0:
            continue
        f = (values - values.mean()) / values.std()
        r = (z * f.view(-1, 1)).mean(0) * len(f) / (len(f) - 1)
        best = int(r.abs().argmax())
        found[name] = (best, float(r[best]))
    return found
