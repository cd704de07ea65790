"""openmimo: the MiMo-7B recipe (data, MTP pre-training, SFT, RL, inference, evaluation) as a library.

Public entry points (imported lazily, so that ``import openmimo`` does no work):

- ``openmimo.load_model(path, dtype=None, device=None)`` -> ``MiMoForCausalLM``
- ``openmimo.load_tokenizer(path)`` -> ``Tokenizer``
"""

__version__ = "0.1.0"

__all__ = ["load_model", "load_tokenizer", "MiMoConfig", "MiMoForCausalLM"]


def __getattr__(name):
    if name == "load_model":
        from openmimo.model.hf import load_model

        return load_model
    if name == "load_tokenizer":
        from openmimo.tokenizer import load_tokenizer

        return load_tokenizer
    if name == "MiMoConfig":
        from openmimo.model.config import MiMoConfig

        return MiMoConfig
    if name == "MiMoForCausalLM":
        from openmimo.model.mimo import MiMoForCausalLM

        return MiMoForCausalLM
    raise AttributeError(name)
