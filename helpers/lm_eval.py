"""Notebook 05's measurements beyond the mean loss: generated text scored over many samples (mean and 95 %
interval), a word model charged for the words it cannot spell, and the loss per stretch of text that
explains a validation-test gap.
"""
from __future__ import annotations

import math
from collections import Counter

import torch
import torch.nn.functional as F

from . import results
from .text import IGNORE, WORD, beam_search, sample_many, text_metrics


def prompts_from(text: str, n: int) -> list:
    """`n` fixed prompts: non-empty lines spread evenly over `text` (the middle line of each n-th, so not the
    first, which a split may have cut, once there are 2n lines), each with its newline."""
    lines = [line for line in text.split("\n") if line.strip()]
    if len(lines) < n:
        raise ValueError(f"the text has {len(lines)} non-empty lines; {n} prompts need as many")
    return [lines[(2 * i + 1) * len(lines) // (2 * n)] + "\n" for i in range(n)]


def score_samples(samples: list, dictionary: set) -> dict:
    """The text metrics of each sample and, per metric, the mean with its 95 % interval over the samples."""
    per_sample = {key: [] for key in text_metrics("", dictionary)}
    for sample in samples:
        for key, value in text_metrics(sample, dictionary).items():
            per_sample[key].append(value)
    summary = {key: _interval([v for v in values if not math.isnan(v)]) for key, values in per_sample.items()}
    return {"summary": summary, "per_sample": per_sample, "samples": samples}


def _interval(values: list) -> dict:
    """A metric undefined for most samples (e.g. no words generated) has no interval (None, also in JSON)."""
    if len(values) < 2:
        return {"mean": sum(values) / len(values) if values else None, "half_width": None, "n": len(values)}
    return results.mean_interval(values)


def setting_name(temperature: float | None = None, top_p: float = 1.0, beam: int | None = None) -> str:
    """A key usable in a claim's metric path (no dots): 'T080_p100', 'beam5'."""
    return f"beam{beam}" if beam else f"T{round(100 * temperature):03d}_p{round(100 * top_p):03d}"


def generation_grid(model, vocab, prompts: list, length: int, dictionary: set, *, temperatures=(), top_ps=(),
                    beam_widths=(), seed: int = 2023, device="cpu") -> dict:
    """Every sampling setting (temperature x top-p, then beam search per width) on the same prompts, each
    scored by `score_samples`; samples are drawn with the same seed in every setting."""
    grid = {}
    for temperature in temperatures:
        for top_p in top_ps:
            texts = sample_many(model, vocab, prompts, length, temperature, top_p, seed=seed, device=device)
            grid[setting_name(temperature, top_p)] = {"temperature": temperature, "top_p": top_p,
                                                       **score_samples(texts, dictionary)}
    for width in beam_widths:
        texts = [beam_search(model, vocab, p, length, width, device=device) for p in prompts]
        grid[setting_name(beam=width)] = {"beam_width": width, **score_samples(texts, dictionary)}
    return grid


# ----------------------------------------------------------------------------------------------
# Losses symbol by symbol


@torch.no_grad()
def symbol_losses(model, windows, device="cpu") -> torch.Tensor:
    """The loss (nats) of every scored symbol of a `SlidingWindows`, in text order, in float32."""
    model.eval()
    losses = []
    for inputs, targets in windows:
        logits = model(inputs.to(device)).float()
        nll = F.cross_entropy(logits.flatten(0, 1), targets.to(device).flatten(), ignore_index=IGNORE,
                              reduction="none").view(targets.shape)
        losses.append(nll[:, windows.context:].reshape(-1).cpu())
    return torch.cat(losses)


def scored_slice(windows, length: int) -> slice:
    """Which symbols of the text a `SlidingWindows` scores: the targets after the first window's context."""
    return slice(windows.context + 1, windows.context + 1 + length)


def novel_word_characters(text: str, dictionary: set) -> torch.Tensor:
    """Per character of `text`: inside a word that `dictionary` (the training words, lower case) lacks."""
    novel = torch.zeros(len(text), dtype=torch.bool)
    for match in WORD.finditer(text):
        if match.group().lower() not in dictionary:
            novel[match.start():match.end()] = True
    return novel


def loss_by_novelty(losses: torch.Tensor, text: str, scored: slice, dictionary: set, chunk: int) -> dict:
    """Where the loss of the `scored` stretch of `text` goes: the mean loss on characters of words never seen in
    training and on all others (None for an empty group), their share, and per `chunk` characters the mean loss
    and the novel share. Words are found in the whole text, so a word cut by the scored stretch is not new."""
    novel = novel_word_characters(text, dictionary)[scored]
    mean = lambda values: values.mean().item() if len(values) else None
    return {"loss": losses.mean().item(), "novel_share": novel.float().mean().item(),
            "novel_loss": mean(losses[novel]), "known_loss": mean(losses[~novel]),
            "chunk_loss": chunk_means(losses, chunk), "chunk_novel_share": chunk_means(novel.float(), chunk)}


def chunk_means(losses: torch.Tensor, chunk: int) -> list:
    """Mean loss of each whole `chunk` of consecutive symbols (a remainder shorter than a chunk is dropped)."""
    whole = len(losses) // chunk * chunk
    return losses[:whole].view(-1, chunk).mean(1).tolist()


# ----------------------------------------------------------------------------------------------
# A word model charged for its out-of-vocabulary words


class SpellingModel:
    """A word's letters as a bigram chain from a start mark to an end mark, add-one smoothed over all 52
    ASCII letters: a proper distribution over letter strings, fitted on training words. A word model that
    maps a word to UNK is charged -log p(UNK) plus this model's cost of spelling the word out."""

    LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    START, END = "^", "$"

    def __init__(self, words):
        self.counts = Counter()
        for word in words:
            self._check(word)
            chain = self.START + word + self.END
            self.counts.update(zip(chain, chain[1:]))
        self.totals = Counter()
        for (before, _), count in self.counts.items():
            self.totals[before] += count
        self.outcomes = len(self.LETTERS) + 1  # any letter, or the end of the word

    def probability(self, before: str, after: str) -> float:
        return (self.counts[(before, after)] + 1) / (self.totals[before] + self.outcomes)

    def _check(self, word: str) -> None:
        if not word or any(ch not in self.LETTERS for ch in word):
            raise ValueError(f"{word!r}: the spelling model covers non-empty runs of ASCII letters only")

    def nats(self, word: str) -> float:
        self._check(word)
        chain = self.START + word + self.END
        return -sum(math.log(self.probability(a, b)) for a, b in zip(chain, chain[1:]))


def charged_nats_per_char(model, windows, tokens: list, vocab, spelling: SpellingModel, device="cpu") -> dict:
    """A word model's loss per character of the scored text, with every out-of-vocabulary word charged
    its spelling (`SpellingModel`), next to the uncharged figure that only pays for the UNK token."""
    losses = symbol_losses(model, windows, device)
    scored = tokens[scored_slice(windows, len(losses))]
    unknown = [t for t in scored if t not in vocab.index]
    characters = sum(map(len, scored))
    # An unseen single symbol costs p(UNK) alone, as it does in the character models' vocabulary.
    spelled = sum(spelling.nats(t) for t in unknown if t.isascii() and t.isalpha())
    return {"uncharged": losses.sum().item() / characters,
            "charged": (losses.sum().item() + spelled) / characters, "characters": characters,
            "tokens": len(scored), "unknown_tokens": len(unknown), "unknown_rate": len(unknown) / len(scored),
            "spelling_nats_per_unknown": spelled / max(len(unknown), 1)}


def interval_cell(summary: dict, scale: float = 100, digits: int = 1) -> str:
    """A table cell (LaTeX) for a `mean_interval`: '$42.1 \\pm 1.3$' (in percent by default)."""
    if summary["half_width"] is None:
        return "--" if summary["mean"] is None else f"${scale * summary['mean']:.{digits}f}$"
    return f"${scale * summary['mean']:.{digits}f} \\pm {scale * summary['half_width']:.{digits}f}$"
