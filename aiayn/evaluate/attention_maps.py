"""Attention maps: the weights of every head (§3.2.2) of the encoder's self-attention, the
decoder's masked self-attention and the encoder-decoder attention (§3.2.3) for one sentence,
and PNG heatmaps of them with the subword pieces on the axes (matplotlib, imported lazily).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from aiayn.model.attention import MultiHeadAttention, keeping_weights
from aiayn.model.transformer import LanguageModel, Transformer

KINDS = ("encoder_self", "decoder_self", "cross")


@dataclass
class AttentionMaps:
    """Attention weights of one sentence, (layers, heads, queries, keys) per kind.

    Decoder rows (queries) are labelled with the piece produced at that position, decoder
    self-attention columns (keys) with the decoder input there (BOS, then the output). For a
    decoder-only model only `decoder_self` is set, labelled with the text's pieces.
    """

    source_pieces: list[str]
    """Encoder positions: the source's pieces and EOS."""
    output_pieces: list[str]
    """Decoder positions: the piece produced at each (ending with EOS for translations)."""
    input_pieces: list[str]
    """Decoder positions: the piece read at each (BOS, then the output)."""
    encoder_self: Tensor | None
    decoder_self: Tensor
    cross: Tensor | None

    def plot(
        self,
        out_dir: str | Path,
        *,
        layers: Sequence[int] | None = None,
        heads: Sequence[int] | None = None,
    ) -> list[Path]:
        """Write one PNG per kind and layer, a heatmap per head; returns the files written.

        Args:
            out_dir: Folder for `<kind>-layer<L>.png` (created if missing).
            layers, heads: 0-based indices to draw (negative ones count from the end);
                None draws all.
        """
        return plot_attention(self, out_dir, layers=layers, heads=heads)


@torch.no_grad()
def attention_weights(
    model: Transformer | LanguageModel, src: Tensor | None, tgt_in: Tensor
) -> dict[str, Tensor | None]:
    """Run one teacher-forced pass and collect every head's weights.

    Args:
        model: Either model kind, in eval mode.
        src: (1, src_len) source ids with EOS (None for a decoder-only model).
        tgt_in: (1, tgt_len) decoder input: BOS and the output, or the text for a language model.

    Returns:
        `encoder_self` (layers, heads, src_len, src_len), `decoder_self` (layers, heads,
        tgt_len, tgt_len) and `cross` (layers, heads, tgt_len, src_len); None where the model
        has no such attention.
    """
    groups: dict[str, list[MultiHeadAttention]] = {
        "decoder_self": [layer.self_attn for layer in model.decoder.layers]
    }
    if isinstance(model, Transformer):
        groups["encoder_self"] = [layer.self_attn for layer in model.encoder.layers]
        groups["cross"] = [layer.cross_attn for layer in model.decoder.layers]
    modules = [m for group in groups.values() for m in group]
    with keeping_weights(modules):
        model(src, tgt_in) if isinstance(model, Transformer) else model(tgt_in)
        weights = {kind: torch.cat([m.weights for m in group]) for kind, group in groups.items()}
    return {kind: weights.get(kind) for kind in KINDS}


def plot_attention(
    maps: AttentionMaps,
    out_dir: str | Path,
    *,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
) -> list[Path]:
    """See `AttentionMaps.plot`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for kind in KINDS:
        weights = getattr(maps, kind)
        if weights is None:
            continue
        labels = _axes(maps, kind)
        for layer in _pick(layers, weights.size(0), "layer"):
            chosen = _pick(heads, weights.size(1), "head")
            path = out_dir / f"{kind.replace('_', '-')}-layer{layer}.png"
            title = f"{kind.replace('_', ' ')} layer {layer}"
            _draw(weights[layer, chosen], labels, chosen, title, path)
            written.append(path)
    return written


Labels = tuple[list[str], list[str], str, str]


def _axes(maps: AttentionMaps, kind: str) -> Labels:
    """Row pieces, column pieces, and the two axis names of one kind of map."""
    if kind == "encoder_self":
        return maps.source_pieces, maps.source_pieces, "source (query)", "source (key)"
    if kind == "cross":
        return maps.output_pieces, maps.source_pieces, "output (query)", "source (key)"
    if maps.encoder_self is None:
        return maps.input_pieces, maps.input_pieces, "text (query)", "text (key)"
    return maps.output_pieces, maps.input_pieces, "output (query)", "decoder input (key)"


def _pick(chosen: Sequence[int] | None, count: int, what: str) -> list[int]:
    if chosen is None:
        return list(range(count))
    bad = [i for i in chosen if not -count <= i < count]
    if bad:
        raise ValueError(f"{what} {bad} out of range: the model has {count} (0-based)")
    return [i % count for i in chosen]


def _draw(weights: Tensor, labels: Labels, heads: list[int], title: str, path: Path) -> None:
    """A row of heatmaps, one per head, on one colour scale, saved as a PNG (no pyplot: no GUI,
    no global state)."""
    from matplotlib.figure import Figure

    rows, columns, row_name, column_name = labels
    vmax = float(weights.max())
    n = len(heads)
    cell = 0.28
    width = max(3.0, cell * len(columns) + 1.5)
    height = max(3.0, cell * len(rows) + 1.5)
    figure = Figure(figsize=(width * n, height), layout="constrained")
    panels = figure.subplots(1, n, squeeze=False)[0]
    for i, (axes, head) in enumerate(zip(panels, heads, strict=True)):
        image = axes.imshow(weights[i].float().cpu().numpy(), cmap="viridis", vmin=0, vmax=vmax)
        axes.set_xticks(range(len(columns)), columns, rotation=90, fontsize=8)
        axes.set_yticks(range(len(rows)), rows if i == 0 else [""] * len(rows), fontsize=8)
        axes.set_title(f"{title}, head {head}", fontsize=9)
        axes.set_xlabel(column_name)
        if i == 0:
            axes.set_ylabel(row_name)
    figure.colorbar(image, ax=figure.axes, shrink=0.6)
    figure.savefig(path, dpi=100)
