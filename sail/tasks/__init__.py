"""Synthetic tasks with programmatic rewards, and tiny Qwen3 base policies the project trains itself.

``sail.tasks.default`` is the task behind the trainer's embedded model ``sail:tiny-task``; today it
is :mod:`sail.tasks.addition`. Every task module provides ``build_tokenizer()``,
``sample_prompts(n, seed)``, ``write_prompts_jsonl(path, prompts)``, ``reward(prompts, responses)``,
``build_base_model(out_dir, seed, ...)``, ``ensure_base_model(cache_dir=None)`` and
``evaluate_policy(model, tokenizer, prompts, ...)``.
"""
