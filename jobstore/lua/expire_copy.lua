-- KEYS[1] a job's record: a copy its final move did not update (dual: the phase wrote fewer
--         copies than the job has)
-- ARGV[1] the job's workspace id   ARGV[2] when the job's copies expire (server time, ms: the
--         final move's expiry, docs/retention.md)
-- returns 1 when the copy now expires then, else 0 (no such record, another workspace's, or
-- it expires by then already)
-- One key: Cluster-safe. Safe to re-send: a copy that expires by then is left alone.
--- @include "retention"
return expire_copy(KEYS[1], ARGV[1], tonumber(ARGV[2]))
