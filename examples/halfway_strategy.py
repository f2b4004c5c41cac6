"""halfway: one weight between two models, a whole search strategy in one file.

graphmerge validate examples/halfway.yaml --plugin examples/halfway_strategy.py
graphmerge run examples/halfway.yaml --plugin examples/halfway_strategy.py
"""

from graphmerge.search.space import Float, SearchSpace
from graphmerge.strategies import StrategySettings, strategy


class HalfwaySettings(StrategySettings):
    pass


def build_space(settings, model_info):
    return SearchSpace((Float("w", 0.0, 1.0, default=0.5),))


def initial_configs(settings, model_info):
    return [{"w": 0.25}]


@strategy("halfway", settings=HalfwaySettings, build_space=build_space, initial_configs=initial_configs)
def trial_nodes(config, settings, model_info):
    a, b = settings.models
    weights = {a: {"weight": config["w"]}, b: {"weight": 1 - config["w"]}}
    return {"model": {"op": "merge", "method": "linear", "models": weights}}
