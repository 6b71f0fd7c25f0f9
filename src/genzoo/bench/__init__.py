"""The leaderboard: every family on the same data, one protocol, one budget, one report.

``genzoo bench`` (:mod:`genzoo.bench.harness`) trains each chosen leaderboard recipe
(:mod:`genzoo.bench.tracks`) under the same wall-clock budget and judges it by its track's
protocol, one resumable cell per (track, row, seed); peers (:mod:`genzoo.bench.peers`) run in
the same harness. ``genzoo bench report`` (:mod:`genzoo.bench.report`) writes
leaderboard.md, leaderboard.csv, the plots and a static HTML report from the cells.

This package sits above ``train/`` and ``eval/``: it imports them, they never import it.
"""
