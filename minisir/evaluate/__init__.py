"""Benchmarks with known answers, accuracy metrics with intervals, and running an eval.

Self-play training has no labels, so these offline benchmarks are the only way to see
whether a run made the model better: GSM8K-100 (the original questions), GSM-Symbolic
(fresh seeded variants of the same templates, so memorised answers do not help),
generated arithmetic, or a user's JSONL file.

One module per concern (each imports only the ones above it):

    questions.py   Question, reference_answer, is_correct (the training's answer check)
    safe_eval.py   SafeEval (AST-whitelist expression evaluator), TemplateError, format_number
    gsm.py         GSM8K-100 and GSM-Symbolic: template data, parsing, seeded variants
    arithmetic.py  easy / medium / hard generators and the train/test split (question_split)
    benchmarks.py  BENCHMARKS, load_benchmark (by name), load_jsonl (user files)
    stats.py       score_question, aggregate, EvalResult, mean_ci, sign_test,
                   permutation_test, compare, format_table, format_compare
    run.py         EvalConfig, evaluate, run_eval, the result cache, adapter_for_step, save_records

Every name below stays importable from `minisir.evaluate` as it was before the split.
Patch a name where it is used (e.g. `minisir.evaluate.run.adapter_for_step`): patching
the package attribute does not reach the module that calls it.
"""

from __future__ import annotations

# Re-exports (names other modules and tests import from here; __all__ lists the documented ones).
from ..answers import equivalent, extract_boxed, majority_vote, normalize_answer
from .arithmetic import (ARITHMETIC_LEVELS, EASY_KINDS, EASY_WORD, HARD_KINDS, MEDIUM_KINDS, MEDIUM_WORD, NAMES,
                         OBJECTS, SPLITS, TRAIN_SHARE, load_arithmetic, question_split)
from .benchmarks import BENCHMARKS, load_benchmark, load_jsonl
from .gsm import (GSM_INSTALL, GSM_PACKAGE, Template, _Funcs, _gsm_files, _gsm_replacements, gsm_data_dir,
                  load_gsm8k, load_gsm_symbolic, parse_template, sample_variant)
from .questions import Question, _subset, is_correct, reference_answer
from .run import (EvalConfig, PromptFn, _cache_key, _cached, _file_digest, _prompt_name, _store, adapter_for_step,
                  eval_cache_dir, evaluate, run_eval, save_records)
from .safe_eval import SafeEval, TemplateError, _as_value, _fmt_decimal, _is_int, format_number
from .stats import (ALPHA, METRICS, PERM_EXACT_MAX, PERM_SAMPLES, Z95, EvalResult, _binom_two_sided_exact, _clip01,
                    _p, _pct, _scores_of, aggregate, compare, format_compare, format_table, mean_ci, permutation_test,
                    score_question, sign_test)

__all__ = [
    "BENCHMARKS", "EvalConfig", "EvalResult", "Question", "adapter_for_step", "aggregate", "compare",
    "evaluate", "format_compare", "format_table", "is_correct", "load_arithmetic", "load_benchmark",
    "load_gsm8k", "load_gsm_symbolic", "load_jsonl", "mean_ci", "permutation_test", "reference_answer",
    "eval_cache_dir", "run_eval", "save_records", "score_question", "sign_test",
]
