"""Error types. Every message names the offending field and what is allowed."""


class SageLLMError(Exception):
    """Base class of sagellm's own errors."""


class ConfigError(SageLLMError, ValueError):
    """A configuration value is invalid; the message starts with its dotted path."""


class InvalidRequestError(SageLLMError, ValueError):
    """A request was rejected at admission; the engine keeps serving the others."""


class ModelLoadError(SageLLMError, ValueError):
    """A checkpoint could not be found, parsed or matched to a supported architecture."""
