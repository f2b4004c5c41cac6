import pytest

from graphmerge.errors import MergeError
from graphmerge.methods import ParamSpec, all_methods, get_method, merge_method

BUILTIN = {
    "linear",
    "slerp",
    "nuslerp",
    "multislerp",
    "karcher",
    "task_arithmetic",
    "ties",
    "dare_linear",
    "dare_ties",
    "breadcrumbs",
    "breadcrumbs_ties",
    "della",
    "della_linear",
    "model_stock",
    "sce",
    "nearswap",
    "passthrough",
}


@merge_method("test_user_mean", version="1", model_params={"w": ParamSpec(1.0)}, base="none")
def user_mean(tensors, base, model_params, params, generator):
    """Plain mean, defined by a user in their own module."""
    return sum(tensors) / len(tensors)


def test_user_method_is_found():
    m = get_method("test_user_mean")
    assert m.fn is user_mean and m.doc == "Plain mean, defined by a user in their own module."
    assert "test_user_mean" in all_methods()


def test_all_builtins_registered_with_docs():
    methods = all_methods()
    assert BUILTIN <= set(methods)
    for name in BUILTIN:
        assert methods[name].doc, name
        assert methods[name].version


def test_unknown_method_suggests():
    with pytest.raises(MergeError, match="did you mean 'ties'"):
        get_method("tie")


def test_stochastic_flags():
    assert {n for n, m in all_methods().items() if m.stochastic} == {
        "dare_linear",
        "dare_ties",
        "della",
        "della_linear",
    }
