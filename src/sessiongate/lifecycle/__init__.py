"""The lifecycle: the engine (one funnel for every end), the workers, the sweeper."""
