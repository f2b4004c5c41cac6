"""Search library: ConfigSpace spaces from YAML dicts, a resumable SMAC ask/tell driver, reports."""

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
from .space import build_space, config_to_dict, validate_config

__all__ = [
    "Objective",
    "SearchInterrupted",
    "SearchResult",
    "SmacSettings",
    "TrialOutcome",
    "TrialRecord",
    "best_record",
    "check_search",
    "build_space",
    "config_to_dict",
    "progress_line",
    "run_search",
    "validate_config",
]
