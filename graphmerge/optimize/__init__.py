"""The bridge between a graph's `optimize` node and the search library (graphmerge/search):

- params.py   what a user writes under an optimize node (objectives share the evaluate node's definitions)
- problem.py  a search space and how a configuration becomes trial nodes (a strategy, or `trial:` template)
- trials.py   one trial: its subgraph run through the executor and cache, then scored
- recipe.py   the standalone graph that rebuilds a chosen model, written next to the search
- scoring.py  models scored on given tasks (the sources' reference lines, held-out scores)
- run.py      a whole search, a fixed configuration, or the check `validate` makes, as declared outputs

The node (graphmerge/nodes/optimize.py) only hands these its context, parameters and inputs, plus the
evaluator it owns; nothing here imports a node module.
"""
