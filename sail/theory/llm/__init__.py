"""`sail check llm`: the exact convergence checker on an enumerable tiny Qwen3 (see docs/check_llm.md)."""
