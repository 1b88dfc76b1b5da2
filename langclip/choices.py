"""The names that training flags choose among, in one module that imports nothing.

`langclip train --help` and the arguments' checks read them here without importing torch; the modules that
implement each name import the same tuple from here.
"""

CONTRASTIVE_LOSSES = ("softmax", "sigmoid")
"""``--contrastive-loss``: the forms of the contrastive loss (`langclip.modeling.losses`)."""

OBJECTIVE_NAMES = ("clip", "multi-positive", "clips", "difference")
"""``--objective``: the training objectives (`langclip.training.objectives.OBJECTIVES`, in this order)."""

TEXT_SAMPLINGS = ("caption", "rewrites")
"""``--text-sampling``: the text each image is paired with (`langclip.training.objectives`)."""

TRAIN_PARTS = ("all", "text", "lora")
"""``--train-parts``: the parameters that train (`langclip.training.methods`)."""
