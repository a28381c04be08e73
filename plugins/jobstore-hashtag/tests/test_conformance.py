"""jobstore's conformance kit on the hashtag schema: alone, as dual's target from legacy, as
dual's source, and beside every other strategy with migrations running.

Runs on an embedded fakeredis by default; ``pytest --jobstore-url redis://...`` runs it on a
real (throwaway) Redis."""

from jobstore.testing import SchemaConformance


class TestHashTagConformance(SchemaConformance):
    schema = "hashtag"
