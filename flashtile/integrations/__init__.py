"""Integrations of flashtile with other libraries.

Each submodule imports its library lazily, so importing ``flashtile`` never
requires them:

- `flashtile.integrations.transformers`: ``register()`` makes
  ``attn_implementation="flashtile"`` available to Hugging Face transformers 5.x
  models.
"""
