"""Exceptions a user can cause; each message says what to do about it."""


class VLMProbesError(Exception):
    """Base class of every error raised on purpose by vlm-probes."""


class ModelNotFoundError(VLMProbesError, FileNotFoundError):
    """A model path, zoo name or hub id that cannot be loaded here."""


class UnsupportedModelError(VLMProbesError, ValueError):
    """A checkpoint whose family has no adapter."""


class ImageError(VLMProbesError, ValueError):
    """An image that is missing, unreadable or of an unknown type."""


class PromptTooLongError(VLMProbesError, ValueError):
    """A prompt with more tokens than the language model accepts."""


class InputError(VLMProbesError, ValueError):
    """Any other bad argument (out-of-range layer, empty question, ...)."""


class NumericsError(VLMProbesError, FloatingPointError):
    """A model output that is not finite (NaN or inf), typically float16 overflow."""
