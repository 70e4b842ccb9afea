import os

from hypothesis import HealthCheck, settings

# deadline=None: the first call of a kernel compiles it, which is not a failure.
settings.register_profile(
    "dev", deadline=None, max_examples=40,
    suppress_health_check=[HealthCheck.too_slow],
)
# CI: derandomised, so a red run is reproducible from its log.
settings.register_profile(
    "ci", deadline=None, max_examples=100, derandomize=True, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))
