"""Test-support helpers: throwaway redis-server processes and a fault-injecting TCP proxy."""
