"""The study built on msflow: its registry of runs, its protocol, its report and the tools that render its book.

msflow (the library) never imports this package. Modules: :mod:`~msflow_study.registry` (run folders, their
records, the experiments and the book's editions), :mod:`~msflow_study.protocol` (readout views chosen on
validation, seed ensembles, generation measurements), :mod:`~msflow_study.baselines` (the ResNet-18 baselines),
:mod:`~msflow_study.report` (tables, prose and ``{run}`` facts), :mod:`~msflow_study.paper` (the published numbers),
:mod:`~msflow_study.executor` (papermill), :mod:`~msflow_study.sandbox` (smoke mode), :mod:`~msflow_study.widgets`
(the explorer) and the command line :mod:`~msflow_study.cli` (``python -m msflow_study``).
"""
