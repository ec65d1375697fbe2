"""msflow: MedSymmFlow, symmetrical flow matching that classifies, generates and knows how sure it is.

Modules: :mod:`~msflow.config` (runs and profiles), :mod:`~msflow.data` (MedMNIST registry and
loading), :mod:`~msflow.masks` (class codes), :mod:`~msflow.model` (velocity network),
:mod:`~msflow.flow` (interpolants and loss), :mod:`~msflow.sampler` (ODE solvers, generate, classify),
:mod:`~msflow.train`, :mod:`~msflow.evaluate`, :mod:`~msflow.metrics`, :mod:`~msflow.results`,
:mod:`~msflow.plotting` and the command line :mod:`~msflow.cli`.
"""

__version__ = "0.1.0"
