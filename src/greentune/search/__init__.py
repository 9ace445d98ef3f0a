"""Energy-aware hyper-parameter search: ``search(SearchOptions(...))`` runs an Optuna study
whose two objectives are the validation metric and the energy, every trial a run directory
(see ``greentune.search.study``)."""

from greentune.search.space import Dimension, load_space
from greentune.search.study import SearchOptions, SearchResult, TrialRow, search

__all__ = ["Dimension", "SearchOptions", "SearchResult", "TrialRow", "load_space", "search"]
