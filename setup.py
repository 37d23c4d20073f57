from setuptools import find_namespace_packages, setup

MAIN_REQUIREMENTS = [
    "airbyte-cdk>=7.39,<8",
    "requests",
    "pendulum",
    "jsonschema",
]

TEST_REQUIREMENTS = [
    "pytest>=8",
    "pytest-timeout",
    # make test runs the suite on two workers, a file per worker at a time (--dist loadfile).
    "pytest-xdist",
    "requests-mock",
    "freezegun",
    # PostHog's own HogQL parser (the C++ one PostHog runs): the emulator parses every query with it,
    # and unit_tests/test_hogql_parses.py checks every query shape the connector builds.
    "hogql-parser==1.3.88",
    # PyAirbyte: integration_tests/test_pyairbyte.py reads through it into a DuckDB cache.
    # It requires airbyte-cdk>=7.28.3,<8, so it shares this venv with the connector.
    "airbyte==0.71.3",
]

setup(
    name="source-posthog",
    version="0.3.0",
    description="Airbyte source connector for PostHog: every stream, events exact through HogQL or PostHog's exports.",
    author="source-posthog maintainers",
    license="MIT",
    python_requires=">=3.10,<3.14",
    # Namespace discovery: schemas/ is a package-data folder without __init__.py.
    package_dir={"": "."},  # with this, an editable install is a plain .pth (no setuptools warning)
    packages=find_namespace_packages(include=["source_posthog", "source_posthog.*"], exclude=["*.__pycache__"]),
    install_requires=MAIN_REQUIREMENTS,
    extras_require={"dev": TEST_REQUIREMENTS},
    package_data={"source_posthog": ["spec.yaml", "schemas/*.json"]},
    include_package_data=True,
    entry_points={"console_scripts": ["source-posthog=source_posthog.run:run"]},
)
