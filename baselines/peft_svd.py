"""SVD/QR-based inits that peft implements at attach time: OLoRA, MiCA, orthogonal.

* ``olora`` -- Büyükakyüz, "OLoRA: Orthonormal Low-Rank Adaptation of Large Language Models",
  arXiv:2406.01775; code https://github.com/huggingface/peft (``LoraLayer.olora_init``).
  Formula: W = Q R (``torch.linalg.qr``, W of shape (out, in)), B = Q[:, :r], A = R[:r, :],
  W <- W - s B A with s = alpha / r; starts at the base model for any alpha (suite's alpha).
* ``mica`` -- Minor Component Adaptation, arXiv:2604.01694; code peft ``LoraLayer.mica_init`` and
  ``MiCALinearVariant``.  Formula: W = U diag(S) Vh (exact SVD), B = U[:, -r:] (left singular vectors
  of the r smallest singular values), frozen (``requires_grad=False``, only A trains), A = 0; the base
  is not changed.  Suite's alpha.
* ``orthogonal`` -- https://datta0.github.io/posts/rethink-lora-init/ ; code peft
  ``LoraLayer.orthogonal_init``.  Formula: Q from ``qr(X)``, X ~ N(0, 1)^{r x r} (Q orthogonal);
  A = (G_A Q[0::2])^T / 10 with G_A ~ N(0, 1)^{in x r/2}; B = G_B^T Q[1::2] / 10 with
  G_B ~ N(0, 1)^{r/2 x out}.  Both factors are non-zero, yet
  B A = G_B^T (Q[1::2] Q[0::2]^T) G_A^T / 100 = 0, because distinct rows of an orthogonal matrix are
  orthogonal: the model starts at the base model up to float rounding.  Needs an even rank; suite's alpha.
"""

from initbench.api import InitMethod


class OLoRA(InitMethod):
    summary = "QR of W: B = Q[:, :r], A = R[:r], base replaced by W - sBA (peft 'olora')."
    paper = "Büyükakyüz 2024, arXiv:2406.01775"
    code = "https://github.com/huggingface/peft (init_lora_weights='olora')"
    peft_init = "olora"


class MiCA(InitMethod):
    summary = "B = U[:, -r:] (minor left singular vectors) frozen, A = 0; only A trains (peft 'mica')."
    paper = "MiCA: Minor Component Adaptation, arXiv:2604.01694"
    code = "https://github.com/huggingface/peft (init_lora_weights='mica')"
    peft_init = "mica"


class Orthogonal(InitMethod):
    summary = "A, B from the odd/even rows of a random orthogonal r x r matrix, /10 (peft 'orthogonal')."
    paper = "https://datta0.github.io/posts/rethink-lora-init/"
    code = "https://github.com/huggingface/peft (init_lora_weights='orthogonal')"
    peft_init = "orthogonal"
