"""pytest plugin entry point (``pytest11``); the replay fixtures are added with replay support."""
