"""The policy registry and core's list of names that configs may use stay the same set."""

from sagellm.core.config import EVICTION_POLICY_NAMES, MIGRATION_POLICY_NAMES
from sagellm.kv_policy import EVICTION_POLICIES


def test_registry_matches_the_names_core_validates():
    # a policy registered here but missing in core could not be named in a config, and a name
    # in core without an implementation would pass validation and fail at engine start
    assert EVICTION_POLICIES.names() == sorted(EVICTION_POLICY_NAMES)


def test_core_knows_the_migration_policy_names():
    from sagellm.kv_policy import MIGRATION_POLICIES

    assert MIGRATION_POLICIES.names() == sorted(MIGRATION_POLICY_NAMES)
