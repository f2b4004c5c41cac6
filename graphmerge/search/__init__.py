"""Search library: search spaces (typed data; ConfigSpace only inside the search), a resumable SMAC
ask/tell driver, reports."""

from .driver import (
    SearchInterrupted,
    SearchResult,
    SmacSettings,
    best_record,
    check_search,
    progress_line,
    run_search,
)
from .records import Objective, TrialOutcome, TrialRecord
from .sampling import sample_configs
from .space import SearchSpace, config_to_dict, validate_config
from .space_yaml import build_space

__all__ = [
    "Objective",
    "SearchInterrupted",
    "SearchResult",
    "SearchSpace",
    "SmacSettings",
    "TrialOutcome",
    "TrialRecord",
    "best_record",
    "check_search",
    "build_space",
    "config_to_dict",
    "progress_line",
    "run_search",
    "sample_configs",
    "validate_config",
]
