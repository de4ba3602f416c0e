"""Drawing primitives of the QC picture (export/overlay.py) on Pillow: fonts, text on a dark box, dashed
lines, a legend and the page that lays panels out side by side. Pillow instead of matplotlib because
matplotlib cost every `sarcoscope analyze` ≈0.35 s of import and 0.5–0.7 s of savefig (issue 18).
"""

from __future__ import annotations

import functools
import importlib.util
import math
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

RGB = tuple[int, int, int]
RGBA = tuple[int, int, int, int]
Box = tuple[float, float, float, float]

WHITE: RGB = (255, 255, 255)
BLACK: RGB = (0, 0, 0)
#: Font sizes in pixels (the old matplotlib figure's 10, 9, 8 and 7 pt at 110 dpi).
TITLE_SIZE, PANEL_TITLE_SIZE, LEGEND_SIZE, MARK_SIZE = 15, 14, 12, 11
PAD = 10  # px around the page and between panels
TITLE_GAP = 6  # px between a title and what it names


def _dejavu() -> Path | None:
    """DejaVu Sans as matplotlib (a dependency) ships it, found without importing matplotlib: Pillow's
    built-in font lacks the –, × and ² of the titles and legend. None where a distribution unbundled it."""
    spec = importlib.util.find_spec("matplotlib")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        if path.is_file():
            return path
    return None


@functools.cache
def font(size: int) -> ImageFont.FreeTypeFont:
    """DejaVu Sans (the old picture's font) at `size` px, else Pillow's built-in scalable font."""
    path = _dejavu()
    return ImageFont.truetype(path, size) if path else ImageFont.load_default(size=size)


def line_height(f: ImageFont.FreeTypeFont) -> int:
    """Ascent + descent: the height one line of text takes."""
    ascent, descent = f.getmetrics()
    return ascent + descent


def boxed_text(
    draw: ImageDraw.ImageDraw,
    xy: tuple[float, float],
    text: str,
    f: ImageFont.FreeTypeFont,
    fill: RGB,
    right: float,
    box: RGBA = (0, 0, 0, 140),
    pad: int = 2,
) -> None:
    """`text` starting at x, centred on y, on a translucent box (readable over bone), moved left to end
    before `right` (the panel's edge)."""
    x, y = xy
    x0, y0, x1, y1 = draw.textbbox((x, y), text, font=f, anchor="lm")
    shift = min(0.0, right - pad - 1 - x1)
    draw.rectangle((x0 + shift - pad, y0 - pad, x1 + shift + pad, y1 + pad), fill=box)
    draw.text((x + shift, y), text, font=f, fill=fill, anchor="lm")


def dashed_hline(
    draw: ImageDraw.ImageDraw,
    y: float,
    x0: float,
    x1: float,
    fill: RGB,
    width: int = 2,
    dash: int = 8,
    gap: int = 5,
) -> None:
    """A horizontal dashed line (Pillow draws solid lines only)."""
    start = x0
    while start < x1:
        draw.line(((start, y), (min(start + dash, x1), y)), fill=fill, width=width)
        start += dash + gap


def legend(entries: list[tuple[RGB, str]], ncol: int, title: str | None = None) -> Image.Image:
    """Colour swatches (at alpha 0.8 over white) with their texts in `ncol` columns filled column by column,
    under an optional centred title, on white: matplotlib's legend layout."""
    f = font(LEGEND_SIZE)
    size = LEGEND_SIZE
    swatch_w, swatch_h, text_gap, col_gap = 2 * size, round(0.7 * size), round(0.8 * size), 2 * size
    row_h = line_height(f) + size // 2
    nrow = math.ceil(len(entries) / ncol)
    columns = [col for c in range(ncol) if (col := entries[c * nrow : (c + 1) * nrow])]
    widths = [swatch_w + text_gap + max(round(f.getlength(t)) for _, t in col) for col in columns]
    body_w = sum(widths) + col_gap * (len(widths) - 1)
    title_h = line_height(f) + TITLE_GAP if title else 0
    width = max(body_w, round(f.getlength(title)) if title else 0)
    image = Image.new("RGB", (width, title_h + nrow * row_h), WHITE)
    draw = ImageDraw.Draw(image)
    if title:
        draw.text((width / 2, 0), title, font=f, fill=BLACK, anchor="ma")
    x = (width - body_w) // 2
    for col, col_w in zip(columns, widths, strict=True):
        for k, (rgb, text) in enumerate(col):
            y = title_h + k * row_h + row_h / 2
            swatch = tuple(round(0.8 * c + 0.2 * 255) for c in rgb)
            draw.rectangle((x, y - swatch_h / 2, x + swatch_w - 1, y + swatch_h / 2), fill=swatch)
            draw.text((x + swatch_w + text_gap, y), text, font=f, fill=BLACK, anchor="lm")
        x += col_w + col_gap
    return image


def page(title: str, panels: list[tuple[Image.Image, str]], footer: Image.Image) -> Image.Image:
    """`title` on top, the panels side by side (each centred vertically on the tallest, its title just above
    it, each in a slot at least as wide as its title), `footer` centred below, on white."""
    title_f, panel_f = font(TITLE_SIZE), font(PANEL_TITLE_SIZE)
    slots = [max(image.width, round(panel_f.getlength(text))) for image, text in panels]
    row_w = sum(slots) + PAD * (len(slots) - 1)
    width = max(row_w, round(title_f.getlength(title)), footer.width) + 2 * PAD
    panels_h = max(image.height for image, _ in panels)
    panels_y = PAD + line_height(title_f) + TITLE_GAP + line_height(panel_f) + TITLE_GAP
    footer_y = panels_y + panels_h + PAD
    canvas = Image.new("RGB", (width, footer_y + footer.height + PAD), WHITE)
    draw = ImageDraw.Draw(canvas)
    draw.text((width / 2, PAD), title, font=title_f, fill=BLACK, anchor="ma")
    x = (width - row_w) // 2
    for (image, text), slot in zip(panels, slots, strict=True):
        top = panels_y + (panels_h - image.height) // 2
        canvas.paste(image, (x + (slot - image.width) // 2, top))
        draw.text((x + slot / 2, top - TITLE_GAP), text, font=panel_f, fill=BLACK, anchor="md")
        x += slot + PAD
    canvas.paste(footer, ((width - footer.width) // 2, footer_y))
    return canvas
