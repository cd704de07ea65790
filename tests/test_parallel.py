"""What `train.compile` compiles: the whole forward on one device, each block under FSDP2, as the scope says."""

from types import SimpleNamespace

import pytest
import torch

from openmimo.config import ConfigError, load
from openmimo.model.parallel import compile_scope, parallelize
from openmimo.model.mimo import build_model
from openmimo.train.config import PretrainConfig
from tests.test_model import tiny_cfg


def _compiled(module) -> bool:
    return getattr(module, "_compiled_call_impl", None) is not None


def test_auto_scope_is_whole_on_one_device_and_blocks_when_distributed():
    assert compile_scope("auto", distributed=False) == "whole"
    assert compile_scope("auto", distributed=True) == "blocks"
    assert compile_scope("blocks", distributed=False) == "blocks"
    with pytest.raises(ValueError, match="compile_scope"):
        compile_scope("layers", distributed=False)


@pytest.mark.parametrize("scope", ["whole", "blocks"])
def test_parallelize_compiles_what_the_scope_names_and_keeps_parameter_names(scope):
    rt = SimpleNamespace(distributed=False, device=torch.device("cpu"), dtype=torch.float32)
    model = build_model(tiny_cfg(), seed=0)
    names = [n for n, _ in model.named_parameters()]
    model = parallelize(model, rt, compile=True, scope=scope)
    assert _compiled(model) == (scope == "whole")
    assert all(_compiled(b) == (scope == "blocks") for b in list(model.model.layers) + list(model.model.mtp_layers))
    assert [n for n, _ in model.named_parameters()] == names
    assert list(model.state_dict()) == [n for n in build_model(tiny_cfg(), seed=0).state_dict()]


def test_bad_scope_in_a_config_names_the_key():
    with pytest.raises((ConfigError, ValueError), match="compile_scope"):
        load(PretrainConfig, None, ["train.compile_scope=layers"]).train.check()


def test_whole_compiled_forward_gives_the_eager_losses_and_gradients_on_packed_rows():
    rt = SimpleNamespace(distributed=False, device=torch.device("cpu"), dtype=torch.float32)
    torch.manual_seed(0)
    ids = torch.randint(0, 97, (2, 24))
    pos = torch.arange(24).expand(2, 24).clone()
    pos[1, 10:] = torch.arange(14)  # row 1: two documents

    def run(compiled):
        model = build_model(tiny_cfg(), seed=1)
        if compiled:
            model = parallelize(model, rt, compile=True, scope="whole")
        out = model(ids, position_ids=pos, labels=ids)
        (out.loss + 0.3 * sum(out.mtp_losses)).backward()
        return [float(x) for x in out.loss_sums], {n: p.grad for n, p in model.named_parameters()}

    (eager_sums, eager_grads), (comp_sums, comp_grads) = run(False), run(True)
    assert comp_sums == pytest.approx(eager_sums, rel=1e-5)
    for n, g in eager_grads.items():
        torch.testing.assert_close(comp_grads[n], g, rtol=1e-4, atol=1e-6, msg=n)
