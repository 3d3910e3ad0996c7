"""MXNet's checkpoint naming: arg:/aux: prefixes, the role of a bare name, the symbol beside a .params."""

from __future__ import annotations

from mapspec.frameworks.mxnet import params


def test_split_name():
    assert params.split_name("arg:conv0_weight") == ("conv0_weight", "arg")
    assert params.split_name("aux:bn0_moving_var") == ("bn0_moving_var", "aux")
    assert params.split_name("conv0_weight") == ("conv0_weight", None)
    assert params.split_name("other:x") == ("other:x", None)  # only MXNet's two prefixes are split off


def test_role_by_name():
    assert [params.role_by_name(n) for n in ("bn_moving_mean", "bn_moving_var", "bn_running_mean",
                                             "bn_running_var", "bn_gamma", "fc_weight")] == \
        ["aux", "aux", "aux", "aux", "arg", "arg"]


def test_symbol_file_name():
    assert params.symbol_file_name("model-0000.params") == "model-symbol.json"
    assert params.symbol_file_name("my-net-0012.PARAMS") == "my-net-symbol.json"
    assert params.symbol_file_name("model.params") is None
