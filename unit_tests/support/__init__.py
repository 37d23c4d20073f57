"""Helpers shared by unit_tests/ and integration_tests/, each with one home:
`secrets` (the API-key leak guard), `sleeps` (the retry-sleep recorder), `keys` (primary keys as
set members), `cdk_seams` (the tests' few touches of CDK internals)."""
