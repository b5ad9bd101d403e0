"""Reference rows: not LoRA inits, shown beside them in every table."""

from initbench.api import InitMethod


class BaseModel(InitMethod):
    """The base model evaluated with no training: the floor of every table."""

    summary = "Reference floor: the base model evaluated without any fine-tuning."
    is_reference = True
    trains = False


class FullFineTuning(InitMethod):
    """Full fine-tuning under the same budget (steps, batch, tokens, optimizer, learning rate):
    no adapters, every base parameter trains.  The ceiling row of every table."""

    summary = "Reference ceiling: full fine-tuning of every base parameter under the same budget."
    paper = "—"
    code = "initbench harness (attaches_lora = False)"
    is_reference = True
    attaches_lora = False
