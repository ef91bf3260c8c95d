"""Operation types that work on registered database instances, and the engines they connect with."""
