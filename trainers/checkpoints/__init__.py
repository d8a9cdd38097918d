"""Checkpoint import/export: import_vqgan (taming .ckpt), export_model (release weights), the safe unpickler."""
