"""Several trained keypoint models as one: the mean of their predictions, as a single Keras model.

One model rather than a loop over members, so an ensemble is measured (MACs, s/100 images) and used as a
distillation teacher (train.online_augment.dataset) by the same code as any other model.
"""
from __future__ import annotations


def average(models, name: str = "ensemble"):
    import keras
    if len(models) == 1:
        return models[0]
    inp = keras.Input(models[0].input_shape[1:], name="image")
    outs = []
    for i, member in enumerate(models):
        member.name = f"member_{i}"  # two members of one architecture would otherwise clash by name
        member.trainable = False
        outs.append(member(inp, training=False))
    return keras.Model(inp, keras.layers.Average(name="mean")(outs), name=name)
