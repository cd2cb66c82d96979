"""The composition root: the app factory and its lifespan, the CLI. Imports every layer; none imports it."""
