"""Figures and reports: the only place in the package that draws.

Submodules: ``flows`` (a trained flow against its data), ``atlas`` (the atlas figures and the HTML
report of a run), ``images`` (image strips, phase maps and zooms of image generators).
"""
