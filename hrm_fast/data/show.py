"""Browse a built dataset: render one puzzle's pairs in the terminal and/or as an HTML page.

    python -m hrm_fast.data.show DIR --puzzle 007bbfb7              # the original
    python -m hrm_fast.data.show DIR --puzzle 007bbfb7_t1_0645178293 --html puzzle.html
    python -m hrm_fast.data.show DIR --puzzle 1234                  # by numeric identifier
    python -m hrm_fast.data.show DIR --list 007bbfb7                # names starting with a prefix

Rows are shown as stored (augmented, translated); ``--original`` maps them back through the inverse
augmentation. The HTML page uses the canonical ARC palette.
"""

from __future__ import annotations

import argparse
import html
import json
import sys
from pathlib import Path

import numpy as np

from hrm_fast.data.augment import parse_augmented_name
from hrm_fast.data.encode import decode_grid

PALETTE = ("#000000", "#0074D9", "#FF4136", "#2ECC40", "#FFDC00", "#AAAAAA", "#F012BE", "#FF851B", "#7FDBFF", "#870C25")
SPLITS = ("train", "val", "test")


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))


def terminal_grid(grid: np.ndarray, colour: bool = True) -> list[str]:
    """Lines of a grid: two-space cells with 24-bit background colours (or digits without colour)."""
    if grid.size == 0:
        return ["(empty)"]
    lines = []
    for row in grid:
        if colour:
            cells = "".join("\x1b[48;2;{};{};{}m  ".format(*_rgb(PALETTE[c])) for c in row)
            lines.append(cells + "\x1b[0m")
        else:
            lines.append(" ".join(str(c) for c in row))
    return lines


def svg_grid(grid: np.ndarray, cell: int = 16) -> str:
    """An SVG picture of a grid [H, W] in the ARC palette."""
    h, w = grid.shape
    rects = "".join(
        f'<rect x="{c * cell}" y="{r * cell}" width="{cell}" height="{cell}" fill="{PALETTE[v]}" '
        f'stroke="#555" stroke-width="0.5"/>'
        for r in range(h)
        for c, v in enumerate(grid[r])
    )
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="{w * cell}" height="{h * cell}">{rects}</svg>'


def puzzle_pairs(root: Path, identifier: int, original: bool) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """{split: [(input grid, output grid), ...]} of one puzzle identifier, in stored order."""
    names = json.loads((root / "identifiers.json").read_text())
    aug = parse_augmented_name(names[identifier])[1]
    canvas = None
    found = {}
    for split in SPLITS:
        folder = root / split
        if not (folder / "dataset.json").is_file():
            continue
        canvas = int(np.sqrt(json.loads((folder / "dataset.json").read_text())["seq_len"]))
        ids = np.load(folder / "all__puzzle_identifiers.npy")
        positions = np.flatnonzero(ids == identifier)
        if positions.size == 0:
            continue
        offsets = np.load(folder / "all__puzzle_indices.npy")
        inputs = np.load(folder / "all__inputs.npy", mmap_mode="r")
        labels = np.load(folder / "all__labels.npy", mmap_mode="r")
        pairs = []
        for p in positions:
            for row in range(int(offsets[p]), int(offsets[p + 1])):
                grids = (decode_grid(inputs[row], canvas), decode_grid(labels[row], canvas))
                pairs.append(tuple(aug.invert(g) if original and g.size else g for g in grids))
        found[split] = pairs
    return found


def render_html(title: str, found: dict) -> str:
    parts = [f"<h1>{html.escape(title)}</h1>"]
    for split, pairs in found.items():
        parts.append(f"<h2>{split}</h2>")
        for i, (inp, out) in enumerate(pairs):
            parts.append(
                f'<div style="display:flex;gap:24px;align-items:center;margin:8px 0"><b>{i}</b>'
                f"{svg_grid(inp)}<span>&rarr;</span>{svg_grid(out)}</div>"
            )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
        f"<body style='font-family:sans-serif;background:#f4f4f4'>{''.join(parts)}</body></html>\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hrm_fast.data.show", description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", help="dataset folder (with identifiers.json)")
    parser.add_argument("--puzzle", help="puzzle name (task id or augmented name) or numeric identifier")
    parser.add_argument("--list", metavar="PREFIX", help="list puzzle names starting with PREFIX")
    parser.add_argument("--original", action="store_true", help="undo the augmentation before showing")
    parser.add_argument("--html", help="also write an HTML page with the pairs to this file")
    parser.add_argument("--no-colour", action="store_true", help="digits instead of coloured cells")
    a = parser.parse_args(argv)
    root = Path(a.dataset)
    ids_path = root / "identifiers.json"
    if not ids_path.is_file():
        print(f"error: {ids_path}: missing (not a dataset folder?)", file=sys.stderr)
        return 2
    names = json.loads(ids_path.read_text())
    if a.list is not None:
        for i, name in enumerate(names):
            if name.startswith(a.list) and i:
                print(f"{i}\t{name}")
        return 0
    if a.puzzle is None:
        parser.error("give --puzzle or --list")
    if a.puzzle.isdigit() and 0 < int(a.puzzle) < len(names):
        identifier = int(a.puzzle)
    else:
        try:
            identifier = names.index(a.puzzle, 1)
        except ValueError:
            print(f"error: {root}: no puzzle named {a.puzzle!r} (try --list {a.puzzle[:4]})", file=sys.stderr)
            return 2
    found = puzzle_pairs(root, identifier, a.original)
    title = f"{names[identifier]} (identifier {identifier})" + (" de-augmented" if a.original else "")
    print(title)
    for split, pairs in found.items():
        print(f"== {split}: {len(pairs)} pairs")
        for i, (inp, out) in enumerate(pairs):
            left, right = terminal_grid(inp, not a.no_colour), terminal_grid(out, not a.no_colour)
            width = 2 * inp.shape[1] if not a.no_colour else 2 * inp.shape[1] - 1
            print(f"-- pair {i}: {inp.shape[0]}x{inp.shape[1]} -> {out.shape[0]}x{out.shape[1]}")
            for k in range(max(len(left), len(right))):
                lhs = left[k] if k < len(left) else " " * max(width, 0)
                rhs = right[k] if k < len(right) else ""
                print(f"{lhs}   {'->' if k == 0 else '  '}   {rhs}")
    if a.html:
        Path(a.html).write_text(render_html(title, found))
        print(f"wrote {a.html}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
