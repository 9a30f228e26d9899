"""Search for the most likely output on the key/value cache: greedy decoding, and beam search
with GNMT's length and coverage penalties (the paper: beam 4, alpha 0.6, §6.1); `decode` picks
one by the `DecodeOptions`.

Both work for the encoder-decoder (`src` is the source) and the decoder-only model (`src` is the
prompt, and the output continues it).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor

from aiayn.generate.compiled import CompiledStep
from aiayn.generate.decoding import (
    DecoderState,
    Model,
    decode_token_by_token,
    keeping_cross_attention,
    next_log_probs,
    pad_outputs,
)
from aiayn.generate.options import DecodeOptions


@torch.no_grad()
def decode(
    model: Model,
    src: Tensor,
    src_valid: Tensor | None = None,
    options: DecodeOptions | None = None,
    *,
    use_cache: bool = True,
    compiled: CompiledStep | None = None,
) -> list[list[int]]:
    """The best output of every row under `options` (default: `DecodeOptions()`): greedy
    search for beam 1, beam search otherwise. The one decoder under validation during
    training, the API's `translate`, `aiayn evaluate` and the benchmarks.

    Returns:
        Per row, the output ids without BOS, cut before EOS (and without padding).
    """
    options = options or DecodeOptions()
    eos, pad = model.config.eos_id, model.config.pad_id
    if options.beam == 1:
        rows = greedy_search(
            model, src, src_valid, options, use_cache=use_cache, compiled=compiled
        ).tolist()
    else:
        hypotheses = beam_search(
            model, src, src_valid, options, use_cache=use_cache, compiled=compiled
        )
        rows = [best[0].tokens for best in hypotheses]
    rows = [row[: row.index(eos)] if eos in row else row for row in rows]
    return [[token for token in row if token != pad] for row in rows]


@torch.no_grad()
def greedy_search(
    model: Model,
    src: Tensor,
    src_valid: Tensor | None = None,
    options: DecodeOptions | None = None,
    *,
    use_cache: bool = True,
    compiled: CompiledStep | None = None,
) -> Tensor:
    """Pick the most likely token at each step until every row has produced EOS.

    Args:
        model: An encoder-decoder, or a decoder-only model (`src` is then the prompt); put it
            in eval mode first.
        src: (batch, src_len) source ids; src_valid defaults to src != pad.
        options: Its `max_len_a` and `max_len_b` give each row's most output tokens, EOS
            included, floor(max_len_a * source length + max_len_b) (an encoder-decoder: fewer
            if its positions end sooner); `min_len`: no EOS before this many output tokens.
        use_cache: Decode incrementally on the key/value cache; False recomputes the whole
            prefix each step (the reference the cache is tested against).
        compiled: Run the steps on this compiled decoder step (`aiayn.generate.compiled`)
            where the longest row fits its capacity.

    Returns:
        (batch, out_len) ids without BOS, each row ending with EOS unless cut at its maximum
        length, padded with pad after EOS.
    """
    options = options or DecodeOptions()
    state = DecoderState(model, src, src_valid, use_cache=use_cache)
    max_lens = state.max_output_lengths(options.max_len_a, options.max_len_b)
    if compiled is not None:
        state.run_compiled(compiled, max_lens)
    outputs = decode_token_by_token(
        state,
        lambda log_probs: log_probs.argmax(dim=-1),
        max_lens=max_lens,
        min_len=options.min_len,
    )
    return pad_outputs(outputs, model.config.pad_id, src.device)


@dataclass
class Hypothesis:
    """One output of beam search; `beam_search` lists them best first per sentence."""

    tokens: list[int]
    """Output ids without BOS (or prompt); they end with EOS when `finished`."""
    score: float
    """What hypotheses are ranked by: log P(Y|X) / lp(Y) + cp(X; Y) (GNMT, Wu et al. 2016, §7)."""
    log_prob: float
    """log P(Y|X), the sum of `token_log_probs`."""
    token_log_probs: list[float]
    """log P(y_t | y_<t, X) of every output token."""
    finished: bool
    """Ended with EOS; False when cut at the maximum output length."""


def length_penalty(length: Tensor | float, alpha: float) -> Tensor | float:
    """GNMT's lp(Y) = ((5 + |Y|) / 6)^alpha; |Y| counts output tokens, EOS included."""
    return ((5 + length) / 6) ** alpha


def coverage_penalty(coverage: Tensor, src_valid: Tensor, beta: float) -> Tensor:
    """GNMT's cp(X; Y) = beta * sum_i log(min(sum_j p_ij, 1)) over real source positions i,
    where p_ij is the attention of output token j on source token i (here the last decoder
    layer's cross-attention, averaged over heads). Never positive.

    Shape:
        coverage, src_valid: (rows, src_len) -> (rows,)
    """
    log_coverage = coverage.clamp(min=1e-20, max=1.0).log()
    return beta * torch.where(src_valid, log_coverage, 0.0).sum(dim=-1)


@dataclass
class _Beams:
    """The live hypotheses of the sentences still searched: k rows per sentence, best first."""

    tokens: Tensor  # (rows, prefix_len + t): the prefix, then t output ids
    scores: Tensor  # (rows,) log P of the output so far; -inf on rows that hold nothing
    token_log_probs: Tensor  # (rows, t)
    coverage: Tensor | None  # (rows, src_len): cross-attention summed over output tokens
    src_valid: Tensor | None  # (rows, src_len), for the coverage penalty
    sentence: Tensor  # (sentences,) position of each sentence in the input batch
    max_lens: Tensor  # (sentences,) most output tokens

    def keep(self, rows: Tensor, sentences: Tensor) -> _Beams:
        """Only `rows` of the sentences `sentences` (their positions among the live ones)."""
        return _Beams(
            tokens=self.tokens[rows],
            scores=self.scores[rows],
            token_log_probs=self.token_log_probs[rows],
            coverage=None if self.coverage is None else self.coverage[rows],
            src_valid=None if self.src_valid is None else self.src_valid[rows],
            sentence=self.sentence[sentences],
            max_lens=self.max_lens[sentences],
        )


@dataclass
class _Candidates:
    """The best 2k one-token extensions of each sentence's live hypotheses, best first."""

    log_p: Tensor  # (sentences, 2k) log P of the extended output
    parent: Tensor  # (sentences, 2k) row of `_Beams` extended
    token: Tensor  # (sentences, 2k) the token appended
    token_log_prob: Tensor  # (sentences, 2k)
    coverage: Tensor | None  # (rows, src_len): each row's coverage after this step


@torch.no_grad()
def beam_search(
    model: Model,
    src: Tensor,
    src_valid: Tensor | None = None,
    options: DecodeOptions | None = None,
    *,
    use_cache: bool = True,
    compiled: CompiledStep | None = None,
) -> list[list[Hypothesis]]:
    """Beam search over all sentences of a batch at once, on the key/value cache.

    Each step extends the k = `options.beam` live hypotheses of every sentence by every token and
    keeps the best 2k extensions by log P: those ending in EOS among the first k are finished,
    and the best k others live on. Finished hypotheses are ranked by log P / lp + cp
    (`length_penalty`, `coverage_penalty`). A sentence stops only when none of its live
    hypotheses can still beat its `n_best`-th finished one: log-probs are <= 0, so a live
    log P of s can only fall, and the best score it can reach is s / (the largest lp over the
    lengths still allowed) + 0 (cp <= 0). At its maximum length,
    floor(max_len_a * source length + max_len_b), live hypotheses are finished as they stand.
    Finished sentences leave the batch.

    Args:
        model: An encoder-decoder, or a decoder-only model (`src` is then the prompt).
        src: (batch, src_len) ids; src_valid defaults to src != pad.
        options: `beam` (k, hypotheses kept per sentence); `alpha`, the length penalty
            exponent (0 ranks by log P alone); `coverage`, the coverage penalty weight beta
            (encoder-decoder only; 0 turns it off); `max_len_a`, `max_len_b`, the maximum
            output length a * source length + b, the source's EOS counted (also capped by the
            model's positions); `min_len`, no EOS before this many output tokens; `n_best`,
            hypotheses returned per sentence.
        use_cache: Decode incrementally on the key/value cache; False recomputes the whole
            prefix each step.
        compiled: Run the steps on this compiled decoder step where the longest row fits.

    Returns:
        Per sentence, its best `n_best` hypotheses, best first.
    """
    options = options or DecodeOptions()
    beam_size, alpha, coverage = options.beam, options.alpha, options.coverage
    min_len, n_best = options.min_len, options.n_best
    if coverage and model.config.kind != "encoder-decoder":
        raise ValueError(f"the coverage penalty needs an encoder-decoder, got {coverage=}")
    with keeping_cross_attention(model) if coverage else nullcontext():
        state = DecoderState(
            model, src, src_valid, use_cache=use_cache, read_cross_attention=bool(coverage)
        )
        max_lens = state.max_output_lengths(options.max_len_a, options.max_len_b)
        if compiled is not None:
            state.run_compiled(compiled, max_lens)
        search = _BeamSearch(state, beam_size, alpha, coverage, min_len=min_len, n_best=n_best)
        beams = search.start(max_lens)
        for step in range(1, int(beams.max_lens.max()) + 1):
            logits = state.next_logits(beams.tokens if step > 1 else state.prefix)
            candidates = search.extend(beams, logits, step)
            search.finish_eos(beams, candidates, step)
            beams, parents = search.advance(beams, candidates)
            at_max = beams.max_lens <= step
            if bool(at_max.any()):
                search.finish_live(beams, at_max, step)
            done = at_max | search.cannot_improve(beams, step)
            if step == 1:  # the state still holds one row per sentence
                parents = torch.div(parents, beam_size, rounding_mode="floor")
            some_done = bool(done.any())
            if some_done:
                sentences = (~done).nonzero().squeeze(1)
                if sentences.numel() == 0:
                    break
                rows = search.rows_of(sentences)
                beams, parents = beams.keep(rows, sentences), parents[rows]
            state.select(parents, same_source=step > 1 and not some_done)
    return [hyps[:n_best] for hyps in search.finished]


class _BeamSearch:
    """The steps of one `beam_search` over a batch, and the hypotheses it has finished."""

    def __init__(
        self,
        state: DecoderState,
        k: int,
        alpha: float,
        beta: float,
        *,
        min_len: int,
        n_best: int,
    ) -> None:
        self.state, self.model = state, state.model
        self.k, self.alpha, self.beta = k, alpha, beta
        self.min_len, self.n_best = min_len, n_best
        self.eos_id = self.model.config.eos_id
        self.start_len = state.prefix.size(1)
        self.finished: list[list[Hypothesis]] = [[] for _ in range(state.prefix.size(0))]
        # Per sentence, the score of its n_best-th finished hypothesis (-inf until it has them).
        self.threshold = torch.full((state.prefix.size(0),), float("-inf"))
        self.threshold = self.threshold.to(state.prefix.device)

    def start(self, max_lens: Tensor) -> _Beams:
        """k rows per sentence holding the prefix; only the first is live (log P 0, -inf...)."""
        prefix, k = self.state.prefix, self.k
        scores = torch.full((prefix.size(0), k), float("-inf"), device=prefix.device)
        scores[:, 0] = 0.0
        src_valid = coverage = None
        if self.state.read_cross_attention:
            src_valid = self.state.src_valid.repeat_interleave(k, dim=0)
            coverage = torch.zeros(src_valid.shape, device=prefix.device)
        return _Beams(
            tokens=prefix.repeat_interleave(k, dim=0),
            scores=scores.view(-1),
            token_log_probs=torch.zeros(prefix.size(0) * k, 0, device=prefix.device),
            coverage=coverage,
            src_valid=src_valid,
            sentence=torch.arange(prefix.size(0), device=prefix.device),
            max_lens=max_lens,
        )

    def extend(self, beams: _Beams, logits: Tensor, step: int) -> _Candidates:
        """The best 2k extensions of each sentence by log P, over all its rows and tokens."""
        attention = self.state.cross_attention
        if step == 1:  # the state computed one row per sentence; its k rows are equal
            logits = logits.repeat_interleave(self.k, dim=0)
            attention = None if attention is None else attention.repeat_interleave(self.k, 0)
        log_probs = next_log_probs(logits, step - 1, min_len=self.min_len, model=self.model)
        n, vocab = beams.sentence.numel(), log_probs.size(1)
        totals = (beams.scores[:, None] + log_probs).view(n, self.k * vocab)
        log_p, flat = totals.topk(2 * self.k, dim=1)  # (n, 2k), best first
        first_row = torch.arange(n, device=flat.device)[:, None] * self.k
        parent = first_row + torch.div(flat, vocab, rounding_mode="floor")
        token = flat % vocab
        return _Candidates(
            log_p=log_p,
            parent=parent,
            token=token,
            token_log_prob=log_probs[parent, token],
            coverage=None if attention is None else beams.coverage + attention,
        )

    def finish_eos(self, beams: _Beams, candidates: _Candidates, step: int) -> None:
        """Finish the candidates that end in EOS and rank among the best k of their sentence."""
        is_eos = (candidates.token == self.eos_id) & torch.isfinite(candidates.log_p)
        is_eos[:, self.k :] = False
        if not bool(is_eos.any()):
            return
        sentence, rank = is_eos.nonzero(as_tuple=True)
        rows = candidates.parent[sentence, rank]
        appended = candidates.token_log_prob[sentence, rank][:, None]
        self.record(
            beams.sentence[sentence],
            torch.cat([beams.tokens[rows], candidates.token[sentence, rank][:, None]], dim=1),
            torch.cat([beams.token_log_probs[rows], appended], dim=1),
            candidates.log_p[sentence, rank],
            None if candidates.coverage is None else candidates.coverage[rows],
            None if beams.src_valid is None else beams.src_valid[rows],
            length=step,
            ended=True,
        )

    def advance(self, beams: _Beams, candidates: _Candidates) -> tuple[_Beams, Tensor]:
        """The best k candidates that do not end in EOS live on; also returns their parents."""
        not_eos = candidates.log_p.masked_fill(candidates.token == self.eos_id, float("-inf"))
        scores, pick = not_eos.topk(self.k, dim=1)  # (n, k)
        parents = candidates.parent.gather(1, pick).view(-1)  # (n * k,)
        token = candidates.token.gather(1, pick).view(-1, 1)
        token_log_prob = candidates.token_log_prob.gather(1, pick).view(-1, 1)
        coverage = None if candidates.coverage is None else candidates.coverage[parents]
        beams = _Beams(
            tokens=torch.cat([beams.tokens[parents], token], dim=1),
            scores=scores.view(-1),
            token_log_probs=torch.cat([beams.token_log_probs[parents], token_log_prob], dim=1),
            coverage=coverage,
            src_valid=beams.src_valid,  # rows of one sentence share their source
            sentence=beams.sentence,
            max_lens=beams.max_lens,
        )
        return beams, parents

    def finish_live(self, beams: _Beams, sentences: Tensor, length: int) -> None:
        """Finish the live hypotheses of `sentences` (bool, per sentence) as they stand."""
        rows = sentences.repeat_interleave(self.k) & torch.isfinite(beams.scores)
        self.record(
            beams.sentence.repeat_interleave(self.k)[rows],
            beams.tokens[rows],
            beams.token_log_probs[rows],
            beams.scores[rows],
            None if beams.coverage is None else beams.coverage[rows],
            None if beams.src_valid is None else beams.src_valid[rows],
            length=length,
            ended=False,
        )

    def record(
        self,
        sentence: Tensor,
        tokens: Tensor,
        token_log_probs: Tensor,
        log_p: Tensor,
        coverage: Tensor | None,
        src_valid: Tensor | None,
        *,
        length: int,
        ended: bool,
    ) -> None:
        """Add finished hypotheses (one per row) to their sentences' lists, kept best first."""
        scores = log_p / length_penalty(length, self.alpha)
        if coverage is not None:
            scores = scores + coverage_penalty(coverage, src_valid, self.beta)
        for i, out, lps, lp, score in zip(
            sentence.tolist(),
            tokens[:, self.start_len :].tolist(),
            token_log_probs.tolist(),
            log_p.tolist(),
            scores.tolist(),
            strict=True,
        ):
            hyps = self.finished[i]
            hyps.append(Hypothesis(out, score, lp, lps, finished=ended))
            hyps.sort(key=lambda h: -h.score)  # stable: ties keep the order found
            if len(hyps) >= self.n_best:
                self.threshold[i] = hyps[self.n_best - 1].score

    def cannot_improve(self, beams: _Beams, step: int) -> Tensor:
        """Per sentence, whether no live hypothesis can beat its `n_best`-th finished one.

        The live log P s (<= 0, best on row 0 of each sentence) can only fall; divided by the
        largest length penalty among the lengths still allowed, step + 1 .. max_len, it bounds
        every score the sentence's live hypotheses can reach (cp <= 0 can only lower them).
        """
        best_live = beams.scores.view(-1, self.k)[:, 0]
        at_max_len = length_penalty(beams.max_lens.double(), self.alpha)
        largest_lp = at_max_len.clamp(min=length_penalty(step + 1.0, self.alpha))
        largest_lp = largest_lp.to(best_live.dtype)
        return best_live / largest_lp <= self.threshold[beams.sentence]

    def rows_of(self, sentences: Tensor) -> Tensor:
        """The k rows of each of `sentences` (positions among the live sentences)."""
        within = torch.arange(self.k, device=sentences.device)
        return (sentences[:, None] * self.k + within).view(-1)
