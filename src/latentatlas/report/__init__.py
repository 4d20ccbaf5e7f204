"""Figures and reports: the only place in the package that draws.

Submodules: ``flows`` (a trained flow against its data), ``atlas`` (the atlas figures and
``write_report``, the report of any run folder), ``images`` (image strips, phase maps and zooms of
image generators), ``interactive`` (the self-contained interactive page ``report/index.html``,
with its script in ``static/atlas.js``). The report reads run folders only (numpy and json).
"""
