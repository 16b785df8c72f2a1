"""Per-frame and per-face maths: detect, track, align, quality gate, best-shot choice, embed (onnxruntime).

Uses the shared vocabulary and ``models`` (weights, execution providers); never a socket, a metric or a watchlist.
"""
