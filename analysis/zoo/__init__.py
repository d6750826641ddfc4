"""The toy model zoo: small LLaVA models trained on the shapes world, and where to find them.

``checkpoint_path("shapes-llava")`` gives a checkpoint folder (what ``load_vlm("zoo:shapes-llava")``
loads); ``evaluate(vlm, n, seed)`` scores any LLaVA-style model on fresh shapes questions;
``python -m analysis.zoo.train --all`` rebuilds every checkpoint.
"""

from analysis.zoo.build import ModelSpec, build_model, build_processor, build_tokenizer
from analysis.zoo.evaluate import EVAL_SEED, evaluate, evaluate_text, predict
from analysis.zoo.registry import MODELS_DIR, checkpoint_path, list_checkpoints, trajectory

__all__ = ["EVAL_SEED", "MODELS_DIR", "ModelSpec", "build_model", "build_processor", "build_tokenizer",
           "checkpoint_path", "evaluate", "evaluate_text", "list_checkpoints", "predict", "trajectory"]
