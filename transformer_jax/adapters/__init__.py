"""Adapters: low-rank (LoRA) fine-tuning of a frozen base, and their exchange with PEFT.

lora.py: the adapters as pure functions over parameter trees (choose, init, merge);
peft.py: PEFT's adapter folders (adapter_config.json + adapter_model.safetensors).
"""
