"""
Token shading for the notebooks, matplotlib only: a response drawn token by token, each token a coloured box.

    fig = shade_panels(tokens, [("relevance to c_1", w[0], "relevance"), ("final advantage", A, "signed")])

Layout is a fixed-width grid (monospace font, one cell per character), so it is the same on every machine and
needs no text measuring. A newline inside a token is drawn as "↵" and starts a new line; token boundaries are thin
white gaps. Two kinds of scales:
  "relevance": sequential, 0 .. 1 (w in [0, 1])
  "signed":    diverging, centred on 0, symmetric: blue < 0 < red (rewards, normalised rewards, advantages)
Each panel gets its own colour bar, so a reader can always read values off the figure.
"""
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import Normalize, TwoSlopeNorm
from matplotlib.patches import Rectangle

SIGNED_CMAP = "RdBu_r"      # blue = negative (blamed), red = positive (credited)
RELEVANCE_CMAP = "Purples"
CHAR_W = 0.6                # width of a DejaVu Sans Mono glyph, in units of the font size


def layout(tokens: list, width: int) -> list:
    """[(line, column, text)] for every token, wrapping at `width` characters (a token never straddles two lines
    unless it is longer than a line)."""
    out, line, col = [], 0, 0
    for tok in tokens:
        text = tok.replace("\t", " ").replace("\r", "")
        newlines = text.count("\n")
        text = text.replace("\n", "↵")
        if col > 0 and col + len(text) > width:
            line, col = line + 1, 0
        out.append((line, col, text[:width]))
        col += max(len(text[:width]), 1)
        if newlines:
            line, col = line + 1, 0         # a blank line is shown as ↵↵, not as empty space
    return out


def make_norm(kind: str, values, vmax: float | None = None):
    if kind == "relevance":
        return Normalize(0.0, 1.0), RELEVANCE_CMAP
    m = vmax if vmax is not None else float(np.nanmax(np.abs(values))) if len(values) else 1.0
    m = m if m > 0 else 1.0
    return TwoSlopeNorm(0.0, -m, m), SIGNED_CMAP


def draw_tokens(ax, tokens: list, values, cmap, norm, width: int, fontsize: float) -> None:
    """Draw `tokens` on `ax`, each on a box coloured cmap(norm(value)); the axes becomes the character grid
    (x: one unit per character, y: one unit per line)."""
    cmap = plt.get_cmap(cmap)
    cells = layout(tokens, width)
    n_lines = (cells[-1][0] + 1) if cells else 1
    ax.set_xlim(0, width)
    ax.set_ylim(n_lines, 0)
    ax.set_axis_off()
    for (line, col, text), v in zip(cells, values):
        rgba = cmap(norm(float(v)))
        ax.add_patch(Rectangle((col + 0.06, line + 0.05), max(len(text), 1) - 0.12, 0.9, facecolor=rgba,
                               edgecolor="none"))
        lum = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2]
        ax.text(col, line + 0.5, text, family="monospace", fontsize=fontsize, va="center_baseline", ha="left",
                color="white" if lum < 0.45 else "black")


def shade_panels(tokens: list, panels: list, title: str | None = None, width: int = 100, fig_width: float = 11.0,
                 vmax: float | None = None):
    """One figure, one panel per (title, values, kind) in `panels`, each with its own colour bar.

    kind: "relevance" (0..1) or "signed" (centred on 0). `vmax` (optional) shares one symmetric range across all
    signed panels, so that their colours compare; by default each signed panel is scaled to its own max |value|.
    Geometry is computed in inches so that the font fills exactly one character cell.
    """
    n_lines = (layout(tokens, width)[-1][0] + 1) if tokens else 1
    left, cbar_gap, cbar_w, right = 0.1, 0.15, 0.15, 0.55                  # inches
    text_w = fig_width - left - cbar_gap - cbar_w - right
    fontsize = 0.97 * (text_w * 72 / width) / CHAR_W                       # points: one glyph per character cell
    line_h = 1.5 * fontsize / 72                                           # inches per line
    title_h, body_h, sup_h = 0.32, n_lines * line_h, (0.45 if title else 0.1)
    fig_h = sup_h + len(panels) * (title_h + body_h) + 0.1
    fig = plt.figure(figsize=(fig_width, fig_h))
    top = fig_h - sup_h
    for ptitle, values, kind in panels:
        values = np.asarray(values, dtype=float)
        norm, cmap = make_norm(kind, values, vmax if kind == "signed" else None)
        bottom = top - title_h - body_h
        ax = fig.add_axes([left / fig_width, bottom / fig_h, text_w / fig_width, body_h / fig_h])
        cax = fig.add_axes([(left + text_w + cbar_gap) / fig_width, bottom / fig_h, cbar_w / fig_width,
                            body_h / fig_h])
        draw_tokens(ax, tokens, values, cmap, norm, width, fontsize)
        ax.set_title(ptitle, loc="left", fontsize=10, pad=4)
        cb = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), cax=cax)
        cb.ax.tick_params(labelsize=8)
        top = bottom
    if title:
        fig.suptitle(title, fontsize=12, x=left / fig_width, ha="left", y=1 - 0.12 / fig_h, va="top")
    return fig


# ----------------------------------------------------------------------------------------------------------------
# compact PNGs: these figures have few colours, so a 256-colour palette PNG (octree: keeps the colour maps true) looks the same at a third of the size
# (keeps the committed notebooks and docs/figures small)

def png_bytes(fig, dpi: float = 72, colors: int = 256) -> bytes:
    import io

    from PIL import Image
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB").quantize(colors, method=Image.Quantize.FASTOCTREE)
    out = io.BytesIO()
    img.save(out, format="png", optimize=True)
    return out.getvalue()


def save_png(fig, path, dpi: float = 110) -> None:
    from pathlib import Path
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(png_bytes(fig, dpi))


def compact_inline_png(dpi: float = 72) -> None:
    """Show figures in the notebook as palette PNGs (call after `%matplotlib inline`)."""
    from IPython import get_ipython
    from matplotlib.figure import Figure
    get_ipython().display_formatter.formatters["image/png"].for_type(Figure, lambda fig: png_bytes(fig, dpi))
