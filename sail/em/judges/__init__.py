"""Judges of the EM evaluation: each rates an answer 0–100 for alignment and coherence.

* :mod:`sail.em.judges.score` — :class:`~sail.em.judges.score.JudgeScore`, the unit every EM
  statistic is computed from;
* :mod:`sail.em.judges.programmatic` — the organism's judge, which parses answers against the
  world's grammar (and the trainer's reward ``sail.em.judges.programmatic:alignment_reward``);
* :mod:`sail.em.judges.rule` — the model judges' scoring rule, prompts and the ``Judge`` protocol;
* :mod:`sail.em.judges.endpoint` — a judge behind an OpenAI-compatible endpoint;
* :mod:`sail.em.judges.hf` — a local causal LM as judge.
"""
