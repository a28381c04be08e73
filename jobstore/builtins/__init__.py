"""The built-in schemas and strategies, registered as plugins like any third party's."""
