"""Error types. Every message names the offending field and what is allowed."""


class SageLLMError(Exception):
    """Base class of sagellm's own errors."""


class ConfigError(SageLLMError, ValueError):
    """A configuration value is invalid; the message starts with its dotted path."""


class InvalidRequestError(SageLLMError, ValueError):
    """A request was rejected at admission; the engine keeps serving the others."""


class ModelLoadError(SageLLMError, ValueError):
    """A checkpoint could not be found, parsed or matched to a supported architecture."""


class PlanRejectedError(SageLLMError, RuntimeError):
    """An execution plan cannot run on this engine now (the reason names the request and the
    limit); nothing was changed and the engine keeps serving."""


class SchedulingStalledError(SageLLMError, RuntimeError):
    """The configured strategy returned no work for many steps while requests were waiting
    and nothing was running (it would spin forever)."""
