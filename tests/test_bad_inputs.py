"""Bad inputs as a new user gives them, through the command line's entry point: each exits with 2
(the input is wrong) or 1 (a failure that is not the input's), writes one line on stderr that names
the key, file or line, and never a traceback.

Each row of :data:`CASES` is (id, command line, exit status, words the error line must hold). In a
command line ``@fx`` is the directory of small bad files (:mod:`bad_input_files`, made once), ``@base``
the tiny model, ``@data`` its prompt files, ``@out`` a fresh directory of the case, and ``@ok`` the
``--set`` overrides and ``--output-dir`` of a one-step run of the tiny model, so that only the
case's own key is wrong. A ``sail train`` case runs one step at most, in ``@out`` (``--set run.steps=1``
goes first, where the case's own ``--set`` wins), so that a case that wrongly passes costs seconds and
leaves nothing behind. Lines a run prints before it fails (``data: …``, the prompts it read) are not
errors and are left out of the count.
"""

import errno
import os
import shlex
from pathlib import Path

import pytest
from bad_input_files import cheap_overrides, make_fixtures, sets
from test_em_judging import KEY, server  # noqa: F401 - the scripted endpoint fixture

from sail.cli import error_status, main
from sail.em.judges.rule import JudgeError, JudgeUnavailable

INFO_PREFIXES = ("data: ",)
"""Lines of a run's start that are not errors."""

CONFIG = [
    # unknown keys, renamed sections
    ("unknown top key", "train --set foo=1", 2, ["'foo'", "unknown key"]),
    ("unknown nested key", "train --set run.stepz=4", 2, ["'run.stepz'", "unknown key"]),
    ("unknown deep nested key", "train --set model.lora.rnk=4", 2, ["'model.lora.rnk'", "unknown key"]),
    ("renamed section", "train --set train.steps=4", 2, ["'train'", "renamed to 'run'"]),
    # wrong types
    ("steps=abc", "train --set run.steps=abc", 2, ["'run.steps'", "integer", "'abc'"]),
    ("steps=2.5", "train --set run.steps=2.5", 2, ["'run.steps'", "integer", "2.5"]),
    ("list for scalar steps", "train --set run.steps=[1,2]", 2, ["'run.steps'", "[1, 2]"]),
    ("list for scalar beta", "train --set objective.beta=[0.1]", 2, ["'objective.beta'", "number"]),
    ("dict for scalar", "train --set 'run.steps={a: 1}'", 2, ["'run.steps'", "integer"]),
    ("scalar for section", "train --set run=5", 2, ["'run'", "mapping"]),
    ("bool as string", "train --set run.progress=yes", 2, ["'run.progress'", "true/false"]),
    ("int for bool", "train --set model.lora.rslora=1", 2, ["'model.lora.rslora'", "true/false"]),
    ("list for string", "train --set model.name_or_path=[a]", 2, ["'model.name_or_path'", "string"]),
    ("number for string", "train --set oracle.path=5", 2, ["'oracle.path'", "string"]),
    ("seed=abc", "train --set run.seed=abc", 2, ["'run.seed'", "integer"]),
    ("optimizer.options not dict", "train --set optimizer.options=5", 2, ["'optimizer.options'", "mapping"]),
    ("optimizer.options a list", "train --set optimizer.options=[1]", 2, ["'optimizer.options'", "mapping"]),
    ("optimizer option bad", "train --set 'optimizer.options={bogus: 1}'", 2, ["'optimizer.options.bogus'", "not an option of adamw"]),
    ("optimizer option bad, no space", "train --set optimizer.options={bogus:1}", 2, ["'optimizer.options.bogus:1'", "not an option"]),
    ("optimizer option of another optimiser", "train --set 'optimizer.options={momentum: 0.9}'", 2, ["'optimizer.options.momentum'", "adamw"]),
    ("optimizer option bad value", "train --set 'optimizer.options={betas: 5}'", 2, ["'optimizer.options'", "adamw"]),
    ("muon option bad value", "train --set optimizer.name=muon --set 'optimizer.options={muon_on: x}'", 2, ["'optimizer.options'", "muon_on"]),
    ("additional rewards not a list", "train --set oracle.additional_rewards=5", 2, ["'oracle.additional_rewards'", "list"]),
    ("additional reward kind", "train --set 'oracle.additional_rewards=[{kind: x}]'", 2, ["'oracle.additional_rewards[0].kind'", "'x'"]),
    ("chat_template_kwargs not a mapping", "train --set data.chat_template_kwargs=5", 2, ["'data.chat_template_kwargs'", "mapping"]),
    # out of range
    ("steps=0", "train --set run.steps=0", 2, ["'run.steps'", ">= 1"]),
    ("batch_size=0", "train --set run.batch_size=0", 2, ["'run.batch_size'", ">= 1"]),
    ("grad_accum=0", "train --set run.grad_accum=0", 2, ["'run.grad_accum'", ">= 1"]),
    ("max_nonfinite=0", "train --set run.max_nonfinite=0", 2, ["'run.max_nonfinite'", ">= 1"]),
    ("max_grad_norm=0", "train --set run.max_grad_norm=0", 2, ["'run.max_grad_norm'", "> 0"]),
    ("epochs=0", "train --set run.epochs=0", 2, ["'run.epochs'", "> 0"]),
    ("ema_decay=1", "train --set run.ema_decay=1", 2, ["'run.ema_decay'", "[0, 1)"]),
    ("logprob_chunk=-1", "train --set run.logprob_chunk=-1", 2, ["'run.logprob_chunk'", ">= 0"]),
    ("save_total_limit=-1", "train --set run.save_total_limit=-1", 2, ["'run.save_total_limit'", ">= 0"]),
    ("completions_per_eval=-1", "train --set run.completions_per_eval=-1", 2, ["'run.completions_per_eval'", ">= 0"]),
    ("seed=-1", "train --set run.seed=-1", 2, ["'run.seed'", ">= 0"]),
    ("seed too big", "train --set run.seed=100000000000000000000", 2, ["'run.seed'"]),
    ("lr=-1", "train --set optimizer.lr=-1", 2, ["'optimizer.lr'", "> 0"]),
    ("lr=nan", "train --set optimizer.lr=nan", 2, ["'optimizer.lr'", "'nan'"]),
    ("lr=.inf", "train --set optimizer.lr=.inf --set model.name_or_path=/nonexistent", 2, ["'optimizer.lr'", "finite"]),
    ("lr=1e400", "train --set optimizer.lr=1e400", 2, ["'optimizer.lr'", "finite"]),
    ("weight_decay=-1", "train --set optimizer.weight_decay=-1", 2, ["'optimizer.weight_decay'", ">= 0"]),
    ("beta=0", "train --set objective.beta=0", 2, ["'objective.beta'", "> 0"]),
    ("beta=.inf", "train --set objective.beta=.inf", 2, ["'objective.beta'", "finite"]),
    ("gamma=-1", "train --set objective.gamma=-1", 2, ["'objective.gamma'", ">= 0"]),
    ("gamma=.inf", "train --set objective.gamma=.inf", 2, ["'objective.gamma'", "finite"]),
    ("radius=0", "train --set objective.radius=0", 2, ["'objective.radius'", "> 0"]),
    ("sampling.temperature=0", "train --set sampling.temperature=0", 2, ["'sampling.temperature'", "> 0"]),
    ("temperature=.inf", "train --set sampling.temperature=.inf", 2, ["'sampling.temperature'", "finite"]),
    ("sampling.top_p=2", "train --set sampling.top_p=2", 2, ["'sampling.top_p'", "(0, 1]"]),
    ("max_new_tokens=0", "train --set sampling.max_new_tokens=0", 2, ["'sampling.max_new_tokens'", ">= 1"]),
    ("compile without fast", "train --set sampling.compile=true --set sampling.engine=hf", 2, ["'sampling.compile'", "fast"]),
    ("lora rank=0", "train --set model.lora.rank=0", 2, ["'model.lora.rank'", ">= 1"]),
    ("lora alpha=-1", "train --set model.lora.alpha=-1", 2, ["'model.lora.alpha'", "> 0"]),
    ("lora dropout=1", "train --set model.lora.dropout=1", 2, ["'model.lora.dropout'", "[0, 1)"]),
    ("lora target string", "train --set model.lora.target_modules=q_proj", 2, ["'model.lora.target_modules'", "list"]),
    ("oracle weight nan", "train --set oracle.weight=.nan", 2, ["'oracle.weight'", "finite"]),
    ("oracle batch_size=0", "train --set oracle.batch_size=0", 2, ["'oracle.batch_size'", ">= 1"]),
    ("oracle max_length=0", "train --set oracle.max_length=0", 2, ["'oracle.max_length'", ">= 1"]),
    ("missing_eos_penalty=-1", "train --set oracle.missing_eos_penalty=-1", 2, ["'oracle.missing_eos_penalty'", ">= 0"]),
    ("routes sum 0.5", "train --set routes.online_oracle=0.5", 2, ["'routes'", "sum to 1"]),
    ("routes negative", "train --set routes.online_oracle=1.5 --set routes.online_self=-0.5", 2, ["'routes.online_self'", ">= 0"]),
    ("routes nan", "train --set routes.online_self=.nan", 2, ["'routes.online_self'", "finite"]),
    ("routes need pairs", "train --set routes.online_oracle=0 --set routes.offline_dpo=1", 2, ["data.pairs"]),
    ("warmup_steps=-1", "train --set schedule.warmup_steps=-1", 2, ["'schedule.warmup_steps'", ">= 0"]),
    ("penalty_weight=-1", "train --set spectral.penalty_weight=-1", 2, ["'spectral.penalty_weight'", ">= 0"]),
    ("renyi_order=1", "train --set spectral.renyi_order=1", 2, ["'spectral.renyi_order'", ">= 2"]),
    ("log_every=-1", "train --set spectral.log_every=-1", 2, ["'spectral.log_every'", ">= 0"]),
    ("n_eval=0", "train --set data.n_eval=0", 2, ["'data.n_eval'", ">= 1"]),
    ("limit=-1", "train --set data.limit=-1", 2, ["'data.limit'", ">= 0"]),
    ("eval_fraction=1", "train --set data.eval_fraction=1", 2, ["'data.eval_fraction'", "[0, 1)"]),
    ("empty split", "train --set data.split=", 2, ["'data.split'"]),
    ("prompts and hf_dataset", "train --set data.prompts=a.jsonl --set data.hf_dataset=b", 2, ["'data.hf_dataset'"]),
    ("penalty on the head", "train --set model.trainable=head --set spectral.penalty_weight=1", 2, ["'spectral.penalty_weight'", "head"]),
    ("fsdp on the head", "train --set model.trainable=head --set run.fsdp=true", 2, ["'run.fsdp'", "head"]),
    # a value outside a Literal's choices
    ("kl_direction=sideways", "train --set objective.kl_direction=sideways", 2, ["'objective.kl_direction'", "'sideways'"]),
    ("kl_estimator=k9", "train --set objective.kl_estimator=k9", 2, ["'objective.kl_estimator'", "'k9'"]),
    ("baseline=median", "train --set objective.baseline=median", 2, ["'objective.baseline'", "'median'"]),
    ("dtype bad", "train --set model.dtype=int8", 2, ["'model.dtype'", "'int8'"]),
    ("trainable bad", "train --set model.trainable=both", 2, ["'model.trainable'", "'both'"]),
    ("reference bad", "train --set model.reference=nope", 2, ["'model.reference'", "'nope'"]),
    ("optimizer.name bad", "train --set optimizer.name=rmsprop", 2, ["'optimizer.name'", "'rmsprop'"]),
    ("sampling.engine bad", "train --set sampling.engine=vllm", 2, ["'sampling.engine'", "'vllm'"]),
    ("mixed_precision bad", "train --set run.mixed_precision=fp8", 2, ["'run.mixed_precision'", "'fp8'"]),
    ("oracle kind bad", "train --set oracle.kind=magic", 2, ["'oracle.kind'", "'magic'"]),
    ("label_mode bad", "train --set oracle.label_mode=maybe", 2, ["'oracle.label_mode'", "'maybe'"]),
    ("oracle dtype bad", "train --set oracle.dtype=int8", 2, ["'oracle.dtype'", "'int8'"]),
    ("schedule bad", "train --set schedule.name=exponential", 2, ["'schedule.name'", "'exponential'"]),
    ("penalty_kind bad", "train --set spectral.penalty_kind=l2", 2, ["'spectral.penalty_kind'", "'l2'"]),
    ("reduction bad", "train --set spectral.reduction=max", 2, ["'spectral.reduction'", "'max'"]),
    ("pair_format bad", "train --set data.pair_format=csv", 2, ["'data.pair_format'", "'csv'"]),
    ("truncate bad", "train --set data.truncate=right", 2, ["'data.truncate'", "'right'"]),
    ("pku_preference bad", "train --set data.pku_preference=worse", 2, ["'data.pku_preference'", "'worse'"]),
    # config files and --set syntax
    ("yaml syntax error", "train --config @fx/bad.yaml", 2, ["'--config'", "bad.yaml", "not valid YAML"]),
    ("yaml tab error", "train --config @fx/tab.yaml", 2, ["'--config'", "tab.yaml", "not valid YAML"]),
    ("yaml not UTF-8", "train --config @fx/nonutf8.yaml", 2, ["'--config'", "nonutf8.yaml", "UTF-8"]),
    ("yaml top-level list", "train --config @fx/list.yaml", 2, ["'--config'", "list.yaml", "mapping"]),
    ("config missing", "train --config @fx/nope.yaml", 2, ["'--config'", "nope.yaml"]),
    ("config is dir", "train --config @fx/empty_dir", 2, ["'--config'", "empty_dir"]),
    ("unknown recipe", "train --config nope-recipe", 2, ["'--config'", "nope-recipe"]),
    ("--set without =", "train --set run.steps", 2, ["'run.steps'", "key=value"]),
    ("--set empty key", "train --set =3", 2, ["'=3'", "empty key"]),
    ("--set conflicting", "train --set run=1 --set run.steps=2", 2, ["'run.steps'", "conflicting"]),
    ("--set bad yaml value", "train --set run.steps=[", 2, ["'run.steps'", "cannot parse"]),
]

MODELS = [
    ("missing model abs path", "train @ok --set model.name_or_path=@fx/nope", 2, ["model.name_or_path", "nope"]),
    ("missing model rel path", "train @ok --set model.name_or_path=./nope_model", 2, ["model.name_or_path", "./nope_model"]),
    ("missing model bare name", "train @ok --set model.name_or_path=nope_model_xyz", 2, ["model.name_or_path", "nope_model_xyz"]),
    ("unknown embedded model", "train @ok --set model.name_or_path=sail:nope", 2, ["model.name_or_path", "sail:nope"]),
    ("model dir is empty", "train @ok --set model.name_or_path=@fx/empty_dir", 2, ["model.name_or_path", "empty_dir"]),
    ("model corrupt config.json", "train @ok --set model.name_or_path=@fx/model_corrupt", 2, ["model.name_or_path", "model_corrupt"]),
    ("model config without model_type", "train @ok --set model.name_or_path=@fx/model_notype", 2, ["model.name_or_path", "model_notype"]),
    ("model missing weights", "train @ok --set model.name_or_path=@fx/model_noweights", 2, ["model.name_or_path", "model_noweights"]),
    ("model truncated weights", "train @ok --set model.name_or_path=@fx/model_badweights", 2,
     ["model.name_or_path", "model_badweights/model.safetensors"]),
    ("model path is a file", "train @ok --set model.name_or_path=@fx/afile", 2, ["model.name_or_path", "afile"]),
    ("lora target bad", "train @ok --set model.lora.target_modules=[nope_proj]", 2, ["model.lora.target_modules", "nope_proj"]),
    ("init_adapter not an adapter", "train @ok --set model.init_adapter=@fx/empty_dir", 2, ["model.init_adapter", "empty_dir"]),
    ("init_adapter of another model", "train @ok --set model.init_adapter=@fx/smoke/checkpoint-2 --set model.name_or_path=@fx/model_narrow", 2,
     ["model.init_adapter", "checkpoint-2"]),
    ("head init_adapter without delta", "train @ok --set model.trainable=head --set model.init_adapter=@fx/empty_dir", 2,
     ["model.init_adapter", "empty_dir"]),
]

DATA = [
    ("prompts malformed line", "train @ok --set data.prompts=@fx/prompts_malformed.jsonl", 2, ["prompts_malformed.jsonl:2", "not valid JSON"]),
    ("prompts empty file", "train @ok --set data.prompts=@fx/prompts_empty.jsonl", 2, ["prompts_empty.jsonl", "no prompts"]),
    ("prompts blank lines only", "train @ok --set data.prompts=@fx/prompts_blank.jsonl", 2, ["prompts_blank.jsonl", "no prompts"]),
    ("prompts wrong keys", "train @ok --set data.prompts=@fx/prompts_wrongkey.jsonl", 2, ["prompts_wrongkey.jsonl:1", "'prompt'"]),
    ("prompts wrong type", "train @ok --set data.prompts=@fx/prompts_wrongtype.jsonl", 2, ["prompts_wrongtype.jsonl:1", "'prompt'"]),
    ("prompts empty string", "train @ok --set data.prompts=@fx/prompts_emptystr.jsonl", 2, ["prompts_emptystr.jsonl:1", "non-empty"]),
    ("prompts JSON array line", "train @ok --set data.prompts=@fx/prompts_array.jsonl", 2, ["prompts_array.jsonl:1", "JSON object"]),
    ("prompts message w/o content", "train @ok --set data.prompts=@fx/prompts_msg.jsonl", 2, ["prompts_msg.jsonl:1", "messages[0]"]),
    ("prompts messages not a list", "train @ok --set data.prompts=@fx/prompts_msgs_notlist.jsonl", 2, ["prompts_msgs_notlist.jsonl:1", "'messages'"]),
    ("prompts only assistant turns", "train @ok --set data.prompts=@fx/prompts_all_assistant.jsonl", 2, ["prompts_all_assistant.jsonl:1", "assistant"]),
    ("prompts non-UTF8", "train @ok --set data.prompts=@fx/prompts_nonutf8.jsonl", 2, ["prompts_nonutf8.jsonl:2", "UTF-8"]),
    ("prompts file missing", "train @ok --set data.prompts=@fx/nope.jsonl", 2, ["data.prompts", "nope.jsonl"]),
    ("prompts is a dir", "train @ok --set data.prompts=@fx/empty_dir", 2, ["cannot load", "empty_dir"]),
    ("prompts unknown file type", "train @ok --set data.prompts=@fx/prompts.txt", 2, ["data.prompts", "prompts.txt"]),
    ("prompts .json malformed", "train @ok --set data.prompts=@fx/prompts.json", 2, ["prompts.json"]),
    ("prompts column missing", "train @ok --set data.prompts=@fx/prompts_wrongkey.jsonl --set data.prompt_column=text", 2,
     ["prompts_wrongkey.jsonl:1", "'text'", "data.prompt_column"]),
    ("eval_prompts malformed", "train @ok --set data.eval_prompts=@fx/prompts_malformed.jsonl", 2, ["prompts_malformed.jsonl:2", "not valid JSON"]),
    ("eval_prompts missing", "train @ok --set data.eval_prompts=@fx/nope.jsonl", 2, ["data.eval_prompts", "nope.jsonl"]),
    ("pairs missing rejected", "train @ok @dpo --set data.pairs=@fx/pairs_norej.jsonl", 2, ["pairs_norej.jsonl:1", "'rejected'"]),
    ("pairs rejected a number", "train @ok @dpo --set data.pairs=@fx/pairs_rejnum.jsonl", 2, ["pairs_rejnum.jsonl:1", "'rejected'"]),
    ("pairs without prompt", "train @ok @dpo --set data.pairs=@fx/pairs_noprompt.jsonl", 2, ["pairs_noprompt.jsonl:1", "'prompt'"]),
    ("pairs empty file", "train @ok @dpo --set data.pairs=@fx/pairs_empty.jsonl", 2, ["pairs_empty.jsonl", "no pairs"]),
    ("pairs missing file", "train @ok @dpo --set data.pairs=@fx/nope.jsonl", 2, ["data.pairs", "nope.jsonl"]),
    ("pairs non-UTF8", "train @ok @dpo --set data.pairs=@fx/pairs_nonutf8.jsonl", 2, ["pairs_nonutf8.jsonl:2", "UTF-8"]),
    ("conversational pair with two replies", "train @ok @dpo --set data.pairs=@fx/pairs_conv_two_replies.jsonl", 2,
     ["pairs_conv_two_replies.jsonl:1", "'chosen'", "one assistant message"]),
    ("conversational pair without prompt", "train @ok @dpo --set data.pairs=@fx/pairs_conv_noprompt.jsonl", 2,
     ["pairs_conv_noprompt.jsonl:1", "no prompt"]),
    ("conversational message w/o content", "train @ok @dpo --set data.pairs=@fx/pairs_conv_badmsg.jsonl", 2,
     ["pairs_conv_badmsg.jsonl:1", "chosen[0]"]),
    ("strings format on conversational pairs", "train @ok @dpo --set data.pairs=@fx/pairs_conv_badmsg.jsonl --set data.pair_format=strings", 2,
     ["pairs_conv_badmsg.jsonl:1", "'chosen'", "pair_format=strings"]),
    ("pku id out of range", "train @ok @dpo --set data.pairs=@fx/pairs_pku_id.jsonl", 2, ["pairs_pku_id.jsonl:1", "'better_response_id'"]),
    ("pku without id", "train @ok @dpo --set data.pairs=@fx/pairs_pku_noid.jsonl --set data.pair_format=pku_safe", 2,
     ["pairs_pku_noid.jsonl:1", "better_response_id"]),
    ("pku response a number", "train @ok @dpo --set data.pairs=@fx/pairs_pku_resp.jsonl", 2, ["pairs_pku_resp.jsonl:1", "'response_0'"]),
]

ORACLES = [
    ("oracle path bad module", "train @ok --set oracle.path=no.such.mod:f", 2, ["oracle.path", "no.such.mod"]),
    ("oracle path no colon", "train @ok --set oracle.path=foo", 2, ["oracle.path", "'foo'"]),
    ("oracle path not callable", "train @ok --set oracle.path=sail.tasks.default:__doc__", 2, ["oracle.path", "not callable"]),
    ("additional reward bad module", "train @ok --set 'oracle.additional_rewards=[{path: no.mod:f}]'", 2,
     ["oracle.additional_rewards[0].path", "no.mod"]),
    ("eval_metrics bad", "train @ok --set run.eval_metrics=os:nope", 2, ["run.eval_metrics", "'nope'"]),
    ("reward model path missing", "train @ok --set oracle.kind=reward_model --set oracle.path=@fx/nope", 2, ["oracle.path", "nope"]),
    ("reward model dir empty", "train @ok --set oracle.kind=reward_model --set oracle.path=@fx/empty_dir", 2, ["oracle.path", "empty_dir"]),
    ("reward model a causal LM", "train @ok --set oracle.kind=reward_model --set oracle.path=@base", 2, ["oracle.path", "not a reward model"]),
    ("reward model corrupt config", "train @ok --set oracle.kind=reward_model --set oracle.path=@fx/model_corrupt", 2,
     ["oracle.path", "model_corrupt"]),
    ("oracle raises", "train @ok --set oracle.path=bad_oracles:raises", 2,
     ["oracle.path (bad_oracles:raises) failed while scoring", "ZeroDivisionError"]),
    ("oracle returns strings", "train @ok --set oracle.path=bad_oracles:strings", 2, ["oracle.path (bad_oracles:strings)", "str", "not a number"]),
    ("oracle returns too few", "train @ok --set oracle.path=bad_oracles:too_few", 2, ["oracle.path (bad_oracles:too_few)", "1 scores for"]),
    ("oracle returns a number", "train @ok --set oracle.path=bad_oracles:number", 2, ["oracle.path (bad_oracles:number)", "float"]),
    ("oracle returns nan", "train @ok --set oracle.path=bad_oracles:nan", 2, ["oracle.path (bad_oracles:nan)", "non-finite"]),
    ("oracle module fails to import", "train @ok --set oracle.path=bad_oracles_broken:f", 2, ["oracle.path", "bad_oracles_broken", "RuntimeError"]),
    ("eval_metrics raises", "train @ok --set run.eval_metrics=bad_oracles:raises", 2, ["run.eval_metrics", "bad_oracles:raises"]),
]

BAD_ORACLES = '''
import math

def raises(prompts, responses):
    return 1 / 0

def strings(prompts, responses):
    return ["good"] * len(responses)

def too_few(prompts, responses):
    return [0.0]

def number(prompts, responses):
    return 1.0

def nan(prompts, responses):
    return [math.nan] * len(responses)
'''

RUNS = [
    ("lr=1e38 overflows in the update", "train @ok --set optimizer.lr=1e38 --set run.steps=3", 1, ["step", "optimizer.lr"]),
    ("lr=1e30 breaks sampling", "train @ok --set optimizer.lr=1e30 --set run.steps=3", 1, ["step", "optimizer.lr"]),
    ("output dir is a file", "train @ok --output-dir @fx/afile", 2, ["afile", "a file"]),
    ("output dir under a file", "train @ok --output-dir @fx/afile/sub", 2, ["--output-dir", "afile"]),
    ("output dir unwritable (/proc)", "train @ok --output-dir /proc/sail_run", 2, ["--output-dir", "/proc/sail_run"]),
    ("output dir not empty", "train @ok --output-dir @fx/nonempty", 2, ["nonempty", "not empty"]),
]

RESUME = [
    ("resume nonexistent", "train --resume @fx/no_such_run", 2, ["'--resume'", "no_such_run"]),
    ("resume plus --config", "train --resume @fx/smoke --config @fx/list.yaml", 2, ["'--resume'", "--config"]),
    ("resume plus --set", "train --resume @fx/smoke --set model.lora.rank=2", 2, ["'model.lora.rank'", "--resume"]),
    ("resume: ckpt rank 8, config rank 4", "train --resume @fx/rz_rank", 2, ["--resume", "rz_rank"]),
    ("resume: config names another model", "train --resume @fx/rz_model", 2, ["--resume", "rz_model"]),
    ("resume: config other target_modules", "train --resume @fx/rz_targets", 2, ["--resume", "rz_targets"]),
    ("resume: config.yaml not YAML", "train --resume @fx/rz_badyaml", 2, ["'--resume'", "rz_badyaml/config.yaml", "not valid YAML"]),
    ("resume: config.yaml not UTF-8", "train --resume @fx/rz_nonutf8", 2, ["'--resume'", "rz_nonutf8/config.yaml", "utf-8"]),
    ("resume: config.yaml lacks 'config'", "train --resume @fx/rz_nokey", 2, ["'--resume'", "rz_nokey/config.yaml", "'config'"]),
    ("resume: config.yaml is a list", "train --resume @fx/rz_yamllist", 2, ["'--resume'", "rz_yamllist/config.yaml"]),
    ("resume: config.yaml from a newer sail", "train --resume @fx/rz_format", 2, ["'--resume'", "rz_format/config.yaml", "99"]),
    ("resume: no config.yaml", "train --resume @fx/rz_noconfig", 2, ["'--resume'", "rz_noconfig/config.yaml"]),
    ("resume: config.yaml unknown key", "train --resume @fx/rz_unknownkey", 2, ["'run.bogus'", "unknown key"]),
    ("resume: config.yaml bad value", "train --resume @fx/rz_badvalue", 2, ["'run.steps'", "'many'"]),
    ("resume: no checkpoint dir", "train --resume @fx/rz_nockpt", 2, ["--resume", "no complete checkpoint", "rz_nockpt"]),
    ("resume: truncated adapter.safetensors", "train --resume @fx/rz_corruptckpt", 2, ["--resume", "rz_corruptckpt", "adapter_model.safetensors"]),
    ("resume: truncated optimizer.pt", "train --resume @fx/rz_corruptopt", 2, ["--resume", "rz_corruptopt", "optimizer.pt"]),
    ("resume: state.json step='x'", "train --resume @fx/rz_badstate", 2, ["--resume", "rz_badstate", "state.json"]),
]

CHECKS = [
    ("check pl malformed", "check pl --instance @fx/inst_malformed.json", 2, ["'--instance'", "inst_malformed.json", "not valid JSON"]),
    ("check pl missing field", "check pl --instance @fx/inst_missing.json", 2, ["'reward'", "required"]),
    ("check pl NaN", "check pl --instance @fx/inst_nan.json", 2, ["'reward[0][0]'", "finite"]),
    ("check pl negative prob", "check pl --instance @fx/inst_negprob.json", 2, ["'context_probs'", "non-negative"]),
    ("check pl probs sum", "check pl --instance @fx/inst_sum.json", 2, ["'context_probs'", "sum to 1"]),
    ("check pl shape mismatch", "check pl --instance @fx/inst_shape.json", 2, ["'theta_ref'", "[2]"]),
    ("check pl ragged", "check pl --instance @fx/inst_ragged.json", 2, ["'features'", "rectangular"]),
    ("check pl beta string", "check pl --instance @fx/inst_betastr.json", 2, ["'beta'", "'1'"]),
    ("check pl beta null", "check pl --instance @fx/inst_betanull.json", 2, ["'beta'", "None"]),
    ("check pl features a string", "check pl --instance @fx/inst_featuresstr.json", 2, ["'features'", "list"]),
    ("check pl empty arrays", "check pl --instance @fx/inst_empty.json", 2, ["'features'", "3 dimensions"]),
    ("check pl one response", "check pl --instance @fx/inst_oneresponse.json", 2, ["'features'", "2 responses"]),
    ("check pl radius 0", "check pl --instance @fx/inst_radius0.json", 2, ["'radius'", "> 0"]),
    ("check pl unknown key", "check pl --instance @fx/inst_unknown.json", 2, ["'extra'", "unknown key"]),
    ("check pl kl is list", "check pl --instance @fx/inst_kllist.json", 2, ["'kl'", "['x']"]),
    ("check pl top-level array", "check pl --instance @fx/inst_array.json", 2, ["'<root>'", "mapping"]),
    ("check pl non-UTF8", "check pl --instance @fx/inst_nonutf8.json", 2, ["'--instance'", "inst_nonutf8.json", "UTF-8"]),
    ("check pl missing file", "check pl --instance @fx/nope.json", 2, ["'--instance'", "nope.json"]),
    ("check pl instance is a dir", "check pl --instance @fx/empty_dir", 2, ["'--instance'", "empty_dir"]),
    ("check pl beta 1e300", "check pl --instance @fx/inst_beta1e300.json", 2, ["'beta'", "1e+300"]),
    ("check pl gamma 1e300", "check pl --instance @fx/inst_gamma1e300.json", 2, ["'gamma'", "1e+300"]),
    ("check pl radius 1e300", "check pl --instance @fx/inst_radius1e300.json", 2, ["'radius'", "1e+300"]),
    ("check pl features 1e300", "check pl --instance @fx/inst_features1e300.json", 2, ["'features'", "1e+300"]),
    ("check pl reward 1e300", "check pl --instance @fx/inst_reward1e300.json", 2, ["'reward'", "1e+300"]),
    ("check pl --beta 1e300", "check pl --beta 1e300", 2, ["'beta'", "1e+300"]),
    ("check pl --gamma -1", "check pl --gamma -1", 2, ["'gamma'", ">= 0"]),
    ("check pl --gamma nan", "check pl --gamma nan", 2, ["'gamma'", "nan"]),
    ("check pl --radius inf", "check pl --radius inf", 2, ["'radius'", "inf"]),
    ("check pl --responses 1", "check pl --responses 1", 2, ["--responses", ">= 2"]),
    ("check pl --samples 0", "check pl --samples 0", 2, ["--samples", ">= 1"]),
    ("check pl --samples -5", "check pl --samples -5", 2, ["--samples", ">= 1"]),
    ("check pl --samples x", "check pl --samples x", 2, ["--samples", "'x'"]),
    ("check pl --kl sideways", "check pl --kl sideways", 2, ["--kl", "sideways"]),
    ("check pl --plot a file", "check pl --contexts 2 --responses 2 --dim 2 --samples 2 --plot @fx/afile", 2, ["--plot", "afile"]),
    ("check eval --theta bad", "check eval --theta '[1,2'", 2, ["'--theta'", "JSON"]),
    ("check eval --theta wrong length", "check eval --theta '[1,2,3]'", 2, ["'--theta'", "4 finite numbers"]),
    ("check eval --theta string", "check eval --theta '\"x\"'", 2, ["'--theta'"]),
    ("check eval --theta nan", "check eval --theta '[NaN,0,0,0]'", 2, ["'--theta'", "finite"]),
    ("check gamma-scan --contexts 0", "check gamma-scan --contexts 0", 2, ["--contexts", ">= 1"]),
    ("check gamma-scan --dim x", "check gamma-scan --dim x", 2, ["--dim", "'x'"]),
    ("check gamma-scan --beta 0", "check gamma-scan --beta 0", 2, ["'beta'", "> 0"]),
    ("check sc --replicas 0", "check sample-complexity --replicas 0", 2, ["--replicas", ">= 1"]),
    ("check sc --seeds 0", "check sample-complexity --seeds 0", 2, ["--seeds", ">= 1"]),
    ("check sc --eps-fractions 2", "check sample-complexity --eps-fractions 2", 2, ["--eps-fractions", "(0, 1)"]),
    ("check sc --eps-fractions x", "check sample-complexity --eps-fractions x", 2, ["--eps-fractions", "comma-separated numbers"]),
    ("check sc --batch-sizes 0", "check sample-complexity --batch-sizes 0", 2, ["--batch-sizes", ">= 1"]),
    ("check sc --batch-sizes 1,a", "check sample-complexity --batch-sizes 1,a", 2, ["--batch-sizes", "'1,a'"]),
    ("check all --radius -1", "check all --radius -1", 2, ["'radius'", "> 0"]),
    ("check kl-estimators --seed x", "check kl-estimators --seed x", 2, ["--seed", "'x'"]),
    ("check llm --gamma -1", "check llm --gamma -1", 2, ["--gamma", ">= 0"]),
    ("check llm --radius 0", "check llm --radius 0", 2, ["--radius", "> 0"]),
    ("check llm --kl-direction", "check llm --kl-direction sideways", 2, ["--kl-direction", "'sideways'"]),
    ("check llm --parametrisation", "check llm --parametrisation nope", 2, ["--parametrisation", "'nope'"]),
    ("check llm --samples 0", "check llm --samples 0", 2, ["--samples", ">= 1"]),
    ("check llm --seed x", "check llm --seed x", 2, ["--seed", "'x'"]),
    ("check llm --gamma 1e300", "check llm --gamma 1e300", 2, ["--gamma", "1e+300"]),
    ("check llm --save a file", "check llm --save @fx/afile", 2, ["--save", "afile"]),
    ("check without a checker", "check", 2, ["sail check", "CHECK"]),
    ("check unknown checker", "check nope", 2, ["sail check", "'nope'"]),
]

STUDIES = [
    ("study em unknown key", "study em --config @fx/study_unknown.yaml --output-dir @out", 2, ["'bogus'", "unknown key"]),
    ("study em unknown nested", "study em --config @fx/study_nested.yaml --output-dir @out", 2, ["'sweep.bogus'", "unknown key"]),
    ("study em bad recipe", "study em --config @fx/study_recipe.yaml --output-dir @out", 2, ["'finetune.stepz'", "unknown key"]),
    ("study em scalar for list", "study em --config @fx/study_scalar.yaml --output-dir @out", 2, ["'organism.recipe'", "'huge'"]),
    ("study em bad optimizer", "study em --config @fx/study_opt.yaml --output-dir @out", 2, ["'sweep.optimizers'", "list"]),
    ("study em missing lrs", "study em --config @fx/study_lrs.yaml --output-dir @out", 2, ["'sweep.lrs'", "'sgd'"]),
    ("study em missing config", "study em --config @fx/nope.yaml --output-dir @out", 2, ["'--config'", "nope.yaml"]),
    ("study em organism path missing", "study em --set organism.path=@fx/nope --output-dir @out", 2, ["organism.path", "nope"]),
    ("study em judge without model", "study em --set finetune.eval.judge.kind=openai --output-dir @out", 2,
     ["'finetune.eval.judge.model'", "openai"]),
    ("study realign --set bad", "study realign --set train.run.bogus=1 --output-dir @out", 2, ["'train.run.bogus'", "unknown key"]),
    ("study realign bad value", "study realign --set train.objective.beta=-1 --output-dir @out", 2, ["'train.objective.beta'", "> 0"]),
]

OTHERS = [
    ("no command", "", 2, ["sail", "COMMAND"]),
    ("unknown command", "nope", 2, ["sail", "'nope'"]),
    ("--debug without a command", "--debug", 2, ["sail", "COMMAND"]),
    ("export not a run", "export @fx/empty_dir --output @out/x", 2, ["empty_dir/config.yaml", "not a sail run directory"]),
    ("export missing run", "export @fx/no_run --output @out/x", 2, ["no_run"]),
    ("export bad config", "export @fx/rz_badyaml --output @out/x", 2, ["'RUN'", "rz_badyaml/config.yaml"]),
    ("export no such checkpoint", "export @fx/smoke --checkpoint 99 --output @out/x", 2, ["checkpoint of step 99", "1, 2"]),
    ("export --checkpoint x", "export @fx/smoke --checkpoint x --output @out/x", 2, ["--checkpoint", "'x'"]),
    ("export without --output", "export @fx/smoke", 2, ["--output", "required"]),
    ("export output is a file", "export @fx/smoke --output @fx/afile", 2, ["'--output'", "afile", "file"]),
    ("export output not empty", "export @fx/smoke --output @fx/nonempty", 2, ["'--output'", "nonempty", "--force"]),
    ("export output is the run", "export @fx/smoke --output @fx/smoke", 2, ["'--output'", "smoke"]),
    ("export output under a file", "export @fx/smoke --output @fx/afile/x", 2, ["'--output'", "afile"]),
    ("export nothing to export", "export @fx/rz_noadapter --output @out/x", 2, ["rz_noadapter", "adapter"]),
    ("export truncated checkpoint", "export @fx/rz_corruptckpt --checkpoint 2 --output @out/x", 2, ["rz_corruptckpt", "adapter_model.safetensors"]),
    ("plot missing run", "plot @fx/no_run", 2, ["no_run", "no such directory"]),
    ("plot empty dir", "plot @fx/empty_dir", 2, ["empty_dir", "metrics.jsonl"]),
    ("plot malformed metrics", "plot @fx/rz_badmetrics", 2, ["rz_badmetrics/metrics.jsonl:2"]),
    ("plot metrics without evaluations", "plot @fx/rz_noeval", 2, ["rz_noeval", "no evaluation"]),
    ("plot output under a file", "plot @fx/smoke --output @fx/afile/m.png", 2, ["'--output'", "afile"]),
    ("plot without a run", "plot", 2, ["RUN"]),
    ("build unknown model", "build nope", 2, ["sail build", "'nope'"]),
    ("build --seed x", "build organism --seed x", 2, ["--seed", "'x'"]),
    ("build cache under a file", "build organism --cache-dir @fx/afile", 2, ["afile"]),
    ("bench unknown benchmark", "bench nope", 2, ["sail bench", "'nope'"]),
    ("bench --batch x", "bench sample --batch x", 2, ["--batch", "'x'"]),
    ("bench --batch 0", "bench sample --batch 0", 2, ["--batch", ">= 1"]),
    ("bench --device nope", "bench sample --device nope", 2, ["--device", "'nope'"]),
    ("bench --threads -1", "bench loop --threads -1", 2, ["--threads", ">= 0"]),
    ("bench logprob --response-len 0", "bench logprob --response-len 0", 2, ["--response-len", ">= 1"]),
    ("proofs unknown lemma", "proofs --only nope", 2, ["'nope'", "lemma"]),
]

CASES = CONFIG + MODELS + DATA + ORACLES + RUNS + RESUME + CHECKS + STUDIES + OTHERS


@pytest.fixture(scope="session")
def smoke_run(base_dir, prompt_files, tmp_path_factory):
    """A finished two-step run of the tiny model with a checkpoint after each step."""
    run = tmp_path_factory.mktemp("smoke") / "run"
    argv = ["train", *sets(cheap_overrides(base_dir, prompt_files, "run.steps=2", "run.eval_every=2")), "--output-dir", str(run)]
    assert main(argv) == 0
    return run


@pytest.fixture(scope="session")
def fixtures(base_dir, smoke_run, tmp_path_factory):
    return make_fixtures(tmp_path_factory.mktemp("fixtures") / "fx", base_dir, smoke_run)


@pytest.fixture()
def oracles(tmp_path, monkeypatch):
    """Importable modules of bad oracles: ``bad_oracles`` and ``bad_oracles_broken`` (fails on import)."""
    (tmp_path / "bad_oracles.py").write_text(BAD_ORACLES)
    (tmp_path / "bad_oracles_broken.py").write_text("raise RuntimeError('the module is broken')\n")
    monkeypatch.syspath_prepend(str(tmp_path))


def expand(command: str, fx: Path, base_dir: Path, prompt_files: Path, out: Path) -> list[str]:
    """The argument list of a case's command line (module docstring)."""
    argv = []
    for token in shlex.split(command):
        if token == "@ok":
            argv += [*sets(cheap_overrides(base_dir, prompt_files)), "--output-dir", str(out / "run")]
        elif token == "@dpo":
            argv += sets(["routes.online_oracle=0", "routes.offline_dpo=1"])
        else:
            argv.append(token.replace("@fx", str(fx)).replace("@base", str(base_dir)).replace("@data", str(prompt_files)).replace("@out", str(out)))
    if argv[:1] == ["train"] and "--resume" not in argv:  # a case that wrongly passes trains one step, in out
        argv[1:1] = ["--set", "run.steps=1"]
        argv += [] if "--output-dir" in argv else ["--output-dir", str(out / "run")]
    return argv


def run_cli(capsys, argv: list[str]) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``sail ARGV``, argparse's exits included."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_line(code: int, out: str, err: str, expected: int, words) -> str:
    """The one error line of a failed command, checked against the case."""
    assert "Traceback" not in out + err, err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(INFO_PREFIXES)]
    assert code == expected, f"exit {code}, expected {expected}: {err}"
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    line = lines[0]
    assert line.startswith("sail") and ": error: " in line, line
    for word in words:
        assert word in line, f"{word!r} not in: {line}"
    return line


@pytest.mark.parametrize("name, command, expected, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input(name, command, expected, words, fixtures, base_dir, prompt_files, tmp_path, capsys, monkeypatch, oracles):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a name that is no directory is looked up in the hub cache only
    monkeypatch.delenv("SAIL_DEBUG", raising=False)
    argv = expand(command, fixtures, base_dir, prompt_files, tmp_path)
    error_line(*run_cli(capsys, argv), expected, words)


def test_the_cases_are_many_and_distinct():
    assert len(CASES) >= 150
    assert len({c[0] for c in CASES}) == len(CASES)
    assert len({c[1] for c in CASES}) == len(CASES)


# --- what the table cannot say: the file system, the network, the environment --------------------


def _refuse(monkeypatch, err: int, below: Path) -> None:
    """``Path.mkdir`` fails with ``err`` for every path under ``below``."""
    mkdir = Path.mkdir

    def refusing(self, *args, **kwargs):
        if str(self).startswith(str(below)):
            raise OSError(err, os.strerror(err), str(self))
        return mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refusing)


@pytest.mark.parametrize("err", [errno.EROFS, errno.EACCES])
def test_output_dir_that_cannot_be_made(err, base_dir, prompt_files, tmp_path, capsys, monkeypatch):
    (tmp_path / "ro").mkdir()  # where a read-only file system, or one not ours, is mounted
    _refuse(monkeypatch, err, tmp_path / "ro")
    argv = expand("train @ok --output-dir @out/ro/run", tmp_path, base_dir, prompt_files, tmp_path)
    error_line(*run_cli(capsys, argv), 2, ["--output-dir", "ro/run", os.strerror(err)])
    assert list((tmp_path / "ro").iterdir()) == []


def test_a_full_disk_at_the_first_save_is_exit_1_and_leaves_no_checkpoint(base_dir, prompt_files, tmp_path, capsys, monkeypatch):
    import torch

    def full(obj, f, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full)
    argv = expand("train @ok --output-dir @out/run", tmp_path, base_dir, prompt_files, tmp_path)
    line = error_line(*run_cli(capsys, argv), 1, ["No space left on device", "checkpoint-1"])
    assert str(tmp_path / "run") in line
    monkeypatch.undo()
    from sail.train.checkpoint import list_checkpoints

    assert list_checkpoints(tmp_path / "run") == []  # the half-written one is not a checkpoint
    error_line(*run_cli(capsys, ["train", "--resume", str(tmp_path / "run")]), 2, ["no complete checkpoint"])


def test_a_truncated_newest_checkpoint_falls_back_to_the_one_before(fixtures, capsys):
    code, _, err = run_cli(capsys, ["train", "--resume", str(fixtures / "rz_newest_corrupt"), "--set", "run.steps=3"])
    assert code == 0, err
    assert "Traceback" not in err
    assert "checkpoint-2" in err and "adapter_model.safetensors" in err  # said why it was skipped


def _judged_study(base_dir, out, *judge) -> list[str]:
    overrides = [
        f"organism.path={base_dir}", "em_protocol=false", "sweep.optimizers=[adamw]", "sweep.lrs={adamw: [0.001]}",
        "sweep.spectral_coefs=[0]", "finetune.steps=1", "finetune.batch_size=2", "finetune.n_examples=2",
        "finetune.heldout_examples=0", "finetune.eval.n_samples=1", "finetune.eval.max_new_tokens=2",
        "finetune.eval.questions=[hi]", "finetune.eval.judge.kind=openai", "finetune.eval.judge.model=judge", *judge,
    ]
    return ["study", "em", "--quiet", "--output-dir", str(out), *sets(overrides)]


def test_judge_key_variable_unset(base_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SAIL_TEST_JUDGE_KEY", raising=False)
    argv = _judged_study(base_dir, tmp_path / "study", "finetune.eval.judge.api_key_env=SAIL_TEST_JUDGE_KEY")
    error_line(*run_cli(capsys, argv), 2, ["SAIL_TEST_JUDGE_KEY", "not set"])


def test_judge_endpoint_rejects_the_key(base_dir, tmp_path, capsys, server):  # noqa: F811 - the fixture
    """A local endpoint (``server``: http.server on 127.0.0.1, the key in ``EM_JUDGE_KEY``) answers 401."""
    server.replies = lambda request: (401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}})
    argv = _judged_study(
        base_dir, tmp_path / "study", "finetune.eval.judge.api_key_env=EM_JUDGE_KEY", f"finetune.eval.judge.base_url={server.base_url}",
    )
    line = error_line(*run_cli(capsys, argv), 2, [server.base_url, "401", "EM_JUDGE_KEY"])
    assert KEY not in line


def test_debug_shows_the_traceback(capsys, monkeypatch):
    with pytest.raises(Exception, match="run.steps"):
        main(["--debug", "train", "--set", "run.steps=0"])
    with pytest.raises(Exception, match="run.steps"):
        main(["train", "--debug", "--set", "run.steps=0"])
    with pytest.raises(Exception, match="'beta'"):
        main(["check", "pl", "--beta", "0", "--debug"])
    monkeypatch.setenv("SAIL_DEBUG", "1")
    with pytest.raises(Exception, match="run.steps"):
        main(["train", "--set", "run.steps=0"])
    monkeypatch.setenv("SAIL_DEBUG", "0")
    assert main(["train", "--set", "run.steps=0"]) == 2


@pytest.mark.parametrize(
    "exc, code",
    [
        (OSError(errno.ENOSPC, "No space left on device", "f"), 1),
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), 1),
        (OSError(errno.EROFS, "Read-only file system", "f"), 2),
        (PermissionError(errno.EACCES, "Permission denied", "f"), 2),
        (RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"), 1),
        (RuntimeError("a bug"), 1),
        (JudgeUnavailable("judge POST http://x/v1/chat/completions failed after 5 attempts: timed out"), 1),
        (JudgeError("judge POST http://x/v1/chat/completions -> HTTP 401: bad key"), 2),
        (KeyboardInterrupt(), 130),
    ],
)
def test_exit_status_of_errors_outside_the_project(exc, code):
    status, message = error_status(exc)
    assert status == code and message and "\n" not in message
