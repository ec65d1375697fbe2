"""The study built on msflow: its registry of runs, its protocol, its report and the tools that render its book.

msflow (the library) never imports this package. Modules: :mod:`~msflow_study.registry` (run folders, their
records, the experiments and the book's editions), :mod:`~msflow_study.protocol` (readout views chosen on
validation, seed ensembles, generation measurements), :mod:`~msflow_study.baselines` (the ResNet-18 baselines),
:mod:`~msflow_study.report` (tables, prose and ``{run}`` facts), :mod:`~msflow_study.paper` (the published numbers),
:mod:`~msflow_study.selection` (each headline's recipe chosen on validation, and the evidence of every choice),
:mod:`~msflow_study.executor` (papermill), :mod:`~msflow_study.sandbox` (smoke mode), :mod:`~msflow_study.widgets`
(the live explorer), :mod:`~msflow_study.views` (its views without a kernel) and the command line
:mod:`~msflow_study.cli` (``python -m msflow_study``). Importing it gives the study's runs their figure colours
(:data:`COLOURS`).
"""

from msflow import plotting as _plotting

COLOURS = {
    "cpu-lam05": "#009E73", "cpu-lam05-x6": "#CC79A7", "cpu-lam05-x8": "#E69F00", "cpu-w24": "#56B4E9",
    "cpu-lam03": "#8C564B", "cpu-lam03-auc": "#BCBD22", "cpu-lam03-auc-x2": "#9467BD", "cpu-reference": "#17BECF",
    "gpu-long": "#E377C2", "gpu-reference": "#393B79", "gpu-wide": "#AD494A", "cpu-long": "#637939", "cpu-drop": "#843C39",
}
"""The study's recipes and runs in the colours they keep in every figure of the book (added to msflow's own)."""
_plotting.register_colours(COLOURS)
