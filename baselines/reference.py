"""Reference rows: not LoRA inits, shown beside them in every table."""

from initbench.api import InitMethod


class BaseModel(InitMethod):
    """The base model evaluated with no training: the floor of every table."""

    summary = "Reference floor: the base model evaluated without any fine-tuning."
    is_reference = True
    trains = False
