"""jobstore's conformance kit on the bucketed schema, alone, as dual's target from legacy and
as its source, beside every other strategy with migrations running."""

from jobstore.testing import SchemaConformance


class TestBucketedConformance(SchemaConformance):
    schema = "bucketed"
