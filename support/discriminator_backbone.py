"""The discriminator's CPU levers on its backbone [ours]: keep only the bottom decoder layers, train only the top ones.

Both are flags of `discriminator.py train` / `ensure` (--keep-layers, --train-layers) and fields of TrainConfig; with
0 they change nothing (the spec's setting: the whole backbone, every parameter trained).
"""
import torch


def keep_bottom_layers(model, n: int):
    """A smaller discriminator: keep only the bottom `n` decoder layers of the backbone (0 = keep all) [ours].

    The final norm and the head stay. Training and RL-time inference both get ~L/n times cheaper; the saved config
    says n layers, so the folder reloads as it was trained.
    """
    layers = model.base_model.layers
    if 0 < n < len(layers):
        model.base_model.layers = torch.nn.ModuleList(list(layers)[:n])
        model.config.num_hidden_layers = n
        if getattr(model.config, "layer_types", None):
            model.config.layer_types = list(model.config.layer_types)[:n]
    return model


def freeze_bottom(model, train_layers: int) -> int:
    """Train only the top `train_layers` decoder layers (+ final norm + head): embeddings and the layers below are
    frozen, so backward stops at the first trainable layer. Returns the number of trainable parameters."""
    if train_layers > 0:
        layers = model.base_model.layers
        for p in model.parameters():
            p.requires_grad_(False)
        for module in list(layers[max(0, len(layers) - train_layers):]) + [model.base_model.norm]:
            for p in module.parameters():
                p.requires_grad_(True)
        head = model.score if hasattr(model, "score") else model.classifier
        for p in head.parameters():
            p.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
