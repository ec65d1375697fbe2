"""msflow: MedSymmFlow, symmetrical flow matching that classifies, generates and knows how sure it is.

The method and its engine, and nothing of any one study: :mod:`~msflow.config` (run configuration and recipes),
:mod:`~msflow.data` (MedMNIST registry and loading), :mod:`~msflow.codes` (class codes), :mod:`~msflow.model`
(velocity network and its checkpoints), :mod:`~msflow.flow` (interpolants and loss), :mod:`~msflow.sampler` (ODE
solvers, generate, classify), :mod:`~msflow.train`, :mod:`~msflow.evaluate`, :mod:`~msflow.runs` (a run folder),
:mod:`~msflow.latent`, :mod:`~msflow.uncertainty`, :mod:`~msflow.fidelity`, :mod:`~msflow.metrics`,
:mod:`~msflow.files` (file I/O and provenance), :mod:`~msflow.plotting` and the command line :mod:`~msflow.cli`.
"""

__version__ = "0.1.0"
