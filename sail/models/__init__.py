"""Model construction: tiny Qwen3 networks built locally, and LoRA adapters."""
